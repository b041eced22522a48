"""sdnctl.pathing: latency-optimal primaries, loop-free alternates, and the diff between two plans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sdnctl_helpers import (
    RandomFabric,
    cables_of,
    connect_all,
    discover_all,
    fabric,
    link_between,
    live,
    random_fabrics,
    reference_distances,
    walk_primaries,
)

from netmodel import events as ev
from netmodel.fabric import build_state
from netmodel.fabric_file import parse_fabric
from netmodel.ids import PortNo, SwitchId
from netmodel.state import FabricState
from netmodel.types import Port
from sdnctl.pathing import NO_LINK, Route, RoutePlan, changed_entries, compute_routes

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "edge-cloud.yaml"

A, B, C, D = SwitchId(1), SwitchId(2), SwitchId(3), SwitchId(4)

# a-b-d costs 1 + 1 ms, a-c-d 10 + 10 ms. Ports in file order: a:1 to b, a:2 to c, a:3 the host.
DIAMOND = """
switches:
  - {id: a, dpid: 1, site: s}
  - {id: b, dpid: 2, site: s}
  - {id: c, dpid: 3, site: s}
  - {id: d, dpid: 4, site: s}
links:
  - {a: a, b: b, latency_ms: 1, bandwidth_mbps: 100}
  - {a: b, b: d, latency_ms: 1, bandwidth_mbps: 100}
  - {a: a, b: c, latency_ms: 10, bandwidth_mbps: 100}
  - {a: c, b: d, latency_ms: 10, bandwidth_mbps: 100}
hosts:
  - {id: ha, switch: a, ip: 10.0.0.1}
  - {id: hd, switch: d, ip: 10.0.0.4}
"""


def diamond() -> FabricState:
    return live(fabric(DIAMOND))


def route_of(plan: RoutePlan, src: str, dst: str) -> Route:
    route = plan.route(src, dst)
    assert route is not None, f"no route {src} -> {dst}"
    return route


def route_links_latency(state: FabricState, links: tuple) -> int:
    return sum(state.topology.links[link].latency_us for link in links)


# -- hand-built fabrics ----------------------------------------------------------------------------


def test_diamond_picks_the_2ms_path() -> None:
    state = diamond()
    plan = compute_routes(state)
    route = plan.route("ha", "hd")
    assert route is not None
    assert route.path == (A, B, D)
    assert route.latency_us == 2000
    assert route.latency_us == route_links_latency(state, route.links)
    back = plan.route("hd", "ha")
    assert back is not None and back.path == (D, B, A) and back.latency_us == 2000


def test_diamond_backup_is_the_other_way_round() -> None:
    plan = compute_routes(diamond())
    primary, backup = plan.next_hop(A, D)
    assert primary is not None and (primary.dst, primary.src_port) == (B, PortNo(1))
    assert backup is not None and (backup.dst, backup.src_port) == (C, PortNo(2))


def test_every_route_of_the_example_fabric_costs_the_sum_of_its_links() -> None:
    state = live(build_state(parse_fabric(EXAMPLE.read_text(), str(EXAMPLE))))
    plan = compute_routes(state)
    reference = reference_distances(state)
    routes = list(plan.routes())
    names = sorted(plan.endpoints)
    assert len(routes) == len(names) * (len(names) - 1)  # the example fabric is connected
    for route in routes:
        assert route.latency_us == route_links_latency(state, route.links)
        src, dst = route.path[0], route.path[-1]
        assert route.latency_us == reference[src][dst]
        assert [link.src for link in route.links] == list(route.path[:-1])
        assert [link.dst for link in route.links] == list(route.path[1:])


def test_a_down_link_is_avoided_and_used_again_when_up() -> None:
    state = diamond()
    ab = link_between(state, A, B)
    down = state.apply(ev.LinkWentDown(ab))
    route = compute_routes(down).route("ha", "hd")
    assert route is not None and route.path == (A, C, D) and route.latency_us == 20_000
    back = compute_routes(down).route("hd", "ha")
    assert back is not None and back.path == (D, C, A)  # LinkWentDown is the cable: both directions
    assert ab not in back.links and ab.reversed() not in back.links
    up = down.apply(ev.LinkCameUp(ab))
    assert route_of(compute_routes(up), "ha", "hd").path == (A, B, D)


def test_a_port_going_down_takes_its_link_out_of_the_routes() -> None:
    state = diamond().apply(ev.PortStatusChanged(B, Port(PortNo(2), up=False)))  # b's port to d
    route = compute_routes(state).route("ha", "hd")
    assert route is not None and route.path == (A, C, D)


def test_undiscovered_links_are_not_used() -> None:
    declared = connect_all(fabric(DIAMOND))
    ab = link_between(declared, A, B)
    state = discover_all(declared, [link for link in declared.topology.links if link not in (ab, ab.reversed())])
    plan = compute_routes(state)
    assert ab not in plan.links and ab.reversed() not in plan.links
    assert route_of(plan, "ha", "hd").path == (A, C, D)
    # One direction discovered: usable that way only.
    one_way = state.apply(ev.LinkDiscovered(ab, 1.0))
    plan = compute_routes(one_way)
    assert route_of(plan, "ha", "hd").path == (A, B, D)
    assert ab.reversed() not in route_of(plan, "hd", "ha").links
    assert route_of(plan, "hd", "ha").latency_us == 20_000


def test_nothing_is_routed_before_discovery() -> None:
    plan = compute_routes(connect_all(fabric(DIAMOND)))
    assert plan.links == ()
    assert plan.route("ha", "hd") is None
    assert plan.next_hop(A, D) == (None, None)


def test_disconnected_switches_are_excluded() -> None:
    state = diamond().apply(ev.SwitchDisconnected(B, 5.0))
    plan = compute_routes(state)
    assert B not in plan.switches
    assert all(B not in (link.src, link.dst) for link in plan.links)
    assert route_of(plan, "ha", "hd").path == (A, C, D)


def test_switches_never_connected_are_excluded_even_with_discovered_links() -> None:
    declared = fabric(DIAMOND)
    state = discover_all(connect_all(declared, [A, C, D]))
    plan = compute_routes(state)
    assert plan.switches == (A, C, D)
    assert route_of(plan, "ha", "hd").path == (A, C, D)


def test_an_endpoint_on_a_disconnected_switch_has_no_routes() -> None:
    plan = compute_routes(diamond().apply(ev.SwitchDisconnected(D, 5.0)))
    assert "hd" not in plan.endpoints
    assert list(plan.routes()) == []


def test_parallel_links_pick_the_lower_latency_one_and_keep_the_other_as_backup() -> None:
    state = live(
        fabric(
            """
