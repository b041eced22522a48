"""Route latency host -> node against hand-computed paths of examples/edge-cloud.yaml.

The file's one-way latencies (ms): ea1-m1 2, ea1-m2 5, eb1-m2 2, eb1-m3 6, ec1-m3 2, ec1-m1 7,
ring m1-m2-m3-m1 1 each, m1-c1 10, m3-c2 12, c1-c2 0.5. Hosts u1/u2/u3 sit on ea1/eb1/ec1; nodes
ea-n1 ea1, eb-n1 eb1, ec-n1 ec1, m-n1 m2, c-n1 c1, c-n2 c2.
"""

from __future__ import annotations

import pytest

from netmodel.events import LinkCameUp, LinkLatencyMeasured, LinkWentDown, SwitchConnected, SwitchDisconnected
from netmodel.ids import HostId, NodeId
from placement.latency import LatencyCache, compute_switch_latencies, latency_ms
from tests.unit.placement.helpers import apply, dpid, example_state, link

HAND_COMPUTED = [
    ("u1", "ea-n1", 0.0),  # same switch
    ("u1", "m-n1", 3.0),  # ea1-m1 2 + m1-m2 1 (beats the direct ea1-m2 at 5)
    ("u1", "c-n1", 12.0),  # ea1-m1 2 + m1-c1 10
    ("u1", "c-n2", 12.5),  # ... + c1-c2 0.5 (beats m3-c2 12)
    ("u1", "eb-n1", 5.0),  # ea1-m1 2 + m1-m2 1 + m2-eb1 2
    ("u2", "m-n1", 2.0),
    ("u3", "m-n1", 3.0),  # ec1-m3 2 + m3-m2 1
    ("u3", "c-n2", 13.5),  # ec1-m3 2 + m3-m1 1 + m1-c1 10 + c1-c2 0.5 (beats m3-c2 at 14)
    ("u3", "ea-n1", 5.0),  # ec1-m3 2 + m3-m1 1 + m1-ea1 2 (beats ec1-m1 at 7+2)
]


@pytest.mark.parametrize(("host", "node", "expected"), HAND_COMPUTED)
def test_route_latency_matches_hand_computed_paths(host: str, node: str, expected: float) -> None:
    assert latency_ms(example_state(), HostId(host), NodeId(node)) == pytest.approx(expected)


def test_a_measured_latency_wins_over_the_declared_one() -> None:
    state = example_state()
    slow = link(state, "ea1", "m1")
    state = apply(state, LinkLatencyMeasured(((slow, 6000),), at=1.0))
    # ea1-m1 now 6: the direct ea1-m2 (5) is best to m2; to c1 it is 5 + m2-m1 1 + 10 = 16 vs 6 + 10.
    assert latency_ms(state, HostId("u1"), NodeId("m-n1")) == pytest.approx(5.0)
    assert latency_ms(state, HostId("u1"), NodeId("c-n1")) == pytest.approx(16.0)


def test_a_link_known_down_is_not_used_and_counts_again_when_up() -> None:
    state = example_state()
    cable = link(state, "ea1", "m1")
    down = apply(state, LinkWentDown(cable))
    assert latency_ms(down, HostId("u1"), NodeId("m-n1")) == pytest.approx(5.0)
    assert latency_ms(down, HostId("u1"), NodeId("c-n1")) == pytest.approx(16.0)
    up = apply(down, LinkCameUp(cable))
    assert latency_ms(up, HostId("u1"), NodeId("m-n1")) == pytest.approx(3.0)


def test_declared_links_count_before_any_switch_connects() -> None:
    state = example_state()
    assert not any(s.connected for s in state.topology.switches.values())
    assert latency_ms(state, HostId("u2"), NodeId("c-n1")) == pytest.approx(13.0)


def test_a_disconnected_switch_cuts_its_nodes_off() -> None:
    state = apply(example_state(), SwitchConnected(dpid("c1"), (), at=1.0), SwitchDisconnected(dpid("c1"), at=2.0))
    assert latency_ms(state, HostId("u1"), NodeId("c-n1")) == float("inf")
    assert latency_ms(state, HostId("u1"), NodeId("c-n2")) == pytest.approx(15.0)  # ea1-m1 2 + m1-m3 1 + m3-c2 12


def test_cache_is_per_topology_object() -> None:
    state = example_state()
    cache = LatencyCache()
    first = cache.of(state.topology)
    assert cache.of(state.topology) is first
    changed = apply(state, LinkWentDown(link(state, "m1", "c1")))
    assert cache.of(changed.topology) is not first
    assert not first.distance_us.flags.writeable
    assert latency_ms(changed, HostId("u1"), NodeId("c-n1"), cache) == latency_ms(changed, HostId("u1"), NodeId("c-n1"))


def test_nothing_is_cached_without_a_cache_holder() -> None:
    state = example_state()
    first = compute_switch_latencies(state.topology)
    assert compute_switch_latencies(state.topology) is not first
    assert first.distance_us.tolist() == compute_switch_latencies(state.topology).distance_us.tolist()


def test_zero_latency_links_are_edges() -> None:
    state = example_state()
    c1c2 = link(state, "c1", "c2")
    state = apply(state, LinkLatencyMeasured(((c1c2, 0), (c1c2.reversed(), 0)), at=1.0))
    assert latency_ms(state, HostId("u1"), NodeId("c-n2")) == pytest.approx(12.0)
