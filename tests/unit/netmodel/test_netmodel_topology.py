"""netmodel.topology: an immutable switch graph, and the weight callable that hides unusable links."""

from __future__ import annotations

from dataclasses import replace

import networkx as nx
import pytest
from netmodel_helpers import snapshot

from netmodel.ids import PortNo, SwitchId
from netmodel.topology import Topology
from netmodel.types import DEFAULT_LATENCY_US, LinkAttrs, LinkId, Switch

A, B, C, D = SwitchId(1), SwitchId(2), SwitchId(3), SwitchId(4)


def sw(dpid: int, name: str | None = None) -> Switch:
    return Switch(id=SwitchId(dpid), name=name or f"s{dpid}")


def lid(src: int, src_port: int, dst: int, dst_port: int) -> LinkId:
    return LinkId(SwitchId(src), PortNo(src_port), SwitchId(dst), PortNo(dst_port))


def attrs(latency_us: int, *, up: bool = True, discovered: bool = True, measured: int | None = None) -> LinkAttrs:
    return LinkAttrs(
        capacity_mbps=100.0,
        declared_latency_us=latency_us,
        measured_latency_us=measured,
        up=up,
        discovered=discovered,
    )


def cable(src: int, src_port: int, dst: int, dst_port: int, la: LinkAttrs) -> dict[LinkId, LinkAttrs]:
    link = lid(src, src_port, dst, dst_port)
    return {link: la, link.reversed(): la}


def square() -> Topology:
    """A-B-C direct (1+1 ms) and A-D-C around (2+2 ms); all discovered and up."""
    links = {
        **cable(1, 1, 2, 1, attrs(1000)),
        **cable(2, 2, 3, 1, attrs(1000)),
        **cable(1, 2, 4, 1, attrs(2000)),
        **cable(4, 2, 3, 2, attrs(2000)),
    }
    return Topology({s.id: s for s in map(sw, (1, 2, 3, 4))}, links)


def path_of(topo: Topology, src: int, dst: int, **kw: bool) -> list[int]:
    return nx.shortest_path(topo.graph, src, dst, weight=topo.latency_weight(**kw))


# -- construction and reading --------------------------------------------------------------------


def test_empty_topology() -> None:
    topo = Topology()
    assert len(topo.switches) == 0
    assert len(topo.links) == 0
    assert topo.graph.number_of_nodes() == 0
    assert topo == Topology({}, {})


def test_graph_mirrors_switches_and_links() -> None:
    topo = square()
    assert set(topo.graph.nodes) == {A, B, C, D}
    assert topo.graph.number_of_edges() == len(topo.links) == 8
    for link in topo.links:
        assert topo.graph.has_edge(link.src, link.dst, key=link)
    assert isinstance(topo.graph, nx.MultiDiGraph)


def test_links_of_and_links_on_port() -> None:
    topo = square()
    assert set(topo.links_of(A)) == {lid(1, 1, 2, 1), lid(2, 1, 1, 1), lid(1, 2, 4, 1), lid(4, 1, 1, 2)}
    assert set(topo.links_on_port(A, PortNo(1))) == {lid(1, 1, 2, 1), lid(2, 1, 1, 1)}
    assert topo.links_on_port(A, PortNo(9)) == []


def test_equality_is_structural_not_identity() -> None:
    assert square() == square()
    assert square() != Topology()
    assert square().__eq__(42) is NotImplemented
    assert "4 switches, 8 links" in repr(square())


def test_link_id_reversed_and_ordering() -> None:
    link = lid(1, 2, 3, 4)
    assert link.reversed() == lid(3, 4, 1, 2)
    assert link.reversed().reversed() == link
    assert sorted([lid(2, 1, 1, 1), lid(1, 2, 2, 1), lid(1, 1, 2, 2)]) == [
        lid(1, 1, 2, 2),
        lid(1, 2, 2, 1),
        lid(2, 1, 1, 1),
    ]


def test_latency_prefers_measured_then_declared_then_default() -> None:
    assert LinkAttrs(capacity_mbps=1, declared_latency_us=5, measured_latency_us=7).latency_us == 7
    assert LinkAttrs(capacity_mbps=1, declared_latency_us=5).latency_us == 5
    assert LinkAttrs(capacity_mbps=1).latency_us == DEFAULT_LATENCY_US
    assert LinkAttrs(capacity_mbps=1, declared_latency_us=5, measured_latency_us=0).latency_us == 0


# -- immutability -----------------------------------------------------------------------------------


def test_topology_attributes_cannot_be_rebound_or_mutated() -> None:
    topo = square()
    with pytest.raises(AttributeError):
        topo.links = {}  # type: ignore[misc]
    with pytest.raises(AttributeError):
        topo.switches = {}  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del topo.links
    with pytest.raises(TypeError):
        topo.links[lid(9, 9, 9, 9)] = attrs(1)  # type: ignore[index]
    with pytest.raises(TypeError):
        topo.switches[SwitchId(9)] = sw(9)  # type: ignore[index]
    with pytest.raises(nx.NetworkXError):
        topo.graph.add_edge(A, C, key="x")
    with pytest.raises(nx.NetworkXError):
        topo.graph.remove_node(A)


