"""Scheduling throughput: decisions per second placing 10,000 workloads on 1,000 nodes.

Fabric: generated (``placement.synthetic``), 100 edge sites x 6 nodes, 10 metro sites x 20 nodes in a
ring, 4 cloud sites x 50 nodes; every edge site has a user host. Workloads: 40% with a latency SLO
(3-10 ms over the route) from one user host, 30% near a host with no SLO, 30% with neither; cpu
100-1000m, memory 128-2048 MiB. Every decision runs all five filters and five scores over all 1,000
nodes, with the default profile.

Measured, same run:
  * per-cycle snapshot (the scheduler's fast path): one ``ClusterSnapshot``, 10,000 ``schedule_on``
    calls, each decision assumed so the next sees it;
  * one snapshot per decision (what a single gRPC Place costs in scheduling: ``schedule(state, ...)``
    on a state that already holds the earlier placements), on the first 300 requests;
  * the same requests as a batch (``schedule_batch``, the failover path) without local search.
Anchor (not run here): the Kubernetes scheduler's published ~100 pods/s at 5,000 nodes (its
scalability SLO / scheduler_perf figures); goal here >= 1,000 decisions/s.

Then, in the same run, the API path (``benchmarks/place_api_path.py``): ``Place`` over gRPC, end to end
(decision, model change, every subscriber it wakes, fsync with ``--state-dir``), 50 concurrent clients
in other processes against one controller with the same fabric and 10,000 workloads placed, once it
has started (every sidecar's snapshot built: its start-up is timed apart); goal
>= 1,000 Places/s, p99 < 20 ms. ``--no-api`` leaves it out; ``--calls`` per client (20); ``--mtls`` runs it
again with ``--pki-dir`` (each Place issues the new workload's SVID and hands it to SDS; operators over mTLS).

Prints a table, then one JSON line of figures (the last line).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
from dataclasses import replace

from benchmarks.place_api_path import ApiFigures, measure_api_path, with_placed_declared
from netmodel.ids import NodeId, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Workload, frozen_map
from placement.latency import LatencyCache
from placement.scheduler import DEFAULT_PROFILE, schedule, schedule_batch, schedule_on
from placement.snapshot import ClusterSnapshot
from placement.synthetic import FabricShape, build_fabric, random_requests
from placement.types import Decision, PlacementRequest

WORKLOADS = 10_000
PER_DECISION_SAMPLE = 300
K8S_ANCHOR_PODS_PER_S = 100
GOAL = 1_000
API_CLIENTS = 50
API_GOAL_P99_MS = 20.0


def with_placed(state: FabricState, decisions: list[tuple[PlacementRequest, NodeId]]) -> FabricState:
    workloads = dict(state.workloads)
    for k, (request, node) in enumerate(decisions):
        wid = WorkloadId(f"{request.service}-{k + 1}")
        workloads[wid] = Workload(wid, request.service, SpiffeId(""), request.resources, node)
    return replace(state, workloads=frozen_map(workloads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-api", action="store_true", help="the scheduler core only")
    parser.add_argument("--calls", type=int, default=20, help="Place calls per API client (20)")
    parser.add_argument(
        "--mtls",
        action="store_true",
        help="the API path a second time with --pki-dir (an SVID per workload, issued by each Place and handed"
        " to SDS; operator clients over mTLS)",
    )
    args = parser.parse_args()
    shape = FabricShape()
    state = build_fabric(shape, seed=1)
    requests = random_requests(state, WORKLOADS, seed=2)
    gc.collect()

    start = time.perf_counter()
    snapshot = ClusterSnapshot(state)
    snapshot_s = time.perf_counter() - start
    placed: list[tuple[PlacementRequest, NodeId]] = []
    refused = 0
    start = time.perf_counter()
    for request in requests:
        outcome = schedule_on(snapshot, request, DEFAULT_PROFILE)
        if isinstance(outcome, Decision):
            placed.append((request, outcome.assignments[0].node))
        else:
            refused += 1
    cycle_s = time.perf_counter() - start
    per_cycle_rate = WORKLOADS / cycle_s

    # One snapshot per decision, on a state that holds what was placed before it (sampled).
    half = with_placed(state, placed[: WORKLOADS // 2])
    latencies = LatencyCache()  # as the orchestrator holds one: decisions on one topology share its latencies
    start = time.perf_counter()
    for request in requests[WORKLOADS // 2 : WORKLOADS // 2 + PER_DECISION_SAMPLE]:
        schedule(half, request, DEFAULT_PROFILE, latencies)
    per_decision_rate = PER_DECISION_SAMPLE / (time.perf_counter() - start)

    start = time.perf_counter()
    schedule_batch(ClusterSnapshot(state), requests, DEFAULT_PROFILE, improve=False)
    batch_s = time.perf_counter() - start
    edge = sum(1 for _, node in placed if node.startswith("edge-"))
    api: ApiFigures | None = None
    api_mtls: ApiFigures | None = None
    if not args.no_api:
        gc.collect()
        api = measure_api_path(with_placed_declared(state, requests), API_CLIENTS, args.calls)
        if args.mtls:
            gc.collect()
            api_mtls = measure_api_path(with_placed_declared(state, requests), API_CLIENTS, args.calls, mtls=True)

    print(
        f"placement throughput: {WORKLOADS} workloads on {shape.nodes} nodes "
        f"({len(state.topology.switches)} switches), default profile, {platform.python_version()}"
    )
    print(f"  {'path':<44} {'decisions/s':>12} {'per decision':>14}")
    rows = [
        ("per-cycle snapshot (schedule_on, assumed)", per_cycle_rate),
        ("snapshot per decision (schedule, 5,000 placed)", per_decision_rate),
        ("batch, no local search (schedule_batch)", WORKLOADS / batch_s),
        ("anchor: kube-scheduler at 5,000 nodes", float(K8S_ANCHOR_PODS_PER_S)),
    ]
    for name, rate in rows:
        print(f"  {name:<44} {rate:>12,.0f} {1e6 / rate:>11,.0f} µs")
    print(f"  snapshot build: {snapshot_s * 1000:.1f} ms; refused: {refused}; placed on edge: {edge}")
    api_figures: dict[str, object] = {}
    api_figures_mtls: dict[str, object] = {}
    if api is not None:
        met = api.places_per_s >= GOAL and api.p99_ms < API_GOAL_P99_MS and not api.failed
        print(
            f"  API path (gRPC Place end to end, {api.clients} clients, {api.placed_before:,} placed, --state-dir): "
            f"{api.places_per_s:,.1f} Places/s, p50 {api.p50_ms:.1f} ms, p99 {api.p99_ms:.1f} ms, "
            f"{api.failed} failed of {api.calls} (goal >= {GOAL:,}/s, p99 < {API_GOAL_P99_MS:g} ms: "
            f"{'met' if met else 'missed'}); started after the controller's start-up ({api.settled_s:.1f} s)"
        )
        if api_mtls is not None:
            print(
                f"  API path with --pki-dir (each Place issues an SVID, SDS gets it; operators over mTLS): "
                f"{api_mtls.places_per_s:,.1f} Places/s, p50 {api_mtls.p50_ms:.1f} ms, p99 {api_mtls.p99_ms:.1f} ms, "
                f"{api_mtls.failed} failed of {api_mtls.calls}; started after the controller's start-up "
                f"({api_mtls.settled_s:.1f} s: 10,100 SVIDs issued, every snapshot built)"
            )
            api_figures_mtls = {
                "api_mtls_places_per_s": round(api_mtls.places_per_s, 1),
                "api_mtls_p50_ms": round(api_mtls.p50_ms, 2),
                "api_mtls_p99_ms": round(api_mtls.p99_ms, 2),
                "api_mtls_failed": api_mtls.failed,
                "api_mtls_settled_s": round(api_mtls.settled_s, 2),
            }
        print("  the rows above are the scheduler core alone; the API path adds the model change and its subscribers")
        api_figures = {
            "api_clients": api.clients,
            "api_placed_before": api.placed_before,
            "api_places_per_s": round(api.places_per_s, 1),
            "api_p50_ms": round(api.p50_ms, 2),
            "api_p99_ms": round(api.p99_ms, 2),
            "api_failed": api.failed,
            "api_settled_s": round(api.settled_s, 2),
            "api_goal_met": met,
            **api_figures_mtls,
        }
    print(
        json.dumps(
            {
                "benchmark": "placement_throughput",
                "nodes": shape.nodes,
                "workloads": WORKLOADS,
                "decisions_per_s": round(per_cycle_rate),
                "decisions_per_s_snapshot_per_decision": round(per_decision_rate),
                "decisions_per_s_batch": round(WORKLOADS / batch_s),
                "snapshot_build_ms": round(snapshot_s * 1000, 2),
                "refused": refused,
                "anchor_k8s_pods_per_s_at_5000_nodes": K8S_ANCHOR_PODS_PER_S,
                "goal_decisions_per_s": GOAL,
                "goal_met": per_cycle_rate >= GOAL,
                **api_figures,
            }
        )
    )


if __name__ == "__main__":
    main()
