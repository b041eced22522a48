"""RouteEngine.status: a switch runs a generation once it holds what that generation asks, also when
that needs no change at all (a workload moving between nodes changes no route; the migration waits on
every switch's applied generation)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from sdnctl_helpers import apply_delta_to, fabric, live

from netmodel import events as ev
from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Resources, Workload
from placement.convergence import NamedProbe, Progress, timed_convergence
from sdnctl import engine as engine_module
from sdnctl.engine import RouteEngine, SwitchStatus
from sdnctl.flows import SwitchConfig, SwitchDelta

FABRIC = """
switches: [{id: a, dpid: 1, site: s}, {id: b, dpid: 2, site: s}]
links: [{a: a, b: b, latency_ms: 1, bandwidth_mbps: 100}]
hosts: [{id: u1, switch: a, ip: 10.0.0.1}]
nodes: [{id: n1, site: s, switch: b, cpu_millis: 1000, memory_mib: 1024, ip: 10.0.0.10}]
services: [{name: web, port: 8080, replicas: 1, cpu_millis: 100, memory_mib: 64}]
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


def test_a_generation_that_changes_no_flow_is_still_applied_on_every_switch(monkeypatch) -> None:
    monkeypatch.setattr(engine_module, "SETTLE_QUIET_S", 0.0)
    state: FabricState = live(fabric(FABRIC))
    engine = RouteEngine(FakeSwitches(), lambda: state)
    engine._last_discovery -= 1  # discovery long quiet: program at once
    engine._converge()  # reads the switches
    engine._converge()  # programs them
    first = state.generation
    assert {s.applied_generation for s in engine.status.values()} == {first}
    workload = Workload(
        WorkloadId("web-1"),
        ServiceName("web"),
        SpiffeId("spiffe://t/svc/web/w/web-1"),
        Resources(100, 64),
        NodeId("n1"),
    )
    state = state.apply(ev.WorkloadPlaced(workload))
    assert state.generation > first
    before = time.time()
    engine._converge()
    assert {s.applied_generation for s in engine.status.values()} == {state.generation}
    assert all(s.last_applied_at is None or s.last_applied_at < before for s in engine.status.values())


def test_a_switch_that_left_does_not_hold_back_convergence() -> None:
    """A switch down for maintenance keeps its last applied generation: waiting for it would hold every
    migration and desired-state apply until their timeout. It is read and set again when it connects."""
    state: FabricState = live(fabric(FABRIC))
    engine = RouteEngine(FakeSwitches(), lambda: state)
    engine.status = {1: SwitchStatus(applied_generation=9), 2: SwitchStatus(applied_generation=4)}
    assert not engine.runs(9), "switch 2, connected, has not run generation 9"
    state = state.apply(ev.SwitchDisconnected(2, at=5.0))
    assert engine.runs(9), "only connected switches are waited for"
    assert not engine.runs(10)


def test_a_load_measurement_is_nothing_to_do_for_the_routes(monkeypatch) -> None:
    """Link load weighs nowhere in routing: the plan is the previous one's arrays, nothing is sent, and
    the switches run the new generation at once."""
    monkeypatch.setattr(engine_module, "SETTLE_QUIET_S", 0.0)
    state: FabricState = live(fabric(FABRIC))
    switches = FakeSwitches()
    engine = RouteEngine(switches, lambda: state)
    engine._last_discovery -= 1
    engine._converge()
    engine._converge()
    plan = engine.plan
    assert plan is not None
    sent: list[int] = []
    send_phase = switches.send_phase
    monkeypatch.setattr(
        switches, "send_phase", lambda dpid, delta, phase: sent.append(dpid) or send_phase(dpid, delta, phase)
    )
    loads = tuple((link, 90e6) for link in state.topology.links)
    state = state.apply(ev.LinkLoadMeasured(loads, at=5.0))
    engine._converge()
    assert sent == []
    assert engine.plan is not None and engine.plan.routing is plan.routing and engine.plan.weight is plan.weight
    assert {s.applied_generation for s in engine.status.values()} == {state.generation}


def test_discovery_does_not_settle_before_any_switch_connected(monkeypatch) -> None:
    """A controller slow to start, or switches slow to reconnect after a restart: settling with no switch
    connected would program the first switches before their links are seen, withdrawing their routes."""
    monkeypatch.setattr(engine_module, "SETTLE_QUIET_S", 0.0)
    monkeypatch.setattr(engine_module.time, "sleep", lambda _s: None)
    declared = fabric(FABRIC)
    holder = [declared]
    engine = RouteEngine(FakeSwitches(), lambda: holder[0])
    engine._last_discovery -= 100
    engine._last_connect -= 100  # started long ago: the longest wait is over
    engine._converge()
    assert not engine._settled and engine.plan is None, "settled with no switch connected"
    # The switches connect; their link is not seen yet: wait for it (up to SETTLE_MAX_S from now).
    connected = declared
    for dpid in sorted(declared.topology.switches):
        connected = connected.apply(ev.SwitchConnected(dpid, (), 0.0))
    holder[0] = connected
    engine._converge()
    engine._converge()
    assert not engine._settled and engine.plan is None, "programmed before the link was discovered"
    holder[0] = live(declared)
    engine._converge()
    assert engine._settled and engine.plan is not None


TRIANGLE = """
switches: [{id: a, dpid: 1, site: s}, {id: b, dpid: 2, site: s}, {id: c, dpid: 3, site: s}]
links:
  - {a: a, b: b, latency_ms: 1, bandwidth_mbps: 100}
  - {a: b, b: c, latency_ms: 1, bandwidth_mbps: 100}
  - {a: a, b: c, latency_ms: 5, bandwidth_mbps: 100}
hosts: [{id: u1, switch: a, ip: 10.0.0.1}, {id: u2, switch: c, ip: 10.0.0.2}]
"""


