"""FabricApp.read_configs and read_acl_counters: every switch asked at once, one deadline for all, and at most one read
of a switch's tables in flight (a read given up on is not repeated until it is answered or the
switch goes). Driven with a fake datapath: what is sent is recorded, replies are handed in."""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from sdnctl.flows import SwitchConfig


@pytest.fixture(scope="module")
def openflow() -> Any:
    os.environ.setdefault("OSKEN_HUB_TYPE", "native")
    from os_ken.base import app_manager  # noqa: F401, I001 - must come first (os-ken circular import)
    from sdnctl import openflow

    return openflow


class FakeDatapath:
    def __init__(self, dpid: int) -> None:
        from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

        self.id = dpid
        self.ofproto = ofproto_v1_3
        self.ofproto_parser = ofproto_v1_3_parser
        self.sent: list[Any] = []
        self._xid = 0

    def set_xid(self, msg: Any) -> int:
        self._xid += 1
        msg.xid = self._xid
        return self._xid

    def send_msg(self, msg: Any) -> bool:
        self.sent.append(msg)
        return True


def app_with(openflow: Any, *dpids: int) -> Any:
    """A FabricApp without os-ken's machinery: just the switch table and the pending requests."""
    from sdnctl.message_counts import MessageCounts

    app = openflow.FabricApp.__new__(openflow.FabricApp)
    app._lock = threading.Lock()
    app.messages = MessageCounts()
    app._pending = {}
    app._table_reads = {}
    app._acl_reads = {}
    app._acl_totals = {}
    app._acl_totals_read = {}
    app.switches = {dpid: openflow._Switch(FakeDatapath(dpid)) for dpid in dpids}
    return app


def answer(app: Any, dpid: int) -> None:
    """The switch answers every request it was sent, with empty tables."""
    for msg in app.switches[dpid].datapath.sent:
        app._complete(dpid, SimpleNamespace(xid=msg.xid, body=[]))


def test_switches_are_read_at_once_and_an_answer_is_their_tables(openflow) -> None:
    app = app_with(openflow, 1, 2)
    answered = threading.Timer(0.2, lambda: (answer(app, 1), answer(app, 2)))
    answered.start()
    assert app.read_configs({1, 2}, timeout_s=10) == {1: SwitchConfig(), 2: SwitchConfig()}
    assert [len(app.switches[d].datapath.sent) for d in (1, 2)] == [3, 3]  # flow stats, group desc, meter config
    assert [type(m).__name__ for m in app.switches[1].datapath.sent] == [
        "OFPFlowStatsRequest",
        "OFPGroupDescStatsRequest",
        "OFPMeterConfigStatsRequest",
    ]
    assert app._pending == {} and app._table_reads == {}


def test_a_read_left_unanswered_is_not_repeated_until_it_is_answered(openflow) -> None:
    app = app_with(openflow, 1, 2)
    threading.Timer(0.1, lambda: answer(app, 2)).start()
    assert app.read_configs({1, 2}, timeout_s=1.0) == {2: SwitchConfig()}  # 1 is silent: left out
    sent = app.switches[1].datapath.sent
    assert len(sent) == 3
    assert app.read_configs({1}, timeout_s=0.05) == {}  # still in flight: not asked again
    assert len(sent) == 3
    answer(app, 1)  # the late answer: dropped (the tables may have changed since), and 1 asked anew
    late = app._table_reads[1]
    assert all(p.done.is_set() and p.replies == [] for p in late)  # completed, its replies not kept
    threading.Timer(0.1, lambda: answer(app, 1)).start()
    assert app.read_configs({1}, timeout_s=10) == {1: SwitchConfig()}
    assert len(sent) == 6 and app._pending == {} and app._table_reads == {}


def test_a_late_answer_counts_when_nothing_was_written_meanwhile(openflow) -> None:
    """A switch just connected is written to only once read: its answer after the wait still says what it
    holds, and the next read takes it instead of asking again (and waiting again, as far behind)."""
    app = app_with(openflow, 1)
    assert app.read_configs({1}, timeout_s=0.05, late_answers_count=True) == {}  # silent for now
    sent = app.switches[1].datapath.sent
    assert len(sent) == 3
    assert app.read_config(1, timeout_s=0.05, late_answers_count=True) is None  # still in flight
    answer(app, 1)  # late, and kept
    assert app.read_config(1, timeout_s=0.05, late_answers_count=True) == SwitchConfig()
    assert len(sent) == 3, "the late answer was taken, not asked for again"
    assert app._pending == {} and app._table_reads == {}


