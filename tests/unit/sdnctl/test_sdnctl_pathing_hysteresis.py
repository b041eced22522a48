"""Route hysteresis: a recomputed entry keeps its primary while its next hop is still closer to the
destination and its way there within the slack of the shortest; the plan equals a full recompute in
which every entry applies that rule to the previous plan's primaries; primaries never loop."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sdnctl_helpers import (
    PATHS,
    ROUTE_PATHS,
    RandomFabric,
    cables_of,
    fabric,
    link_step,
    live,
    random_fabrics,
    route_path,
    small_fabric_limit,
    walk_primaries,
)

from netmodel import events as ev
from netmodel.ids import SwitchId
from netmodel.state import FabricState
from sdnctl.pathing import NO_LINK, Hysteresis, RoutePlan, changed_entries, compute_routes

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Slack large enough to matter on the random fabrics' 0-20 ms links.
WIDE = Hysteresis(min_us=700.0, fraction=0.2)
# Cables down and up, and latencies near the fabrics' 1-3 ms: many near-ties, inside and past the slack.
NEAR_TIES = st.lists(
    st.tuples(
        st.sampled_from(["down", "up", "latency", "latency", "latency"]),
        st.integers(0, 1000),
        st.sampled_from([0, 500, 900, 1000, 1100, 1300, 1900, 2000, 2200, 3000, 30000]),
    ),
    min_size=1,
    max_size=8,
)


def sticky_next_hops(full: RoutePlan, previous: RoutePlan, hysteresis: Hysteresis) -> tuple[np.ndarray, np.ndarray]:
    """The rule applied to every entry of a full recompute (written out plainly, as the oracle)."""
    n = len(full.switches)
    scale = n + 1
    routing, weight = full.routing, full.weight
    neighbour = [full.index[link.dst] for link in full.links]
    out = [[i for i, link in enumerate(full.links) if full.index[link.src] == s] for s in range(n)]
    primary = np.full((n, n), NO_LINK, dtype=np.int64)
    backup = np.full((n, n), NO_LINK, dtype=np.int64)
    for s in range(n):
        for d in range(n):
            if s == d or not out[s]:
                continue
            costs = [weight[link] + routing[neighbour[link], d] for link in out[s]]
            lowest = min(costs)
            if math.isinf(lowest):
                continue
            best = costs.index(lowest)
            was = int(previous.primary[s, d])
            if was in out[s]:
                j = out[s].index(was)
                slack = max(hysteresis.min_us * scale, hysteresis.fraction * lowest)
                if routing[neighbour[was], d] < routing[s, d] and costs[j] <= lowest + slack:
                    best = j
            primary[s, d] = out[s][best]
            chosen_neighbour = neighbour[out[s][best]]
            second, second_cost = NO_LINK, math.inf
            for j, link in enumerate(out[s]):
                v = neighbour[link]
                loop_free = v == chosen_neighbour or routing[v, d] < routing[v, s] + routing[s, d]
                if j != best and loop_free and costs[j] < second_cost:
                    second, second_cost = link, costs[j]
            backup[s, d] = second
    return primary, backup


def assert_loop_free_within_slack(plan: RoutePlan, hysteresis: Hysteresis) -> None:
    n = len(plan.switches)
    scale = n + 1
    for s, here in enumerate(plan.switches):
        for d, there in enumerate(plan.switches):
            link = int(plan.primary[s, d])
            if s == d or not np.isfinite(plan.routing[s, d]):
                assert link == NO_LINK
                continue
            v = plan.index[plan.links[link].dst]
            assert plan.routing[v, d] < plan.routing[s, d]  # downstream: primaries cannot loop
            slack = max(hysteresis.min_us * scale, hysteresis.fraction * plan.routing[s, d])
            assert plan.weight[link] + plan.routing[v, d] <= plan.routing[s, d] + slack
            assert walk_primaries(plan, here, there) is not None


@ROUTE_PATHS
@SETTINGS
@given(rf=random_fabrics(), actions=NEAR_TIES)
def test_incremental_plans_equal_the_rule_applied_to_a_full_recompute(
    small_fabric: int, links_one_by_one: int, rf: RandomFabric, actions: list[tuple[str, int, int]]
) -> None:
    state = rf.state()
    plan = compute_routes(state)
    for action in actions:
        state = link_step(state, action)
        with route_path(small_fabric, links_one_by_one):
            sticky = compute_routes(state, previous=plan, hysteresis=WIDE)
        full = compute_routes(state, hysteresis=None)
        primary, backup = sticky_next_hops(full, plan, WIDE)
        assert np.array_equal(sticky.primary, primary), action
        assert np.array_equal(sticky.backup, backup), action
        assert np.array_equal(sticky.distance_us, full.distance_us)
        assert_loop_free_within_slack(sticky, WIDE)
        rows, cols = np.nonzero((plan.primary != sticky.primary) | (plan.backup != sticky.backup))
        by_comparison = [(sticky.switches[r], sticky.switches[c]) for r, c in zip(rows, cols, strict=True)]
        assert changed_entries(plan, sticky) == by_comparison
        plan = sticky


def square() -> tuple[FabricState, SwitchId, SwitchId]:
    """Two equal 2 ms paths from a to d: over b and over c (b first in tie order)."""
    state = live(
        fabric(
            """
