"""One controller at scale: 500 OpenFlow switches, 1,000 xDS streams and 10,000 placed workloads in one
``edgectl run`` process; its memory, its CPU at rest and under a link failure, the route recompute, a
migration's control-plane time and one change's fan-out to every stream.

- the fabric (``scale_fabric``): a generated edge/metro/cloud fabric (``mininet_topos.generate.edge_cloud``)
  of about ``--switches`` switches, ``--streams`` user hosts and enough compute nodes for twice the
  workloads; ``--workloads`` declared as replicas of services of 100 instances each (small requests) in a
  binary call tree under one entry service, ``web``, which every user host calls (authorization policy on:
  ``web`` admits the hosts, every other service its caller). The controller places the replicas itself
  (the fastest way to 10,000: the Place API answers ~50/s end to end);
- the switches: ``benchmarks/fake_switch.py`` in one other process (OpenFlow 1.3, LLDP relayed across
  their cables, so the controller discovers every link; a cable cut is a PORT_STATUS at both ends). The
  relay is immediate, so every link measures ~0 us; ``--cable-delays`` holds each probe for its cable's
  declared latency instead (the fake switches' own process then times 1,236 delays a second);
- the streams: grpc.aio clients in one other process (``--client``), delta ADS, one channel and node id
  per user host (gRPC carries the channels over a few shared connections), behaving like a minimal Envoy
  (CDS and LDS wildcard, EDS ``svc/web``, RDS of its outbound port, every response ACKed; a stream that
  fails is opened again after Envoy's back-off, jittered); each remembers when (wall clock) it first saw
  each endpoint.

Measured, in this order, once everything is connected and placed:

- at rest: RSS (VmRSS of /proc/PID/status) and CPU over 10 s (utime + stime of /proc/PID/stat, % of one
  core), the controller's periodic work (drift check every 10 s, port counters every 5 s) included;
- a link failure (a metro ring cable cut at both ends): the route recompute, from /metrics
  ``edgectl_route_compute_seconds`` (the plan rounds in the 10 s after the cut: count and mean), the
  time from the cut to the last delta sent in those 10 s (``/api/v1/routes/changes``, its ``at``: a later
  plan, e.g. for a latency change, counts too), and the CPU over those 10 s; then the cable is mended;
- migrations (``--migrations``, of one ``web`` instance to a cloud node and back, through the placement
  gRPC ``Migrate``): the control-plane time, from the new instance's PLACED event (the placement Watch
  stream's ``at``: when the model held it) until every stream had received the new endpoint (each
  stream's own receive time: the fan-out of one change to all of them); its p50 and p99 over the
  streams, and the slowest stream ("every stream"). The callers' ACKs and a real sidecar's start are
  not in it (no Envoy runs here; the sidecars probe of the CONVERGED event, the controller's own
  view of "every calling sidecar ACKed", is reported beside).
- RSS again after all that, and the peak (VmHWM).

Goal: RSS under 500 MB (istiod: ~1.5 GB for 2,000 sidecars). Benchmarks report; nothing is asserted.

Run: python -m benchmarks.scale [--switches 500] [--streams 1000] [--workloads 10000] [--migrations 3]
(quick check: --switches 50 --streams 100 --workloads 1000). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINTS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTES = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ENTRY = "web"
ENTRY_PORT = 8080
PER_SERVICE = 100
WORKLOAD_CPU_MILLIS = 10
WORKLOAD_MEMORY_MIB = 8
READ_TIMEOUT_S = 30.0
"""How long a read of the controller's HTTP API may take: it answers late while a change keeps it busy."""
RSS_GOAL_MB = 500
RECONNECT_BASE_S, RECONNECT_MAX_S = 0.5, 30.0
"""A failed stream's back-off before it is opened again, doubling: Envoy's own for its xDS stream."""
ISTIOD = "istiod: ~1.5 GB for 2,000 sidecars"


# -- the fabric (pure) --------------------------------------------------------------------------------------


