"""Shared helpers for the sdnctl tests (imported by name; deliberately not a conftest.py).

Fabrics are built the way the controller sees them: a fabric file (or a ``FabricSpec``) gives the
declared state, then ``SwitchConnected`` and ``LinkDiscovered`` events bring it to life.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import networkx as nx
import pytest
from hypothesis import strategies as st

from netmodel import events as ev
from netmodel.fabric import CableSpec, FabricSpec, HostSpec, SwitchSpec, build_state
from netmodel.fabric_file import parse_fabric
from netmodel.ids import HostId, PortNo, SiteId, SwitchId
from netmodel.state import FabricState
from netmodel.types import LinkId, Site, Tier
from sdnctl import pathing
from sdnctl.flows import FlowSpec, SwitchConfig, SwitchDelta
from sdnctl.pathing import RoutePlan

HEADER = """
name: t
subnet: 10.0.0.0/16
sites: [{id: s, tier: edge, region: r}]
"""


def connect_all(state: FabricState, switches: Iterable[SwitchId] | None = None) -> FabricState:
    for switch in sorted(state.topology.switches if switches is None else switches):
        state = state.apply(ev.SwitchConnected(switch, (), 0.0))
    return state


def discover_all(state: FabricState, links: Iterable[LinkId] | None = None) -> FabricState:
    for link in sorted(state.topology.links if links is None else links):
        state = state.apply(ev.LinkDiscovered(link, 0.0))
    return state


def live(state: FabricState) -> FabricState:
    """Every switch connected, every declared link discovered."""
    return discover_all(connect_all(state))


def fabric(body: str) -> FabricState:
    """A fabric file body (switches, links, hosts) under a one-site header, declared only."""
    return build_state(parse_fabric(HEADER + body))


def link_between(state: FabricState, a: int, b: int, latency_us: int | None = None) -> LinkId:
    """The one link a -> b (of that latency, when given)."""
    found = [
        link
        for link, attrs in state.topology.links.items()
        if link.src == a and link.dst == b and (latency_us is None or attrs.latency_us == latency_us)
    ]
    assert len(found) == 1, found
    return found[0]


def wiring(state: FabricState) -> dict[tuple[SwitchId, PortNo], SwitchId]:
    """The physical cabling (every declared or discovered link, up or down): for trace_ipv4."""
    return {(link.src, link.src_port): link.dst for link in state.topology.links}


def reference_distances(state: FabricState) -> dict[SwitchId, dict[SwitchId, float]]:
    """networkx's Dijkstra over connected switches and usable, discovered links: the oracle."""
    topo = state.topology
    connected = [s for s, switch in topo.switches.items() if switch.connected]
    graph = topo.graph.subgraph(connected)
    weight = topo.latency_weight(require_discovered=True)
    return {s: nx.single_source_dijkstra_path_length(graph, s, weight=weight) for s in connected}


def apply_delta_to(current: SwitchConfig, delta: SwitchDelta) -> SwitchConfig:
    """What a switch holds after the delta, as OVS does it with OpenFlow 1.3: deletes remove, adds add
    (or replace an entry of the same key), modifies replace the actions of an entry by key and keep
    its cookie."""
    flows = {f.key: f for f in current.flows}
    groups = {g.group_id: g for g in current.groups}
    meters = {m.meter_id: m for m in current.meters}
    for m in (*delta.add_meters, *delta.modify_meters):
        meters[m.meter_id] = m
    for g in (*delta.add_groups, *delta.modify_groups):
        groups[g.group_id] = g
    for f in delta.add_flows:
        flows[f.key] = f
    for f in delta.modify_flows:
        kept = flows.get(f.key)
        flows[f.key] = f if kept is None else FlowSpec(f.table, f.priority, f.match, f.actions, kept.cookie)
    for f in delta.delete_flows:
        del flows[f.key]
    for g in delta.delete_groups:
        del groups[g.group_id]
    for m in delta.delete_meters:
        del meters[m.meter_id]
    return SwitchConfig(frozenset(flows.values()), frozenset(groups.values()), frozenset(meters.values()))


def walk_primaries(plan: RoutePlan, start: SwitchId, dst: SwitchId) -> list[LinkId] | None:
    """The links primaries lead over from start towards dst; None on a dead end or a loop."""
    hops: list[LinkId] = []
    seen = {start}
    here = start
    while here != dst:
        primary, _ = plan.next_hop(here, dst)
        if primary is None:
            return None
        hops.append(primary)
        here = primary.dst
        if here in seen:
            return None
        seen.add(here)
    return hops


# -- random fabrics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RandomFabric:
    spec: FabricSpec
    asymmetric: tuple[tuple[int, int, int], ...]  # (cable index, direction 0/1, measured latency us)

    def state(self) -> FabricState:
        state = live(build_state(self.spec))
        if self.asymmetric:
            cables = self.spec.cables
            measured = []
            for index, direction, latency_us in self.asymmetric:
                cable = cables[index % len(cables)]
                a, b = self.spec.dpid_of(cable.a), self.spec.dpid_of(cable.b)
                link = LinkId(a, cable.a_port, b, cable.b_port)
                measured.append((link.reversed() if direction else link, latency_us))
            state = state.apply(ev.LinkLatencyMeasured(tuple(measured), 1.0))
        return state


