"""Latency-optimal, failure-resilient routes: a pure function of the model.

Forwarding is per destination: every switch has, for each destination switch, a primary next hop
on a latency-shortest path and, where one exists, a loop-free alternate (LFA, RFC 5286) as backup.
Following primaries from any source gives that source's shortest path, so one tree per destination
serves all sources (N flows per switch, not N^2).

All-pairs distances come from scipy's C Dijkstra on a CSR matrix of the usable, discovered links
(about 40x faster than networkx at 500 switches here), built by ``netmodel.graph.arc_matrix`` (its
rules for parallel links and zero weights); this module keeps only its weight rule, and the per-link
weight array that incremental recomputation compares; next hops are picked with numpy over all
(link, destination) pairs at once. The result holds plain arrays so that two plans diff in
microseconds (``changed_entries``), which is what lets a single link failure recompile only the
flows that moved.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from netmodel.graph import arc_matrix, shortest_distances
from netmodel.ids import SwitchId
from netmodel.state import FabricState
from netmodel.types import Attachment, LinkId

NO_LINK = -1
UNREACHABLE = np.inf


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Something routes lead to: a user host or a compute node."""

    name: str
    ip: str
    attachment: Attachment


@dataclass(frozen=True, slots=True)
class Route:
    src: str
    dst: str
    path: tuple[SwitchId, ...]
    links: tuple[LinkId, ...]
    latency_us: int


@dataclass(frozen=True, eq=False)
class RoutePlan:
    """Next hops for every (switch, destination switch); indexes are positions in ``switches``.

    ``primary[s, d]`` and ``backup[s, d]`` are indexes into ``links`` (or NO_LINK); ``distance_us[s, d]``
    is the latency from switch s to switch d over usable links (inf when unreachable).
    """

    generation: int
    switches: tuple[SwitchId, ...]
    links: tuple[LinkId, ...]
    distance_us: np.ndarray
    primary: np.ndarray
    backup: np.ndarray
    endpoints: Mapping[str, Endpoint] = field(default_factory=dict)
    index: Mapping[SwitchId, int] = field(default_factory=dict)
    _structure: _Structure | None = field(default=None, repr=False)
    routing: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False)  # internal distances
    weight: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)  # per link; inf when down

    def _with(self, generation: int, endpoints: Mapping[str, Endpoint]) -> RoutePlan:
        return replace(self, generation=generation, endpoints=endpoints)

    def next_hop(self, switch: SwitchId, dst_switch: SwitchId) -> tuple[LinkId | None, LinkId | None]:
        s, d = self.index[switch], self.index[dst_switch]
        primary, backup = int(self.primary[s, d]), int(self.backup[s, d])
        return (
            self.links[primary] if primary != NO_LINK else None,
            self.links[backup] if backup != NO_LINK else None,
        )

    def path(self, src_switch: SwitchId, dst_switch: SwitchId) -> tuple[LinkId, ...] | None:
        """The links the primaries follow from src to dst; None if unreachable."""
        if src_switch not in self.index or dst_switch not in self.index:
            return None
        s, d = self.index[src_switch], self.index[dst_switch]
        if not np.isfinite(self.distance_us[s, d]):
            return None
        hops: list[LinkId] = []
        while s != d:
            link_index = int(self.primary[s, d])
            if link_index == NO_LINK or len(hops) > len(self.switches):
                return None  # cannot happen on a consistent plan; never loop forever
            link = self.links[link_index]
            hops.append(link)
            s = self.index[link.dst]
        return tuple(hops)

    def route(self, src: str, dst: str) -> Route | None:
        a, b = self.endpoints.get(src), self.endpoints.get(dst)
        if a is None or b is None:
            return None
        hops = self.path(a.attachment.switch, b.attachment.switch)
        if hops is None:
            return None
        path = (a.attachment.switch, *(link.dst for link in hops))
        latency = self.distance_us[self.index[a.attachment.switch], self.index[b.attachment.switch]]
        return Route(src, dst, path, hops, int(latency))

    def routes(self) -> Iterator[Route]:
        names = sorted(self.endpoints)
        for src in names:
            for dst in names:
                if src != dst:
                    route = self.route(src, dst)
                    if route is not None:
                        yield route


def endpoints_of(state: FabricState) -> dict[str, Endpoint]:
    """Hosts and compute nodes with an address and a known attachment to a known switch."""
    out: dict[str, Endpoint] = {}
    for host in state.hosts.values():
        if host.ip and host.attachment is not None and host.attachment.switch in state.topology.switches:
            out[host.id] = Endpoint(host.id, host.ip, host.attachment)
    for node in state.nodes.values():
        if node.ip and node.attachment.switch in state.topology.switches:
            out[node.id] = Endpoint(node.id, node.ip, node.attachment)
    return out