def fabric_shape(switches: int) -> tuple[int, int, int, int]:
    """(edge sites, switches per site, metro switches, cloud switches) of an edge/metro/cloud fabric of
    about ``switches`` switches (at most a few fewer): at most 100 sites of at most 8 switches."""
    if not 6 <= switches <= 824:
        raise ValueError(f"--switches {switches}: 6-824")
    metro = min(16, max(2, switches // 40))
    cloud = 2 if switches < 100 else 8
    rest = switches - metro - cloud
    per_site = next(k for k in range(1, 9) if math.ceil(rest / k) <= 100)
    return rest // per_site, per_site, metro, cloud


def service_tree(workloads: int, per_service: int = PER_SERVICE) -> list[dict[str, Any]]:
    """``workloads`` instances as services of ``per_service`` replicas (the last ones one fewer when it
    does not divide): ``web`` first, then ``s1``, ``s2``, ... in a binary call tree (``s<k>`` is called by
    the service at index (k - 1) // 2), each admitting only its caller."""
    if workloads < 1:
        raise ValueError("--workloads must be at least 1")
    count = max(1, math.ceil(workloads / per_service))
    names = [ENTRY] + [f"s{k}" for k in range(1, count)]
    base, extra = divmod(workloads, count)
    services = []
    for k, name in enumerate(names):
        children = [names[c] for c in (2 * k + 1, 2 * k + 2) if c < count]
        service: dict[str, Any] = {
            "name": name,
            "port": ENTRY_PORT if k == 0 else 9000 + k,
            "replicas": base + (1 if k < extra else 0),
            "cpu_millis": WORKLOAD_CPU_MILLIS,
            "memory_mib": WORKLOAD_MEMORY_MIB,
        }
        if children:
            service["calls"] = children
        if k > 0:
            service["allow_from"] = [names[(k - 1) // 2]]
        services.append(service)
    return services


def scale_fabric(switches: int, hosts: int, workloads: int) -> dict[str, Any]:
    """The benchmark's fabric: about ``switches`` switches, exactly ``hosts`` user hosts (every one
    calling ``web``), compute nodes with room for twice ``workloads`` small instances, and the
    ``service_tree`` of ``workloads`` declared replicas."""
    from mininet_topos.generate import edge_cloud

    sites, per_site, metro, cloud = fabric_shape(switches)
    users_per_site = math.ceil(hosts / sites)
    if users_per_site > 99:
        raise ValueError(f"{hosts} hosts on {sites} sites: at most 99 a site")
    per_node = 2000 // WORKLOAD_CPU_MILLIS  # an edge node's room (2,000 millicores)
    fixed = 4000 // WORKLOAD_CPU_MILLIS + cloud * (16000 // WORKLOAD_CPU_MILLIS)  # the metro and cloud nodes
    nodes_per_site = max(1, math.ceil(max(0, 2 * workloads - fixed) / (sites * per_node)))
    if nodes_per_site > 150:
        raise ValueError(f"{workloads} workloads need {nodes_per_site} nodes a site: at most 150")
    doc = edge_cloud(sites, per_site, metro, cloud, users_per_site=users_per_site, nodes_per_site=nodes_per_site)
    doc["name"] = f"scale-{switches}-{hosts}-{workloads}"
    doc["hosts"] = doc["hosts"][:hosts]
    services = service_tree(workloads)
    services[0]["allow_from"] = [{"host": h["id"]} for h in doc["hosts"]]
    doc["services"] = services
    return doc


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank (q in 0-100): p99 of fewer than 100 values is the largest."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(q / 100 * len(ranked)) - 1)]


def histogram_totals(metrics_text: str, name: str) -> tuple[float, float]:
    """(sum, count) of a Prometheus histogram without labels in an exposition text."""
    found = {}
    for suffix in ("_sum", "_count"):
        match = re.search(rf"^{re.escape(name)}{suffix} ([0-9.eE+-]+)$", metrics_text, re.MULTILINE)
        found[suffix] = float(match.group(1)) if match else 0.0
    return found["_sum"], found["_count"]


QUIET_COUNTERS = (
    "edgectl_route_compute_seconds_count",
    'edgectl_openflow_messages_sent_total{type="OFPFlowMod"}',
    'edgectl_openflow_messages_sent_total{type="OFPGroupMod"}',
    "edgectl_xds_snapshot_build_seconds_count",
)
"""What moves while the controller still works through a change: route rounds, table writes, sidecar builds."""


def activity(metrics_text: str) -> tuple[float, ...]:
    """The values of ``QUIET_COUNTERS`` in an exposition text (0 for one not there yet)."""
    values = []
    for name in QUIET_COUNTERS:
        match = re.search(rf"^{re.escape(name)} ([0-9.eE+-]+)$", metrics_text, re.MULTILINE)
        values.append(float(match.group(1)) if match else 0.0)
    return tuple(values)


BUSY_GAUGES = ("edgectl_route_apply_running_seconds", "edgectl_xds_snapshot_build_running_seconds")
"""Work under way that moves none of ``QUIET_COUNTERS`` until it ends: route changes out to the switches
waiting for their barriers, a snapshot build."""


def busy(metrics_text: str) -> bool:
    """One of ``BUSY_GAUGES`` says work is under way."""
    for name in BUSY_GAUGES:
        match = re.search(rf"^{name} ([0-9.eE+-]+)$", metrics_text, re.MULTILINE)
        if match is not None and float(match.group(1)) > 0:
            return True
    return False


def cpu_ticks(stat_line: str) -> int:
    """utime + stime (clock ticks) from a /proc/PID/stat line (the command name may hold spaces)."""
    fields = stat_line.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), counted after the name


def status_kib(status_text: str, field: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM) in KiB."""
    match = re.search(rf"^{field}:\s+(\d+) kB$", status_text, re.MULTILINE)
    if match is None:
        raise ValueError(f"no {field} in /proc/PID/status")
    return int(match.group(1))


# -- the client process: one minimal Envoy per user host ------------------------------------------------------


class Streams:
    def __init__(self, address: str, nodes: Sequence[str], route: str) -> None:
        self.address = address
        self.nodes = list(nodes)
        self.route = route
        self.ready = 0
        self.ready_event = asyncio.Event()
        self.first_seen: list[dict[str, float]] = [{} for _ in self.nodes]
        """Per stream, each endpoint ("ip:port") it holds now -> when (wall time) it last appeared."""
        self.reconnects = 0
        """Streams that failed (UNAVAILABLE, a connection that timed out) and were opened again."""
        self.failures: Counter[str] = Counter()
        """Why they failed: status code and details, with how many times each."""

    def saw(self, index: int, packed: Any, at: float) -> None:
        from envoy.config.endpoint.v3 import endpoint_pb2

        cla = endpoint_pb2.ClusterLoadAssignment()
        packed.Unpack(cla)
        seen = self.first_seen[index]
        now = {
            f"{lb.endpoint.address.socket_address.address}:{lb.endpoint.address.socket_address.port_value}"
            for group in cla.endpoints
            for lb in group.lb_endpoints
        }
        # Since it last appeared: an endpoint withdrawn (a migration rolled back) and back later is new again.
        self.first_seen[index] = {endpoint: seen.get(endpoint, at) for endpoint in now}

    async def run(self, index: int) -> None:
        """One sidecar's ADS stream; as Envoy does, opened again after a back-off when it fails (a busy
        controller can time out a connection being set up)."""
        import grpc

        got: set[str] = set()
        backoff_s = RECONNECT_BASE_S
        while True:
            try:
                await self._stream(index, got)
                return
            except grpc.aio.AioRpcError as failure:
                self.reconnects += 1
                self.failures[f"{failure.code().name}: {failure.details()}"[:120]] += 1
            await asyncio.sleep(random.uniform(0, backoff_s))  # (full jitter: a thousand do not retry in step)
            backoff_s = min(RECONNECT_MAX_S, 2 * backoff_s)

    async def _stream(self, index: int, got: set[str]) -> None:
        # Requests are written on the call (no request iterator: a failed call leaves no generator behind).
        import grpc
        from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

        request = discovery_pb2.DeltaDiscoveryRequest
        subscribed: set[str] = set()  # (on this stream: a new one subscribes again)
        async with grpc.aio.insecure_channel(self.address) as channel:
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources()
            first = request(type_url=CLUSTER)
            first.node.id = self.nodes[index]
            await call.write(first)
            await call.write(request(type_url=LISTENER))
            async for response in call:
                now = time.time()
                kind = response.type_url
                await call.write(request(type_url=kind, response_nonce=response.nonce))
                if kind == CLUSTER and ENDPOINTS not in subscribed:
                    subscribed.add(ENDPOINTS)
                    await call.write(request(type_url=ENDPOINTS, resource_names_subscribe=[f"svc/{ENTRY}"]))
                if kind == LISTENER and ROUTES not in subscribed:
                    subscribed.add(ROUTES)
                    await call.write(request(type_url=ROUTES, resource_names_subscribe=[self.route]))
                if kind == ENDPOINTS:
                    for named in response.resources:
                        self.saw(index, named.resource, now)
                before = len(got)
                got.add(kind)
                if len(got) == 4 and before == 3:
                    self.ready += 1
                    if self.ready == len(self.nodes):
                        self.ready_event.set()

    async def wait_seen(self, endpoint: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(endpoint in seen for seen in self.first_seen):
            await asyncio.sleep(0.05)
        times = [seen[endpoint] for seen in self.first_seen if endpoint in seen]
        return {"seen": times, "missing": len(self.first_seen) - len(times)}


async def client_main(address: str, nodes_file: str, route: str) -> None:
    streams = Streams(address, Path(nodes_file).read_text().split(), route)
    tasks = []
    for index in range(len(streams.nodes)):
        tasks.append(asyncio.create_task(streams.run(index)))
        if index % 50 == 49:
            await asyncio.sleep(0.05)  # let connections start rather than queue 1,000 at once
    await asyncio.wait_for(streams.ready_event.wait(), 600)
    print(json.dumps({"ready": streams.ready}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] == "seen":
            print(json.dumps(await streams.wait_seen(words[1], float(words[2]))), flush=True)
        elif words[0] == "failed":
            failed = sum(1 for task in tasks if task.done())
            answer = {"failed": failed, "reconnects": streams.reconnects, "why": dict(streams.failures.most_common(5))}
            print(json.dumps(answer), flush=True)
    for task in tasks:
        task.cancel()


# -- the controller's side --------------------------------------------------------------------------------


class Proc:
    """/proc readings of one process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.hz = os.sysconf("SC_CLK_TCK")

    def kib(self, field: str) -> int:
        return status_kib(Path(f"/proc/{self.pid}/status").read_text(), field)

    def ticks(self) -> int:
        return cpu_ticks(Path(f"/proc/{self.pid}/stat").read_text())

    def cpu_percent(self, seconds: float) -> float:
        """% of one core over the next ``seconds``."""
        before, started = self.ticks(), time.monotonic()
        time.sleep(seconds)
        return 100.0 * (self.ticks() - before) / self.hz / (time.monotonic() - started)


class Watcher:
    """The placement Watch stream on a thread: every event kept."""

    def __init__(self, api: str) -> None:
        import grpc

        from placement._pb import placement_pb2 as pb
        from placement._pb import placement_pb2_grpc as pb_grpc

        self.channel = grpc.insecure_channel(api)
        self.events: list[Any] = []
        self.lock = threading.Lock()
        self.call = pb_grpc.PlacementStub(self.channel).Watch(pb.WatchRequest(include_existing=False))
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        import grpc

        with contextlib.suppress(grpc.RpcError):
            for event in self.call:
                with self.lock:
                    self.events.append(event)

    def find(self, kind: int, workload_id: str, timeout: float = 30) -> Any:
        from mininet_topos.controller_process import wait_until

        def found() -> Any:
            with self.lock:
                return next((e for e in self.events if e.kind == kind and e.workload.id == workload_id), None)

        return wait_until(found, timeout, what=f"a Watch event {kind} of {workload_id}")

    def close(self) -> None:
        self.call.cancel()
        self.channel.close()


class Clients:
    """The stream clients' process, asked over its stdin."""

    def __init__(self, xds: str, nodes_file: Path, route: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.scale", "--client", xds, str(nodes_file), route],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )

    def read(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the stream clients exited ({self.process.poll()})")
        return json.loads(line)

    def ask(self, line: str) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.read()

    def stop(self) -> None:
        from mininet_topos.controller_process import stop_processes

        with contextlib.suppress(OSError, ValueError):
            if self.process.stdin is not None:
                self.process.stdin.write("quit\n")
                self.process.stdin.close()
        stop_processes([self.process], timeout=10)


def raise_fd_limit() -> None:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the controller and the clients


def quiet(controller: Any, settle_s: float, since: float, limit_s: float = 300.0) -> float | None:
    """Wait until no counter of ``QUIET_COUNTERS`` moved and no work was under way (``BUSY_GAUGES``) for
    ``settle_s`` (at most ``limit_s``): seconds from ``since`` until then, None if it never was."""
    from mininet_topos.controller_process import http_get

    deadline = time.monotonic() + limit_s
    last, still_since = None, time.monotonic()
    while time.monotonic() < deadline:
        text = http_get(controller.http + "/metrics", timeout=READ_TIMEOUT_S)[1].decode()
        now_values = activity(text)
        if now_values != last or busy(text):
            last, still_since = now_values, time.monotonic()
        elif time.monotonic() - still_since >= settle_s:
            return round(still_since - since, 1)
        time.sleep(1.0)
    return None


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def ring_cable(spec: Any) -> Any:
    """The first metro ring cable (both ends on metro switches): many routes cross it."""
    site_of = {s.name: s.site for s in spec.switches}
    return next(c for c in spec.cables if site_of[c.a] == "metro" and site_of[c.b] == "metro")


def migrate(
    stub: Any,
    watcher: Watcher,
    clients: Clients,
    workload_id: str,
    target: str,
    node_ip: dict[str, str],
    timeout_s: float,
) -> dict[str, Any]:
    """One Migrate (on a thread: it answers once the old instance is withdrawn, or rolled back after
    ``timeout_s``) and its new instance's endpoint on every stream, from the new instance's PLACED event."""
    import grpc

    from placement._pb import placement_pb2 as pb

    answer: dict[str, Any] = {}

    def call() -> None:
        try:
            reply = stub.Migrate(
                pb.MigrateRequest(workload_id=workload_id, node=target, timeout_s=timeout_s), timeout=timeout_s + 60
            )
            answer.update(outcome="ok", new_workload=reply.workload.id)
        except grpc.RpcError as exc:  # reported, not raised: the fan-out is measured either way
            answer.update(outcome=f"{exc.code().name}: {exc.details()}")
        answer["answered"] = time.time()

    called = time.time()
    thread = threading.Thread(target=call, daemon=True)
    thread.start()

    def placed() -> Any:
        """This migration's new instance: the PLACED event of the migration that started from ``workload_id``
        (not a PLACED of an earlier, late migration of the same service to the same node)."""
        with watcher.lock:
            started = {
                e.migration_id for e in watcher.events
                if e.kind == pb.PlacementEvent.KIND_MIGRATION_STARTED and e.workload.id == workload_id
                and e.at >= called - 1
            }  # fmt: skip
            new = {  # PLACED comes from the model (no migration id); the wait for convergence names the new one
                e.workload.id for e in watcher.events
                if e.kind == pb.PlacementEvent.KIND_CONVERGENCE_WAITING and e.migration_id in started
            }  # fmt: skip
            return next(
                (e for e in watcher.events if e.kind == pb.PlacementEvent.KIND_PLACED and e.workload.id in new), None
            )

    result: dict[str, Any] = {"to": target}
    deadline = time.monotonic() + timeout_s + 60
    event = None
    while event is None and time.monotonic() < deadline and (thread.is_alive() or not answer):
        event = placed()
        time.sleep(0.02)
    event = event or placed()
    if event is not None:
        endpoint = f"{node_ip[event.workload.node]}:{event.workload.port}"
        report = clients.ask(f"seen {endpoint} 60")
        latencies = [(t - event.at) * 1000 for t in report["seen"]]
        result.update(
            placed_after_call_ms=round((event.at - called) * 1000, 1),
            streams_missing=report["missing"],
            fanout_p50_ms=round(statistics.median(latencies), 1) if latencies else None,
            fanout_p99_ms=round(percentile(latencies, 99), 1) if latencies else None,
            every_stream_ms=round(max(latencies), 1) if latencies and not report["missing"] else None,
        )
    thread.join(timeout_s + 60)
    result["outcome"] = answer.get("outcome", "no answer")
    if "answered" in answer:
        result["migrate_answered_ms"] = round((answer["answered"] - called) * 1000, 1)
    if "new_workload" in answer:
        result["new_workload"] = answer["new_workload"]
        with watcher.lock:
            converged = [
                e for e in watcher.events
                if e.kind == pb.PlacementEvent.KIND_CONVERGED and e.workload.id == answer["new_workload"]
            ]  # fmt: skip
        sidecars = [p.seconds * 1000 for e in converged for p in e.converged_after if p.probe == "sidecars"]
        result["sidecars_probe_ms"] = round(sidecars[0], 1) if sidecars else None
    return result


def table_totals(metrics_text: str) -> tuple[int, int]:
    """Flows and groups of edgectl's that the switches hold, summed over ``edgectl_switch_flows`` and
    ``edgectl_switch_groups`` (routes, ARP, the network policy)."""
    totals = []
    for name in ("edgectl_switch_flows", "edgectl_switch_groups"):
        values = re.findall(rf"^{name}{{[^}}]*}} ([0-9.eE+-]+)$", metrics_text, re.MULTILINE)
        totals.append(int(sum(float(v) for v in values)))
    return totals[0], totals[1]


def keep_logs(work: Path) -> None:
    """Copy the run's logs out of its work directory (removed at the end), and say where."""
    kept = Path(tempfile.mkdtemp(prefix="scale-logs-"))
    for path in work.glob("*.log"):
        (kept / path.name).write_bytes(path.read_bytes())
    print(f"the controller's log: {kept}", file=sys.stderr)


def link_timeouts(log_text: str) -> int:
    """Links the controller took down because no LLDP probe crossed them in time (its log's warnings)."""
    return log_text.count("no probe crossed")


def route_changes(controller: Any, since_generation: int) -> list[dict[str, Any]]:
    """The route engine's deltas sent for model generations after ``since_generation``
    (``GET /api/v1/routes/changes?since_generation=N``: every delta kept would render a first install's
    hundreds of thousands of FlowMods as JSON, seconds of the controller's CPU)."""
    from mininet_topos.controller_process import http_get

    url = f"{controller.http}/api/v1/routes/changes?since_generation={since_generation}"
    status, body = http_get(url, timeout=READ_TIMEOUT_S)
    assert status == 200, f"GET /api/v1/routes/changes: {status} {body[:200]!r}"
    answer = json.loads(body)
    return list(answer["changes"] if isinstance(answer, dict) else answer)


def measure(args: argparse.Namespace, doc: dict[str, Any], work: Path) -> dict[str, Any]:
    """One run on the fabric ``doc`` (``scale_fabric`` of ``args``' sizes)."""
    import grpc

    from benchmarks.ha_failover import FakeSwitches
    from mininet_topos.controller_process import WaitTimedOut, free_port, http_get, start_edgectl, wait_until
    from mininet_topos.generate import to_yaml
    from netmodel.fabric_file import parse_fabric
    from placement._pb import placement_pb2 as pb
    from placement._pb import placement_pb2_grpc as pb_grpc

    fabric = work / "scale.yaml"
    fabric.write_text(to_yaml(doc))
    spec = parse_fabric(fabric.read_bytes(), str(fabric))
    node_ip = {n["id"]: n["ip"] for n in doc["nodes"]}
    dpid_of = {s.name: int(s.dpid) for s in spec.switches}
    out: dict[str, Any] = {
        "switches": len(doc["switches"]),
        "links": len(doc["links"]),
        "streams": len(doc["hosts"]),
        "workloads": args.workloads,
        "services": len(doc["services"]),
        "compute_nodes": len(doc["nodes"]),
        "drift_interval_s": args.drift_interval,
        "cable_delays": args.cable_delays,
    }
    log(f"fabric: {out}")
    api_port, xds_port = free_port(), free_port()
    started = time.monotonic()
    controller = start_edgectl(
        fabric, "--api-port", str(api_port), "--xds-port", str(xds_port),
        "--drift-interval", str(args.drift_interval),
        log_path=work / "edgectl.log", ready_timeout=600,
    )  # fmt: skip
    switches: FakeSwitches | None = None
    clients: Clients | None = None
    watcher: Watcher | None = None
    channel = grpc.insecure_channel(f"127.0.0.1:{api_port}")
    try:
        proc = Proc(controller.process.pid)
        stub = pb_grpc.PlacementStub(channel)
        switches = FakeSwitches(fabric, [controller.openflow_port], cable_delays=args.cable_delays)

        def placed() -> int:
            return sum(1 for w in stub.List(pb.ListRequest(), timeout=60).workloads if w.node)

        def fabric_up() -> bool:
            topology = controller.get_json("/api/v1/topology")
            return all(s["connected"] for s in topology["switches"]) and all(x["discovered"] for x in topology["links"])

        try:
            wait_until(lambda: controller.alive() and fabric_up(), args.up_timeout, interval=2, what="links up")
            out["fabric_up_s"] = round(time.monotonic() - started, 1)
        except WaitTimedOut:  # links flapping: measured anyway, and said
            out["fabric_up_s"] = None
            log(f"not every link up after {args.up_timeout} s: going on")
        log(f"switches and links up after {out['fabric_up_s']} s")
        wait_until(lambda: placed() >= args.workloads, 1800, interval=2, what=f"{args.workloads} workloads placed")
        out["placed_s"] = round(time.monotonic() - started, 1)
        log(f"{args.workloads} placed after {out['placed_s']} s")
        nodes_file = work / "nodes.txt"
        nodes_file.write_text("\n".join(h["id"] for h in doc["hosts"]))
        clients = Clients(f"127.0.0.1:{xds_port}", nodes_file, f"out/{ENTRY_PORT}")
        out["streams_ready"] = clients.read()["ready"]
        out["streams_up_s"] = round(time.monotonic() - started, 1)
        log(f"{out['streams_ready']} streams ready after {out['streams_up_s']} s")
        watcher = Watcher(f"127.0.0.1:{api_port}")
        out["quiet_after_s"] = quiet(controller, args.settle, started)
        log(f"at rest (none of the counters of work moved for {args.settle} s) after {out['quiet_after_s']} s")

        out["rest_rss_mb"] = round(proc.kib("VmRSS") / 1024, 1)
        flaps0 = link_timeouts(controller.log())
        out["rest_cpu_percent"] = round(proc.cpu_percent(10), 1)
        out["rest_link_timeouts"] = link_timeouts(controller.log()) - flaps0
        out["rest_flows"], out["rest_groups"] = table_totals(
            http_get(controller.http + "/metrics", timeout=READ_TIMEOUT_S)[1].decode()
        )
        log(f"at rest: RSS {out['rest_rss_mb']} MB, CPU {out['rest_cpu_percent']} %")

        # a link failure
        cable = ring_cable(spec)
        sum0, count0 = histogram_totals(
            http_get(controller.http + "/metrics", timeout=READ_TIMEOUT_S)[1].decode(), "edgectl_route_compute_seconds"
        )
        generation0 = int(controller.get_json("/api/v1/topology")["generation"])
        ticks0, t0 = proc.ticks(), time.monotonic()
        cut = switches.ask(f"link {dpid_of[cable.a]:x} {int(cable.a_port)} down")
        time.sleep(max(0.0, 10 - (time.monotonic() - t0)))
        out["failure_cpu_percent"] = round(100.0 * (proc.ticks() - ticks0) / proc.hz / (time.monotonic() - t0), 1)
        sum1, count1 = histogram_totals(
            http_get(controller.http + "/metrics", timeout=READ_TIMEOUT_S)[1].decode(), "edgectl_route_compute_seconds"
        )
        changes = route_changes(controller, generation0)
        plan = [c for c in changes if c["reason"] == "plan"]
        out["failure_cable"] = f"{cable.a}-{cable.b}"
        out["failure_route_rounds"] = int(count1 - count0)
        out["failure_route_compute_ms_mean"] = (
            round((sum1 - sum0) / (count1 - count0) * 1000, 1) if count1 > count0 else None
        )
        out["failure_switches_changed"] = len({c["switch"] for c in plan})
        out["failure_mods"] = sum(int(c["size"]) for c in plan)
        out["failure_last_delta_sent_ms"] = (
            round((max(float(c["at"]) for c in plan) - float(cut["at"])) * 1000, 1) if plan else None
        )
        out["failure_all_confirmed"] = all(c["confirmed"] for c in plan)
        out["failure_route_metric"] = [sum0, count0, sum1, count1]
        log(
            f"link {out['failure_cable']} cut: {out['failure_route_rounds']} route rounds, mean "
            f"{out['failure_route_compute_ms_mean']} ms; last delta sent at {out['failure_last_delta_sent_ms']} ms; "
            f"CPU {out['failure_cpu_percent']} %"
        )
        switches.ask(f"link {dpid_of[cable.a]:x} {int(cable.a_port)} up")
        with contextlib.suppress(WaitTimedOut):
            wait_until(fabric_up, 60, interval=1, what="the cable back up")
        quiet(controller, args.settle, time.monotonic())

        # migrations of one web instance, to a cloud node and back
        rounds = []
        first = next(w for w in stub.List(pb.ListRequest(service=ENTRY)).workloads if not w.node.startswith("cn"))
        workload_id, home, now_on = first.id, first.node, first.node
        for k in range(args.migrations):
            target = "cn1" if now_on != "cn1" else home
            result = migrate(stub, watcher, clients, workload_id, target, node_ip, args.migrate_timeout)
            rounds.append(result)
            log(f"migration {k + 1} to {target}: {result}")
            if result["outcome"] == "ok":
                workload_id, now_on = result["new_workload"], target
            quiet(controller, args.settle, time.monotonic())
        out["migrations"] = rounds
        every = [r["every_stream_ms"] for r in rounds if r.get("every_stream_ms") is not None]
        p99s = [r["fanout_p99_ms"] for r in rounds if r.get("fanout_p99_ms") is not None]
        out["migration_every_stream_ms_p50"] = round(statistics.median(every), 1) if every else None
        out["migration_every_stream_ms_max"] = round(max(every), 1) if every else None
        out["fanout_p99_ms_p50"] = round(statistics.median(p99s), 1) if p99s else None
        out["migration_missing_streams"] = sum(r.get("streams_missing", 0) for r in rounds)
        out["migrations_ok"] = sum(1 for r in rounds if r["outcome"] == "ok")
        out["end_rss_mb"] = round(proc.kib("VmRSS") / 1024, 1)
        out["peak_rss_mb"] = round(proc.kib("VmHWM") / 1024, 1)
        failures = clients.ask("failed")
        out["streams_failed"], out["streams_reconnects"] = failures["failed"], failures["reconnects"]
        out["streams_reconnect_reasons"] = failures["why"]
        metrics_text = http_get(controller.http + "/metrics", timeout=READ_TIMEOUT_S)[1].decode()
        build_s, builds = histogram_totals(metrics_text, "edgectl_xds_snapshot_build_seconds")
        out["sidecar_builds"], out["sidecar_build_s"] = int(builds), round(build_s, 1)
        out["sidecar_build_ms_mean"] = round(build_s / builds * 1000, 1) if builds else None
        # Deltas no barrier confirmed in time from the link failure on: each makes the engine read that
        # switch again, and holds back what waits for its routes (a migration) until it is set.
        unconfirmed = [c for c in route_changes(controller, generation0) if not c["confirmed"]]
        out["unconfirmed_deltas"] = len(unconfirmed)
        out["unconfirmed_switches"] = len({c["switch"] for c in unconfirmed})
        controller.alive()
        return out
    finally:
        channel.close()
        if watcher is not None:
            watcher.close()
        if clients is not None:
            clients.stop()
        if switches is not None:
            switches.stop()
        controller.stop(timeout=30)


def print_table(out: dict[str, Any]) -> None:
    met = "met" if out["rest_rss_mb"] < RSS_GOAL_MB else "missed"
    rows = [
        ("controller RSS at rest, everything connected", f"{out['rest_rss_mb']} MB", f"< {RSS_GOAL_MB} MB: {met}"),
        ("controller RSS at the end / peak (VmHWM)", f"{out['end_rss_mb']} / {out['peak_rss_mb']} MB", ""),
        ("CPU at rest (10 s, % of one core)", f"{out['rest_cpu_percent']} %", ""),
        ("links timed out at rest (no LLDP probe crossed in 3.5 s)", f"{out['rest_link_timeouts']}", ""),
        (
            "flows / groups in the switches at rest (routes, ARP, policy)",
            f"{out['rest_flows']:,} / {out['rest_groups']:,}",
            "",
        ),
        ("CPU in the 10 s after a link failure", f"{out['failure_cpu_percent']} %", ""),
        (
            f"route recompute after the cut ({out['failure_route_rounds']} rounds, mean)",
            f"{out['failure_route_compute_ms_mean']} ms",
            "",
        ),
        (
            f"cut -> last switch's delta sent ({out['failure_switches_changed']} switches, {out['failure_mods']} mods)",
            f"{out['failure_last_delta_sent_ms']} ms",
            "",
        ),
        (
            "migration: new instance placed -> every stream has its endpoint, p50 / max",
            f"{out['migration_every_stream_ms_p50']} / {out['migration_every_stream_ms_max']} ms",
            "",
        ),
        ("one change's fan-out to every stream, p99 (p50 over migrations)", f"{out['fanout_p99_ms_p50']} ms", ""),
        ("migrations answered OK", f"{out['migrations_ok']} of {len(out['migrations'])}", ""),
        (
            "route deltas no barrier confirmed in time, from the cut on (switches)",
            f"{out['unconfirmed_deltas']} ({out['unconfirmed_switches']})",
            "",
        ),
        (
            f"sidecar snapshot builds over the run ({out['sidecar_builds']}, {out['sidecar_build_s']} s in all), mean",
            f"{out['sidecar_build_ms_mean']} ms",
            "",
        ),
        ("xDS streams opened again after failing (Envoy's back-off)", f"{out['streams_reconnects']}", ""),
    ]
    print(
        f"{out['switches']} switches ({out['links']} links), {out['streams']} xDS streams, {out['workloads']} "
        f"workloads ({out['services']} services on {out['compute_nodes']} nodes), one edgectl run"
    )
    width = max(len(r[0]) for r in rows)
    for name, value, goal in rows:
        print(f"  {name:<{width}}  {value:>16}  {goal}")
    print(
        f"  ready after: switches and links {out['fabric_up_s']} s, placed {out['placed_s']} s, "
        f"streams {out['streams_up_s']} s, at rest {out['quiet_after_s']} s"
    )
    print(f"  baseline: {ISTIOD}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--client"]:
        raise_fd_limit()
        asyncio.run(client_main(*argv[1:4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--switches", type=int, default=500)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument("--migrations", type=int, default=3)
    parser.add_argument(
        "--drift-interval", type=float, default=10.0,
        help="edgectl run --drift-interval: the read-back of every switch's tables (10, the default; 0: never)",
    )  # fmt: skip
    parser.add_argument(
        "--cable-delays", action="store_true", help="relay LLDP across a cable after its declared latency"
    )
    parser.add_argument("--migrate-timeout", type=float, default=20.0, help="Migrate's timeout_s (convergence)")
    parser.add_argument("--up-timeout", type=float, default=600.0, help="seconds to wait for every link up")
    parser.add_argument("--keep-logs", action="store_true", help="keep the controller's log (its path on stderr)")
    parser.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds without route rounds, table writes or sidecar builds before each measurement",
    )
    args = parser.parse_args(argv)
    try:
        doc = scale_fabric(args.switches, args.streams, args.workloads)
    except ValueError as exc:  # beyond the generator's limits: a usage error
        parser.error(str(exc))
    raise_fd_limit()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped by PID: the processes started are stopped too
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="scale-", dir=base) as work:
        try:
            out = measure(args, doc, Path(work))
        except BaseException:
            keep_logs(Path(work))
            raise
        if args.keep_logs:
            keep_logs(Path(work))
    print_table(out)
    print(
        json.dumps(
            {"benchmark": "scale", "goal_rss_mb": RSS_GOAL_MB, "rss_goal_met": out["rest_rss_mb"] < RSS_GOAL_MB, **out}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
