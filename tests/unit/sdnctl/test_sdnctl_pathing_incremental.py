"""compute_routes(state, previous=...) without hysteresis must give exactly the plan a full recompute gives
(test_sdnctl_pathing_hysteresis.py: the same with it)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sdnctl_helpers import (
    PATHS,
    ROUTE_PATHS,
    RandomFabric,
    cables_of,
    link_actions,
    link_step,
    random_fabrics,
    route_path,
    small_fabric_limit,
)

from netmodel import events as ev
from netmodel.ids import HostId, SwitchId
from netmodel.state import FabricState
from netmodel.types import map_with
from sdnctl.pathing import RoutePlan, changed_entries, compute_routes

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same_plan(a: RoutePlan, b: RoutePlan) -> bool:
    return (
        a.switches == b.switches
        and a.links == b.links
        and np.array_equal(a.primary, b.primary)
        and np.array_equal(a.backup, b.backup)
        and np.array_equal(a.distance_us, b.distance_us)
        and a.endpoints == b.endpoints
    )


def changes_by_comparison(old: RoutePlan, new: RoutePlan) -> list[tuple[SwitchId, SwitchId]]:
    rows, cols = np.nonzero((old.primary != new.primary) | (old.backup != new.backup))
    return [(new.switches[r], new.switches[c]) for r, c in zip(rows.tolist(), cols.tolist(), strict=True)]


ACTIONS = link_actions(max_size=6)


@ROUTE_PATHS
@SETTINGS
@given(rf=random_fabrics(), actions=ACTIONS)
def test_incremental_plans_equal_full_recomputes(
    small_fabric: int, links_one_by_one: int, rf: RandomFabric, actions: list[tuple[str, int, int]]
) -> None:
    state = rf.state()
    plan = compute_routes(state)
    for action in actions:
        state = link_step(state, action)
        with route_path(small_fabric, links_one_by_one):
            incremental = compute_routes(state, previous=plan, hysteresis=None)
        assert same_plan(incremental, compute_routes(state)), action
        assert changed_entries(plan, incremental) == changes_by_comparison(plan, incremental)
        plan = incremental


@SETTINGS
@given(random_fabrics(min_switches=3))
def test_a_switch_leaving_and_returning_is_handled(rf: RandomFabric) -> None:
    state = rf.state()
    plan = compute_routes(state)
    gone = state.apply(ev.SwitchDisconnected(state.topology.switches[next(iter(state.topology.switches))].id, 3.0))
    after = compute_routes(gone, previous=plan, hysteresis=None)
    assert same_plan(after, compute_routes(gone))


def two_switches_one_host() -> FabricState:
    from sdnctl_helpers import fabric, live

    return live(
        fabric(
            """
