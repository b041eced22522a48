"""What the route engine tells the metrics: the flows and groups each switch holds, how long each new
generation's routes took to compute (only real recomputations, not idle rounds), and how long its changes
took to apply, in how many loop-free rounds."""

from __future__ import annotations

from collections.abc import Iterable

from sdnctl_helpers import apply_delta_to, fabric, link_between, live

from netmodel import events as ev
from netmodel.state import FabricState
from sdnctl import engine as engine_module
from sdnctl.engine import RouteEngine
from sdnctl.flows import SwitchConfig, SwitchDelta

FABRIC = """
switches: [{id: a, dpid: 1, site: s}, {id: b, dpid: 2, site: s}, {id: c, dpid: 3, site: s}]
links: [{a: a, b: b, latency_ms: 1, bandwidth_mbps: 100}, {a: b, b: c, latency_ms: 1, bandwidth_mbps: 100},
        {a: a, b: c, latency_ms: 5, bandwidth_mbps: 100}]
hosts: [{id: u1, switch: a, ip: 10.0.0.1}, {id: u2, switch: c, ip: 10.0.0.2}]
"""


class FakeSwitches:
    """What the engine needs of FabricApp: every message lands, every barrier confirms."""

    def __init__(self) -> None:
        self.tables: dict[int, SwitchConfig] = {}
        self.on_switch_error = None

    def read_config(self, dpid: int, late_answers_count: bool = False) -> SwitchConfig:
        return self.tables.setdefault(dpid, SwitchConfig(frozenset(), frozenset()))

    def read_configs(
        self, dpids: Iterable[int], timeout_s: float, late_answers_count: bool = False
    ) -> dict[int, SwitchConfig]:
        return {dpid: self.read_config(dpid) for dpid in dpids}

    def send_phase(self, dpid: int, delta: SwitchDelta, phase: str) -> bool:
        self.tables[dpid] = apply_delta_to(self.read_config(dpid), delta)
        return True

    def barriers(self, dpids: Iterable[int]) -> set[int]:
        return set(dpids)


def test_installed_counts_are_what_each_switch_holds_and_compute_times_one_per_generation(monkeypatch) -> None:
    monkeypatch.setattr(engine_module, "SETTLE_QUIET_S", 0.0)
    state: FabricState = live(fabric(FABRIC))
    switches = FakeSwitches()
    computed: list[float] = []
    engine = RouteEngine(switches, lambda: state, on_routes_computed=computed.append)
    engine._last_discovery -= 1  # discovery long quiet: program at once
    assert engine.installed_counts() == {}
    engine._converge()
    engine._converge()
    engine._converge()  # nothing new: not a recomputation
    assert len(computed) == 1 and computed[0] >= 0.0
    counts = engine.installed_counts()
    assert counts == {dpid: (len(t.flows), len(t.groups)) for dpid, t in switches.tables.items()}
    assert all(flows > 0 for flows, _ in counts.values())
    assert any(groups > 0 for _, groups in counts.values())  # a backup path: fast-failover groups

    state = state.apply(ev.LinkWentDown(link_between(state, 1, 2)))
    engine._converge()
    assert len(computed) == 2
    assert engine.installed_counts() == {dpid: (len(t.flows), len(t.groups)) for dpid, t in switches.tables.items()}


class RecordingSwitches(FakeSwitches):
    """FakeSwitches that keep the order of what was sent and barriered."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, int, SwitchDelta | None]] = []

    def send_phase(self, dpid: int, delta: SwitchDelta, phase: str) -> bool:
        self.log.append((phase, dpid, delta))
        return super().send_phase(dpid, delta, phase)

    def barriers(self, dpids: Iterable[int]) -> set[int]:
        confirmed = set(dpids)
        self.log.extend(("barrier", dpid, None) for dpid in sorted(confirmed))
        return confirmed


def test_moving_primaries_are_applied_in_confirmed_rounds_and_reported(monkeypatch) -> None:
    """b-c gets slow: towards u2 (on c), a moves from b to its direct link and b from c to a. b's new path
    crosses a, so a's change is sent and barrier-confirmed before b's; the apply is reported with its
    rounds."""
    monkeypatch.setattr(engine_module, "SETTLE_QUIET_S", 0.0)
    state: FabricState = live(fabric(FABRIC))
    switches = RecordingSwitches()
    applied: list[tuple[float, int]] = []
    engine = RouteEngine(switches, lambda: state, on_routes_applied=lambda s, r: applied.append((s, r)))
    engine._last_discovery -= 1
    engine._converge()
    engine._converge()
    assert len(applied) == 1 and applied[0][1] == 1  # a first install: nothing moves
    slow = link_between(state, 2, 3)
    state = state.apply(ev.LinkLatencyMeasured(((slow, 9000), (slow.reversed(), 9000)), 2.0))
    switches.log.clear()
    engine._converge()
    assert len(applied) == 2 and applied[1][1] == 2 and applied[1][0] >= 0.0  # a in the first round, b after
    group_of_u2 = 0x0A000002

    def sent_u2_group(dpid: int) -> int:
        return next(
            i
            for i, (phase, at, delta) in enumerate(switches.log)
            if phase == "make" and at == dpid and delta and any(g.group_id == group_of_u2 for g in delta.modify_groups)
        )

    a_sent, b_sent = sent_u2_group(1), sent_u2_group(2)
    assert a_sent < b_sent
    assert ("barrier", 1, None) in switches.log[a_sent:b_sent], "a's change confirmed before b's is sent"


def test_an_apply_waiting_on_its_barriers_reads_as_running_and_idle_reads_zero(monkeypatch) -> None:
    """While the switches have not confirmed a generation's changes, ``apply_running_s`` counts the wait
    (nothing else moves then); before and after, it reads 0."""
    monkeypatch.setattr(engine_module, "SETTLE_QUIET_S", 0.0)
    state: FabricState = live(fabric(FABRIC))
    seen_while_waiting: list[float] = []

    class SlowBarriers(FakeSwitches):
        def barriers(self, dpids: Iterable[int]) -> set[int]:
            dpids = set(dpids)
            if dpids:  # an empty break phase asks for no barrier
                seen_while_waiting.append(engine.apply_running_s())
            return super().barriers(dpids)

    engine = RouteEngine(SlowBarriers(), lambda: state)
    engine._last_discovery -= 1
    assert engine.apply_running_s() == 0.0
    engine._converge()
    engine._converge()
    assert seen_while_waiting and all(s > 0 for s in seen_while_waiting)
    assert engine.apply_running_s() == 0.0
