"""Bandwidth reservations: who reserves what on which links, and whether one more fits. Pure.

A service declares ``bandwidth_mbps`` per instance (each direction, between each of its ``near`` hosts and
the instance) and, per declared call, ``bandwidth_mbps`` between each caller instance and the callee
instance nearest to it; ``Workload.bandwidth_mbps`` overrides the service's value for one instance.
Each of these is a ``Demand``: one direction, one pair of endpoints, one TCP port.

``plan_reservations`` routes the demands greedily in placement order (older workloads first): each takes
the lowest-latency path on which every link still has room (the latency-shortest path when it fits, which
is the common case and costs a walk along it), so a link is never over-committed: a demand that fits
nowhere is ``Unreserved``, with the link that stopped it. Placement order makes the plan stable: a new
workload is routed after every existing one, so admitting it cannot move anyone else's path, and the plan
of the state with it is the previous plan plus its own demands (``previous`` makes that incremental). The
exception is a demand that merges with an earlier one (callers on one node calling one instance: the same
addresses and port): the merged demand keeps the earlier one's place, and what follows it is routed again.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
from scipy.sparse.csgraph import dijkstra

from netmodel.graph import arc_matrix
from netmodel.ids import NodeId, PortNo, ServiceName, SwitchId, WorkloadId
from netmodel.state import FabricState
from netmodel.topology import Topology
from netmodel.types import Attachment, LinkId, Workload

_SERIALS = itertools.count()  # plans name the plan they extend by number: no chain of old plans kept alive
EPSILON_MBPS = 1e-9  # reservations are sums of declared decimals: exactly full counts as fitting
TO_INSTANCE, FROM_INSTANCE = 0, 1


@dataclass(frozen=True, slots=True)
class Demand:
    """One direction of reserved traffic: ``src`` -> ``dst`` (endpoint names), TCP to or from ``port``.

    Demands with the same match (two callers on one node calling one instance) are one demand of the
    summed rate: a switch can only meter what it can tell apart. ``owners`` are the workloads it serves.
    """

    key: str
    owners: tuple[WorkloadId, ...]
    src: str
    dst: str
    src_ip: str
    dst_ip: str
    l4: tuple[str, int]  # ("tcp_dst", port): toward the instance; ("tcp_src", port): from it
    mbps: float
    order: tuple[int, int, str]  # greedy order: (position of the first owner in placement order, direction, peer)
    src_at: Attachment | None = None  # where the ends plug in: a host that moves is a changed demand
    dst_at: Attachment | None = None

    @property
    def owner(self) -> WorkloadId:
        return self.owners[0]


@dataclass(frozen=True, slots=True)
class Reservation:
    demand: Demand
    switches: tuple[SwitchId, ...]  # where src attaches .. where dst attaches
    links: tuple[LinkId, ...]  # empty when both ends share a switch: nothing to reserve
    out_port: PortNo  # the last switch's port toward dst
    latency_us: int


@dataclass(frozen=True, slots=True)
class Unreserved:
    demand: Demand
    reason: str
    link: LinkId | None = None  # the first link of its latency-shortest path without room, if any


Outcome = Reservation | Unreserved


@dataclass(frozen=True, slots=True)
class BandwidthRefusal:
    """Why a change cannot be admitted: the first demand it would leave without a reservation."""

    demand: Demand
    link: LinkId | None
    message: str


@dataclass(frozen=True, eq=False)
class ReservationPlan:
    """Every demand's outcome in greedy order, and what stays reserved per link direction."""

    generation: int
    outcomes: tuple[Outcome, ...]
    capacity_mbps: Mapping[LinkId, float]
    _graph: _Graph | None = field(default=None, repr=False)
    _reserved: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)  # per graph link
    _basis: FabricState | None = field(default=None, repr=False)  # the state planned (to see what was appended)
    _serial: int = field(default_factory=lambda: next(_SERIALS), repr=False)
    _base: int = field(default=-1, repr=False)  # the serial of the plan whose first _kept outcomes these are
    _kept: int = field(default=0, repr=False)

    @cached_property
    def reservations(self) -> tuple[Reservation, ...]:
        return tuple(o for o in self.outcomes if isinstance(o, Reservation))

    @cached_property
    def unreserved(self) -> tuple[Unreserved, ...]:
        return tuple(o for o in self.outcomes if isinstance(o, Unreserved))

    def links(self) -> dict[LinkId, float]:
        """Reserved Mbit/s per link direction, for links with anything reserved."""
        if self._graph is None:
            return {}
        return {self._graph.links[i]: float(self._reserved[i]) for i in np.flatnonzero(self._reserved > 0).tolist()}

    def reserved_mbps(self, link: LinkId) -> float:
        if self._graph is None:
            return 0.0
        i = self._graph.position.get(link)
        return 0.0 if i is None else float(self._reserved[i])

    def residual_mbps(self, link: LinkId) -> float:
        return max(0.0, self.capacity_mbps.get(link, 0.0) - self.reserved_mbps(link))

    def of_owner(self, owner: WorkloadId) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if owner in o.demand.owners)


