"""Flow-stats replies read fast (adapter): each entry as edgectl's FlowSpec and its counters, os-ken parsing
each distinct flow once.

The drift check reads every flow of every switch each period and the ACL counters every drop flow. Parsed by
os-ken (an object per OXM field, instruction and action, per flow per read) that was most of a busy
controller's CPU at rest: ~60 % of a core with 50 switches and 1,000 workloads (a py-spy profile of
``benchmarks/scale.py``). A flow's identity (table, priority, cookie, match and instructions) repeats from
one read to the next, and a route flow from switch to switch: os-ken decodes it once and the FlowSpec is
remembered by those bytes; a later read of it costs a slice and a lookup. Only the counters are read each
time. What os-ken would refuse is refused the same way: a miss is os-ken's own parse of the entry.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from os_ken.ofproto import ofproto_parser, ofproto_v1_3, ofproto_v1_3_parser

from sdnctl.flows import FlowSpec

ofp = ofproto_v1_3
_MULTIPART = struct.Struct(ofp.OFP_MULTIPART_REPLY_PACK_STR)  # type, flags (after the 8-byte header)
_ENTRY = struct.Struct(ofp.OFP_FLOW_STATS_0_PACK_STR)  # ofp_flow_stats up to its match
_MIN_ENTRY = ofp.OFP_FLOW_STATS_0_SIZE + 8  # with the smallest match (type, length, padding)
KNOWN_LIMIT = 1 << 16
"""Distinct flows remembered; past that the memory starts over (a read then costs what os-ken's parse does)."""


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
    """Parses OpenFlow 1.3 flow-stats replies into ``FlowStat`` entries, remembering each distinct flow.
    Shared by every connection's receive thread (dict reads and writes are atomic)."""

    def __init__(self, limit: int = KNOWN_LIMIT) -> None:
        self._known: dict[tuple[int, int, int, bytes], FlowSpec] = {}
        self._limit = limit
        self.misses = 0

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
        known = self._known
        offset = ofp.OFP_MULTIPART_REPLY_SIZE
        while offset < msg_len:
            if msg_len - offset < _MIN_ENTRY:
                raise ValueError(
                    f"flow stats entry at {offset}: {msg_len - offset} bytes left, fewer than {_MIN_ENTRY}"
                )
            length, table_id, _, _, priority, _, _, _, cookie, packets, octets = _ENTRY.unpack_from(data, offset)
            if length < _MIN_ENTRY or offset + length > msg_len:
                raise ValueError(f"flow stats entry at {offset}: length {length} does not fit in {msg_len}")
            key = (table_id, priority, cookie, data[offset + ofp.OFP_FLOW_STATS_0_SIZE : offset + length])
            spec = known.get(key)
            if spec is None:
                spec = flow_spec_of(ofproto_v1_3_parser.OFPFlowStats.parser(data, offset))
                self.misses += 1
                if len(known) >= self._limit:
                    known.clear()
                known[key] = spec
            body.append(FlowStat(spec, packets, octets))
            offset += length
        msg = ofproto_parser.MsgBase.parser.__func__(  # the header fields and buffer, as os-ken sets them
            ofproto_v1_3_parser.OFPFlowStatsReply, datapath, version, msg_type, msg_len, xid, buf
        )
        msg.type = kind
        msg.flags = flags
        msg.body = body
        return msg
