"""Latency-optimal, failure-resilient routes: a pure function of the model.

Forwarding is per destination: every switch has, for each destination switch, a primary next hop
on a latency-shortest path and, where one exists, a loop-free alternate (LFA, RFC 5286) as backup.
Following primaries from any source gives that source's shortest path, so one tree per destination
serves all sources (N flows per switch, not N^2). After a change, a primary may instead stay where it
was while it is within the ``Hysteresis`` of the shortest (still loop-free: see there).

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
from functools import cached_property
from operator import attrgetter, is_, is_not, itemgetter

import numpy as np

from netmodel.graph import arc_matrix, arcs_into, shortest_distances
from netmodel.ids import PortNo, SwitchId
from netmodel.state import FabricState
from netmodel.types import Attachment, LinkAttrs, LinkId
from sdnctl import pathing_small

NO_LINK = -1
UNREACHABLE = np.inf
# Up to this many switches a change is applied in plain Python (sdnctl/pathing_small.py), above it
# with numpy: where the two cost the same in benchmarks/routes.py (link failures, Topology Zoo and
# Gabriel graphs), so neither pays the other's fixed or per-pair cost where it is the larger.
SMALL_FABRIC = 25
# ``incremental_limit``'s floor: a handful of changed links always goes one by one.
INCREMENTAL_LINKS_MIN = 8
# A pass of ``_next_hops_of_entries`` over one out-degree costs about as much as this many padded
# (entry, link) cells (measured on Topology Zoo, Gabriel and the scale benchmark's fabrics).
PASS_COST_CELLS = 3000


@dataclass(frozen=True, slots=True)
class Hysteresis:
    """When an entry's primary stays: while its next hop is still closer to the destination than the
    switch is (so primaries still cannot loop) and its way there is within ``min_us`` or ``fraction``
    (whichever is larger) of the shortest. Measured latencies wander by a few hundred microseconds under
    load; without this, two paths of about equal latency trade places on every correction, and each
    trade is a round of GroupMods and barriers on every switch the paths serve."""

    min_us: float = 250.0
    fraction: float = 0.05


# Routes the controller programs keep their primaries within this of the shortest (``Hysteresis``).
STICKY = Hysteresis()


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
    link_attrs: tuple[LinkAttrs, ...] = field(default=(), repr=False)  # what ``weight`` was computed from
    # After an incremental update: the previous plan's primary and backup arrays and the flat indexes
    # of the entries recomputed (sorted); ``changed_entries`` then looks at those alone.
    recomputed_from: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    # The model's hosts, nodes and switches mappings ``endpoints`` was derived from: a later plan of the
    # same structure whose state still holds these very objects reuses ``endpoints`` as it is.
    endpoints_from: tuple[object, ...] = field(default=(), repr=False)

    @property
    def out_ports(self) -> tuple[PortNo, ...]:
        """Per link (index into ``links``), the port it leaves its source switch by."""
        if self._structure is not None and self._structure.links is self.links:
            return self._structure.out_ports
        return tuple(link.src_port for link in self.links)

    @property
    def out_port_array(self) -> np.ndarray:
        """``out_ports`` as an array with one more element, 0, so that NO_LINK (-1) indexes to port 0."""
        if self._structure is not None and self._structure.links is self.links:
            return self._structure.out_port_array
        return np.array([*self.out_ports, 0], dtype=np.int64)

    @cached_property
    def endpoints_at(self) -> Mapping[SwitchId, tuple[Endpoint, ...]]:
        """The endpoints attached to each switch (switches with none left out)."""
        at: dict[SwitchId, list[Endpoint]] = {}
        for endpoint in self.endpoints.values():
            at.setdefault(endpoint.attachment.switch, []).append(endpoint)
        return {switch: tuple(endpoints) for switch, endpoints in at.items()}

    def next_hop(self, switch: SwitchId, dst_switch: SwitchId) -> tuple[LinkId | None, LinkId | None]:
        s, d = self.index[switch], self.index[dst_switch]
        primary, backup = int(self.primary[s, d]), int(self.backup[s, d])
        return (
            self.links[primary] if primary != NO_LINK else None,
            self.links[backup] if backup != NO_LINK else None,
        )

    def path(self, src_switch: SwitchId, dst_switch: SwitchId) -> tuple[LinkId, ...] | None:
        """The links the primaries follow from src to dst; None if unreachable."""
        hops = self._walk(src_switch, dst_switch)
        return None if hops is None else tuple(self.links[i] for i in hops)

    def _walk(self, src_switch: SwitchId, dst_switch: SwitchId) -> list[int] | None:
        """The indexes of the links the primaries follow from src to dst; None if unreachable."""
        if src_switch not in self.index or dst_switch not in self.index:
            return None
        s, d = self.index[src_switch], self.index[dst_switch]
        if not np.isfinite(self.distance_us[s, d]):
            return None
        hops: list[int] = []
        while s != d:
            link_index = int(self.primary[s, d])
            if link_index == NO_LINK or len(hops) > len(self.switches):
                return None  # cannot happen on a consistent plan; never loop forever
            hops.append(link_index)
            s = self.index[self.links[link_index].dst]
        return hops

    def route(self, src: str, dst: str) -> Route | None:
        """The route the primaries give; its latency is that of its links, which a primary kept by the
        hysteresis can put a little above ``distance_us`` (the shortest)."""
        a, b = self.endpoints.get(src), self.endpoints.get(dst)
        if a is None or b is None:
            return None
        hops = self._walk(a.attachment.switch, b.attachment.switch)
        if hops is None:
            return None
        links = tuple(self.links[i] for i in hops)
        path = (a.attachment.switch, *(link.dst for link in links))
        if len(self.link_attrs) == len(self.links):
            latency = sum(self.link_attrs[i].latency_us for i in hops)
        else:
            latency = int(self.distance_us[self.index[a.attachment.switch], self.index[b.attachment.switch]])
        return Route(src, dst, path, links, int(latency))

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
    discovered: int  # how many links of the topology were discovered (any switches)
    link_keys: tuple[LinkId, ...]  # the topology's links mapping's keys, in its order, when built
    switches: tuple[SwitchId, ...]
    index: Mapping[SwitchId, int]
    links: tuple[LinkId, ...]
    src: np.ndarray
    dst: np.ndarray
    by_switch: np.ndarray
    bounds: np.ndarray  # out-links of switch i: by_switch[bounds[i]:bounds[i + 1]]
    by_dst: np.ndarray
    dst_bounds: np.ndarray  # in-links of switch i: by_dst[dst_bounds[i]:dst_bounds[i + 1]]

    @cached_property
    def positions(self) -> tuple[int, ...]:
        """Where each of ``links`` sat in the topology's links mapping when this was built: every later
        topology that only changed link attributes keeps its keys in that order (``_attrs_of``)."""
        at = {link: i for i, link in enumerate(self.link_keys)}
        return tuple(at[link] for link in self.links)

    @cached_property
    def out_ports(self) -> tuple[PortNo, ...]:
        return tuple(link.src_port for link in self.links)

    @cached_property
    def out_port_array(self) -> np.ndarray:
        return np.array([*self.out_ports, 0], dtype=np.int64)

    @cached_property
    def out_degree(self) -> np.ndarray:
        """How many out-links each switch has."""
        return np.diff(self.bounds)

    @cached_property
    def padded_out_links(self) -> np.ndarray:
        """(switches, largest out-degree): each switch's out-links in ``by_switch`` order, then the
        index ``len(links)`` (a link that weighs inf, see ``_next_hops_of_entries``) as padding."""
        n, m = len(self.switches), len(self.links)
        degree = self.out_degree
        width = int(degree.max()) if n else 0
        padded = np.full((n, width), m, dtype=np.int64)
        rows = np.repeat(np.arange(n), degree)
        columns = np.arange(len(self.by_switch)) - np.repeat(self.bounds[:-1], degree)
        padded[rows, columns] = self.by_switch
        return padded

    @cached_property
    def padded_dst(self) -> np.ndarray:
        """``dst`` with the padding link's destination (switch 0: its cost is inf whatever it is)."""
        return np.append(self.dst, 0)

    @cached_property
    def lists(self) -> pathing_small.Graph:
        """The same structure as lists, for the plain-Python path (built on first use)."""
        n = len(self.switches)
        return pathing_small.Graph(
            self.src.tolist(),
            self.dst.tolist(),
            [self.by_switch[self.bounds[i] : self.bounds[i + 1]].tolist() for i in range(n)],
            [self.by_dst[self.dst_bounds[i] : self.dst_bounds[i + 1]].tolist() for i in range(n)],
        )


