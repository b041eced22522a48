"""Moving a chain: a migration that takes along the instances its calls go to, when users gain by it. Pure.

Moving ``api`` next to its users buys nothing while every ``api`` call goes on to ``db`` in the cloud;
moving ``api`` and ``db`` together may. ``plan_move`` weighs, for each of the best candidate nodes of the
moving instance, that node alone and that node with its **companions**: for each service it calls (and,
down to ``CHAIN_DEPTH``, theirs), the instance nearest to where the moving one was, re-placed by the
profile given the move (it stays when its own score says so). A layout is valued in the profile's
points: minus the mean user request time over the call graph (``placement.callgraph``, 1 point per ms)
plus the profile's other scores of the instances that move. Companions are kept only if they raise that
value and break no end-to-end SLO that held without them.

A service outside every call graph gets the scheduler's plain decision (no companions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from netmodel.ids import NodeId, ServiceName
from netmodel.types import Workload
from placement.callgraph import request_times_ms
from placement.plugins import SLO_TOLERANCE_MS, CycleContext, LatencyScore, make_context
from placement.scheduler import (
    IMPROVEMENT_EPSILON,
    Profile,
    _assignment,
    candidate_mask,
    feasible_nodes,
    schedule_on,
    total_score,
)
from placement.snapshot import ClusterSnapshot, Floats
from placement.types import Assignment, PlacementRequest, Unschedulable

CHAIN_DEPTH = 2
"""How far down the calls companions are looked for (the instances it calls, and theirs)."""
MAX_COMPANIONS = 4
CANDIDATE_NODES = 16
"""The moving instance's best nodes (by its own score) that are weighed with companions."""
UNUSABLE = -1e9


@dataclass(frozen=True, slots=True)
class Companion:
    workload: Workload
    assignment: Assignment


@dataclass(frozen=True, slots=True)
class MovePlan:
    """Where the instance goes, which instances it calls go with it, and the users' request time (mean, ms)
    now, after the move alone, and after the move with its companions (None without a call graph)."""

    assignment: Assignment
    companions: tuple[Companion, ...] = ()
    value: float = 0.0
    """The layout's value after the move (profile points); ``before``: where the instance is now."""
    before: float = float("-inf")
    request_ms_now: float | None = None
    request_ms_alone: float | None = None
    request_ms_after: float | None = None

    @property
    def gains(self) -> bool:
        return self.value > self.before + IMPROVEMENT_EPSILON

    def reason(self) -> str:
        """Why, for a person: the request time now and after, and what moved with it."""
        if self.request_ms_after is None or self.request_ms_now is None:
            return ""
        text = f"users' mean request time {_ms(self.request_ms_now)} -> {_ms(self.request_ms_after)} ms"
        if self.companions:
            names = ", ".join(f"{c.workload.id} to {c.assignment.node}" for c in self.companions)
            alone = f"; alone {_ms(self.request_ms_alone)} ms" if self.request_ms_alone is not None else ""
            text += f" with {names} (its calls go there{alone})"
        return text


def _ms(value: float | None) -> str:
    return "unreachable" if value is None or not np.isfinite(value) else f"{value:.1f}"


RequestFor = Callable[[Workload], PlacementRequest]
"""The placement request that would re-place an existing instance (its resources and constraints)."""


def plan_move(
    snapshot: ClusterSnapshot,
    request: PlacementRequest,
    here: int | None,
    instances: Sequence[Workload],
    request_for: RequestFor,
    profile: Profile,
) -> MovePlan | Unschedulable:
    """Where the instance leaving node ``here`` should go (``request`` says where it may), with companions.

    ``snapshot`` has the moving instance forgotten already; ``instances``: every placed instance, the
    candidates for companions. The snapshot is left as it was given."""
    graph = snapshot.call_graph
    if request.service not in graph.involved:
        return _plain(snapshot, request, profile)
    ctx = make_context(snapshot, request)
    feasible = feasible_nodes(ctx, profile, candidate_mask(snapshot, request))
    if not feasible.any():
        return _plain(snapshot, request, profile)
    scores = np.where(feasible, total_score(ctx, profile), -np.inf)
    others = _other_scores(ctx, profile)
    weight = _latency_weight(profile)
    before = float("-inf")
    now_ms: float | None = None
    if here is not None:
        snapshot.assume(request.service, request.resources, here)
        now_ms = _mean_request_ms(snapshot)
        snapshot.forget(request.service, request.resources, here)
        if bool(feasible_nodes(ctx, profile, snapshot.all_nodes)[here]):  # it may stay (the test where_it_is makes)
            before = _value(now_ms, float(others[here]), weight)
    best: MovePlan | None = None
    for i in [int(i) for i in np.argsort(-scores)[:CANDIDATE_NODES] if np.isfinite(scores[i])]:
        snapshot.assume(request.service, request.resources, i)
        alone_ms = _mean_request_ms(snapshot)
        alone = _value(alone_ms, float(others[i]), weight)
        slo_alone = _slos_hold(snapshot)
        companions, extra = _companions(snapshot, request.service, here, i, instances, request_for, profile)
        after_ms = _mean_request_ms(snapshot)
        with_them = _value(after_ms, float(others[i]) + extra, weight)
        if companions and (with_them <= alone + IMPROVEMENT_EPSILON or (slo_alone and not _slos_hold(snapshot))):
            companions, with_them, after_ms = (), alone, alone_ms
        for companion in reversed(companions):  # leave the snapshot as it was given
            _undo(snapshot, companion, instances)
        snapshot.forget(request.service, request.resources, i)
        plan = MovePlan(
            _assignment(ctx, i, float(scores[i])), companions, with_them, before, now_ms, alone_ms, after_ms
        )
        if best is None or plan.value > best.value + IMPROVEMENT_EPSILON:
            best = plan
    assert best is not None
    return best


