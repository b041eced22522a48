"""The os-ken application: OpenFlow in, model events out, FlowMods from compiled specs.

This is the only sdnctl module that talks to switches (with ``engine.py`` driving it). Handlers
never block (os-ken's queue holds 128 events, then every switch stalls): they translate and hand
each event to ``publish``, which only enqueues. Blocking work (barriers, reading a switch's tables)
happens on the route engine's thread, which waits on ``threading.Event``s these handlers set.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_3

from netmodel import events as ev
from netmodel.ids import PortNo, SwitchId, format_dpid
from netmodel.state import FabricState
from netmodel.types import Port
from sdnctl import frames, hosts
from sdnctl.acl import KIND_DENY, KIND_GUARD, acl_cookie
from sdnctl.acl_counters import FlowKey
from sdnctl.discovery import LOOP_PORT, PROBE_INTERVAL_S, Discovery, EchoRequest, PacketOut
from sdnctl.flow_stats import flow_spec_of
from sdnctl.flows import (
    COOKIE_ARP,
    COOKIE_MASK,
    EDGECTL_COOKIE,
    EDGECTL_COOKIE_MASK,
    GroupSpec,
    MeterSpec,
    SwitchConfig,
    SwitchDelta,
)
from sdnctl.message_counts import MessageCounts
from sdnctl.port_stats import PortRates, load_report
from sdnctl.roles import EQUAL, MASTER, NOCHANGE, SLAVE, Mastership, RoleOutcome, RoleRequest, SwitchRoles
from sdnctl.table_writes import Encoded, XidSink, flow_mod_bytes, group_mod_bytes, meter_mod_bytes, with_xid

LOG = logging.getLogger("edgectl.sdnctl.openflow")
ofp = ofproto_v1_3
Publish = Callable[[ev.Event], Any]
PORT_STATS_INTERVAL_S = 5.0
ACL_READ_TIMEOUT_S = 2.0
# Equal totals could hide a drop flow re-added (its counter back to 0) that dropped as many packets since:
# every switch's drop flows are read in full at least this often, totals or not.
ACL_FULL_READ_S = 60.0
# The drop flows whose counters are read (cookie, mask): policy drops and source-guard drops, any caller.
ACL_KIND_MASK = 0xFFFF_FF00_0000_0000
ACL_COUNTED_COOKIES = tuple((acl_cookie(kind, None), ACL_KIND_MASK) for kind in (KIND_DENY, KIND_GUARD))


def error_type_name(error_type: int) -> str:
    """OpenFlow 1.3's name of an error type (``bad_request``), or ``unknown``: a bounded label."""
    for name, value in vars(ofp).items():
        if name.startswith("OFPET_") and value == error_type:
            return str(name).removeprefix("OFPET_").lower()
    return "unknown"


def port_from_ofp(desc: Any) -> Port:
    up = not (desc.state & ofp.OFPPS_LINK_DOWN) and not (desc.config & ofp.OFPPC_PORT_DOWN)
    name = desc.name.decode(errors="replace") if isinstance(desc.name, bytes) else str(desc.name)
    return Port(no=PortNo(desc.port_no), name=name, hw_addr=str(desc.hw_addr), up=up)


@dataclass(frozen=True, slots=True)
class MeterCounts:
    """One meter's counters as last read: what entered it, and what its DROP band dropped."""

    packets: int
    bytes: int
    dropped_packets: int
    dropped_bytes: int


# The messages that change a switch's state: sent only where this controller may write (sdnctl/roles.py).
WRITE_MESSAGES = frozenset({"OFPFlowMod", "OFPGroupMod", "OFPMeterMod", "OFPPacketOut"})
ROLE_CODES = {
    NOCHANGE: ofp.OFPCR_ROLE_NOCHANGE,
    EQUAL: ofp.OFPCR_ROLE_EQUAL,
    MASTER: ofp.OFPCR_ROLE_MASTER,
    SLAVE: ofp.OFPCR_ROLE_SLAVE,
}
ROLE_NAMES = {code: name for name, code in ROLE_CODES.items()}
# Open vSwitch tells an OpenFlow 1.3 controller that it became SLAVE with this ONF experimenter message.
ONF_EXPERIMENTER = 0x4F4E4600
ONFT_ROLE_STATUS = 1911


@dataclass
class _Switch:
    datapath: Any
    lock: threading.Lock = field(default_factory=threading.Lock)  # os-ken's xid counter is not thread-safe
    ports: dict[int, Port] = field(default_factory=dict)


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    replies: list[Any] = field(default_factory=list)
    error: str | None = None
    lost: bool = False  # done because the switch disconnected, not because it answered
    # False once its reader gave up waiting: a late answer completes it without being kept (a table
    # read's replies are a switch's every flow, held until that switch is read again).
    keep: bool = True


def _unread_bytes(datapath: Any) -> int:
    """What a switch sent that this controller has not read yet (``GuardedDatapath.unread_bytes``; 0 for
    a datapath that cannot say)."""
    unread = getattr(datapath, "unread_bytes", None)
    return int(unread()) if callable(unread) else 0


def _send_backlog(datapath: Any) -> int:
    """Messages queued for a switch and not yet written to its connection (os-ken's send queue)."""
    send_q = getattr(datapath, "send_q", None)
    return int(send_q.qsize()) if send_q is not None else 0


def read_at(msg: Any) -> float:
    """When ``msg`` was read off its connection (``sdnctl.runtime``'s parser stamps packet-ins and echo
    replies), else now: the time the latency measurements take for its arrival."""
    stamped = getattr(msg, "edgectl_read_at", None)
    return float(stamped) if stamped is not None else time.monotonic()