def _structure(state: FabricState, previous: RoutePlan | None) -> _Structure:
    topo = state.topology
    switches = tuple(sorted(s.id for s in topo.switches.values() if s.connected))
    # Every discovered link between connected switches keeps its index while it goes down and up
    # again (a down link weighs inf): plans before and after a failure line up array for array.
    discovered = sum(map(_DISCOVERED, topo.links.values()))
    old = previous._structure if previous is not None else None
    # The model never un-discovers a link, so for the same graph and switches an equal count is the same set.
    if old is not None and old.graph is topo.graph and old.switches == switches and old.discovered == discovered:
        return old
    on = set(switches)
    found = [link for link, attrs in topo.links.items() if attrs.discovered and link.src in on and link.dst in on]
    index = {dpid: i for i, dpid in enumerate(switches)}
    links = tuple(sorted(found, key=lambda link: (link.src, link.src_port, link.dst, link.dst_port)))
    src = np.fromiter((index[link.src] for link in links), dtype=np.int64, count=len(links))
    dst = np.fromiter((index[link.dst] for link in links), dtype=np.int64, count=len(links))
    by_switch = np.argsort(src, kind="stable")
    bounds = np.searchsorted(src[by_switch], np.arange(len(switches) + 1))
    by_dst = np.argsort(dst, kind="stable")
    dst_bounds = np.searchsorted(dst[by_dst], np.arange(len(switches) + 1))
    return _Structure(
        topo.graph,
        discovered,
        tuple(topo.links),
        switches,
        index,
        links,
        src,
        dst,
        by_switch,
        bounds,
        by_dst,
        dst_bounds,
    )


