"""Declared replicas: what placement must do so each service runs the instances the desired state asks for.

Pure. ``plan_replicas`` is used twice: by ``edgectl diff`` on a hypothetical state (nothing applied)
and by the replica reconciler on the live model (which then places, drains and moves through the
orchestrator, make-before-break). Only ``declared`` workloads count: instances placed by a Place call
are the operator's own and are never drained to meet a count.

Cost: one pass over the workloads (grouping the declared ones by service); a ``ClusterSnapshot`` and
the scheduler run only when some service has a shortfall, an excess or an SLO breaker, and then once
per missing instance or move, never per workload x node.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from netmodel.ids import HostId, NodeId, ServiceName, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Service, Workload
from placement.callgraph import build_call_graph, busiest_first
from placement.latency import LatencyCache
from placement.naming import workload_number
from placement.plugins import SLO_TOLERANCE_MS, format_ms
from placement.scheduler import DEFAULT_PROFILE, Profile, schedule_on
from placement.snapshot import ClusterSnapshot, Floats, Health
from placement.types import Decision, PlacementRequest, declared_constraints


@dataclass(frozen=True, slots=True)
class PlannedPlacement:
    """A new declared instance of ``service`` would go to ``node`` (None: it fits nowhere; ``reason`` says why,
    ``reasons`` are the scheduler's, one per filter, as a Place call's refusal lists them)."""

    service: ServiceName
    node: NodeId | None
    reason: str
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PlannedEviction:
    workload: WorkloadId
    service: ServiceName
    node: NodeId | None
    reason: str


@dataclass(frozen=True, slots=True)
class PlannedMove:
    """A placed instance would move (make-before-break) from ``from_node`` to ``to_node`` (None: nowhere fits)."""

    workload: WorkloadId
    service: ServiceName
    from_node: NodeId | None
    to_node: NodeId | None
    reason: str
    reasons: tuple[str, ...] = ()
    """When ``to_node`` is None: the scheduler's reasons."""


@dataclass(frozen=True, slots=True)
class ReplicaPlan:
    placed: tuple[PlannedPlacement, ...] = ()
    evicted: tuple[PlannedEviction, ...] = ()
    moved: tuple[PlannedMove, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.placed or self.evicted or self.moved)

    @property
    def unplaceable(self) -> tuple[PlannedPlacement, ...]:
        """The missing instances that fit nowhere as things stand."""
        return tuple(p for p in self.placed if p.node is None)


def declared_instances(state: FabricState) -> dict[ServiceName, list[Workload]]:
    """Per service, its declared instances (placed for its ``replicas``), sorted by id."""
    out: dict[ServiceName, list[Workload]] = {}
    for workload in state.workloads.values():
        if workload.declared:
            out.setdefault(workload.service, []).append(workload)
    for instances in out.values():
        instances.sort(key=lambda w: w.id)
    return out


def plan_replicas(
    state: FabricState,
    *,
    previous: FabricState | None = None,
    profile: Profile = DEFAULT_PROFILE,
    latency_cache: LatencyCache | None = None,
    busy: Collection[WorkloadId] = (),
) -> ReplicaPlan:
    """What placement would do on ``state`` so every service has its declared replicas.

    * **Shortfall** (fewer declared instances than ``replicas``): the missing ones are scheduled as one
      request with ``replicas`` = the shortfall (as a Place call would: consecutive ones see each other
      and spread), with the service's declared resources and SLO. If they do not all fit, as many as fit
      are planned (one at a time on the same snapshot) and the rest get ``node=None`` with the
      scheduler's reasons.
    * **Excess**: the extras are drained, one by one, each time the instance whose removal hurts least:
      first instances reported unhealthy, then those on a node that cannot take work (down, cut off),
      then those breaking the service's SLO, then the one sharing its node with most instances of the
      service, then its site, then the one furthest from the service's ``near`` hosts, then the newest
      (highest id). So what stays is healthy, spread over nodes and sites, and close to its users.
    * **Moves**: with ``previous`` (the state before a desired-state change), a declared instance whose node
      met its service's SLO there and breaks the service's declaration in ``state`` moves to where the
      scheduler would place it (``to_node=None`` with reasons if nowhere). Only when the service's
      declaration (``max_latency_ms`` or ``near``) changed: measurements alone never move anything.

    ``busy``: instances in a migration or failover now; their services are left alone until it ends
    (the old and the new instance both exist meanwhile: counting them would drain one). Services are
    planned in name order on one snapshot, so later ones see the earlier ones' placements.
    """
    cache = latency_cache if latency_cache is not None else LatencyCache()
    instances = declared_instances(state)
    busy_services = {state.workloads[w].service for w in busy if w in state.workloads}
    changed = _declaration_changed(previous, state) if previous is not None else set()
    snapshot: ClusterSnapshot | None = None
    placed: list[PlannedPlacement] = []
    evicted: list[PlannedEviction] = []
    moved: list[PlannedMove] = []
    for name in placement_order(state.services):
        if name in busy_services:
            continue
        service = state.services[name]
        mine = instances.get(name, [])
        breakers = _breakers(state, previous, service, mine, cache) if name in changed else []
        if len(mine) == service.replicas and not breakers:
            continue
        if snapshot is None:
            snapshot = ClusterSnapshot(state, cache)
        if len(mine) > service.replicas:
            extras = _extras(snapshot, service, mine, {w.id for w in breakers}, len(mine) - service.replicas)
            evicted += extras
            gone = {e.workload for e in extras}
            breakers = [w for w in breakers if w.id not in gone]
        moved += [_move(snapshot, service, workload, profile) for workload in breakers]
        if len(mine) < service.replicas:
            placed += _shortfall(snapshot, service, service.replicas - len(mine), profile)
    return ReplicaPlan(tuple(placed), tuple(evicted), tuple(moved))


