"""The OpenFlow app in replicated mode, driven with a fake datapath and os-ken's real message classes:
the role request goes first to a switch that connects, nothing state-changing goes where this
controller is not a confirmed MASTER, a follower publishes no observation, a stale MASTER request fences,
a promotion takes over the model's observations. Embedded mode asks for no role at all."""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from sdnctl_helpers import fabric, live

from netmodel import events as ev
from netmodel.ids import PortNo, SwitchId
from netmodel.state import FabricState
from netmodel.types import Port
from sdnctl.discovery import Discovery
from sdnctl.flows import FlowSpec, SwitchDelta
from sdnctl.message_counts import MessageCounts
from sdnctl.port_stats import PortRates
from sdnctl.roles import Mastership, SwitchRoles

FABRIC = """
switches: [{id: a, dpid: 1, site: s}, {id: b, dpid: 2, site: s}]
links: [{a: a, b: b, latency_ms: 1, bandwidth_mbps: 100}]
"""
FLOW = SwitchDelta(add_flows=(FlowSpec(1, 10, (("eth_type", 0x800),), (("output", 1),), 0xEC00_0000_0000_0001),))


@pytest.fixture(scope="module")
def openflow() -> Any:
    os.environ.setdefault("OSKEN_HUB_TYPE", "native")
    from os_ken.base import app_manager  # noqa: F401, I001 - must come first (os-ken circular import)
    from sdnctl import openflow

    return openflow


def parse_messages(datapath: Any, buf: bytes) -> list[Any]:
    import struct

    from os_ken.ofproto import ofproto_v1_3_parser

    out = []
    while buf:
        version, msg_type, length, xid = struct.unpack_from("!BBHI", buf)
        if msg_type in ofproto_v1_3_parser._MSG_PARSERS:
            out.append(ofproto_v1_3_parser.msg_parser(datapath, version, msg_type, length, xid, buf[:length]))
        else:  # os-ken parses no MeterMod nor GroupMod: their names and bytes
            ofp = datapath.ofproto
            name = {ofp.OFPT_METER_MOD: "OFPMeterMod", ofp.OFPT_GROUP_MOD: "OFPGroupMod"}.get(msg_type, str(msg_type))
            out.append(type(name, (), {"buf": bytes(buf[:length]), "xid": xid})())
        buf = buf[length:]
    return out


class FakeDatapath:
    def __init__(self, dpid: int) -> None:
        from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

        self.id = dpid
        self.ofproto = ofproto_v1_3
        self.ofproto_parser = ofproto_v1_3_parser
        self.address = ("127.0.0.1", 40000 + dpid)
        self.ports = {1: SimpleNamespace(port_no=1, name=b"p1", hw_addr="02:00:00:00:00:01", state=0, config=0)}
        self.sent: list[Any] = []
        self._xid = 0

    def set_xid(self, msg: Any) -> int:
        self._xid += 1
        msg.xid = self._xid
        return self._xid

    def send_msg(self, msg: Any) -> bool:
        self.sent.append(msg)
        return True

    def send(self, buf: bytes) -> bool:
        """Serialized messages (one or more back to back), kept as os-ken parses them."""
        self.sent += parse_messages(self, buf)
        return True

    def names(self) -> list[str]:
        return [type(m).__name__ for m in self.sent]


def make_app(openflow: Any, state: FabricState | None = None, mastership: Mastership | None = None) -> Any:
    """A FabricApp without os-ken's machinery; what it publishes is kept in ``app.published`` and applied
    to ``app.model``."""
    app = openflow.FabricApp.__new__(openflow.FabricApp)
    app.model = state if state is not None else FabricState()
    app.published = []

    def publish(event: ev.Event) -> None:
        app.published.append(event)
        app.model = app.model.apply(event)

    app._publish_to_model = publish
    app._state = lambda: app.model
    app._stats_awaited = None
    app._lock = threading.Lock()
    app._core_lock = threading.Lock()
    app._pending = {}
    app._table_reads = {}
    app._acl_reads = {}
    app._acl_totals = {}
    app._acl_totals_read = {}
    app._meters_by_switch = {}
    app._meter_reads = {}
    app._discovery = Discovery(instance=7)
    app._handled_read_at = None
    app.messages = MessageCounts()
    app.port_rates = PortRates()
    app.on_switch_error = None
    app.switches = {}
    app._roles = SwitchRoles()
    app._roles_lock = threading.Lock()
    app.fenced = []
    app.role_events = []
    app.on_fenced = lambda dpid, generation: app.fenced.append((dpid, generation))
    app.on_switch_role = app.role_events.append
    if mastership is not None:
        app.set_mastership(mastership)
    return app


