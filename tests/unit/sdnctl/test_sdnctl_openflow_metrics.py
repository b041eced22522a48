"""The OpenFlow app's side of the metrics, driven with a fake datapath and os-ken's real message classes:
port-stats requests to every switch, replies into the port rates (switch-local ports ignored, a
disconnected switch forgotten) and, once per poll round, the link load into the model; every message
sent and handled counted by type, errors by type and code."""

from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from sdnctl_helpers import fabric, link_between, live

from netmodel import events as ev
from netmodel.ids import PortNo, SwitchId
from netmodel.state import FabricState
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


def app_with(openflow: Any, *dpids: int, state: FabricState | None = None) -> Any:
    """A FabricApp without os-ken's machinery: its switch table, counters and port rates. What it publishes
    is applied to ``state`` (``app.model``) and kept in ``app.published``."""
    app = openflow.FabricApp.__new__(openflow.FabricApp)
    app.model = state if state is not None else FabricState()
    app.published = []

    def publish(event: ev.Event) -> None:
        app.published.append(event)
        app.model = app.model.apply(event)

    app._publish = publish
    app._state = lambda: app.model
    app._stats_awaited = None
    app._lock = threading.Lock()
    app._pending = {}
    app._table_reads = {}
    app._acl_reads = {}
    app._acl_totals = {}
    app._acl_totals_read = {}
    app.messages = MessageCounts()
    app.port_rates = PortRates()
    app.on_switch_error = None
    app.switches = {dpid: openflow._Switch(FakeDatapath(dpid)) for dpid in dpids}
    return app


def stats_reply(app: Any, dpid: int, *ports: tuple[int, int, int], more: bool = False) -> Any:
    datapath = app.switches[dpid].datapath
    msg = datapath.ofproto_parser.OFPPortStatsReply(datapath)
    msg.flags = datapath.ofproto.OFPMPF_REPLY_MORE if more else 0
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


# -- link load into the model: one event per poll round ---------------------------------------------

TWO_SWITCHES = """
switches: [{id: a, dpid: 1, site: s}, {id: b, dpid: 2, site: s}]
links: [{a: a, b: b, latency_ms: 1, bandwidth_mbps: 100}]
"""


def poll_round(app: Any, tx_bytes: int, *, answering: tuple[int, ...] = (1, 2)) -> None:
    """One poll round in which every answering switch's port 1 (the cable's) reports ``tx_bytes``."""
    app.request_port_stats()
    time.sleep(0.01)  # the rate is over the replies' arrival times
    for dpid in answering:
        app._port_stats_reply(stats_reply(app, dpid, (1, tx_bytes, 0)))


def test_a_poll_round_publishes_one_event_for_every_link_once_the_last_switch_answered(openflow) -> None:
    state = live(fabric(TWO_SWITCHES))
    app = app_with(openflow, 1, 2, state=state)
    a_to_b = link_between(state, 1, 2)
    poll_round(app, 1_000)
    assert app.published == []  # one reading per port: no rate yet
    app.request_port_stats()
    time.sleep(0.01)
    app._port_stats_reply(stats_reply(app, 1, (1, 500_000, 0)))
    assert app.published == []  # b has not answered yet
    app._port_stats_reply(stats_reply(app, 2, (1, 1_000, 0)))
    (event,) = app.published
    assert isinstance(event, ev.LinkLoadMeasured)
    loads = dict(event.loads_bps)
    assert set(loads) == {a_to_b, a_to_b.reversed()}
    assert loads[a_to_b] is not None and loads[a_to_b] > 0 and loads[a_to_b.reversed()] == 0.0
    assert app.model.topology.links[a_to_b].measured_load_bps == loads[a_to_b]


def test_a_round_with_no_change_that_matters_publishes_nothing(openflow) -> None:
    app = app_with(openflow, 1, 2, state=live(fabric(TWO_SWITCHES)))
    for _ in range(4):
        poll_round(app, 1_000)  # idle: every rate 0
    (event,) = app.published
    assert {load for _, load in event.loads_bps} == {0.0}


def test_a_switch_that_does_not_answer_does_not_hold_the_round_past_the_next_one(openflow) -> None:
    state = live(fabric(TWO_SWITCHES))
    app = app_with(openflow, 1, 2, state=state)
    a_to_b = link_between(state, 1, 2)
    poll_round(app, 1_000)
    poll_round(app, 500_000, answering=(1,))
    assert app.published == []
    app.request_port_stats()  # the next round starts: the last one ends with what came
    (event,) = app.published
    assert [link for link, _ in event.loads_bps] == [a_to_b]


def test_a_reply_in_parts_ends_the_round_with_its_last_part(openflow) -> None:
    app = app_with(openflow, 1, state=live(fabric(TWO_SWITCHES)))
    for tx_bytes in (1_000, 400_000):
        app.request_port_stats()
        time.sleep(0.01)
        app._port_stats_reply(stats_reply(app, 1, (2, 0, 0), more=True))
        if tx_bytes == 400_000:
            assert app.published == []  # more to come
        app._port_stats_reply(stats_reply(app, 1, (1, tx_bytes, 0)))
    (event,) = app.published
    assert len(event.loads_bps) == 1
