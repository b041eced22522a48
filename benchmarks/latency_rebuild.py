"""Sidecar snapshots after a latency measurement, at the scale benchmark's size, through the publisher.

Model: the fabric of ``benchmarks/scale.py`` (``scale_fabric``: ~500 switches, 1,000 user hosts calling
``web``, 10,000 workloads as 100 services of 100 replicas in a call tree), its replicas placed as the
scheduler decides them (one ``schedule_on`` each on one ``ClusterSnapshot``), so ~11,000 sidecar nodes.

Measured, in this process (no sockets): batches of latency measurements as the controller's estimator
sends them, each a ``LinkLatencyMeasured`` of ``--links`` links drawn at random, each at its declared
latency times a factor drawn from [1 - jitter, 1 + jitter]; ``--batches`` batches at a 10 % and at a
50 % jitter (under load the controller's own delays read as latency, most on short links). Each batch is applied
to the model and told to the publisher (``note``), then one ``SnapshotPublisher.build_now()`` is timed:
p50 / p99 / max, and how many nodes' snapshots it replaced (the callers whose priority levels of some
service moved). Baseline, same run: what every batch cost before the builds were incremental, a full
``build_snapshots`` into a cache holding the previous build (``--rounds``). After the batches, the cache
equals a full build of the final model with the same levels (``nodes_differing_from_full_rebuild``: 0;
the levels computed batch by batch against the last ones, untimed, as the hysteresis keeps them). The garbage collector
stays on; what the first build made is frozen, as ``edgectl run`` freezes it.

Run: .venv/bin/python benchmarks/latency_rebuild.py [--batches 20] [--links 100] [--rounds 3]
Prints a table, then one JSON line (the last).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.place_api_path import placed_as_scheduled  # noqa: E402
from benchmarks.scale import scale_fabric  # noqa: E402
from benchmarks.xds_rebuild import differing_from_full_rebuild, percentiles, replaced, snapshots_of  # noqa: E402
from meshctl.cache import SnapshotCache  # noqa: E402
from meshctl.metrics import XdsMetrics  # noqa: E402
from meshctl.publisher import SnapshotPublisher  # noqa: E402
from meshctl.snapshot import MeshConfig, build_snapshots, service_paths  # noqa: E402
from netmodel import events as ev  # noqa: E402
from netmodel.fabric import build_state  # noqa: E402
from netmodel.fabric_file import parse_fabric  # noqa: E402
from netmodel.state import FabricState  # noqa: E402
from placement.types import PlacementRequest  # noqa: E402

JITTERS = (0.1, 0.5)


def placed_scale_model(switches: int, hosts: int, workloads: int) -> FabricState:
    """The scale benchmark's fabric with every declared replica placed as the scheduler decides."""
    state = build_state(parse_fabric(json.dumps(scale_fabric(switches, hosts, workloads)), "scale.json"))
    requests = [
        PlacementRequest(name, service.resources)
        for name, service in sorted(state.services.items())
        for _ in range(service.replicas)
    ]
    return placed_as_scheduled(state, requests)


def latency_batch(state: FabricState, rng: random.Random, links: int, jitter: float) -> ev.LinkLatencyMeasured:
    """``links`` links at random, each at its declared latency times a factor within ``jitter``."""
    drawn = rng.sample(sorted(state.topology.links, key=lambda x: (x.src, x.src_port)), links)
    measured = []
    for link in drawn:
        declared = state.topology.links[link].declared_latency_us or 1000
        measured.append((link, max(1, round(declared * rng.uniform(1 - jitter, 1 + jitter)))))
    return ev.LinkLatencyMeasured(tuple(measured), at=1.0)


def measure_baseline(state: FabricState, rounds: int, links: int, seed: int) -> dict[str, Any]:
    """A full rebuild after each batch (10 % jitter), into a cache holding the previous build."""
    cache = SnapshotCache()
    cache.set_snapshots(build_snapshots(state, MeshConfig()))
    rng = random.Random(seed)
    times: list[float] = []
    gc.collect()
    for _ in range(rounds):
        state = state.apply(latency_batch(state, rng, links, JITTERS[0]))
        started = time.perf_counter()
        cache.set_snapshots(build_snapshots(state, MeshConfig()))
        times.append((time.perf_counter() - started) * 1000)
    return {"best_ms": round(min(times), 1), "median_ms": round(statistics.median(times), 1)}


