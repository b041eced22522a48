"""Bandwidth reservations (netmodel/bandwidth.py): demands, constrained paths, admission; and the file's fields."""

from __future__ import annotations

import dataclasses
import gc
import random
import weakref

import pytest

from netmodel.bandwidth import (
    Reservation,
    Unreserved,
    admission,
    demands_of,
    link_label,
    plan_reservations,
)
from netmodel.events import LinkLoadMeasured, LinkWentDown, NodeWentDown, WorkloadPlaced, WorkloadRemoved
from netmodel.fabric_file import FabricFileError, parse_fabric
from netmodel.ids import HostId, NodeId, PortNo, ServiceName, SpiffeId, SwitchId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Attachment, LinkId, Resources, Workload
from tests.unit.netmodel.netmodel_helpers import EA1, EB1, M1, M2, example_state, example_text


def with_services(state: FabricState, **changes: dict[str, object]) -> FabricState:
    services = dict(state.services)
    for name, fields in changes.items():
        services[ServiceName(name)] = dataclasses.replace(services[ServiceName(name)], **fields)  # type: ignore[arg-type]
    return dataclasses.replace(state, services=services)


def place(state: FabricState, wid: str, node: str, port: int = 8080, **fields: object) -> FabricState:
    service = wid.rsplit("-", 1)[0]
    workload = Workload(
        WorkloadId(wid),
        ServiceName(service),
        SpiffeId(f"spiffe://t/{service}"),
        Resources(1, 1),
        NodeId(node),
        port,
        **fields,  # type: ignore[arg-type]
    )
    return state.apply(WorkloadPlaced(workload))


def uplink(state: FabricState, a: int, b: int) -> LinkId:
    return next(link for link in state.topology.links if link.src == a and link.dst == b)


def reserved_never_exceeds_capacity(state: FabricState) -> None:
    plan = plan_reservations(state)
    for link, mbps in plan.links().items():
        assert mbps <= state.topology.links[link].capacity_mbps + 1e-9, link_label(state, link)


# -- the fabric file ---------------------------------------------------------------------------------


def test_the_file_declares_bandwidth_per_instance_and_per_call() -> None:
    text = example_text().replace(
        "near: [u1, u2], calls: [api]}",
        "near: [u1, u2], calls: [{service: api, bandwidth_mbps: 5}], bandwidth_mbps: 8}",
    )
    web = parse_fabric(text).services[0]
    assert web.bandwidth_mbps == 8.0
    assert web.call_bandwidth == (("api", 5.0),)
    assert web.calls == ("api",) and web.call_weights == ()  # a reservation alone keeps the default weight


@pytest.mark.parametrize(
    ("old", "new", "path", "fragment"),
    [
        (
            "near: [u1, u2], calls: [api]}",
            "near: [u1, u2], calls: [api], bandwidth_mbps: -3}",
            "services[0].bandwidth_mbps",
            "must be greater than 0",
        ),
        (
            "near: [u1, u2], calls: [api]}",
            "near: [u1, u2], calls: [api], bandwidth_mbps: fast}",
            "services[0].bandwidth_mbps",
            "expected a number",
        ),
        ("calls: [db]}", "calls: [db], bandwidth_mbps: 5}", "services[1].bandwidth_mbps", "needs near"),
        (
            "calls: [api]}",
            "calls: [{service: api, bandwidth_mbps: 0}]}",
            "services[0].calls[0].bandwidth_mbps",
            "must be greater than 0",
        ),
        (
            "b: m1, latency_ms: 2, bandwidth_mbps: 100}",
            "b: m1, latency_ms: 2, bandwidth_mbps: 9000000}",
            "links[0].bandwidth_mbps",
            "must be <=",
        ),
        (
            "calls: [api]}",
            "calls: [{service: api, bandwidth_mbps: 2000000}]}",
            "services[0].calls[0].bandwidth_mbps",
            "must be <=",
        ),
    ],
)
def test_bad_bandwidth_is_named_with_its_line(old: str, new: str, path: str, fragment: str) -> None:
    with pytest.raises(FabricFileError) as caught:
        parse_fabric(example_text().replace(old, new))
    first = caught.value.problems[0]
    assert first.path == path and fragment in first.message and first.line > 1, str(caught.value)


