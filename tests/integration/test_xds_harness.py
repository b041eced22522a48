"""Helpers for the xDS integration tests (no tests here): a fabric on loopback addresses, the model
behind an EventBus, the control plane, tiny backends, real Envoys, test certificates.

Workloads listen on 127.0.0.x: the fabric declares ``subnet: 127.0.0.0/8`` and puts its compute nodes
on 127.0.0.2, .3, .4, so EDS endpoints are real loopback addresses. Everything started here is
stopped here (Envoys by PID, servers by handle); only loopback and Unix sockets are used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import http.server
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from edgectl.bus import EventBus
from meshctl.bootstrap import render_bootstrap
from meshctl.sidecar import EnvoySidecar
from meshctl.snapshot import MeshConfig
from meshctl.xds_grpc import MeshServer, start_mesh
from netmodel import events as ev
from netmodel.fabric import build_state
from netmodel.fabric_file import parse_fabric
from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import PolicyDefault, Resources, Workload
from tests.integration.harness import free_port

NODE_IPS = {"n1": "127.0.0.2", "n2": "127.0.0.3", "n3": "127.0.0.4"}


def fabric_text(web_port: int, hello_port: int) -> str:
    return f"""
name: xds-test
subnet: 127.0.0.0/8
sites:
  - {{id: edge-a, tier: edge, region: eu-west, zone: a}}
  - {{id: edge-b, tier: edge, region: eu-west, zone: b}}
  - {{id: cloud, tier: cloud, region: eu-central, zone: dc1}}
switches:
  - {{id: ea1, dpid: 1, site: edge-a}}
  - {{id: eb1, dpid: 2, site: edge-b}}
  - {{id: c1, dpid: 3, site: cloud}}
links:
  - {{a: ea1, b: c1, latency_ms: 10, bandwidth_mbps: 100}}
  - {{a: eb1, b: c1, latency_ms: 10, bandwidth_mbps: 100}}
hosts:
  - {{id: u1, switch: ea1, ip: 127.0.0.1}}
nodes:
  - {{id: n1, site: edge-a, switch: ea1, cpu_millis: 4000, memory_mib: 4096, ip: {NODE_IPS["n1"]}}}
  - {{id: n2, site: edge-b, switch: eb1, cpu_millis: 4000, memory_mib: 4096, ip: {NODE_IPS["n2"]}}}
  - {{id: n3, site: cloud, switch: c1, cpu_millis: 4000, memory_mib: 4096, ip: {NODE_IPS["n3"]}}}
services:
  - {{name: web, port: {web_port}, replicas: 1, cpu_millis: 100, memory_mib: 64, allow_from: [{{host: u1}}]}}
  - {{name: hello, port: {hello_port}, replicas: 1, cpu_millis: 100, memory_mib: 64, allow_from: [{{host: u1}}]}}
