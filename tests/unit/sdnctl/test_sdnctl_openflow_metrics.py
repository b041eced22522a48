"""The OpenFlow app's side of the metrics, driven with a fake datapath and os-ken's real message classes:
port-stats requests to every switch, replies into the port rates (switch-local ports ignored, a
disconnected switch forgotten), every message sent and handled counted by type, errors by type and code."""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from netmodel.ids import PortNo, SwitchId
from sdnctl.message_counts import MessageCounts
from sdnctl.port_stats import PortRates


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
    """A FabricApp without os-ken's machinery: its switch table, counters and port rates."""
    app = openflow.FabricApp.__new__(openflow.FabricApp)
    app._lock = threading.Lock()
    app._pending = {}
    app._table_reads = {}
    app.messages = MessageCounts()
    app.port_rates = PortRates()
    app.on_switch_error = None
    app.switches = {dpid: openflow._Switch(FakeDatapath(dpid)) for dpid in dpids}
    return app


def stats_reply(app: Any, dpid: int, *ports: tuple[int, int, int]) -> Any:
    datapath = app.switches[dpid].datapath
    msg = datapath.ofproto_parser.OFPPortStatsReply(datapath)
    msg.body = [SimpleNamespace(port_no=no, tx_bytes=tx, rx_bytes=rx) for no, tx, rx in ports]
    return SimpleNamespace(msg=msg)


def test_every_switch_is_asked_for_its_port_counters_and_the_requests_are_counted(openflow) -> None:
    app = app_with(openflow, 1, 2)
    app.request_port_stats()
    for dpid in (1, 2):
        (request,) = app.switches[dpid].datapath.sent
        assert type(request).__name__ == "OFPPortStatsRequest" and request.port_no == openflow.ofp.OFPP_ANY
    assert app.messages.totals().sent == {"OFPPortStatsRequest": 2}


def test_replies_feed_the_port_rates_and_switch_local_ports_are_ignored(openflow) -> None:
    app = app_with(openflow, 1)
    local = openflow.ofp.OFPP_LOCAL
    app._port_stats_reply(stats_reply(app, 1, (1, 1_000, 10), (local, 5, 5)))
    app._port_stats_reply(stats_reply(app, 1, (1, 3_000, 30)))
    readings = app.port_rates.readings()
    assert set(readings) == {(SwitchId(1), PortNo(1))}
    assert readings[(SwitchId(1), PortNo(1))].tx_bytes == 3_000
    assert readings[(SwitchId(1), PortNo(1))].tx_bytes_per_s is not None
    assert app.messages.totals().received == {"OFPPortStatsReply": 2}


def test_a_reply_from_a_switch_no_longer_connected_is_dropped(openflow) -> None:
    app = app_with(openflow, 1)
    reply = stats_reply(app, 1, (1, 1_000, 10))
    del app.switches[1]
    app._port_stats_reply(reply)
    assert app.port_rates.readings() == {}


def test_errors_are_counted_by_type_name_and_code(openflow) -> None:
    app = app_with(openflow, 1)
    datapath = app.switches[1].datapath
    error = datapath.ofproto_parser.OFPErrorMsg(datapath, type_=openflow.ofp.OFPET_BAD_REQUEST, code=4)
    error.xid = 7
    app._error(SimpleNamespace(msg=error))
    totals = app.messages.totals()
    assert totals.errors == {("bad_request", 4): 1}
    assert totals.received == {"OFPErrorMsg": 1}
    assert openflow.error_type_name(0xBEEF) == "unknown"
