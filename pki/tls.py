"""TLS material from this CA for processes that read files: os-ken's OpenFlow listener, OVS switches.

Adapter (files). os-ken takes ``ctl_privkey``/``ctl_cert``/``ca_certs`` paths and OVS takes
``ovs-vsctl set-ssl KEY CERT CA``: both want a key file, a certificate file holding the chain (leaf
then intermediate, so the peer can build the path to the root) and a CA file. ``TlsFiles`` is that
triple.

OVS sends only the *first* certificate of its file (extra chain certificates need ovs-vswitchd's
``--peer-ca-cert`` option, which ``set-ssl`` cannot set), so a switch's leaf arrives without its
intermediate: the controller's CA file therefore holds the intermediate as well as the root
. A switch's CA file is the root alone: os-ken sends the whole chain.

The controller's OpenFlow certificate lives longer than workload SVIDs (``OPENFLOW_TTL_S``) and is
renewed at half-life while it runs (``edgectl.cert_renewal``: new files, a new TLS context for new
connections). OVS re-reads its files when they change: ``renewed_switch_tls`` keeps a switch's files
renewed the same way. A sidecar's xDS client certificate is renewed through an SDS file
(``write_xds_client_sds``), which Envoy re-reads when it is replaced.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pki.ca import CertificateAuthority
from pki.policy import Svid, controller_spiffe_id, switch_spiffe_id
from pki.renewal import RenewedCertificate
from pki.store import DIR_MODE, PUBLIC_MODE, SECRET_MODE, replace_file

OPENFLOW_TTL_S = 7 * 86400


@dataclass(frozen=True)
class TlsFiles:
    private_key: Path
    certificate: Path
    """The certificate chain: leaf first, then the intermediate."""
    ca_certs: Path
    """The trust bundle: the roots a peer's chain must lead to."""


def tls_files(directory: str | os.PathLike[str], name: str) -> TlsFiles:
    """Where ``write_tls_files`` puts ``name``'s files in ``directory``."""
    folder = Path(directory)
    return TlsFiles(folder / f"{name}.key", folder / f"{name}.crt", folder / "ca.pem")


def write_tls_files(directory: str | os.PathLike[str], name: str, svid: Svid, bundle_pem: str) -> TlsFiles:
    """Write ``<name>.key`` (0600), ``<name>.crt`` (chain) and ``ca.pem`` (``bundle_pem``) into ``directory``.
    Each file is replaced atomically; the key first, so a reader that sees the new chain sees its key."""
    if not svid.private_key_pem:
        raise ValueError(f"the SVID of {svid.spiffe_id} carries no private key (issued from a CSR?)")
    Path(directory).mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    files = tls_files(directory, name)
    replace_file(files.private_key, svid.private_key_pem.encode(), SECRET_MODE)
    replace_file(files.certificate, svid.cert_chain_pem.encode(), PUBLIC_MODE)
    replace_file(files.ca_certs, bundle_pem.encode(), PUBLIC_MODE)
    return files


def openflow_controller_tls(
    ca: CertificateAuthority,
    directory: str | os.PathLike[str],
    now: float,
    *,
    name: str = "edgectl",
    ip_addresses: Iterable[str] = ("127.0.0.1",),
    dns_names: Iterable[str] = (),
    ttl_s: int = OPENFLOW_TTL_S,
) -> TlsFiles:
    """The controller's OpenFlow listener identity: ``spiffe://<td>/controller/<name>`` plus IP/DNS SANs
    for tools that check the address they dialled (OVS itself checks only the chain). Its CA file
    holds the root and the intermediate, because OVS switches present their leaf alone."""
    svid = ca.issue_with_new_key(
        controller_spiffe_id(ca.trust_domain, name),
        now,
        ttl_s=ttl_s,
        ip_addresses=ip_addresses,
        dns_names=dns_names,
    )
    return write_openflow_controller_files(ca, directory, svid)


def write_openflow_controller_files(
    ca: CertificateAuthority, directory: str | os.PathLike[str], svid: Svid
) -> TlsFiles:
    """The controller's OpenFlow files for ``svid`` (also on each renewal)."""
    return write_tls_files(directory, "controller", svid, ca.bundle_pem + ca.intermediates_pem)


def switch_tls(
    ca: CertificateAuthority, directory: str | os.PathLike[str], dpid: int, now: float, *, ttl_s: int = OPENFLOW_TTL_S
) -> TlsFiles:
    """A switch identity ``spiffe://<td>/switch/<dpid>`` (OVS re-reads its files when they change)."""
    svid = ca.issue_with_new_key(switch_spiffe_id(ca.trust_domain, dpid), now, ttl_s=ttl_s)
    return write_tls_files(directory, f"switch-{dpid:016x}", svid, ca.bundle_pem)


def renewed_switch_tls(
    ca: CertificateAuthority, directory: str | os.PathLike[str], dpid: int, now: float, *, ttl_s: int = OPENFLOW_TTL_S
) -> tuple[TlsFiles, RenewedCertificate]:
    """A switch's files (for ``ovs-vsctl set-ssl``), written now and rewritten in place at each renewal:
    OVS re-reads them when they change, so a ``RenewalTimer`` running this keeps the switch able to
    reconnect for as long as it runs. Returns the files and the certificate to hand to the timer."""
    spiffe_id = switch_spiffe_id(ca.trust_domain, dpid)
    name = f"switch-{dpid:016x}"
    renewed = RenewedCertificate(
        name,
        lambda at: ca.issue_with_new_key(spiffe_id, at, ttl_s=ttl_s),
        now,
        on_renew=lambda svid: write_tls_files(directory, name, svid, ca.bundle_pem),
    )
    return tls_files(directory, name), renewed


def write_xds_client_sds(path: str | os.PathLike[str], svid: Svid) -> Path:
    """A sidecar's xDS client certificate and key as an Envoy SDS file (0600, replaced atomically), for a
    bootstrap made with ``XdsClientTls(sds_file=path)`` (``edgectl mesh bootstrap --tls-sds``): Envoy
    re-reads the file each time it is replaced, so rewriting it renews the certificate without a restart."""
    import json

    from meshctl.bootstrap import xds_client_sds_document

    if not svid.private_key_pem:
        raise ValueError(f"the SVID of {svid.spiffe_id} carries no private key (issued from a CSR?)")
    target = Path(path)
    document = xds_client_sds_document(svid.cert_chain_pem, svid.private_key_pem)
    replace_file(target, (json.dumps(document, indent=1) + "\n").encode(), SECRET_MODE)
    return target


def renewed_xds_client_sds(
    ca: CertificateAuthority, path: str | os.PathLike[str], spiffe_id: str, now: float, *, ttl_s: int | None = None
) -> RenewedCertificate:
    """``write_xds_client_sds`` now and at each renewal (hand the result to a ``RenewalTimer``)."""
    return RenewedCertificate(
        f"xds client {spiffe_id}",
        lambda at: ca.issue_with_new_key(spiffe_id, at, ttl_s=ttl_s),
        now,
        on_renew=lambda svid: write_xds_client_sds(path, svid),
    )


def peer_uri_sans(peercert: Mapping[str, Any] | None) -> list[str]:
    """URI SANs from ``ssl.SSLSocket.getpeercert()`` (the dict form), e.g. to learn which switch a
    TLS OpenFlow connection comes from."""
    if not peercert:
        return []
    return [value for kind, value in peercert.get("subjectAltName", ()) if kind == "URI"]