"""


def make_workload(wid: str, service: str, node: str | None, port: int) -> Workload:
    return Workload(
        id=WorkloadId(wid),
        service=ServiceName(service),
        spiffe_id=SpiffeId(f"spiffe://edgectl.local/svc/{service}"),
        resources=Resources(100, 64),
        node=NodeId(node) if node is not None else None,
        port=port,
    )


@dataclass
class Mesh:
    """The model (behind a bus, as in ``edgectl run``) and its xDS server."""

    bus: EventBus
    server: MeshServer
    registry: CollectorRegistry
    web_port: int
    hello_port: int
    unix_path: str
    config: MeshConfig
    spec: Any
    default_policy: PolicyDefault = PolicyDefault.ALLOW
    envoys: list[EnvoySidecar] = field(default_factory=list)

    @property
    def tcp_address(self) -> str:
        return f"127.0.0.1:{self.server.address[1]}"

    def place(self, workload: Workload) -> int:
        """Apply WorkloadPlaced through the bus; returns the new generation."""
        return self.bus.publish(ev.WorkloadPlaced(workload)).result(timeout=5).generation

    def stop_controller(self) -> None:
        self.server.stop()
        self.bus.stop()

    def start_controller(self, *events: ev.Event) -> None:
        """A new controller process, as after a restart: the model rebuilt from the fabric file and
        ``events`` replayed (so its generation need not match the old one), the server on the same
        addresses."""
        port = self.server.address[1]
        bus = EventBus(initial_state(self.spec, self.default_policy))
        bus.start()
        for event in events:
            bus.publish(event).result(timeout=5)
        self.bus = bus
        self.server = start_mesh(
            lambda: bus.state, bus.subscribe, "127.0.0.1", port, self.unix_path, self.registry, self.config
        )

    def set_config(self, config: MeshConfig) -> None:
        self.config = config
        self.server.update_config(config)

    def envoy(
        self, node_id: str, service: str, delta: bool = False, unix: bool = False, log_level: str = "warning"
    ) -> EnvoySidecar:
        address = f"unix:{self.unix_path}" if unix else self.tcp_address
        sidecar = EnvoySidecar(render_bootstrap(node_id, service, delta, address, free_port()), log_level).start()
        self.envoys.append(sidecar)
        return sidecar

    def node_view(self, node_id: str) -> dict[str, Any]:
        return dict(self.server.clients_view()["nodes"].get(node_id, {}))

    def acked_types(self, node_id: str) -> set[str]:
        types = self.node_view(node_id).get("types", {})
        return {t for t, s in types.items() if s["acked"] and s["current"]}

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return float(value or 0.0)


def initial_state(spec: Any, default_policy: PolicyDefault) -> FabricState:
    return dataclasses.replace(build_state(spec), default_policy=default_policy)


@contextlib.contextmanager
def mesh(
    config: MeshConfig | None = None,
    default_policy: PolicyDefault = PolicyDefault.ALLOW,
    denials: Any = None,
    fabric: Callable[[int, int], str] = fabric_text,
) -> Iterator[Mesh]:
    """``default_policy``: ALLOW unless a test is about authorization, so the sidecars enforce no RBAC
    (the xDS tests declare no ``allow_from``); ``denials``: where the sidecars' RBAC denials go;
    ``fabric``: the fabric file's text from web's and hello's ports (``fabric_text``'s nodes)."""
    web_port, hello_port = free_port(), free_port()
    spec = parse_fabric(fabric(web_port, hello_port).encode(), "xds-test.yaml")
    bus = EventBus(initial_state(spec, default_policy))
    bus.start()
    registry = CollectorRegistry()
    config = config or MeshConfig()
    socket_dir = tempfile.mkdtemp(prefix="edgectl-xds-")
    unix_path = str(Path(socket_dir) / "xds.sock")
    server = start_mesh(lambda: bus.state, bus.subscribe, "127.0.0.1", 0, unix_path, registry, config, denials=denials)
    world = Mesh(bus, server, registry, web_port, hello_port, unix_path, config, spec, default_policy)
    try:
        yield world
    finally:
        for sidecar in world.envoys:
            sidecar.stop()
        world.server.stop()
        world.bus.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


# -- backends ----------------------------------------------------------------------------------------


class Backend:
    """An HTTP server on ip:port answering ``<name>`` and echoing the caller identity header."""

    def __init__(self, name: str, ip: str, port: int) -> None:
        self.name = name
        self.hits = 0
        self.identities: list[str] = []
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without this, Nagle holds the body for the
                # peer's delayed ACK (40 ms a request).
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self) -> None:
                backend.hits += 1
                backend.identities.append(self.headers.get("x-forwarded-client-cert", ""))
                body = backend.name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((ip, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"backend-{name}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def backends(*specs: tuple[str, str, int]) -> Iterator[list[Backend]]:
    started = [Backend(*spec) for spec in specs]
    try:
        yield started
    finally:
        for backend in started:
            backend.stop()


def get(port: int, host: str = "127.0.0.1", path: str = "/", timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f": {last!r}" if last else ""))


def port_open(ip: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((ip, port)) == 0


def cluster_hosts(sidecar: EnvoySidecar, cluster: str) -> set[str]:
    """host:port of every endpoint Envoy's /clusters lists for ``cluster``."""
    hosts = set()
    for line in sidecar.admin("/clusters").splitlines():
        parts = line.split("::")
        if len(parts) >= 3 and parts[0] == cluster and ":" in parts[1] and parts[2] == "health_flags":
            hosts.add(parts[1])
    return hosts


# -- certificates for mTLS ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca_pem: str
    leaves: dict[str, tuple[str, str]]  # name -> (cert chain PEM, key PEM)


def make_pki(spiffe_ids: dict[str, str]) -> Pki:
    """A CA and one leaf per name with its SPIFFE id as URI SAN (test-only; the PKI issue does it for real)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgectl test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    leaves = {}
    for name, spiffe_id in spiffe_ids.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        leaves[name] = (cert.public_bytes(pem).decode(), key_pem.decode())
    return Pki(ca.public_bytes(pem).decode(), leaves)


def replace_config(config: MeshConfig, **changes: Any) -> MeshConfig:
    return dataclasses.replace(config, **changes)