def placement_order(services: Mapping[ServiceName, Service]) -> list[ServiceName]:
    """Callers before the services they call, the busiest first among those ready (``callgraph.busiest_first``),
    then the rest by name: a service's request times count only the callers already placed, so a tree is
    placed from the top (its callees then go where their callers are, not where there is merely room), and
    the services called most per user request get the room near users first."""
    graph_order = busiest_first(build_call_graph(services))
    return graph_order + sorted(set(services) - set(graph_order))


# -- shortfall ----------------------------------------------------------------------------------------------


def replica_request(service: Service, replicas: int = 1) -> PlacementRequest:
    """What a declared instance of ``service`` asks of the scheduler."""
    return PlacementRequest(service.name, service.resources, declared_constraints(service), replicas=replicas)


def _shortfall(snapshot: ClusterSnapshot, service: Service, missing: int, profile: Profile) -> list[PlannedPlacement]:
    why = f"{service.name} declares {service.replicas} replicas"
    outcome = schedule_on(snapshot, replica_request(service, missing), profile)
    if isinstance(outcome, Decision):
        return [PlannedPlacement(service.name, a.node, f"{why}: placed on {a.node}") for a in outcome.assignments]
    # Not all fit: place what does, one at a time (same spread goal: the service's declared count).
    out: list[PlannedPlacement] = []
    for left in range(missing, 0, -1):
        one = schedule_on(snapshot, replica_request(service), profile)
        if isinstance(one, Decision):
            (a,) = one.assignments
            out.append(PlannedPlacement(service.name, a.node, f"{why}: placed on {a.node}"))
            continue
        reason = f"{why}, {left} cannot be placed: {one.message}"
        out += [PlannedPlacement(service.name, None, reason, one.reasons)] * left
        break
    return out


# -- excess -------------------------------------------------------------------------------------------------


def _extras(
    snapshot: ClusterSnapshot, service: Service, mine: list[Workload], breaking: set[WorkloadId], count: int
) -> list[PlannedEviction]:
    near = service.near
    worst = snapshot.near_latency(near).worst_ms if near else None
    left = list(mine)
    out = []
    for _ in range(count):
        on_node: dict[NodeId | None, int] = {}
        on_site: dict[object, int] = {}
        for w in left:
            on_node[w.node] = on_node.get(w.node, 0) + 1
            site = _site(snapshot, w)
            on_site[site] = on_site.get(site, 0) + 1
        keys = {w.id: _drain_key(snapshot, service, w, breaking, on_node, on_site, worst) for w in left}
        victim = max(left, key=lambda w: (keys[w.id], w.id))
        left.remove(victim)
        i = snapshot.index.get(victim.node) if victim.node is not None else None
        if i is not None:
            snapshot.forget(victim.service, victim.resources, i)  # later services see the room it frees
        out.append(
            PlannedEviction(
                victim.id,
                service.name,
                victim.node,
                f"{service.name} declares {service.replicas} replicas, {len(mine)} are placed: "
                f"{victim.id} drained ({_why_this_one(snapshot, victim, breaking)})",
            )
        )
    return out


