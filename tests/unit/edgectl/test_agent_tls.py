"""The agent API's TLS front on loopback: a client certificate is optional, verified when presented and
recorded for the gRPC handler; every new connection gets the newest server certificate."""

from __future__ import annotations

import contextlib
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


HTTP2_PREFACE_AND_SETTINGS = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def test_idle_connections_without_a_certificate_cannot_lock_a_node_out(
    ca: CertificateAuthority, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients without a certificate that open connections and go silent get their own few slots (per
    source too) and are closed when idle; an agent with a node SVID still connects and calls."""
    from concurrent import futures

    import grpc

    import edgectl.agent_tls as agent_tls

    monkeypatch.setattr(agent_tls, "MAX_CONNECTIONS", 4)
    monkeypatch.setattr(agent_tls, "MAX_ANONYMOUS_CONNECTIONS", 4)
    monkeypatch.setattr(agent_tls, "MAX_ANONYMOUS_PER_SOURCE", 3)
    monkeypatch.setattr(agent_tls, "ANONYMOUS_IDLE_TIMEOUT_S", 1.5)
    server_svid = ca.issue_with_new_key(f"spiffe://{TD}/controller/edgectl", time.time(), ip_addresses=["127.0.0.1"])
    echo = grpc.unary_unary_rpc_method_handler(lambda request, _context: request)
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Echo", {"Echo": echo}),))
    backend = server.add_insecure_port("127.0.0.1:0")
    server.start()
    front = TlsFront(
        lambda: (server_svid.info.serial, server_svid.cert_chain_pem, server_svid.private_key_pem),
        ca.bundle_pem,
        backend,
    ).start("127.0.0.1", 0, None)
    context = ssl.create_default_context(cadata=ca.bundle_pem)
    context.check_hostname = False
    context.set_alpn_protocols(["h2"])
    held: list[ssl.SSLSocket] = []
    node = ca.issue_with_new_key(f"spiffe://{TD}/node/n1", time.time())
    credentials = grpc.ssl_channel_credentials(
        ca.bundle_pem.encode(), node.private_key_pem.encode(), node.cert_chain_pem.encode()
    )
    channel = grpc.secure_channel(f"127.0.0.1:{front.port}", credentials)
    try:
        for _ in range(6):  # more than the per-source cap: the last ones are closed at once
            tls = context.wrap_socket(socket.create_connection(("127.0.0.1", front.port), timeout=10))
            tls.sendall(HTTP2_PREFACE_AND_SETTINGS)
            held.append(tls)
        served = [len(tls.recv(1024)) > 0 for tls in held]  # the gRPC server's SETTINGS, or the close
        assert served == [True, True, True, False, False, False]

        call = channel.unary_unary("/t.Echo/Echo", request_serializer=None, response_deserializer=None)
        assert call(b"ping", timeout=10) == b"ping"

        for tls in held[:3]:  # idle: closed by the front (only the idle timeout ends them)
            tls.settimeout(15)
            data = b"x"
            while data:
                data = tls.recv(1024)
    finally:
        channel.close()
        for tls in held:
            tls.close()
        front.stop()
        server.stop(0)


def test_no_session_is_resumed_so_every_connection_shows_a_certificate_that_is_checked_now(
    ca: CertificateAuthority,
) -> None:
    """A resumed session would carry the client certificate of its first handshake (expired meanwhile)."""
    server_svid = ca.issue_with_new_key(f"spiffe://{TD}/controller/edgectl", time.time(), ip_addresses=["127.0.0.1"])
    backend = socket.socket()
    backend.bind(("127.0.0.1", 0))
    backend.listen()
    front = TlsFront(
        lambda: (server_svid.info.serial, server_svid.cert_chain_pem, server_svid.private_key_pem),
        ca.bundle_pem,
        backend.getsockname()[1],
    ).start("127.0.0.1", 0, None)
    try:
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            context = ssl.create_default_context(cadata=ca.bundle_pem)
            context.check_hostname = False
            context.maximum_version = version
            session = None
            reused = []
            for _ in range(2):
                try:
                    with (
                        socket.create_connection(("127.0.0.1", front.port), timeout=5) as raw,
                        context.wrap_socket(raw, session=session) as tls,
                    ):
                        tls.sendall(b"x")
                        tls.settimeout(0.3)  # TLS 1.3 tickets come after the handshake
                        with contextlib.suppress(OSError):
                            tls.recv(1)
                        reused.append(tls.session_reused)
                        session = tls.session
                except (ssl.SSLError, OSError):
                    reused.append(False)  # refused outright: nothing resumed either
            assert reused == [False, False], version
    finally:
        front.stop()
        backend.close()
