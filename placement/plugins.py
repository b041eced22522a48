"""Filter and Score plugins, kube-scheduler style, each over every node at once. Pure.

Two extension points only:

* a **Filter** says which nodes may take the instance (``passes`` -> a boolean per node) and, when no
  node is left, why (``explain``: sentences for a person, about the nodes it was the first to reject);
* a **Score** ranks the nodes that passed (``score`` -> a float per node, higher is better). A profile
  multiplies each score by its weight and adds them up.

Scores are in fixed units, not normalised per cycle (kube rescales to 0..100 among the feasible
nodes): a fixed unit keeps "1 point = 1 ms of user latency" comparable across decisions, which the
batch optimiser (``scheduler.schedule_batch``) relies on when it trades one placement against another.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from netmodel.bandwidth import BandwidthRefusal
from netmodel.ids import ServiceName
from netmodel.types import Tier
from placement.callgraph import RequestImpact
from placement.snapshot import TIER_CODE, TIERS, Bools, ClusterSnapshot, Floats, Health, Ints, NearLatency
from placement.types import AffinityTerm, PlacementRequest, Scope

SLO_TOLERANCE_MS = 1e-9
"""Latencies are sums of whole microseconds: exactly-at-the-SLO counts as meeting it."""


@dataclass(slots=True)
class CycleContext:
    """One attempt to place one instance: the snapshot, the request, and what is derived from both once."""

    snapshot: ClusterSnapshot
    request: PlacementRequest
    near: NearLatency | None = None
    memo: dict[str, Bools | Floats] = field(default_factory=dict)
    impact: RequestImpact | None = None
    impact_known: bool = False
    considered: Bools | None = None
    """The nodes every earlier filter let through (set by whoever runs the filters in order): a costly
    filter evaluates only these (the others are rejected already, whatever it says)."""
    bandwidth: dict[int, BandwidthRefusal | None] = field(default_factory=dict)
    """Per node index evaluated so far: why ``BandwidthFits`` refuses it, or None."""


def impact_of(ctx: CycleContext) -> RequestImpact | None:
    """How this instance's node changes users' end-to-end request times (``placement.callgraph``); None
    for a service outside every call graph users reach (one that calls nothing and nobody calls)."""
    if not ctx.impact_known:
        ctx.impact = ctx.snapshot.request_impact(ctx.request.service, ctx.request.constraints.near)
        ctx.impact_known = True
    return ctx.impact


def added_ms(ctx: CycleContext) -> Floats:
    """users x nodes: the part of every user's request time this instance's node decides (memoised)."""
    impact = impact_of(ctx)
    assert impact is not None
    cached = ctx.memo.get("added_ms")
    if cached is None:
        cached = ctx.memo["added_ms"] = impact.added_ms(ctx.snapshot.switch_column)
    return np.asarray(cached, dtype=np.float64)


def involved(ctx: CycleContext) -> bool:
    """Whether the service calls or is called (its latency score is then the request time over the graph)."""
    return (
        ctx.request.service in ctx.snapshot.call_graph_for(ctx.request.service, ctx.request.constraints.near).involved
    )


def request_ms(ctx: CycleContext) -> Floats:
    """users x nodes: every user's whole request time with this instance on each node (memoised)."""
    impact = impact_of(ctx)
    assert impact is not None
    cached = ctx.memo.get("request_ms")
    if cached is None:
        cached = ctx.memo["request_ms"] = impact.base_ms[:, None] + added_ms(ctx)
    return np.asarray(cached, dtype=np.float64)


def request_slo_checks(ctx: CycleContext) -> list[tuple[ServiceName, float, Ints]]:
    """(entry service, its max_request_latency_ms, rows of its users whose requests reach this service)."""
    impact = impact_of(ctx)
    if impact is None:
        return []
    services = ctx.snapshot.state.services
    reached = impact.reached | np.array([entry == ctx.request.service for entry, _ in impact.users], dtype=np.bool_)
    checks = []
    for entry in sorted({entry for entry, _ in impact.users}):
        slo = services[entry].max_request_latency_ms
        rows = np.flatnonzero(reached & np.array([e == entry for e, _ in impact.users], dtype=np.bool_))
        if slo is not None and len(rows):
            checks.append((entry, slo, rows))
    return checks


