"""The reservation core's cost at scale: a cold plan, and admitting one more instance. Pure; no network.

Fabric: ``placement.synthetic``'s default shape (1,000 nodes: 100 edge sites x 6, 10 metro x 20, 4 cloud x
50; one user host per edge site), every link 10 Gbit/s each way so that most demands fit. 10,000 workloads
of 20 services with ``bandwidth_mbps`` 1-5, each near one user host (two demands each: to and from it),
spread as a placement spreads them: half on the host's own edge site, a third in its metro, the rest in a
cloud site (seeded). Measured, same run:

  * cold: ``plan_reservations(state)`` from nothing (what a controller restart or a topology change pays);
  * one more instance: ``plan_reservations(state + 1, previous)`` then ``admission(before, after)`` (what the
    admission check pays per candidate), each try a different new instance on the same base state;
  * the baseline: ``plan_reservations(state + 1)`` from scratch and the same ``admission`` per try.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from netmodel.bandwidth import Outcome, Reservation, ReservationPlan, admission, plan_reservations
from netmodel.ids import HostId, NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.topology import Topology
from netmodel.types import PlacementConstraints, Resources, Service, Tier, Workload, frozen_map
from placement.synthetic import FabricShape, build_fabric

WORKLOADS = 10_000
LINK_MBPS = (10_000.0, 1_000.0)  # every demand on its latency-shortest path; many detours
SERVICES = 20


def reserving_fabric(link_mbps: float, seed: int = 1) -> FabricState:
    """The synthetic fabric with node addresses, roomy links and services that reserve bandwidth."""
    state = build_fabric(FabricShape(), seed=seed)
    nodes = {
        nid: replace(node, ip=f"10.{100 + k // 250}.{k % 250}.10")
        for k, (nid, node) in enumerate(sorted(state.nodes.items()))
    }
    links = {link: replace(attrs, capacity_mbps=link_mbps) for link, attrs in state.topology.links.items()}
    services = {
        ServiceName(f"bw{k}"): Service(
            ServiceName(f"bw{k}"), 7000 + k, replicas=0, resources=Resources(100, 128), bandwidth_mbps=1.0 + k % 5
        )
        for k in range(SERVICES)
    }
    return replace(
        state,
        topology=Topology(state.topology.switches, links),
        nodes=frozen_map(nodes),
        services=frozen_map(services),
    )


def with_workloads(state: FabricState, workloads: list[Workload]) -> FabricState:
    return replace(
        state,
        workloads=frozen_map({**state.workloads, **{w.id: w for w in workloads}}),
        generation=state.generation + 1,
    )


def _ms(seconds: list[float], q: float) -> float:
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))] * 1000


def measure(link_mbps: float, tries: int = 200, cold_rounds: int = 3, profile: bool = False) -> dict[str, Any]:
    rng = random.Random(7)
    fabric = reserving_fabric(link_mbps)
    pools = _pools(fabric)
    hosts = sorted(fabric.hosts)
    base = with_workloads(fabric, [_candidate(pools, hosts, rng, n + 1) for n in range(WORKLOADS)])
    cold: list[float] = []
    plan: ReservationPlan | None = None
    for _ in range(cold_rounds):
        start = time.perf_counter()
        plan = plan_reservations(base)
        cold.append(time.perf_counter() - start)
    assert plan is not None
    incremental: list[float] = []
    appended_s: list[float] = []  # the new instance's demands are new matches: appended to the plan
    joined_s: list[float] = []  # they joined an earlier instance's demand (same host, node, port)
    scratch: list[float] = []
    refused = merged = detoured = 0
    for k in range(tries):
        after = with_workloads(base, [_candidate(pools, hosts, rng, WORKLOADS + 1 + k)])
        start = time.perf_counter()
        new_plan = plan_reservations(after, plan)
        refusal = admission(plan, new_plan)
        incremental.append(time.perf_counter() - start)
        joined = len(new_plan.outcomes) == len(plan.outcomes)  # its demands joined existing ones (same match)
        merged += joined
        (joined_s if joined else appended_s).append(incremental[-1])
        detoured += sum(1 for o in new_plan.outcomes[len(plan.outcomes) :] if _detour(new_plan, o))
        refused += refusal is not None
        start = time.perf_counter()
        admission(plan, plan_reservations(after))
        scratch.append(time.perf_counter() - start)
    figures: dict[str, Any] = {
        "link_mbps": link_mbps,
        "nodes": len(base.nodes),
        "switches": len(base.topology.switches),
        "workloads": WORKLOADS,
        "demands": len(plan.outcomes),
        "reserved": len(plan.reservations),
        "unreserved": len(plan.unreserved),
        "detoured": sum(1 for o in plan.outcomes if _detour(plan, o)),
        "new_demands_detoured": detoured,
        "cold_plan_ms_p50": round(statistics.median(cold) * 1000, 1),
        "admit_one_ms_p50": round(_ms(incremental, 50), 3),
        "admit_one_ms_p99": round(_ms(incremental, 99), 3),
        "baseline_from_scratch_ms_p50": round(_ms(scratch, 50), 1),
        "baseline_from_scratch_ms_p99": round(_ms(scratch, 99), 1),
        "tries": tries,
        "refused": refused,
        "tries_merged_into_an_existing_demand": merged,
        "admit_one_appended_ms_p50": round(_ms(appended_s, 50), 3) if appended_s else None,
        "admit_one_appended_ms_p99": round(_ms(appended_s, 99), 3) if appended_s else None,
        "admit_one_merged_ms_p50": round(_ms(joined_s, 50), 3) if joined_s else None,
    }
    if profile:
        after = with_workloads(base, [_candidate(pools, hosts, rng, WORKLOADS + tries + 1)])
        figures["profile_cold"] = _profile(lambda: plan_reservations(base))
        figures["profile_admit_one"] = _profile(lambda: admission(plan, plan_reservations(after, plan)))
    return figures


def _detour(plan: ReservationPlan, outcome: Outcome) -> bool:
    """A reservation off its latency-shortest path (that path had no room)."""
    graph = plan._graph
    if not isinstance(outcome, Reservation) or not outcome.links or graph is None:
        return False
    shortest = graph.shortest(graph.index[outcome.switches[0]], graph.index[outcome.switches[-1]])
    return shortest is not None and tuple(graph.links[i] for i in shortest) != outcome.links


def _pools(state: FabricState) -> dict[str, list[str]]:
    pools: dict[str, list[str]] = {"metro": [], "cloud": []}
    for node in sorted(state.nodes.values(), key=lambda n: n.id):
        tier = state.sites[node.site].tier
        key = str(node.site) if tier is Tier.EDGE else tier.value
        pools.setdefault(key, []).append(node.id)
    return pools


def _candidate(pools: dict[str, list[str]], hosts: Sequence[str], rng: random.Random, n: int) -> Workload:
    """A placed instance near a random user host: on its edge site (1/2), in a metro (1/3) or a cloud site.
    Its own port, as placement gives one to each instance of a node: its demands are new matches."""
    host = rng.choice(hosts)
    roll = rng.random()
    pool = pools[f"edge-{host[1:]}"] if roll < 0.5 else pools["metro"] if roll < 0.83 else pools["cloud"]
    service = ServiceName(f"bw{rng.randrange(SERVICES)}")
    return Workload(
        WorkloadId(f"{service}-{n}"),
        service,
        SpiffeId(""),
        Resources(100, 128),
        NodeId(rng.choice(pool)),
        20_000 + n,  # a port of its own, as the orchestrator gives each instance on a node
        constraints=PlacementConstraints(near=(HostId(host),)),
    )


def _profile(call: Any) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    call()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(15)
    return out.getvalue()
