"""Fake OpenFlow 1.3 switches that behave like Open vSwitch towards SEVERAL controllers.

Each switch of a fabric file holds one connection to every controller replica and answers them the way
OVS does where a replicated controller depends on it:

- roles (OVS's connmgr): one master election id per switch across its connections, compared as a signed
  64-bit number; a MASTER or SLAVE request with an older generation fails with
  OFPET_ROLE_REQUEST_FAILED/OFPRRFC_STALE and changes nothing; a new MASTER demotes the previous master
  connection to SLAVE and tells it so (the ONF role-status experimenter message OVS sends to OpenFlow 1.3
  controllers); a SLAVE's FlowMod, GroupMod, MeterMod and PacketOut get OFPBRC_IS_SLAVE;
- tables: the flows, groups and meters a master installed are kept, and flow-stats, group-desc and
  meter-config requests are answered with them (a new leader's read-back finds what the old one installed);
- discovery: an LLDP packet-out is delivered as a packet-in at the cabled peer port, to the peer's
  connections that are not SLAVE (OVS sends no packet-ins to a slave), so the controllers see the links;
  with ``--cable-delays`` after the cable's declared latency (as the testbed's delay relay holds frames),
  else at once (every link then measures ~0 us);
  an LLDP packet-out through the switch's own table (OFPP_TABLE) comes straight back as a packet-in, as
  the controller's LLDP flow sends it on OVS (the controller times its control path with these);
- a cable cut (``link DPID PORT down``): both ends send PORT_STATUS with the link down, as OVS does when a
  cable is pulled, and relay no LLDP across it until ``link DPID PORT up``;
- a log with each switch's own clock (time.time, comparable across processes on one machine): every
  ROLE_REPLY sent, every stale refusal, every read-back answered (the meter-config reply that ends it),
  every table change accepted and every BARRIER_REPLY.

Raw struct encoding, one asyncio process for all switches (``main``): the benchmark drives it over stdin
(one command a line, one JSON line answered on stdout): ``status``, ``events SINCE`` (log entries at or
after SINCE; older ones dropped), ``link DPID PORT up|down`` (DPID in hex; the cable on that port, both
ends), ``quit``.

Usage: python -m benchmarks.fake_switch FABRIC_FILE HOST:PORT[,HOST:PORT...] [--cable-delays]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

VERSION = 4
HELLO, ERROR, ECHO_REQUEST, ECHO_REPLY, EXPERIMENTER = 0, 1, 2, 3, 4
FEATURES_REQUEST, FEATURES_REPLY = 5, 6
PORT_STATUS, PPR_MODIFY, PS_LINK_DOWN, PS_LIVE = 12, 2, 1, 4
PACKET_IN, PACKET_OUT, FLOW_MOD, GROUP_MOD = 10, 13, 14, 15
MULTIPART_REQUEST, MULTIPART_REPLY, BARRIER_REQUEST, BARRIER_REPLY = 18, 19, 20, 21
ROLE_REQUEST, ROLE_REPLY, METER_MOD = 24, 25, 29
MP_FLOW, MP_AGGREGATE, MP_GROUP_DESC, MP_METER_CONFIG, MP_PORT_DESC = 1, 2, 7, 10, 13
MPF_REPLY_MORE = 1
ROLE_NOCHANGE, ROLE_EQUAL, ROLE_MASTER, ROLE_SLAVE = 0, 1, 2, 3
ROLE_NAMES = {ROLE_NOCHANGE: "nochange", ROLE_EQUAL: "equal", ROLE_MASTER: "master", ROLE_SLAVE: "slave"}
ET_BAD_REQUEST, BRC_IS_SLAVE = 1, 10
ET_GROUP_MOD_FAILED, GMFC_GROUP_EXISTS, GMFC_UNKNOWN_GROUP = 6, 0, 8
ET_ROLE_REQUEST_FAILED, RRFC_STALE = 11, 0
ET_METER_MOD_FAILED, MMFC_METER_EXISTS, MMFC_UNKNOWN_METER = 12, 1, 3
FC_ADD, FC_MODIFY, FC_MODIFY_STRICT, FC_DELETE, FC_DELETE_STRICT = 0, 1, 2, 3, 4
GC_ADD, GC_MODIFY, GC_DELETE = 0, 1, 2
MC_ADD, MC_MODIFY, MC_DELETE = 0, 1, 2
TT_ALL, G_ALL, M_ALL = 0xFF, 0xFFFFFFFC, 0xFFFFFFFF
OFPP_TABLE = 0xFFFFFFF9
AT_OUTPUT = 0
ONF_EXPERIMENTER, ONFT_ROLE_STATUS, CRR_MASTER_REQUEST = 0x4F4E4600, 1911, 0
ETH_LLDP = 0x88CC
MAX_REPLY_BODY = 60_000  # a multipart reply is split (REPLY_MORE) before OpenFlow's 64 KiB message limit
FLOW_MOD_FIXED = struct.Struct("!QQBBHHHIIIH2x")  # cookie .. flags, then the match and the instructions
FLOW_STATS_FIXED = struct.Struct("!HBxIIHHHH4xQQQ")

Send = tuple[int, bytes]
"""A message for one of the switch's connections: (connection index, bytes)."""


