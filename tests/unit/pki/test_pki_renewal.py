"""Control-channel certificates renewed while the process runs: ``pki.renewal`` (when, and what happens on
failure), the files a switch and a sidecar's xDS client read (rewritten in place), the controller's gRPC
certificate fetcher and OpenFlow context swap (``edgectl.cert_renewal``), and ``--control-cert-ttl``."""

from __future__ import annotations

import argparse
import json
import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from pki.ca import CertificateAuthority
from pki.errors import IssuerExpired
from pki.policy import IssuancePolicy, Svid, host_spiffe_id
from pki.renewal import RenewalTimer, RenewedCertificate
from tests.unit.pki.pki_helpers import NOW, TD, FakeIssuer

TTL = 100


def fake(name: str = "gRPC server", *, on_renew: Any = None, fail: list[bool] | None = None) -> RenewedCertificate:
    issuer = FakeIssuer(policy=IssuancePolicy(TD, ttl_s=TTL, backdate_s=0))

    def issue(at: float) -> Svid:
        if fail and fail[0]:
            raise IssuerExpired("the issuing CA expired (fake)")
        return issuer.issue_with_new_key(f"spiffe://{TD}/controller/edgectl", at)

    return RenewedCertificate(name, issue, NOW, on_renew=on_renew)


def test_renewed_at_half_life_never_later_and_not_before() -> None:
    written: list[int] = []
    cert = fake(on_renew=lambda svid: written.append(svid.info.serial))
    first = cert.current
    assert written == [first.info.serial]  # the first one is written at once, too
    assert NOW + 0.45 * TTL <= cert.renews_at() <= NOW + 0.5 * TTL
    assert not cert.renew_if_due(cert.renews_at() - 1)
    assert cert.renew_if_due(NOW + TTL / 2)
    assert cert.current.info.serial != first.info.serial and cert.current.info.not_before == int(NOW + TTL / 2)
    assert written == [first.info.serial, cert.current.info.serial] and cert.renewals == 1


def test_the_timer_step_renews_what_is_due_and_backs_off_on_failure(caplog: pytest.LogCaptureFixture) -> None:
    fail = [False]
    grpc_cert, openflow_cert = fake(), fake("OpenFlow server", fail=fail)
    timer = RenewalTimer([grpc_cert, openflow_cert], retry_s=5)
    assert timer.next_at() == min(grpc_cert.renews_at(), openflow_cert.renews_at())
    assert timer.renew_due(NOW + 1) == []
    fail[0] = True
    before = openflow_cert.current
    at = NOW + TTL / 2
    with caplog.at_level("WARNING", logger="edgectl.pki.renewal"):
        assert timer.renew_due(at) == ["gRPC server"]
    assert openflow_cert.current is before  # kept while it lasts
    assert any("renewing the OpenFlow server certificate failed" in r.getMessage() for r in caplog.records)
    assert timer.next_at() == at + 5  # not spinning on the failing one
    assert timer.renew_due(at + 1) == []
    fail[0] = False
    assert timer.renew_due(at + 5) == ["OpenFlow server"]


def test_the_timer_thread_renews_on_the_clock() -> None:
    import threading

    clock = [NOW]
    renewed = threading.Event()
    cert = fake(on_renew=lambda _svid: renewed.set())
    renewed.clear()
    timer = RenewalTimer([cert], clock=lambda: clock[0], max_sleep_s=0.05).start()
    try:
        clock[0] = NOW + TTL  # half-life has passed
        assert renewed.wait(5)
    finally:
        timer.stop()
    assert cert.renewals >= 1


# -- the files others read --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(TD, now=NOW)[0]


def leaf_serial(path: Path) -> int:
    return x509.load_pem_x509_certificates(path.read_bytes())[0].serial_number


def test_switch_files_are_rewritten_in_place_at_each_renewal(ca: CertificateAuthority, tmp_path: Path) -> None:
    from pki.tls import renewed_switch_tls

    files, cert = renewed_switch_tls(ca, tmp_path, 0xA1, NOW, ttl_s=TTL)
    assert files.certificate == tmp_path / "switch-00000000000000a1.crt"
    first = leaf_serial(files.certificate)
    assert first == cert.current.info.serial
    assert cert.renew_if_due(NOW + TTL)
    assert leaf_serial(files.certificate) == cert.current.info.serial != first
    assert stat.S_IMODE(files.private_key.stat().st_mode) == 0o600
    assert cert.current.private_key_pem == files.private_key.read_text()


