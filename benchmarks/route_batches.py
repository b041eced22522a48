"""Routes after a batch of link changes at once, against a recompute from scratch in the same run.

The latency estimator reports its corrections in batches (``LinkLatencyMeasured``): at start-up, once
the first estimates settle, a batch can hold most of a fabric's links, and a partition healing brings
many links back at once. The incremental update applies changed links one by one, each a few passes
over all n x n distances; past ``pathing.incremental_limit`` links it recomputes every distance with
one Dijkstra per switch instead and still recomputes next hops only where distances moved.

On the scale benchmark's fabric (``benchmarks/scale.py``: edge sites, a metro ring, cloud switches),
every link up at its declared latency, for batches of k link directions corrected at once by 150-800 us
up or down (seeded), times ``compute_routes(after, previous=plan)`` as the route engine calls it
(hysteresis on), the same with every link applied one by one (the limit lifted), and the baseline: a
plan from scratch (``compute_routes(after)``). Median of repeated runs. A benchmark, not a test.

    .venv/bin/python -m benchmarks.route_batches [--switches 100,300,500,800] [--batches 1,10,25,50,200,all]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.route_hysteresis import live_fabric  # noqa: E402
from netmodel import events as ev  # noqa: E402
from netmodel.state import FabricState  # noqa: E402
from sdnctl import pathing  # noqa: E402
from sdnctl.pathing import RoutePlan, compute_routes  # noqa: E402

TIME_PER_CASE_S = 1.0
HEADER = (
    f"{'switches':>8} {'links':>6} {'changed':>8} {'limit':>6} {'ours ms':>9} {'one by one':>11} "
    f"{'from scratch':>13} {'speedup':>8} {'same':>4}"
)


def batch(state: FabricState, k: int, rng: random.Random) -> FabricState:
    links = sorted(state.topology.links)
    picked = rng.sample(links, min(k, len(links)))
    latencies = tuple(
        (link, max(0, state.topology.links[link].latency_us + rng.choice((-1, 1)) * rng.randint(150, 800)))
        for link in picked
    )
    return state.apply(ev.LinkLatencyMeasured(latencies, 1.0))


def timed(fn: Callable[[], RoutePlan], max_reps: int) -> tuple[float, RoutePlan]:
    samples: list[float] = []
    plan = fn()  # warm: caches of the structure, the first run's allocations
    while len(samples) < 3 or (sum(samples) < TIME_PER_CASE_S and len(samples) < max_reps):
        start = time.perf_counter()
        plan = fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000, plan


def one_by_one(after: FabricState, plan: RoutePlan) -> RoutePlan:
    saved = pathing.INCREMENTAL_LINKS_MIN
    pathing.INCREMENTAL_LINKS_MIN = 1 << 30
    try:
        return compute_routes(after, previous=plan)
    finally:
        pathing.INCREMENTAL_LINKS_MIN = saved


def run_size(switches: int, sizes: list[int | None], seed: int, max_reps: int) -> list[dict[str, Any]]:
    state = live_fabric(switches, switches * 2)
    plan = compute_routes(state)
    n, links = len(plan.switches), len(plan.links)
    rows = []
    for k in sizes:
        count = links if k is None else min(k, links)
        after = batch(state, count, random.Random(seed))
        ours_ms, ours = timed(partial(compute_routes, after, previous=plan), max_reps)
        each_ms, each = timed(partial(one_by_one, after, plan), max_reps)
        full_ms, full = timed(partial(compute_routes, after), max_reps)
        rows.append(
            {
                "switches": n,
                "links": links,
                "changed_links": count,
                "limit": pathing.incremental_limit(n),
                "ours_ms": round(ours_ms, 2),
                "one_by_one_ms": round(each_ms, 2),
                "from_scratch_ms": round(full_ms, 2),
                "speedup_vs_scratch": round(full_ms / ours_ms, 2),
                "same_distances": bool(
                    np.array_equal(ours.distance_us, full.distance_us)
                    and np.array_equal(each.distance_us, full.distance_us)
                ),
            }
        )
        r = rows[-1]
        print(
            f"{n:>8} {links:>6} {count:>8} {r['limit']:>6} {ours_ms:>9.1f} {each_ms:>11.1f} {full_ms:>13.1f} "
            f"{r['speedup_vs_scratch']:>7.2f}x {'yes' if r['same_distances'] else 'NO':>4}",
            flush=True,
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--switches", default="100,300,500,800", help="comma-separated fabric sizes (6-824)")
    parser.add_argument("--batches", default="1,10,25,50,200,all", help="link directions changed at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-reps", type=int, default=15)
    args = parser.parse_args()
    sizes = [None if b == "all" else int(b) for b in args.batches.split(",")]
    started = time.perf_counter()
    print("Routes after k link directions' latencies change at once (median ms; ours = compute_routes with the")
    print("previous plan, as the route engine; one by one = the same with every link applied singly).")
    print(HEADER)
    results = [row for s in args.switches.split(",") for row in run_size(int(s), sizes, args.seed, args.max_reps)]
    elapsed = time.perf_counter() - started
    print(
        "limit = pathing.incremental_limit: above it ours recomputes every distance at once; speedup = from "
        f"scratch / ours; same = every variant's distances equal. {elapsed:.0f} s in all."
    )
    print(json.dumps({"benchmark": "route_batches", "unit": "ms", "results": results}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