EMPTY_PLAN = ReservationPlan(-1, (), {})


def link_label(state: FabricState, link: LinkId) -> str:
    """``ea1:2->m1:1``: switch names and ports, as an operator reads them."""
    switches = state.topology.switches

    def name(dpid: SwitchId) -> str:
        switch = switches.get(dpid)
        return switch.name if switch is not None and switch.name else f"{dpid:#x}"

    return f"{name(link.src)}:{link.src_port}->{name(link.dst)}:{link.dst_port}"


def bandwidth_of(state: FabricState, workload: Workload) -> float:
    """What one instance reserves each way with each near host: its own value, else its service's."""
    if workload.bandwidth_mbps is not None:
        return workload.bandwidth_mbps
    service = state.services.get(workload.service)
    return 0.0 if service is None or service.bandwidth_mbps is None else service.bandwidth_mbps


def reserves_anything(state: FabricState) -> bool:
    """Whether any service or instance could reserve bandwidth (most fabrics: none, and nothing to do)."""
    return any(s.bandwidth_mbps or s.call_bandwidth for s in state.services.values()) or any(
        w.bandwidth_mbps for w in state.workloads.values()
    )


def _endpoints(state: FabricState) -> dict[str, tuple[str, Attachment]]:
    out: dict[str, tuple[str, Attachment]] = {}
    switches = state.topology.switches
    for host in state.hosts.values():
        if host.ip and host.attachment is not None and host.attachment.switch in switches:
            out[host.id] = (host.ip, host.attachment)
    for node in state.nodes.values():
        if node.ip and node.attachment.switch in switches:
            out[node.id] = (node.ip, node.attachment)
    return out


def demands_of(state: FabricState, graph: _Graph | None = None) -> tuple[Demand, ...]:
    """Every placed instance's demands, merged by match, in greedy order."""
    if not reserves_anything(state):
        return ()
    graph = graph if graph is not None else graph_of(state.topology)
    placed = [(i, w) for i, w in enumerate(state.workloads.values()) if w.node is not None]
    merged = _demands(state, graph, _endpoints(state), placed, placed)
    return tuple(sorted(merged.values(), key=lambda d: (d.order, d.key)))


