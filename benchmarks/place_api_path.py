"""Place through the real gRPC API, end to end, with 10,000 workloads placed: the API-path half of
``benchmarks/placement_throughput.py`` (which prints it beside the scheduler core).

One controller in this process, composed as ``edgectl run --state-dir DIR`` composes it (``Controller``:
the model writer, the state store with group commit, the HTTP API and live events, the OpenFlow listener
and route engine, the xDS server, the placement API with its failover and declared-replica loops), on the
generated fabric (1,000 nodes) with 10,000 workloads already placed. Clients in other processes (two, 25
threads each, one channel per thread) send ``Place`` calls back to back; each answer waits for the
decision, the model change and its fsync. Per call: the client's wall time. The clients start once the
controller has built every sidecar's snapshot (its start-up, timed apart as ``settled_s``).
"""

from __future__ import annotations

import multiprocessing
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from netmodel.fabric import CableSpec, FabricSpec, HostSpec, NodeSpec, SwitchSpec, build_state
from netmodel.ids import WorkloadId
from netmodel.state import FabricState
from netmodel.types import Workload, frozen_map
from placement.naming import DEFAULT_TRUST_DOMAIN, workload_spiffe_id
from placement.scheduler import DEFAULT_PROFILE, schedule_on
from placement.snapshot import ClusterSnapshot
from placement.types import Decision, PlacementRequest

CLIENT_PROCESSES = 2


@dataclass(frozen=True, slots=True)
class ApiFigures:
    clients: int
    calls: int
    placed_before: int
    places_per_s: float
    p50_ms: float
    p99_ms: float
    failed: int
    settled_s: float
    """From ``Controller.start()`` to every sidecar's snapshot built (the clients start then)."""


def spec_of(state: FabricState) -> FabricSpec:
    """The generated fabric as a declared one (what ``edgectl run`` reads from its file)."""
    switches = state.topology.switches
    name = {dpid: switch.name for dpid, switch in switches.items()}
    cables = tuple(
        CableSpec(
            name[link.src],
            link.src_port,
            name[link.dst],
            link.dst_port,
            (attrs.declared_latency_us or 0) / 1000,
            attrs.capacity_mbps,
        )
        for link, attrs in state.topology.links.items()
        if (link.src, link.src_port) < (link.dst, link.dst_port)
    )
    hosts = tuple(
        HostSpec(h.id, name[h.attachment.switch], h.attachment.port, h.ip, "")
        for h in state.hosts.values()
        if h.attachment is not None
    )
    nodes = tuple(
        NodeSpec(
            n.id,
            n.site,
            name[n.attachment.switch],
            n.attachment.port,
            f"10.200.{k // 250}.{k % 250 + 1}",
            "",
            n.capacity.cpu_millis,
            n.capacity.memory_mib,
        )
        for k, n in enumerate(state.nodes.values())
    )
    return FabricSpec(
        "generated",
        16,
        tuple(state.sites.values()),
        tuple(SwitchSpec(s.name, dpid, s.site) for dpid, s in switches.items() if s.site is not None),
        cables,
        hosts,
        nodes,
        tuple(state.services.values()),
    )


def with_placed_declared(generated: FabricState, requests: list[PlacementRequest]) -> FabricState:
    """The generated fabric as declared (``spec_of``) with ``requests`` placed as the scheduler decides
    them (refusals left out)."""
    return placed_as_scheduled(build_state(spec_of(generated)), requests)


def placed_as_scheduled(state: FabricState, requests: list[PlacementRequest]) -> FabricState:
    """``state`` with ``requests`` placed one at a time as the scheduler decides them, on one cluster
    snapshot (refusals left out); the k-th request's workload is ``<service>-<k>``."""
    snapshot = ClusterSnapshot(state)
    workloads = dict(state.workloads)
    for k, request in enumerate(requests, start=1):
        outcome = schedule_on(snapshot, request, DEFAULT_PROFILE)
        if isinstance(outcome, Decision):
            wid = WorkloadId(f"{request.service}-{k}")
            spiffe = workload_spiffe_id(DEFAULT_TRUST_DOMAIN, request.service, wid)
            node = outcome.assignments[0].node
            workloads[wid] = Workload(
                wid, request.service, spiffe, request.resources, node, constraints=request.constraints
            )
    return replace(state, workloads=frozen_map(workloads))