def message(kind: int, xid: int, body: bytes = b"") -> bytes:
    return struct.pack("!BBHI", VERSION, kind, 8 + len(body), xid) + body


def error_message(xid: int, err_type: int, code: int, request: bytes) -> bytes:
    """OFPT_ERROR with the first 64 bytes of the offending request, as OVS sends it."""
    return message(ERROR, xid, struct.pack("!HH", err_type, code) + request[:64])


def signed64(value: int) -> int:
    value &= 0xFFFF_FFFF_FFFF_FFFF
    return value - (1 << 64) if value >= 1 << 63 else value


def match_length(body: bytes, offset: int) -> int:
    """The padded length of the ofp_match at ``offset`` (its length field excludes the padding)."""
    length = int.from_bytes(body[offset + 2 : offset + 4], "big")
    return (length + 7) // 8 * 8


def is_empty_match(match: bytes) -> bool:
    return int.from_bytes(match[2:4], "big") <= 4


# -- roles -------------------------------------------------------------------------------------------------


class Roles:
    """Open vSwitch's role rules for one switch with ``connections`` controller connections (connmgr.c):
    a connection starts EQUAL; the master election id is the switch's, shared by its connections."""

    def __init__(self, connections: int) -> None:
        self.roles = [ROLE_EQUAL] * connections
        self.election_id: int | None = None

    def request(self, conn: int, role: int, generation: int) -> tuple[bool, list[int]]:
        """A ROLE_REQUEST on ``conn``: (accepted, the other connections demoted from MASTER to SLAVE).
        Not accepted: the generation is stale, nothing changed."""
        if role == ROLE_NOCHANGE:
            return True, []
        if role != ROLE_EQUAL:
            if self.election_id is not None and signed64(generation - self.election_id) < 0:
                return False, []
            self.election_id = generation & 0xFFFF_FFFF_FFFF_FFFF
        demoted = []
        if role == ROLE_MASTER:
            demoted = [i for i, r in enumerate(self.roles) if i != conn and r == ROLE_MASTER]
            for i in demoted:
                self.roles[i] = ROLE_SLAVE
        self.roles[conn] = role
        return True, demoted

    @property
    def reply_generation(self) -> int:
        return self.election_id if self.election_id is not None else 0

    def connection_reset(self, conn: int) -> None:
        """A connection closed: the next one on this index starts EQUAL (the election id stays)."""
        self.roles[conn] = ROLE_EQUAL


# -- tables ------------------------------------------------------------------------------------------------


@dataclass
class Flow:
    cookie: int
    idle_timeout: int
    hard_timeout: int
    flags: int
    match: bytes
    instructions: bytes


