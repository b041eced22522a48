"""Bandwidth reservations in the switches (sdnctl/meters.py): the flows along each reserved path, the
reservation's meter at its ingress switch only, the best-effort meters on the route flows of links with
reservations, stable meter ids and their collision rule; meters in deltas (send order) and in the engine."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import pytest
from sdnctl_helpers import apply_delta_to, fabric, link_between, live

from netmodel.bandwidth import plan_reservations
from netmodel.events import WorkloadPlaced, WorkloadRemoved
from netmodel.ids import NodeId, PortNo, ServiceName, SpiffeId, SwitchId, WorkloadId
from netmodel.state import FabricState
from netmodel.topology import Topology
from netmodel.types import Resources, Workload
from sdnctl import engine as engine_module
from sdnctl import meters
from sdnctl.engine import RouteEngine
from sdnctl.flow_text import delta_json
from sdnctl.flows import (
    COOKIE_MASK,
    COOKIE_ROUTE,
    ETH_TYPE_IPV4,
    CompiledSwitch,
    FlowSpec,
    MeterSpec,
    SwitchConfig,
    SwitchDelta,
    compile_all,
    diff_switch,
    recompile_switches,
)
from sdnctl.meters import (
    BEST_EFFORT_METER_BASE,
    COOKIE_RESERVATION,
    COOKIE_RESERVATION_MASK,
    EMPTY_PART,
    PRIORITY_RESERVATION,
    compile_reservations,
    meter_spec,
    reservation_meter_ids,
    with_reservations,
)
from sdnctl.pathing import compute_routes

# a -- b -- c in a line, and d hanging off b (on no reserved path); u1 at a, the node at c.
FABRIC = """
switches: [{id: a, dpid: 1, site: s}, {id: b, dpid: 2, site: s}, {id: c, dpid: 3, site: s}, {id: d, dpid: 4, site: s}]
links:
  - {a: a, b: b, latency_ms: 1, bandwidth_mbps: 10}
  - {a: b, b: c, latency_ms: 1, bandwidth_mbps: 10}
  - {a: b, b: d, latency_ms: 1, bandwidth_mbps: 10}
hosts: [{id: u1, switch: a, ip: 10.0.0.1}, {id: u2, switch: d, ip: 10.0.0.2}]
nodes: [{id: n1, site: s, switch: c, cpu_millis: 1000, memory_mib: 1024, ip: 10.0.0.10}]
services:
  - {name: web, port: 8080, replicas: 1, cpu_millis: 100, memory_mib: 64, near: [u1], bandwidth_mbps: 4}