LATENCIES_MS = (0.0, 0.0, 0.001, 0.5, 1.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0)


@st.composite
def random_fabrics(draw: st.DrawFn, min_switches: int = 2, max_switches: int = 8) -> RandomFabric:
    """A connected fabric: a random tree plus extra cables (parallel ones too), latencies with many
    ties and zeros, a host on most switches, sometimes asymmetric measured latencies."""
    n = draw(st.integers(min_switches, max_switches))
    pairs = [(draw(st.integers(0, i - 1)), i) for i in range(1, n)]
    extra = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=n + 2))
    pairs += [(a, b) for a, b in extra if a != b]
    next_port = [1] * n

    def port(i: int) -> PortNo:
        next_port[i] += 1
        return PortNo(next_port[i] - 1)

    cables = []
    for a, b in pairs:
        latency = draw(st.sampled_from(LATENCIES_MS))
        cables.append(CableSpec(f"s{a}", port(a), f"s{b}", port(b), latency, 100.0))
    with_host = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    hosts = tuple(
        HostSpec(HostId(f"h{i}"), f"s{i}", port(i), f"10.0.{i}.1", f"02:00:00:00:{i:02x}:01")
        for i in range(n)
        if with_host[i] or i == 0
    )
    spec = FabricSpec(
        name="random",
        prefix_len=16,
        sites=(Site(SiteId("s"), Tier.EDGE, "r"),),
        switches=tuple(SwitchSpec(f"s{i}", SwitchId(i + 1), SiteId("s")) for i in range(n)),
        cables=tuple(cables),
        hosts=hosts,
        nodes=(),
        services=(),
    )
    asymmetric = draw(
        st.lists(
            st.tuples(st.integers(0, 1000), st.integers(0, 1), st.sampled_from([0, 1, 700, 1000, 4000, 15000])),
            max_size=3,
        )
    )
    return RandomFabric(spec, tuple(asymmetric))


def link_actions(max_size: int) -> st.SearchStrategy[list[tuple[str, int, int]]]:
    """Sequences of ``link_step`` actions: a cable down, up, or measured at a new latency (us)."""
    step = st.tuples(
        st.sampled_from(["down", "up", "latency"]), st.integers(0, 1000), st.sampled_from([0, 5, 900, 30000])
    )
    return st.lists(step, min_size=1, max_size=max_size)


def link_step(state: FabricState, action: tuple[str, int, int], *, both_ways: bool = False) -> FabricState:
    """``state`` after ``action``: (``down`` | ``up`` | ``latency``, which cable, its new latency in us),
    the latency measured on one direction of the cable or, ``both_ways``, on both."""
    kind, pick, latency = action
    cables = cables_of(state)
    link = cables[pick % len(cables)]
    if kind == "down":
        return state.apply(ev.LinkWentDown(link))
    if kind == "up":
        return state.apply(ev.LinkCameUp(link))
    measured = ((link, latency), (link.reversed(), latency)) if both_ways else ((link, latency),)
    return state.apply(ev.LinkLatencyMeasured(measured, 2.0))


def cables_of(state: FabricState) -> list[LinkId]:
    """One LinkId per cable (the lower of its two directions)."""
    return sorted({min(link, link.reversed()) for link in state.topology.links})


def configs_equal(a: Mapping[SwitchId, SwitchConfig], b: Mapping[SwitchId, SwitchConfig]) -> bool:
    return set(a) == set(b) and all(a[s] == b[s] for s in a)


# -- the two incremental route paths ---------------------------------------------------------------------

# Both incremental paths: plain Python (every fabric counts as small) and numpy (none does).
PATHS = pytest.mark.parametrize("small_fabric", [1 << 30, 0], ids=["python", "numpy"])


# The same three ways: plain Python, numpy applying the changed links one by one, and numpy as for a
# batch of many changed links (every distance recomputed at once, next hops chosen per out-degree).
ROUTE_PATHS = pytest.mark.parametrize(
    ("small_fabric", "links_one_by_one"),
    [(1 << 30, 1 << 30), (0, 1 << 30), (0, 0)],
    ids=["python", "numpy", "numpy-batch"],
)


@contextmanager
def route_path(small_fabric: int, links_one_by_one: int) -> Iterator[None]:
    """``pathing.SMALL_FABRIC`` and ``pathing.INCREMENTAL_LINKS_MIN`` set for the block (the test
    fabrics are small enough that the latter alone is ``incremental_limit``); with none one by one,
    ``pathing.PASS_COST_CELLS`` as well, so low that next hops are chosen per out-degree."""
    saved = pathing.INCREMENTAL_LINKS_MIN, pathing.PASS_COST_CELLS
    pathing.INCREMENTAL_LINKS_MIN = links_one_by_one
    if links_one_by_one == 0:
        pathing.PASS_COST_CELLS = -(1 << 30)
    try:
        with small_fabric_limit(small_fabric):
            yield
    finally:
        pathing.INCREMENTAL_LINKS_MIN, pathing.PASS_COST_CELLS = saved


@contextmanager
def small_fabric_limit(limit: int) -> Iterator[None]:
    """``pathing.SMALL_FABRIC`` set to ``limit`` for the block."""
    saved = pathing.SMALL_FABRIC
    pathing.SMALL_FABRIC = limit
    try:
        yield
    finally:
        pathing.SMALL_FABRIC = saved
