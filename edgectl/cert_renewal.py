"""The controller's control-channel certificates, renewed while it runs (``edgectl run --pki-dir``).

Three listeners present a certificate of ``spiffe://<td>/controller/edgectl``: xDS over TCP and the
placement API (gRPC, one certificate) and OpenFlow (os-ken, its own certificate and files). Each is a
``pki.renewal.RenewedCertificate`` renewed at half-life by one ``RenewalTimer``; connections already
open keep the certificate they were made with, every new one gets the newest:

- gRPC: ``grpc.dynamic_ssl_server_credentials`` asks ``_CertificateFetcher`` before every handshake;
  it answers with a new certificate configuration once the certificate was renewed, else None (keep).
- OpenFlow: os-ken's listening ``ssl.SSLContext`` is built once. Its server-name callback (run on every
  ClientHello, SNI or not) moves each new connection to the newest context, built from the renewed
  files -- one reference swap, where reloading the chain into the shared context would race with
  handshakes in other threads.

Adapter (grpc, ssl, files); when to renew is the policy's (``pki.policy.rotation_time``).
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from meshctl.xds_grpc import XdsTls
from pki.cli import CONTROL_CERT_TTL_S
from pki.policy import Svid, controller_spiffe_id
from pki.renewal import RenewalTimer, RenewedCertificate
from placement.grpc_api import ApiTls

if TYPE_CHECKING:
    from pki.tls import TlsFiles

LOG = logging.getLogger("edgectl.pki.control")


class _CertificateFetcher:
    """gRPC's certificate configuration fetcher for one server: a new configuration once ``source`` holds
    a certificate this server has not presented yet, None (keep the current one) otherwise."""

    def __init__(self, source: RenewedCertificate, client_ca_pem: str) -> None:
        self._source = source
        self._client_ca = client_ca_pem.encode()
        self._lock = threading.Lock()
        self._served = source.current.info.serial

    def initial(self) -> Any:
        return self._configuration(self._source.current)

    def __call__(self) -> Any:
        current = self._source.current
        with self._lock:  # handshakes run on several threads
            if current.info.serial == self._served:
                return None
            self._served = current.info.serial
        return self._configuration(current)

    def _configuration(self, svid: Svid) -> Any:
        pair = (svid.private_key_pem.encode(), svid.cert_chain_pem.encode())
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=self._client_ca)


def renewing_server_credentials(source: RenewedCertificate, client_ca_pem: str) -> grpc.ServerCredentials:
    """mTLS server credentials that present ``source``'s newest certificate to every new client."""
    fetcher = _CertificateFetcher(source, client_ca_pem)
    return grpc.dynamic_ssl_server_credentials(fetcher.initial(), fetcher, require_client_authentication=True)


@dataclasses.dataclass(frozen=True)
class RenewingXdsTls(XdsTls):
    source: RenewedCertificate | None = None

    def credentials(self) -> grpc.ServerCredentials:
        assert self.source is not None
        return renewing_server_credentials(self.source, self.client_ca_pem)


@dataclasses.dataclass(frozen=True)
class RenewingApiTls(ApiTls):
    source: RenewedCertificate | None = None

    def credentials(self) -> grpc.ServerCredentials:
        assert self.source is not None
        return renewing_server_credentials(self.source, self.client_ca_pem)


class OpenFlowContexts:
    """Hands new OpenFlow connections the TLS context of the newest controller certificate."""

    def __init__(self, files: TlsFiles) -> None:
        self._files = files  # rewritten in place at each renewal
        self._newest: ssl.SSLContext | None = None

    def attach(self, listening: ssl.SSLContext) -> None:
        """Install on os-ken's listening context (``start_openflow(on_tls_context=...)``)."""
        listening.sni_callback = self._select

    def renewed(self, _svid: Svid) -> None:
        """The files were rewritten: build the context every new connection will use."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # what os-ken builds, with the same files
        context.options |= ssl.OP_NO_SSLv3 | ssl.OP_NO_SSLv2
        context.load_cert_chain(str(self._files.certificate), str(self._files.private_key))
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(str(self._files.ca_certs))
        self._newest = context

    def _select(self, connection: Any, _server_name: str | None, _context: ssl.SSLContext) -> None:
        newest = self._newest
        if newest is not None:
            connection.context = newest


@dataclasses.dataclass
class ControlCertificates:
    """The controller's renewed certificates and the timer that renews them."""

    grpc: RenewedCertificate
    openflow: RenewedCertificate | None
    openflow_files: TlsFiles | None
    openflow_contexts: OpenFlowContexts | None
    timer: RenewalTimer

    @classmethod
    def start(
        cls,
        ca: Any,  # a CertificateAuthority; PkiService.issuer is typed as the narrower Issuer protocol
        *,
        ttl_s: int = CONTROL_CERT_TTL_S,
        grpc_ip_addresses: Iterable[str] = ("127.0.0.1",),
        openflow_dir: str | Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> ControlCertificates:
        """Issue the gRPC certificate (and with ``openflow_dir`` the OpenFlow one and its files) from
        ``ca`` (a ``CertificateAuthority``) and start renewing them. Raises ``PkiError`` if issuing fails."""
        from pki.tls import tls_files, write_openflow_controller_files

        spiffe_id = controller_spiffe_id(ca.trust_domain)
        ips = list(grpc_ip_addresses)
        now = clock()
        grpc_cert = RenewedCertificate(
            "gRPC server",
            lambda at: ca.issue_with_new_key(spiffe_id, at, ttl_s=ttl_s, ip_addresses=ips, dns_names=["localhost"]),
            now,
        )
        openflow_cert = files = contexts = None
        if openflow_dir is not None:
            files = tls_files(openflow_dir, "controller")
            contexts = OpenFlowContexts(files)
            new_contexts = contexts

            def write_and_swap(svid: Svid) -> None:
                write_openflow_controller_files(ca, openflow_dir, svid)
                new_contexts.renewed(svid)

            openflow_cert = RenewedCertificate(
                "OpenFlow server",
                lambda at: ca.issue_with_new_key(spiffe_id, at, ttl_s=ttl_s, ip_addresses=["127.0.0.1"]),
                now,
                on_renew=write_and_swap,
            )
        timer = RenewalTimer([c for c in (grpc_cert, openflow_cert) if c is not None], clock=clock).start()
        LOG.info("control certificates live %d s and are renewed at half-life", ttl_s)
        return cls(grpc_cert, openflow_cert, files, contexts, timer)

    def xds_tls(self, client_ca_pem: str, authorize: Any) -> RenewingXdsTls:
        svid = self.grpc.current
        return RenewingXdsTls(svid.cert_chain_pem, svid.private_key_pem, client_ca_pem, authorize, source=self.grpc)

    def api_tls(self, client_ca_pem: str, authorize: Any) -> RenewingApiTls:
        svid = self.grpc.current
        return RenewingApiTls(svid.cert_chain_pem, svid.private_key_pem, client_ca_pem, authorize, source=self.grpc)

    def stop(self) -> None:
        self.timer.stop()