def _demands(
    state: FabricState,
    graph: _Graph,
    endpoints: Mapping[str, tuple[str, Attachment]],
    placed: Sequence[tuple[int, Workload]],
    owners: Sequence[tuple[int, Workload]],
) -> dict[tuple[str, str, tuple[str, int]], Demand]:
    """The demands of ``owners`` (positions in placement order, and workloads), merged by match;
    ``placed`` are every placed instance (the callees a call may go to)."""
    merged: dict[tuple[str, str, tuple[str, int]], Demand] = {}

    def add(
        owner: WorkloadId,
        position: int,
        direction: int,
        peer: str,
        src: str,
        dst: str,
        port_field: str,
        port: int,
        mbps: float,
    ) -> None:
        a, b = endpoints.get(src), endpoints.get(dst)
        if a is None or b is None or mbps <= 0:
            return
        match = (a[0], b[0], (port_field, port))
        known = merged.get(match)
        if known is None:
            key = f"{a[0]}>{b[0]} {port_field}={port}"
            merged[match] = Demand(
                key, (owner,), src, dst, a[0], b[0], (port_field, port), mbps, (position, direction, peer), a[1], b[1]
            )
        elif owner not in known.owners:
            merged[match] = Demand(
                known.key,
                (*known.owners, owner),
                known.src,
                known.dst,
                known.src_ip,
                known.dst_ip,
                known.l4,
                known.mbps + mbps,
                known.order,
                known.src_at,
                known.dst_at,
            )

    by_service: dict[ServiceName, list[tuple[int, Workload]]] = {}
    if any(s.call_bandwidth for s in state.services.values()):
        for i, w in placed:
            by_service.setdefault(w.service, []).append((i, w))
    down = {n.id for n in state.nodes.values() if not n.up}
    for position, workload in owners:
        assert workload.node is not None
        if workload.node in down:
            continue  # it carries nothing, and its replacement must not wait on its room (failover)
        service = state.services.get(workload.service)
        port = workload.port or (service.port if service is not None else 0)
        mbps = bandwidth_of(state, workload)
        if mbps > 0 and port:
            near = workload.constraints.near if workload.constraints is not None else (service.near if service else ())
            for host in sorted(near):
                add(workload.id, position, TO_INSTANCE, host, host, workload.node, "tcp_dst", port, mbps)
                add(workload.id, position, FROM_INSTANCE, host, workload.node, host, "tcp_src", port, mbps)
        for callee, call_mbps in service.call_bandwidth if service is not None else ():
            target = _nearest(graph, endpoints, workload.node, by_service.get(callee, ()))
            if target is None or call_mbps <= 0:
                continue
            callee_port = target.port or state.services[callee].port
            assert target.node is not None
            peer = f"call {target.id}"
            add(workload.id, position, TO_INSTANCE, peer, workload.node, target.node, "tcp_dst", callee_port, call_mbps)
            add(
                workload.id,
                position,
                FROM_INSTANCE,
                peer,
                target.node,
                workload.node,
                "tcp_src",
                callee_port,
                call_mbps,
            )
    return merged


def _appended(before: FabricState, after: FabricState) -> list[tuple[int, Workload]] | None:
    """The instances ``after`` places beyond ``before`` when that is all that changed for reservations
    (same services, hosts and nodes; every earlier workload the same object, in the same order; no call
    reserves bandwidth, since a new callee can change whom an earlier caller reserves toward); else None."""
    if (
        before.services is not after.services
        or before.hosts is not after.hosts
        or before.nodes is not after.nodes
        or len(after.workloads) < len(before.workloads)
        or any(s.call_bandwidth for s in after.services.values())
    ):
        return None
    new = iter(after.workloads.values())
    for old in before.workloads.values():
        if next(new) is not old:
            return None
    start = len(before.workloads)
    return [(start + i, w) for i, w in enumerate(new) if w.node is not None]


def _nearest(
    graph: _Graph,
    endpoints: Mapping[str, tuple[str, Attachment]],
    node: NodeId,
    instances: Sequence[tuple[int, Workload]],
) -> Workload | None:
    """The callee instance a caller on ``node`` uses first: lowest route latency, ties by workload id."""
    here = endpoints.get(node)
    if here is None:
        return None
    best: tuple[float, str] | None = None
    chosen = None
    for _, w in instances:
        there = endpoints.get(w.node) if w.node is not None else None
        if there is None:
            continue
        rank = (graph.distance(here[1].switch, there[1].switch), w.id)
        if best is None or rank < best:
            best, chosen = rank, w
    return chosen if best is not None and np.isfinite(best[0]) else None