def test_constructor_copies_the_callers_dicts() -> None:
    switches = {A: sw(1), B: sw(2)}
    links = dict(cable(1, 1, 2, 1, attrs(10)))
    topo = Topology(switches, links)
    switches[C] = sw(3)
    links.clear()
    assert set(topo.switches) == {A, B}
    assert len(topo.links) == 2


def test_with_switch_returns_new_topology_and_leaves_old_alone() -> None:
    old = square()
    before = snapshot(old)
    new = old.with_switch(sw(5))
    assert new is not old
    assert snapshot(old) == before
    assert SwitchId(5) in new.switches and SwitchId(5) in new.graph
    assert SwitchId(5) not in old.switches and SwitchId(5) not in old.graph
    assert nx.is_frozen(new.graph)


def test_with_switch_replacing_a_known_switch_shares_the_graph() -> None:
    old = square()
    new = old.with_switch(replace(old.switches[A], connected=True))
    assert new.switches[A].connected and not old.switches[A].connected
    assert new.graph is old.graph  # structure unchanged: no copy
    assert new.links == old.links


def test_with_link_adds_a_direction_and_copies_the_graph() -> None:
    old = square()
    before = snapshot(old)
    link = lid(1, 7, 3, 7)
    new = old.with_link(link, attrs(300))
    assert snapshot(old) == before
    assert link in new.links and link not in old.links
    assert link.reversed() not in new.links  # one direction only
    assert new.graph.has_edge(A, C, key=link) and not old.graph.has_edge(A, C)
    assert new.graph is not old.graph and nx.is_frozen(new.graph)


def test_with_link_replacing_attrs_keeps_graph() -> None:
    old = square()
    link = lid(1, 1, 2, 1)
    new = old.with_link(link, attrs(5, up=False))
    assert new.graph is old.graph
    assert not new.links[link].up and old.links[link].up


def test_a_change_shares_the_mapping_it_did_not_touch_and_freezes_the_new_one() -> None:
    old = square()
    link = lid(1, 1, 2, 1)
    for new in (old.with_link(link, attrs(5, up=False)), old.with_link_attrs({link: attrs(7)})):
        assert new.switches is old.switches  # readers skip work on an unchanged mapping by identity
        assert new.links is not old.links and old.links[link] == attrs(1000)
        assert list(new.links) == list(old.links)  # the same keys in the same order
        with pytest.raises(TypeError):
            new.links[link] = attrs(1)  # type: ignore[index]
    moved = old.with_switch(replace(old.switches[A], connected=True))
    assert moved.links is old.links and moved.switches is not old.switches
    with pytest.raises(TypeError):
        moved.switches[SwitchId(9)] = sw(9)  # type: ignore[index]


def test_with_link_needs_known_switches() -> None:
    topo = square()
    with pytest.raises(KeyError):
        topo.with_link(lid(1, 5, 99, 1), attrs(1))
    with pytest.raises(KeyError):
        topo.with_link(lid(99, 5, 1, 5), attrs(1))


def test_with_link_attrs_batch_and_unknown_links() -> None:
    old = square()
    before = snapshot(old)
    changes = {lid(1, 1, 2, 1): attrs(50), lid(2, 1, 1, 1): attrs(60)}
    new = old.with_link_attrs(changes)
    assert new.graph is old.graph
    assert new.links[lid(1, 1, 2, 1)].latency_us == 50
    assert new.links[lid(2, 1, 1, 1)].latency_us == 60
    assert snapshot(old) == before
    with pytest.raises(KeyError):
        old.with_link_attrs({lid(1, 9, 2, 9): attrs(1)})
    assert old.with_link_attrs({}) == old


def test_updated_links_skips_unchanged_and_returns_self_when_nothing_changes() -> None:
    topo = square()
    assert topo.updated_links([lid(1, 1, 2, 1)], up=True) is topo
    assert topo.updated_links([], up=False) is topo
    new = topo.updated_links([lid(1, 1, 2, 1), lid(2, 1, 1, 1)], up=False)
    assert not new.links[lid(1, 1, 2, 1)].up and not new.links[lid(2, 1, 1, 1)].up
    assert all(a.up for a in topo.links.values())


# -- the weight callable ---------------------------------------------------------------------------


def test_latency_weight_is_lowest_usable_parallel_link() -> None:
    topo = Topology(
        {A: sw(1), B: sw(2)},
        {lid(1, 1, 2, 1): attrs(500), lid(1, 2, 2, 2): attrs(300), lid(1, 3, 2, 3): attrs(100, up=False)},
    )
    weight = topo.latency_weight()
    assert weight(A, B, topo.graph[A][B]) == 300


def test_latency_weight_uses_measured_latency() -> None:
    topo = Topology({A: sw(1), B: sw(2)}, {lid(1, 1, 2, 1): attrs(500, measured=40)})
    assert topo.latency_weight()(A, B, topo.graph[A][B]) == 40


def test_latency_weight_hides_down_links() -> None:
    topo = Topology({A: sw(1), B: sw(2)}, {lid(1, 1, 2, 1): attrs(500, up=False)})
    assert topo.latency_weight()(A, B, topo.graph[A][B]) is None
    assert topo.latency_weight(require_discovered=True)(A, B, topo.graph[A][B]) is None