# -- demands -----------------------------------------------------------------------------------------


def test_an_instance_reserves_each_way_with_each_near_host() -> None:
    state = place(with_services(example_state(), web={"bandwidth_mbps": 8.0}), "web-1", "c-n1", 8080)
    demands = demands_of(state)
    assert {(d.src, d.dst, d.l4, d.mbps) for d in demands} == {
        ("u1", "c-n1", ("tcp_dst", 8080), 8.0),
        ("c-n1", "u1", ("tcp_src", 8080), 8.0),
        ("u2", "c-n1", ("tcp_dst", 8080), 8.0),
        ("c-n1", "u2", ("tcp_src", 8080), 8.0),
    }
    assert all(d.owners == ("web-1",) for d in demands)


def test_an_instance_override_wins_and_zero_reserves_nothing() -> None:
    state = with_services(example_state(), web={"bandwidth_mbps": 8.0})
    state = place(state, "web-1", "c-n1", 8080, bandwidth_mbps=2.5)
    state = place(state, "web-2", "c-n2", 8081, bandwidth_mbps=0.0)
    assert {d.mbps for d in demands_of(state)} == {2.5}
    assert {d.owner for d in demands_of(state)} == {"web-1"}


def test_nothing_declared_costs_nothing() -> None:
    state = place(example_state(), "web-1", "c-n1")
    assert demands_of(state) == () and plan_reservations(state).outcomes == ()


def test_a_call_reserves_toward_the_nearest_callee_instance() -> None:
    state = with_services(example_state(), web={"call_bandwidth": ((ServiceName("api"), 5.0),)})
    state = place(state, "api-1", "c-n1", 9090)
    state = place(state, "api-2", "m-n1", 9090)
    state = place(state, "web-1", "ea-n1", 8080)
    calls = [d for d in demands_of(state) if d.owner == "web-1"]
    assert {(d.src, d.dst, d.l4) for d in calls} == {
        ("ea-n1", "m-n1", ("tcp_dst", 9090)),
        ("m-n1", "ea-n1", ("tcp_src", 9090)),
    }


def test_callers_sharing_a_node_and_a_callee_are_one_demand_of_the_summed_rate() -> None:
    state = with_services(example_state(), web={"call_bandwidth": ((ServiceName("api"), 5.0),)})
    state = place(state, "api-1", "c-n1", 9090)
    state = place(state, "web-1", "ea-n1", 8080)
    state = place(state, "web-2", "ea-n1", 8081)
    toward = [d for d in demands_of(state) if d.l4 == ("tcp_dst", 9090)]
    assert len(toward) == 1 and toward[0].mbps == 10.0 and toward[0].owners == ("web-1", "web-2")


# -- paths -------------------------------------------------------------------------------------------


def test_a_reservation_takes_the_latency_shortest_path_when_it_has_room() -> None:
    state = place(with_services(example_state(), web={"bandwidth_mbps": 8.0, "near": ("u1",)}), "web-1", "m-n1", 8080)
    plan = plan_reservations(state)
    to_instance = next(r for r in plan.reservations if r.demand.src == "u1")
    assert to_instance.links[0] == uplink(state, EA1, M1)  # ea1 -> m1 (2 ms) -> m2 (1 ms) beats ea1 -> m2 (5 ms)
    assert plan.reserved_mbps(uplink(state, EA1, M1)) == 8.0
    assert plan.residual_mbps(uplink(state, EA1, M1)) == 92.0