def connect(openflow: Any, app: Any, dpid: int) -> FakeDatapath:
    from os_ken.controller.handler import MAIN_DISPATCHER

    datapath = FakeDatapath(dpid)
    app._state_change(SimpleNamespace(datapath=datapath, state=MAIN_DISPATCHER))
    return datapath


def role_reply(app: Any, datapath: FakeDatapath, xid: int, role: int, generation: int) -> None:
    msg = datapath.ofproto_parser.OFPRoleReply(datapath)
    msg.xid, msg.role, msg.generation_id = xid, role, generation
    app._role_reply(SimpleNamespace(msg=msg))


def error(app: Any, datapath: FakeDatapath, xid: int, error_type: int, code: int) -> None:
    app._error(SimpleNamespace(msg=SimpleNamespace(type=error_type, code=code, xid=xid, datapath=datapath)))


def last_role_request(datapath: FakeDatapath) -> Any:
    return [m for m in datapath.sent if type(m).__name__ == "OFPRoleRequest"][-1]


def test_embedded_mode_sends_no_role_request_and_writes_as_before(openflow) -> None:
    app = make_app(openflow)
    datapath = connect(openflow, app, 1)
    assert "OFPRoleRequest" not in datapath.names()
    assert datapath.names() == ["OFPPacketOut"], "the probe of its port, as before roles existed"
    assert [type(e).__name__ for e in app.published] == ["SwitchConnected"]
    assert app.send_phase(1, FLOW, "make")
    assert app.roles_view() == {1: {"role": "equal", "generation_id": 0}}


def test_a_leader_sends_the_role_request_first_and_writes_only_once_master(openflow) -> None:
    ofp = FakeDatapath(0).ofproto
    app = make_app(openflow, mastership=Mastership(True, 5))
    datapath = connect(openflow, app, 1)
    assert datapath.names() == ["OFPRoleRequest"], "the probe waits for the MASTER answer"
    request = datapath.sent[0]
    assert (request.role, request.generation_id) == (ofp.OFPCR_ROLE_MASTER, 5)
    assert app.roles_view() == {1: {"role": "requested", "generation_id": 5}}
    assert not app.send_phase(1, FLOW, "make")
    app.packet_out(SwitchId(1), 1, b"x" * 60)
    assert datapath.names() == ["OFPRoleRequest"], "no FlowMod, no PacketOut before the switch confirmed"
    role_reply(app, datapath, request.xid, ofp.OFPCR_ROLE_MASTER, 5)
    assert app.roles_view() == {1: {"role": "master", "generation_id": 5}}
    assert app.role_events == [1], "the route engine is told: read it back, then change what differs"
    assert "OFPPacketOut" in datapath.names(), "discovery probes it at once"
    assert app.send_phase(1, FLOW, "make") and datapath.names()[-1] == "OFPFlowMod"
    assert app.role_changes == {"master": 1}


def test_a_follower_publishes_no_observation_and_writes_nothing(openflow) -> None:
    ofp = FakeDatapath(0).ofproto
    app = make_app(openflow, state=live(fabric(FABRIC)), mastership=Mastership(False, 5))
    datapath = connect(openflow, app, 1)
    role_reply(app, datapath, datapath.sent[0].xid, ofp.OFPCR_ROLE_SLAVE, 5)
    app._port_status(
        SimpleNamespace(
            msg=SimpleNamespace(
                datapath=datapath,
                reason=ofp.OFPPR_MODIFY,
                desc=SimpleNamespace(port_no=1, name=b"p1", hw_addr="02:00:00:00:00:01", state=1, config=0),
            )
        )
    )
    app._housekeeping(1e9)
    assert app.published == []
    assert not app.send_phase(1, FLOW, "make")
    assert datapath.names() == ["OFPRoleRequest"]
    assert app.roles_view() == {1: {"role": "slave", "generation_id": 5}}


