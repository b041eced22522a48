"""Drift: the comparison of what a switch holds with what edgectl installed (pure), the rendering of
a delta as JSON (pure), and the engine's check: only switches holding exactly what it installed are
compared, drift is reported once per switch and healed with just the difference."""

from __future__ import annotations

import json
from collections.abc import Iterable

from sdnctl_helpers import apply_delta_to, fabric, live

from netmodel.state import FabricState
from sdnctl import engine as engine_module
from sdnctl.drift import Drift, DriftRecord, drift_message, drift_turn, find_drift
from sdnctl.engine import RouteEngine
from sdnctl.flow_text import delta_json
from sdnctl.flows import (
    COOKIE_ROUTE,
    EDGECTL_COOKIE,
    ETH_TYPE_IPV4,
    FlowSpec,
    GroupSpec,
    SwitchConfig,
    SwitchDelta,
    base_flows,
)

ROUTE = FlowSpec(0, 100, (("eth_type", ETH_TYPE_IPV4), ("ipv4_dst", "10.0.0.2")), (("group", 7),), COOKIE_ROUTE | 2)
LOCAL = FlowSpec(0, 100, (("eth_type", ETH_TYPE_IPV4), ("ipv4_dst", "10.0.0.1")), (("output", 3),), COOKIE_ROUTE | 1)
GROUP = GroupSpec(7, (1, 2))
INSTALLED = SwitchConfig(base_flows() | {ROUTE, LOCAL}, frozenset({GROUP}))
STRAY = FlowSpec(0, 7, (("eth_type", ETH_TYPE_IPV4), ("ipv4_dst", "10.9.9.9")), (("output", 1),), EDGECTL_COOKIE | 0xFF)


def test_no_drift_when_the_switch_holds_what_was_installed() -> None:
    assert find_drift(INSTALLED, SwitchConfig(set(INSTALLED.flows), set(INSTALLED.groups))) is None


def test_deleted_flows_are_missing_and_healed_by_adding_them_back() -> None:
    drift = find_drift(INSTALLED, SwitchConfig(frozenset(), INSTALLED.groups))
    assert drift is not None
    every = len(INSTALLED.flows)  # the base flows and the two routes
    assert drift.counts() == {"flows_missing": every, "flows_unexpected": 0, "groups_differ": 0, "meters_differ": 0}
    assert set(drift.heal.add_flows) == INSTALLED.flows and drift.heal.size == every


def test_a_stray_flow_in_our_cookie_space_is_unexpected_and_removed() -> None:
    drift = find_drift(INSTALLED, SwitchConfig(INSTALLED.flows | {STRAY}, INSTALLED.groups))
    assert drift is not None and drift.counts() == {
        "flows_missing": 0,
        "flows_unexpected": 1,
        "groups_differ": 0,
        "meters_differ": 0,
    }
    assert drift.heal == SwitchDelta(delete_flows=(STRAY,))


def test_a_rewritten_flow_and_a_changed_group_count_as_missing_and_differing() -> None:
    rewritten = FlowSpec(ROUTE.table, ROUTE.priority, ROUTE.match, (("output", 9),), ROUTE.cookie)
    tampered = SwitchConfig(
        (INSTALLED.flows - {ROUTE}) | {rewritten}, frozenset({GroupSpec(7, (2,)), GroupSpec(99, ())})
    )
    drift = find_drift(INSTALLED, tampered)
    assert drift is not None and drift.counts() == {
        "flows_missing": 1,
        "flows_unexpected": 0,
        "groups_differ": 2,
        "meters_differ": 0,
    }
    assert drift.heal.modify_flows == (ROUTE,)
    assert drift.heal.modify_groups == (GROUP,) and drift.heal.delete_groups == (GroupSpec(99, ()),)
    assert apply_delta_to(tampered, drift.heal) == INSTALLED


def test_the_log_line_names_switch_dpid_and_counts() -> None:
    drift = Drift(SwitchDelta(add_flows=(ROUTE, LOCAL), delete_flows=(STRAY,)))
    assert drift_message("m1", 0x101, drift) == (
        "drift on switch m1 (dpid 0x101): 2 flows missing, 1 unexpected, 0 groups differ; healing"
    )


def test_the_drift_record_keeps_the_last_drift_found_across_clean_checks() -> None:
    record = DriftRecord()
    assert record.view() == {"last_check_at": None, "last_found": None, "heals": 0}
    record.checked(10.0, Drift(SwitchDelta(add_flows=(ROUTE,))))
    record.heals += 1
    record.checked(20.0, None)
    assert record.view() == {
        "last_check_at": 20.0,
        "last_found": {"at": 10.0, "flows_missing": 1, "flows_unexpected": 0, "groups_differ": 0, "meters_differ": 0},
        "heals": 1,
    }