class _Graph:
    """The usable links of one topology as arrays, with latency-shortest trees computed per source on demand.

    Weights follow routing's rule (latency * (n + 1) + 1: latency first, then fewer hops), so a reserved
    path is the route's own path whenever that path has room.
    """

    def __init__(self, topology: Topology) -> None:
        self.links_map = topology.links
        self.switches = tuple(sorted(topology.switches))
        self.index = {dpid: i for i, dpid in enumerate(self.switches)}
        usable = [
            link
            for link, attrs in topology.links.items()
            if attrs.up and link.src in self.index and link.dst in self.index
        ]
        self.links = tuple(sorted(usable))
        self.position = {link: i for i, link in enumerate(self.links)}
        n = len(self.switches)
        self.scale = n + 1
        self.src = np.array([self.index[link.src] for link in self.links], dtype=np.int64)
        self.dst = np.array([self.index[link.dst] for link in self.links], dtype=np.int64)
        self.latency = np.array([topology.links[link].latency_us for link in self.links], dtype=np.float64)
        self.weight = self.latency * self.scale + 1.0
        self.capacity = np.array([topology.links[link].capacity_mbps for link in self.links], dtype=np.float64)
        # Parallel links u->v, lightest first: a path over (u, v) takes the lightest one with room.
        self.arcs: dict[tuple[int, int], list[int]] = {}
        for i in np.argsort(self.weight, kind="stable").tolist():
            self.arcs.setdefault((int(self.src[i]), int(self.dst[i])), []).append(i)
        self._matrix: Any = None
        self._trees: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._routing_inputs = {
            link: (topology.links[link].latency_us, topology.links[link].capacity_mbps) for link in self.links
        }

    def serves(self, topology: Topology) -> bool:
        """Whether ``topology`` has the same switches and the same usable links, latencies and capacities."""
        if len(topology.switches) != len(self.switches) or any(s not in self.index for s in topology.switches):
            return False
        inputs = self._routing_inputs
        usable = 0
        for link, attrs in topology.links.items():
            if attrs.up and link.src in self.index and link.dst in self.index:
                if inputs.get(link) != (attrs.latency_us, attrs.capacity_mbps):
                    return False
                usable += 1
        return usable == len(inputs)

    def _tree(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        tree = self._trees.get(s)
        if tree is None:
            if self._matrix is None:
                self._matrix = arc_matrix(len(self.switches), self.src, self.dst, self.weight)
            dist, pred = dijkstra(self._matrix, directed=True, indices=s, return_predecessors=True)
            tree = self._trees[s] = (np.asarray(dist), np.asarray(pred))
        return tree

    def distance(self, a: SwitchId, b: SwitchId) -> float:
        if a not in self.index or b not in self.index:
            return float("inf")
        dist, _ = self._tree(self.index[a])
        return float(dist[self.index[b]])

    def shortest(self, s: int, d: int, reserved: np.ndarray | None = None, mbps: float = 0.0) -> list[int] | None:
        """Link indexes of the lightest path s -> d; with ``reserved``, over links with ``mbps`` left only."""
        if reserved is None:
            dist, pred = self._tree(s)
            room = None
        else:
            room = self.capacity - reserved >= mbps - EPSILON_MBPS
            weight = np.where(room, self.weight, np.inf)
            matrix = arc_matrix(len(self.switches), self.src, self.dst, weight)
            dist, pred = dijkstra(matrix, directed=True, indices=s, return_predecessors=True)
        if not np.isfinite(dist[d]):
            return None
        hops: list[int] = []
        v = d
        while v != s:
            u = int(pred[v])
            hops.append(next(i for i in self.arcs[(u, v)] if room is None or room[i]))
            v = u
        hops.reverse()
        return hops


def graph_of(topology: Topology, previous: ReservationPlan | None = None) -> _Graph:
    """The arrays of ``topology``'s usable links, reused from ``previous`` while what routes by them is the
    same: the switches, and each usable link with its latency and capacity (a measured load, which every
    port-stats poll brings, changes none of it)."""
    graph = previous._graph if previous is not None else None
    if graph is not None and (graph.links_map is topology.links or graph.serves(topology)):
        return graph
    return _Graph(topology)


def plan_reservations(state: FabricState, previous: ReservationPlan | None = None) -> ReservationPlan:
    """Every demand routed greedily in placement order; see the module docstring.

    With ``previous`` (an earlier state's plan on the same links), the outcomes before the first demand
    that differs are kept as they were: placing a new instance routes only its own demands.
    """
    if not reserves_anything(state):
        return ReservationPlan(state.generation, (), {})  # most fabrics: no graph to build, nothing to route
    graph = graph_of(state.topology, previous)
    if previous is not None and previous._graph is graph:
        capacity = previous.capacity_mbps  # the same link map: the same capacities
        appended = _appended(previous._basis, state) if previous._basis is not None else None
        if appended is not None:
            return _append(state, previous, graph, capacity, appended)
    else:
        capacity = {link: attrs.capacity_mbps for link, attrs in state.topology.links.items()}
    demands = demands_of(state, graph)
    endpoints = _endpoints(state) if demands else {}
    kept: list[Outcome] = []
    reserved = np.zeros(len(graph.links))
    if previous is not None and previous._graph is graph:
        old = previous.outcomes
        same = 0
        while same < len(old) and same < len(demands) and old[same].demand == demands[same]:
            same += 1
        kept = list(old[:same])
        if same == len(old):
            reserved = previous._reserved.copy()
        else:
            for outcome in kept:
                if isinstance(outcome, Reservation):
                    _take(graph, reserved, outcome)
    kept_count = len(kept)
    outcomes = kept
    for demand in demands[len(kept) :]:
        outcome = _route(state, graph, endpoints, reserved, demand)
        if isinstance(outcome, Reservation):
            _take(graph, reserved, outcome)
        outcomes.append(outcome)
    base = previous._serial if previous is not None and kept_count else -1
    return ReservationPlan(
        state.generation, tuple(outcomes), capacity, graph, reserved, state, _base=base, _kept=kept_count
    )


def _append(
    state: FabricState,
    previous: ReservationPlan,
    graph: _Graph,
    capacity: Mapping[LinkId, float],
    appended: Sequence[tuple[int, Workload]],
) -> ReservationPlan:
    """``previous`` and the demands of the instances placed after it: theirs are routed last in greedy order
    anyway, so nothing before them moves (the same plan as from scratch, at the cost of the new ones)."""
    endpoints = _endpoints(state) if appended else {}
    new = _demands(state, graph, endpoints, appended, appended) if appended else {}
    if not new:
        return replace(
            previous,
            generation=state.generation,
            _basis=state,
            _serial=next(_SERIALS),
            _base=previous._serial,
            _kept=len(previous.outcomes),
        )
    keys = {o.demand.key for o in previous.outcomes}
    if any(d.key in keys for d in new.values()):  # merges into an earlier demand: not an append
        return plan_reservations(state, replace(previous, _basis=None))
    reserved = previous._reserved.copy()
    outcomes = list(previous.outcomes)
    for demand in sorted(new.values(), key=lambda d: (d.order, d.key)):
        outcome = _route(state, graph, endpoints, reserved, demand)
        if isinstance(outcome, Reservation):
            _take(graph, reserved, outcome)
        outcomes.append(outcome)
    kept = len(previous.outcomes)
    return ReservationPlan(
        state.generation, tuple(outcomes), capacity, graph, reserved, state, _base=previous._serial, _kept=kept
    )


def _take(graph: _Graph, reserved: np.ndarray, reservation: Reservation) -> None:
    for link in reservation.links:
        reserved[graph.position[link]] += reservation.demand.mbps


def _route(
    state: FabricState,
    graph: _Graph,
    endpoints: Mapping[str, tuple[str, Attachment]],
    reserved: np.ndarray,
    demand: Demand,
) -> Outcome:
    a, b = endpoints[demand.src][1], endpoints[demand.dst][1]
    if a.switch == b.switch:
        return Reservation(demand, (a.switch,), (), b.port, 0)
    s, d = graph.index[a.switch], graph.index[b.switch]
    path = graph.shortest(s, d)
    if path is None:
        return Unreserved(demand, f"no path from {demand.src} to {demand.dst}")
    short = [i for i in path if graph.capacity[i] - reserved[i] < demand.mbps - EPSILON_MBPS]
    if short:
        bottleneck = short[0]
        path = graph.shortest(s, d, reserved, demand.mbps)
        if path is None:
            left = max(0.0, float(graph.capacity[bottleneck] - reserved[bottleneck]))
            link = graph.links[bottleneck]
            return Unreserved(
                demand,
                f"link {link_label(state, link)} has {left:g} of {demand.mbps:g} Mbit/s left"
                " and no other path has room",
                link,
            )
    links = tuple(graph.links[i] for i in path)
    switches = (a.switch, *(link.dst for link in links))
    latency = int(sum(float(graph.latency[i]) for i in path))
    return Reservation(demand, switches, links, b.port, latency)


def admission(before: ReservationPlan, after: ReservationPlan) -> BandwidthRefusal | None:
    """None when ``after`` keeps every reservation of ``before`` and reserves every new demand; else the first
    demand it would leave unreserved (a new one, or one that had a reservation)."""
    was_unreserved = {o.demand.key: set(o.demand.owners) for o in before.unreserved}
    # A plan made from ``before`` shares its first outcomes with it: only the rest can differ.
    changed = after.outcomes[after._kept :] if after._base == before._serial else after.outcomes
    for outcome in changed:
        owners = was_unreserved.get(outcome.demand.key)
        if isinstance(outcome, Unreserved) and (owners is None or not owners.issuperset(outcome.demand.owners)):
            return BandwidthRefusal(outcome.demand, outcome.link, outcome.reason)
    return None