"""
A, B, C, D = SwitchId(1), SwitchId(2), SwitchId(3), SwitchId(4)


def web(number: int = 1) -> Workload:
    return Workload(
        WorkloadId(f"web-{number}"),
        ServiceName("web"),
        SpiffeId(f"spiffe://t/svc/web/w/web-{number}"),
        Resources(100, 64),
        NodeId("n1"),
    )


def placed() -> FabricState:
    return live(fabric(FABRIC)).apply(WorkloadPlaced(web()))


def reservation_flows(part: meters.SwitchReservations) -> list[FlowSpec]:
    return [flow for flows, _ in part.entries.values() for flow in flows]


def test_each_reservation_has_a_flow_at_every_switch_of_its_path_and_its_meter_at_the_first_only() -> None:
    state = placed()
    plan = plan_reservations(state)
    assert len(plan.reservations) == 2  # u1 -> web and web -> u1
    parts = compile_reservations(plan)
    ab, bc = link_between(state, A, B), link_between(state, B, C)
    cb, ba = link_between(state, C, B), link_between(state, B, A)
    to_web = next(r for r in plan.reservations if r.demand.l4 == ("tcp_dst", 8080))
    from_web = next(r for r in plan.reservations if r.demand.l4 == ("tcp_src", 8080))
    assert to_web.switches == (A, B, C) and from_web.switches == (C, B, A)
    expected_out = {
        to_web.demand.key: {A: ab.src_port, B: bc.src_port, C: to_web.out_port},
        from_web.demand.key: {C: cb.src_port, B: ba.src_port, A: from_web.out_port},
    }
    for reservation in (to_web, from_web):
        demand = reservation.demand
        match = tuple(
            sorted(
                (
                    ("eth_type", ETH_TYPE_IPV4),
                    ("ip_proto", 6),
                    ("ipv4_src", demand.src_ip),
                    ("ipv4_dst", demand.dst_ip),
                    demand.l4,
                )
            )
        )
        for position, dpid in enumerate(reservation.switches):
            (flow,) = [f for f in reservation_flows(parts[dpid]) if f.match == match]
            assert flow.table == 1 and flow.priority == PRIORITY_RESERVATION
            assert flow.cookie & COOKIE_RESERVATION_MASK == COOKIE_RESERVATION
            output = ("output", expected_out[demand.key][dpid])
            if position == 0:
                meter_id = parts[dpid].meter_ids[demand.key]
                assert flow.actions == (("meter", meter_id), output)
                assert 1 <= meter_id < BEST_EFFORT_METER_BASE
                assert meter_spec(meter_id, demand.mbps) in parts[dpid].meters
                assert meter_spec(meter_id, demand.mbps).rate_kbps == 4000
            else:
                assert flow.actions == (output,), "only the ingress switch meters a reservation"
    assert D not in parts or not parts[D].entries, "a switch on no reserved path gets no reservation flow"


def test_a_reservation_within_one_switch_gets_nothing() -> None:
    state = live(fabric(FABRIC.replace("{id: u1, switch: a,", "{id: u1, switch: c,")))
    plan = plan_reservations(state.apply(WorkloadPlaced(web())))
    assert plan.reservations and all(not r.links for r in plan.reservations)
    assert compile_reservations(plan) == {}


def test_best_effort_meters_police_the_route_flows_whose_primary_port_leads_onto_a_reserved_link() -> None:
    state = placed()
    plan = plan_reservations(state)
    parts = compile_reservations(plan)
    routes = compute_routes(state)
    compiled = compile_all(routes)
    ab, bd = link_between(state, A, B), link_between(state, B, D)
    # a's port to b carries 4 of 10 Mbit/s reserved: best effort gets the other 6 less 5 % of the link.
    best_effort = BEST_EFFORT_METER_BASE + ab.src_port
    assert parts[A].policed == {ab.src_port: best_effort}
    assert meter_spec(best_effort, 5.5, meters.BEST_EFFORT_BURST_S) in parts[A].meters
    assert meter_spec(best_effort, 5.5, meters.BEST_EFFORT_BURST_S).burst_kb == 55  # 10 ms: the queue stays short
    assert bd.src_port not in parts[B].policed, "nothing reserved on b -> d"
    new, delta = with_reservations(compiled[A], parts[A])
    route_flows = {
        flow.match: flow
        for flows, _ in new.entries.values()
        for flow in flows
        if flow.cookie & COOKIE_MASK == COOKIE_ROUTE
    }
    for match, flow in route_flows.items():
        dst = dict(match)["ipv4_dst"]
        if dst == "10.0.0.1":  # u1's own port on a: no link, not policed
            assert flow.actions[0][0] == "output"
        else:  # everything else leaves a towards b
            assert flow.actions[0] == ("meter", best_effort)
    arp = [f for flows, _ in new.entries.values() for f in flows if dict(f.match).get("eth_type") == 0x0806]
    assert arp and all(a[0] != "meter" for f in arp for a in f.actions), "ARP is not policed"
    assert set(delta.add_meters) == set(parts[A].meters)
    assert {f.match for f in delta.modify_flows} == {m for m, f in route_flows.items() if f.actions[0][0] == "meter"}
    assert set(delta.add_flows) == set(reservation_flows(parts[A]))
    assert not delta.delete_flows and not delta.delete_meters
    # The same part again: nothing to do. No part any more: everything back as it was.
    assert with_reservations(new, parts[A]) == (new, SwitchDelta())
    back, undo = with_reservations(new, EMPTY_PART)
    assert back.config == compiled[A].config
    assert set(undo.delete_meters) == set(parts[A].meters) and set(undo.delete_flows) == set(delta.add_flows)


def test_a_recompiled_route_entry_keeps_its_best_effort_meter() -> None:
    state = placed()
    parts = compile_reservations(plan_reservations(state))
    routes = compute_routes(state)
    policed = with_reservations(compile_all(routes)[A], parts[A])[0]
    u2 = policed.entries["10.0.0.2"]
    assert u2[0][0].actions[0][0] == "meter"
    # As after a link event: the entry of u2 (behind d) is recompiled from the route plan.
    stale = policed.with_entries({k: v for k, v in policed.entries.items() if k != "10.0.0.2"})
    ((compiled, delta),) = recompile_switches(routes, {A: stale}, {(A, D)}).values()
    assert compiled.entries["10.0.0.2"] == u2, "recompiled with its best-effort meter"
    assert compiled.config == policed.config and compiled.policed == policed.policed
    assert compiled.meters == policed.meters
    assert next(f for f in delta.add_flows if f.cookie & COOKIE_MASK == COOKIE_ROUTE).actions[0][0] == "meter"


def test_meter_ids_are_stable_whatever_the_order_and_collisions_take_the_next_free_id(monkeypatch) -> None:
    keys = [f"web-{i} u1>web-{i}" for i in range(50)]
    assert reservation_meter_ids(keys) == reservation_meter_ids(reversed(keys))
    assert all(1 <= i < BEST_EFFORT_METER_BASE for i in reservation_meter_ids(keys).values())
    fixed = {"x": 7, "y": 7, "z": 8, "top": BEST_EFFORT_METER_BASE - 1, "wrap": BEST_EFFORT_METER_BASE - 1}
    monkeypatch.setattr(meters, "_base_meter_id", lambda key: fixed[key])
    # In (hash, key) order: x keeps 7, y takes 8, z (hashing to 8) takes 9; "top" keeps the last id and
    # "wrap" (after it by name) wraps around to 1.
    assert reservation_meter_ids(fixed) == {"x": 7, "y": 8, "z": 9, "top": BEST_EFFORT_METER_BASE - 1, "wrap": 1}
    assert reservation_meter_ids(["y", "z"]) == {"y": 7, "z": 8}


def test_a_real_hash_collision_is_resolved_at_one_switch_only() -> None:
    seen: dict[int, str] = {}
    pair = None
    for i in range(100_000):
        key = f"k{i}"
        base = meters._base_meter_id(key)
        if base in seen:
            pair = (seen[base], key)
            break
        seen[base] = key
    assert pair is not None
    ids = reservation_meter_ids(pair)
    assert len(set(ids.values())) == 2 and min(pair) in ids and ids[min(pair)] == meters._base_meter_id(pair[0])


def test_the_burst_is_half_a_second_of_the_rate_and_at_least_two_frames() -> None:
    assert meter_spec(1, 10.0) == MeterSpec(1, 10_000, round(10_000 * meters.BURST_S))
    assert meter_spec(1, 10.0).burst_kb == 5000
    assert meter_spec(1, 0.01).burst_kb == meters.MIN_BURST_KB


# -- deltas: meters before the flows that use them, deleted after ---------------------------------------


def test_meters_are_sent_before_the_flows_that_use_them_and_deleted_after() -> None:
    meter = MeterSpec(5, 1000, 100)
    flow = FlowSpec(1, 200, (("eth_type", ETH_TYPE_IPV4),), (("meter", 5), ("output", 2)), COOKIE_RESERVATION | 1)
    with_meter = SwitchConfig(frozenset({flow}), frozenset(), frozenset({meter}))
    add = diff_switch(SwitchConfig(), with_meter)
    assert add.add_meters == (meter,) and add.add_flows == (flow,) and not add.breaks
    mods = delta_json(add)["mods"]
    assert [m["kind"] for m in mods] == ["meter", "flow"] and mods[0]["phase"] == "make"
    assert mods[0] == {
        "phase": "make",
        "kind": "meter",
        "command": "add",
        "meter_id": 5,
        "band": "drop",
        "rate_kbps": 1000,
        "burst_kb": 100,
    }
    assert mods[1]["actions"] == ["meter:5", "output:2"]
    remove = diff_switch(with_meter, SwitchConfig())
    assert remove.delete_meters == (meter,) and remove.breaks
    assert [(m["phase"], m["kind"]) for m in delta_json(remove)["mods"]] == [("break", "flow"), ("break", "meter")]
    changed = diff_switch(with_meter, SwitchConfig(with_meter.flows, frozenset(), frozenset({MeterSpec(5, 2000, 200)})))
    assert changed.modify_meters == (MeterSpec(5, 2000, 200),) and changed.size == 1
    assert apply_delta_to(with_meter, changed).meters == frozenset({MeterSpec(5, 2000, 200)})


# -- the engine ------------------------------------------------------------------------------------------


class FakeSwitches:
    """What the engine needs of FabricApp: every message lands, every barrier confirms; deltas recorded."""

    def __init__(self) -> None:
        self.tables: dict[int, SwitchConfig] = {}
        self.sent: list[tuple[int, str, SwitchDelta]] = []
        self.on_switch_error = None

    def read_config(self, dpid: int, late_answers_count: bool = False) -> SwitchConfig:
        return self.tables.setdefault(dpid, SwitchConfig())

    def read_configs(
        self, dpids: Iterable[int], timeout_s: float, late_answers_count: bool = False
    ) -> dict[int, SwitchConfig]:
        return {dpid: self.read_config(dpid) for dpid in dpids}

    def send_phase(self, dpid: int, delta: SwitchDelta, phase: str) -> bool:
        self.sent.append((dpid, phase, delta))
        if phase == "make":  # as OVS: the make phase's messages only
            delta = SwitchDelta(
                add_groups=delta.add_groups,
                modify_groups=delta.modify_groups,
                add_flows=delta.add_flows,
                modify_flows=delta.modify_flows,
                add_meters=delta.add_meters,
                modify_meters=delta.modify_meters,
            )
        else:
            delta = SwitchDelta(
                delete_flows=delta.delete_flows, delete_groups=delta.delete_groups, delete_meters=delta.delete_meters
            )
        self.tables[dpid] = apply_delta_to(self.read_config(dpid), delta)
        return True

    def barriers(self, dpids: Iterable[int]) -> set[int]:
        return set(dpids)


def engine_on(monkeypatch: pytest.MonkeyPatch, holder: list[FabricState]) -> tuple[RouteEngine, FakeSwitches]:
    monkeypatch.setattr(engine_module, "SETTLE_QUIET_S", 0.0)
    switches = FakeSwitches()
    engine = RouteEngine(switches, lambda: holder[0], drift_interval_s=0)
    engine._last_discovery -= 1
    engine._converge()  # reads the switches
    engine._converge()  # programs them
    return engine, switches


def test_the_engine_installs_reservations_incrementally_and_removes_them(monkeypatch) -> None:
    holder = [live(fabric(FABRIC))]
    engine, switches = engine_on(monkeypatch, holder)
    assert all(not t.meters for t in switches.tables.values())
    assert not engine.reservation_plan.reservations
    switches.sent.clear()
    holder[0] = holder[0].apply(WorkloadPlaced(web()))
    engine._converge()
    plan = engine.reservation_plan
    assert len(plan.reservations) == 2 and plan.generation == holder[0].generation
    parts = compile_reservations(plan)
    for dpid in (A, B, C):
        table = switches.tables[dpid]
        assert table.meters == parts[dpid].meters
        assert set(reservation_flows(parts[dpid])) <= table.flows
        assert table == engine._compiled[dpid].config, "what the switch holds is what the engine wants"
    assert switches.tables[D].meters == frozenset() and D not in {dpid for dpid, _, _ in switches.sent}, (
        "d has no part in the reservations and no route changed: nothing sent to it"
    )
    key = next(r.demand.key for r in plan.reservations if r.switches[0] == A)
    assert engine.meter_of(A, key) == parts[A].meter_ids[key]
    assert engine.meter_of(B, key) is None
    # Nothing new: nothing sent.
    switches.sent.clear()
    engine._converge()
    assert switches.sent == []
    # Removed: its flows and meters go, the route flows lose their best-effort meters.
    holder[0] = holder[0].apply(WorkloadRemoved(WorkloadId("web-1")))
    engine._converge()
    for dpid in (A, B, C):
        table = switches.tables[dpid]
        assert table.meters == frozenset()
        assert not any(f.cookie & COOKIE_RESERVATION_MASK == COOKIE_RESERVATION for f in table.flows)
        assert not any(a[0] == "meter" for f in table.flows for a in f.actions)
    assert not engine.reservation_plan.reservations


def test_a_restarted_engine_finds_the_reservations_installed_and_sends_nothing(monkeypatch) -> None:
    holder = [live(fabric(FABRIC)).apply(WorkloadPlaced(web()))]
    _, switches = engine_on(monkeypatch, holder)
    assert switches.tables[A].meters
    again = RouteEngine(switches, lambda: holder[0], drift_interval_s=0)
    again._last_discovery -= 1
    switches.sent.clear()
    again._converge()
    again._converge()
    assert [s for s in switches.sent if s[2]] == [], "reconciled: the same meter ids, rates and flows"


def test_the_drift_check_heals_a_meter_changed_behind_the_engines_back(monkeypatch) -> None:
    holder = [live(fabric(FABRIC)).apply(WorkloadPlaced(web()))]
    engine, switches = engine_on(monkeypatch, holder)
    meter = min(switches.tables[A].meters)
    tampered = MeterSpec(meter.meter_id, meter.rate_kbps * 10, meter.burst_kb)
    table = switches.tables[A]
    switches.tables[A] = SwitchConfig(table.flows, table.groups, (table.meters - {meter}) | {tampered})
    found = engine.check_drift()
    assert set(found) == {A} and found[A].meters_differ == 1 and found[A].heal.modify_meters == (meter,)
    assert switches.tables[A].meters == table.meters


def test_a_restarted_engine_checks_drift_on_switches_it_had_nothing_to_change_on(monkeypatch) -> None:
    """After a restart every switch already holds its tables (nothing is sent): the drift check must
    still watch them, meters included."""
    holder = [live(fabric(FABRIC)).apply(WorkloadPlaced(web()))]
    _, switches = engine_on(monkeypatch, holder)
    again = RouteEngine(switches, lambda: holder[0], drift_interval_s=0)
    again._last_discovery -= 1
    again._converge()
    again._converge()
    table = switches.tables[A]
    meter = min(table.meters)
    switches.tables[A] = SwitchConfig(table.flows, table.groups, table.meters - {meter})
    found = again.check_drift()
    assert set(found) == {A} and found[A].heal.add_meters == (meter,)
    assert switches.tables[A] == table


def test_police_leaves_an_unpoliced_switch_alone() -> None:
    routes = compute_routes(placed())
    compiled = compile_all(routes)[D]
    assert with_reservations(compiled, EMPTY_PART) == (compiled, SwitchDelta())
    assert isinstance(compiled, CompiledSwitch) and compiled.policed == {}
    assert PortNo(1) not in compiled.policed


def test_a_link_whose_capacity_changes_gets_its_best_effort_meter_changed(monkeypatch) -> None:
    holder = [live(fabric(FABRIC)).apply(WorkloadPlaced(web()))]
    engine, switches = engine_on(monkeypatch, holder)
    ab = link_between(holder[0], A, B)
    best_effort = BEST_EFFORT_METER_BASE + ab.src_port
    before = next(m for m in switches.tables[A].meters if m.meter_id == best_effort)
    state = holder[0]
    links = {**state.topology.links, ab: dataclasses.replace(state.topology.links[ab], capacity_mbps=50.0)}
    holder[0] = dataclasses.replace(state, topology=Topology(state.topology.switches, links))
    engine._converge()
    after = next(m for m in switches.tables[A].meters if m.meter_id == best_effort)
    reserved = engine.reservation_plan.reserved_mbps(ab)
    assert after.rate_kbps == round((50.0 * (1 - meters.BEST_EFFORT_HEADROOM) - reserved) * 1000) != before.rate_kbps


def test_a_port_number_past_the_meter_ids_is_not_policed_rather_than_a_bad_meter(monkeypatch) -> None:
    monkeypatch.setattr(meters, "BEST_EFFORT_METER_BASE", meters.OFPM_MAX)  # every port number now past the ids
    parts = compile_reservations(plan_reservations(placed()))
    assert all(not part.policed for part in parts.values())
    assert all(m.meter_id < meters.RESERVATION_METER_END for part in parts.values() for m in part.meters)
    assert any(part.meter_ids for part in parts.values())  # the reservations themselves are still metered