def test_demotion_stops_writes_at_once(openflow) -> None:
    ofp = FakeDatapath(0).ofproto
    app = make_app(openflow, mastership=Mastership(True, 5))
    datapath = connect(openflow, app, 1)
    role_reply(app, datapath, datapath.sent[0].xid, ofp.OFPCR_ROLE_MASTER, 5)
    app.role_events.clear()
    app.set_mastership(Mastership(False, 6))
    assert app.role_events == [1]
    assert not app.send_phase(1, FLOW, "make")
    request = last_role_request(datapath)
    assert (request.role, request.generation_id) == (ofp.OFPCR_ROLE_SLAVE, 6)


def test_a_stale_master_request_fences_and_ends_slave_at_the_switchs_generation(openflow) -> None:
    ofp = FakeDatapath(0).ofproto
    app = make_app(openflow, mastership=Mastership(True, 2))
    datapath = connect(openflow, app, 1)
    error(app, datapath, datapath.sent[0].xid, ofp.OFPET_ROLE_REQUEST_FAILED, ofp.OFPRRFC_STALE)
    assert app.fenced == [(1, 2)]
    query = last_role_request(datapath)
    assert query.role == ofp.OFPCR_ROLE_NOCHANGE
    role_reply(app, datapath, query.xid, ofp.OFPCR_ROLE_EQUAL, 3)
    slave = last_role_request(datapath)
    assert (slave.role, slave.generation_id) == (ofp.OFPCR_ROLE_SLAVE, 3)
    role_reply(app, datapath, slave.xid, ofp.OFPCR_ROLE_SLAVE, 3)
    assert app.roles_view() == {1: {"role": "slave", "generation_id": 3}}
    assert not app.send_phase(1, FLOW, "make")
    assert "OFPFlowMod" not in datapath.names() and "OFPPacketOut" not in datapath.names()


def test_a_switch_that_answers_is_slave_to_a_write_demotes_us(openflow) -> None:
    ofp = FakeDatapath(0).ofproto
    app = make_app(openflow, mastership=Mastership(True, 2))
    datapath = connect(openflow, app, 1)
    role_reply(app, datapath, datapath.sent[0].xid, ofp.OFPCR_ROLE_MASTER, 2)
    assert app.send_phase(1, FLOW, "make")
    error(app, datapath, datapath.sent[-1].xid, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_IS_SLAVE)
    assert app.roles_view()[1]["role"] == "slave"
    assert not app.send_phase(1, FLOW, "make")


def test_open_vswitchs_role_status_demotes_us(openflow) -> None:
    ofp = FakeDatapath(0).ofproto
    app = make_app(openflow, mastership=Mastership(True, 2))
    datapath = connect(openflow, app, 1)
    role_reply(app, datapath, datapath.sent[0].xid, ofp.OFPCR_ROLE_MASTER, 2)
    data = ofp.OFPCR_ROLE_SLAVE.to_bytes(4, "big") + bytes(4) + (9).to_bytes(8, "big")
    msg = SimpleNamespace(datapath=datapath, experimenter=0x4F4E4600, exp_type=1911, data=data)
    app._experimenter(SimpleNamespace(msg=msg))
    assert app.roles_view() == {1: {"role": "slave", "generation_id": 9}}
    assert not app.may_write(SwitchId(1))


def test_a_promotion_takes_over_the_models_observations(openflow) -> None:
    """The model (the last leader's) holds switch 2 connected, which is not connected to us, and not
    switch 1, which is: both are corrected; the link between them counts as seen now."""
    state = live(fabric(FABRIC)).apply(ev.SwitchDisconnected(SwitchId(1), 1.0))
    app = make_app(openflow, state=state, mastership=Mastership(False, 1))
    connect(openflow, app, 1)
    assert app.published == []
    app.set_mastership(Mastership(True, 2))
    kinds = [(type(e).__name__, e.switch) for e in app.published]
    assert kinds == [("SwitchConnected", 1), ("SwitchDisconnected", 2)]
    assert app.model.topology.switches[SwitchId(1)].ports[PortNo(1)] == Port(PortNo(1), "p1", "02:00:00:00:00:01", True)