_DISCOVERED = attrgetter("discovered")


def compute_routes(
    state: FabricState, previous: RoutePlan | None = None, hysteresis: Hysteresis | None = STICKY
) -> RoutePlan:
    """Routes over connected switches and usable, discovered links.

    With ``previous`` (the plan of an earlier state on the same switches and links), a change of link
    states or latencies recomputes only what it can touch: the (source, destination) distances whose
    shortest paths used a link that got worse (repaired from the unaffected ones) or that a link
    that got better now shortens, and the next hops and loop-free alternates that read a changed
    distance or a changed link. A new link or switch recomputes everything. Without ``hysteresis`` both
    give the same plan; with it, a recomputed entry keeps ``previous``'s primary while ``hysteresis``
    allows (the entries not recomputed would keep it for the same reason: their inputs did not move).
    """
    st = _structure(state, previous)
    n = len(st.switches)
    endpoints_from = _endpoints_from(state)
    if (
        previous is not None
        and previous._structure is st
        and len(previous.endpoints_from) == len(endpoints_from)  # (a plan built without them has none)
        and all(map(is_, endpoints_from, previous.endpoints_from))
    ):
        endpoints = previous.endpoints
    else:
        endpoints = {name: e for name, e in endpoints_of(state).items() if e.attachment.switch in st.index}
    if n == 0:
        empty = np.zeros((0, 0))
        none = empty.astype(np.int32)
        return RoutePlan(state.generation, (), (), empty, none, none, endpoints, {}, st, empty, np.zeros(0))
    # Routing runs on latency * scale + 1: still latency-optimal, ties go to the path with fewer hops,
    # and no link weighs 0. With raw latencies a 0-latency link u-v makes u and v equally far from
    # every destination, so each could pick the other as next hop: a forwarding loop. Every weight
    # >= 1 makes the routing distance strictly decrease along primaries. scale exceeds the hops of
    # any shortest path, so latency = routing distance // scale exactly (integers below 2**53).
    scale = n + 1
    same = previous is not None and previous._structure is st and len(previous.weight) == len(st.links)
    attrs = _attrs_of(state, st)
    weight = _weights(attrs, st, scale, previous if same else None)
    if not same:
        return _full(state, st, endpoints, attrs, weight, scale)
    assert previous is not None
    changed = np.nonzero(previous.weight != weight)[0]
    if len(changed) == 0:
        unchanged = (previous.primary, previous.backup, np.zeros(0, dtype=np.int64))
        return replace(
            previous,
            generation=state.generation,
            endpoints=endpoints,
            link_attrs=attrs,
            recomputed_from=unchanged,
            endpoints_from=endpoints_from,
        )
    if n <= SMALL_FABRIC:
        plan = _small_update(state, previous, endpoints, attrs, weight, changed, scale, hysteresis)
    else:
        plan = _update(state, previous, endpoints, attrs, weight, changed, scale, hysteresis)
    if plan.endpoints is previous.endpoints and "endpoints_at" in previous.__dict__:
        plan.__dict__["endpoints_at"] = previous.endpoints_at  # what the cached property would compute again
    return plan


