"""netmodel.graph: the one matrix rule (parallel links: min; 0 is an edge; None/inf: no edge) agrees
with networkx's Dijkstra on the same weight rule, on random multigraphs."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netmodel.graph import arc_matrix, arcs_into, link_matrix, networkx_weight, shortest_distances, usable_latency
from netmodel.ids import PortNo, SwitchId
from netmodel.topology import Topology
from netmodel.types import LinkAttrs, LinkId, Switch

LATENCIES = st.sampled_from([0, 0, 1, 2, 5, 10, 250, 1000])


@st.composite
def multigraphs(draw: st.DrawFn) -> Topology:
    """Up to 7 switches; links with parallels, 0 us latencies, down and undiscovered ones, self-loops."""
    n = draw(st.integers(1, 7))
    switches = {SwitchId(i): Switch(SwitchId(i), f"s{i}") for i in range(1, n + 1)}
    links: dict[LinkId, LinkAttrs] = {}
    for port, (src, dst) in enumerate(
        draw(st.lists(st.tuples(st.integers(1, n), st.integers(1, n)), max_size=24)), start=1
    ):
        link = LinkId(SwitchId(src), PortNo(port), SwitchId(dst), PortNo(port))
        links[link] = LinkAttrs(
            1000,
            declared_latency_us=draw(LATENCIES),
            up=draw(st.booleans()) or draw(st.booleans()),
            discovered=draw(st.booleans()),
        )
    return Topology(switches, links)


@settings(max_examples=300, deadline=None)
@given(multigraphs(), st.booleans())
def test_matrix_distances_equal_networkx_dijkstra(topo: Topology, require_discovered: bool) -> None:
    rule = usable_latency(require_discovered=require_discovered)
    matrix, index = link_matrix(topo, rule)
    distances = shortest_distances(matrix)
    expected = dict(nx.all_pairs_dijkstra_path_length(topo.graph, weight=networkx_weight(topo, rule)))
    for u, i in index.items():
        for v, j in index.items():
            want = expected[u].get(v, math.inf)
            assert distances[i, j] == want, (u, v)


@settings(max_examples=100, deadline=None)
@given(multigraphs())
def test_latency_weight_is_the_matrix_rule(topo: Topology) -> None:
    for require_discovered in (False, True):
        ours = topo.latency_weight(require_discovered=require_discovered)
        rule = networkx_weight(topo, usable_latency(require_discovered=require_discovered))
        for u, v in topo.graph.edges():
            keyed = topo.graph[u][v]
            assert ours(u, v, keyed) == rule(u, v, keyed)


def test_zero_weight_is_an_edge_and_parallel_links_keep_the_lowest() -> None:
    src = np.array([0, 0, 1, 1], dtype=np.int64)
    dst = np.array([1, 1, 2, 2], dtype=np.int64)
    weight = np.array([7.0, 0.0, np.inf, 3.0])
    distances = shortest_distances(arc_matrix(3, src, dst, weight))
    assert distances[0].tolist() == [0.0, 0.0, 3.0]
    assert distances[2].tolist() == [math.inf, math.inf, 0.0]


def test_a_negative_weight_is_refused() -> None:
    one = np.array([0], dtype=np.int64)
    with pytest.raises(ValueError, match="negative"):
        arc_matrix(2, one, one + 1, np.array([-1.0]))


def test_switches_pick_the_nodes_and_their_order() -> None:
    a, b, c = SwitchId(1), SwitchId(2), SwitchId(3)
    switches = {s: Switch(s, str(s)) for s in (a, b, c)}
    links = {
        LinkId(a, PortNo(1), b, PortNo(1)): LinkAttrs(1000, declared_latency_us=4),
        LinkId(b, PortNo(2), c, PortNo(2)): LinkAttrs(1000, declared_latency_us=5),
    }
    matrix, index = link_matrix(Topology(switches, links), usable_latency(), switches=(b, a))
    assert dict(index) == {b: 0, a: 1}
    assert shortest_distances(matrix).tolist() == [[0.0, math.inf], [4.0, 0.0]]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), st.sampled_from([0.0, 1.0, 2.0, 7.0]))),
        )
    )
)
def test_arcs_grouped_by_head_give_the_same_distances_as_the_matrix_rule(graph: tuple[int, list]) -> None:
    """Parallel arcs stay in the in-arc form: the lowest counts, zeros are edges, as in arc_matrix."""
    n, arcs = graph
    arcs = sorted(arcs, key=lambda arc: arc[1])  # grouped by the node they lead to
    src = np.array([a for a, _, _ in arcs], dtype=np.int64)
    dst = np.array([b for _, b, _ in arcs], dtype=np.int64)
    weight = np.array([w for _, _, w in arcs], dtype=np.float64)
    grouped = arcs_into(n, np.bincount(dst, minlength=n), src, weight)
    assert np.array_equal(shortest_distances(grouped), shortest_distances(arc_matrix(n, src, dst, weight)))


def test_arcs_into_refuses_negative_and_infinite_weights() -> None:
    for bad in (-1.0, math.inf):
        with pytest.raises(ValueError, match="finite and >= 0"):
            arcs_into(2, np.array([0, 1]), np.array([0]), np.array([bad]))
