"""The scheduler: filters, then scores, on a per-cycle snapshot. Pure.

    decision = schedule(state, PlacementRequest(ServiceName("web"), Resources(500, 256)))
    if isinstance(decision, Unschedulable):
        print(decision.message)   # "0/6 nodes are available; no node satisfies max_latency_ms=5 ..."

``schedule`` builds a ``ClusterSnapshot`` of the state and places each replica in turn (later replicas
see earlier ones through ``snapshot.assume``, so they spread). ``schedule_on`` does the same on a
snapshot the caller keeps, which is how many decisions share one snapshot (1,000 nodes: ~50 µs each).
``schedule_batch`` places a set of instances together (failover, bulk placement): most constrained
first, then a bounded local search (moves and swaps) among the batch only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from netmodel.bandwidth import ReservationPlan
from netmodel.state import FabricState
from placement.latency import LatencyCache
from placement.plugins import (
    BalanceScore,
    BandwidthFits,
    CostScore,
    CycleContext,
    FilterPlugin,
    LatencyScore,
    LatencySlo,
    NodeHealthy,
    NodeSpread,
    RequestSlo,
    ResourcesFit,
    ScorePlugin,
    ServiceAffinity,
    SiteSpread,
    TierAllowed,
    make_context,
    nodes_phrase,
    reserves_bandwidth,
)
from placement.snapshot import TIERS, Bools, ClusterSnapshot, Floats
from placement.types import Assignment, Decision, PlacementRequest, Unschedulable

IMPROVEMENT_EPSILON = 1e-6
DYNAMIC_REGRET_LIMIT = 200_000
"""Batches up to this many (unit, node) pairs are ordered by regret recomputed after every placement;
larger ones (a big failover) by regret computed once, which costs one scoring per unit."""


@dataclass(frozen=True)
class Profile:
    """Which filters run (in this order: the first to reject a node is the one that explains it) and how
    much each score weighs."""

    name: str
    filters: tuple[FilterPlugin, ...]
    scores: tuple[tuple[ScorePlugin, float], ...]


FILTERS: tuple[FilterPlugin, ...] = (
    NodeHealthy(),
    TierAllowed(),
    ServiceAffinity(),
    LatencySlo(),
    RequestSlo(),
    ResourcesFit(),
    BandwidthFits(),  # last: the costliest, it evaluates only the nodes every other filter let through
)

DEFAULT_PROFILE = Profile(
    "default",
    FILTERS,
    # Lexicographic in effect: until a service has its replicas, a second one on the same node (2000) is
    # worse than a scarcer tier (edge 1000, metro 300), which is worse than sharing a site (100), which
    # is worse than latency (1 per ms) and load balance (5 per unit, at most 2 units). Past its replica
    # count a service's instances only pay a small tail per neighbour (10 per instance on the node).
    (
        (NodeSpread(), 2000.0),
        (CostScore(), 1000.0),
        (SiteSpread(), 100.0),
        (LatencyScore(), 1.0),
        (BalanceScore(), 5.0),
    ),
)
"""Within the SLO, the least scarce tier; replicas on different nodes, then sites; then latency."""

LATENCY_FIRST_PROFILE = Profile(
    "latency-first",
    FILTERS,
    ((LatencyScore(), 1.0), (NodeSpread(), 0.01), (BalanceScore(), 0.001)),
)
"""Lowest user latency wherever it fits (edge first); spread and balance only break ties."""

PROFILES: Mapping[str, Profile] = {p.name: p for p in (DEFAULT_PROFILE, LATENCY_FIRST_PROFILE)}


# -- one request -------------------------------------------------------------------------------------


def candidate_mask(snapshot: ClusterSnapshot, request: PlacementRequest) -> Bools:
    if request.candidates is None and not request.avoid:
        return snapshot.all_nodes
    if request.candidates is None:
        mask = snapshot.all_nodes.copy()
    else:
        mask = np.zeros(len(snapshot), dtype=np.bool_)
        for node in request.candidates:
            i = snapshot.index.get(node)
            if i is not None:
                mask[i] = True
    for node in request.avoid:
        i = snapshot.index.get(node)
        if i is not None:
            mask[i] = False
    return mask


def feasible_nodes(ctx: CycleContext, profile: Profile, candidates: Bools, *, capacity: bool = True) -> Bools:
    ok = candidates
    for plugin in profile.filters:
        if capacity or not plugin.checks_capacity:
            ctx.considered = ok
            ok = ok & plugin.passes(ctx)
    ctx.considered = None
    return ok


def total_score(ctx: CycleContext, profile: Profile) -> Floats:
    total: Floats = np.zeros(len(ctx.snapshot))
    for plugin, weight in profile.scores:
        if weight:
            total = total + weight * plugin.score(ctx)
    return total


def explain(ctx: CycleContext, profile: Profile, candidates: Bools) -> list[str]:
    """Why no candidate node passes: per filter, about the nodes it was the first to reject."""
    count = int(candidates.sum())
    what = "nodes" if ctx.request.candidates is None and not ctx.request.avoid else "candidate nodes"
    reasons = [f"0/{count} {what} are available"]
    remaining = candidates
    for plugin in profile.filters:
        ctx.considered = remaining
        ok = plugin.passes(ctx)
        failed = remaining & ~ok
        if failed.any():
            reasons.extend(plugin.explain(ctx, failed, remaining))
        remaining = remaining & ok
    ctx.considered = None
    return reasons


def _assignment(ctx: CycleContext, i: int, score: float) -> Assignment:
    s = ctx.snapshot
    node = s.state.nodes[s.node_ids[i]]
    tier_code = int(s.tier_of[i])
    tier = TIERS[tier_code] if tier_code >= 0 else s.state.sites[node.site].tier
    worst = float(ctx.near.worst_ms[i]) if ctx.near is not None else None
    return Assignment(node.id, node.site, tier, worst, score)


def schedule(
    state: FabricState,
    request: PlacementRequest,
    profile: Profile = DEFAULT_PROFILE,
    latency_cache: LatencyCache | None = None,
    reservations: ReservationPlan | None = None,
) -> Decision | Unschedulable:
    """Where the request's replicas would go, or why they cannot go anywhere. Changes nothing.
    ``reservations``: see ``ClusterSnapshot``."""
    return schedule_on(ClusterSnapshot(state, latency_cache, reservations=reservations), request, profile)


def schedule_on(
    snapshot: ClusterSnapshot, request: PlacementRequest, profile: Profile = DEFAULT_PROFILE
) -> Decision | Unschedulable:
    """``schedule`` on a snapshot the caller keeps: a decision stays assumed in it (an Unschedulable
    leaves it as it was). All replicas or none."""
    candidates = candidate_mask(snapshot, request)
    placed: list[tuple[int, Assignment]] = []
    for replica in range(request.replicas):
        ctx = make_context(snapshot, request)
        feasible = feasible_nodes(ctx, profile, candidates)
        if not feasible.any():
            reasons = explain(ctx, profile, candidates)  # before undoing: earlier replicas are part of why
            for i, _ in placed:
                snapshot.forget(request.service, request.resources, i, request)
            if replica:
                reasons.insert(0, f"only {replica} of {request.replicas} replicas fit")
            return Unschedulable(request, tuple(reasons))
        scores = np.where(feasible, total_score(ctx, profile), -np.inf)
        i = int(np.argmax(scores))
        snapshot.assume(request.service, request.resources, i, request)
        placed.append((i, _assignment(ctx, i, float(scores[i]))))
    return Decision(request, tuple(a for _, a in placed))


# -- many requests together ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One outcome per request, in request order."""

    outcomes: tuple[Decision | Unschedulable, ...]

    @property
    def decisions(self) -> list[Decision]:
        return [o for o in self.outcomes if isinstance(o, Decision)]

    @property
    def unschedulable(self) -> list[Unschedulable]:
        return [o for o in self.outcomes if isinstance(o, Unschedulable)]


