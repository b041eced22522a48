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
    assert [len(app.switches[d].datapath.sent) for d in (1, 2)] == [2, 2]  # flow stats, group desc
    assert app._pending == {} and app._table_reads == {}


def test_a_read_left_unanswered_is_not_repeated_until_it_is_answered(openflow) -> None:
    app = app_with(openflow, 1, 2)
    threading.Timer(0.1, lambda: answer(app, 2)).start()
    assert app.read_configs({1, 2}, timeout_s=1.0) == {2: SwitchConfig()}  # 1 is silent: left out
    sent = app.switches[1].datapath.sent
    assert len(sent) == 2
    assert app.read_configs({1}, timeout_s=0.05) == {}  # still in flight: not asked again
    assert len(sent) == 2
    answer(app, 1)  # the late answer: dropped (the tables may have changed since), and 1 asked anew
    threading.Timer(0.1, lambda: answer(app, 1)).start()
    assert app.read_configs({1}, timeout_s=10) == {1: SwitchConfig()}
    assert len(sent) == 4 and app._pending == {} and app._table_reads == {}


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