def test_delta_json_lists_every_message_in_send_order() -> None:
    delta = SwitchDelta(
        add_groups=(GROUP,),
        modify_flows=(LOCAL,),
        add_flows=(ROUTE,),
        delete_flows=(STRAY,),
        delete_groups=(GroupSpec(99, ()),),
    )
    rendered = delta_json(delta)
    json.dumps(rendered)  # JSON as it is
    assert rendered["size"] == 5
    assert [(m["phase"], m["kind"], m["command"]) for m in rendered["mods"]] == [
        ("make", "group", "add"),
        ("make", "flow", "add"),
        ("make", "flow", "modify"),
        ("break", "flow", "delete"),
        ("break", "group", "delete"),
    ]
    assert rendered["mods"][0] == {
        "phase": "make",
        "kind": "group",
        "command": "add",
        "group_id": 7,
        "type": "fast_failover",
        "buckets": [{"watch_port": 1, "actions": ["output:1"]}, {"watch_port": 2, "actions": ["output:2"]}],
    }
    assert rendered["mods"][1] == {
        "phase": "make",
        "kind": "flow",
        "command": "add",
        "table": 0,
        "priority": 100,
        "cookie": "0xec00000000000002",
        "match": {"eth_type": "0x0800", "ipv4_dst": "10.0.0.2"},
        "actions": ["group:7"],
    }
    assert delta_json(SwitchDelta()) == {"size": 0, "mods": []}


# -- the engine's check ---------------------------------------------------------------------------------

FABRIC = """
switches: [{id: a, dpid: 1, site: s}, {id: b, dpid: 2, site: s}]
links: [{a: a, b: b, latency_ms: 1, bandwidth_mbps: 100}]
hosts: [{id: u1, switch: a, ip: 10.0.0.1}, {id: u2, switch: b, ip: 10.0.0.2}]
"""


class FakeSwitches:
    """Switches whose tables a test can change behind the engine's back; ``silent`` ones never answer a read."""

    def __init__(self) -> None:
        self.tables: dict[int, SwitchConfig] = {}
        self.on_switch_error = None
        self.silent: set[int] = set()
        self.reads: list[set[int]] = []
        self.sent: list[tuple[int, str, SwitchDelta]] = []

    def read_config(self, dpid: int, late_answers_count: bool = False) -> SwitchConfig:
        return self.tables.setdefault(dpid, SwitchConfig())

    def read_configs(
        self, dpids: Iterable[int], timeout_s: float, late_answers_count: bool = False
    ) -> dict[int, SwitchConfig]:
        asked = set(dpids)
        self.reads.append(asked)
        return {dpid: self.read_config(dpid) for dpid in asked - self.silent}

    def send_phase(self, dpid: int, delta: SwitchDelta, phase: str) -> bool:
        self.sent.append((dpid, phase, delta))
        if phase == "make":
            part = SwitchDelta(delta.add_groups, delta.modify_groups, delta.add_flows, delta.modify_flows)
        else:
            part = SwitchDelta(delete_flows=delta.delete_flows, delete_groups=delta.delete_groups)
        self.tables[dpid] = apply_delta_to(self.read_config(dpid), part)
        return True

    def barriers(self, dpids: Iterable[int]) -> set[int]:
        return set(dpids)


def programmed(monkeypatch, drifts: list | None = None) -> tuple[RouteEngine, FakeSwitches]:
    monkeypatch.setattr(engine_module, "SETTLE_QUIET_S", 0.0)
    state: FabricState = live(fabric(FABRIC))
    switches = FakeSwitches()
    engine = RouteEngine(
        switches,  # type: ignore[arg-type]
        lambda: state,
        on_drift=(lambda dpid, name, drift: drifts.append((dpid, name, drift))) if drifts is not None else None,
    )
    engine._last_discovery -= 1
    engine._converge()  # reads the switches
    engine._converge()  # programs them
    assert all(engine._installed[d] is engine._compiled[d] for d in (1, 2))
    assert switches.reads == [{1, 2}]  # the read-back asked both switches at once (a new leader takes many)
    switches.sent.clear()
    switches.reads.clear()
    return engine, switches


def test_the_engine_finds_no_drift_on_untouched_switches(monkeypatch) -> None:
    engine, switches = programmed(monkeypatch)
    assert engine.check_drift() == {}
    assert switches.reads == [{1, 2}] and switches.sent == []
    assert all(s.drift.checked_at is not None and s.drift.found_at is None for s in engine.status.values())