def test_a_switch_that_disconnects_while_read_is_left_out(openflow) -> None:
    app = app_with(openflow, 1)

    def disconnect() -> None:
        with app._lock:
            del app.switches[1]
            for key in [k for k in app._pending if k[0] == 1]:
                pending = app._pending.pop(key)
                pending.lost = True
                pending.done.set()

    threading.Timer(0.1, disconnect).start()
    assert app.read_configs({1}, timeout_s=10) == {}


class DropFlowSwitch:
    """Answers the counter reads sent to a fake switch, each once, on a thread of its own: one guard drop
    flow that dropped ``packets`` so far (totals and flows alike), nothing in the policy-drop read.
    ``hold_flow_reads``: flow reads stay unanswered until released."""

    def __init__(self, app: Any, dpid: int, packets: int) -> None:
        self.app, self.dpid, self.packets = app, dpid, packets
        self.hold_flow_reads = False
        self._answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DropFlowSwitch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def sent(self) -> list[Any]:
        return self.app.switches[self.dpid].datapath.sent

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.answer_waiting()

    def answer_waiting(self) -> None:
        from os_ken.ofproto import ofproto_v1_3_parser

        from sdnctl.acl import KIND_GUARD, acl_cookie

        while self._answered < len(self.sent):
            msg = self.sent[self._answered]
            guard = msg.cookie == acl_cookie(KIND_GUARD, None)
            if type(msg).__name__ == "OFPAggregateStatsRequest":
                body: Any = SimpleNamespace(packet_count=self.packets if guard else 0, flow_count=int(guard))
            elif self.hold_flow_reads:
                return
            else:
                stat = SimpleNamespace(
                    table_id=0,
                    priority=100,
                    cookie=acl_cookie(KIND_GUARD, "10.0.0.1"),
                    match=ofproto_v1_3_parser.OFPMatch(in_port=2, eth_type=0x0800),
                    instructions=[],
                    packet_count=self.packets,
                )
                body = [stat] if guard else []
            self.app._complete(self.dpid, SimpleNamespace(xid=msg.xid, body=body))
            self._answered += 1


def kinds_asked(messages: list[Any]) -> list[tuple[str, int, int]]:
    return [(type(m).__name__, m.cookie, m.cookie_mask) for m in messages]


def test_only_the_drop_flows_counters_are_read_one_request_per_kind(openflow) -> None:
    from sdnctl.acl import KIND_DENY, KIND_GUARD, KIND_PASS, acl_cookie

    app = app_with(openflow, 1)
    readings: list[tuple[int, dict]] = []
    app.on_acl_counters = lambda dpid, packets, now: readings.append((dpid, packets))
    with DropFlowSwitch(app, 1, 5) as switch:
        app.read_acl_counters(timeout_s=10)
    deny, guard = (
        (acl_cookie(KIND_DENY, None), 0xFFFF_FF00_0000_0000),
        (acl_cookie(KIND_GUARD, None), 0xFFFF_FF00_0000_0000),
    )
    assert kinds_asked(switch.sent) == [
        ("OFPAggregateStatsRequest", *deny),  # the totals first,
        ("OFPAggregateStatsRequest", *guard),
        ("OFPFlowStatsRequest", *deny),  # then, as they are new, the flows
        ("OFPFlowStatsRequest", *guard),
    ]
    assert all(m.cookie & m.cookie_mask != acl_cookie(KIND_PASS, "10.0.0.1") & m.cookie_mask for m in switch.sent), (
        "the pass flows (most of a port's guard) are not read"
    )
    assert [(dpid, list(packets.values())) for dpid, packets in readings] == [(1, [5])]
    assert app._pending == {} and app._acl_reads == {} and app._acl_totals_read == {}


def test_a_switch_whose_totals_did_not_move_is_not_read_again_until_they_do(openflow) -> None:
    from sdnctl.acl_counters import DropCounters

    app = app_with(openflow, 1)
    counters = DropCounters()
    dropped: list[int] = []
    app.on_acl_counters = lambda dpid, packets, now: dropped.append(sum(counters.update(dpid, packets).values()))
    with DropFlowSwitch(app, 1, 5) as switch:
        app.read_acl_counters(timeout_s=10)  # the baseline
        app.read_acl_counters(timeout_s=10)  # nothing dropped since
        assert [name for name, *_ in kinds_asked(switch.sent[4:])] == ["OFPAggregateStatsRequest"] * 2
        assert dropped == [0], "no reading handed in: nothing to count"
        switch.packets = 9
        app.read_acl_counters(timeout_s=10)
    assert [name for name, *_ in kinds_asked(switch.sent[6:])] == ["OFPAggregateStatsRequest"] * 2 + [
        "OFPFlowStatsRequest"
    ] * 2
    assert dropped == [0, 4]
    assert app._pending == {} and app._acl_reads == {} and app._acl_totals_read == {}