class _Batch:
    """Working state of ``schedule_batch``: one unit per replica, each on a node index or -1."""

    def __init__(
        self,
        snapshot: ClusterSnapshot,
        requests: Sequence[PlacementRequest],
        profile: Profile,
        clock: Callable[[], float],
    ) -> None:
        self.snapshot = snapshot
        self.clock = clock
        self.profile = profile
        self.units = [request for request in requests for _ in range(request.replicas)]
        self.owner = [k for k, request in enumerate(requests) for _ in range(request.replicas)]
        self.candidates = [candidate_mask(snapshot, request) for request in self.units]
        self.node = [-1] * len(self.units)

    def reset(self) -> None:
        """Take every unit off its node (the snapshot is as it was before the batch)."""
        for u, i in enumerate(self.node):
            if i >= 0:
                self.take(u)

    def quality(self) -> tuple[int, int, float]:
        """(units placed where every filter passes, units placed, the total score of the first): what a better
        layout has more of. A unit whose node a later placement made break a filter (an end-to-end SLO)
        counts as placed only: a layout that keeps every filter beats one that places more units badly."""
        placed = [u for u, i in enumerate(self.node) if i >= 0]
        scores = [self._score_at(u, self.node[u]) for u in placed]
        kept = [score for score in scores if np.isfinite(score)]
        return len(kept), len(placed), float(sum(kept))

    def context(self, u: int) -> CycleContext:
        return make_context(self.snapshot, self.units[u])

    def options(self, u: int, *, capacity: bool = True) -> Floats:
        """Scores of unit u on every node; -inf where it may not go."""
        ctx = self.context(u)
        feasible = feasible_nodes(ctx, self.profile, self.candidates[u], capacity=capacity)
        return np.where(feasible, total_score(ctx, self.profile), -np.inf)

    def options_apart(self, u: int, *, capacity: bool = True) -> Floats:
        """``options`` as if unit u were not placed yet (a unit must not count itself as a neighbour)."""
        i = self.node[u]
        if i < 0:
            return self.options(u, capacity=capacity)
        self.take(u)
        try:
            return self.options(u, capacity=capacity)
        finally:
            self.put(u, i)

    def put(self, u: int, i: int) -> None:
        self.node[u] = i
        self.snapshot.assume(self.units[u].service, self.units[u].resources, i, self.units[u])

    def take(self, u: int) -> int:
        i, self.node[u] = self.node[u], -1
        self.snapshot.forget(self.units[u].service, self.units[u].resources, i, self.units[u])
        return i

    def order(self) -> list[int]:
        """Most constrained first: fewest feasible nodes, then largest regret (what is lost if the best
        node is taken by someone else), then largest demand."""
        keys = []
        for u, request in enumerate(self.units):
            scores = self.options(u)
            finite = np.sort(scores[np.isfinite(scores)])
            regret = float(finite[-1] - finite[-2]) if len(finite) >= 2 else np.inf
            size = request.resources.cpu_millis + request.resources.memory_mib
            keys.append((len(finite), -regret, -size, u))
        return [key[-1] for key in sorted(keys)]

    def place_by_regret(self) -> None:
        """Repeatedly place the unit that would lose most if it did not get its best node now (the
        regret: best minus second-best score; a unit with one feasible node has infinite regret).
        Placing on node n only changes the scores on n's site (capacity, spread, balance), so only
        units whose two best nodes lie there are rescored (and units with affinity terms, which a new
        instance can make feasible anywhere). A unit in a call graph (any placement changes its request
        times and end-to-end SLO everywhere) or one reserving bandwidth (any placement can take the room
        on a link it needs) is rescored when it is picked, before it is placed: its order may be stale,
        its node never is."""
        table = np.vstack([self.options(u) for u in range(len(self.units))]) if self.units else np.zeros((0, 0))
        waiting = np.ones(len(self.units), dtype=np.bool_)
        volatile = np.array([bool(r.constraints.affinity) for r in self.units], dtype=np.bool_)
        graph = self.snapshot.call_graph
        in_graph = np.array(
            [graph.reaches(r.service) or reserves_bandwidth(self.context(u)) for u, r in enumerate(self.units)],
            dtype=np.bool_,
        )
        stale = np.zeros(len(self.units), dtype=np.bool_)
        site_of = self.snapshot.site_of
        while waiting.any():
            rows = np.flatnonzero(waiting)
            part = table[rows]
            feasible = np.isfinite(part).sum(axis=1)
            if not feasible.any():
                return  # the rest fit nowhere as things stand: make_room gets its turn
            top2 = (
                -np.sort(-part, axis=1)[:, :2] if part.shape[1] >= 2 else np.hstack([part, np.full_like(part, -np.inf)])
            )
            with np.errstate(invalid="ignore"):
                regret = np.where(feasible >= 2, top2[:, 0] - top2[:, 1], np.inf)
            regret[feasible == 0] = -np.inf
            size = np.array([self.units[u].resources.cpu_millis + self.units[u].resources.memory_mib for u in rows])
            pick = int(np.lexsort((-size, -regret))[0])  # largest regret, then largest demand
            u = int(rows[pick])
            if stale[u]:
                table[u] = self.options(u)
                stale[u] = False
                if not np.isfinite(table[u]).any():
                    waiting[u] = False  # nowhere as things stand: make_room gets its turn
                    continue
            best = int(np.argmax(table[u]))
            self.put(u, best)
            waiting[u] = False
            stale |= in_graph
            # rescore units whose two best nodes include one in the same site, or whose terms may change
            second = np.argsort(-part, axis=1)[:, :2]
            touched = (site_of[second] == site_of[best]).any(axis=1)
            for v in rows[touched | volatile[rows]]:
                if waiting[v]:
                    table[v] = self.options(int(v))

    def make_room(self, u: int) -> bool:
        """Place unit u by moving one other unit of the batch off a node it would fit on otherwise."""
        relaxed = self.options(u, capacity=False)
        for i in np.argsort(-relaxed)[:8]:
            if not np.isfinite(relaxed[i]):
                break
            for v in [v for v, n in enumerate(self.node) if n == i]:
                self.take(v)
                if np.isfinite(self.options(u)[i]):
                    self.put(u, int(i))
                    elsewhere = self.options(v)
                    elsewhere[i] = -np.inf
                    if np.isfinite(elsewhere).any():
                        self.put(v, int(np.argmax(elsewhere)))
                        return True
                    self.take(u)
                self.put(v, int(i))
        return False

    def improve_moves(self) -> bool:
        improved = False
        for u in range(len(self.units)):
            if self.node[u] < 0:
                continue
            current = self.take(u)
            scores = self.options(u)
            best = int(np.argmax(scores))
            if scores[best] > scores[current] + IMPROVEMENT_EPSILON:
                self.put(u, best)
                improved = True
            else:
                self.put(u, current)
        return improved

    def improve_ejections(self, deadline: float) -> bool:
        """Compound moves for full nodes: unit u moves to a better node n where it does not fit, after
        the residents of n that lose least per unit of capacity freed move to their next best node.
        This is what a knapsack needs (make room for one large instance by moving two small ones)."""
        improved = False
        for u in range(len(self.units)):
            if self.node[u] < 0 or self.clock() > deadline:
                continue
            current = self.node[u]
            relaxed = self.options_apart(u, capacity=False)
            better = [int(i) for i in np.argsort(-relaxed)[:4] if relaxed[i] > relaxed[current] + IMPROVEMENT_EPSILON]
            for target in better:
                if self._eject_into(u, target, float(relaxed[target] - relaxed[current])):
                    improved = True
                    break
        return improved

    def _eject_into(self, u: int, target: int, gain: float) -> bool:
        residents = [v for v, n in enumerate(self.node) if n == target and v != u]
        losses = []
        for v in residents:
            here = self.options_apart(v, capacity=False)[target]
            elsewhere = self.options_apart(v)
            elsewhere[target] = -np.inf
            if np.isfinite(elsewhere).any():
                size = self.units[v].resources.cpu_millis + self.units[v].resources.memory_mib + 1
                losses.append(((here - float(elsewhere.max())) / size, v, here - float(elsewhere.max())))
        losses.sort()
        before = list(self.node)
        current = self.take(u)
        moved: list[int] = []
        for _, v, loss in losses:
            if np.isfinite(self.options(u)[target]) or gain <= IMPROVEMENT_EPSILON:
                break
            self.take(v)
            moved.append(v)
            gain -= loss
        if gain > IMPROVEMENT_EPSILON and np.isfinite(self.options(u)[target]):
            score_before = sum(self._score_at(v, before[v]) for v in moved)
            self.put(u, target)
            for v in moved:
                elsewhere = self.options(v)
                elsewhere[target] = -np.inf
                if not np.isfinite(elsewhere).any():
                    break
                self.put(v, int(np.argmax(elsewhere)))
            else:
                realised = sum(self._score_at(v, self.node[v]) for v in moved) - score_before
                realised += self._score_at(u, target) - self._score_at(u, current, before)
                if realised > IMPROVEMENT_EPSILON:
                    return True
        self._restore(before)
        return False

    def _score_at(self, u: int, i: int, layout: list[int] | None = None) -> float:
        """Unit u's score on node i ignoring capacity, the others as they are now."""
        del layout
        return float(self.options_apart(u, capacity=False)[i])

    def _restore(self, layout: list[int]) -> None:
        for v, n in enumerate(self.node):
            if n >= 0 and n != layout[v]:
                self.take(v)
        for v, n in enumerate(layout):
            if n >= 0 and self.node[v] != n:
                self.put(v, n)

    def improve_swaps(self, deadline: float) -> bool:
        placed = [u for u in range(len(self.units)) if self.node[u] >= 0]
        if len(placed) < 2:
            return False
        # Scores ignoring capacity, at the current state: candidates for a swap, checked exactly below.
        table = np.vstack([self.options_apart(u, capacity=False) for u in placed])
        at = np.array([self.node[u] for u in placed])
        cross = table[:, at]  # cross[a, b]: unit a on b's node
        own = np.diag(cross)
        with np.errstate(invalid="ignore"):
            gain = cross + cross.T - own[:, None] - own[None, :]
        gain[~np.isfinite(gain)] = -np.inf
        gain[at[:, None] == at[None, :]] = -np.inf
        improved = False
        touched: set[int] = set()
        for flat in np.argsort(-gain, axis=None):
            a, b = divmod(int(flat), len(placed))
            if gain[a, b] <= IMPROVEMENT_EPSILON or self.clock() > deadline:
                break
            if a in touched or b in touched or a > b:
                continue
            u, v = placed[a], placed[b]
            if self._swap(u, v):
                touched.update((a, b))
                improved = True
        return improved

    def _swap(self, u: int, v: int) -> bool:
        iu, iv = self.take(u), self.take(v)
        before = self.options(u)[iu] + self.options(v)[iv]
        su = self.options(u)
        if np.isfinite(su[iv]):
            self.put(u, iv)
            sv = self.options(v)
            if np.isfinite(sv[iu]) and su[iv] + sv[iu] > before + IMPROVEMENT_EPSILON:
                self.put(v, iu)
                return True
            self.take(u)
        self.put(u, iu)
        self.put(v, iv)
        return False


