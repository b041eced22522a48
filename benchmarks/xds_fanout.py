"""xDS fan-out: 1,000 concurrent ADS streams plus one real Envoy; one endpoint change; how long until
every stream has it (p50, p99), until the Envoy shows it in /clusters, and server memory per stream.

The server runs in this process as in `edgectl run` (model behind an EventBus, start_mesh on its own
thread). The 1,000 streams are grpc.aio clients in a separate process (``--client``), each its own
connection and node id, behaving like a minimal Envoy (CDS and LDS wildcard, EDS and RDS by name, every
response ACKed). A round moves the one workload of the called service between two nodes; the time of a
stream is from just before the model event is published to when that stream receives the endpoints
response with the new address (CLOCK_MONOTONIC is shared by both processes). Both protocol variants
are measured, each with a server process of its own (memory per stream: the server's RSS growth while
the streams open, over their number). Goals: 1,000 streams p99 under 50 ms; 10,000 under 1 s and 20 KiB
per stream; an Envoy updated in under 10 ms while a fan-out runs.

``--mtls``: as with ``edgectl run --pki-dir``: a PKI (``PkiService`` on the bus) issues every host an
identity, each client stream and the Envoy connect with their own certificate and are authorized by it
(``PkiService.authorize_xds``) on every message, and the mesh config is mTLS (SDS from the PKI). The
baseline, in the same run, then authorizes streams as the server did before: the client certificate
parsed on every message and a map of every identity made for each check, every open stream rechecked
on each placement and each PKI change.

Prints a table and a JSON object of figures as the last line. Run: .venv/bin/python benchmarks/xds_fanout.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINTS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"  # as meshctl.xds_types
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTES = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
NODE_IPS = ("127.0.0.2", "127.0.0.3")


WATCHER = """
import http.client, sys, time
admin = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
print("ready", flush=True)
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    admin.request("GET", "/clusters")
    if sys.argv[2] in admin.getresponse().read().decode():
        print(time.monotonic(), flush=True)
        break
    time.sleep(0.0005)  # Envoy answers admin on the thread that applies xDS: do not crowd it
else:
    print("none", flush=True)
