"""Desired state: how long a plan takes, and how long from a git commit to a converged data plane.

1. ``plan`` (the pure cores alone, no I/O): a 500-switch generated edge-cloud fabric, every switch
   connected and every link discovered, its declared replicas placed. For each of three changes (a
   link's latency prior, a service's SLO, a new service) ``compute_plan`` runs on the live state, as
   ``edgectl diff`` does. Baseline in the same run: a cold start on the new document (the model
   built from scratch, all routes computed, every switch's tables compiled, every sidecar's snapshot
   built), what a controller that restarts on every change pays before it can even diff.
2. ``commit`` (end to end; ``--plan-only`` leaves it out): the example fabric on Mininet with real OVS and a running
   ``edgectl run --git-repo file://...``; each of 20 commits of mixed changes is pushed to a local bare
   repository, the webhook (``POST /api/v1/git/sync``) is called, and the clock stops when
   ``GET /api/v1/config`` shows the commit applied and converged (routes barrier-confirmed, sidecars
   ACKed). p50/p99.

A benchmark, not a test: nothing asserts on time. Prints a table, then one JSON line.

    .venv/bin/python benchmarks/gitops.py [--quick] [--plan-only] [--commits 20]   (as root)
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgectl.plan import PlanInputs, compute_plan  # noqa: E402
from meshctl.snapshot import MeshConfig, build_snapshots  # noqa: E402
from mininet_topos.generate import edge_cloud, to_yaml  # noqa: E402
from netmodel import events as ev  # noqa: E402
from netmodel.fabric import FabricSpec, build_state  # noqa: E402
from netmodel.fabric_file import parse_fabric  # noqa: E402
from netmodel.ids import NodeId, PortNo, SpiffeId, WorkloadId  # noqa: E402
from netmodel.state import FabricState  # noqa: E402
from netmodel.types import Port, Workload  # noqa: E402
from placement.naming import DEFAULT_TRUST_DOMAIN  # noqa: E402
from placement.replicas import plan_replicas  # noqa: E402
from sdnctl.acl import compile_acl, with_acl  # noqa: E402
from sdnctl.flows import compile_all  # noqa: E402
from sdnctl.pathing import compute_routes  # noqa: E402

SITES, PER_SITE, METRO, CLOUD = 60, 8, 16, 4  # 60 x 8 + 16 + 4 = 500 switches


def generated() -> dict[str, Any]:
    return edge_cloud(SITES, PER_SITE, METRO, CLOUD, users_per_site=2, nodes_per_site=1)


def live_state(spec: FabricSpec) -> FabricState:
    """The model of a running controller: connected, discovered, declared replicas placed."""
    state = build_state(spec)
    for dpid in list(state.topology.switches):
        ports = tuple(Port(PortNo(n), f"p{n}", up=True) for n in range(1, 17))
        state = state.apply(ev.SwitchConnected(dpid, ports, at=1.0))
    for link in list(state.topology.links):
        state = state.apply(ev.LinkDiscovered(link, at=2.0))
    counter = 0
    for placed in plan_replicas(state).placed:
        if placed.node is None:
            continue
        counter += 1
        service = state.services[placed.service]
        wid = WorkloadId(f"{placed.service}-{counter}")
        workload = Workload(
            wid,
            placed.service,
            SpiffeId(f"spiffe://edgectl.local/svc/{placed.service}/w/{wid}"),
            service.resources,
            node=NodeId(placed.node),
            port=service.port,
            declared=True,
        )
        state = state.apply(ev.WorkloadPlaced(workload))
    return state


def changes(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    latency = json.loads(json.dumps(doc))
    latency["links"][0]["latency_ms"] = latency["links"][0]["latency_ms"] + 3  # an edge uplink's prior
    slo = json.loads(json.dumps(doc))
    slo["services"][0]["max_latency_ms"] = 4
    service = json.loads(json.dumps(doc))
    service["services"].append(
        {"name": "cache", "port": 6379, "replicas": 2, "cpu_millis": 250, "memory_mib": 256, "calls": ["db"]}
    )
    return {"link latency prior": latency, "service SLO": slo, "new service": service}


def timed(fn: Callable[[], object], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        gc.collect()
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cold_start(spec: FabricSpec, live: FabricState) -> None:
    """What a restart on the new document computes before it can act: model, routes, tables, snapshots."""
    state = build_state(spec)
    state = replace(state, topology=live.topology, workloads=live.workloads)  # what it rediscovers
    acl = compile_acl(state, DEFAULT_TRUST_DOMAIN)
    tables = {d: with_acl(c, acl.entries.get(d, {}))[0] for d, c in compile_all(compute_routes(state)).items()}
    assert tables is not None
    build_snapshots(state, MeshConfig())


def bench_plan(rounds: int) -> dict[str, Any]:
    doc = generated()
    spec = parse_fabric(to_yaml(doc), "generated.yaml")
    state = live_state(spec)
    routes = compute_routes(state)
    acl = compile_acl(state, DEFAULT_TRUST_DOMAIN)  # the tables a running engine holds: routes and ACL
    compiled = {d: with_acl(c, acl.entries.get(d, {}))[0] for d, c in compile_all(routes).items()}
    inputs = PlanInputs(state=state, applied_spec=spec, mesh_config=MeshConfig(), routes=routes, compiled=compiled)
    rows = {}
    for name, changed in changes(doc).items():
        new = parse_fabric(to_yaml(changed), "generated.yaml")
        plan = compute_plan(inputs, new, "r1", prune=False)
        ours = timed(functools.partial(compute_plan, inputs, new, "r1", prune=False), rounds)
        cold = timed(functools.partial(cold_start, new, state), max(3, rounds // 3))
        rows[name] = {
            "plan_ms_p50": round(p(ours, 0.5), 1),
            "plan_ms_p99": round(p(ours, 0.99), 1),
            "cold_start_ms_p50": round(statistics.median(cold), 1),
            "flow_mods": plan.flow_mods,
            "switches_changed": len(plan.openflow),
            "sidecars_changed": len(plan.xds),
            "placed": len(plan.placement.placed),
            "moved": len(plan.placement.moved),
        }
    return {
        "switches": len(state.topology.switches),
        "links": len(state.topology.links) // 2,
        "endpoints": len(state.hosts) + len(state.nodes),
        "workloads": len(state.workloads),
        "changes": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--plan-only", action="store_true", help="only the plan part (no testbed, no root needed)")
    parser.add_argument("--commits", type=int, default=20)
    args = parser.parse_args(argv)
    rounds = 5 if args.quick else 20
    figures: dict[str, Any] = {"benchmark": "gitops", "python": platform.python_version()}
    plan = bench_plan(rounds)
    figures["plan"] = plan
    print(f"plan on a {plan['switches']}-switch fabric ({plan['workloads']} workloads), {rounds} rounds:")
    print(f"  {'change':<20} {'plan p50':>9} {'plan p99':>9} {'cold start':>11} {'FlowMods':>9} {'sidecars':>9}")
    for name, row in plan["changes"].items():
        print(
            f"  {name:<20} {row['plan_ms_p50']:>7.1f}ms {row['plan_ms_p99']:>7.1f}ms "
            f"{row['cold_start_ms_p50']:>9.1f}ms {row['flow_mods']:>9} {row['sidecars_changed']:>9}"
        )
    if not args.plan_only:
        from benchmarks.gitops_e2e import bench_commits

        figures["commit"] = bench_commits(args.commits)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