def make_context(snapshot: ClusterSnapshot, request: PlacementRequest) -> CycleContext:
    near = request.constraints.near
    return CycleContext(snapshot, request, snapshot.near_latency(near) if near else None)


class FilterPlugin(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def checks_capacity(self) -> bool:
        """True for filters whose answer changes as instances are placed on the nodes (capacity)."""
        ...

    def passes(self, ctx: CycleContext) -> Bools: ...

    def explain(self, ctx: CycleContext, failed: Bools, considered: Bools) -> list[str]:
        """Why ``failed`` (the nodes this filter was the first to reject) cannot take the instance.
        ``considered``: the nodes every earlier filter let through."""
        ...


class ScorePlugin(Protocol):
    @property
    def name(self) -> str: ...

    def score(self, ctx: CycleContext) -> Floats: ...


# -- wording -------------------------------------------------------------------------------------------


def nodes_phrase(count: int) -> str:
    return f"{count} node" if count == 1 else f"{count} nodes"


def name_some(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def format_ms(value: float) -> str:
    """Two decimals, but never a non-zero value shown as 0 (an SLO of 0.001 ms prints as 0.001)."""
    return f"{round(value, 2):g}" if value == 0 or abs(value) >= 0.005 else f"{value:.3g}"


def _names(ctx: CycleContext, mask: Bools) -> list[str]:
    ids = ctx.snapshot.node_ids
    return [ids[i] for i in np.flatnonzero(mask)]


# -- filters -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeHealthy:
    """The node is up, its switch is not known down, and some host can reach it."""

    name: str = "NodeHealthy"
    checks_capacity: bool = False

    def passes(self, ctx: CycleContext) -> Bools:
        return ctx.snapshot.healthy

    def explain(self, ctx: CycleContext, failed: Bools, considered: Bools) -> list[str]:
        out = []
        health = ctx.snapshot.health
        for code, what in (
            (Health.NODE_DOWN, "down"),
            (Health.SWITCH_DOWN, "behind a switch that is down"),
            (Health.UNREACHABLE, "unreachable from every host"),
        ):
            names = _names(ctx, failed & (health == code))
            if names:
                out.append(f"{nodes_phrase(len(names))} {what}: {name_some(names)}")
        return out


@dataclass(frozen=True, slots=True)
class TierAllowed:
    """The node's site is in an allowed tier (edge only, cloud only, ...)."""

    name: str = "TierAllowed"
    checks_capacity: bool = False

    def passes(self, ctx: CycleContext) -> Bools:
        tiers = ctx.request.constraints.tiers
        if not tiers:
            return ctx.snapshot.all_nodes
        codes = [TIER_CODE[t] for t in tiers]
        return np.isin(ctx.snapshot.tier_of, codes)

    def explain(self, ctx: CycleContext, failed: Bools, considered: Bools) -> list[str]:
        allowed = " or ".join(t.value for t in TIERS if t in ctx.request.constraints.tiers)
        names = _names(ctx, failed)
        return [f"{nodes_phrase(len(names))} not in tier {allowed}: {name_some(names)}"]


def _term_present(ctx: CycleContext, term: AffinityTerm) -> Bools:
    snapshot = ctx.snapshot
    if term.scope is Scope.NODE:
        return snapshot.instances_of(term.service) > 0
    return snapshot.site_instances_of(term.service) > 0


@dataclass(frozen=True, slots=True)
class ServiceAffinity:
    """Affinity: share the node (or site) with an instance of each named service. Anti-affinity: never."""

    name: str = "ServiceAffinity"
    checks_capacity: bool = False

    def passes(self, ctx: CycleContext) -> Bools:
        constraints = ctx.request.constraints
        ok = ctx.snapshot.all_nodes
        for term in constraints.affinity:
            ok = ok & _term_present(ctx, term)
        for term in constraints.anti_affinity:
            ok = ok & ~_term_present(ctx, term)
        return ok

    def explain(self, ctx: CycleContext, failed: Bools, considered: Bools) -> list[str]:
        out = []
        constraints = ctx.request.constraints
        for term in constraints.affinity:
            count = int((failed & ~_term_present(ctx, term)).sum())
            if count:
                where = f"on the same {term.scope.value}"
                out.append(f"{nodes_phrase(count)} without an instance of {term.service} {where}")
        for term in constraints.anti_affinity:
            count = int((failed & _term_present(ctx, term)).sum())
            if count:
                out.append(
                    f"{nodes_phrase(count)} already with an instance of {term.service} on the same {term.scope.value}"
                    " (anti-affinity)"
                )
        return out


@dataclass(frozen=True, slots=True)
class LatencySlo:
    """From every ``near`` host, the route to the node is within ``max_latency_ms`` (or, with no SLO,
    the node is at least reachable from them)."""

    name: str = "LatencySlo"
    checks_capacity: bool = False

    def passes(self, ctx: CycleContext) -> Bools:
        if ctx.near is None:
            return ctx.snapshot.all_nodes
        slo = ctx.request.constraints.max_latency_ms
        if slo is None:
            return np.isfinite(ctx.near.worst_ms)
        return ctx.near.worst_ms <= slo + SLO_TOLERANCE_MS

    def explain(self, ctx: CycleContext, failed: Bools, considered: Bools) -> list[str]:
        assert ctx.near is not None  # nothing fails without near hosts
        near = ctx.request.constraints.near
        slo = ctx.request.constraints.max_latency_ms
        hosts = f"host {near[0]}" if len(near) == 1 else f"hosts {', '.join(near)}"
        worst = np.where(considered, ctx.near.worst_ms, np.inf)
        best = int(np.argmin(worst))
        if slo is None or not np.isfinite(worst[best]):
            return [f"{nodes_phrase(int(failed.sum()))} unreachable from {hosts}"]
        if bool((failed == considered).all()):  # not one considered node meets the SLO
            limiting = "" if len(near) == 1 else f" (from {near[int(ctx.near.worst_host[best])]})"
            node = ctx.snapshot.node_ids[best]
            return [
                f"no node satisfies max_latency_ms={format_ms(slo)} from {hosts}: "
                f"best is {format_ms(float(worst[best]))} ms{limiting} at {node}"
            ]
        return [f"{nodes_phrase(int(failed.sum()))} beyond max_latency_ms={format_ms(slo)} from {hosts}"]


def request_slo_limits(ctx: CycleContext, slo: float, rows: Ints) -> Floats:
    """Per user row: the request time a node must keep. The SLO, unless the layout breaks it for that
    user already and no node can bring it back: then the best any node gives (a failover must put the
    instance somewhere; where the rest of the chain breaks the SLO, this instance cannot keep it)."""
    impact = impact_of(ctx)
    assert impact is not None
    now = impact.existing_ms()[rows]
    times = request_ms(ctx)[rows]
    best = np.where(ctx.snapshot.healthy[None, :], times, np.inf).min(axis=1, initial=np.inf)
    limits: Floats = np.where(now > slo + SLO_TOLERANCE_MS, np.maximum(slo, best), slo)
    return limits


@dataclass(frozen=True, slots=True)
class RequestSlo:
    """Every entry service's end-to-end SLO (``max_request_latency_ms``) holds for each of its users whose
    requests reach this service, with this instance on the node (``placement.callgraph``); for a user the
    layout already breaks it for, no worse than the best node (``request_slo_limits``)."""

    name: str = "RequestSlo"
    checks_capacity: bool = False

    def passes(self, ctx: CycleContext) -> Bools:
        ok = ctx.snapshot.all_nodes
        for _entry, slo, rows in request_slo_checks(ctx):
            limits = request_slo_limits(ctx, slo, rows)
            ok = ok & (request_ms(ctx)[rows] <= limits[:, None] + SLO_TOLERANCE_MS).all(axis=0)
        return ok

    def explain(self, ctx: CycleContext, failed: Bools, considered: Bools) -> list[str]:
        out = []
        impact = impact_of(ctx)
        assert impact is not None  # nothing fails without a call graph
        for entry, slo, rows in request_slo_checks(ctx):
            times = request_ms(ctx)[rows]
            limits = request_slo_limits(ctx, slo, rows)
            broken = failed & ~(times <= limits[:, None] + SLO_TOLERANCE_MS).all(axis=0)
            if not broken.any():
                continue
            worst = np.where(considered, times.max(axis=0), np.inf)
            best = int(np.argmin(worst))
            if bool((broken == considered).all()) and np.isfinite(worst[best]):
                user = impact.users[int(rows[int(np.argmax(times[:, best]))])][1]
                out.append(
                    f"no node keeps {entry}'s end-to-end max_request_latency_ms={format_ms(slo)}: best is "
                    f"{format_ms(float(worst[best]))} ms (from {user}) at {ctx.snapshot.node_ids[best]}"
                )
            else:
                out.append(
                    f"{nodes_phrase(int(broken.sum()))} would break {entry}'s end-to-end "
                    f"max_request_latency_ms={format_ms(slo)}"
                )
        return out


@dataclass(frozen=True, slots=True)
class ResourcesFit:
    """cpu_millis and memory_mib fit in what the node has left after the instances placed on it."""

    name: str = "ResourcesFit"
    checks_capacity: bool = True

    def passes(self, ctx: CycleContext) -> Bools:
        s, need = ctx.snapshot, ctx.request.resources
        fits: Bools = (s.used_cpu + need.cpu_millis <= s.capacity_cpu) & (
            s.used_memory + need.memory_mib <= s.capacity_memory
        )
        return fits

    def explain(self, ctx: CycleContext, failed: Bools, considered: Bools) -> list[str]:
        s, need = ctx.snapshot, ctx.request.resources
        out = []
        for what, used, capacity, wanted, unit in (
            ("cpu", s.used_cpu, s.capacity_cpu, need.cpu_millis, "m"),
            ("memory", s.used_memory, s.capacity_memory, need.memory_mib, " MiB"),
        ):
            short = failed & (used + wanted > capacity)
            if short.any():
                free = np.where(considered, capacity - used, np.iinfo(np.int64).min)
                most = int(np.argmax(free))
                out.append(
                    f"Insufficient {what} on {nodes_phrase(int(short.sum()))} (needs {wanted}{unit}; "
                    f"most free: {int(free[most])}{unit} at {s.node_ids[most]})"
                )
        return out


def reserves_bandwidth(ctx: CycleContext) -> bool:
    """Whether placing this instance can change any bandwidth reservation: it reserves some itself (its
    own value or its service's, with users ``near`` it), its service calls with a bandwidth, or some call
    with one reaches it."""
    services = ctx.snapshot.state.services
    service = services.get(ctx.request.service)
    own = ctx.request.bandwidth_mbps
    if own is None and service is not None:
        own = service.bandwidth_mbps
    if (own and ctx.request.constraints.near) or (service is not None and service.call_bandwidth):
        return True
    return any(callee == ctx.request.service for s in services.values() for callee, _ in s.call_bandwidth)


def bandwidth_refusals(ctx: CycleContext, nodes: Bools) -> dict[int, BandwidthRefusal | None]:
    """For each of ``nodes``: why placing the instance there could not be admitted (``netmodel.bandwidth``:
    one of its demands, or one reserved before, would be left without a path with room), or None
    (``ClusterSnapshot.bandwidth_admission``; memoised per cycle)."""
    known = ctx.bandwidth
    for i in np.flatnonzero(nodes).tolist():
        if i not in known:
            known[i] = ctx.snapshot.bandwidth_admission(ctx.request, i)
    return known


@dataclass(frozen=True, slots=True)
class BandwidthFits:
    """The instance's bandwidth reservations (and every one made before) have a path with room, with it
    on the node (``netmodel.bandwidth.admission``). Skipped for an instance that reserves nothing."""

    name: str = "BandwidthFits"
    checks_capacity: bool = True

    def passes(self, ctx: CycleContext) -> Bools:
        if not reserves_bandwidth(ctx):
            return ctx.snapshot.all_nodes
        considered = ctx.considered if ctx.considered is not None else ctx.snapshot.all_nodes
        ok = np.ones(len(ctx.snapshot), dtype=np.bool_)
        for i, refusal in bandwidth_refusals(ctx, considered).items():
            ok[i] = refusal is None
        return ok

    def explain(self, ctx: CycleContext, failed: Bools, considered: Bools) -> list[str]:
        by_reason: dict[str, list[str]] = {}
        for i, refusal in bandwidth_refusals(ctx, failed).items():
            if failed[i] and refusal is not None:
                by_reason.setdefault(refusal.message, []).append(ctx.snapshot.node_ids[i])
        return [
            f"{nodes_phrase(len(names))} without the bandwidth ({name_some(names)}): {reason}"
            for reason, names in by_reason.items()
        ]


# -- scores ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LatencyScore:
    """1 point per ms of user latency saved. For a service in a call graph users reach: minus the mean,
    over the users whose requests reach it, of the request time spent calling it and below it (round
    trips down the tree, ``placement.callgraph``). Otherwise: minus the mean one-way latency from the
    request's ``near`` hosts."""

    name: str = "LatencyScore"

    def score(self, ctx: CycleContext) -> Floats:
        impact = impact_of(ctx) if involved(ctx) else None
        if impact is not None:
            cached = ctx.memo.get(self.name)
            if cached is None:
                added = added_ms(ctx)[impact.reached]
                mean = added.mean(axis=0) if len(added) else np.zeros(len(ctx.snapshot))
                cached = ctx.memo[self.name] = np.where(np.isfinite(mean), -mean, -1e9)
            return np.asarray(cached, dtype=np.float64)
        if ctx.near is None:
            return np.zeros(len(ctx.snapshot))
        cached = ctx.memo.get(self.name)
        if cached is None:
            cached = ctx.memo[self.name] = np.where(np.isfinite(ctx.near.mean_ms), -ctx.near.mean_ms, -1e9)
        return np.asarray(cached, dtype=np.float64)


DEFAULT_TIER_SCARCITY: Mapping[Tier, float] = {Tier.EDGE: 1.0, Tier.METRO: 0.3, Tier.CLOUD: 0.0}


@dataclass(frozen=True, slots=True)
class CostScore:
    """Minus the scarcity of the node's tier: edge capacity is scarce, keep it for what needs it."""

    scarcity: Mapping[Tier, float] = field(default_factory=lambda: dict(DEFAULT_TIER_SCARCITY))
    name: str = "CostScore"

    def score(self, ctx: CycleContext) -> Floats:
        table = np.array([*(-self.scarcity.get(t, 0.0) for t in TIERS), 0.0])  # last: unknown tier (-1)
        return np.asarray(table[ctx.snapshot.tier_of], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class BalanceScore:
    """Prefer nodes left less loaded, with cpu and memory used in proportion (kube's LeastAllocated
    plus BalancedAllocation): minus (mean utilisation after + |cpu - memory utilisation|), 0..2."""

    name: str = "BalanceScore"

    def score(self, ctx: CycleContext) -> Floats:
        s, need = ctx.snapshot, ctx.request.resources
        cpu = _fraction(s.used_cpu + need.cpu_millis, s.capacity_cpu)
        memory = _fraction(s.used_memory + need.memory_mib, s.capacity_memory)
        result: Floats = -(0.5 * (cpu + memory) + np.abs(cpu - memory))
        return result


def _fraction(used: Iterable[int] | np.ndarray, capacity: np.ndarray) -> Floats:
    used_arr = np.asarray(used, dtype=np.float64)
    out = np.ones(len(capacity))
    np.divide(used_arr, capacity, out=out, where=capacity > 0)
    return np.minimum(out, 1.0)


SPREAD_TAIL = 0.005
"""Past the spread goal, each further instance on a node (site) costs only this fraction of the weight."""


def _spread(ctx: CycleContext, counts: Floats) -> Floats:
    """Minus (whether the node or site already runs the service, while the service has fewer instances
    than its spread goal) minus a small tail per instance. The goal is the replica count the service
    declares (or the request asks for, if more): those replicas are for availability and must not
    share a node; instances beyond it are capacity, and then the tier cost decides, not the spread."""
    request = ctx.request
    declared = ctx.snapshot.state.services.get(request.service)
    goal = max(declared.replicas if declared is not None else 1, request.replicas)
    placed = int(ctx.snapshot.instances_of(request.service).sum())
    occupied = np.minimum(counts, 1.0) if placed < goal else np.zeros(len(counts))
    result: Floats = -(occupied + SPREAD_TAIL * counts)
    return result


@dataclass(frozen=True, slots=True)
class NodeSpread:
    """Replicas on different nodes (see ``_spread``)."""

    name: str = "NodeSpread"

    def score(self, ctx: CycleContext) -> Floats:
        return _spread(ctx, ctx.snapshot.instances_of(ctx.request.service).astype(np.float64))


@dataclass(frozen=True, slots=True)
class SiteSpread:
    """Replicas on different sites (see ``_spread``)."""

    name: str = "SiteSpread"

    def score(self, ctx: CycleContext) -> Floats:
        return _spread(ctx, ctx.snapshot.site_instances_of(ctx.request.service).astype(np.float64))