"""


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 1,000 connections on each side


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- the client process: N minimal Envoys ------------------------------------------------------------


class Streams:
    def __init__(self, address: str, nodes: int, delta: bool, service_port: int, tls_dir: str | None = None) -> None:
        self.address = address
        self.tls_dir = tls_dir
        """mTLS: each node's ``<node>.crt`` and ``<node>.key`` and the CA's ``bundle.pem`` are here."""
        self.nodes = nodes
        self.delta = delta
        self.route = f"out/{service_port}"
        self.ready = 0
        self.expect: str | None = None
        self.seen: dict[int, float] = {}
        self.all_seen = asyncio.Event()
        self.ready_event = asyncio.Event()
        self.stopping = False
        """The run is over: streams that end now are not started again."""
        self.restarts: Counter[str] = Counter()
        """Streams started again, by the status they ended with."""

    def endpoint_ips(self, packed: Any) -> set[str]:
        from envoy.config.endpoint.v3 import endpoint_pb2

        cla = endpoint_pb2.ClusterLoadAssignment()
        packed.Unpack(cla)
        return {lb.endpoint.address.socket_address.address for group in cla.endpoints for lb in group.lb_endpoints}

    def saw(self, index: int, ips: set[str], at: float) -> None:
        if self.expect is not None and self.expect in ips and index not in self.seen:
            self.seen[index] = at
            if len(self.seen) == self.nodes:
                self.all_seen.set()

    async def run(self, index: int) -> None:
        """One stream; started again if its connection fails before it is ready (thousands of
        connections at once can overflow the listen backlog)."""
        import grpc

        while True:
            try:
                await self._run(index)
                return
            except grpc.aio.AioRpcError as exc:
                if self.stopping:
                    return  # (its cancellation, surfacing as an RPC error)
                self.restarts[exc.code().name] += 1  # (said once the streams are ready: thousands)
                await asyncio.sleep(0.5)

    async def _run(self, index: int) -> None:
        from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

        node = f"h{index:05d}"
        requests: asyncio.Queue[Any] = asyncio.Queue()

        async def outgoing() -> AsyncIterator[Any]:
            while True:
                yield await requests.get()

        async with self.channel(node) as channel:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            got: set[str] = set()
            if self.delta:
                first = discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER)
                first.node.id = node
                requests.put_nowait(first)
                requests.put_nowait(discovery_pb2.DeltaDiscoveryRequest(type_url=LISTENER))
                async for response in stub.DeltaAggregatedResources(outgoing(), wait_for_ready=True):
                    now = time.monotonic()
                    t = response.type_url
                    requests.put_nowait(discovery_pb2.DeltaDiscoveryRequest(type_url=t, response_nonce=response.nonce))
                    if t == CLUSTER and ENDPOINTS not in got:
                        requests.put_nowait(
                            discovery_pb2.DeltaDiscoveryRequest(
                                type_url=ENDPOINTS, resource_names_subscribe=["svc/web"]
                            )
                        )
                    if t == LISTENER and ROUTES not in got:
                        requests.put_nowait(
                            discovery_pb2.DeltaDiscoveryRequest(type_url=ROUTES, resource_names_subscribe=[self.route])
                        )
                    if t == ENDPOINTS:
                        for r in response.resources:
                            self.saw(index, self.endpoint_ips(r.resource), now)
                    self._got(got, t)
            else:
                first = discovery_pb2.DiscoveryRequest(type_url=CLUSTER)
                first.node.id = node
                requests.put_nowait(first)
                requests.put_nowait(discovery_pb2.DiscoveryRequest(type_url=LISTENER))
                names = {ENDPOINTS: ["svc/web"], ROUTES: [self.route]}
                async for response in stub.StreamAggregatedResources(outgoing(), wait_for_ready=True):
                    now = time.monotonic()
                    t = response.type_url
                    requests.put_nowait(
                        discovery_pb2.DiscoveryRequest(
                            type_url=t,
                            version_info=response.version_info,
                            response_nonce=response.nonce,
                            resource_names=names.get(t, []),
                        )
                    )
                    if t == CLUSTER and ENDPOINTS not in got:
                        requests.put_nowait(
                            discovery_pb2.DiscoveryRequest(type_url=ENDPOINTS, resource_names=names[ENDPOINTS])
                        )
                    if t == LISTENER and ROUTES not in got:
                        requests.put_nowait(
                            discovery_pb2.DiscoveryRequest(type_url=ROUTES, resource_names=names[ROUTES])
                        )
                    if t == ENDPOINTS:
                        for packed in response.resources:
                            self.saw(index, self.endpoint_ips(packed), now)
                    self._got(got, t)

    def channel(self, node: str) -> Any:
        import grpc

        if self.tls_dir is None:
            return grpc.aio.insecure_channel(self.address)
        files = Path(self.tls_dir)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(files / "bundle.pem").read_bytes(),
            private_key=(files / f"{node}.key").read_bytes(),
            certificate_chain=(files / f"{node}.crt").read_bytes(),
        )
        return grpc.aio.secure_channel(self.address, credentials)

    def _got(self, got: set[str], type_url: str) -> None:
        before = len(got)
        got.add(type_url)
        if len(got) == 4 and before == 3:
            self.ready += 1
            if self.ready == self.nodes:
                self.ready_event.set()


def say_restarts(client: int, restarts: Counter[str], when: str) -> None:
    if restarts:
        said = ", ".join(f"{count} {code}" for code, count in restarts.most_common())
        print(f"client {client}: streams started again {when}: {said}", file=sys.stderr, flush=True)


async def client_main(args: argparse.Namespace) -> None:
    # Each stream started again leaves grpc.aio's request reader of the failed one behind, which asyncio
    # reports when it is collected (thousands of lines while 10,000 streams connect): counted instead.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    streams = Streams(args.address, args.nodes, args.delta, args.service_port, args.tls_dir)
    tasks = []
    for index in range(args.first, args.first + args.nodes):
        tasks.append(asyncio.create_task(streams.run(index)))
        if index % 50 == 49:
            await asyncio.sleep(0)  # let connections start rather than queue 1,000 at once
    while not streams.ready_event.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(streams.ready_event.wait(), 10)
        if not streams.ready_event.is_set():
            print(f"client {args.first}: {streams.ready} of {args.nodes} streams ready", file=sys.stderr, flush=True)
    say_restarts(args.first, streams.restarts, "while connecting")
    at_ready = Counter(streams.restarts)
    print(json.dumps({"ready": streams.ready}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "quit":
            break
        streams.expect, streams.seen = line.split()[1], {}
        streams.all_seen.clear()
        with contextlib.suppress(TimeoutError):  # report who missed it rather than hang
            await asyncio.wait_for(streams.all_seen.wait(), 30)
        print(json.dumps({"seen": list(streams.seen.values()), "missing": args.nodes - len(streams.seen)}), flush=True)
    say_restarts(args.first, streams.restarts - at_ready, "after all were ready")
    streams.stopping = True
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    # Nothing is left to say: leave without grpc.aio's teardown, which reports each of its pending
    # request readers (thousands of tracebacks) when the loop closes under it.
    os._exit(0)


# -- the server side ---------------------------------------------------------------------------------


def fabric(hosts: int, service_port: int) -> str:
    host_lines = "\n".join(
        f"  - {{id: h{i:05d}, switch: s1, ip: 127.1.{i // 250}.{i % 250 + 1}}}" for i in range(hosts)
    )
    return f"""