@dataclass(frozen=True, eq=False)
class _Structure:
    """What stays put while only link states and latencies change: the arrays a plan is built on."""

    graph: object  # the topology graph object these arrays were derived from (identity only)
    switches: tuple[SwitchId, ...]
    index: Mapping[SwitchId, int]
    links: tuple[LinkId, ...]
    src: np.ndarray
    dst: np.ndarray
    by_switch: np.ndarray
    bounds: np.ndarray
    in_neighbours: tuple[np.ndarray, ...]


def _structure(state: FabricState, previous: RoutePlan | None) -> _Structure:
    topo = state.topology
    switches = tuple(sorted(s.id for s in topo.switches.values() if s.connected))
    on = set(switches)
    # Every discovered link between connected switches keeps its index while it goes down and up
    # again (a down link weighs inf): plans before and after a failure line up array for array.
    found = [link for link, attrs in topo.links.items() if attrs.discovered and link.src in on and link.dst in on]
    old = previous._structure if previous is not None else None
    # The model never un-discovers a link, so for the same graph and switches an equal count is the same set.
    if old is not None and old.graph is topo.graph and old.switches == switches and len(old.links) == len(found):
        return old
    index = {dpid: i for i, dpid in enumerate(switches)}
    links = tuple(sorted(found, key=lambda link: (link.src, link.src_port, link.dst, link.dst_port)))
    src = np.fromiter((index[link.src] for link in links), dtype=np.int64, count=len(links))
    dst = np.fromiter((index[link.dst] for link in links), dtype=np.int64, count=len(links))
    by_switch = np.argsort(src, kind="stable")
    bounds = np.searchsorted(src[by_switch], np.arange(len(switches) + 1))
    order = np.argsort(dst, kind="stable")
    dst_bounds = np.searchsorted(dst[order], np.arange(len(switches) + 1))
    in_neighbours = tuple(np.unique(src[order[dst_bounds[v] : dst_bounds[v + 1]]]) for v in range(len(switches)))
    return _Structure(topo.graph, switches, index, links, src, dst, by_switch, bounds, in_neighbours)


def compute_routes(state: FabricState, previous: RoutePlan | None = None) -> RoutePlan:
    """Routes over connected switches and usable, discovered links.

    With ``previous`` (the plan of an earlier state), a change that only makes links worse (a link
    down, a latency up: the common, urgent case) recomputes only what it can affect: the sources
    whose shortest paths used a changed link, and the next hops of switches next to them. Anything
    else (a new link, a link back up, a latency down) recomputes everything. Both give the same plan.
    """
    topo = state.topology
    st = _structure(state, previous)
    n = len(st.switches)
    endpoints = {name: e for name, e in endpoints_of(state).items() if e.attachment.switch in st.index}
    if n == 0:
        empty = np.zeros((0, 0))
        none = empty.astype(np.int64)
        return RoutePlan(state.generation, (), (), empty, none, none, endpoints, {}, st, empty, np.zeros(0))
    # Routing runs on latency * scale + 1: still latency-optimal, ties go to the path with fewer hops,
    # and no link weighs 0. With raw latencies a 0-latency link u-v makes u and v equally far from
    # every destination, so each could pick the other as next hop: a forwarding loop. Every weight
    # >= 1 makes the routing distance strictly decrease along primaries. scale exceeds the hops of
    # any shortest path, so latency = routing distance // scale exactly (integers below 2**53).
    scale = n + 1
    links = topo.links
    weight = np.fromiter(
        (links[link].latency_us * scale + 1.0 if links[link].up else np.inf for link in st.links),
        dtype=np.float64,
        count=len(st.links),
    )
    rows: np.ndarray | None = None  # None: everything
    if previous is not None and previous._structure is st and len(previous.weight) == len(weight):
        changed = np.nonzero(previous.weight != weight)[0]
        if len(changed) == 0:
            return previous._with(state.generation, endpoints)
        if np.all(weight[changed] > previous.weight[changed]):
            rows = _rows_using(previous.routing, st, changed, previous.weight)
    # Parallel links: the matrix keeps the lowest weight per (u, v); next-hop choice still sees all.
    matrix = arc_matrix(n, st.src, st.dst, weight)
    if rows is None:
        routing = shortest_distances(matrix)
        hop_rows = np.arange(n)
        primary = np.full((n, n), NO_LINK, dtype=np.int64)
        backup = np.full((n, n), NO_LINK, dtype=np.int64)
    else:
        assert previous is not None
        routing = previous.routing.copy()
        if len(rows):
            routing[rows] = shortest_distances(matrix, indices=rows)
        # A switch's next hops read its own row and its neighbours' rows (the LFA test), and its own
        # out-links: recompute for changed rows, their in-neighbours, and the changed links' sources.
        touched = {int(r) for r in rows}
        for r in rows:
            touched.update(int(u) for u in st.in_neighbours[int(r)])
        touched.update(int(u) for u in st.src[changed])
        hop_rows = np.array(sorted(touched), dtype=np.int64)
        primary, backup = previous.primary.copy(), previous.backup.copy()
    _next_hops(hop_rows, st, weight, routing, primary, backup)
    dist = np.full((n, n), UNREACHABLE)
    finite = np.isfinite(routing)
    dist[finite] = routing[finite].astype(np.int64) // scale
    return RoutePlan(
        state.generation, st.switches, st.links, dist, primary, backup, endpoints, st.index, st, routing, weight
    )