def _update(
    state: FabricState,
    previous: RoutePlan,
    endpoints: Mapping[str, Endpoint],
    attrs: tuple[LinkAttrs, ...],
    weight: np.ndarray,
    changed: np.ndarray,
    scale: int,
    hysteresis: Hysteresis | None,
) -> RoutePlan:
    """The incremental update with numpy: ``previous`` under the link weights ``weight`` (the links
    ``changed`` differ), recomputing only what they can touch."""
    st = previous._structure
    assert st is not None
    n = len(st.switches)
    better_links = changed[weight[changed] < previous.weight[changed]].tolist()
    if len(changed) > incremental_limit(n):
        # Many links at once (a start-up's first latency estimates, a partition healing): each costs
        # the passes below over all n x n distances, and past this many one Dijkstra from every
        # switch is cheaper. The next hops are still recomputed only where the distances moved.
        routing = shortest_distances(arc_matrix(n, st.src, st.dst, weight))
        flat_routing = routing.reshape(-1)
        moved = np.flatnonzero(flat_routing != previous.routing.reshape(-1))
    else:
        routing, moved = _distances_updated(previous, st, weight, changed, better_links)
        flat_routing = routing.reshape(-1)
    # An entry (s, d) reads d(s, d), d(v, d) and d(v, s) for its neighbours v, and s's out-links.
    entries = np.zeros((n, n), dtype=bool)
    entries.reshape(-1)[moved] = True
    moved_to_neighbour = entries.reshape(-1)[st.dst * n + st.src]  # link s->v with d(v, s) moved
    moved_v, moved_d = np.divmod(moved, n)
    pair, position = _expand(st.dst_bounds, moved_v)
    into = st.by_dst[position]  # every link s->v into a switch v with a moved d(v, d)
    neighbour_s, neighbour_d = st.src[into], moved_d[pair]
    if not better_links:
        # Every moved distance grew: at s, v's way to d only got worse, so (s, d) can change only
        # where v is its primary's or backup's neighbour (else v stays unchosen); d(s, d) itself
        # moving is an entry of its own.
        v = st.dst[into]
        at_entry = neighbour_s * n + neighbour_d
        was_primary = previous.primary.reshape(-1).take(at_entry)
        was_backup = previous.backup.reshape(-1).take(at_entry)
        uses_v = ((was_primary != NO_LINK) & (st.dst[was_primary] == v)) | (
            (was_backup != NO_LINK) & (st.dst[was_backup] == v)
        )
        neighbour_s, neighbour_d = neighbour_s[uses_v], neighbour_d[uses_v]
    entries[neighbour_s, neighbour_d] = True  # (s, d) for in-neighbours s of v
    entries[st.src[moved_to_neighbour]] = True
    if better_links:
        entries[st.src[changed]] = True  # a better link may now be anyone's primary or alternate
    else:
        # A link that only got worse changes the entries of its source that chose it, no other.
        for link in changed.tolist():
            s = st.src[link]
            entries[s] |= (previous.primary[s] == link) | (previous.backup[s] == link)
    primary, backup = previous.primary.copy(), previous.backup.copy()
    recomputed = np.flatnonzero(entries)
    entry_switch, entry_dst = np.divmod(recomputed, n)
    keep = None if hysteresis is None else (previous.primary.reshape(-1).take(recomputed), hysteresis, scale)
    _next_hops_of_entries(entry_switch, entry_dst, st, weight, routing, primary, backup, keep)
    dist = previous.distance_us.copy()
    dist.reshape(-1)[moved] = _latency(flat_routing[moved], scale)
    was = (previous.primary, previous.backup, recomputed)
    return _plan(state, st, endpoints, attrs, weight, routing, dist, (primary, backup), was)