name: fanout
subnet: 127.0.0.0/8
sites:
  - {{id: a, tier: edge, region: r, zone: a}}
  - {{id: b, tier: edge, region: r, zone: b}}
switches:
  - {{id: s1, dpid: 1, site: a}}
  - {{id: s2, dpid: 2, site: b}}
links:
  - {{a: s1, b: s2, latency_ms: 1, bandwidth_mbps: 1000}}
hosts:
{host_lines}
  - {{id: envoy, switch: s1, ip: 127.2.0.1}}
nodes:
  - {{id: n1, site: a, switch: s1, cpu_millis: 4000, memory_mib: 4096, ip: {NODE_IPS[0]}}}
  - {{id: n2, site: b, switch: s2, cpu_millis: 4000, memory_mib: 4096, ip: {NODE_IPS[1]}}}
services:
  - {{name: web, port: {service_port}, replicas: 1, cpu_millis: 100, memory_mib: 64}}
  - {{name: api, port: {service_port + 1}, replicas: 1, cpu_millis: 100, memory_mib: 64}}
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextlib.contextmanager
def baseline_server(enabled: bool) -> Iterator[None]:
    """The baseline, in the same run: every response encoded for its own stream (no shared bytes) and
    the streams woken in arrival order (one batch, no turns), as the server did before."""
    if not enabled:
        yield
        return
    from meshctl import servicer
    from meshctl.encoding import ResponseEncoder

    original_init, original_chunk = servicer.AdsServicer.__init__, servicer.AdsServicer.wake_chunk

    def per_stream_encoding(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.encoder = ResponseEncoder(max_bytes=0)

    servicer.AdsServicer.__init__ = per_stream_encoding  # type: ignore[method-assign]
    servicer.AdsServicer.wake_chunk = 1 << 30
    try:
        yield
    finally:
        servicer.AdsServicer.__init__ = original_init  # type: ignore[method-assign]
        servicer.AdsServicer.wake_chunk = original_chunk


@contextlib.contextmanager
def baseline_authorization(enabled: bool) -> Iterator[None]:
    """The mTLS baseline, in the same run: streams authorized as before (each check parsed the client
    certificate twice and made a map of every identity the PKI holds; every open stream was rechecked on
    each placement and on each PKI change, and each identity handed to SDS was a new object)."""
    if not enabled:
        yield
        return
    from meshctl import xds_grpc
    from pki import certs
    from pki.authz import check_xds_node
    from pki.errors import PkiError
    from pki.service import PkiService
    from pki.verify import peer_spiffe_id

    def old_authorize_xds(self: Any, node_id: str, certificate_pem: str) -> str | None:
        try:
            peer = str(peer_spiffe_id(certificate_pem))
            leaf = certs.load_pem_chain(certificate_pem, "peer certificate")[0]
        except PkiError as exc:
            return f"the client certificate is not an X.509-SVID: {exc}"
        if time.time() >= certs.to_epoch(leaf.not_valid_after_utc):
            return f"the client certificate of {peer} expired"
        revoked = self.snapshot.revocations.reason_revoked(leaf.serial_number, peer)
        if revoked is not None:
            return str(revoked)
        identities = {subject: str(svid.spiffe_id) for subject, svid in self.snapshot.identities.items()}
        placed = self._state().workloads.get(node_id)
        placed_on = {node_id: str(placed.node) if placed is not None and placed.node is not None else None}
        return check_xds_node(node_id, peer, identities, trust_domain=self.trust_domain, placed_on=placed_on)

    def every_stream_on_placement(_event: Any, before: Any, after: Any) -> tuple[str, ...] | None:
        return None if before is None or any(a is not b for a, b in zip(before, after, strict=True)) else ()

    def all_new(
        _served: Any, _made: Any, identities: Any, make: Any, _only: Any
    ) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        made = {node: result for node, svid in identities.items() if (result := make(svid)) is not None}
        return dict(identities), made, list(identities)

    server: Any = xds_grpc  # the functions its MeshServer calls, swapped for the run
    saved = (PkiService.authorize_xds, server.model_rechecks, server.identity_changes)
    PkiService.authorize_xds = old_authorize_xds  # type: ignore[method-assign]
    server.model_rechecks, server.identity_changes = every_stream_on_placement, all_new
    try:
        yield
    finally:
        PkiService.authorize_xds = saved[0]  # type: ignore[method-assign]
        server.model_rechecks, server.identity_changes = saved[1:]


def rounds_after_revocations(
    pki: Any, spares: list[str], move_api: Any, watch_envoy: Any, seen_at: Any, publish: Any
) -> dict[str, list[float]]:
    """A forced rotation (a revocation, of an identity no stream holds) and an Envoy's own change published
    right after it, in alternate rounds: with the streams that could show the revoked certificate rechecked
    (none here), and, as before, every stream. Per mode: the rotation call's own time (what the caller, an
    eviction's model writer, waits for the mesh to take the new identities), and the time until the Envoy
    lists its change, both from the rotation's start."""
    from meshctl import xds_grpc
    from pki.policy import host_spiffe_id

    server: Any = xds_grpc  # the function its MeshServer calls, swapped per round
    targeted = server.revocation_rechecks
    every_stream: Any = lambda *_args: None  # noqa: E731  (EVERY_STREAM)
    modes = ("targeted", "every_stream")
    measured: dict[str, list[float]] = {f"{mode}_{what}": [] for mode in modes for what in ("call", "envoy")}
    try:
        for round_no, spare in enumerate(spares):
            mode = modes[round_no % 2]
            server.revocation_rechecks = targeted if mode == "targeted" else every_stream
            api_wanted, api_event = move_api()
            watcher = watch_envoy("svc/api", api_wanted)
            started_at = time.monotonic()
            pki.rotate(host_spiffe_id(pki.trust_domain, spare))
            measured[f"{mode}_call"].append((time.monotonic() - started_at) * 1000)
            publish(api_event)
            seen = seen_at(watcher)
            if seen is not None:
                measured[f"{mode}_envoy"].append((seen - started_at) * 1000)
            time.sleep(0.2)
    finally:
        server.revocation_rechecks = targeted
    return measured


def run_variant(delta: bool, streams: int, rounds: int, procs: int, baseline: bool, mtls: bool) -> dict[str, Any]:
    with (baseline_authorization if mtls else baseline_server)(baseline):
        return _run_variant(delta, streams, rounds, procs, baseline, mtls)


@contextlib.contextmanager
def mesh_pki(bus: Any, hosts: list[str], enabled: bool) -> Iterator[tuple[Any, str | None]]:
    """With ``enabled``: a CA and ``PkiService`` (subscribed to the bus, as ``edgectl run --pki-dir`` has
    it) with an identity for each host, every host's certificate and key written to a directory for the
    clients; yields (the PKI, that directory). Else (None, None)."""
    if not enabled:
        yield None, None
        return
    import tempfile

    from pki.ca import CertificateAuthority
    from pki.cli import write_svid
    from pki.service import PkiService
    from placement.naming import DEFAULT_TRUST_DOMAIN

    ca, _root_key = CertificateAuthority.create(DEFAULT_TRUST_DOMAIN)
    pki = PkiService(ca, lambda: bus.state, hosts=lambda _state: hosts)
    bus.subscribe(pki)
    pki.start()
    with tempfile.TemporaryDirectory(prefix="edgectl-fanout-tls-") as directory:
        for host in hosts:
            write_svid(f"{directory}/{host}", pki.snapshot.identities[host], pki.snapshot.bundle_pem)
        Path(directory, "bundle.pem").write_text(pki.snapshot.bundle_pem)
        try:
            yield pki, directory
        finally:
            pki.stop()


def _run_variant(delta: bool, streams: int, rounds: int, procs: int, baseline: bool, mtls: bool) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        return _measure_variant(stack, delta, streams, rounds, procs, baseline, mtls)


def _measure_variant(
    stack: contextlib.ExitStack, delta: bool, streams: int, rounds: int, procs: int, baseline: bool, mtls: bool
) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from edgectl.bus import EventBus
    from meshctl.bootstrap import XdsClientTls, render_bootstrap
    from meshctl.sidecar import EnvoySidecar
    from meshctl.snapshot import MeshConfig
    from meshctl.xds_grpc import XdsTls, start_mesh
    from mininet_topos.controller_process import free_port
    from netmodel import events as ev
    from netmodel.fabric import build_state
    from netmodel.fabric_file import parse_fabric
    from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId
    from netmodel.types import Resources, Workload
    from pki.policy import controller_spiffe_id
    from placement.naming import DEFAULT_TRUST_DOMAIN

    service_port, workload_port, admin_port = free_port(), free_port(), free_port()

    def workload(node: str, service: str = "web") -> Workload:
        return Workload(
            WorkloadId(f"{service}-1"), ServiceName(service), SpiffeId(f"spiffe://edgectl.local/svc/{service}"),
            Resources(100, 64), NodeId(node), workload_port,
        )  # fmt: skip

    bus = EventBus(build_state(parse_fabric(fabric(streams, service_port).encode(), "fanout.yaml")))
    bus.start()
    bus.publish(ev.WorkloadPlaced(workload("n1"))).result(5)
    bus.publish(ev.WorkloadPlaced(workload("n1", "api"))).result(5)
    registry = CollectorRegistry()
    # Every host calls web; only the Envoy also calls api, so moving api concerns the Envoy alone.
    calls = {f"h{i:05d}": ("web",) for i in range(streams)} | {"envoy": ("web", "api")}
    # Spare host identities (no stream of theirs) for the forced-rotation rounds: each revokes one.
    spares = [f"spare-{i}" for i in range(2 * rounds)]
    pki, tls_dir = stack.enter_context(mesh_pki(bus, sorted(calls) + spares, mtls))
    tls = envoy_tls = None
    if pki is not None:
        control = pki.control_tls(ip_addresses=["127.0.0.1"])
        tls = XdsTls(control.cert_chain_pem, control.private_key_pem, control.bundle_pem, pki.authorize_xds)
        files = f"{tls_dir}/envoy"
        envoy_tls = XdsClientTls(
            f"{files}.crt", f"{files}.key", f"{files}.bundle.pem", controller_spiffe_id(DEFAULT_TRUST_DOMAIN)
        )
    config = MeshConfig(host_calls=calls, mtls=pki is not None)
    server = start_mesh(lambda: bus.state, bus.subscribe, "127.0.0.1", 0, None, registry, config, tls)
    if pki is not None:  # as `edgectl run --pki-dir`: the mesh over mTLS, SDS from the PKI
        server.use_identities(pki.snapshot, mtls=True, crl_pem=pki.trust_crls_pem())
        pki.subscribe(lambda snapshot: server.use_identities(snapshot, mtls=True, crl_pem=pki.trust_crls_pem()))
    address = f"127.0.0.1:{server.address[1]}"
    gc.collect()
    rss_before = rss_bytes()
    share = -(-streams // procs)

    def client_process(first: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, __file__, "--client", "--address", address, "--first", str(first),
             "--nodes", str(min(share, streams - first)), "--service-port", str(service_port),
             *(["--delta"] if delta else []), *(["--tls-dir", tls_dir] if tls_dir else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
        )  # fmt: skip

    clients = [client_process(first) for first in range(0, streams, share)]
    envoy = EnvoySidecar(render_bootstrap("envoy", "bench", delta, address, admin_port, envoy_tls))
    started = time.monotonic()

    def tell_clients(line: str) -> None:
        for client in clients:
            assert client.stdin is not None
            client.stdin.write(line + "\n")
            client.stdin.flush()

    def hear_clients() -> list[dict[str, Any]]:
        reports = []
        for client in clients:
            assert client.stdout is not None
            reports.append(json.loads(client.stdout.readline()))
        return reports

    try:
        ready = sum(report["ready"] for report in hear_clients())
        setup_s = time.monotonic() - started
        envoy.start()
        envoy.wait_for(lambda: f"{NODE_IPS[0]}:{workload_port}" in envoy.admin("/clusters"), 10, "envoy ready")
        time.sleep(0.5)
        gc.collect()
        rss_after = rss_bytes()
        gc.freeze()  # as `edgectl run` does after start-up: long-lived objects out of the collector's way

        def watch_envoy(cluster: str, wanted: str) -> subprocess.Popen[str]:
            """A poller in its own process (no GIL shared with the server): when Envoy lists it."""
            watcher = subprocess.Popen(
                [sys.executable, "-c", WATCHER, str(admin_port), f"{cluster}::{wanted}::"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert watcher.stdout is not None and watcher.stdout.readline().strip() == "ready"
            return watcher

        def seen_at(watcher: subprocess.Popen[str]) -> float | None:
            assert watcher.stdout is not None
            line = watcher.stdout.readline().strip()
            watcher.wait(5)
            return float(line) if line and line != "none" else None

        def envoy_pushed_at(since_wall: float) -> float | None:
            """Monotonic time the server sent Envoy the endpoints changed after ``since_wall``."""
            status = server.cache.status("envoy")
            sent = status.types[ENDPOINTS].sent_at if status and ENDPOINTS in status.types else None
            if sent is None or sent < since_wall:
                return None
            return time.monotonic() - (time.time() - sent)

        def pushes() -> int:
            return server.metrics.push_counts["eds"]

        api_on = 0  # index into NODE_IPS of the api instance

        def move_api() -> tuple[str, Any]:
            nonlocal api_on
            api_on = 1 - api_on
            return f"{NODE_IPS[api_on]}:{workload_port}", ev.WorkloadPlaced(workload(f"n{api_on + 1}", "api"))

        latencies: list[float] = []
        envoy_ms: list[float] = []
        during_ms: list[float] = []
        server_sent_ms: list[float] = []
        missing = 0
        for round_no in range(rounds):
            target = NODE_IPS[(round_no + 1) % 2]
            tell_clients(f"expect {target}")
            time.sleep(0.2)
            wanted = f"{target}:{workload_port}"
            api_wanted, api_event = move_api()
            watcher = watch_envoy("svc/api", api_wanted)
            before = pushes()
            changed_at, changed_wall = time.monotonic(), time.time()
            bus.publish(ev.WorkloadPlaced(workload("n2" if target == NODE_IPS[1] else "n1")))
            # While that change fans out to every stream, one only the Envoy needs (a migration's
            # caller): with fair turns it does not wait for the whole fan-out.
            while pushes() < before + min(50, streams // 10) and time.monotonic() - changed_at < 30:
                time.sleep(0.0005)
            api_at = time.monotonic()
            bus.publish(api_event)
            while pushes() < before + streams + 1 and time.monotonic() - changed_at < 60:
                time.sleep(0.002)
            server_sent_ms.append((time.monotonic() - changed_at) * 1000)
            reports = hear_clients()
            api_seen = seen_at(watcher)
            if api_seen is not None:
                during_ms.append((api_seen - api_at) * 1000)
            # In the fan-out, Envoy's turn is when the server sent it the change (it applies it about
            # 1-2 ms later, see the rounds alone).
            envoy_at = envoy_pushed_at(changed_wall)
            envoy.wait_for(lambda wanted=wanted: wanted in envoy.admin("/clusters"), 5, "the moved endpoint")
            for report in reports:
                missing += report["missing"]
                latencies += [(t - changed_at) * 1000 for t in report["seen"]]
            if envoy_at is not None:
                envoy_ms.append((envoy_at - changed_at) * 1000)
        # The same change concerning the Envoy alone, every other stream idle but connected: only it
        # is pushed (push only to nodes whose content changed).
        alone_ms: list[float] = []
        alone_pushed_ms: list[float] = []
        others_pushed = 0
        for _round in range(rounds):
            before = pushes()
            api_wanted, api_event = move_api()
            watcher = watch_envoy("svc/api", api_wanted)
            changed_at, changed_wall = time.monotonic(), time.time()
            bus.publish(api_event)
            seen = seen_at(watcher)
            if seen is not None:
                alone_ms.append((seen - changed_at) * 1000)
            pushed = envoy_pushed_at(changed_wall)
            if pushed is not None:
                alone_pushed_ms.append((pushed - changed_at) * 1000)
            time.sleep(0.05)
            others_pushed += pushes() - before - 1
        revocation_ms = (
            rounds_after_revocations(pki, spares, move_api, watch_envoy, seen_at, bus.publish) if pki else {}
        )
        tell_clients("quit")
        for client in clients:
            client.wait(20)

        def p50(values: list[float]) -> float | None:
            return round(statistics.median(values), 1) if values else None

        return {
            "variant": ("delta" if delta else "sotw") + (" mtls" if mtls else "") + (" baseline" if baseline else ""),
            "streams": streams,
            "client_processes": len(clients),
            "rounds": rounds,
            "setup_s": round(setup_s, 1),
            "ready": ready,
            "p50_ms": round(statistics.median(latencies), 1),
            "p99_ms": round(percentile(latencies, 0.99), 1),
            "max_ms": round(max(latencies), 1),
            "server_sent_all_ms_p50": round(statistics.median(server_sent_ms), 1),
            "envoy_own_change_during_fanout_ms_p50": p50(during_ms),
            "envoy_own_change_during_fanout_ms_max": round(max(during_ms), 1) if during_ms else None,
            "envoy_pushed_in_fanout_ms_p50": p50(envoy_ms),
            "envoy_pushed_in_fanout_ms_max": round(max(envoy_ms), 1) if envoy_ms else None,
            "envoy_alone_ms_p50": p50(alone_ms),
            "envoy_alone_ms_max": round(max(alone_ms), 1) if alone_ms else None,
            "envoy_alone_pushed_ms_p50": p50(alone_pushed_ms),
            "other_streams_pushed_when_alone": others_pushed,
            **{f"revocation_{key}_ms_p50": p50(ms) for key, ms in revocation_ms.items()},
            "missed": missing,
            "kib_per_stream": round((rss_after - rss_before) / 1024 / (streams + 1), 1),
        }
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
        envoy.stop()
        server.stop()
        bus.stop()


def run_alone(variant: str, streams: int, rounds: int, client_procs: int, baseline: bool, mtls: bool) -> dict[str, Any]:
    """One variant in a server process of its own: the memory per stream is then this variant's alone
    (in one process, a later variant's streams reused what an earlier one's had freed, and read lighter)."""
    command = [
        sys.executable, __file__, "--one", "--streams", str(streams), "--variants", variant,
        "--rounds", str(rounds), "--client-procs", str(client_procs), *(["--baseline"] if baseline else []),
        *(["--mtls"] if mtls else []),
    ]  # fmt: skip
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=REPO, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--nodes", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--service-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--delta", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--streams", default="1000", help="stream counts, comma-separated (e.g. 1000,10000)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", default="sotw,delta")
    parser.add_argument(
        "--client-procs", type=int, default=0, help="client processes (default: 2, and one per 1,250 streams beyond)"
    )
    parser.add_argument(
        "--baseline-max-streams", type=int, default=1000, help="run the baseline at stream counts up to this"
    )
    parser.add_argument(
        "--mtls",
        action="store_true",
        help="xDS and the mesh over mTLS as with `edgectl run --pki-dir` (an identity per stream, each stream"
        " authorized by its client certificate); the baseline then authorizes streams as before",
    )
    parser.add_argument("--tls-dir", help=argparse.SUPPRESS)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_fd_limit()
    if args.client:
        asyncio.run(client_main(args))
        return 0
    if args.one:
        procs = args.client_procs or max(2, -(-int(args.streams) // 1250))
        delta = args.variants == "delta"
        print(json.dumps(run_variant(delta, int(args.streams), args.rounds, procs, args.baseline, args.mtls)))
        return 0
    results = []
    for streams in [int(n) for n in args.streams.split(",")]:
        for baseline in (False, True) if streams <= args.baseline_max_streams else (False,):
            for variant in args.variants.split(","):
                results.append(run_alone(variant, streams, args.rounds, args.client_procs, baseline, args.mtls))
    columns = [
        ("streams", "streams"),
        ("variant", "variant"),
        ("p50_ms", "all streams p50 ms"),
        ("p99_ms", "p99 ms"),
        ("server_sent_all_ms_p50", "server sent all ms"),
        ("envoy_own_change_during_fanout_ms_p50", "envoy own chg ms"),
        ("envoy_pushed_in_fanout_ms_p50", "envoy's turn ms"),
        ("envoy_alone_ms_p50", "envoy alone ms"),
        ("kib_per_stream", "KiB/stream"),
        ("setup_s", "setup s"),
    ]
    print(f"ADS streams (clients in other processes) + 1 Envoy, {args.rounds} endpoint moves per variant")
    print("  ".join(f"{title:>18}" for _, title in columns))
    for result in results:
        print("  ".join(f"{result[key]!s:>18}" for key, _ in columns))
    print(
        "goals: 1,000 streams p99 < 50 ms; 10,000 streams p99 < 1,000 ms and < 20 KiB per stream;"
        " Envoy updated < 10 ms while a fan-out runs"
    )
    baseline_is = (
        "over mTLS, streams authorized as before (the certificate parsed and every identity mapped per check,"
        " every stream rechecked per placement)"
        if args.mtls
        else "each response encoded per stream, streams woken in arrival order"
    )
    print(
        "envoy own chg: a change only the Envoy needs, published while another fans out to every stream, until"
        " its /clusters shows it; envoy's turn: when the server sent it the fanned-out change; envoy alone: a"
        f" change only it needs, others idle; baseline: {baseline_is}"
    )
    figures: dict[str, Any] = {
        "benchmark": "xds_fanout",
        "goal_p99_ms": {"1000": 50, "10000": 1000},
        "goal_kib_per_stream": 20,
        "goal_envoy_ms": 10,
    }
    for r in results:
        prefix = f"{r['streams']}_{r['variant'].replace(' ', '_')}"
        figures |= {f"{prefix}_{k}": v for k, v in r.items() if k not in ("variant", "streams")}
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