def measure_publisher(state: FabricState, batches: int, links: int, seed: int) -> dict[str, Any]:
    current = {"state": state}
    cache = SnapshotCache()
    publisher = SnapshotPublisher(lambda: current["state"], MeshConfig(), cache, XdsMetrics())
    started = time.perf_counter()
    publisher.build_now()
    figures: dict[str, Any] = {"first_build_ms": round((time.perf_counter() - started) * 1000, 1)}
    rng = random.Random(seed)
    # The levels a full build would use: each batch's computed against the last (the hysteresis), as the
    # publisher computes them; untimed.
    expected = service_paths(state, MeshConfig())
    gc.collect()
    gc.freeze()  # as `edgectl run` does once started
    try:
        for jitter in JITTERS:
            times: list[float] = []
            changed: list[int] = []
            for _ in range(batches):
                event = latency_batch(current["state"], rng, links, jitter)
                current["state"] = current["state"].apply(event)
                publisher.note(event, current["state"])
                before = snapshots_of(cache)
                started = time.perf_counter()
                publisher.build_now()
                times.append((time.perf_counter() - started) * 1000)
                changed.append(replaced(before, cache))
                expected = service_paths(current["state"], MeshConfig(), None, expected)
            figures[f"jitter_{round(jitter * 100)}"] = {
                **percentiles(times),
                "changed_nodes_p50": statistics.median(changed),
                "changed_nodes_max": max(changed),
            }
        figures["nodes_differing_from_full_rebuild"] = differing_from_full_rebuild(
            cache, current["state"], MeshConfig(), expected
        )
    finally:
        gc.unfreeze()
    return figures


def run(switches: int, hosts: int, workloads: int, batches: int, links: int, rounds: int) -> dict[str, Any]:
    state = placed_scale_model(switches, hosts, workloads)
    links = min(links, len(state.topology.links))
    return {
        "benchmark": "latency_rebuild",
        "switches": len(state.topology.switches),
        "links": len(state.topology.links),
        "hosts": len(state.hosts),
        "services": len(state.services),
        "workloads": sum(1 for w in state.workloads.values() if w.node is not None),
        "links_per_batch": links,
        "batches": batches,
        "baseline_full_rebuild": measure_baseline(state, rounds, links, seed=1),
        **measure_publisher(state, batches, links, seed=2),
    }


def print_table(figures: dict[str, Any]) -> None:
    print(
        f"Sidecar snapshots after a latency batch ({figures['links_per_batch']} links): {figures['switches']} "
        f"switches, {figures['hosts']:,} hosts, {figures['workloads']:,} workloads in {figures['services']} "
        f"services, {figures['batches']} batches per jitter, gc on, Python {platform.python_version()}"
    )
    base = figures["baseline_full_rebuild"]
    print(
        f"  {'baseline: full rebuild + set_snapshots':<42} best {base['best_ms']:>9.1f} ms  "
        f"median {base['median_ms']:>9.1f} ms"
    )
    for jitter in JITTERS:
        row = figures[f"jitter_{round(jitter * 100)}"]
        print(
            f"  {f'build_now after a batch at +-{round(jitter * 100)} %':<42} p50 {row['p50_ms']:>10.1f} ms  "
            f"p99 {row['p99_ms']:>9.1f} ms  max {row['max_ms']:>9.1f} ms  nodes replaced p50 "
            f"{row['changed_nodes_p50']:g} max {row['changed_nodes_max']}"
        )
    print(f"  nodes differing from a full rebuild after the batches: {figures['nodes_differing_from_full_rebuild']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20, help="batches at each jitter (20)")
    parser.add_argument("--links", type=int, default=100, help="links measured in a batch (100)")
    parser.add_argument("--rounds", type=int, default=3, help="full rebuilds of the baseline (3)")
    parser.add_argument("--switches", type=int, default=500)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--workloads", type=int, default=10_000)
    args = parser.parse_args()
    if min(args.batches, args.links, args.rounds) < 1:
        parser.error("--batches, --links and --rounds must be at least 1")
    try:
        scale_fabric(args.switches, args.hosts, args.workloads)  # its limits, said as a usage error
    except ValueError as exc:
        parser.error(str(exc))
    logging.getLogger("edgectl.mesh").setLevel(logging.ERROR)  # (no mTLS: the RBAC warning is not measured)
    figures = run(args.switches, args.hosts, args.workloads, args.batches, args.links, args.rounds)
    print_table(figures)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