switches:
  - {id: a, dpid: 1, site: s}
  - {id: b, dpid: 2, site: s}
links:
  - {a: a, b: b, latency_ms: 5, bandwidth_mbps: 100}
  - {a: a, b: b, latency_ms: 1, bandwidth_mbps: 100}
  - {a: a, b: b, latency_ms: 3, bandwidth_mbps: 100}
hosts:
  - {id: hb, switch: b, ip: 10.0.0.2}
"""
        )
    )
    plan = compute_routes(state)
    primary, backup = plan.next_hop(A, B)
    assert primary == link_between(state, A, B, 1000)
    assert backup == link_between(state, A, B, 3000)  # the same neighbour: always loop-free
    assert plan.distance_us[plan.index[A], plan.index[B]] == 1000
    assert plan.path(A, B) == (primary,)


ZERO_TRIANGLE = """
switches:
  - {id: a, dpid: 1, site: s}
  - {id: b, dpid: 2, site: s}
  - {id: c, dpid: 3, site: s}
links:
  - {a: a, b: b, latency_ms: 0, bandwidth_mbps: 100}
  - {a: a, b: c, latency_ms: 5, bandwidth_mbps: 100}
  - {a: b, b: c, latency_ms: 5, bandwidth_mbps: 100}
hosts:
  - {id: hc, switch: c, ip: 10.0.0.3}
"""


def test_zero_latency_links_do_not_make_forwarding_loops() -> None:
    """a and b are equally far (5 ms) from c: each must not pick the other as next hop.

    Regression: with raw latencies as Dijkstra weights, a pointed at b and b at a for destination c.
    """
    state = live(fabric(ZERO_TRIANGLE))
    plan = compute_routes(state)
    for src in (A, B):
        hops = walk_primaries(plan, src, C)
        assert hops is not None, f"primaries from {src} loop or dead-end"
        assert route_links_latency(state, tuple(hops)) == 5000
        assert plan.path(src, C) == tuple(hops)
        assert len(hops) == 1  # equal latency: the path with fewer hops wins
        _, backup = plan.next_hop(src, C)
        assert backup is not None and backup.dst != C  # the 0-latency detour over the other switch


def test_a_zero_latency_chain_is_used() -> None:
    state = live(
        fabric(
            """
switches:
  - {id: a, dpid: 1, site: s}
  - {id: b, dpid: 2, site: s}
  - {id: c, dpid: 3, site: s}
links:
  - {a: a, b: b, latency_ms: 0, bandwidth_mbps: 100}
  - {a: b, b: c, latency_ms: 0, bandwidth_mbps: 100}
  - {a: a, b: c, latency_ms: 0.001, bandwidth_mbps: 100}
"""
        )
    )
    plan = compute_routes(state)
    assert plan.distance_us[plan.index[A], plan.index[C]] == 0
    assert plan.path(A, C) is not None and [link.dst for link in plan.path(A, C)] == [B, C]


def test_measured_latency_wins_and_may_differ_per_direction() -> None:
    state = diamond()
    ab, bd = link_between(state, A, B), link_between(state, B, D)
    slow = state.apply(ev.LinkLatencyMeasured(((ab, 30_000), (bd, 30_000)), 1.0))
    plan = compute_routes(slow)
    assert route_of(plan, "ha", "hd").path == (A, C, D)
    assert route_of(plan, "hd", "ha").path == (D, B, A)  # the other direction is still fast
    assert route_of(plan, "hd", "ha").latency_us == 2000


def test_unreachable_switches_have_no_next_hop_and_infinite_distance() -> None:
    state = live(
        fabric(
            """
