"""The route engine in replicated mode: it reads and writes only the switches that made this controller
MASTER; a switch that becomes so is read back and given only what differs (nothing, when the last
leader left it as this model asks); one that stops being so is forgotten at once."""

from __future__ import annotations

from collections.abc import Iterable

from sdnctl_helpers import apply_delta_to, fabric, live

from netmodel.state import FabricState
from sdnctl import engine as engine_module
from sdnctl.engine import RouteEngine
from sdnctl.flows import SwitchConfig, SwitchDelta

FABRIC = """
switches: [{id: a, dpid: 1, site: s}, {id: b, dpid: 2, site: s}]
links: [{a: a, b: b, latency_ms: 1, bandwidth_mbps: 100}]
hosts: [{id: u1, switch: a, ip: 10.0.0.1}, {id: u2, switch: b, ip: 10.0.0.2}]
"""


class FakeSwitches:
    """What the engine needs of FabricApp, with roles: only ``writable`` switches may be read or changed
    (the app refuses the others' messages, as FabricApp does)."""

    def __init__(self, tables: dict[int, SwitchConfig], writable: set[int]) -> None:
        self.tables = tables
        self.writable = writable
        self.reads: list[int] = []
        self.sent: list[tuple[int, SwitchDelta]] = []
        self.on_switch_error = None
        self.on_switch_role = None

    def may_write(self, dpid: int) -> bool:
        return dpid in self.writable

    def read_config(self, dpid: int, late_answers_count: bool = False) -> SwitchConfig:
        self.reads.append(dpid)
        return self.tables.setdefault(dpid, SwitchConfig())

    def read_configs(
        self, dpids: Iterable[int], timeout_s: float, late_answers_count: bool = False
    ) -> dict[int, SwitchConfig]:
        return {dpid: self.read_config(dpid) for dpid in dpids}

    def send_phase(self, dpid: int, delta: SwitchDelta, phase: str) -> bool:
        if dpid not in self.writable:
            return False
        self.sent.append((dpid, delta))
        self.tables[dpid] = apply_delta_to(self.tables.setdefault(dpid, SwitchConfig()), delta)
        return True

    def barriers(self, dpids: Iterable[int]) -> set[int]:
        return set(dpids)


def converged(engine: RouteEngine) -> None:
    engine._last_discovery -= 10
    for _ in range(3):
        engine._converge()


def test_a_follower_never_touches_a_switch_and_a_promotion_changes_only_what_differs(monkeypatch) -> None:
    monkeypatch.setattr(engine_module, "SETTLE_QUIET_S", 0.0)
    state: FabricState = live(fabric(FABRIC))
    tables: dict[int, SwitchConfig] = {}
    leader = FakeSwitches(tables, writable={1, 2})
    converged(RouteEngine(leader, lambda: state))
    assert leader.sent and all(tables[d].flows for d in (1, 2)), "the first leader programmed both"

    follower = FakeSwitches(tables, writable=set())
    engine = RouteEngine(follower, lambda: state)
    converged(engine)
    assert follower.reads == [] and follower.sent == [], "a follower reads and writes no switch"
    assert engine.plan is not None, "it keeps the plan for its readers"

    follower.writable = {1, 2}  # the switches confirm MASTER: the app tells the engine
    assert follower.on_switch_role is not None
    follower.on_switch_role(1)
    follower.on_switch_role(2)
    converged(engine)
    assert sorted(follower.reads) == [1, 2], "read back first"
    assert follower.sent == [], "nothing differs: nothing sent"
    assert {s.applied_generation for s in engine.status.values()} == {state.generation}


def test_a_promoted_engine_repairs_just_the_difference(monkeypatch) -> None:
    monkeypatch.setattr(engine_module, "SETTLE_QUIET_S", 0.0)
    state: FabricState = live(fabric(FABRIC))
    tables: dict[int, SwitchConfig] = {}
    converged(RouteEngine(FakeSwitches(tables, writable={1, 2}), lambda: state))
    lost = sorted(tables[2].flows)[-1]
    tables[2] = SwitchConfig(tables[2].flows - {lost}, tables[2].groups, tables[2].meters)
    switches = FakeSwitches(tables, writable={1, 2})
    converged(RouteEngine(switches, lambda: state))
    assert [(dpid, delta.add_flows) for dpid, delta in switches.sent] == [(2, (lost,))]


def test_a_switch_lost_to_another_master_is_forgotten_and_not_written(monkeypatch) -> None:
    monkeypatch.setattr(engine_module, "SETTLE_QUIET_S", 0.0)
    state: FabricState = live(fabric(FABRIC))
    switches = FakeSwitches({}, writable={1, 2})
    engine = RouteEngine(switches, lambda: state)
    converged(engine)
    switches.writable = {1}
    assert switches.on_switch_role is not None
    switches.on_switch_role(2)
    assert 2 not in engine._installed
    switches.sent.clear()
    switches.reads.clear()
    converged(engine)
    engine.check_drift()
    assert 2 not in switches.reads and all(dpid != 2 for dpid, _ in switches.sent)