def test_a_counter_read_answered_late_still_counts_at_the_next_poll(openflow) -> None:
    from sdnctl.acl_counters import DropCounters

    app = app_with(openflow, 1)
    counters = DropCounters()
    dropped: list[int] = []
    app.on_acl_counters = lambda dpid, packets, now: dropped.append(sum(counters.update(dpid, packets).values()))
    with DropFlowSwitch(app, 1, 5) as switch:
        app.read_acl_counters(timeout_s=10)  # the baseline: 5 packets dropped before
        switch.packets = 12
        switch.hold_flow_reads = True
        app.read_acl_counters(timeout_s=0.3)  # the totals moved; the flows are slow: no answer this poll
        assert len(switch.sent) == 8 and dropped == [0]
        switch.hold_flow_reads = False  # their answer comes in after the poll gave up
        app.read_acl_counters(timeout_s=10)  # the next poll hands it in rather than asking again
    assert len(switch.sent) == 8, "not asked again while a read was in flight"
    assert dropped == [0, 7], "the 7 packets dropped meanwhile count"
    assert app._pending == {} and app._acl_reads == {} and app._acl_totals_read == {}


def test_a_switch_that_reconnects_or_was_not_read_for_a_minute_is_read_in_full_again(openflow) -> None:
    app = app_with(openflow, 1)
    readings: list[dict] = []
    app.on_acl_counters = lambda dpid, packets, now: readings.append(packets)
    with DropFlowSwitch(app, 1, 5):
        app.read_acl_counters(timeout_s=10)
        app.read_acl_counters(timeout_s=10)
        assert len(readings) == 1
        app._acl_totals.pop(1)  # what the switch's disconnect does (tested with the connection handler)
        app.read_acl_counters(timeout_s=10)
        assert len(readings) == 2
        totals, read_at = app._acl_totals[1]
        app._acl_totals[1] = (totals, read_at - openflow.ACL_FULL_READ_S)  # a minute without a full read
        app.read_acl_counters(timeout_s=10)
    assert len(readings) == 3, "read in full again, totals or not"


def test_a_switch_without_meters_is_read_as_holding_none_and_not_left_waiting(openflow) -> None:
    app = app_with(openflow, 1)
    app.on_switch_error = None

    def refuse_meters_answer_the_rest() -> None:
        for msg in app.switches[1].datapath.sent:
            if type(msg).__name__ == "OFPMeterConfigStatsRequest":
                error = SimpleNamespace(type=1, code=2, xid=msg.xid, datapath=SimpleNamespace(id=1))
                app._error(SimpleNamespace(msg=error))  # OFPET_BAD_REQUEST: no meter table
            else:
                app._complete(1, SimpleNamespace(xid=msg.xid, body=[]))

    threading.Timer(0.1, refuse_meters_answer_the_rest).start()
    assert app.read_configs({1}, timeout_s=5) == {1: SwitchConfig()}
    assert app._pending == {} and app._table_reads == {}  # asked again next time, not stuck in flight


def test_totals_read_over_a_connection_that_went_meanwhile_are_not_kept(openflow) -> None:
    """A switch that reconnects while its drop flows are read: the reading is handed in, but its totals do not
    stand for the new connection, whose flows are read in full at the next poll."""
    app = app_with(openflow, 1)
    readings: list[dict] = []
    app.on_acl_counters = lambda dpid, packets, now: readings.append(packets)
    with DropFlowSwitch(app, 1, 5) as switch:
        switch.hold_flow_reads = True
        app.read_acl_counters(timeout_s=0.3)  # totals asked and answered, the flows held
        old = app.switches[1].datapath
        again = FakeDatapath(1)  # the same switch on a new connection (sharing the record of what was sent)
        again.sent, again._xid = old.sent, old._xid
        app.switches[1] = openflow._Switch(again)
        switch.hold_flow_reads = False
        app.read_acl_counters(timeout_s=10)  # the old read handed in; its totals not kept
        assert len(readings) == 1 and 1 not in app._acl_totals
        app.read_acl_counters(timeout_s=10)
    assert len(readings) == 2, "read in full over the new connection"