switches: [{id: a, dpid: 1, site: s}, {id: b, dpid: 2, site: s}, {id: c, dpid: 3, site: s}, {id: d, dpid: 4, site: s}]
links:
  - {a: a, b: b, latency_ms: 1, bandwidth_mbps: 10}
  - {a: a, b: c, latency_ms: 1, bandwidth_mbps: 10}
  - {a: b, b: d, latency_ms: 1, bandwidth_mbps: 10}
  - {a: c, b: d, latency_ms: 1, bandwidth_mbps: 10}
hosts: [{id: ha, switch: a, ip: 10.0.0.1}, {id: hd, switch: d, ip: 10.0.0.4}]
"""
        )
    )
    return state, SwitchId(1), SwitchId(4)


def measured(state: FabricState, src: int, dst: int, latency_us: int) -> FabricState:
    both_ways = [*cables_of(state), *(cable.reversed() for cable in cables_of(state))]
    link = next(link for link in both_ways if (link.src, link.dst) == (src, dst))
    return state.apply(ev.LinkLatencyMeasured(((link, latency_us),), 2.0))


@PATHS
def test_a_path_a_little_longer_keeps_its_traffic_and_a_much_longer_one_loses_it(small_fabric: int) -> None:
    state, a, d = square()
    plan = compute_routes(state)
    first = plan.next_hop(a, d)[0]
    assert first is not None and first.dst == SwitchId(2)  # over b: the first of two equal ways
    with small_fabric_limit(small_fabric):
        # b -> d measured 200 us slower (within 250 us): the way over c is shorter, traffic stays on b.
        slower = measured(state, 2, 4, 1200)
        kept = compute_routes(slower, previous=plan)
        assert kept.next_hop(a, d)[0] == first
        assert (a, d) not in changed_entries(plan, kept)  # (b's alternate towards d did change: a is one now)
        route = kept.route("ha", "hd")
        assert route is not None and route.latency_us == 2200  # the path it takes, not the shortest (2,000)
        assert kept.distance_us[kept.index[a], kept.index[d]] == 2000
        assert compute_routes(slower, previous=plan, hysteresis=None).next_hop(a, d)[0] != first
        # 400 us slower than the way over c: past the slack, the route moves to c.
        much = measured(slower, 2, 4, 1400)
        moved = compute_routes(much, previous=kept)
        primary = moved.next_hop(a, d)[0]
        assert primary is not None and primary.dst == SwitchId(3)
        # And b's way back to 1 ms does not pull it back: the two are equal again.
        back = compute_routes(measured(much, 2, 4, 1000), previous=moved)
        assert back.next_hop(a, d)[0] == primary


def test_a_kept_primary_that_goes_down_is_replaced() -> None:
    state, a, d = square()
    plan = compute_routes(state)
    first = plan.next_hop(a, d)[0]
    assert first is not None
    slower = measured(state, 2, 4, 1200)
    kept = compute_routes(slower, previous=plan)
    assert kept.next_hop(a, d)[0] == first
    after = compute_routes(slower.apply(ev.LinkWentDown(first)), previous=kept)
    primary = after.next_hop(a, d)[0]
    assert primary is not None and primary.dst == SwitchId(3)