def _drain_key(
    snapshot: ClusterSnapshot,
    service: Service,
    w: Workload,
    breaking: set[WorkloadId],
    on_node: dict[NodeId | None, int],
    on_site: dict[object, int],
    worst: Floats | None,
) -> tuple[bool, bool, bool, int, int, float, int]:
    """Larger: drained first (see ``plan_replicas``)."""
    i = snapshot.index.get(w.node) if w.node is not None else None
    node_bad = i is None or Health(int(snapshot.health[i])) is not Health.OK
    latency = float(worst[i]) if worst is not None and i is not None else 0.0
    return (
        w.id in snapshot.state.unhealthy,
        node_bad,
        w.id in breaking,
        on_node[w.node],
        on_site[_site(snapshot, w)],
        latency if math.isfinite(latency) else math.inf,
        workload_number(service.name, w.id) or 0,
    )


def _site(snapshot: ClusterSnapshot, workload: Workload) -> object:
    node = snapshot.state.nodes.get(workload.node) if workload.node is not None else None
    return node.site if node is not None else None


def _why_this_one(snapshot: ClusterSnapshot, workload: Workload, breaking: set[WorkloadId]) -> str:
    unhealthy = snapshot.state.unhealthy.get(workload.id)
    if unhealthy is not None:
        return f"unhealthy: {unhealthy}"
    i = snapshot.index.get(workload.node) if workload.node is not None else None
    if i is None or Health(int(snapshot.health[i])) is not Health.OK:
        return f"its node {workload.node} cannot take work"
    if workload.id in breaking:
        return "it breaks the service's SLO"
    return "the one whose removal keeps the best spread and latency"


# -- moves --------------------------------------------------------------------------------------------------


def _declaration_changed(previous: FabricState, state: FabricState) -> set[ServiceName]:
    """Services whose SLO or users the new declaration changed (measurements are not declarations)."""
    out = set()
    for name, service in state.services.items():
        before = previous.services.get(name)
        if before is not None and (before.max_latency_ms, before.near) != (service.max_latency_ms, service.near):
            out.add(name)
    return out


def worst_latency_ms(state: FabricState, near: Iterable[HostId], node: NodeId | None, cache: LatencyCache) -> float:
    """The largest route latency from ``near`` hosts to ``node`` (inf: one cannot reach it; 0 with no hosts)."""
    found = state.nodes.get(node) if node is not None else None
    if found is None:
        return math.inf
    latencies = cache.of(state.topology)
    worst = 0.0
    for host_id in near:
        host = state.hosts.get(host_id)
        if host is None or host.attachment is None:
            return math.inf
        worst = max(worst, latencies.between_us(host.attachment.switch, found.attachment.switch) / 1000.0)
    return worst


def meets_slo(state: FabricState, service: Service, node: NodeId | None, cache: LatencyCache) -> bool:
    """Whether an instance on ``node`` meets ``service``'s declaration (the LatencySlo filter's rule)."""
    if not service.near:
        return True
    worst = worst_latency_ms(state, service.near, node, cache)
    if service.max_latency_ms is None:
        return math.isfinite(worst)
    return worst <= service.max_latency_ms + SLO_TOLERANCE_MS


def _breakers(
    state: FabricState, previous: FabricState | None, service: Service, mine: list[Workload], cache: LatencyCache
) -> list[Workload]:
    if previous is None:
        return []
    before = previous.services.get(service.name)
    if before is None:
        return []
    out = []
    for workload in mine:
        # Judged on its node as ``previous`` saw it (also an instance placed since: a reconciler's baseline
        # may predate its own placements).
        if meets_slo(previous, before, workload.node, cache) and not meets_slo(state, service, workload.node, cache):
            out.append(workload)
    return out


def _move(snapshot: ClusterSnapshot, service: Service, workload: Workload, profile: Profile) -> PlannedMove:
    i = snapshot.index.get(workload.node) if workload.node is not None else None
    if i is not None:  # it is leaving: its replacement must not avoid it as a neighbour
        snapshot.forget(workload.service, workload.resources, i)
    slo = f"max_latency_ms={format_ms(service.max_latency_ms)}" if service.max_latency_ms is not None else "reachable"
    hosts = ", ".join(service.near)
    why = f"{workload.id} on {workload.node} no longer meets {slo} from {hosts}"
    avoid = frozenset({workload.node}) if workload.node is not None else frozenset()
    request = PlacementRequest(
        service.name,
        workload.resources,
        declared_constraints(service),
        avoid=avoid,
        bandwidth_mbps=workload.bandwidth_mbps,
    )
    outcome = schedule_on(snapshot, request, profile)
    if i is not None:  # make-before-break: the old instance holds its room until the new one serves
        snapshot.assume(workload.service, workload.resources, i)
    if isinstance(outcome, Decision):
        (a,) = outcome.assignments
        return PlannedMove(workload.id, service.name, workload.node, a.node, f"{why}: moved to {a.node}")
    return PlannedMove(
        workload.id, service.name, workload.node, None, f"{why}, and cannot move: {outcome.message}", outcome.reasons
    )