switches:
  - {id: a, dpid: 1, site: s}
  - {id: b, dpid: 2, site: s}
  - {id: c, dpid: 3, site: s}
  - {id: d, dpid: 4, site: s}
links:
  - {a: a, b: b, latency_ms: 1, bandwidth_mbps: 100}
  - {a: c, b: d, latency_ms: 1, bandwidth_mbps: 100}
hosts:
  - {id: ha, switch: a, ip: 10.0.0.1}
  - {id: hb, switch: b, ip: 10.0.0.2}
  - {id: hd, switch: d, ip: 10.0.0.4}
"""
        )
    )
    plan = compute_routes(state)
    assert plan.next_hop(A, D) == (None, None)
    assert not np.isfinite(plan.distance_us[plan.index[A], plan.index[D]])
    assert plan.path(A, D) is None
    assert plan.route("ha", "hd") is None
    assert {(r.src, r.dst) for r in plan.routes()} == {("ha", "hb"), ("hb", "ha")}


def test_an_empty_fabric_gives_an_empty_plan() -> None:
    plan = compute_routes(FabricState())
    assert plan.switches == () and plan.links == ()
    assert list(plan.routes()) == []
    assert changed_entries(plan, compute_routes(FabricState())) == []


# -- properties over random connected fabrics --------------------------------------------------------


@SETTINGS
@given(random_fabrics())
def test_primaries_follow_latency_shortest_paths(rf: RandomFabric) -> None:
    state = rf.state()
    plan = compute_routes(state)
    reference = reference_distances(state)
    for s in plan.switches:
        for d in plan.switches:
            i, j = plan.index[s], plan.index[d]
            if s == d:
                assert plan.next_hop(s, d) == (None, None)
                assert plan.distance_us[i, j] == 0
                continue
            assert d in reference[s]  # random fabrics are connected
            hops = walk_primaries(plan, s, d)
            assert hops is not None, f"primaries from {s} to {d} loop or dead-end"
            assert route_links_latency(state, tuple(hops)) == reference[s][d]
            assert plan.distance_us[i, j] == reference[s][d]
            assert plan.path(s, d) == tuple(hops)


@SETTINGS
@given(random_fabrics())
def test_backups_are_loop_free_alternates(rf: RandomFabric) -> None:
    state = rf.state()
    plan = compute_routes(state)
    usable = set(plan.links)
    for s in plan.switches:
        for d in plan.switches:
            primary, backup = plan.next_hop(s, d)
            if backup is None:
                continue
            assert primary is not None and backup != primary
            assert backup.src == s and backup in usable
            if backup.dst == d:
                continue
            after = walk_primaries(plan, backup.dst, d)
            assert after is not None
            assert all(link.dst != s for link in after), f"backup {backup} for {s}->{d} comes back to {s}"


@SETTINGS
@given(random_fabrics(), st.integers(0, 1000), st.booleans())
def test_changed_entries_after_a_link_failure_are_exactly_the_moved_next_hops(
    rf: RandomFabric, pick: int, reverse: bool
) -> None:
    state = rf.state()
    cables = cables_of(state)
    failed = cables[pick % len(cables)]
    failed = failed.reversed() if reverse else failed
    before = compute_routes(state)
    after = compute_routes(state.apply(ev.LinkWentDown(failed)))
    changed = changed_entries(before, after)
    assert len(changed) == len(set(changed))
    moved = {(s, d) for s in after.switches for d in after.switches if before.next_hop(s, d) != after.next_hop(s, d)}
    assert set(changed) == moved
    dead = {failed, failed.reversed()}
    for s in before.switches:
        for d in before.switches:
            if set(before.next_hop(s, d)) & dead:
                assert (s, d) in moved
    # ... and the way back: bringing the link up again changes the same kind of set.
    restored = compute_routes(state.apply(ev.LinkWentDown(failed)).apply(ev.LinkCameUp(failed)))
    assert set(changed_entries(after, restored)) == {
        (s, d) for s in after.switches for d in after.switches if after.next_hop(s, d) != restored.next_hop(s, d)
    }
    assert changed_entries(before, restored) == []


def test_changed_entries_of_equal_plans_is_empty_and_of_new_switch_sets_is_everything() -> None:
    state = diamond()
    assert changed_entries(compute_routes(state), compute_routes(state)) == []
    smaller = compute_routes(state.apply(ev.SwitchDisconnected(C, 1.0)))
    every = changed_entries(compute_routes(state), smaller)
    assert set(every) == {(s, d) for s in smaller.switches for d in smaller.switches}


def test_no_link_marks_absent_next_hops() -> None:
    plan = compute_routes(diamond())
    assert (np.diag(plan.primary) == NO_LINK).all() and (np.diag(plan.backup) == NO_LINK).all()