def test_a_full_link_sends_the_next_reservation_round_it_and_never_over_commits() -> None:
    state = with_services(example_state(), web={"bandwidth_mbps": 60.0, "near": ("u1",)})
    state = place(state, "web-1", "m-n1", 8080)
    state = place(state, "web-2", "m-n1", 8081)  # ea1->m1 has 40 left: the 5 ms uplink ea1->m2 instead
    state = place(state, "web-3", "m-n1", 8082)  # both uplinks hold 60: nowhere
    plan = plan_reservations(state)
    first, second = (next(o for o in plan.of_owner(WorkloadId(w)) if o.demand.src == "u1") for w in ("web-1", "web-2"))
    assert isinstance(first, Reservation) and first.links[0] == uplink(state, EA1, M1)
    assert isinstance(second, Reservation) and second.links[0] == uplink(state, EA1, M2)
    third = next(o for o in plan.of_owner(WorkloadId("web-3")) if o.demand.src == "u1")
    assert isinstance(third, Unreserved)
    assert third.link == uplink(state, EA1, M1)
    assert "ea1:" in third.reason and "has 40 of 60 Mbit/s left" in third.reason
    reserved_never_exceeds_capacity(state)


def test_a_link_failure_moves_reservations_only_onto_links_with_room() -> None:
    state = with_services(example_state(), web={"bandwidth_mbps": 60.0, "near": ("u1",)})
    state = place(state, "web-1", "m-n1", 8080)
    state = place(state, "web-2", "m-n1", 8081)
    primary = uplink(state, EA1, M1)
    state = state.apply(LinkWentDown(primary))
    plan = plan_reservations(state)
    outcomes = [o for o in plan.outcomes if o.demand.src == "u1"]
    assert isinstance(outcomes[0], Reservation) and outcomes[0].links[0] == uplink(state, EA1, M2)
    assert isinstance(outcomes[1], Unreserved)  # the older one keeps its place; the younger is reported
    reserved_never_exceeds_capacity(state)


# -- admission ---------------------------------------------------------------------------------------


def test_admission_refuses_a_new_demand_that_fits_nowhere_and_names_the_link() -> None:
    state = with_services(example_state(), web={"bandwidth_mbps": 60.0, "near": ("u1",)})
    state = place(place(state, "web-1", "m-n1", 8080), "web-2", "m-n1", 8081)
    before = plan_reservations(state)
    after = plan_reservations(place(state, "web-3", "m-n1", 8082), before)
    refusal = admission(before, after)
    assert refusal is not None and refusal.demand.owner == "web-3"
    assert refusal.link is not None and "has 40 of 60 Mbit/s left" in refusal.message
    assert admission(before, plan_reservations(place(state, "web-3", "ea-n1", 8082), before)) is None  # local


def test_admission_refuses_a_change_that_takes_an_existing_reservation_away() -> None:
    state = with_services(example_state(), web={"bandwidth_mbps": 60.0, "near": ("u1",)})
    state = place(place(state, "web-1", "m-n1", 8080), "web-2", "m-n1", 8081, bandwidth_mbps=30.0)
    before = plan_reservations(state)
    assert not before.unreserved
    grown = place(state, "web-2", "m-n1", 8081, bandwidth_mbps=120.0)  # more than either uplink holds
    refusal = admission(before, plan_reservations(grown, before))
    assert refusal is not None and refusal.demand.owner == "web-2" and "of 120 Mbit/s left" in refusal.message
    assert admission(before, plan_reservations(place(state, "web-2", "m-n1", 8081, bandwidth_mbps=40.0))) is None


def test_a_demand_unreserved_before_does_not_block_an_unrelated_change() -> None:
    state = with_services(example_state(), web={"bandwidth_mbps": 60.0, "near": ("u1",)})
    for i in (1, 2, 3):
        state = place(state, f"web-{i}", "m-n1", 8080 + i)
    before = plan_reservations(state)
    assert len(before.unreserved) == 2  # web-3's two directions
    assert admission(before, plan_reservations(place(state, "db-1", "c-n1", 5432), before)) is None


