"""Table writes (FlowMods, GroupMods, MeterMods) as os-ken builds them, and as bytes serialized once per spec
and command (adapter).

Building a FlowMod with os-ken (an object per match field, instruction and action) and serializing it cost
~57 us; a first install of 1,000 workloads' routes and ACL is ~2,200 FlowMods per switch, and it kept a
50-switch controller's route engine busy for tens of seconds (a py-spy profile of ``benchmarks/scale.py``).
FlowMods are encoded here straight from the FlowSpec (~5 us; byte for byte what os-ken serializes, as the
tests hold; os-ken serializes a match field edgectl never writes), and each (command, spec) is remembered
(a table repeats its route flows on every switch): only the transaction id is written into a copy of those
bytes when sent.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from sdnctl.flows import FlowSpec, GroupSpec, MeterSpec

ofp = ofproto_v1_3
METER_FLAGS = ofp.OFPMF_KBPS | ofp.OFPMF_BURST | ofp.OFPMF_STATS
"""Every meter edgectl writes: rates in kbit/s, an explicit burst, statistics kept."""
KNOWN_LIMIT = 1 << 16
"""Serialized writes remembered per kind (least recently used beyond it)."""
_XID = struct.Struct("!I")
_XID_OFFSET = 4  # in the OpenFlow header: version, type, length, xid
_SERIALIZER = SimpleNamespace(ofproto=ofp, ofproto_parser=ofproto_v1_3_parser)
"""What os-ken's serialize() reads of a datapath."""


@dataclass(frozen=True, slots=True)
class Encoded:
    """One serialized message (its transaction id 0) and its os-ken type name (for the message counts)."""

    name: str
    data: bytes


class XidSink:
    """Takes the transaction id ``Datapath.set_xid`` hands a message, for a message that is bytes already."""

    __slots__ = ("xid",)

    def __init__(self) -> None:
        self.xid: int = 0

    def set_xid(self, xid: int) -> None:
        self.xid = xid


def with_xid(data: bytes, xid: int) -> bytes:
    """``data`` (one serialized message) with transaction id ``xid``."""
    return data[:_XID_OFFSET] + _XID.pack(xid) + data[_XID_OFFSET + 4 :]


def _serialized(msg: Any) -> Encoded:
    msg.xid = 0
    msg.serialize()
    return Encoded(type(msg).__name__, bytes(msg.buf))


@lru_cache(maxsize=KNOWN_LIMIT)
def flow_mod_bytes(command: int, flow: FlowSpec) -> Encoded:
    data = encode_flow_mod(command, flow)
    if data is None:  # a match field edgectl never writes: os-ken's way
        return _serialized(flow_mod(ofproto_v1_3_parser, command, flow, _SERIALIZER))
    return Encoded("OFPFlowMod", data)


@lru_cache(maxsize=KNOWN_LIMIT)
def group_mod_bytes(command: int, group: GroupSpec) -> Encoded:
    return _serialized(group_mod(ofproto_v1_3_parser, command, group, _SERIALIZER))


def meter_mod_bytes(command: int, meter: MeterSpec) -> Encoded:
    return _serialized(meter_mod(ofproto_v1_3_parser, command, meter, _SERIALIZER))


def actions_of(parser: Any, actions: Iterable[tuple[str, int]]) -> list[Any]:
    out = []
    for kind, value in actions:
        if kind == "output":
            out.append(parser.OFPActionOutput(value))
        elif kind == "group":
            out.append(parser.OFPActionGroup(value))
        elif kind == "controller":
            out.append(parser.OFPActionOutput(ofp.OFPP_CONTROLLER, value))
        else:
            raise ValueError(f"unknown action {kind}")
    return out


def instructions_of(parser: Any, actions: tuple[tuple[str, int], ...]) -> list[Any]:
    """A meter first, then apply-actions for the other actions before a ``goto``, then the goto; no
    actions: no instruction (drop)."""
    instructions = [
        parser.OFPInstructionMeter(meter_id, ofp.OFPIT_METER) for kind, meter_id in actions if kind == "meter"
    ]
    applied = [a for a in actions if a[0] not in ("goto", "meter")]
    instructions += (
        [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions_of(parser, applied))] if applied else []
    )
    instructions += [parser.OFPInstructionGotoTable(table) for kind, table in actions if kind == "goto"]
    return instructions


def flow_mod(parser: Any, command: int, flow: FlowSpec, datapath: Any) -> Any:
    instructions = instructions_of(parser, flow.actions)
    return parser.OFPFlowMod(
        datapath,
        cookie=flow.cookie,
        cookie_mask=0,
        table_id=flow.table,
        command=command,
        priority=flow.priority,
        buffer_id=ofp.OFP_NO_BUFFER,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(**dict(flow.match)),
        instructions=instructions,
    )


def group_mod(parser: Any, command: int, group: GroupSpec, datapath: Any) -> Any:
    buckets = [
        parser.OFPBucket(weight=0, watch_port=port, watch_group=ofp.OFPG_ANY, actions=[parser.OFPActionOutput(port)])
        for port in group.buckets
    ]
    return parser.OFPGroupMod(
        datapath,
        command=command,
        type_=ofp.OFPGT_FF,
        group_id=group.group_id,
        buckets=buckets if command != ofp.OFPGC_DELETE else [],
    )


def meter_mod(parser: Any, command: int, meter: MeterSpec, datapath: Any) -> Any:
    bands = [] if command == ofp.OFPMC_DELETE else [parser.OFPMeterBandDrop(meter.rate_kbps, meter.burst_kb)]
    return parser.OFPMeterMod(datapath, command=command, flags=METER_FLAGS, meter_id=meter.meter_id, bands=bands)