def test_xds_client_sds_file_holds_the_newest_certificate_and_key(ca: CertificateAuthority, tmp_path: Path) -> None:
    from meshctl.bootstrap import XDS_CLIENT_SECRET
    from pki.tls import renewed_xds_client_sds

    path = tmp_path / "u1.sds.json"
    cert = renewed_xds_client_sds(ca, path, host_spiffe_id(TD, "u1"), NOW, ttl_s=TTL)

    def secret() -> dict[str, Any]:
        (resource,) = json.loads(path.read_text())["resources"]
        assert resource["name"] == XDS_CLIENT_SECRET and resource["@type"].endswith("tls.v3.Secret")
        return dict(resource["tls_certificate"])

    assert secret()["certificate_chain"]["inline_string"] == cert.current.cert_chain_pem
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cert.renew_if_due(NOW + TTL)
    assert secret()["certificate_chain"]["inline_string"] == cert.current.cert_chain_pem
    assert secret()["private_key"]["inline_string"] == cert.current.private_key_pem


def test_the_sds_file_parses_as_envoy_secret(ca: CertificateAuthority) -> None:
    from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
    from google.protobuf import json_format

    from meshctl.bootstrap import xds_client_sds_document

    resource = dict(xds_client_sds_document("CHAIN", "KEY")["resources"][0])
    resource.pop("@type")
    secret = json_format.ParseDict(resource, secret_pb2.Secret())
    assert secret.tls_certificate.certificate_chain.inline_string == "CHAIN"


# -- the controller's listeners ---------------------------------------------------------------------


def test_grpc_fetcher_offers_a_new_configuration_once_per_renewal(ca: CertificateAuthority) -> None:
    from edgectl.cert_renewal import _CertificateFetcher

    cert = RenewedCertificate(
        "gRPC server", lambda at: ca.issue_with_new_key(f"spiffe://{TD}/controller/edgectl", at, ttl_s=TTL), NOW
    )
    fetcher = _CertificateFetcher(cert, ca.bundle_pem)
    assert fetcher.initial() is not None
    assert fetcher() is None  # nothing new: keep
    cert.renew_if_due(NOW + TTL)
    assert fetcher() is not None
    assert fetcher() is None


def test_openflow_contexts_move_new_connections_to_the_renewed_certificate(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    from edgectl.cert_renewal import ControlCertificates

    clock = [NOW]
    certs = ControlCertificates.start(ca, ttl_s=TTL, openflow_dir=tmp_path, clock=lambda: clock[0])
    try:
        assert certs.openflow is not None and certs.openflow_contexts is not None
        listening = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        certs.openflow_contexts.attach(listening)
        assert listening.sni_callback is not None

        class Connection:
            context: Any = listening

        connection = Connection()
        listening.sni_callback(connection, None, listening)  # type: ignore[arg-type]
        first = connection.context
        assert first is not listening and first.verify_mode == ssl.CERT_REQUIRED
        before = leaf_serial(certs.openflow_files.certificate)
        assert certs.timer.renew_due(NOW + TTL) == ["gRPC server", "OpenFlow server"]
        assert leaf_serial(certs.openflow_files.certificate) == certs.openflow.current.info.serial != before
        listening.sni_callback(connection, None, listening)  # type: ignore[arg-type]
        assert connection.context is not first
    finally:
        certs.stop()


def test_control_cert_ttl_option(tmp_path: Path) -> None:
    from pki.cli import add_run_options, run_options

    parser = argparse.ArgumentParser()
    add_run_options(parser)
    assert run_options(parser.parse_args(["--pki-dir", "ca"])).control_cert_ttl_s == 7 * 86400  # type: ignore[union-attr]
    short = run_options(parser.parse_args(["--pki-dir", "ca", "--control-cert-ttl", "8"]))
    assert short is not None and short.control_cert_ttl_s == 8
    with pytest.raises(ValueError, match="at least 2 seconds"):
        run_options(parser.parse_args(["--pki-dir", "ca", "--control-cert-ttl", "1"]))
    with pytest.raises(ValueError, match="needs --pki-dir"):
        run_options(parser.parse_args(["--control-cert-ttl", "8"]))
    assert run_options(parser.parse_args([])) is None
    with pytest.raises(ValueError, match="longer than"):
        run_options(parser.parse_args(["--pki-dir", "ca", "--control-cert-ttl", str(365 * 86400)]))