def test_a_promotion_seeds_discovery_so_links_are_neither_reported_again_nor_expired_early(openflow) -> None:
    port = Port(PortNo(1), "p1", "02:00:00:00:00:01", True)
    state = live(fabric(FABRIC))
    for dpid in (1, 2):
        state = state.apply(ev.SwitchConnected(SwitchId(dpid), (port,), 1.0))
    app = make_app(openflow, state=state, mastership=Mastership(False, 1))
    connect(openflow, app, 1)
    connect(openflow, app, 2)
    app.set_mastership(Mastership(True, 2))
    assert app.published == [], "the model already holds both switches as they are"
    seen = app._discovery._last_seen
    assert set(seen) == set(state.topology.links)
    now = next(iter(seen.values()))
    assert app._discovery.expire_silent_links(state, {1, 2}, now + 1.0) == ()
    assert len(app._discovery.expire_silent_links(state, {1, 2}, now + 10.0)) == 2, "silent links still go down"


def promoted_pair(openflow: Any) -> tuple[Any, dict[int, Any]]:
    """Two connected switches with a port each, and an app just promoted to MASTER of both (its role
    requests not answered yet)."""
    port = Port(PortNo(1), "p1", "02:00:00:00:00:01", True)
    state = live(fabric(FABRIC))
    for dpid in (1, 2):
        state = state.apply(ev.SwitchConnected(SwitchId(dpid), (port,), 1.0))
    app = make_app(openflow, state=state, mastership=Mastership(False, 1))
    datapaths = {dpid: connect(openflow, app, dpid) for dpid in (1, 2)}
    app.set_mastership(Mastership(True, 2))
    return app, datapaths


def test_links_are_not_silent_while_their_switches_wait_to_confirm_master(openflow) -> None:
    """A switch slow to answer the promotion's MASTER request cannot be probed meanwhile: its links are
    not taken down for that, and count as crossed when it answers."""
    ofp = FakeDatapath(0).ofproto
    app, datapaths = promoted_pair(openflow)
    seeded = max(app._discovery._last_seen.values())
    app._housekeeping(seeded + 60.0)  # long after: neither switch answered MASTER yet
    assert app.published == [], "no link taken down while its switches could not be probed"
    for datapath in datapaths.values():
        role_reply(app, datapath, last_role_request(datapath).xid, ofp.OFPCR_ROLE_MASTER, 2)
    answered = min(app._discovery._last_seen.values())
    assert answered > seeded, "the links count as crossed when their switches answered"
    app._housekeeping(answered + 1.0)
    assert app.published == []
    app._housekeeping(answered + 10.0)
    assert [type(e).__name__ for e in app.published] == ["LinkWentDown", "LinkWentDown"], "silent: down"


def test_silence_is_judged_as_of_the_last_packet_in_handled_while_others_wait_in_the_queue(openflow) -> None:
    """Probes read off the switches wait in this app's queue while it is behind: a link is not silent for
    what the app has not handled yet."""
    import queue

    ofp = FakeDatapath(0).ofproto
    app, datapaths = promoted_pair(openflow)
    for datapath in datapaths.values():  # MASTER: the links count as crossed, and are probed
        role_reply(app, datapath, last_role_request(datapath).xid, ofp.OFPCR_ROLE_MASTER, 2)
    crossed = max(app._discovery._last_seen.values())
    app.events = queue.Queue()
    app.events.put("a message read and not handled yet")
    app._handled_read_at = crossed + 1.0
    app._housekeeping(crossed + 60.0)
    assert app.published == [], "judged as of the last handled: 1 s of silence"
    app.events.get()
    app._housekeeping(crossed + 60.0)
    assert [type(e).__name__ for e in app.published] == ["LinkWentDown", "LinkWentDown"], "caught up: silent"
