"""FabricApp.read_configs: every switch asked at once, one deadline for all, and at most one read
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
    threading.Timer(0.1, lambda: answer(app, 1)).start()
    assert app.read_configs({1}, timeout_s=10) == {1: SwitchConfig()}
    assert len(sent) == 6 and app._pending == {} and app._table_reads == {}


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


def drop_counters_answer(app: Any, dpid: int, packets: int, sent_from: int = 0) -> None:
    """The switch answers the counter reads it was sent (from ``sent_from`` on): one guard drop flow
    that dropped ``packets`` in the guard read, nothing in the policy-drop read."""
    from os_ken.ofproto import ofproto_v1_3_parser

    from sdnctl.acl import KIND_GUARD, acl_cookie

    for msg in app.switches[dpid].datapath.sent[sent_from:]:
        guard = msg.cookie == acl_cookie(KIND_GUARD, None)
        stat = SimpleNamespace(
            table_id=0,
            priority=100,
            cookie=acl_cookie(KIND_GUARD, "10.0.0.1"),
            match=ofproto_v1_3_parser.OFPMatch(in_port=2, eth_type=0x0800),
            instructions=[],
            packet_count=packets,
        )
        app._complete(dpid, SimpleNamespace(xid=msg.xid, body=[stat] if guard else []))


def test_only_the_drop_flows_counters_are_read_one_request_per_kind(openflow) -> None:
    from sdnctl.acl import KIND_DENY, KIND_GUARD, KIND_PASS, acl_cookie

    app = app_with(openflow, 1)
    readings: list[tuple[int, dict]] = []
    app.on_acl_counters = lambda dpid, packets, now: readings.append((dpid, packets))
    threading.Timer(0.1, lambda: drop_counters_answer(app, 1, 5)).start()
    app.read_acl_counters(timeout_s=10)
    asked = [(m.cookie, m.cookie_mask) for m in app.switches[1].datapath.sent]
    assert asked == [
        (acl_cookie(KIND_DENY, None), 0xFFFF_FF00_0000_0000),
        (acl_cookie(KIND_GUARD, None), 0xFFFF_FF00_0000_0000),
    ]
    assert all(cookie & mask != acl_cookie(KIND_PASS, "10.0.0.1") & mask for cookie, mask in asked), (
        "the pass flows (most of a port's guard) are not read"
    )
    assert [(dpid, list(packets.values())) for dpid, packets in readings] == [(1, [5])]
    assert app._pending == {} and app._acl_reads == {}


def test_a_counter_read_answered_late_still_counts_at_the_next_poll(openflow) -> None:
    from sdnctl.acl_counters import DropCounters

    app = app_with(openflow, 1)
    counters = DropCounters()
    dropped: list[int] = []
    app.on_acl_counters = lambda dpid, packets, now: dropped.append(sum(counters.update(dpid, packets).values()))
    threading.Timer(0.1, lambda: drop_counters_answer(app, 1, 5)).start()
    app.read_acl_counters(timeout_s=10)  # the baseline: 5 packets dropped before
    sent = app.switches[1].datapath.sent
    app.read_acl_counters(timeout_s=0.05)  # the switch is slow: no answer this poll
    assert len(sent) == 4 and dropped == [0]
    drop_counters_answer(app, 1, 12, sent_from=2)  # its answer comes in after the poll gave up
    app.read_acl_counters(timeout_s=0.05)  # the next poll hands it in rather than asking again
    assert len(sent) == 4, "not asked again while a read was in flight"
    assert dropped == [0, 7], "the 7 packets dropped meanwhile count"
    assert app._pending == {} and app._acl_reads == {}


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