def test_the_engine_heals_a_flushed_switch_with_just_the_difference(monkeypatch, caplog) -> None:
    drifts: list = []
    engine, switches = programmed(monkeypatch, drifts)
    before_b = switches.tables[2]
    installed_a = switches.tables[1]
    switches.tables[1] = SwitchConfig(frozenset({STRAY}), installed_a.groups)  # del-flows, then a stray flow
    found = engine.check_drift()
    assert set(found) == {1}
    assert found[1].counts() == {
        "flows_missing": len(installed_a.flows),
        "flows_unexpected": 1,
        "groups_differ": 0,
        "meters_differ": 0,
    }
    assert switches.tables[1] == installed_a and switches.tables[2] is before_b  # b: nothing sent
    assert {dpid for dpid, _, _ in switches.sent} == {1}
    assert [phase for _, phase, _ in switches.sent] == ["make", "break"]  # adds, barrier, then the delete
    assert [(dpid, name) for dpid, name, _ in drifts] == [(1, "a")]
    status = engine.status[1]
    assert status.drift.heals == 1 and status.drift.found == found[1].counts()
    assert f"drift on switch a (dpid 0x1): {len(installed_a.flows)} flows missing, 1 unexpected" in caplog.text
    change = engine.changes()[-1]
    assert (change.dpid, change.reason, change.confirmed, change.delta) == (1, "drift", True, found[1].heal)
    assert engine.check_drift() == {}  # healed: the next check is clean
    assert engine.status[1].drift.heals == 1


def test_a_switch_with_a_change_of_ours_pending_is_not_compared(monkeypatch) -> None:
    engine, switches = programmed(monkeypatch)
    engine._installed[1] = switches.tables[1]  # as after a read: the next round diffs it, not the drift check
    switches.tables[1] = SwitchConfig()
    assert engine.check_drift() == {}
    assert switches.reads == [{2}]


def test_a_switch_that_does_not_answer_is_skipped_with_a_log_line(monkeypatch, caplog) -> None:
    engine, switches = programmed(monkeypatch)
    switches.silent = {1}
    switches.tables[1] = SwitchConfig()
    assert engine.check_drift() == {}
    assert "switch a (dpid 0x1) did not answer" in caplog.text
    assert engine.status[1].drift.checked_at is None and switches.sent == []


def test_a_drift_turn_takes_the_switches_asked_longest_ago_while_their_entries_fit() -> None:
    sizes = {1: 40, 2: 40, 3: 40, 4: 40}
    assert drift_turn(sizes, {}, 200) == [1, 2, 3, 4]  # the whole fabric fits: every switch, every time
    assert drift_turn(sizes, {}, 100) == [1, 2]  # never asked first, in key order
    assert drift_turn(sizes, {1: 5.0, 2: 5.0}, 100) == [3, 4]
    assert drift_turn(sizes, {1: 5.0, 2: 6.0, 3: 7.0, 4: 8.0}, 100) == [1, 2]
    assert drift_turn({1: 500, 2: 10}, {}, 100) == [1]  # a switch larger than the budget still gets its turn
    assert drift_turn({}, {}, 100) == []


def test_every_switch_is_read_in_turns_when_the_fabric_exceeds_one_checks_budget(monkeypatch) -> None:
    engine, switches = programmed(monkeypatch)
    one = len(engine._compiled[1].entries)
    monkeypatch.setattr(engine_module, "DRIFT_ENTRIES_PER_CHECK", one)
    switches.tables[2] = SwitchConfig()  # flushed behind our back
    assert engine.check_drift() == {}  # switch 1's turn
    found = engine.check_drift()  # switch 2's: healed
    assert set(found) == {2}
    assert engine.check_drift() == {}
    assert switches.reads == [{1}, {2}, {1}]


def test_the_record_of_changes_keeps_plan_deltas_by_generation_and_is_bounded(monkeypatch) -> None:
    engine, _ = programmed(monkeypatch)
    plan_changes = [c for c in engine.changes() if c.reason == "plan"]
    assert {c.dpid for c in plan_changes} == {1, 2} and all(c.confirmed for c in plan_changes)
    generation = plan_changes[0].generation
    assert engine.changes(since_generation=generation) == []
    assert engine.changes(since_generation=generation - 1) == engine.changes()
    assert [c.reason for c in engine.changes()] == ["base", "base", "plan", "plan"]
    for _ in range(engine_module.CHANGES_KEPT + 10):
        engine._record(generation + 1, 1, "plan", SwitchDelta(), True)
    assert len(engine.changes()) == engine_module.CHANGES_KEPT
    seqs = [c.seq for c in engine.changes()]
    assert seqs == sorted(seqs)


def test_the_record_of_changes_keeps_at_most_so_many_mods_and_always_the_newest(monkeypatch) -> None:
    engine, _ = programmed(monkeypatch)
    monkeypatch.setattr(engine_module, "CHANGE_MODS_KEPT", 5)
    two = SwitchDelta(add_flows=(ROUTE, LOCAL))
    for generation in range(10, 14):
        engine._record(generation, 1, "plan", two, True)
    assert [c.generation for c in engine.changes()] == [12, 13]  # 4 mods: a third delta would make 6
    big = SwitchDelta(add_flows=(ROUTE, LOCAL, STRAY), delete_flows=(ROUTE, LOCAL, STRAY))
    engine._record(14, 2, "plan", big, True)
    assert [c.generation for c in engine.changes()] == [14]  # larger than the bound alone: still kept
    engine._record(15, 1, "plan", two, True)
    assert [c.generation for c in engine.changes()] == [15]
    assert engine._change_mods == 2