def incremental_limit(switches: int) -> int:
    """Up to how many changed links ``_update`` applies them one by one: each costs a few passes over
    the switches' n x n distances, a full recompute one Dijkstra per switch (``benchmarks/route_batches.py``:
    about even at a tenth as many links as switches, from 100 to 800 switches)."""
    return max(INCREMENTAL_LINKS_MIN, switches // 10)


def _distances_updated(
    previous: RoutePlan, st: _Structure, weight: np.ndarray, changed: np.ndarray, better_links: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """``previous``'s routing distances under ``weight``, and the flat indexes of those that moved
    (sorted): repaired where a worse link carried a shortest path, then lowered by each better link."""
    routing = previous.routing.copy()
    flat_routing = routing.reshape(-1)
    moved = np.zeros(0, dtype=np.int64)
    worse = changed[weight[changed] > previous.weight[changed]]
    if len(worse):
        affected = np.flatnonzero(_pairs_using(previous.routing, st, worse, previous.weight))
        if len(affected):
            repaired = _repair(previous.routing, affected, st, weight)
            differs = repaired != flat_routing[affected]
            moved = affected[differs]
            flat_routing[moved] = repaired[differs]
    if not better_links:
        return routing, moved
    # Marked in a mask, not merged link by link: a merge sorts everything moved so far each time.
    moved_mask = np.zeros(flat_routing.shape, dtype=bool)
    moved_mask[moved] = True
    for link in better_links:
        # One better link x->y: every distance becomes min(d(u,d), d(u,x) + w + d(y,d)), exactly.
        x, y = st.src[link], st.dst[link]
        via = routing[:, x][:, None] + weight[link] + routing[y, :][None, :]
        better = np.flatnonzero(via < routing)
        if len(better):
            flat_routing[better] = via.reshape(-1)[better]
            moved_mask[better] = True
    return routing, np.flatnonzero(moved_mask)


def _small_update(
    state: FabricState,
    previous: RoutePlan,
    endpoints: Mapping[str, Endpoint],
    attrs: tuple[LinkAttrs, ...],
    weight: np.ndarray,
    changed: np.ndarray,
    scale: int,
    hysteresis: Hysteresis | None,
) -> RoutePlan:
    """The incremental update in plain Python (small fabrics), written back into copies of the arrays."""
    st = previous._structure
    assert st is not None
    routing_lists = previous.routing.tolist()
    update = pathing_small.update(
        st.lists,
        routing_lists,
        (previous.primary.tolist(), previous.backup.tolist()),
        previous.weight.tolist(),
        weight.tolist(),
        changed.tolist(),
        None if hysteresis is None else (hysteresis.min_us * scale, hysteresis.fraction),
    )
    routing, dist = previous.routing.copy(), previous.distance_us.copy()
    for (u, d), value in update.moved.items():
        routing[u, d] = value
        dist[u, d] = int(value) // scale if value != np.inf else UNREACHABLE
    primary, backup = previous.primary.copy(), previous.backup.copy()
    n = len(st.switches)
    for (s, d), (first, second) in update.next_hops.items():
        primary[s, d] = first
        backup[s, d] = second
    recomputed = np.array(sorted(s * n + d for s, d in update.next_hops), dtype=np.int64)
    was = (previous.primary, previous.backup, recomputed)
    return _plan(state, st, endpoints, attrs, weight, routing, dist, (primary, backup), was)


def _full(
    state: FabricState,
    st: _Structure,
    endpoints: Mapping[str, Endpoint],
    attrs: tuple[LinkAttrs, ...],
    weight: np.ndarray,
    scale: int,
) -> RoutePlan:
    n = len(st.switches)
    # Parallel links: the matrix keeps the lowest weight per (u, v); next-hop choice still sees all.
    routing = shortest_distances(arc_matrix(n, st.src, st.dst, weight))
    primary = np.full((n, n), NO_LINK, dtype=np.int32)
    backup = np.full((n, n), NO_LINK, dtype=np.int32)
    _next_hops(np.arange(n), st, weight, routing, primary, backup)
    dist = _latency(routing, scale)
    return _plan(state, st, endpoints, attrs, weight, routing, dist, (primary, backup))


def _plan(
    state: FabricState,
    st: _Structure,
    endpoints: Mapping[str, Endpoint],
    attrs: tuple[LinkAttrs, ...],
    weight: np.ndarray,
    routing: np.ndarray,
    dist: np.ndarray,
    hops: tuple[np.ndarray, np.ndarray],
    recomputed_from: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> RoutePlan:
    """The plan of ``st`` with these arrays: built from scratch, or updated (``recomputed_from``: the previous
    plan's primaries and backups and the entries recomputed, so ``changed_entries`` compares only those)."""
    primary, backup = hops
    return RoutePlan(
        generation=state.generation,
        switches=st.switches,
        links=st.links,
        distance_us=dist,
        primary=primary,
        backup=backup,
        endpoints=endpoints,
        index=st.index,
        _structure=st,
        routing=routing,
        weight=weight,
        link_attrs=attrs,
        recomputed_from=recomputed_from,
        endpoints_from=_endpoints_from(state),
    )


def _endpoints_from(state: FabricState) -> tuple[object, ...]:
    """The model's maps a plan's ``endpoints`` are derived from (``RoutePlan.endpoints_from``)."""
    return (state.hosts, state.nodes, state.topology.switches)


def _latency(routing: np.ndarray, scale: int) -> np.ndarray:
    dist = np.full(routing.shape, UNREACHABLE)
    finite = np.isfinite(routing)
    dist[finite] = routing[finite].astype(np.int64) // scale
    return dist


def _attrs_of(state: FabricState, st: _Structure) -> tuple[LinkAttrs, ...]:
    if not st.links:
        return ()
    links = state.topology.links
    keys = tuple(links)
    if len(st.links) > 1 and len(keys) == len(st.link_keys) and all(map(is_, keys, st.link_keys)):
        # The same key objects in the same order (a topology that only changed link attributes copies
        # its mapping and updates it in place): attributes by position, without hashing every LinkId.
        return itemgetter(*st.positions)(tuple(links.values()))  # type: ignore[no-any-return]
    attrs = itemgetter(*st.links)(links)
    return attrs if len(st.links) > 1 else (attrs,)


def _weights(attrs: tuple[LinkAttrs, ...], st: _Structure, scale: int, previous: RoutePlan | None) -> np.ndarray:
    """Per-link routing weights; with ``previous``, only links whose attributes are new objects are
    looked at (the model shares the attributes of every link a change did not touch)."""
    if previous is None or len(previous.link_attrs) != len(attrs):
        return np.fromiter(
            (a.latency_us * scale + 1.0 if a.up else np.inf for a in attrs), dtype=np.float64, count=len(attrs)
        )
    weight = previous.weight.copy()
    fresh = np.fromiter(map(is_not, attrs, previous.link_attrs), dtype=bool, count=len(attrs))
    for i in np.nonzero(fresh)[0].tolist():
        a = attrs[i]
        weight[i] = a.latency_us * scale + 1.0 if a.up else np.inf
    return weight


def _pairs_using(routing: np.ndarray, st: _Structure, worse: np.ndarray, old_weight: np.ndarray) -> np.ndarray:
    """(u, d) pairs with a shortest path over one of the ``worse`` links: the only distances a link
    getting worse can change (any other pair keeps a shortest path of the same length)."""
    affected = np.zeros(routing.shape, dtype=bool)
    for link in worse.tolist():
        w = old_weight[link]
        if not np.isfinite(w):
            continue
        x, y = st.src[link], st.dst[link]
        # Such a path's prefix is a shortest u->y path over x->y, its suffix a shortest x->d path over
        # it: only those sources and destinations need the full test.
        to_y, from_x = routing[:, y], routing[x, :]
        rows = np.nonzero((routing[:, x] + w == to_y) & np.isfinite(to_y))[0]
        cols = np.nonzero((w + routing[y, :] == from_x) & np.isfinite(from_x))[0]
        if len(rows) == 0 or len(cols) == 0:
            continue
        via = routing[rows, x][:, None] + w + routing[y, cols][None, :]
        affected[np.ix_(rows, cols)] |= via == routing[rows][:, cols]
    return affected


def _expand(bounds: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For CSR-like ``bounds``, every (i, position) with position in bounds[rows[i]]:bounds[rows[i] + 1]."""
    count = bounds[rows + 1] - bounds[rows]
    owner = np.repeat(np.arange(len(rows)), count)
    first = np.repeat(bounds[rows] - (np.cumsum(count) - count), count)
    return owner, first + np.arange(len(owner))


def _repair(routing: np.ndarray, affected: np.ndarray, st: _Structure, weight: np.ndarray) -> np.ndarray:
    """New distances of the ``affected`` pairs (flat indexes into ``routing``, sorted), in their order.

    One Dijkstra over a graph of the affected pairs (Ramalingam-Reps, every destination at once):
    pair (u, d) is reached from a root over u's out-link to v at w + d(v, d) when (v, d) is not
    affected (that distance stands), and from pair (v, d) over the same link when it is.
    """
    n = len(st.switches)
    us, ds = np.divmod(affected, n)
    count = len(us)
    pair, position = _expand(st.bounds, us)  # every (affected pair, out-link of its source)
    links = st.by_switch[position]
    link_weight = weight[links]
    usable = np.isfinite(link_weight)
    pair, links, link_weight = pair[usable], links[usable], link_weight[usable]
    via = st.dst[links] * n + ds[pair]  # the pair (v, d) each arc goes on from
    is_affected = np.zeros(n * n, dtype=bool)
    is_affected[affected] = True
    inner = is_affected.take(via)
    pair_id = np.empty(n * n, dtype=np.int64)  # read only where written: at affected pairs
    pair_id[affected] = np.arange(count)
    root = count
    source = np.where(inner, pair_id.take(np.where(inner, via, 0)), root)
    arc_weight = np.where(inner, link_weight, link_weight + routing.reshape(-1).take(via))
    reaches = np.isfinite(arc_weight)  # a neighbour that cannot reach d is no way there
    pair, source, arc_weight = pair[reaches], source[reaches], arc_weight[reaches]
    # Arcs come grouped by the pair they lead to (``pair`` ascends): the in-arc form, no sort.
    matrix = arcs_into(count + 1, np.bincount(pair, minlength=count + 1), source, arc_weight)
    return shortest_distances(matrix, indices=root)[:count]


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


def _next_hops_of_entries(
    switch: np.ndarray,
    dst: np.ndarray,
    st: _Structure,
    weight: np.ndarray,
    dist: np.ndarray,
    primary: np.ndarray,
    backup: np.ndarray,
    keep: tuple[np.ndarray, Hysteresis, int] | None = None,
) -> None:
    """``_next_hops`` for single (switch, destination) entries instead of whole rows: the same choices
    (same ties), for the entries a change can touch; with ``keep`` (each entry's previous primary,
    the hysteresis and the routing scale), an entry keeps its previous primary where the hysteresis
    allows. Every entry is padded to the largest out-degree with a link that weighs inf (never chosen:
    it comes after every real link, and a reachable entry has a finite cost): one pass, where a pass
    per degree cost a dozen numpy calls each for a few thousand entries. Where the padding would more
    than double the work and outweigh those calls (a batch of many changed links, or a fabric whose
    cloud and metro switches have many more links than its edge: ``benchmarks/route_batches.py``),
    the entries of each out-degree go in a pass of their own. Reads and writes go through flat indexes
    (``take``): a quarter faster than two-axis fancy indexing at 7,700 entries of 8 links."""
    n = dist.shape[0]
    entry = switch * n + dst
    np.put(primary, entry, NO_LINK)  # (put writes into the array itself, whatever its layout)
    np.put(backup, entry, NO_LINK)
    width = st.padded_out_links.shape[1]
    if len(switch) == 0 or width == 0:
        return
    degree = st.out_degree.take(switch)
    passes = np.bincount(degree)
    if len(switch) * width <= 2 * int(degree.sum()) + PASS_COST_CELLS * int(np.count_nonzero(passes)):
        links = st.padded_out_links.take(switch, axis=0)
        _choose(switch, dst, entry, links, st, weight, dist, primary, backup, keep)
        return
    for k in np.flatnonzero(passes).tolist():
        if k == 0:
            continue
        of_k = np.flatnonzero(degree == k)
        links = st.padded_out_links[:, :k].take(switch[of_k], axis=0)
        kept = None if keep is None else (keep[0][of_k], keep[1], keep[2])
        _choose(switch[of_k], dst[of_k], entry[of_k], links, st, weight, dist, primary, backup, kept)


def _choose(
    switch: np.ndarray,
    dst: np.ndarray,
    entry: np.ndarray,
    links: np.ndarray,
    st: _Structure,
    weight: np.ndarray,
    dist: np.ndarray,
    primary: np.ndarray,
    backup: np.ndarray,
    keep: tuple[np.ndarray, Hysteresis, int] | None,
) -> None:
    """``_next_hops_of_entries`` for entries whose out-links are the rows of ``links`` (E, k)."""
    n = dist.shape[0]
    flat_dist = dist.reshape(-1)
    at = np.arange(len(switch))
    neighbour_row = st.padded_dst.take(links) * n  # (E, k): where each neighbour's distances start
    to_dst = flat_dist.take(neighbour_row + dst[:, None])  # (E, k): dist(v, d)
    cost = np.append(weight, np.inf).take(links) + to_dst
    best = cost.argmin(axis=1)
    shortest = cost[at, best]
    reachable = np.isfinite(shortest) & (switch != dst)
    if keep is not None:
        best = _kept(best, shortest, reachable, links, cost, to_dst, flat_dist.take(entry), keep)
    np.put(primary, entry, np.where(reachable, links[at, best], NO_LINK))
    if links.shape[1] == 1:
        return
    loop_free = to_dst < flat_dist.take(neighbour_row + switch[:, None]) + flat_dist.take(entry)[:, None]
    same_neighbour = neighbour_row == neighbour_row[at, best][:, None]
    alternative = np.where(loop_free | same_neighbour, cost, np.inf)
    alternative[at, best] = np.inf
    second = alternative.argmin(axis=1)
    has_backup = reachable & np.isfinite(alternative[at, second])
    np.put(backup, entry, np.where(has_backup, links[at, second], NO_LINK))


def _kept(
    best: np.ndarray,
    shortest: np.ndarray,
    reachable: np.ndarray,
    links: np.ndarray,
    cost: np.ndarray,
    to_dst: np.ndarray,
    own: np.ndarray,
    keep: tuple[np.ndarray, Hysteresis, int],
) -> np.ndarray:
    """``best`` (a column of ``links`` per entry) with the previous primary's column where it may stay:
    still one of the entry's links, its neighbour strictly closer to the destination than the switch
    (``own``: the entry's own routing distance), its cost within the hysteresis of the shortest."""
    previous, hysteresis, scale = keep
    at = np.arange(len(best))
    match = links == previous[:, None]  # NO_LINK (-1) matches no link
    column = match.argmax(axis=1)
    slack = np.maximum(hysteresis.min_us * scale, hysteresis.fraction * shortest)
    stays = reachable & match[at, column] & (to_dst[at, column] < own) & (cost[at, column] <= shortest + slack)
    return np.where(stays, column, best)


def changed_entries(old: RoutePlan, new: RoutePlan) -> list[tuple[SwitchId, SwitchId]]:
    """(switch, destination switch) pairs whose primary or backup link changed."""
    since = new.recomputed_from
    if since is not None and since[0] is old.primary and since[1] is old.backup:
        at = since[2]  # new came from old: only these entries can differ
        differs = (old.primary.reshape(-1)[at] != new.primary.reshape(-1)[at]) | (
            old.backup.reshape(-1)[at] != new.backup.reshape(-1)[at]
        )
        rows, cols = np.divmod(at[differs], len(new.switches))
        return [(new.switches[r], new.switches[c]) for r, c in zip(rows.tolist(), cols.tolist(), strict=True)]
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