switches: [{id: a, dpid: 1, site: s}, {id: b, dpid: 2, site: s}]
links: [{a: a, b: b, latency_ms: 1, bandwidth_mbps: 10}]
hosts: [{id: h, switch: a, ip: 10.0.0.1}]
"""
        )
    )


def test_nothing_changed_returns_the_same_arrays_with_the_new_generation() -> None:
    state = two_switches_one_host()
    plan = compute_routes(state)
    again = compute_routes(state, previous=plan)
    assert len(plan.switches) == 2
    assert again.primary is plan.primary and again.generation == state.generation


@SETTINGS
@given(rf=random_fabrics(), actions=ACTIONS)
def test_a_link_change_reuses_the_endpoints_and_reads_the_links_new_attributes(
    rf: RandomFabric, actions: list[tuple[str, int, int]]
) -> None:
    state = rf.state()
    plan = compute_routes(state)
    for action in actions:
        state = link_step(state, action)
        incremental = compute_routes(state, previous=plan)
        assert incremental.endpoints is plan.endpoints  # hosts, nodes and switches untouched
        assert incremental.link_attrs == tuple(state.topology.links[link] for link in incremental.links)
        plan = incremental


def test_a_new_host_is_an_endpoint_of_the_next_plan() -> None:
    state = two_switches_one_host()
    plan = compute_routes(state)
    moved = state.apply(ev.LinkLatencyMeasured(((cables_of(state)[0], 3000),), 2.0))
    again = compute_routes(moved, previous=plan)
    assert again.endpoints is plan.endpoints and set(again.endpoints) == {"h"}
    host = replace(state.hosts[HostId("h")], id=HostId("h2"), ip="10.0.0.2")
    added = moved._with(hosts=map_with(moved.hosts, host.id, host))
    assert set(compute_routes(added, previous=again).endpoints) == {"h", "h2"}


BATCHES = st.lists(
    st.tuples(
        st.lists(
            st.tuples(st.integers(0, 1000), st.booleans(), st.sampled_from([0, 1, 5, 700, 900, 30000])), max_size=4
        ),
        st.lists(st.integers(0, 1000), max_size=2),  # cables going down in the same change
        st.lists(st.integers(0, 1000), max_size=1),  # cables coming back up
    ),
    min_size=1,
    max_size=5,
)


@ROUTE_PATHS
@SETTINGS
@given(rf=random_fabrics(max_switches=16), batches=BATCHES)
def test_incremental_plans_equal_full_recomputes_after_mixed_changes(
    small_fabric: int,
    links_one_by_one: int,
    rf: RandomFabric,
    batches: list[tuple[list[tuple[int, bool, int]], list[int], list[int]]],
) -> None:
    """One model change that makes some link directions worse and others better at once (a latency
    batch, cables down and up): the incremental plan still equals the full one."""
    state = rf.state()
    plan = compute_routes(state)
    for latencies, downs, ups in batches:
        cables = cables_of(state)
        measured = tuple(
            (cables[pick % len(cables)].reversed() if reverse else cables[pick % len(cables)], latency)
            for pick, reverse, latency in latencies
        )
        if measured:
            state = state.apply(ev.LinkLatencyMeasured(measured, 2.0))
        for pick in downs:
            state = state.apply(ev.LinkWentDown(cables[pick % len(cables)]))
        for pick in ups:
            state = state.apply(ev.LinkCameUp(cables[pick % len(cables)]))
        with route_path(small_fabric, links_one_by_one):
            incremental = compute_routes(state, previous=plan, hysteresis=None)
        assert same_plan(incremental, compute_routes(state)), (latencies, downs, ups)
        assert changed_entries(plan, incremental) == changes_by_comparison(plan, incremental)
        plan = incremental


@PATHS
def test_a_neighbour_farther_away_makes_a_new_alternate_at_an_untouched_switch(small_fabric: int) -> None:
    """Cable a-a2 fails. s is not on it and no distance from s or its neighbours to d moves (v has a
    second 5-hop way to d), but d(v, s) grows from 3 to 7 hops: v becomes a loop-free alternate of s
    towards d. Only the rule "a neighbour's distance to s moved: recompute all of s" finds it."""
    from sdnctl_helpers import fabric, live

    names = ["s", "v", "a", "a2", "b", "d", "c1", "c2", "c3", "c4"]
    cables = [("v", "a"), ("a", "a2"), ("a2", "s"), ("s", "b"), ("b", "d")]
    cables += [("v", "c1"), ("c1", "c2"), ("c2", "c3"), ("c3", "c4"), ("c4", "d")]
    links = [f"{{a: {x}, b: {y}, latency_ms: 1, bandwidth_mbps: 10}}" for x, y in cables]
    links.append("{a: v, b: s, latency_ms: 20, bandwidth_mbps: 10}")
    switches = ", ".join(f"{{id: {name}, dpid: {i + 1}, site: s}}" for i, name in enumerate(names))
    state = live(
        fabric(f"switches: [{switches}]\nlinks: [{', '.join(links)}]\nhosts: [{{id: h, switch: d, ip: 10.0.0.1}}]\n")
    )
    plan = compute_routes(state)
    s, v, d = (SwitchId(names.index(name) + 1) for name in ("s", "v", "d"))
    assert plan.next_hop(s, d)[1] is None
    failed = next(link for link in cables_of(state) if {link.src, link.dst} == {SwitchId(3), SwitchId(4)})
    after = state.apply(ev.LinkWentDown(failed))
    with small_fabric_limit(small_fabric):
        incremental = compute_routes(after, previous=plan, hysteresis=None)
    full = compute_routes(after)
    backup = full.next_hop(s, d)[1]
    assert backup is not None and backup.dst == v
    assert same_plan(incremental, full)


def test_a_plan_that_does_not_say_where_its_endpoints_came_from_lends_none() -> None:
    state = two_switches_one_host()
    plan = replace(compute_routes(state), endpoints_from=())
    host = replace(state.hosts[HostId("h")], id=HostId("h2"), ip="10.0.0.2")
    added = state._with(hosts=map_with(state.hosts, host.id, host))
    assert set(compute_routes(added, previous=plan).endpoints) == {"h", "h2"}
