"""make_rounds: a change of routes applied round by round never forms a forwarding loop, whichever
switches of a round have taken their part yet; nothing is lost or sent twice; and a change that moves
no primary next hop is sent in one round, as before."""

from __future__ import annotations

import random
from dataclasses import replace
from unittest.mock import patch

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sdnctl_helpers import RandomFabric, fabric, link_actions, link_between, link_step, live, random_fabrics

from netmodel import events as ev
from netmodel.ids import SwitchId
from sdnctl import update_order
from sdnctl.flows import FlowSpec, SwitchDelta, addresses_of, compile_all, recompile_switches
from sdnctl.pathing import NO_LINK, RoutePlan, changed_entries, compute_routes
from sdnctl.update_order import make_rounds

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def deltas_between(old: RoutePlan, new: RoutePlan) -> dict[SwitchId, SwitchDelta]:
    touched = recompile_switches(new, compile_all(old), changed_entries(old, new))
    return {dpid: delta for dpid, (_, delta) in touched.items() if delta}


def next_switch(plan: RoutePlan, switch: SwitchId, dst: SwitchId) -> SwitchId | None:
    link = int(plan.primary[plan.index[switch], plan.index[dst]])
    return None if link == NO_LINK else plan.links[link].dst


def loops(old: RoutePlan, new: RoutePlan, updated: set[tuple[SwitchId, SwitchId]]) -> list[tuple[SwitchId, ...]]:
    """Forwarding loops towards any destination when the (switch, dst) entries in ``updated`` follow
    ``new`` and every other entry ``old``."""
    found = []
    for dst in new.switches:
        for start in new.switches:
            seen: list[SwitchId] = []
            at: SwitchId | None = start
            while at is not None and at != dst:
                if at in seen:
                    found.append((*seen, at))
                    break
                seen.append(at)
                at = next_switch(new if (at, dst) in updated else old, at, dst)
    return found


def entries_of(plan: RoutePlan, part: dict[SwitchId, SwitchDelta]) -> set[tuple[SwitchId, SwitchId]]:
    """The (switch, destination switch) entries whose group a round modifies."""
    dst_of = {addresses_of(e).group_id: e.attachment.switch for e in plan.endpoints.values()}
    return {(dpid, dst_of[g.group_id]) for dpid, delta in part.items() for g in delta.modify_groups}


def check_rounds(old: RoutePlan, new: RoutePlan, seed: int) -> list[dict[SwitchId, SwitchDelta]]:
    deltas = deltas_between(old, new)
    rounds = make_rounds(deltas, old, new)
    # Nothing lost, nothing twice: the rounds together are each delta's make phase; every switch is in
    # the first round.
    assert set(rounds[0]) == set(deltas)
    for dpid, delta in deltas.items():
        parts = [r[dpid] for r in rounds if dpid in r]
        for name in ("add_meters", "modify_meters", "add_groups", "modify_groups", "add_flows", "modify_flows"):
            sent = [item for part in parts for item in getattr(part, name)]
            assert sorted(sent) == sorted(getattr(delta, name)), (dpid, name)
        assert all(not part.breaks for part in parts[1:])  # the first round's make phase is all it sends
    # No loop at any moment: rounds before done, any part of the current one done.
    rng = random.Random(seed)
    done: set[tuple[SwitchId, SwitchId]] = set()
    for part in rounds:
        entries = entries_of(new, part)
        for _ in range(6):
            some = {entry for entry in entries if rng.random() < 0.5}
            assert not loops(old, new, done | some), (done, some)
        done |= entries
    assert not loops(old, new, done)
    moved = [
        (s, d)
        for s in new.switches
        for d in new.switches
        if None not in (before := old.next_hop(s, d)[0], after := new.next_hop(s, d)[0]) and before != after
    ]
    if not moved:
        assert len(rounds) == 1, "no primary next hop moved: one round, as without ordering"
    return rounds


ACTIONS = link_actions(max_size=4)


# The rounds are counted by a walk in Python (few moved entries) or by numpy steps (many): both ways, on
# the same small fabrics, whatever the count.
EVERY_WAY = st.sampled_from([0, 10**9])


@SETTINGS
@given(rf=random_fabrics(max_switches=9), actions=ACTIONS, seed=st.integers(0, 1000), walk_below=EVERY_WAY)
def test_no_round_of_a_route_change_forms_a_loop(rf: RandomFabric, actions, seed: int, walk_below: int) -> None:
    state = rf.state()
    plan = compute_routes(state)
    with patch.object(update_order, "WALK_IN_PYTHON_BELOW", walk_below):
        for action in actions:
            state = link_step(state, action, both_ways=True)
            new = compute_routes(state, previous=plan)
            check_rounds(plan, new, seed)
            plan = new