class FabricApp(app_manager.OSKenApp):
    """Constructed by os-ken's AppManager with ``edgectl_publish`` and ``edgectl_state``."""

    OFP_VERSIONS = [ofp.OFP_VERSION]
    # Class defaults: an app built without __init__ (the unit tests' fakes) runs in embedded mode.
    _roles: SwitchRoles | None = None
    on_fenced: Callable[[int, int], None] | None = None
    on_switch_role: Callable[[SwitchId], None] | None = None

    def __init__(
        self,
        *args: Any,
        edgectl_publish: Publish,
        edgectl_state: Callable[[], FabricState],
        edgectl_mastership: Mastership | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.name = "edgectl_fabric"
        self._publish_to_model = edgectl_publish
        self._state = edgectl_state
        self._lock = threading.Lock()
        self.switches: dict[SwitchId, _Switch] = {}
        self._pending: dict[tuple[int, int], _Pending] = {}
        self._table_reads: dict[SwitchId, tuple[_Pending, ...]] = {}  # reads of a switch's tables in flight
        self._acl_reads: dict[SwitchId, tuple[_Pending, ...]] = {}  # reads of a switch's drop counters in flight
        # Per switch, the drop flows' totals (packets, flows) per kind at its last reading (and when), and
        # those taken just before each flow read in flight: a switch whose totals did not move is not read
        # again (but at least every ACL_FULL_READ_S).
        self._acl_totals: dict[SwitchId, tuple[tuple[tuple[int, int], ...], float]] = {}
        self._acl_totals_read: dict[SwitchId, tuple[tuple[tuple[int, int], ...], Any]] = {}
        # The pure cores are called from os-ken's event thread and the prober thread: one lock
        # serialises them; what they return is sent and published outside it.
        self._core_lock = threading.Lock()
        self._discovery = Discovery(instance=int.from_bytes(os.urandom(4), "big"))
        # When the last packet-in this app's thread handled was read off its connection: the switches'
        # messages reach the thread through one FIFO queue, so every probe read before then was handled.
        self._handled_read_at: float | None = None
        self._hosts = hosts.HostLearning()
        self.latency = self._discovery.latency
        self.on_switch_error: Callable[[SwitchId, str], None] | None = None
        # Roles (replicated mode): what each switch granted us. One lock serialises the core and the
        # sending of its requests, so a request's xid is recorded before its answer can be handled.
        self._roles = SwitchRoles()
        self._roles.set_mastership(edgectl_mastership)  # before any switch connects: no write slips through
        self._roles_lock = threading.Lock()
        self.on_fenced = None
        """Called with (dpid, generation_id) when a switch refused our MASTER request as stale (a newer
        leader holds it), on os-ken's event thread: it must not block."""
        self.on_switch_role = None
        """Called with a dpid whenever whether this controller may write to it changed (the route engine),
        on os-ken's event thread or the caller of ``set_mastership``: it must not block."""
        # The ACL flows' packet counters of one switch, read with every port-stats poll (wall-clock time).
        self.on_acl_counters: Callable[[SwitchId, dict[FlowKey, int], float], None] | None = None
        self.messages = MessageCounts()
        self.port_rates = PortRates()
        self._meters_by_switch: dict[SwitchId, dict[tuple[SwitchId, int], MeterCounts]] = {}
        """Per switch, per (switch, meter id): its meters' counters as last polled (a switch's whole answer
        replaces its entry: one reply costs its own meters, not every switch's)."""
        self._meter_reads: dict[SwitchId, dict[tuple[SwitchId, int], MeterCounts]] = {}  # multipart so far
        self.port_stats_interval_s = PORT_STATS_INTERVAL_S  # 0: no polling (the poller reads it every round)
        self._stats_awaited: set[SwitchId] | None = None  # the switches this poll round waits on (None: no round)
        self._stopping = threading.Event()
        threading.Thread(target=self._prober, name="sdn-prober", daemon=True).start()
        threading.Thread(target=self._port_stats_poller, name="sdn-port-stats", daemon=True).start()

    def close(self) -> None:
        """os-ken's teardown (``AppManager.close``): the prober ends."""
        self._stopping.set()

    # -- roles (replicated mode) ---------------------------------------------------------------------
    def set_mastership(self, mastership: Mastership | None) -> None:
        """This replica's place in the election (thread-safe). Leader: MASTER with its generation id on
        every connected switch, writes once each confirms; follower: SLAVE, no writes and no observations
        published from now on. None (embedded mode): no role requests at all."""
        roles = self._roles
        if roles is None:
            return
        with self._roles_lock:
            was_leader = roles.mastership is not None and roles.mastership.leader
            before = set(roles.writable())
            requests = roles.set_mastership(mastership)
            for request in requests:
                self._send_role_request(request)
            lost = before - set(roles.writable())
        if mastership is not None:
            LOG.info(
                "%s at generation %d: %s requested of %d switches",
                "leader" if mastership.leader else "follower",
                mastership.generation_id,
                mastership.role.upper(),
                len(requests),
            )
        for dpid in sorted(lost):  # demoted: stop sending at once
            self._role_changed(SwitchId(dpid))
        if mastership is not None and mastership.leader and not was_leader:
            self._take_over_observations()

    def roles_view(self) -> dict[int, dict[str, object]]:
        """Per dpid: {"role": "master"|"slave"|"equal"|"requested", "generation_id": int}."""
        if self._roles is None:
            return {}
        with self._roles_lock:
            return self._roles.view()

    @property
    def role_changes(self) -> dict[str, int]:
        """Per role: how often a switch's role for this controller became it (for the metrics)."""
        if self._roles is None:
            return {}
        with self._roles_lock:
            return dict(self._roles.role_changes)

    def may_write(self, dpid: SwitchId) -> bool:
        """Whether state-changing messages may go to the switch (always, in embedded mode)."""
        roles = self._roles
        if roles is None:
            return True
        with self._roles_lock:
            return roles.may_write(dpid)

    def _observing(self) -> bool:
        """Whether this replica publishes what it observes: embedded mode, or the leader."""
        roles = self._roles
        if roles is None:
            return True
        mastership = roles.mastership  # one reference read: no lock needed
        return mastership is None or mastership.leader

    def _publish(self, event: ev.Event) -> Any:
        """An observation into the model; a follower publishes none (the leader's are in the log)."""
        if not self._observing():
            return None
        return self._publish_to_model(event)

    def _send_role_request(self, request: RoleRequest) -> None:
        """Send one request of the core (caller holds ``_roles_lock``) and record its xid."""
        roles = self._roles
        with self._lock:
            switch = self.switches.get(SwitchId(request.dpid))
        if switch is None or roles is None:
            return
        datapath = switch.datapath
        msg = datapath.ofproto_parser.OFPRoleRequest(datapath, ROLE_CODES[request.role], request.generation_id)
        with switch.lock:
            xid = int(datapath.set_xid(msg))
            roles.sent(request, xid)
            if not datapath.send_msg(msg):
                return
        self.messages.sent(type(msg).__name__)

    def _handle_role_outcome(self, dpid: SwitchId, outcome: RoleOutcome) -> None:
        """After the core took in a reply, refusal or demotion (caller does not hold ``_roles_lock``)."""
        if outcome.requests:
            with self._roles_lock:
                for request in outcome.requests:
                    self._send_role_request(request)
        if outcome.role_changed is not None:
            LOG.info("switch %s: this controller is %s", format_dpid(dpid), outcome.role_changed.upper())
        if outcome.fenced is not None:
            LOG.warning(
                "switch %s refused MASTER at generation %d as stale: a newer leader holds it",
                format_dpid(dpid),
                outcome.fenced,
            )
            if self.on_fenced is not None:
                self.on_fenced(int(dpid), outcome.fenced)
        if outcome.writable_changed:
            self._role_changed(dpid)
            if self.may_write(dpid):
                state = self._state()
                with self._core_lock:  # its links were not probed while it was not ours: not silence
                    self._discovery.refresh_switch(state, dpid, time.monotonic())
                self._probe_switch(dpid)  # discovery refreshes the links it took over at once

    def _role_changed(self, dpid: SwitchId) -> None:
        if self.on_switch_role is not None:
            self.on_switch_role(dpid)

    @set_ev_cls(ofp_event.EventOFPRoleReply, MAIN_DISPATCHER)
    def _role_reply(self, event: Any) -> None:
        msg = event.msg
        self.messages.received(type(msg).__name__)
        dpid = SwitchId(msg.datapath.id)
        roles = self._roles
        if roles is None:
            return
        with self._roles_lock:
            outcome = roles.on_reply(dpid, msg.xid, ROLE_NAMES.get(msg.role, EQUAL), int(msg.generation_id))
        self._handle_role_outcome(dpid, outcome)

    @set_ev_cls(ofp_event.EventOFPExperimenter, MAIN_DISPATCHER)
    def _experimenter(self, event: Any) -> None:
        """Open vSwitch's role status (ONF extension for OpenFlow 1.3): another controller became MASTER
        and this one is SLAVE now. Layout: role (4 bytes), reason (1), pad (3), generation id (8)."""
        msg = event.msg
        self.messages.received(type(msg).__name__)
        roles = self._roles
        data = bytes(msg.data or b"")
        if roles is None or msg.experimenter != ONF_EXPERIMENTER or msg.exp_type != ONFT_ROLE_STATUS or len(data) < 16:
            return
        if int.from_bytes(data[0:4], "big") != ofp.OFPCR_ROLE_SLAVE:
            return
        dpid = SwitchId(msg.datapath.id)
        with self._roles_lock:
            outcome = roles.on_demoted(dpid, int.from_bytes(data[8:16], "big"))
        self._handle_role_outcome(dpid, outcome)

    def _take_over_observations(self) -> None:
        """Just promoted: the model holds what the last leader observed. Its links count as seen now (they
        expire only if no new probe crosses them); switches connected to us that the model holds as gone,
        or with other ports, are reported; switches the model holds as connected but not connected to us
        are reported gone."""
        state = self._state()
        with self._lock:
            held = {dpid: dict(switch.ports) for dpid, switch in self.switches.items()}
        with self._core_lock:
            self._discovery.seed_from_model(state, held, time.monotonic())
        now = time.time()
        for dpid, ports in sorted(held.items()):
            known = state.topology.switches.get(dpid)
            if known is None or not known.connected or dict(known.ports) != ports:
                self._publish(ev.SwitchConnected(dpid, tuple(ports[n] for n in sorted(ports)), now))
        for dpid, switch in sorted(state.topology.switches.items()):
            if switch.connected and dpid not in held:
                self._publish(ev.SwitchDisconnected(dpid, now))

    # -- switches come and go --------------------------------------------------------------------
    @property
    def datapaths(self) -> dict[SwitchId, Any]:
        with self._lock:
            return {dpid: sw.datapath for dpid, sw in self.switches.items()}

    def datapath_of(self, dpid: SwitchId) -> Any | None:
        """One switch's connection (None: not connected), without building ``datapaths`` for all of them:
        every probe asks, ~1,900 times a second at 500 switches."""
        with self._lock:
            switch = self.switches.get(dpid)
        return None if switch is None else switch.datapath

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, event: Any) -> None:
        datapath = event.datapath
        if datapath.id is None:
            return  # died before the handshake finished: the model never knew it
        dpid = SwitchId(datapath.id)
        if event.state == MAIN_DISPATCHER:
            ports = {no: port_from_ofp(d) for no, d in datapath.ports.items() if no <= ofp.OFPP_MAX}
            with self._lock:
                self.switches[dpid] = _Switch(datapath, ports=ports)
            if self._roles is not None:
                with self._roles_lock:  # the role request goes first, before any state-changing message
                    request = self._roles.connected(dpid)
                    if request is not None:
                        self._send_role_request(request)
            LOG.info("switch %s connected from %s with %d ports", format_dpid(dpid), datapath.address, len(ports))
            self._publish(ev.SwitchConnected(dpid, tuple(ports[n] for n in sorted(ports)), time.time()))
            self._probe_switch(dpid)
        elif event.state == DEAD_DISPATCHER:
            with self._lock:
                # A switch that reconnected quickly has a new datapath: the old one's death is old news.
                known = self.switches.get(dpid)
                if known is None or known.datapath is not datapath:
                    return
                del self.switches[dpid]
                for pending_key in [k for k in self._pending if k[0] == dpid]:
                    pending = self._pending.pop(pending_key)
                    pending.lost = True
                    pending.done.set()
                self._table_reads.pop(dpid, None)
                self._acl_reads.pop(dpid, None)
                self._acl_totals_read.pop(dpid, None)
                self._acl_totals.pop(dpid, None)  # a switch back is read in full: its counters start over
                self.port_rates.forget_switch(dpid)
                self._meters_by_switch.pop(dpid, None)
                self._meter_reads.pop(dpid, None)
                if self._stats_awaited is not None:
                    self._stats_awaited.discard(dpid)  # not waited for: its links' load is cleared
            with self._core_lock:
                self._discovery.forget_switch(dpid)
            if self._roles is not None:
                with self._roles_lock:
                    self._roles.disconnected(dpid)
            LOG.info("switch %s disconnected", format_dpid(dpid))
            self._publish(ev.SwitchDisconnected(dpid, time.time()))

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, event: Any) -> None:
        msg = event.msg
        self.messages.received(type(msg).__name__)
        dpid = SwitchId(msg.datapath.id)
        if msg.desc.port_no > ofp.OFPP_MAX:
            return
        port = port_from_ofp(msg.desc)
        with self._lock:
            switch = self.switches.get(dpid)
            if switch is not None:
                if msg.reason == ofp.OFPPR_DELETE:
                    switch.ports.pop(port.no, None)
                else:
                    switch.ports[port.no] = port
        if msg.reason == ofp.OFPPR_DELETE:
            self._publish(ev.PortDeleted(dpid, port.no))
        else:
            # A port going down takes its links down in the model at once, not after an LLDP timeout.
            self._publish(ev.PortStatusChanged(dpid, port))
            if port.up:
                self._send_probe(dpid, port.no)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _error(self, event: Any) -> None:
        msg = event.msg
        self.messages.received(type(msg).__name__)
        self.messages.error(error_type_name(msg.type), int(msg.code))
        dpid = SwitchId(msg.datapath.id) if msg.datapath.id is not None else None
        text = f"type={msg.type} code={msg.code} xid={msg.xid}"
        LOG.warning("switch %s reported an error: %s", format_dpid(dpid) if dpid else "?", text)
        with self._lock:
            pending = self._pending.get((dpid or 0, msg.xid))
        if pending is not None:
            pending.error = text
            pending.done.set()  # an error is the answer: nothing else comes for this request
        roles = self._roles
        if dpid is not None and roles is not None:
            if msg.type == ofp.OFPET_ROLE_REQUEST_FAILED:
                with self._roles_lock:
                    outcome = roles.on_refused(dpid, msg.xid, stale=msg.code == ofp.OFPRRFC_STALE)
                self._handle_role_outcome(dpid, outcome)
                return  # a role refusal says nothing of the switch's tables
            if msg.type == ofp.OFPET_BAD_REQUEST and msg.code == ofp.OFPBRC_IS_SLAVE:
                with self._roles_lock:
                    outcome = roles.on_demoted(dpid)
                self._handle_role_outcome(dpid, outcome)
        if dpid is not None and self.on_switch_error is not None:
            self.on_switch_error(dpid, text)

    # -- sending -----------------------------------------------------------------------------------
    def _send(self, dpid: SwitchId, msg: Any) -> int | None:
        with self._lock:
            switch = self.switches.get(dpid)
        if switch is None:
            return None
        if self._roles is not None and type(msg).__name__ in WRITE_MESSAGES and not self.may_write(dpid):
            return None  # not this controller's switch to change (replicated mode: not its MASTER)
        with switch.lock:
            xid = switch.datapath.set_xid(msg)
            if not switch.datapath.send_msg(msg):
                return None
        self.messages.sent(type(msg).__name__)
        return int(xid)

    def _start(self, dpid: SwitchId, msg: Any) -> _Pending | None:
        """Send a request whose reply (possibly multipart, or a barrier reply) completes a _Pending."""
        with self._lock:
            switch = self.switches.get(dpid)
        if switch is None:
            return None
        pending = _Pending()
        with switch.lock:
            xid = switch.datapath.set_xid(msg)
            with self._lock:
                self._pending[(dpid, xid)] = pending
            if not switch.datapath.send_msg(msg):
                return None
        self.messages.sent(type(msg).__name__)
        return pending

    def _forget(self, pendings: Iterable[_Pending]) -> None:
        gone = set(map(id, pendings))
        with self._lock:
            for key in [k for k, p in self._pending.items() if id(p) in gone]:
                del self._pending[key]

    def _complete(self, dpid: int, msg: Any, more: bool = False) -> None:
        self.messages.received(type(msg).__name__)
        with self._lock:
            pending = self._pending.get((dpid, msg.xid))
        if pending is not None:
            if pending.keep:
                pending.replies.append(msg)
            if not more:
                pending.done.set()

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier_reply(self, event: Any) -> None:
        self._complete(event.msg.datapath.id, event.msg)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def _flow_stats_reply(self, event: Any) -> None:
        msg = event.msg
        self._complete(msg.datapath.id, msg, bool(msg.flags & ofp.OFPMPF_REPLY_MORE))

    @set_ev_cls(ofp_event.EventOFPAggregateStatsReply, MAIN_DISPATCHER)
    def _aggregate_reply(self, event: Any) -> None:
        msg = event.msg
        self._complete(msg.datapath.id, msg, bool(msg.flags & ofp.OFPMPF_REPLY_MORE))

    @set_ev_cls(ofp_event.EventOFPGroupDescStatsReply, MAIN_DISPATCHER)
    def _group_desc_reply(self, event: Any) -> None:
        msg = event.msg
        self._complete(msg.datapath.id, msg, bool(msg.flags & ofp.OFPMPF_REPLY_MORE))

    @set_ev_cls(ofp_event.EventOFPMeterConfigStatsReply, MAIN_DISPATCHER)
    def _meter_config_reply(self, event: Any) -> None:
        msg = event.msg
        self._complete(msg.datapath.id, msg, bool(msg.flags & ofp.OFPMPF_REPLY_MORE))

    def barriers(self, dpids: Iterable[SwitchId], timeout_s: float = 5.0) -> set[SwitchId]:
        """Barrier every switch at once (not one round trip after another); the ones that confirmed."""
        waiting: dict[SwitchId, _Pending] = {}
        for dpid, datapath in self.datapaths.items():
            if dpid in dpids:
                pending = self._start(dpid, datapath.ofproto_parser.OFPBarrierRequest(datapath))
                if pending is not None:
                    waiting[dpid] = pending
        deadline = time.monotonic() + timeout_s
        confirmed = {
            dpid
            for dpid, pending in waiting.items()
            if pending.done.wait(max(0.0, deadline - time.monotonic())) and pending.error is None
        }
        self._forget(waiting.values())
        return {dpid for dpid in confirmed if dpid in self.switches}

    # -- programming ------------------------------------------------------------------------------
    def send_phase(self, dpid: SwitchId, delta: SwitchDelta, phase: str) -> bool:
        """Send one phase of ``delta`` ('make': meters, groups, flows added/modified; 'break': flows, groups,
        meters deleted)."""
        if phase == "make":
            encoded = [
                *(meter_mod_bytes(ofp.OFPMC_ADD, m) for m in delta.add_meters),
                *(meter_mod_bytes(ofp.OFPMC_MODIFY, m) for m in delta.modify_meters),
                *(group_mod_bytes(ofp.OFPGC_ADD, g) for g in delta.add_groups),
                *(group_mod_bytes(ofp.OFPGC_MODIFY, g) for g in delta.modify_groups),
                *(flow_mod_bytes(ofp.OFPFC_ADD, f) for f in delta.add_flows),
                *(flow_mod_bytes(ofp.OFPFC_MODIFY_STRICT, f) for f in delta.modify_flows),
            ]
        else:
            encoded = [
                *(flow_mod_bytes(ofp.OFPFC_DELETE_STRICT, f) for f in delta.delete_flows),
                *(group_mod_bytes(ofp.OFPGC_DELETE, g) for g in delta.delete_groups),
                *(meter_mod_bytes(ofp.OFPMC_DELETE, m) for m in delta.delete_meters),
            ]
        return self._send_encoded(dpid, encoded)

    def _send_encoded(self, dpid: SwitchId, encoded: list[Encoded]) -> bool:
        """Send table writes already serialized, each with its own transaction id, in one write to the
        switch: one queue entry and one send for a whole phase (a first install is thousands of them)."""
        with self._lock:
            switch = self.switches.get(dpid)
        if switch is None:
            return False
        if not encoded:
            return True
        if self._roles is not None and not self.may_write(dpid):
            return False  # not this controller's switch to change (replicated mode: not its MASTER)
        sink = XidSink()
        with switch.lock:
            chunks = []
            for message in encoded:
                switch.datapath.set_xid(sink)
                chunks.append(with_xid(message.data, sink.xid))
            if not switch.datapath.send(b"".join(chunks)):
                return False
        for name, count in Counter(message.name for message in encoded).items():
            self.messages.sent(name, count)
        return True

    def read_config(
        self, dpid: SwitchId, timeout_s: float = 5.0, *, late_answers_count: bool = False
    ) -> SwitchConfig | None:
        """What edgectl owns on the switch now: its flows (by cookie), its groups and meters; None if it did
        not answer within ``timeout_s`` (or is gone)."""
        return self.read_configs({dpid}, timeout_s, late_answers_count=late_answers_count).get(dpid)

    def read_configs(
        self, dpids: Iterable[SwitchId], timeout_s: float, *, late_answers_count: bool = False
    ) -> dict[SwitchId, SwitchConfig]:
        """Read several switches at once (every request sent before any reply is awaited), waiting
        ``timeout_s`` in all; a switch that has not answered by then is left out of the result.

        At most one read per switch is in flight: a switch whose earlier read is still unanswered is
        not asked again (and left out) until that read is answered or the switch disconnects; an
        answer that comes after its read was given up is dropped (the tables may have changed since),
        unless ``late_answers_count``: a switch nothing is written to until it is read (one just
        connected) holds what it answered, however late, and the next read takes that answer instead of
        asking again (asked anew each time, a switch further behind than ``timeout_s`` was never read).
        """
        started: dict[SwitchId, tuple[_Pending, ...]] = {}
        datapaths = self.datapaths
        for dpid in dpids:
            datapath = datapaths.get(dpid)
            with self._lock:
                earlier = self._table_reads.get(dpid)
                if earlier is not None and not all(p.done.is_set() for p in earlier):
                    continue  # still in flight
                self._table_reads.pop(dpid, None)
            if earlier is not None:
                if late_answers_count and all(p.keep for p in earlier):
                    started[dpid] = earlier  # answered after the last wait ended: that is its answer
                    continue
                self._forget(earlier)
            if datapath is None:
                continue
            parser = datapath.ofproto_parser
            flows_req = parser.OFPFlowStatsRequest(
                datapath,
                0,
                ofp.OFPTT_ALL,
                ofp.OFPP_ANY,
                ofp.OFPG_ANY,
                EDGECTL_COOKIE,
                EDGECTL_COOKIE_MASK,
                parser.OFPMatch(),
            )
            flows = self._start(dpid, flows_req)
            groups = self._start(dpid, parser.OFPGroupDescStatsRequest(datapath, 0))
            meters = self._start(dpid, parser.OFPMeterConfigStatsRequest(datapath, 0, ofp.OFPM_ALL))
            if flows is None or groups is None or meters is None:
                self._forget([p for p in (flows, groups, meters) if p is not None])
                continue
            started[dpid] = (flows, groups, meters)
            with self._lock:
                self._table_reads[dpid] = (flows, groups, meters)
        deadline = time.monotonic() + timeout_s
        out: dict[SwitchId, SwitchConfig] = {}
        for dpid, reads in started.items():
            if not all(p.done.wait(max(0.0, deadline - time.monotonic())) for p in reads):
                # It stays in _table_reads: not asked again until it answers.
                if not late_answers_count:
                    for pending in reads:
                        pending.keep = False
                        pending.replies.clear()
                continue
            with self._lock:
                self._table_reads.pop(dpid, None)
            self._forget(reads)
            if any(p.lost for p in reads) or dpid not in self.switches:
                continue  # disconnected while we waited
            flows, groups, meters = reads
            if flows.error is not None or groups.error is not None:
                LOG.warning("switch %s refused a table read: %s", format_dpid(dpid), flows.error or groups.error)
                continue  # asked again next round
            if meters.error is not None:  # a switch without meters: it holds none (and reservations fail there)
                LOG.warning("switch %s has no meter table: %s", format_dpid(dpid), meters.error)
            flow_specs = frozenset(flow_spec_of(stat) for reply in flows.replies for stat in reply.body)
            group_specs = frozenset(_group_spec(stat) for reply in groups.replies for stat in reply.body)
            meter_specs = frozenset(_meter_spec(stat) for reply in meters.replies for stat in reply.body)
            out[dpid] = SwitchConfig(flow_specs, group_specs, meter_specs)
        return out

    def packet_out(self, dpid: SwitchId, port: int, data: bytes) -> None:
        datapath = self.datapath_of(dpid)
        if datapath is None:
            return
        parser = datapath.ofproto_parser
        msg = parser.OFPPacketOut(
            datapath,
            buffer_id=ofp.OFP_NO_BUFFER,
            in_port=ofp.OFPP_CONTROLLER,
            actions=[parser.OFPActionOutput(port)],
            data=data,
        )
        self._send(dpid, msg)

    def _send_packet(self, packet: PacketOut) -> None:
        """Send what a pure core asked for; port None is the switch's own table (a loop probe)."""
        self.packet_out(packet.dpid, ofp.OFPP_TABLE if packet.port is None else packet.port, packet.data)

    def _publish_all(self, events: Iterable[ev.Event]) -> None:
        for event in events:
            self._publish(event)

    # -- discovery and latency -----------------------------------------------------------------------
    def _prober(self) -> None:
        """Probe every port and switch once per interval, spread evenly over it.

        A burst of probes queues behind itself in the controller and in OVS, and the queueing lands
        in the measurements (it measured 4-5 ms of "control RTT" here); spaced probes each find an
        idle path, so transit minus control round trip is the link.
        """
        while not self._stopping.is_set():
            started = time.monotonic()
            with self._lock:
                plan = [
                    (dpid, port)
                    for dpid, switch in sorted(self.switches.items())
                    for port in [LOOP_PORT, *sorted(p.no for p in switch.ports.values() if p.up)]
                ]
            gap = PROBE_INTERVAL_S / max(1, len(plan) + len(plan) // 4)
            echoed = set()
            skipped: set[SwitchId] = set()
            for dpid, port in plan:
                if self._stopping.wait(gap):
                    return
                try:
                    if dpid not in echoed:
                        echoed.add(dpid)
                        # Looked at once a round, before our own echo joins the queue: with messages queued
                        # for the switch, its probes would wait behind them (and measure the wait).
                        if _send_backlog(self.datapath_of(dpid)) > 0:
                            skipped.add(dpid)
                        self._send_echo(dpid)
                    if dpid in skipped:
                        continue
                    if port == LOOP_PORT:
                        self._send_loop_probe(dpid)
                    else:
                        self._send_probe(dpid, port)
                except Exception:  # a probe bug must not end discovery
                    LOG.exception("probe of %s port %s failed", format_dpid(dpid), port)
            try:
                self._housekeeping(time.monotonic(), skipped)
            except Exception:
                LOG.exception("probe housekeeping failed")
            self._stopping.wait(max(0.0, PROBE_INTERVAL_S - (time.monotonic() - started)))

    def _housekeeping(self, now: float, unprobed: Collection[SwitchId] = ()) -> None:
        """Expire silent links and report latencies. ``unprobed``: switches the round just sent no probe
        through (a probe would have waited behind what they were being sent): their links' silence starts
        over."""
        state = self._state()
        with self._lock:
            connected = set(self.switches)
        if self._roles is not None:
            # Replicated mode: only where this controller is MASTER can it probe, so only there is a
            # link without probes silent.
            connected = {dpid for dpid in connected if self.may_write(dpid)}
        # Silence is judged as of what this app has handled: while messages read off the switches wait in its
        # queue (one FIFO for all of them), as of the last packet-in handled; and a switch whose bytes wait
        # unread in its socket counts as behind (its links get longer).
        events = getattr(self, "events", None)
        handled = self._handled_read_at
        judged_at = min(now, handled) if events is not None and events.qsize() > 0 and handled is not None else now
        datapaths = self.datapaths
        behind = {dpid for dpid in connected if _unread_bytes(datapaths.get(dpid)) > 0}
        with self._core_lock:
            result = self._discovery.housekeeping(state, connected, judged_at, time.time(), behind, unprobed)
        for link, silent_s in result.silent_s:
            LOG.warning("no probe crossed %s for %.1f s: down", link, silent_s)
        self._publish_all(result.events)
        # Learned hosts not seen for a while: forgotten.
        self._publish_all(hosts.expiry(self._state(), time.time()))

    def _probe_switch(self, dpid: SwitchId) -> None:
        with self._lock:
            switch = self.switches.get(dpid)
            ports = [p.no for p in switch.ports.values() if p.up] if switch else []
        for port in ports:
            self._send_probe(dpid, port)

    def _send_probe(self, dpid: SwitchId, port: int) -> None:
        with self._lock:
            switch = self.switches.get(dpid)
            hw = switch.ports[port].hw_addr if switch and port in switch.ports else ""
        with self._core_lock:
            packet = self._discovery.probe(dpid, port, hw, time.monotonic())
        self._send_packet(packet)

    def _send_loop_probe(self, dpid: SwitchId) -> None:
        if self.datapath_of(dpid) is None:
            return
        with self._core_lock:
            packet = self._discovery.loop_probe(dpid, time.monotonic())
        self._send_packet(packet)

    def _send_echo(self, dpid: SwitchId) -> None:
        datapath = self.datapath_of(dpid)
        if datapath is None:
            return
        with self._core_lock:
            request: EchoRequest | None = self._discovery.echo(dpid, time.monotonic())
        if request is not None:
            self._send(dpid, datapath.ofproto_parser.OFPEchoRequest(datapath, data=request.data))

    @set_ev_cls(ofp_event.EventOFPEchoReply, MAIN_DISPATCHER)
    def _echo_reply(self, event: Any) -> None:
        now = read_at(event.msg)
        self.messages.received(type(event.msg).__name__)
        with self._core_lock:
            self._discovery.on_echo_reply(event.msg.datapath.id, bytes(event.msg.data or b""), now)

    # -- port statistics: link load -----------------------------------------------------------------
    def _port_stats_poller(self) -> None:
        """Ask every switch for its port counters each ``port_stats_interval_s``; the replies feed
        ``port_rates`` (rates per port, link utilization) and, once per round, the model's link load; the
        meters' counters (``meter_counts``) and the ACL drop counters are read with them."""
        while not self._stopping.wait(self.port_stats_interval_s or 1.0):
            if self.port_stats_interval_s > 0:
                self.request_port_stats()
                self.request_meter_stats()
                try:
                    # Not bounded by the interval: a busy switch answering late still counts (the next
                    # round waits for it).
                    self.read_acl_counters(ACL_READ_TIMEOUT_S)
                except Exception:  # a bug here must not end polling
                    LOG.exception("ACL counters read failed")

    def read_acl_counters(self, timeout_s: float) -> None:
        """Ask every switch for the packet counters of its drop flows (policy drops and source-guard
        drops: one cookie-masked request per kind; the guards' pass flows are not read), all at once,
        and hand each complete answer to ``on_acl_counters``.

        First each switch's totals per kind (an aggregate-stats request: packets and flows): a switch
        whose totals are those of its last reading dropped nothing since and holds as many drop flows,
        so its flows are not read (at rest, a few bytes per switch instead of every drop flow; still
        read in full every ``ACL_FULL_READ_S``). The others' flows are read and handed in, with the
        totals they are then compared against.

        A switch that has not answered its flows within ``timeout_s`` is not asked again until it has:
        the next poll waits on the same requests and hands in their answer then (counters only grow, so
        a late answer is as good as a new one, and the next reading's increase counts what it missed).
        """
        if self.on_acl_counters is None:
            return
        deadline = time.monotonic() + timeout_s
        waiting: dict[SwitchId, tuple[_Pending, ...]] = {}
        totals_asked: dict[SwitchId, tuple[_Pending, ...]] = {}
        datapaths = self.datapaths
        for dpid, datapath in datapaths.items():
            with self._lock:
                earlier = self._acl_reads.get(dpid)
            if earlier is not None:
                waiting[dpid] = earlier  # still in flight (or answered since the last poll gave up)
                continue
            parser = datapath.ofproto_parser
            asked = self._start_all(
                dpid,
                [
                    parser.OFPAggregateStatsRequest(
                        datapath, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, mask, parser.OFPMatch()
                    )
                    for cookie, mask in ACL_COUNTED_COOKIES
                ],
            )
            if asked is not None:
                totals_asked[dpid] = asked
        for dpid, pendings in totals_asked.items():
            answered = all(p.done.wait(max(0.0, deadline - time.monotonic())) for p in pendings)
            self._forget(pendings)
            if not answered or any(p.lost or p.error is not None for p in pendings):
                continue  # asked again at the next poll: a few bytes
            totals = tuple((r.body.packet_count, r.body.flow_count) for p in pendings for r in p.replies)
            last = self._acl_totals.get(dpid)
            if last is not None and totals == last[0] and time.monotonic() - last[1] < ACL_FULL_READ_S:
                continue  # nothing dropped since the last reading, no drop flow added or removed
            datapath = datapaths[dpid]
            parser = datapath.ofproto_parser
            flows = self._start_all(
                dpid,
                [
                    parser.OFPFlowStatsRequest(
                        datapath, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, mask, parser.OFPMatch()
                    )
                    for cookie, mask in ACL_COUNTED_COOKIES
                ],
            )
            if flows is None:
                continue
            waiting[dpid] = flows
            with self._lock:
                self._acl_reads[dpid] = flows
                self._acl_totals_read[dpid] = (totals, datapath)
        for dpid, pendings in waiting.items():
            answered = all(p.done.wait(max(0.0, deadline - time.monotonic())) for p in pendings)
            failed = any(p.lost or p.error is not None for p in pendings)  # an error ends no wait: give up
            if not answered and not failed:
                continue  # stays in _acl_reads: waited on again by the next poll
            with self._lock:
                if self._acl_reads.get(dpid) is pendings:
                    del self._acl_reads[dpid]
                    totals, read_from = self._acl_totals_read.pop(dpid, ((), None))
                    switch = self.switches.get(dpid)
                    if not failed and switch is not None and switch.datapath is read_from:
                        # What this reading holds (at least: counters only grow). Only for the connection it
                        # came from: one that went (and maybe came back) since is read in full again.
                        self._acl_totals[dpid] = (totals, time.monotonic())
            self._forget(pendings)
            if failed:
                continue
            packets = {
                flow_spec_of(stat).key: int(stat.packet_count)
                for p in pendings
                for reply in p.replies
                for stat in reply.body
            }
            self.on_acl_counters(dpid, packets, time.time())

    def _start_all(self, dpid: SwitchId, requests: list[Any]) -> tuple[_Pending, ...] | None:
        """Send every request (each completing a _Pending); None, with none left waiting, if any could not be."""
        started = [self._start(dpid, request) for request in requests]
        pendings = tuple(p for p in started if p is not None)
        if len(pendings) != len(started):
            self._forget(pendings)
            return None
        return pendings

    def request_port_stats(self) -> None:
        """Ask every connected switch for all its ports' counters (the replies come as events). A round
        that some switch left unanswered ends here, with what did come."""
        self._end_stats_round()
        datapaths = self.datapaths
        with self._lock:
            self._stats_awaited = set(datapaths)
        for dpid, datapath in datapaths.items():
            try:
                self._send(dpid, datapath.ofproto_parser.OFPPortStatsRequest(datapath, 0, ofp.OFPP_ANY))
            except Exception:  # a bug here must not end polling
                LOG.exception("port stats request to %s failed", format_dpid(dpid))

    def request_meter_stats(self) -> None:
        """Ask every connected switch for all its meters' counters (the replies come as events and
        replace ``meter_counts`` of that switch)."""
        for dpid, datapath in self.datapaths.items():
            try:
                self._send(dpid, datapath.ofproto_parser.OFPMeterStatsRequest(datapath, 0, ofp.OFPM_ALL))
            except Exception:  # a bug here must not end polling
                LOG.exception("meter stats request to %s failed", format_dpid(dpid))

    @set_ev_cls(ofp_event.EventOFPMeterStatsReply, MAIN_DISPATCHER)
    def _meter_stats_reply(self, event: Any) -> None:
        msg = event.msg
        self.messages.received(type(msg).__name__)
        dpid = SwitchId(msg.datapath.id)
        with self._lock:
            if dpid not in self.switches:
                return  # a reply racing the disconnect
            read = self._meter_reads.setdefault(dpid, {})
            read.update({(dpid, int(stat.meter_id)): _meter_counts(stat) for stat in msg.body})
            if (msg.flags or 0) & ofp.OFPMPF_REPLY_MORE:
                return
            # The whole answer replaces the switch's meters: a deleted meter's counters go with it.
            del self._meter_reads[dpid]
            self._meters_by_switch[dpid] = read

    @property
    def meter_counts(self) -> dict[tuple[SwitchId, int], MeterCounts]:
        """Per (switch, meter id): the counters as last polled (a copy, for the metrics' scrape)."""
        with self._lock:
            parts = list(self._meters_by_switch.values())
        return {key: counts for part in parts for key, counts in part.items()}

    @set_ev_cls(ofp_event.EventOFPPortStatsReply, MAIN_DISPATCHER)
    def _port_stats_reply(self, event: Any) -> None:
        now = time.monotonic()
        msg = event.msg
        self.messages.received(type(msg).__name__)
        dpid = SwitchId(msg.datapath.id)
        with self._lock:
            if dpid not in self.switches:
                return  # a reply racing the disconnect
            for stat in msg.body:
                if stat.port_no <= ofp.OFPP_MAX:
                    self.port_rates.record(dpid, PortNo(stat.port_no), stat.tx_bytes, stat.rx_bytes, now)
            awaited = self._stats_awaited
            if awaited is not None and not (msg.flags or 0) & ofp.OFPMPF_REPLY_MORE:
                awaited.discard(dpid)
            round_done = awaited is not None and not awaited
        if round_done:
            self._end_stats_round()

    def _end_stats_round(self) -> None:
        """Publish the round's link loads to the model: one event, only with the changes that matter
        (``port_stats.load_report``); a round ends once (its last reply, or the next round's start)."""
        with self._lock:
            if self._stats_awaited is None:
                return
            self._stats_awaited = None
        try:
            report = load_report(self._state(), self.port_rates.readings(), time.time())
        except Exception:  # a bug here must not end polling
            LOG.exception("link load report failed")
            return
        if report is not None:
            self._publish(report)

    # -- packet-in: LLDP, ARP --------------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, event: Any) -> None:
        now = read_at(event.msg)
        self._handled_read_at = now
        msg = event.msg
        self.messages.received(type(msg).__name__)
        dpid = SwitchId(msg.datapath.id)
        in_port = PortNo(msg.match["in_port"])
        data = bytes(msg.data)
        if len(data) < 14:
            return
        ethertype = int.from_bytes(data[12:14], "big")
        if ethertype == frames.ETH_LLDP:
            state = self._state()
            with self._core_lock:
                events = self._discovery.on_probe(state, dpid, in_port, data, now, time.time())
            self._publish_all(events)
        elif ethertype == frames.ETH_ARP:
            arp = frames.parse_arp(data)
            if arp is not None:
                # A copy of an ARP the fabric already routes to its owner: learn from it, answer nothing.
                routed = msg.cookie & COOKIE_MASK == COOKIE_ARP
                state = self._state()
                with self._core_lock:
                    outcome = self._hosts.on_arp(state, dpid, in_port, arp, data, not routed, time.time())
                self._publish_all(outcome.events)
                for packet in outcome.packets:
                    self._send_packet(packet)


# -- FlowSpec/GroupSpec <-> os-ken messages ------------------------------------------------------


def _group_spec(stat: Any) -> GroupSpec:
    """A group as edgectl would have written it; any other shape reads as bucketless, so the diff
    modifies it (if wanted) or deletes it, and never tries to add an id that exists."""
    if stat.type != ofp.OFPGT_FF:
        return GroupSpec(stat.group_id, ())
    ports = []
    for bucket in stat.buckets:
        outputs = [a.port for a in bucket.actions if a.cls_action_type == ofp.OFPAT_OUTPUT]
        if len(outputs) != 1 or outputs[0] != bucket.watch_port:
            return GroupSpec(stat.group_id, ())
        ports.append(PortNo(outputs[0]))
    return GroupSpec(stat.group_id, tuple(ports))


def _meter_spec(stat: Any) -> MeterSpec:
    """A meter as edgectl would have written it; any other shape reads as rate 0, so the diff modifies
    it (if wanted) or deletes it, and never tries to add an id that exists."""
    bands = list(stat.bands)
    wanted = ofp.OFPMF_KBPS | ofp.OFPMF_BURST
    if stat.flags & wanted != wanted or len(bands) != 1 or bands[0].type != ofp.OFPMBT_DROP:
        return MeterSpec(stat.meter_id, 0, 0)
    return MeterSpec(stat.meter_id, int(bands[0].rate), int(bands[0].burst_size))


def _meter_counts(stat: Any) -> MeterCounts:
    bands = list(stat.band_stats)
    return MeterCounts(
        packets=int(stat.packet_in_count),
        bytes=int(stat.byte_in_count),
        dropped_packets=sum(int(b.packet_band_count) for b in bands),
        dropped_bytes=sum(int(b.byte_band_count) for b in bands),
    )