def _plain(snapshot: ClusterSnapshot, request: PlacementRequest, profile: Profile) -> MovePlan | Unschedulable:
    outcome = schedule_on(snapshot, request, profile)
    if isinstance(outcome, Unschedulable):
        return outcome
    (assignment,) = outcome.assignments
    snapshot.forget(request.service, request.resources, snapshot.index[assignment.node])
    return MovePlan(assignment, value=assignment.score)


def _other_scores(ctx: CycleContext, profile: Profile) -> Floats:
    """The profile's scores but latency (the layout's request time stands for it), weighted and summed."""
    total: Floats = np.zeros(len(ctx.snapshot))
    for plugin, weight in profile.scores:
        if weight and not isinstance(plugin, LatencyScore):
            total = total + weight * plugin.score(ctx)
    return total


def _latency_weight(profile: Profile) -> float:
    return sum(weight for plugin, weight in profile.scores if isinstance(plugin, LatencyScore))


def _mean_request_ms(snapshot: ClusterSnapshot) -> float:
    times = request_times_ms(snapshot.call_graph, snapshot.layout(), snapshot.path_rules)
    return float(times.mean()) if len(times) else 0.0


def _value(request_ms: float, others: float, latency_weight: float) -> float:
    return (-request_ms * latency_weight if np.isfinite(request_ms) else UNUSABLE) + others


def _slos_hold(snapshot: ClusterSnapshot) -> bool:
    """Every entry's end-to-end SLO holds for all of its users in the snapshot's layout."""
    graph = snapshot.call_graph
    times = request_times_ms(graph, snapshot.layout(), snapshot.path_rules)
    services = snapshot.state.services
    for (entry, _host), took in zip(graph.users, times.tolist(), strict=True):
        slo = services[entry].max_request_latency_ms
        if slo is not None and took > slo + SLO_TOLERANCE_MS:
            return False
    return True


def _companions(
    snapshot: ClusterSnapshot,
    service: ServiceName,
    here: int | None,
    there: int,
    instances: Sequence[Workload],
    request_for: RequestFor,
    profile: Profile,
) -> tuple[tuple[Companion, ...], float]:
    """Re-place, greedily and breadth first, the instance of each called service nearest to where the moving
    instance was; each is assumed where it goes. Returns them and the sum of their other scores gained."""
    moved: list[Companion] = []
    gained = 0.0
    taken: set[str] = set()
    frontier: list[tuple[ServiceName, int, int]] = [(service, here if here is not None else there, 1)]
    while frontier and len(moved) < MAX_COMPANIONS:
        caller, origin, depth = frontier.pop(0)
        for callee, _per_request in snapshot.call_graph.calls.get(caller, ()):
            if len(moved) >= MAX_COMPANIONS:
                break
            workload = _nearest_instance(snapshot, callee, origin, instances, taken)
            if workload is None or workload.node is None:
                continue
            taken.add(workload.id)
            at = snapshot.index[workload.node]
            callee_request = request_for(workload)
            snapshot.forget(callee, workload.resources, at)
            ctx = make_context(snapshot, callee_request)
            feasible = feasible_nodes(ctx, profile, candidate_mask(snapshot, callee_request))
            scores = np.where(feasible, total_score(ctx, profile), -np.inf)
            best = int(np.argmax(scores))
            if not np.isfinite(scores[best]) or best == at or scores[best] <= scores[at] + IMPROVEMENT_EPSILON:
                snapshot.assume(callee, workload.resources, at)
                continue
            others = _other_scores(ctx, profile)
            gained += float(others[best] - others[at])
            snapshot.assume(callee, workload.resources, best)
            moved.append(Companion(workload, _assignment(ctx, best, float(scores[best]))))
            if depth < CHAIN_DEPTH:
                frontier.append((callee, at, depth + 1))
    return tuple(moved), gained


def _nearest_instance(
    snapshot: ClusterSnapshot, service: ServiceName, origin: int, instances: Sequence[Workload], taken: set[str]
) -> Workload | None:
    """The instance of ``service`` with the shortest route from node ``origin`` (ties: by id)."""
    source = int(snapshot.switch_column[origin])
    best: tuple[float, str, Workload] | None = None
    for workload in instances:
        if workload.service != service or workload.node is None or workload.id in taken:
            continue
        i = snapshot.index.get(workload.node)
        if i is None or not snapshot.healthy[i]:
            continue
        target = int(snapshot.switch_column[i])
        distance = float(snapshot.latencies.distance_us[source, target]) if source >= 0 and target >= 0 else np.inf
        key = (distance, str(workload.id), workload)
        if best is None or key[:2] < best[:2]:
            best = key
    return best[2] if best is not None else None


def _undo(snapshot: ClusterSnapshot, companion: Companion, instances: Sequence[Workload]) -> None:
    workload = companion.workload
    snapshot.forget(workload.service, workload.resources, snapshot.index[companion.assignment.node])
    assert workload.node is not None
    snapshot.assume(workload.service, workload.resources, snapshot.index[NodeId(workload.node)])
