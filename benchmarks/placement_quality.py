"""Placement quality against the optimum: total user latency and SLO satisfaction on small instances.

Each instance: a generated edge/metro/cloud fabric with 20 nodes (12 edge, 4 metro, 4 cloud) and 100
workloads, each used from one user host (behind a 1-3 ms access link to its edge site), half of them
with a latency SLO (3-10 ms over the route).
The edge cannot hold every workload, so who gets it matters. Baseline: the optimum of an integer
program solved by HiGHS (highspy) in the same run:

    minimise  sum_i,n latency(i, n) x[i,n] + M sum_i unplaced[i]
    s.t.      sum_n x[i,n] + unplaced[i] = 1             every workload placed once or counted unplaced
              sum_i cpu_i x[i,n] <= cpu_n, same for memory
              x[i,n] = 0 where n breaks i's SLO           (SLOs are hard, as in the scheduler)

so the optimum first places as many workloads as can meet their SLO, then minimises their latency.
Ours: ``schedule_batch`` with the latency-first profile (all 100 together: the failover path) and the
same profile one request at a time in arrival order (``schedule_on``: the Place path). The default
profile optimises something else by design (keep the edge free: cheapest tier within the SLO); its
SLO satisfaction and edge use are shown for contrast.

Prints a table, then one JSON line of figures (the last line). Goal: batch within 5% of the optimal
total latency, and 100% SLO satisfaction wherever the optimum satisfies all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from netmodel.ids import NodeId
from netmodel.state import FabricState
from netmodel.types import Resources
from placement.scheduler import DEFAULT_PROFILE, LATENCY_FIRST_PROFILE, Profile, schedule_batch, schedule_on
from placement.snapshot import ClusterSnapshot
from placement.synthetic import FabricShape, build_fabric, random_requests
from placement.types import Decision, PlacementRequest

SHAPE = FabricShape(
    edge_sites=6,
    edge_nodes=2,
    metro_sites=2,
    metro_nodes=2,
    cloud_sites=1,
    cloud_nodes=4,
    edge_capacity=Resources(4000, 8192),
    metro_capacity=Resources(8000, 16384),
    cloud_capacity=Resources(64000, 262144),
    access_latency_us=(1000, 3000),
)
T = TypeVar("T")
WORKLOADS = 100
INSTANCES = 8
UNPLACED_PENALTY = 10_000.0
ILP_TIME_LIMIT_S = 10.0
BATCH_BUDGET_S = 2.0


@dataclass
class Outcome:
    placed: int
    within_slo: int
    total_latency_ms: float
    edge: int
    seconds: float


def instance(seed: int) -> tuple[FabricState, list[PlacementRequest]]:
    state = build_fabric(SHAPE, seed=seed)
    requests = random_requests(state, WORKLOADS, seed=1000 + seed, slo_ms=(3.0, 10.0))
    # every workload has users: 50% with an SLO, the rest near a host without one
    out = []
    hosts = sorted(state.hosts)
    for k, r in enumerate(requests):
        near = r.constraints.near or (hosts[k % len(hosts)],)
        slo = r.constraints.max_latency_ms if k % 2 == 0 else None
        if k % 2 == 0 and slo is None:
            slo = 3.0 + (k % 8)
        out.append(PlacementRequest(r.service, r.resources, type(r.constraints)(max_latency_ms=slo, near=near)))
    return state, out


def latency_matrix(state: FabricState, requests: list[PlacementRequest]) -> tuple[np.ndarray, np.ndarray]:
    """Mean user latency (ms) of workload i on node n, and whether n meets i's SLO (and every filter
    that does not depend on capacity)."""
    snapshot = ClusterSnapshot(state)
    latency = np.vstack([snapshot.near_latency(r.constraints.near).mean_ms for r in requests])
    allowed = np.ones_like(latency, dtype=bool)
    for i, r in enumerate(requests):
        worst = snapshot.near_latency(r.constraints.near).worst_ms
        if r.constraints.max_latency_ms is not None:
            allowed[i] = worst <= r.constraints.max_latency_ms + 1e-9
        allowed[i] &= np.isfinite(worst) & snapshot.healthy
    return latency, allowed


def evaluate(state: FabricState, requests: list[PlacementRequest], nodes: list[str | None], seconds: float) -> Outcome:
    latency, allowed = latency_matrix(state, requests)
    index = {n: i for i, n in enumerate(sorted(state.nodes))}
    total = 0.0
    placed = within = edge = 0
    for i, node in enumerate(nodes):
        if node is None:
            continue
        n = index[NodeId(node)]
        placed += 1
        within += bool(allowed[i, n])
        total += float(latency[i, n])
        edge += state.sites[state.nodes[NodeId(node)].site].tier.value == "edge"
    return Outcome(placed, within, total, edge, seconds)


def optimum(state: FabricState, requests: list[PlacementRequest]) -> tuple[list[str | None], float, str]:
    import highspy

    latency, allowed = latency_matrix(state, requests)
    node_ids = sorted(state.nodes)
    pairs = [(i, n) for i in range(len(requests)) for n in range(len(node_ids)) if allowed[i, n]]
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", ILP_TIME_LIMIT_S)
    h.setOptionValue("mip_rel_gap", 1e-6)
    n_x, n_y = len(pairs), len(requests)
    cost = np.array([latency[i, n] for i, n in pairs] + [UNPLACED_PENALTY] * n_y)
    h.addVars(n_x + n_y, np.zeros(n_x + n_y), np.ones(n_x + n_y))
    h.changeColsCost(n_x + n_y, np.arange(n_x + n_y, dtype=np.int32), cost)
    h.changeColsIntegrality(
        n_x + n_y, np.arange(n_x + n_y, dtype=np.int32), np.array([highspy.HighsVarType.kInteger] * (n_x + n_y))
    )
    for i in range(n_y):  # assignment rows
        cols = [k for k, (ii, _) in enumerate(pairs) if ii == i] + [n_x + i]
        h.addRow(1.0, 1.0, len(cols), np.array(cols, dtype=np.int32), np.ones(len(cols)))
    for n, node_id in enumerate(node_ids):  # capacity rows
        node = state.nodes[node_id]
        cols = [k for k, (_, nn) in enumerate(pairs) if nn == n]
        if not cols:
            continue
        idx = np.array(cols, dtype=np.int32)
        cpu = np.array([requests[pairs[k][0]].resources.cpu_millis for k in cols], dtype=float)
        mem = np.array([requests[pairs[k][0]].resources.memory_mib for k in cols], dtype=float)
        h.addRow(-highspy.kHighsInf, node.capacity.cpu_millis, len(cols), idx, cpu)
        h.addRow(-highspy.kHighsInf, node.capacity.memory_mib, len(cols), idx, mem)
    h.run()
    status = h.modelStatusToString(h.getModelStatus())
    values = h.getSolution().col_value
    nodes: list[str | None] = [None] * n_y
    for k, (i, n) in enumerate(pairs):
        if values[k] > 0.5:
            nodes[i] = node_ids[n]
    return nodes, float(h.getInfo().mip_gap), status


def ours_batch(state: FabricState, requests: list[PlacementRequest], profile: Profile) -> list[str | None]:
    result = schedule_batch(ClusterSnapshot(state), requests, profile, time_budget_s=BATCH_BUDGET_S)
    return [o.assignments[0].node if isinstance(o, Decision) else None for o in result.outcomes]


def ours_online(state: FabricState, requests: list[PlacementRequest]) -> list[str | None]:
    snapshot = ClusterSnapshot(state)
    out: list[str | None] = []
    for r in requests:
        o = schedule_on(snapshot, r, LATENCY_FIRST_PROFILE)
        out.append(o.assignments[0].node if isinstance(o, Decision) else None)
    return out


def timed(fn: Callable[..., T], *args: object) -> tuple[T, float]:
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def main() -> None:
    rows = []
    for seed in range(1, INSTANCES + 1):
        state, requests = instance(seed)
        (opt_nodes, mip_gap, status), t_opt = timed(optimum, state, requests)
        opt = evaluate(state, requests, opt_nodes, t_opt)
        batch_nodes, t_batch = timed(ours_batch, state, requests, LATENCY_FIRST_PROFILE)
        batch = evaluate(state, requests, batch_nodes, t_batch)
        online_nodes, t_online = timed(ours_online, state, requests)
        online = evaluate(state, requests, online_nodes, t_online)
        default_nodes, t_default = timed(ours_batch, state, requests, DEFAULT_PROFILE)
        default = evaluate(state, requests, default_nodes, t_default)
        rows.append((seed, status, mip_gap, opt, batch, online, default))

    print(f"placement quality: {INSTANCES} instances, {SHAPE.nodes} nodes x {WORKLOADS} workloads (HiGHS optimum)")
    print(
        f"{'seed':>4} {'ILP placed':>10} {'ILP ms':>9} {'ILP s':>6} | {'batch placed':>12} {'batch ms':>9} "
        f"{'gap':>6} {'s':>5} | {'online placed':>13} {'online ms':>9} {'gap':>6} | {'default placed':>14} {'edge':>4}"
    )
    gaps, online_gaps, gap_ms = [], [], []
    slo_ok = True
    for seed, _status, _gap, opt, batch, online, default in rows:
        gap = batch.total_latency_ms / opt.total_latency_ms - 1 if batch.placed == opt.placed else float("nan")
        ogap = online.total_latency_ms / opt.total_latency_ms - 1 if online.placed == opt.placed else float("nan")
        if batch.placed == opt.placed:
            gaps.append(gap)
            gap_ms.append(batch.total_latency_ms - opt.total_latency_ms)
        if online.placed == opt.placed:
            online_gaps.append(ogap)
        if opt.placed == WORKLOADS and batch.within_slo < WORKLOADS:
            slo_ok = False
        print(
            f"{seed:>4} {opt.placed:>10} {opt.total_latency_ms:>9.1f} {opt.seconds:>6.2f} | {batch.placed:>12} "
            f"{batch.total_latency_ms:>9.1f} {gap:>6.1%} {batch.seconds:>5.2f} | {online.placed:>13} "
            f"{online.total_latency_ms:>9.1f} {ogap:>6.1%} | {default.placed:>14} {default.edge:>4}"
        )
    figures = {
        "benchmark": "placement_quality",
        "instances": INSTANCES,
        "nodes": SHAPE.nodes,
        "workloads": WORKLOADS,
        "batch_gap_mean": round(float(np.mean(gaps)), 4) if gaps else None,
        "batch_gap_max": round(float(np.max(gaps)), 4) if gaps else None,
        "batch_gap_ms_mean": round(float(np.mean(gap_ms)), 2) if gap_ms else None,
        "batch_gap_ms_max": round(float(np.max(gap_ms)), 2) if gap_ms else None,
        "batch_same_placed_count_instances": len(gaps),
        "online_gap_mean": round(float(np.mean(online_gaps)), 4) if online_gaps else None,
        "online_gap_max": round(float(np.max(online_gaps)), 4) if online_gaps else None,
        "online_same_placed_count_instances": len(online_gaps),
        "slo_satisfaction_batch": round(sum(r[4].within_slo for r in rows) / (WORKLOADS * INSTANCES), 4),
        "slo_satisfaction_optimum": round(sum(r[3].within_slo for r in rows) / (WORKLOADS * INSTANCES), 4),
        "slo_satisfaction_online": round(sum(r[5].within_slo for r in rows) / (WORKLOADS * INSTANCES), 4),
        "slo_satisfaction_default_profile": round(sum(r[6].within_slo for r in rows) / (WORKLOADS * INSTANCES), 4),
        "full_slo_wherever_optimum_full": slo_ok,
        "goal_gap": 0.05,
        "goal_met": bool(gaps) and len(gaps) == INSTANCES and max(gaps) <= 0.05 and slo_ok,
        "batch_seconds_max": round(max(r[4].seconds for r in rows), 2),
        "ilp_seconds_max": round(max(r[3].seconds for r in rows), 2),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
