"""What per-caller priorities cost the xDS publisher: a full rebuild of every node's snapshot, and the
check a latency measurement costs when it moves no instance to another priority level (Dijkstra from
every caller switch, then the levels: ``meshctl.snapshot.service_paths``), which is then all it costs.

Two models: the fan-out benchmark's (1,000 hosts on one switch, benchmarks/xds_fanout.py) and a generated
edge/metro/cloud fabric (placement/synthetic.py: 500 edge sites, 514 switches, 500 hosts calling 20
services of 3 instances each, one at an edge, one in a metro, one in a cloud site). Pure computation in
this process: no sockets, no Envoy. Prints a JSON object of figures (milliseconds, best and median of
``--rounds``). Run: .venv/bin/python benchmarks/mesh_paths.py
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from meshctl.cache import SnapshotCache  # noqa: E402
from meshctl.metrics import XdsMetrics  # noqa: E402
from meshctl.publisher import SnapshotPublisher  # noqa: E402
from meshctl.snapshot import MeshConfig, build_snapshots, service_paths  # noqa: E402
from meshctl.xds_types import ENDPOINTS  # noqa: E402
from netmodel import events as ev  # noqa: E402
from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId  # noqa: E402
from netmodel.state import FabricState  # noqa: E402
from netmodel.types import Resources, Tier, Workload, frozen_map  # noqa: E402


def timed(action: Callable[[], Any], rounds: int) -> dict[str, float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return {"best_ms": round(min(times), 2), "median_ms": round(statistics.median(times), 2)}


def workload(wid: str, service: str, node: str, port: int = 0) -> Workload:
    return Workload(
        WorkloadId(wid),
        ServiceName(service),
        SpiffeId(f"spiffe://edgectl.local/svc/{service}"),
        Resources(100, 64),
        NodeId(node),
        port=port,
    )


def fanout_model() -> FabricState:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from xds_fanout import fabric

    from netmodel.fabric import build_state
    from netmodel.fabric_file import parse_fabric

    state = build_state(parse_fabric(fabric(1000, 18080).encode(), "fanout.yaml"))
    return state.apply(ev.WorkloadPlaced(workload("web-1", "web", "n1", 18080)))


def synthetic_model() -> FabricState:
    from placement.synthetic import FabricShape, build_fabric

    state = build_fabric(FabricShape(edge_sites=500, services=20), seed=7)
    nodes = {n.id: replace(n, ip=f"10.200.{i // 250}.{i % 250 + 1}") for i, n in enumerate(state.nodes.values())}
    state = replace(state, nodes=frozen_map(nodes))
    rng = random.Random(7)
    by_tier: dict[Tier, list[NodeId]] = {}
    for node in nodes.values():
        by_tier.setdefault(state.sites[node.site].tier, []).append(node.id)
    for service in sorted(state.services):
        for tier in (Tier.EDGE, Tier.METRO, Tier.CLOUD):
            chosen = rng.choice(sorted(by_tier[tier]))
            state = state.apply(ev.WorkloadPlaced(workload(f"{service}-{tier.value}", service, chosen)))
    return state


def jitter(state: FabricState, rng: random.Random) -> FabricState:
    """One link's measured latency (both directions) moves by up to 50 us, as measurements do."""
    links = sorted(state.topology.links, key=lambda link: (link.src, link.src_port))
    link = rng.choice(links)
    latency = max(0, state.topology.links[link].latency_us + rng.choice((-50, -20, 20, 50)))
    return state.apply(ev.LinkLatencyMeasured(((link, latency), (link.reversed(), latency)), at=1.0))


def measure(name: str, state: FabricState, rounds: int) -> dict[str, Any]:
    config = MeshConfig()
    snapshots = build_snapshots(state, config)
    figures: dict[str, Any] = {
        "model": name,
        "switches": len(state.topology.switches),
        "hosts": len(state.hosts),
        "sidecar_nodes": len(snapshots),
        "distinct_eds_resources": len({id(r) for s in snapshots.values() for r in s.of_type(ENDPOINTS).values()}),
        "full_build": timed(lambda: build_snapshots(state, config), rounds),
        "service_paths": timed(lambda: service_paths(state, config), rounds),
    }
    current = {"state": state}
    metrics = XdsMetrics()
    publisher = SnapshotPublisher(lambda: current["state"], config, SnapshotCache(), metrics)
    publisher.build_now()
    rng = random.Random(1)
    quiet: list[float] = []
    rebuilt: list[float] = []
    for _ in range(rounds * 4):
        current["state"] = jitter(current["state"], rng)
        builds = metrics.registry.get_sample_value("edgectl_xds_snapshot_builds_total", {"outcome": "ok"})
        started = time.perf_counter()
        publisher.build_now()
        took = (time.perf_counter() - started) * 1000
        after = metrics.registry.get_sample_value("edgectl_xds_snapshot_builds_total", {"outcome": "ok"})
        (rebuilt if after != builds else quiet).append(took)
    figures["measurements"] = {
        "quiet": len(quiet),
        "quiet_median_ms": round(statistics.median(quiet), 2) if quiet else None,
        "reordering": len(rebuilt),
        "reordering_median_ms": round(statistics.median(rebuilt), 2) if rebuilt else None,
    }
    figures["nothing_changed"] = timed(publisher.build_now, rounds)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    results = [measure("fanout", fanout_model(), args.rounds), measure("synthetic", synthetic_model(), args.rounds)]
    for result in results:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