@dataclass
class Tables:
    """The flows, groups and meters the switch holds, kept as the bytes the controller sent (a flow-stats
    entry carries the same ofp_match and instructions as a FlowMod; a group-desc entry the same buckets)."""

    flows: dict[tuple[int, int, bytes], Flow] = field(default_factory=dict)  # (table, priority, match)
    groups: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # id -> (type, buckets)
    meters: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # id -> (flags, bands)

    def flow_mod(self, body: bytes) -> None:
        cookie, cookie_mask, table, command, idle, hard, priority, _buf, _port, _group, flags = (
            FLOW_MOD_FIXED.unpack_from(body)
        )
        offset = FLOW_MOD_FIXED.size
        end = offset + match_length(body, offset)
        match, instructions = body[offset:end], body[end:]
        if command == FC_ADD:
            self.flows[(table, priority, match)] = Flow(cookie, idle, hard, flags, match, instructions)
            return
        for key in list(
            self._selected(
                table, priority, match, cookie, cookie_mask, strict=command in (FC_MODIFY_STRICT, FC_DELETE_STRICT)
            )
        ):
            if command in (FC_MODIFY, FC_MODIFY_STRICT):
                self.flows[key].instructions = instructions  # OpenFlow 1.3: the cookie is a filter here, kept
            elif command in (FC_DELETE, FC_DELETE_STRICT):
                del self.flows[key]

    def _selected(
        self, table: int, priority: int, match: bytes, cookie: int, mask: int, *, strict: bool
    ) -> Iterable[tuple[int, int, bytes]]:
        if strict and table != TT_ALL:  # one flow at most: a lookup, not a scan (thousands of flows a switch)
            key = (table, priority, match)
            found = self.flows.get(key)
            if found is not None and found.cookie & mask == cookie & mask:
                yield key
            return
        for key, flow in self.flows.items():
            if table != TT_ALL and key[0] != table:
                continue
            if flow.cookie & mask != cookie & mask:
                continue
            if strict and (key[1] != priority or key[2] != match):
                continue
            if not strict and not is_empty_match(match) and key[2] != match:
                continue  # non-strict with a match: only an identical match (enough for a benchmark)
            yield key

    def flow_stats(self, request: bytes) -> list[bytes]:
        table, _port, _group, cookie, mask = struct.unpack_from("!B3xII4xQQ", request)
        entries = []
        for key in self._selected(table, 0, request[32:], cookie, mask, strict=False):
            flow = self.flows[key]
            length = FLOW_STATS_FIXED.size + len(flow.match) + len(flow.instructions)
            fixed = FLOW_STATS_FIXED.pack(
                length, key[0], 1, 0, key[1], flow.idle_timeout, flow.hard_timeout, flow.flags, flow.cookie, 0, 0
            )
            entries.append(fixed + flow.match + flow.instructions)
        return entries

    def aggregate_stats(self, request: bytes) -> bytes:
        """The totals of the flows a flow-stats request with this body would list: packets, bytes, flows
        (this switch forwards nothing, so its counters stay 0)."""
        table, _port, _group, cookie, mask = struct.unpack_from("!B3xII4xQQ", request)
        flows = sum(1 for _ in self._selected(table, 0, request[32:], cookie, mask, strict=False))
        return struct.pack("!QQI4x", 0, 0, flows)

    def group_mod(self, body: bytes) -> tuple[int, int] | None:
        """None, or the (error type, code) OVS answers."""
        command, kind, group_id = struct.unpack_from("!HBxI", body)
        buckets = body[8:]
        if command == GC_ADD:
            if group_id in self.groups:
                return ET_GROUP_MOD_FAILED, GMFC_GROUP_EXISTS
            self.groups[group_id] = (kind, buckets)
        elif command == GC_MODIFY:
            if group_id not in self.groups:
                return ET_GROUP_MOD_FAILED, GMFC_UNKNOWN_GROUP
            self.groups[group_id] = (kind, buckets)
        elif command == GC_DELETE:
            if group_id == G_ALL:
                self.groups.clear()
            else:
                self.groups.pop(group_id, None)
        return None

    def group_desc(self) -> list[bytes]:
        return [
            struct.pack("!HBxI", 8 + len(buckets), kind, group_id) + buckets
            for group_id, (kind, buckets) in sorted(self.groups.items())
        ]

    def meter_mod(self, body: bytes) -> tuple[int, int] | None:
        command, flags, meter_id = struct.unpack_from("!HHI", body)
        bands = body[8:]
        if command == MC_ADD:
            if meter_id in self.meters:
                return ET_METER_MOD_FAILED, MMFC_METER_EXISTS
            self.meters[meter_id] = (flags, bands)
        elif command == MC_MODIFY:
            if meter_id not in self.meters:
                return ET_METER_MOD_FAILED, MMFC_UNKNOWN_METER
            self.meters[meter_id] = (flags, bands)
        elif command == MC_DELETE:
            if meter_id == M_ALL:
                self.meters.clear()
            else:
                self.meters.pop(meter_id, None)
        return None

    def meter_config(self, request: bytes) -> list[bytes]:
        (wanted,) = struct.unpack_from("!I", request)
        return [
            struct.pack("!HHI", 8 + len(bands), flags, meter_id) + bands
            for meter_id, (flags, bands) in sorted(self.meters.items())
            if wanted in (M_ALL, meter_id)
        ]


