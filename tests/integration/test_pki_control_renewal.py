"""The control-channel certificates are renewed while everything runs: ``edgectl run --pki-dir
--openflow-tls --control-cert-ttl 8`` with a real OVS switch over OpenFlow TLS, a real Envoy on xDS over
TCP with mTLS (its client certificate from an SDS file the test renews), and a placement API gRPC client.

Every certificate here lives 8 s: the controller's gRPC and OpenFlow server certificates, the switch's
files, the sidecar's xDS client certificate. While at least two renewals of each server certificate
happen, the switch, the Envoy stream and the placement client stay connected and working; then, after
the first certificates have expired, new connections of each kind succeed: a new placement channel, the
Envoy reconnecting (its xDS connection is cut by the relay in between), the switch reconnecting. Before
renewal existed, every new control connection failed once the certificates expired.

``ovs-vsctl set-ssl`` is global: restored in a ``finally`` (``ovs_ssl``); the bridge, the controller and
Envoy are removed or stopped by name or PID. Loopback only.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.integration.harness import REPO, edgectl_run, free_port, ovs, wait_until
from tests.integration.test_pki_ovs_ssl import controller_status, ovs_ssl, ssl_bridge

pytestmark = pytest.mark.integration

FABRIC = REPO / "examples" / "edge-cloud.yaml"
TD = "edge.test"
DPID = 0xA1  # ea1
TTL = 8


class Relay:
    """A TCP relay to ``target`` whose connections the test can cut (Envoy then reconnects: a new handshake)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.accepted = 0
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:  # the controller is not listening yet: the client retries
                client.close()
                continue
            with self._lock:
                self.accepted += 1
                self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open = []

    def close(self) -> None:
        self.listener.close()
        self.cut()


