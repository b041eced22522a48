"""The agent API's TLS front on loopback: a client certificate is optional, verified when presented and
recorded for the gRPC handler; every new connection gets the newest server certificate."""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

import pytest
from cryptography import x509

from edgectl.agent_tls import TlsFront
from pki.ca import CertificateAuthority

TD = "front.test"


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(TD)[0]


def test_the_front_records_verified_client_certificates_and_serves_the_newest_certificate(
    ca: CertificateAuthority, tmp_path: Any
) -> None:
    def issue() -> Any:
        return ca.issue_with_new_key(f"spiffe://{TD}/controller/edgectl", time.time(), ip_addresses=["127.0.0.1"])

    current = [issue()]
    backend = socket.socket()
    backend.bind(("127.0.0.1", 0))
    backend.listen()
    front = TlsFront(
        lambda: (current[0].info.serial, current[0].cert_chain_pem, current[0].private_key_pem),
        ca.bundle_pem,
        backend.getsockname()[1],
    ).start("127.0.0.1", 0, None)
    client_svid = ca.issue_with_new_key(f"spiffe://{TD}/node/n1", time.time())
    (tmp_path / "c.pem").write_text(client_svid.cert_chain_pem + client_svid.private_key_pem)
    try:

        def connect(with_certificate: bool) -> tuple[int, str]:
            context = ssl.create_default_context(cadata=ca.bundle_pem)
            context.check_hostname = False
            context.set_alpn_protocols(["h2"])
            if with_certificate:
                context.load_cert_chain(str(tmp_path / "c.pem"))
            with (
                socket.create_connection(("127.0.0.1", front.port), timeout=10) as raw,
                context.wrap_socket(raw) as tls,
            ):
                tls.sendall(b"x")  # the front connects to the backend once the handshake is done
                served = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"").serial_number
                accepted, _ = backend.accept()
                with accepted:
                    host, port = accepted.getpeername()[:2]
                    peer = f"ipv4:{host}:{port}"
                    deadline = time.monotonic() + 10
                    while not front.peer_certificate(peer)[0] and time.monotonic() < deadline:
                        time.sleep(0.01)
                    known, pem = front.peer_certificate(peer)
                    assert known
                    assert front.client_address(peer) == f"127.0.0.1:{tls.getsockname()[1]}"
                    return served, pem or ""

        served, pem = connect(with_certificate=True)
        assert served == current[0].info.serial
        assert x509.load_pem_x509_certificate(pem.encode()).serial_number == client_svid.info.serial
        current[0] = issue()  # renewed: the next connection gets the new one
        served, pem = connect(with_certificate=False)
        assert served == current[0].info.serial and pem == ""
        assert front.peer_certificate("ipv4:127.0.0.1:1") == (False, None)  # not a forwarded connection
    finally:
        front.stop()
        backend.close()