def multipart_replies(xid: int, mp_type: int, entries: Sequence[bytes]) -> list[bytes]:
    """One reply, or several chained with REPLY_MORE so none passes OpenFlow's 64 KiB."""
    chunks: list[list[bytes]] = [[]]
    size = 0
    for entry in entries:
        if size + len(entry) > MAX_REPLY_BODY and chunks[-1]:
            chunks.append([])
            size = 0
        chunks[-1].append(entry)
        size += len(entry)
    return [
        message(
            MULTIPART_REPLY,
            xid,
            struct.pack("!HH4x", mp_type, MPF_REPLY_MORE if i < len(chunks) - 1 else 0) + b"".join(chunk),
        )
        for i, chunk in enumerate(chunks)
    ]


def port_desc(no: int, name: str, up: bool = True) -> bytes:
    hw = (0x020000000000 | no).to_bytes(6, "big")
    state = PS_LIVE if up else PS_LINK_DOWN
    return struct.pack("!I4x6s2x16sIIIIIIII", no, hw, name.encode()[:15], 0, state, 0, 0, 0, 0, 10_000_000, 10_000_000)


def port_status(no: int, name: str, up: bool) -> bytes:
    """OFPT_PORT_STATUS, reason MODIFY: the port's link went up or down."""
    return message(PORT_STATUS, 0, struct.pack("!B7x", PPR_MODIFY) + port_desc(no, name, up))


def packet_in(data: bytes, in_port: int) -> bytes:
    match = struct.pack("!HHII", 1, 12, 0x80000004, in_port) + b"\x00" * 4  # OXM in_port, padded to 8
    body = struct.pack("!IHBBQ", 0xFFFFFFFF, len(data), 1, 0, 0) + match + b"\x00\x00" + data
    return message(PACKET_IN, 0, body)


def output_ports(body: bytes) -> tuple[list[int], bytes]:
    """A PACKET_OUT's output ports and its frame."""
    actions_len = struct.unpack_from("!H", body, 8)[0]  # buffer_id, in_port, then actions_len
    actions, frame = body[16 : 16 + actions_len], body[16 + actions_len :]
    ports, offset = [], 0
    while offset + 8 <= len(actions):
        kind, length = struct.unpack_from("!HH", actions, offset)
        if kind == AT_OUTPUT and length >= 16:
            ports.append(struct.unpack_from("!I", actions, offset + 4)[0])
        offset += max(length, 8)
    return ports, frame


# -- one switch ------------------------------------------------------------------------------------------


