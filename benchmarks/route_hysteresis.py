"""Route churn under latency corrections, with and without the route hysteresis.

The scale benchmark's fabric (``benchmarks/scale.py``: edge sites, a metro ring, cloud switches, one
endpoint per user host and compute node), every link up at its declared latency; then a seeded series
of corrections as the controller's lag makes them: one link direction at a time, moved by 150-800 us
up or down. Each correction is applied the way the route engine applies it: ``compute_routes`` against
the previous plan, ``changed_entries``, ``recompile_switches`` (the FlowMods and GroupMods it would
send). Baseline: the same series with ``hysteresis=None`` (every entry on a shortest path, first link on
ties), in the same run. Reports the primaries moved, the entries changed (primary or alternate), the
table changes and the route computation's time. A benchmark, not a test: nothing asserts on time.

    .venv/bin/python -m benchmarks.route_hysteresis [--switches 500] [--corrections 40] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from benchmarks.scale import scale_fabric  # noqa: E402
from netmodel import events as ev  # noqa: E402
from netmodel.fabric import build_state  # noqa: E402
from netmodel.fabric_file import parse_fabric  # noqa: E402
from netmodel.state import FabricState  # noqa: E402
from netmodel.types import LinkId  # noqa: E402
from sdnctl.flows import compile_all, recompile_switches  # noqa: E402
from sdnctl.pathing import STICKY, Hysteresis, changed_entries, compute_routes  # noqa: E402


def live_fabric(switches: int, hosts: int) -> FabricState:
    """The scale fabric with every switch connected and every declared link discovered."""
    state = build_state(parse_fabric(yaml.safe_dump(scale_fabric(switches, hosts, 1))))
    for switch in sorted(state.topology.switches):
        state = state.apply(ev.SwitchConnected(switch, (), 0.0))
    for link in sorted(state.topology.links):
        state = state.apply(ev.LinkDiscovered(link, 0.0))
    return state


def corrections(state: FabricState, count: int, seed: int) -> list[tuple[LinkId, int]]:
    rng = random.Random(seed)
    links = sorted(state.topology.links)
    return [(rng.choice(links), rng.choice((-1, 1)) * rng.randint(150, 800)) for _ in range(count)]


def run(state: FabricState, series: list[tuple[LinkId, int]], hysteresis: Hysteresis | None) -> dict[str, Any]:
    plan = compute_routes(state)
    tables = compile_all(plan)
    primaries = entries = changes = 0
    compute_s = 0.0
    for link, delta in series:
        latency = max(0, state.topology.links[link].latency_us + delta)
        state = state.apply(ev.LinkLatencyMeasured(((link, latency),), 1.0))
        started = time.perf_counter()
        new = compute_routes(state, previous=plan, hysteresis=hysteresis)
        compute_s += time.perf_counter() - started
        changed = changed_entries(plan, new)
        at = [(plan.index[s], plan.index[d]) for s, d in changed]  # (both plans index switches alike)
        primaries += sum(1 for i, j in at if plan.primary[i, j] != new.primary[i, j])
        entries += len(changed)
        touched = recompile_switches(new, tables, changed)
        for dpid, (compiled, delta_of_switch) in touched.items():
            tables[dpid] = compiled
            changes += delta_of_switch.size
        plan = new
    return {
        "primaries_moved": primaries,
        "entries_changed": entries,
        "table_changes": changes,
        "route_compute_ms": round(compute_s * 1000, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--switches", type=int, default=500)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--corrections", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    state = live_fabric(args.switches, args.hosts)
    series = corrections(state, args.corrections, args.seed)
    baseline = run(state, series, None)
    ours = run(state, series, STICKY)
    print(
        f"{len(state.topology.switches)} switches, {len(state.topology.links)} link directions, "
        f"{args.corrections} corrections of 150-800 us"
    )
    print(f"{'':<28} {'primaries moved':>15} {'entries changed':>15} {'table changes':>13} {'routes ms':>9}")
    ours_name = f"hysteresis {STICKY.min_us:.0f} us / {STICKY.fraction:.0%}"
    for name, figures in (("baseline: no hysteresis", baseline), (ours_name, ours)):
        print(
            f"{name[:28]:<28} {figures['primaries_moved']:>15} {figures['entries_changed']:>15} "
            f"{figures['table_changes']:>13} {figures['route_compute_ms']:>9}"
        )
    print(
        json.dumps(
            {
                "benchmark": "route_hysteresis",
                "switches": len(state.topology.switches),
                "corrections": args.corrections,
                "seed": args.seed,
                "hysteresis": {"min_us": STICKY.min_us, "fraction": STICKY.fraction},
                "baseline": baseline,
                "ours": ours,
            },
            separators=(",", ":"),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
