"""Failover planning: which instances lost their node, and where each goes instead. Pure.

An instance is displaced when its node is gone, down, behind a switch known down, unreachable from
every host (a site cut off), or unreachable from its own ``near`` hosts, or when the instance itself
was reported unhealthy (its app or sidecar died; the node may be fine, so it may get the replacement,
on a port of its own). Displaced instances are
re-placed together (``schedule_batch``: the tightest SLO gets the scarce capacity first); an edge
instance spills to metro or cloud when its SLO allows (the profile's cost score prefers that anyway),
otherwise it is reported stranded with the reasons, stays where it is in the model, and is planned
again on the next change (capacity may have come back).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np

from netmodel.ids import NodeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Workload
from placement.latency import LatencyCache
from placement.scheduler import DEFAULT_PROFILE, Profile, schedule_batch
from placement.snapshot import ClusterSnapshot, Health
from placement.types import Assignment, Constraints, Decision, PlacementRequest

ConstraintsOf = Callable[[Workload], Constraints]


@dataclass(frozen=True, slots=True)
class Move:
    old: Workload
    to: Assignment
    why: str


@dataclass(frozen=True, slots=True)
class Stranded:
    workload: Workload
    why: str
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FailoverPlan:
    moves: tuple[Move, ...] = ()
    stranded: tuple[Stranded, ...] = ()


_HEALTH_WORDS = {
    Health.NODE_DOWN: "is down",
    Health.SWITCH_DOWN: "is behind a switch that is down",
    Health.UNREACHABLE: "is unreachable from every host",
}


def displacement(snapshot: ClusterSnapshot, workload: Workload, constraints: Constraints) -> str | None:
    """Why ``workload`` cannot stay where it is (None: it can)."""
    if workload.node is None:
        return "it has no node"
    unhealthy = snapshot.state.unhealthy.get(workload.id)
    if unhealthy is not None:
        return f"instance unhealthy on {workload.node}: {unhealthy}"
    i = snapshot.index.get(workload.node)
    if i is None:
        return f"node {workload.node} is not in the fabric"
    health = Health(int(snapshot.health[i]))
    if health is not Health.OK:
        return f"node {workload.node} {_HEALTH_WORDS[health]}"
    if constraints.near:
        near = snapshot.near_latency(constraints.near)
        if not np.isfinite(near.worst_ms[i]):
            return f"node {workload.node} is unreachable from host {constraints.near[int(near.worst_host[i])]}"
    return None


def _avoid(state: FabricState, workload: Workload) -> frozenset[NodeId]:
    """The node a displaced instance must leave; none when only the instance failed (its node is fine)."""
    if workload.node is None or workload.id in state.unhealthy:
        return frozenset()
    return frozenset({workload.node})


def plan_failover(
    state: FabricState,
    constraints_of: ConstraintsOf,
    profile: Profile = DEFAULT_PROFILE,
    *,
    exclude: Collection[WorkloadId] = (),
    time_budget_s: float = 0.5,
    latency_cache: LatencyCache | None = None,
) -> FailoverPlan:
    """Where every displaced instance (not in ``exclude``: those already moving) goes, or why it cannot."""
    snapshot = ClusterSnapshot(state, latency_cache)
    displaced: list[tuple[Workload, Constraints, str]] = []
    for workload in sorted(state.workloads.values(), key=lambda w: w.id):
        if workload.id in exclude:
            continue
        constraints = constraints_of(workload)
        why = displacement(snapshot, workload, constraints)
        if why is not None:
            displaced.append((workload, constraints, why))
    if not displaced:
        return FailoverPlan()
    for workload, _, _ in displaced:
        # They are leaving: their replacements must not count them as neighbours (nor their nodes' room).
        i = snapshot.index.get(workload.node) if workload.node is not None else None
        if i is not None:
            snapshot.forget(workload.service, workload.resources, i)
    requests = [
        PlacementRequest(w.service, w.resources, constraints, avoid=_avoid(state, w), bandwidth_mbps=w.bandwidth_mbps)
        for w, constraints, _ in displaced
    ]
    result = schedule_batch(snapshot, requests, profile, time_budget_s=time_budget_s)
    moves, stranded = [], []
    for (workload, _, why), outcome in zip(displaced, result.outcomes, strict=True):
        if isinstance(outcome, Decision):
            moves.append(Move(workload, outcome.assignments[0], why))
        else:
            stranded.append(Stranded(workload, why, outcome.reasons))
    return FailoverPlan(tuple(moves), tuple(stranded))