def served_certificate(port: int, svid: Any, tmp: Path, *, h2: bool) -> tuple[int, int]:
    """A new TLS handshake with the listener on ``port`` (presenting ``svid``): its leaf's serial and expiry."""
    from cryptography import x509

    (tmp / "probe.crt").write_text(svid.cert_chain_pem)
    (tmp / "probe.key").write_text(svid.private_key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we read what is served, valid or not; clients below verify
    context.load_cert_chain(tmp / "probe.crt", tmp / "probe.key")
    if h2:
        context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    leaf = x509.load_der_x509_certificate(der)
    return leaf.serial_number, int(leaf.not_valid_after_utc.timestamp())


def placement_channel(ca: Any, api_port: int) -> grpc.Channel:
    svid = ca.issue_with_new_key(f"spiffe://{TD}/operator/alice", time.time(), ttl_s=600)
    credentials = grpc.ssl_channel_credentials(
        ca.bundle_pem.encode(), svid.private_key_pem.encode(), svid.cert_chain_pem.encode()
    )
    return grpc.secure_channel(f"127.0.0.1:{api_port}", credentials)


def list_refusal(channel: grpc.Channel) -> str | None:
    """None if a placement List call on ``channel`` succeeds, else why not."""
    from placement._pb import placement_pb2 as pb
    from placement._pb import placement_pb2_grpc as pb_grpc

    try:
        pb_grpc.PlacementStub(channel).List(pb.ListRequest(), timeout=5)
    except grpc.RpcError as exc:
        return f"{exc.code()}: {exc.details()}"
    return None


def envoy_client_serials(sidecar: Any) -> set[int]:
    """Serials of the certificates Envoy holds in its TLS contexts (its xDS client certificate here)."""
    certificates = json.loads(sidecar.admin("/certs"))["certificates"]
    return {int(c["serial_number"], 16) for entry in certificates for c in entry.get("cert_chain", [])}


@contextlib.contextmanager
def stopping(*things: Any) -> Iterator[None]:
    try:
        yield
    finally:
        for thing in things:
            with contextlib.suppress(Exception):
                thing()


def test_control_connections_survive_certificate_expiry(tmp_path: Path) -> None:
    from meshctl.bootstrap import XdsClientTls, render_bootstrap
    from meshctl.sidecar import EnvoySidecar
    from pki.ca import CertificateAuthority
    from pki.policy import controller_spiffe_id, host_spiffe_id
    from pki.renewal import RenewalTimer
    from pki.tls import renewed_switch_tls, renewed_xds_client_sds

    ca = CertificateAuthority.init(tmp_path / "ca", TD)
    (tmp_path / "ca.pem").write_text(ca.bundle_pem)
    probe_svid = ca.issue_with_new_key(f"spiffe://{TD}/operator/probe", time.time(), ttl_s=600)
    xds, api, openflow = free_port(), free_port(), free_port()
    options = ["--pki-dir", str(ca.directory), "--openflow-tls", "--control-cert-ttl", str(TTL)]
    ports = ["--xds-port", str(xds), "--api-port", str(api)]
    with edgectl_run(FABRIC, *options, *ports, openflow_port=openflow) as controller:
        start = time.time()
        # The clients' own certificates live as short and are renewed by whoever installed them: here.
        switch_files, switch_cert = renewed_switch_tls(ca, tmp_path / "switch", DPID, start, ttl_s=TTL)
        switch_cert_first, switch_first_expiry = switch_cert.current.info.serial, switch_cert.current.info.not_after
        sds = tmp_path / "u1" / "xds-client.sds.json"
        sds.parent.mkdir()
        sidecar_cert = renewed_xds_client_sds(ca, sds, host_spiffe_id(TD, "u1"), start, ttl_s=TTL)
        client_renewal = RenewalTimer([switch_cert, sidecar_cert], max_sleep_s=0.5).start()
        relay = Relay(xds)
        tls = XdsClientTls("", "", str(tmp_path / "ca.pem"), controller_spiffe_id(TD), sds_file=str(sds))
        sidecar = EnvoySidecar(render_bootstrap("u1", "users", False, f"127.0.0.1:{relay.port}", free_port(), tls))
        channel = placement_channel(ca, api)
        with (
            stopping(client_renewal.stop, relay.close, sidecar.stop, channel.close),
            ovs_ssl(switch_files.private_key, switch_files.certificate, switch_files.ca_certs),
            ssl_bridge(DPID, openflow) as bridge,
        ):
            sidecar.start()

            def u1() -> dict[str, Any]:
                return dict(controller.get_json("/api/v1/xds/clients")["nodes"].get("u1", {}))

            wait_until(lambda: u1().get("streams") == 1 and u1().get("in_sync"), 30, what="Envoy u1 over mTLS xDS")
            wait_until(lambda: controller_status(bridge).get("is_connected") == "true", 30, what="OVS over TLS")
            wait_until(lambda: list_refusal(channel) is None, 30, what="the placement API")
            grpc_first = served_certificate(api, probe_svid, tmp_path, h2=True)
            openflow_first = served_certificate(openflow, probe_svid, tmp_path, h2=False)
            first_sidecar_serials = envoy_client_serials(sidecar)
            assert first_sidecar_serials & {sidecar_cert.current.info.serial} or sidecar_cert.renewals > 0

            # Keep everything busy across at least two renewals and past the first certificates' expiry.
            grpc_seen, openflow_seen = {grpc_first[0]}, {openflow_first[0]}
            sidecar_seen: set[int] = set(first_sidecar_serials)
            problems: list[str] = []
            expired_at = max(grpc_first[1], openflow_first[1], switch_first_expiry) + 1
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                for port in (api, xds):  # one certificate for both gRPC listeners
                    serial, not_after = served_certificate(port, probe_svid, tmp_path, h2=True)
                    assert not_after > time.time(), "the gRPC listener serves an expired certificate"
                    grpc_seen.add(serial)
                serial, not_after = served_certificate(openflow, probe_svid, tmp_path, h2=False)
                assert not_after > time.time(), "the OpenFlow listener serves an expired certificate"
                openflow_seen.add(serial)
                sidecar_seen |= envoy_client_serials(sidecar)
                if controller_status(bridge).get("is_connected") != "true":
                    problems.append(f"switch disconnected at {time.time() - start:.1f} s")
                if u1().get("streams") != 1:
                    problems.append(f"Envoy stream gone at {time.time() - start:.1f} s")
                if (refusal := list_refusal(channel)) is not None:
                    problems.append(f"placement call failed at {time.time() - start:.1f} s: {refusal}")
                renewed_enough = min(len(grpc_seen), len(openflow_seen), len(sidecar_seen - first_sidecar_serials) + 1)
                if renewed_enough >= 3 and time.time() > expired_at:
                    break
                time.sleep(0.5)
            assert len(grpc_seen) >= 3 and len(openflow_seen) >= 3, (grpc_seen, openflow_seen)
            assert len(sidecar_seen - first_sidecar_serials) >= 2, "Envoy did not load the renewed SDS file"
            assert switch_cert.renewals >= 2 and time.time() > expired_at
            assert not problems, problems
            assert relay.accepted == 1  # the same xDS connection throughout

            # The first certificates have expired: every kind of new control connection still succeeds.
            fresh = placement_channel(ca, api)
            try:
                assert list_refusal(fresh) is None
            finally:
                fresh.close()
            relay.cut()  # Envoy reconnects: its renewed client certificate, our renewed server certificate
            wait_until(lambda: relay.accepted >= 2 and u1().get("streams") == 1, 30, what="Envoy reconnected")
            wait_until(lambda: u1().get("in_sync"), 30, what="Envoy in sync again")

            def switch_connections() -> int:
                return controller.log().count(f"switch {DPID:016x} connected")

            before = switch_connections()
            ovs("del-controller", bridge)  # the switch drops its connection; then dials again with its renewed files
            ovs("set-controller", bridge, f"ssl:127.0.0.1:{openflow}")
            ovs("set", "controller", bridge, "max_backoff=1000")
            wait_until(lambda: switch_connections() > before, 30, what="OVS reconnected over TLS")
            wait_until(lambda: controller_status(bridge).get("is_connected") == "true", 30, what="OVS connected")
            assert switch_cert.current.info.serial != switch_cert_first and time.time() > switch_first_expiry