def _clients(port: int, threads: int, calls: int, services: list[str], out: Any, tls: str | None = None) -> None:
    """One client process: ``threads`` threads, one channel each, ``calls`` Places each, back to back.
    ``tls``: the files prefix of an operator's certificate (``PREFIX.crt``, ``.key``, ``.bundle.pem``)."""
    import grpc

    from placement._pb import placement_pb2 as pb
    from placement._pb import placement_pb2_grpc as pb_grpc

    latencies: list[float] = []
    failed: list[str] = []
    lock = threading.Lock()
    go = threading.Barrier(threads)

    def connect() -> grpc.Channel:
        if tls is None:
            return grpc.insecure_channel(f"127.0.0.1:{port}")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(f"{tls}.bundle.pem").read_bytes(),
            private_key=Path(f"{tls}.key").read_bytes(),
            certificate_chain=Path(f"{tls}.crt").read_bytes(),
        )
        return grpc.secure_channel(f"127.0.0.1:{port}", credentials)

    def client(k: int) -> None:
        with connect() as channel:
            stub = pb_grpc.PlacementStub(channel)
            grpc.channel_ready_future(channel).result(timeout=30)
            go.wait()
            for i in range(calls):
                started = time.perf_counter()
                try:
                    service = services[(k + i) % len(services)]
                    stub.Place(pb.PlaceRequest(service=service, cpu_millis=1, memory_mib=1), timeout=120)
                except grpc.RpcError as exc:
                    with lock:
                        failed.append(f"{exc.code()}: {exc.details()}")
                    continue
                with lock:
                    latencies.append(time.perf_counter() - started)

    workers = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    started = time.time()  # wall clock: the processes' figures are merged
    for worker in workers:
        worker.join()
    out.put((latencies, failed, started, time.time()))


def operator_files(ca_dir: str, prefix: str) -> Any:
    """A CA in ``ca_dir`` (as ``edgectl pki init`` makes it), and an operator's certificate, key and bundle
    written to ``PREFIX.crt``, ``.key`` and ``.bundle.pem``; returns the CA's run options (``--pki-dir``)."""
    from pki.ca import CertificateAuthority
    from pki.cli import PkiRunOptions, write_svid
    from pki.policy import operator_spiffe_id

    ca = CertificateAuthority.init(ca_dir, DEFAULT_TRUST_DOMAIN)
    operator = ca.issue_with_new_key(operator_spiffe_id(DEFAULT_TRUST_DOMAIN, "bench"), time.time())
    write_svid(prefix, operator, ca.bundle_pem)
    return PkiRunOptions(directory=ca_dir, passphrase=None, svid_ttl_s=3600, openflow_tls=False)


def measure_api_path(state: FabricState, clients: int = 50, calls: int = 20, mtls: bool = False) -> ApiFigures:
    """``clients`` concurrent clients, ``calls`` Places each, against a controller holding ``state``.
    ``mtls``: the controller runs with ``--pki-dir`` (every workload gets an SVID, each Place issues one
    and hands it to the mesh's SDS; the clients are operators over mTLS)."""
    from edgectl.bus import EventBus
    from edgectl.config import RunConfig
    from edgectl.controller import Controller
    from mininet_topos.controller_process import free_port

    spec = spec_of(state)  # the same fabric (spec_of is faithful to a state built from a spec)
    with tempfile.TemporaryDirectory(prefix="place-api-path-") as tmp:
        tls = f"{tmp}/operator" if mtls else None
        config = RunConfig(
            fabric_file="",
            openflow_port=free_port(),
            http_port=free_port(),
            xds_port=free_port(),
            api_port=free_port(),
            agent_port=0,
            state_dir=f"{tmp}/state",
            pki=operator_files(f"{tmp}/ca", tls) if tls is not None else None,
        )
        controller = Controller(config, spec)
        # The placed workloads as a restart from --state-dir would restore them, without 10,000 events.
        controller.bus = EventBus(state, observer=controller.metrics.observe_event)
        started = time.perf_counter()
        controller.start()
        try:
            # Places against a controller that is up: its start-up build of every sidecar's snapshot
            # (10,100 of them, ~1-2 s) done, as after any restart, and timed apart.
            settled_s = wait_settled(controller) - started
            context = multiprocessing.get_context("spawn")
            out = context.Queue()
            services = sorted(state.services)
            per_process = clients // CLIENT_PROCESSES
            processes = [
                context.Process(target=_clients, args=(config.api_port, per_process, calls, services, out, tls))
                for _ in range(CLIENT_PROCESSES)
            ]
            for process in processes:
                process.start()
            results = [out.get(timeout=1800) for _ in processes]
            for process in processes:
                process.join()
        finally:
            controller.stop()
    latencies = sorted(x for result in results for x in result[0])
    failed = sum(len(result[1]) for result in results)
    elapsed = max(r[3] for r in results) - min(r[2] for r in results)
    return ApiFigures(
        clients=per_process * CLIENT_PROCESSES,
        calls=len(latencies) + failed,
        placed_before=len(state.workloads),
        places_per_s=len(latencies) / elapsed,
        p50_ms=statistics.median(latencies) * 1000 if latencies else float("nan"),
        p99_ms=latencies[int(0.99 * (len(latencies) - 1))] * 1000 if latencies else float("nan"),
        failed=failed,
        settled_s=settled_s,
    )


def wait_settled(controller: Any, timeout_s: float = 600.0) -> float:
    """Wait until the controller's xDS publisher has built what its model and config make (no build under
    way or asked for, twice 50 ms apart); returns when (``time.perf_counter()``)."""
    publisher = controller.mesh.publisher
    deadline = time.monotonic() + timeout_s
    while True:
        if publisher.settled():
            at = time.perf_counter()
            time.sleep(0.05)
            if publisher.settled():
                return at
        elif time.monotonic() > deadline:
            raise TimeoutError(f"the controller's snapshots were not built within {timeout_s:g} s")
        else:
            time.sleep(0.01)