def without_switch(state: FabricState, dpid: int) -> FabricState:
    """``state`` as a restarted controller sees it before ``dpid`` reconnected (its links unseen)."""
    declared = fabric(TRIANGLE)
    seen = declared
    for other in sorted(declared.topology.switches):
        if other != dpid:
            seen = seen.apply(ev.SwitchConnected(other, (), 0.0))
    for link in state.topology.links:
        if dpid not in (link.src, link.dst):
            seen = seen.apply(ev.LinkDiscovered(link, 0.0))
    return seen


def settle_quietly(monkeypatch) -> None:
    monkeypatch.setattr(engine_module, "SETTLE_QUIET_S", 0.0)
    monkeypatch.setattr(engine_module.time, "sleep", lambda _s: None)


def programmed_by_a_first_controller(state: FabricState) -> FakeSwitches:
    """Switches holding the tables a controller (since gone) programmed for ``state``."""
    switches = FakeSwitches()
    first = RouteEngine(switches, lambda: state)
    first._last_discovery -= 100
    first._converge()  # reads the switches
    first._converge()  # programs them
    return switches


def test_a_restarted_controller_waits_for_every_declared_switch_before_programming(monkeypatch) -> None:
    """OVS retries a lost controller with a backoff of up to 8 s, so after a restart switches come back
    seconds apart. Programming the first ones would withdraw the routes (and backup groups) through a
    switch that has not reconnected yet; the engine waits for it, up to SETTLE_RECONNECT_S."""
    settle_quietly(monkeypatch)
    everything = live(fabric(TRIANGLE))
    switches = programmed_by_a_first_controller(everything)
    carried = dict(switches.tables)
    assert any(config.groups for config in carried.values()), "the triangle has backup groups"

    holder = [without_switch(everything, 2)]
    restarted = RouteEngine(switches, lambda: holder[0])
    restarted._last_discovery -= 100  # discovery long quiet
    restarted._converge()
    restarted._converge()
    assert not restarted._settled and restarted.plan is None, "programmed before switch b reconnected"
    assert switches.tables == carried, "a carried route or group was changed"
    holder[0] = everything
    restarted._converge()
    assert restarted._settled and restarted.plan is not None
    restarted._converge()
    assert {dpid: (config.flows, config.groups) for dpid, config in switches.tables.items()} == {
        dpid: (config.flows, config.groups) for dpid, config in carried.items()
    }, "the restarted controller changed what was already right"


def test_a_declared_switch_that_never_reconnects_is_waited_for_a_bounded_time(monkeypatch) -> None:
    settle_quietly(monkeypatch)
    everything = live(fabric(TRIANGLE))
    switches = programmed_by_a_first_controller(everything)
    partial = without_switch(everything, 2)
    restarted = RouteEngine(switches, lambda: partial)
    restarted._last_discovery -= 100
    restarted._converge()
    restarted._converge()
    assert not restarted._settled
    restarted._last_connect -= engine_module.SETTLE_RECONNECT_S + 1
    assert restarted._connected_since is not None
    restarted._connected_since -= engine_module.SETTLE_RECONNECT_S + 1
    restarted._converge()
    assert restarted._settled and restarted.plan is not None, "waited for a dead switch past the bound"


def test_a_fresh_fabric_is_programmed_without_waiting_for_every_declared_switch(monkeypatch) -> None:
    """Switches that hold no route of ours have nothing to withdraw: the ones connected get routes at once."""
    settle_quietly(monkeypatch)
    everything = live(fabric(TRIANGLE))
    partial = without_switch(everything, 2)
    engine = RouteEngine(FakeSwitches(), lambda: partial)
    engine._last_discovery -= 100
    engine._converge()
    engine._converge()
    assert engine._settled and engine.plan is not None


def test_every_round_rings_the_convergence_bell_so_a_wait_sees_the_switches_at_once(monkeypatch) -> None:
    monkeypatch.setattr(engine_module, "SETTLE_QUIET_S", 0.0)
    state: FabricState = live(fabric(FABRIC))
    progress = Progress()
    engine = RouteEngine(FakeSwitches(), lambda: state, after_round=progress.ring)
    engine._last_discovery -= 1  # discovery long quiet: program at once
    mark = progress.mark()
    engine.start()
    try:
        routes = NamedProbe("routes", engine.runs)
        assert timed_convergence([routes], state.generation, 30.0, progress=progress)[0] == []
        assert progress.mark() > mark  # the rounds rang (the wait looked again on each)
    finally:
        engine.stop()


def test_switches_read_together_get_their_base_flows_under_one_barrier_wait(monkeypatch) -> None:
    """Several switches without LLDP and ARP flows (they reconnected with empty tables) are all sent them
    before one barrier wait: one wait per switch, each up to its timeout, held every round behind them.
    A switch that does not confirm is read again next round."""
    monkeypatch.setattr(engine_module, "SETTLE_QUIET_S", 0.0)
    state: FabricState = live(fabric(FABRIC))
    waits: list[set[int]] = []

    class CountingSwitches(FakeSwitches):
        def barriers(self, dpids: Iterable[int]) -> set[int]:
            waits.append(set(dpids))
            return set(dpids) - {2}  # b does not confirm in time

    switches = CountingSwitches()
    engine = RouteEngine(switches, lambda: state)
    engine._last_discovery -= 1
    engine._converge()
    assert waits[0] == {1, 2}, "both switches' base flows awaited together"
    assert 1 in engine._installed and 2 not in engine._installed
    base = [(c.dpid, c.confirmed) for c in engine.changes() if c.reason == "base"]
    assert sorted(base) == [(1, True), (2, False)]