def schedule_batch(
    snapshot: ClusterSnapshot,
    requests: Sequence[PlacementRequest],
    profile: Profile = DEFAULT_PROFILE,
    *,
    improve: bool = True,
    time_budget_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> BatchResult:
    """Place several requests together; decisions stay assumed in ``snapshot``.

    Greedy, most constrained first; a unit that fits nowhere may take the node of another unit of the
    batch that can go elsewhere; then, within ``time_budget_s``, single moves and pairwise swaps that
    raise the total score. Instances outside the batch never move. A request is all-or-nothing.
    """
    deadline = clock() + time_budget_s
    batch = _Batch(snapshot, requests, profile, clock)
    small = len(batch.units) * len(snapshot) <= DYNAMIC_REGRET_LIMIT
    # Small batches: two starts (regret order recomputed as nodes fill, and regret order computed once),
    # each improved by local search within half the budget; the better layout wins.
    starts = (True, False) if small else (False,)
    best: tuple[tuple[int, int, float], list[int]] | None = None
    for k, dynamic in enumerate(starts):
        if k:
            batch.reset()
        attempt_deadline = clock() + (deadline - clock()) / (len(starts) - k)
        if dynamic:
            batch.place_by_regret()
        else:
            for u in batch.order():
                scores = batch.options(u)
                if np.isfinite(scores).any():
                    batch.put(u, int(np.argmax(scores)))
        for u in range(len(batch.units)):
            if batch.node[u] < 0:
                batch.make_room(u)
        if improve:
            for _ in range(20):
                if clock() > attempt_deadline or not (
                    batch.improve_moves()
                    | batch.improve_swaps(attempt_deadline)
                    | batch.improve_ejections(attempt_deadline)
                ):
                    break
        quality = batch.quality()
        if best is None or quality > best[0]:
            best = (quality, list(batch.node))
    assert best is not None
    batch.reset()
    batch._restore(best[1])
    return _outcomes(batch, requests)


def _settle(batch: _Batch) -> None:
    """Re-place each unit the final layout makes break a filter (another unit's node can break an
    end-to-end SLO it kept when placed): to its best node as things are now, or nowhere."""
    for u in range(len(batch.units)):
        i = batch.node[u]
        if i >= 0 and not np.isfinite(batch.options_apart(u)[i]):
            batch.take(u)
            scores = batch.options(u)
            if np.isfinite(scores).any():
                batch.put(u, int(np.argmax(scores)))


def _outcomes(batch: _Batch, requests: Sequence[PlacementRequest]) -> BatchResult:
    _settle(batch)
    outcomes: list[Decision | Unschedulable] = []
    for k, request in enumerate(requests):
        units = [u for u, owner in enumerate(batch.owner) if owner == k]
        if all(batch.node[u] >= 0 for u in units):
            assignments = []
            for u in units:
                ctx = batch.context(u)
                i = batch.node[u]
                assignments.append(_assignment(ctx, i, float(total_score(ctx, batch.profile)[i])))
            outcomes.append(Decision(request, tuple(assignments)))
            continue
        placed = [u for u in units if batch.node[u] >= 0]
        ctx = batch.context(units[0])
        reasons = explain(ctx, batch.profile, batch.candidates[units[0]])
        for u in placed:  # all or nothing: free what part of it got
            batch.take(u)
        if placed:
            reasons.insert(0, f"only {len(placed)} of {request.replicas} replicas fit")
        outcomes.append(Unschedulable(request, tuple(reasons)))
    return BatchResult(tuple(outcomes))


__all__ = [
    "DEFAULT_PROFILE",
    "LATENCY_FIRST_PROFILE",
    "PROFILES",
    "BatchResult",
    "Profile",
    "nodes_phrase",
    "schedule",
    "schedule_batch",
    "schedule_on",
]