def test_latency_weight_require_discovered_hides_undiscovered() -> None:
    topo = Topology({A: sw(1), B: sw(2)}, {lid(1, 1, 2, 1): attrs(500, discovered=False)})
    assert topo.latency_weight()(A, B, topo.graph[A][B]) == 500
    assert topo.latency_weight(require_discovered=True)(A, B, topo.graph[A][B]) is None


def test_latency_weight_sees_the_links_of_its_own_topology_only() -> None:
    old = square()
    weight = old.latency_weight()
    new = old.updated_links([lid(1, 1, 2, 1)], up=False)
    assert weight(A, B, old.graph[A][B]) == 1000  # closure over the old, immutable links
    assert new.latency_weight()(A, B, new.graph[A][B]) is None


def test_is_usable() -> None:
    topo = Topology(
        {A: sw(1), B: sw(2)},
        {
            lid(1, 1, 2, 1): attrs(1),
            lid(1, 2, 2, 2): attrs(1, up=False),
            lid(1, 3, 2, 3): attrs(1, discovered=False),
        },
    )
    assert topo.is_usable(lid(1, 1, 2, 1), require_discovered=True)
    assert not topo.is_usable(lid(1, 2, 2, 2))
    assert topo.is_usable(lid(1, 3, 2, 3))
    assert not topo.is_usable(lid(1, 3, 2, 3), require_discovered=True)


# -- best_link -------------------------------------------------------------------------------------


def test_best_link_lowest_latency_then_port_order() -> None:
    topo = Topology(
        {A: sw(1), B: sw(2)},
        {
            lid(1, 5, 2, 5): attrs(200),
            lid(1, 3, 2, 9): attrs(100),
            lid(1, 2, 2, 8): attrs(100),
            lid(1, 1, 2, 1): attrs(50, up=False),
        },
    )
    assert topo.best_link(A, B) == lid(1, 2, 2, 8)  # tie at 100 us: lower source port wins
    assert topo.best_link(B, A) is None  # no link in that direction


def test_best_link_none_when_no_edge_or_unknown_switch() -> None:
    topo = square()
    assert topo.best_link(A, C) is None
    assert topo.best_link(A, SwitchId(99)) is None


def test_best_link_require_discovered() -> None:
    topo = Topology(
        {A: sw(1), B: sw(2)},
        {lid(1, 1, 2, 1): attrs(10, discovered=False), lid(1, 2, 2, 2): attrs(90)},
    )
    assert topo.best_link(A, B) == lid(1, 1, 2, 1)
    assert topo.best_link(A, B, require_discovered=True) == lid(1, 2, 2, 2)


# -- networkx algorithms over the weight callable ---------------------------------------------------


def test_shortest_path_takes_lowest_latency() -> None:
    topo = square()
    assert path_of(topo, 1, 3) == [1, 2, 3]
    assert nx.shortest_path_length(topo.graph, A, C, weight=topo.latency_weight()) == 2000


def test_shortest_path_avoids_a_down_link_without_copying_the_graph() -> None:
    topo = square().updated_links([lid(1, 1, 2, 1), lid(2, 1, 1, 1)], up=False)
    assert path_of(topo, 1, 3) == [1, 4, 3]
    assert nx.shortest_path_length(topo.graph, A, C, weight=topo.latency_weight()) == 4000
    assert path_of(topo, 3, 1) == [3, 4, 1]
    assert topo.graph.number_of_edges() == 8  # down links stay in the graph, hidden by the weight


def test_shortest_path_with_require_discovered() -> None:
    topo = square().updated_links([lid(2, 2, 3, 1)], discovered=False)
    assert path_of(topo, 1, 3) == [1, 2, 3]  # placement: declared links count
    assert path_of(topo, 1, 3, require_discovered=True) == [1, 4, 3]  # routing: only what LLDP saw
    assert path_of(topo, 3, 1, require_discovered=True) == [3, 2, 1]  # the other direction is discovered


def test_no_path_when_every_route_is_down() -> None:
    topo = square().updated_links(list(square().links_of(A)), up=False)
    with pytest.raises(nx.NetworkXNoPath):
        path_of(topo, 1, 3)
    assert nx.single_source_dijkstra_path_length(topo.graph, A, weight=topo.latency_weight()) == {A: 0}


def test_parallel_links_choose_the_faster_in_dijkstra() -> None:
    topo = Topology(
        {A: sw(1), B: sw(2), C: sw(3)},
        {
            lid(1, 1, 2, 1): attrs(900),
            lid(1, 2, 2, 2): attrs(100),
            lid(2, 3, 3, 1): attrs(100),
            lid(1, 3, 3, 2): attrs(250),
        },
    )
    assert path_of(topo, 1, 3) == [1, 2, 3]
    assert nx.shortest_path_length(topo.graph, A, C, weight=topo.latency_weight()) == 200
    slow = topo.updated_links([lid(1, 2, 2, 2)], up=False)
    assert path_of(slow, 1, 3) == [1, 3]