class FakeSwitch:
    """One switch's protocol, without I/O: ``handle`` takes a message from one connection and returns the
    messages to send (and ``emitted``, frames sent out of ports). ``log``: (time, connection, kind, value)
    with kind connected, role:NAME (the role replied; value: the generation), stale (value: the generation
    refused), readback, flow_mod, group_mod, meter_mod, barrier, is_slave (a refused write)."""

    def __init__(
        self, dpid: int, ports: dict[int, str], connections: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.dpid = dpid
        self.ports = dict(sorted(ports.items()))
        self.roles = Roles(connections)
        self.connected = [False] * connections
        self.tables = Tables()
        self.clock = clock
        self.log: list[tuple[float, int, str, int]] = []
        self.emitted: list[tuple[int, bytes]] = []  # (out port, frame), taken by the fleet
        self.down_ports: set[int] = set()

    def connection_up(self, conn: int) -> list[Send]:
        self.connected[conn] = True
        self.log.append((self.clock(), conn, "connected", 0))
        return [(conn, message(HELLO, 1))]

    def connection_down(self, conn: int) -> None:
        self.connected[conn] = False
        self.roles.connection_reset(conn)

    def role_of(self, conn: int) -> str:
        return ROLE_NAMES[self.roles.roles[conn]] if self.connected[conn] else "disconnected"

    def handle(self, conn: int, data: bytes) -> list[Send]:
        _, kind, _, xid = struct.unpack_from("!BBHI", data)
        body = data[8:]
        if kind == HELLO:
            return []
        if kind == ECHO_REQUEST:
            return [(conn, message(ECHO_REPLY, xid, body))]
        if kind == FEATURES_REQUEST:
            return [(conn, message(FEATURES_REPLY, xid, struct.pack("!QIBB2xII", self.dpid, 0, 254, 0, 0x4F, 0)))]
        if kind == BARRIER_REQUEST:
            self.log.append((self.clock(), conn, "barrier", 0))
            return [(conn, message(BARRIER_REPLY, xid))]
        if kind == ROLE_REQUEST:
            return self._role_request(conn, xid, data)
        if kind == MULTIPART_REQUEST:
            return self._multipart(conn, xid, body)
        if kind in (FLOW_MOD, GROUP_MOD, METER_MOD, PACKET_OUT):
            if self.roles.roles[conn] == ROLE_SLAVE:
                self.log.append((self.clock(), conn, "is_slave", kind))
                return [(conn, error_message(xid, ET_BAD_REQUEST, BRC_IS_SLAVE, data))]
            return self._write(conn, kind, xid, data)
        return []  # SET_CONFIG and the like: nothing to answer

    def _role_request(self, conn: int, xid: int, data: bytes) -> list[Send]:
        role, generation = struct.unpack_from("!I4xQ", data, 8)
        accepted, demoted = self.roles.request(conn, role, generation)
        now = self.clock()
        if not accepted:
            self.log.append((now, conn, "stale", generation))
            return [(conn, error_message(xid, ET_ROLE_REQUEST_FAILED, RRFC_STALE, data))]
        out = []
        for other in demoted:  # OVS's role status (ONF extension for OpenFlow 1.3) to the demoted master
            status = struct.pack(
                "!IIIB3xQ",
                ONF_EXPERIMENTER,
                ONFT_ROLE_STATUS,
                ROLE_SLAVE,
                CRR_MASTER_REQUEST,
                self.roles.reply_generation,
            )
            if self.connected[other]:
                out.append((other, message(EXPERIMENTER, 0, status)))
        reply_role = self.roles.roles[conn]
        self.log.append((now, conn, "role:" + ROLE_NAMES[reply_role], self.roles.reply_generation))
        out.append((conn, message(ROLE_REPLY, xid, struct.pack("!I4xQ", reply_role, self.roles.reply_generation))))
        return out

    def _multipart(self, conn: int, xid: int, body: bytes) -> list[Send]:
        (mp_type,) = struct.unpack_from("!H", body)
        request = body[8:]
        entries: list[bytes] = []
        if mp_type == MP_PORT_DESC:
            entries = [port_desc(no, name, no not in self.down_ports) for no, name in self.ports.items()]
        elif mp_type == MP_FLOW:
            entries = self.tables.flow_stats(request)
        elif mp_type == MP_AGGREGATE:
            entries = [self.tables.aggregate_stats(request)]
        elif mp_type == MP_GROUP_DESC:
            entries = self.tables.group_desc()
        elif mp_type == MP_METER_CONFIG:
            entries = self.tables.meter_config(request)
            self.log.append((self.clock(), conn, "readback", 0))  # the last of a read-back's three requests
        return [(conn, reply) for reply in multipart_replies(xid, mp_type, entries)]

    def _write(self, conn: int, kind: int, xid: int, data: bytes) -> list[Send]:
        body = data[8:]
        if kind == PACKET_OUT:
            ports, frame = output_ports(body)
            self.emitted += [(port, frame) for port in ports if port in self.ports]
            if OFPP_TABLE in ports:
                return self._to_controllers(frame, struct.unpack_from("!I", body, 4)[0])
            return []
        if kind == FLOW_MOD:
            self.tables.flow_mod(body)
            failure = None
        elif kind == GROUP_MOD:
            failure = self.tables.group_mod(body)
        else:
            failure = self.tables.meter_mod(body)
        if failure is not None:
            return [(conn, error_message(xid, *failure, data))]
        name = {FLOW_MOD: "flow_mod", GROUP_MOD: "group_mod", METER_MOD: "meter_mod"}[kind]
        self.log.append((self.clock(), conn, name, 0))
        return []

    def set_link(self, port: int, up: bool) -> list[Send]:
        """The link on ``port`` went up or down: PORT_STATUS to every connected controller (OVS sends it to
        slaves too)."""
        if up:
            self.down_ports.discard(port)
        else:
            self.down_ports.add(port)
        self.log.append((self.clock(), -1, "link:up" if up else "link:down", port))
        status = port_status(port, self.ports[port], up)
        return [(i, status) for i in range(len(self.connected)) if self.connected[i]]

    def receive_frame(self, port: int, frame: bytes) -> list[Send]:
        """A frame arrived at ``port`` from a cable: LLDP goes to the controllers that are not SLAVE."""
        if port in self.down_ports:
            return []
        return self._to_controllers(frame, port)

    def _to_controllers(self, frame: bytes, in_port: int) -> list[Send]:
        """What the controller's LLDP flow does with a frame that entered at ``in_port``: LLDP goes to
        the connections that are not SLAVE, anything else is dropped."""
        if len(frame) < 14 or int.from_bytes(frame[12:14], "big") != ETH_LLDP:
            return []
        pin = packet_in(frame, in_port)
        return [(i, pin) for i, role in enumerate(self.roles.roles) if self.connected[i] and role != ROLE_SLAVE]

    def status(self) -> dict[str, object]:
        return {
            "roles": [self.role_of(i) for i in range(len(self.connected))],
            "generation": self.roles.reply_generation,
            "flows": len(self.tables.flows),
            "groups": len(self.tables.groups),
            "meters": len(self.tables.meters),
        }

    def events_since(self, since: float) -> list[tuple[float, int, str, int]]:
        """Log entries at or after ``since``; older ones are dropped."""
        self.log = [entry for entry in self.log if entry[0] >= since]
        return list(self.log)


# -- the fleet: every switch of a fabric, over TCP -----------------------------------------------------------


@dataclass
class Fleet:
    switches: dict[int, FakeSwitch]
    peers: dict[tuple[int, int], tuple[int, int]]  # (dpid, port) -> (dpid, port) across a cable
    controllers: list[tuple[str, int]]
    reconnect_s: float = 0.5
    writers: dict[tuple[int, int], asyncio.StreamWriter] = field(default_factory=dict)
    delays_s: dict[tuple[int, int], float] = field(default_factory=dict)  # (dpid, port) -> its cable's latency

    def send(self, dpid: int, sends: Iterable[Send]) -> None:
        for conn, data in sends:
            writer = self.writers.get((dpid, conn))
            if writer is not None and not writer.is_closing():
                writer.write(data)

    def deliver_emitted(self, switch: FakeSwitch) -> None:
        emitted, switch.emitted = switch.emitted, []
        for port, frame in emitted:
            peer = self.peers.get((switch.dpid, port))
            if peer is not None and port not in switch.down_ports:
                delay_s = self.delays_s.get((switch.dpid, port), 0.0)
                if delay_s > 0:
                    asyncio.get_running_loop().call_later(delay_s, self._arrive, peer, frame)
                else:
                    self._arrive(peer, frame)

    def _arrive(self, at: tuple[int, int], frame: bytes) -> None:
        self.send(at[0], self.switches[at[0]].receive_frame(at[1], frame))

    async def connection(self, switch: FakeSwitch, conn: int) -> None:
        host, port = self.controllers[conn]
        while True:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(self.reconnect_s)
                continue
            self.writers[(switch.dpid, conn)] = writer
            self.send(switch.dpid, switch.connection_up(conn))
            try:
                while True:
                    head = await reader.readexactly(8)
                    length = struct.unpack_from("!H", head, 2)[0]
                    data = head + await reader.readexactly(max(0, length - 8))
                    self.send(switch.dpid, switch.handle(conn, data))
                    if switch.emitted:
                        self.deliver_emitted(switch)
            except (OSError, asyncio.IncompleteReadError):
                pass
            except (struct.error, KeyError, ValueError) as exc:  # a message this fake cannot read: say so, hang up
                print(f"switch {switch.dpid:016x}, controller {conn}: {exc!r}; reconnecting", file=sys.stderr)
            finally:
                switch.connection_down(conn)
                self.writers.pop((switch.dpid, conn), None)
                writer.close()
            await asyncio.sleep(self.reconnect_s)

    def command(self, line: str) -> dict[str, object]:
        words = line.split()
        if not words or words[0] == "status":
            return {f"{d:016x}": s.status() for d, s in self.switches.items()}
        if words[0] == "events":
            since = float(words[1]) if len(words) > 1 else 0.0
            return {f"{d:016x}": s.events_since(since) for d, s in self.switches.items()}
        if words[0] == "link" and len(words) == 4 and words[3] in ("up", "down"):
            return self.set_link(int(words[1], 16), int(words[2]), words[3] == "up")
        return {"error": f"unknown command {words[0]!r} (status, events SINCE, link DPID PORT up|down, quit)"}

    def set_link(self, dpid: int, port: int, up: bool) -> dict[str, object]:
        """The cable on (dpid, port) cut or mended: both ends report it (``at``: when it was sent)."""
        ends = [(dpid, port)]
        peer = self.peers.get((dpid, port))
        if peer is None or dpid not in self.switches or port not in self.switches[dpid].ports:
            return {"error": f"no cable on switch {dpid:x} port {port}"}
        ends.append(peer)
        at = time.time()
        for end_dpid, end_port in ends:
            self.send(end_dpid, self.switches[end_dpid].set_link(end_port, up))
        return {"at": at, "ends": [[f"{d:016x}", p] for d, p in ends]}


def fleet_of(fabric_path: str, controllers: list[tuple[str, int]], cable_delays: bool = False) -> Fleet:
    """Every switch of the fabric file with its cabled, host and node ports (and with ``cable_delays``,
    each cable's declared latency)."""
    from netmodel.fabric_file import parse_fabric  # here: the protocol above needs nothing of the project

    spec = parse_fabric(Path(fabric_path).read_bytes(), fabric_path)
    dpid_of = {s.name: int(s.dpid) for s in spec.switches}
    ports: dict[int, dict[int, str]] = {d: {} for d in dpid_of.values()}
    peers = {}
    delays_s = {}
    for cable in spec.cables:
        a, b = dpid_of[cable.a], dpid_of[cable.b]
        ports[a][int(cable.a_port)] = f"{cable.a}-eth{cable.a_port}"
        ports[b][int(cable.b_port)] = f"{cable.b}-eth{cable.b_port}"
        peers[(a, int(cable.a_port))] = (b, int(cable.b_port))
        peers[(b, int(cable.b_port))] = (a, int(cable.a_port))
        if cable_delays:
            delays_s[(a, int(cable.a_port))] = delays_s[(b, int(cable.b_port))] = cable.latency_ms / 1000
    attachments = [(h.switch, int(h.port)) for h in spec.hosts] + [(n.switch, int(n.port)) for n in spec.nodes]
    for name, port in attachments:
        ports[dpid_of[name]][port] = f"{name}-eth{port}"
    switches = {d: FakeSwitch(d, p, len(controllers)) for d, p in ports.items()}
    return Fleet(switches, peers, controllers, delays_s=delays_s)


async def run_fleet(fleet: Fleet) -> None:
    loop = asyncio.get_running_loop()
    tasks = [
        asyncio.create_task(fleet.connection(switch, conn))
        for switch in fleet.switches.values()
        for conn in range(len(fleet.controllers))
    ]
    done = asyncio.Event()

    async def answer(line: str) -> None:
        print(json.dumps(fleet.command(line)), flush=True)

    def read_commands() -> None:  # stdin on a thread; every answer is computed on the loop's thread
        for line in sys.stdin:
            if line.strip() == "quit":
                break
            asyncio.run_coroutine_threadsafe(answer(line), loop).result()
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=read_commands, daemon=True).start()
    await done.wait()
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)


def parse_controllers(text: str) -> list[tuple[str, int]]:
    out = []
    for item in text.split(","):
        host, _, port = item.strip().rpartition(":")
        out.append((host or "127.0.0.1", int(port)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    cable_delays = "--cable-delays" in args
    args = [a for a in args if a != "--cable-delays"]
    if len(args) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    fleet = fleet_of(args[0], parse_controllers(args[1]), cable_delays)
    print(json.dumps({"switches": len(fleet.switches), "controllers": len(fleet.controllers)}), flush=True)
    asyncio.run(run_fleet(fleet))
    return 0


if __name__ == "__main__":
    sys.exit(main())
