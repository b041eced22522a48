"""Flow-stats replies read fast (adapter): each entry as edgectl's FlowSpec and its counters.

The drift check reads every flow of every switch each period and the ACL counters every drop flow. Parsed by
os-ken (an object per OXM field, instruction and action, per flow per read) that was most of a busy
controller's CPU at rest: ~60 % of a core with 50 switches and 1,000 workloads (a py-spy profile of
``benchmarks/scale.py``). Here the match fields, instructions and actions edgectl writes are decoded
straight into the FlowSpec ``flow_spec_of`` makes of os-ken's parse (the tests hold the two equal);
an entry with anything else (a field, instruction or action edgectl never writes) is os-ken's to parse,
so a foreign flow reads as it always did. Remembering each distinct flow's parse instead was tried: with
1,000 workloads the ACL's flows differ per switch (~95,000 in all) and any bounded memory of them thrashed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from os_ken.ofproto import ofproto_parser, ofproto_v1_3, ofproto_v1_3_parser

from sdnctl.flows import FlowSpec

ofp = ofproto_v1_3
_MULTIPART = struct.Struct(ofp.OFP_MULTIPART_REPLY_PACK_STR)  # type, flags (after the 8-byte header)
_ENTRY = struct.Struct(ofp.OFP_FLOW_STATS_0_PACK_STR)  # ofp_flow_stats up to its match
_MIN_ENTRY = ofp.OFP_FLOW_STATS_0_SIZE + 8  # with the smallest match (type, length, padding)


@dataclass(frozen=True, slots=True)
class FlowStat:
    """One entry of a flow-stats reply: the flow as edgectl writes it, and its counters."""

    spec: FlowSpec
    packet_count: int
    byte_count: int


def flow_spec_of(stat: Any) -> FlowSpec:
    """The FlowSpec of a flow-stats entry (a ``FlowStat``, or os-ken's ``OFPFlowStats``)."""
    if isinstance(stat, FlowStat):
        return stat.spec
    meters: list[tuple[str, int]] = []
    actions: list[tuple[str, int]] = []
    goto: list[tuple[str, int]] = []
    for instruction in stat.instructions:
        if instruction.type == ofp.OFPIT_GOTO_TABLE:
            goto.append(("goto", instruction.table_id))
            continue
        if instruction.type == ofp.OFPIT_METER:
            meters.append(("meter", instruction.meter_id))
            continue
        for action in getattr(instruction, "actions", []):
            if action.cls_action_type == ofp.OFPAT_OUTPUT:
                if action.port == ofp.OFPP_CONTROLLER:
                    actions.append(("controller", action.max_len))
                else:
                    actions.append(("output", action.port))
            elif action.cls_action_type == ofp.OFPAT_GROUP:
                actions.append(("group", action.group_id))
            else:
                actions.append(("foreign", action.cls_action_type))  # not ours: the diff rewrites it
    match = tuple(sorted(stat.match.items()))
    return FlowSpec(stat.table_id, stat.priority, match, (*meters, *actions, *goto), stat.cookie)


class FlowStatsReader:
    """Parses OpenFlow 1.3 flow-stats replies into ``FlowStat`` entries; shared by every connection's receive
    thread (it keeps no state but a count of fallbacks, for tests and diagnosis)."""

    def __init__(self) -> None:
        self.fallbacks = 0
        """Entries os-ken parsed (a match field, instruction or action this reader does not decode)."""

    def parse(self, datapath: Any, version: int, msg_type: int, msg_len: int, xid: int, buf: Any) -> Any:
        """The message os-ken's parser would make of a flow-stats reply, its ``body`` of ``FlowStat``; None
        for any other message (os-ken's parser takes it). Raises what os-ken's parse of a bad entry raises."""
        if version != ofp.OFP_VERSION or msg_type != ofp.OFPT_MULTIPART_REPLY or msg_len < ofp.OFP_MULTIPART_REPLY_SIZE:
            return None
        data = bytes(buf[:msg_len])
        kind, flags = _MULTIPART.unpack_from(data, ofp.OFP_HEADER_SIZE)
        if kind != ofp.OFPMP_FLOW:
            return None
        body: list[FlowStat] = []
        offset = ofp.OFP_MULTIPART_REPLY_SIZE
        while offset < msg_len:
            if msg_len - offset < _MIN_ENTRY:
                left = msg_len - offset
                raise ValueError(f"flow stats entry at {offset}: {left} bytes left, fewer than {_MIN_ENTRY}")
            length, table_id, _, _, priority, _, _, _, cookie, packets, octets = _ENTRY.unpack_from(data, offset)
            if length < _MIN_ENTRY or offset + length > msg_len:
                raise ValueError(f"flow stats entry at {offset}: length {length} does not fit in {msg_len}")
            spec = decode_flow(data, offset + ofp.OFP_FLOW_STATS_0_SIZE, offset + length, table_id, priority, cookie)
            if spec is None:
                spec = flow_spec_of(ofproto_v1_3_parser.OFPFlowStats.parser(data, offset))
                self.fallbacks += 1
            body.append(FlowStat(spec, packets, octets))
            offset += length
        msg = ofproto_parser.MsgBase.parser.__func__(  # the header fields and buffer, as os-ken sets them
            ofproto_v1_3_parser.OFPFlowStatsReply, datapath, version, msg_type, msg_len, xid, buf
        )
        msg.type = kind
        msg.flags = flags
        msg.body = body
        return msg


# A table read holds hundreds of thousands of flows over a few thousand distinct addresses and match
# fields: each decoded once and shared (the same string, the same pair) by every flow that has it, so a
# read costs memory per flow, not per flow and field (a 50-switch read at 1,000 workloads held ~230 MB of
# address strings alone), and reading is faster too. Bounded: distinct values are few, never per flow.
_SHARED_VALUES = 1 << 16


def _mac(data: bytes, at: int) -> str:
    return _mac_text(data[at : at + 6])


@lru_cache(maxsize=_SHARED_VALUES)
def _mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _ipv4(data: bytes, at: int) -> str:
    return _ipv4_text(data[at : at + 4])


@lru_cache(maxsize=_SHARED_VALUES)
def _ipv4_text(raw: bytes) -> str:
    return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"


@lru_cache(maxsize=_SHARED_VALUES)
def _field(name: str, value: Any) -> tuple[str, Any]:
    return (name, value)


def _uint(width: int) -> Callable[[bytes, int], int]:
    unpack_from = struct.Struct({1: "!B", 2: "!H", 4: "!I", 8: "!Q"}[width]).unpack_from

    def read(data: bytes, at: int) -> int:
        return int(unpack_from(data, at)[0])

    return read


_U8, _U16, _U32, _U64 = _uint(1), _uint(2), _uint(4), _uint(8)
_BASIC_FIELDS: dict[int, tuple[str, int, Callable[[bytes, int], Any]]] = {
    # OpenFlow basic class field number -> (os-ken's name, value bytes, os-ken's value form)
    0: ("in_port", 4, _U32),
    2: ("metadata", 8, _U64),
    3: ("eth_dst", 6, _mac),
    4: ("eth_src", 6, _mac),
    5: ("eth_type", 2, _U16),
    10: ("ip_proto", 1, _U8),
    11: ("ipv4_src", 4, _ipv4),
    12: ("ipv4_dst", 4, _ipv4),
    13: ("tcp_src", 2, _U16),
    14: ("tcp_dst", 2, _U16),
    15: ("udp_src", 2, _U16),
    16: ("udp_dst", 2, _U16),
    21: ("arp_op", 2, _U16),
    22: ("arp_spa", 4, _ipv4),
    23: ("arp_tpa", 4, _ipv4),
    24: ("arp_sha", 6, _mac),
    25: ("arp_tha", 6, _mac),
}
_OXM_HEADER = struct.Struct("!HBB")
_TYPE_LENGTH = struct.Struct("!HH")
_OUTPUT_BODY = struct.Struct("!IH")
_ONF_EXPERIMENTER = 0x4F4E4600
_ONF_TCP_FLAGS = 42  # EXT-109: TCP flags in OpenFlow 1.3, as os-ken names it
_OXM_BASIC = 0x8000
_OXM_EXPERIMENTER = 0xFFFF
_OUTPUT, _GROUP = ofp.OFPAT_OUTPUT, ofp.OFPAT_GROUP
_APPLY, _WRITE, _CLEAR = ofp.OFPIT_APPLY_ACTIONS, ofp.OFPIT_WRITE_ACTIONS, ofp.OFPIT_CLEAR_ACTIONS


def decode_flow(data: bytes, start: int, end: int, table: int, priority: int, cookie: int) -> FlowSpec | None:
    """The FlowSpec of one flow-stats entry from its match and instructions (``data[start:end]``), as
    ``flow_spec_of`` makes it of os-ken's parse; None when it holds a match field, instruction or action
    this does not decode (os-ken parses that entry)."""
    if end - start < 4:
        return None
    match_type, match_length = _TYPE_LENGTH.unpack_from(data, start)
    if match_type != ofp.OFPMT_OXM or match_length < 4 or start + match_length > end:
        return None
    fields: list[tuple[str, Any]] = []
    at, match_end = start + 4, start + match_length
    while at < match_end:
        if match_end - at < 4:
            return None
        oxm_class, field_and_mask, size = _OXM_HEADER.unpack_from(data, at)
        field, masked = field_and_mask >> 1, field_and_mask & 1
        value_at, at = at + 4, at + 4 + size
        if at > match_end:
            return None
        if oxm_class == _OXM_BASIC:
            known = _BASIC_FIELDS.get(field)
            if known is None:
                return None
            name, width, form = known
        elif oxm_class == _OXM_EXPERIMENTER and field == _ONF_TCP_FLAGS and size >= 4:
            if _U32(data, value_at) != _ONF_EXPERIMENTER:
                return None
            name, width, form = "tcp_flags", 2, _U16
            value_at, size = value_at + 4, size - 4
        else:
            return None
        if size != width * (2 if masked else 1):
            return None
        value = form(data, value_at)
        fields.append(_field(name, (value, form(data, value_at + width)) if masked else value))
    at = start + (match_length + 7) // 8 * 8  # the match is padded to 8 bytes
    meters: list[tuple[str, int]] = []
    actions: list[tuple[str, int]] = []
    goto: list[tuple[str, int]] = []
    instructions = _elements(data, at, end)
    if instructions is None:
        return None
    for kind, where, size in instructions:
        if kind == ofp.OFPIT_GOTO_TABLE:
            goto.append(("goto", data[where + 4]))
        elif kind == ofp.OFPIT_METER:
            meters.append(("meter", _U32(data, where + 4)))
        elif kind in (_APPLY, _WRITE, _CLEAR):
            if not _actions(data, where + 8, where + size, actions):
                return None
        else:
            return None
    return FlowSpec(table, priority, tuple(sorted(fields)), (*meters, *actions, *goto), cookie)


def _elements(data: bytes, at: int, end: int) -> list[tuple[int, int, int]] | None:
    """(type, offset, length) of each type-length element (instruction or action, 8 bytes or more) in
    ``data[at:end]``; None when they do not fit it exactly."""
    out = []
    while at < end:
        if end - at < 8:
            return None
        kind, size = _TYPE_LENGTH.unpack_from(data, at)
        if size < 8 or at + size > end:
            return None
        out.append((kind, at, size))
        at += size
    return out


def _actions(data: bytes, at: int, end: int, out: list[tuple[str, int]]) -> bool:
    """Append the output and group actions in ``data[at:end]``; False at any other action."""
    actions = _elements(data, at, end)
    if actions is None:
        return False
    for kind, where, size in actions:
        if kind == _OUTPUT and size == 16:
            port, max_len = _OUTPUT_BODY.unpack_from(data, where + 4)
            out.append(("controller", max_len) if port == ofp.OFPP_CONTROLLER else ("output", port))
        elif kind == _GROUP and size == 8:
            out.append(("group", _U32(data, where + 4)))
        else:
            return False
    return True