# -- FlowMods without os-ken ---------------------------------------------------------------------------
# The bytes os-ken serializes for ``flow_mod`` (the tests hold them equal), for the match fields edgectl
# writes: os-ken's objects per field made a first install of ~2,200 flows a switch cost tens of
# milliseconds per switch, and with 1,000 workloads the ACL's flows differ per switch (no cache helps).

_HEADER = struct.Struct("!BBHI")
_FLOW_MOD_BODY = struct.Struct("!QQBBHHHIIIH2x")
_U8, _U16, _U32, _U64 = struct.Struct("!B"), struct.Struct("!H"), struct.Struct("!I"), struct.Struct("!Q")
_ONF_EXPERIMENTER = 0x4F4E4600


def _mac_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _ipv4_bytes(text: str) -> bytes:
    return bytes(int(part) for part in text.split("."))


_FIELDS: dict[str, tuple[int, Callable[[Any], bytes]]] = {
    # os-ken's name -> (OpenFlow basic field number, value -> bytes)
    "in_port": (0, _U32.pack),
    "metadata": (2, _U64.pack),
    "eth_dst": (3, _mac_bytes),
    "eth_src": (4, _mac_bytes),
    "eth_type": (5, _U16.pack),
    "ip_proto": (10, _U8.pack),
    "ipv4_src": (11, _ipv4_bytes),
    "ipv4_dst": (12, _ipv4_bytes),
    "tcp_src": (13, _U16.pack),
    "tcp_dst": (14, _U16.pack),
    "udp_src": (15, _U16.pack),
    "udp_dst": (16, _U16.pack),
    "arp_op": (21, _U16.pack),
    "arp_spa": (22, _ipv4_bytes),
    "arp_tpa": (23, _ipv4_bytes),
    "arp_sha": (24, _mac_bytes),
    "arp_tha": (25, _mac_bytes),
}
_TCP_FLAGS = 42  # ONF EXT-109, an experimenter field in OpenFlow 1.3 (os-ken sorts those after the basic ones)


def _oxm(oxm_class: int, field: int, value: bytes, mask: bytes | None, prefix: bytes = b"") -> bytes:
    if mask is not None:
        value = bytes(v & m for v, m in zip(value, mask, strict=True))  # os-ken sends the value masked
        payload = prefix + value + mask
    else:
        payload = prefix + value
    return struct.pack("!HBB", oxm_class, field << 1 | (mask is not None), len(payload)) + payload


def _match_bytes(match: tuple[tuple[str, Any], ...]) -> bytes | None:
    fields: list[tuple[int, bytes]] = []
    for name, user in match:
        value, mask = user if isinstance(user, tuple) else (user, None)
        if name == "tcp_flags":
            tlv = _oxm(
                0xFFFF,
                _TCP_FLAGS,
                _U16.pack(value),
                None if mask is None else _U16.pack(mask),
                _U32.pack(_ONF_EXPERIMENTER),
            )
            fields.append((_ONF_EXPERIMENTER, tlv))
            continue
        known = _FIELDS.get(name)
        if known is None:
            return None
        number, form = known
        fields.append((number, _oxm(0x8000, number, form(value), None if mask is None else form(mask))))
    fields.sort(key=lambda field: field[0])
    body = b"".join(tlv for _, tlv in fields)
    length = 4 + len(body)
    return struct.pack("!HH", ofp.OFPMT_OXM, length) + body + bytes(-length % 8)


def _action_bytes(kind: str, value: int) -> bytes:
    if kind == "output":
        return struct.pack("!HHIH6x", ofp.OFPAT_OUTPUT, 16, value, ofp.OFPCML_MAX)
    if kind == "controller":
        return struct.pack("!HHIH6x", ofp.OFPAT_OUTPUT, 16, ofp.OFPP_CONTROLLER, value)
    if kind == "group":
        return struct.pack("!HHI", ofp.OFPAT_GROUP, 8, value)
    raise ValueError(f"unknown action {kind}")


def _instruction_bytes(actions: tuple[tuple[str, int], ...]) -> bytes:
    """As ``instructions_of``: a meter first, then apply-actions, then the goto."""
    out = [struct.pack("!HHI", ofp.OFPIT_METER, 8, meter) for kind, meter in actions if kind == "meter"]
    applied = b"".join(_action_bytes(kind, value) for kind, value in actions if kind not in ("goto", "meter"))
    if applied:
        out.append(struct.pack("!HH4x", ofp.OFPIT_APPLY_ACTIONS, 8 + len(applied)) + applied)
    out += [struct.pack("!HHB3x", ofp.OFPIT_GOTO_TABLE, 8, table) for kind, table in actions if kind == "goto"]
    return b"".join(out)


def encode_flow_mod(command: int, flow: FlowSpec) -> bytes | None:
    """``flow_mod(command, flow)`` serialized (transaction id 0); None for a match field this does not encode."""
    match = _match_bytes(flow.match)
    if match is None:
        return None
    body = _FLOW_MOD_BODY.pack(
        flow.cookie, 0, flow.table, command, 0, 0, flow.priority, ofp.OFP_NO_BUFFER, ofp.OFPP_ANY, ofp.OFPG_ANY, 0
    )
    tail = match + _instruction_bytes(flow.actions)
    return _HEADER.pack(ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD, _HEADER.size + len(body) + len(tail), 0) + body + tail