@SETTINGS
@given(rf=random_fabrics(max_switches=9), actions=ACTIONS)
def test_the_walk_and_the_steps_count_the_same(rf: RandomFabric, actions) -> None:
    """Every (switch, destination) entry taken as moved: both ways count the same moved entries on
    each new path."""
    state = rf.state()
    plan = compute_routes(state)
    for action in actions:
        state = link_step(state, action, both_ways=True)
        plan = compute_routes(state, previous=plan)
        n = len(plan.switches)
        s, d = np.divmod(np.arange(n * n), n)
        moved = (s != d) & (plan.primary.reshape(-1) != NO_LINK)
        walked = update_order._walk_each(plan, list(zip(s[moved].tolist(), d[moved].tolist(), strict=True)))
        stepped = update_order._step_all(plan, s, d, moved)
        assert stepped.tolist() == [walked.get((i, j), 0) for i, j in zip(s.tolist(), d.tolist(), strict=True)]


DIAMOND = """
switches:
  - {id: s1, dpid: 1, site: s}
  - {id: s2, dpid: 2, site: s}
  - {id: s3, dpid: 3, site: s}
  - {id: s4, dpid: 4, site: s}
links:
  - {a: s1, b: s2, latency_ms: 1, bandwidth_mbps: 100}
  - {a: s2, b: s4, latency_ms: 1, bandwidth_mbps: 100}
  - {a: s1, b: s3, latency_ms: 2, bandwidth_mbps: 100}
  - {a: s3, b: s4, latency_ms: 2, bandwidth_mbps: 100}
hosts: [{id: h1, switch: s1, ip: 10.0.0.1}, {id: h2, switch: s4, ip: 10.0.0.2}]
"""


def slowed_diamond() -> tuple[RoutePlan, RoutePlan]:
    """The diamond's plans before and after s2-s4 got slow (9 ms each way)."""
    state = live(fabric(DIAMOND))
    old = compute_routes(state)
    slow = link_between(state, 2, 4)
    state = state.apply(ev.LinkLatencyMeasured(((slow, 9000), (slow.reversed(), 9000)), 2.0))
    return old, compute_routes(state, previous=old)


def test_the_switch_nearest_the_destination_moves_first() -> None:
    """s2-s4 gets slow: towards h2, s2 turns back to s1 (which now goes by s3). Sent at once, s2 could send
    h2's packets to s1 while s1 still sends them to s2; s1 moves first, s2 a round later."""
    old, new = slowed_diamond()
    assert next_switch(old, 2, 4) == 4 and next_switch(new, 2, 4) == 1 and next_switch(new, 1, 4) == 3
    assert loops(old, new, {(2, 4)}), "sent at once, the change could loop"
    rounds = check_rounds(old, new, seed=0)
    round_of = {entry: i for i, part in enumerate(rounds) for entry in entries_of(new, part)}
    assert round_of[(1, 4)] < round_of[(2, 4)]


def test_without_both_plans_everything_is_one_round() -> None:
    old, new = slowed_diamond()
    deltas = deltas_between(old, new)
    assert make_rounds(deltas, None, new) == [deltas]
    assert make_rounds(deltas, old, None) == [deltas]


def test_a_route_flow_goes_in_the_round_of_its_group() -> None:
    """A metered route (best-effort meter of its primary's port) changes its flow with its group: both
    go in the group's round; a flow of no route (here the ACL's) in the first."""
    old, new = slowed_diamond()
    deltas = deltas_between(old, new)
    names = addresses_of(new.endpoints["h2"])
    route_flow = FlowSpec(1, 100, (("eth_type", 0x0800), ("ipv4_dst", "10.0.0.2")), (("meter", 7),), names.cookie)
    acl_flow = FlowSpec(0, 300, (("eth_type", 0x0800),), (), 0xEC03_0000_0000_0001)
    deltas[2] = replace(deltas[2], modify_flows=(route_flow,), add_flows=(acl_flow,))
    rounds = make_rounds(deltas, old, new)
    (group_round,) = [
        i
        for i, part in enumerate(rounds)
        if 2 in part and names.group_id in {g.group_id for g in part[2].modify_groups}
    ]
    assert group_round > 0
    assert rounds[group_round][2].modify_flows == (route_flow,)
    assert rounds[0][2].add_flows == (acl_flow,) and not rounds[0][2].modify_flows