def _rows_using(routing: np.ndarray, st: _Structure, changed: np.ndarray, old_weight: np.ndarray) -> np.ndarray:
    """Sources u with some destination d whose shortest path used one of the ``changed`` links."""
    affected = np.zeros(len(st.switches), dtype=bool)
    for link in changed.tolist():
        if not np.isfinite(old_weight[link]):
            continue
        x, y = st.src[link], st.dst[link]
        via = routing[:, x][:, None] + old_weight[link] + routing[y, :][None, :]
        affected |= np.any(via == routing, axis=1)
    return np.nonzero(affected)[0]


def _next_hops(
    rows: np.ndarray, st: _Structure, weight: np.ndarray, dist: np.ndarray, primary: np.ndarray, backup: np.ndarray
) -> None:
    """Fill ``primary`` and ``backup`` for the switches in ``rows``, in place.

    Rows are taken in groups of equal out-degree, each group as one (rows, degree, destinations)
    tensor: no Python loop per switch, and no padding (padding every row to the largest degree
    cost as much as it saved).
    """
    if len(rows) == 0:
        return
    primary[rows, :] = NO_LINK
    backup[rows, :] = NO_LINK
    degree = st.bounds[rows + 1] - st.bounds[rows]
    for k in np.unique(degree).tolist():
        if k > 0:
            _next_hops_of_degree(rows[degree == k], k, st, weight, dist, primary, backup)


def _next_hops_of_degree(
    rows: np.ndarray,
    k: int,
    st: _Structure,
    weight: np.ndarray,
    dist: np.ndarray,
    primary: np.ndarray,
    backup: np.ndarray,
) -> None:
    # links[r, j]: the j-th out-link of rows[r] (sorted LinkId order, so ties go to the first).
    links = st.by_switch[st.bounds[rows][:, None] + np.arange(k)[None, :]]
    link_weight = weight[links]  # (R, k); inf when down
    neighbour = st.dst[links]  # (R, k)
    # cost[r, j, d]: over link j of rows[r] to its neighbour v, then the shortest way from v to d.
    cost = link_weight[:, :, None] + dist[neighbour, :]
    best = np.argmin(cost, axis=1)  # (R, n)
    best_cost = np.take_along_axis(cost, best[:, None, :], axis=1)[:, 0, :]
    reachable = np.isfinite(best_cost)
    reachable[np.arange(len(rows)), rows] = False
    primary[rows, :] = np.where(reachable, np.take_along_axis(links, best, axis=1), NO_LINK)
    if k == 1:
        return  # a single link has no alternate
    # LFA: neighbour v is loop-free for d if dist(v, d) < dist(v, u) + dist(u, d). A parallel link
    # to the primary's neighbour is always loop-free (it is the same neighbour).
    to_u = dist[neighbour, rows[:, None]]  # (R, k): dist(v, u)
    loop_free = dist[neighbour, :] < to_u[:, :, None] + dist[rows, :][:, None, :]
    best_neighbour = np.take_along_axis(neighbour, best, axis=1)  # (R, n)
    same_neighbour = neighbour[:, :, None] == best_neighbour[:, None, :]
    alternative = np.where(loop_free | same_neighbour, cost, np.inf)
    np.put_along_axis(alternative, best[:, None, :], np.inf, axis=1)
    second = np.argmin(alternative, axis=1)
    second_cost = np.take_along_axis(alternative, second[:, None, :], axis=1)[:, 0, :]
    has_backup = reachable & np.isfinite(second_cost)
    backup[rows, :] = np.where(has_backup, np.take_along_axis(links, second, axis=1), NO_LINK)


def changed_entries(old: RoutePlan, new: RoutePlan) -> list[tuple[SwitchId, SwitchId]]:
    """(switch, destination switch) pairs whose primary or backup link changed."""
    if old._structure is not None and old._structure is new._structure:
        differs = (old.primary != new.primary) | (old.backup != new.backup)
        rows, cols = np.nonzero(differs)
        return [(new.switches[r], new.switches[c]) for r, c in zip(rows.tolist(), cols.tolist(), strict=True)]
    if old.switches != new.switches:
        return [(s, d) for s in new.switches for d in new.switches]
    old_links = np.array([hash(link) for link in old.links] + [0], dtype=np.int64)
    new_links = np.array([hash(link) for link in new.links] + [0], dtype=np.int64)
    # Compare by LinkId, not by index: the link tuples differ when a link disappears.
    differs = (old_links[old.primary] != new_links[new.primary]) | (old_links[old.backup] != new_links[new.backup])
    rows, cols = np.nonzero(differs)
    return [(new.switches[r], new.switches[c]) for r, c in zip(rows.tolist(), cols.tolist(), strict=True)]