@pytest.mark.parametrize("calls_reserve", [True, False], ids=["with-call-reservations", "appends-only-path"])
def test_the_incremental_plan_equals_the_plan_from_scratch(calls_reserve: bool) -> None:
    rng = random.Random(7)
    nodes = ["ea-n1", "eb-n1", "ec-n1", "m-n1", "c-n1", "c-n2"]
    calls = ((ServiceName("api"), 10.0),) if calls_reserve else ()
    state = with_services(
        example_state(),
        web={"bandwidth_mbps": 15.0, "call_bandwidth": calls},
        api={"bandwidth_mbps": 5.0, "near": ("u3",)},
    )
    plan = plan_reservations(state)
    counter = 0
    for _ in range(60):
        roll = rng.random()
        placed = [w for w in state.workloads]
        if roll < 0.6 or not placed:
            counter += 1
            service = rng.choice(["web", "api"])
            state = place(state, f"{service}-{counter}", rng.choice(nodes), 8000 + counter)
        elif roll < 0.85:
            state = state.apply(WorkloadRemoved(rng.choice(placed)))
        else:
            link = rng.choice(list(state.topology.links))
            state = state.apply(LinkWentDown(link))
        before, plan = plan, plan_reservations(state, plan)
        fresh = plan_reservations(state)
        assert plan.outcomes == fresh.outcomes
        assert admission(before, plan) == admission(before, fresh)  # looking at the changed part only is enough
        assert plan.links() == fresh.links()
        reserved_never_exceeds_capacity(state)


def test_a_user_host_that_moves_moves_its_reservations() -> None:
    state = place(with_services(example_state(), web={"bandwidth_mbps": 8.0, "near": ("u1",)}), "web-1", "c-n1", 8080)
    plan = plan_reservations(state)
    u1 = state.hosts[HostId("u1")]
    moved = u1.__class__(u1.id, Attachment(SwitchId(EB1), PortNo(9)), u1.ip, u1.mac)
    state = dataclasses.replace(state, hosts={**state.hosts, u1.id: moved})
    incremental, fresh = plan_reservations(state, plan), plan_reservations(state)
    assert incremental.outcomes == fresh.outcomes
    back = next(r for r in incremental.reservations if r.demand.dst == "u1")
    assert back.switches[-1] == EB1 and back.out_port == 9


def test_joining_a_demand_that_has_no_room_is_refused() -> None:
    # Callers on one node calling one instance are one demand: a second caller may not hide in a full one.
    state = with_services(example_state(), web={"call_bandwidth": ((ServiceName("api"), 150.0),)})
    state = place(place(state, "api-1", "m-n1", 9090), "web-1", "ea-n1", 8080)
    before = plan_reservations(state)
    assert len(before.unreserved) == 2  # 150 > either 100 Mbit/s uplink
    after = plan_reservations(place(state, "web-2", "ea-n1", 8081), before)
    refusal = admission(before, after)
    assert refusal is not None and "web-2" in refusal.demand.owners


def test_instances_on_a_node_that_is_down_reserve_nothing() -> None:
    # Their traffic is gone, and failover must not wait on their room to place the replacements.
    state = with_services(example_state(), web={"bandwidth_mbps": 60.0, "near": ("u1",)})
    state = place(place(state, "web-1", "c-n1", 8080), "web-2", "c-n2", 8080)
    assert not plan_reservations(state).unreserved
    state = state.apply(NodeWentDown(NodeId("c-n1")))
    before = plan_reservations(state)
    assert not before.of_owner(WorkloadId("web-1"))
    assert admission(before, plan_reservations(place(state, "web-3", "m-n1", 8080), before)) is None


def test_a_measured_load_keeps_the_plan_and_old_plans_are_not_kept_alive() -> None:
    state = place(with_services(example_state(), web={"bandwidth_mbps": 8.0}), "web-1", "c-n1", 8080)
    first = plan_reservations(state)
    link = next(iter(state.topology.links))
    loaded = state.apply(LinkLoadMeasured(((link, 5e6),), 1.0))
    again = plan_reservations(loaded, first)
    assert again._graph is first._graph and again._kept == len(first.outcomes)  # nothing routed again
    watched = weakref.ref(first)
    plan = again
    for n in range(2, 6):
        state = place(state, f"web-{n}", "c-n2", 8080 + n)
        plan = plan_reservations(state, plan)
    del first, again
    gc.collect()
    assert watched() is None  # a plan names the plan it extends by number only
