"""Table writes (FlowMods, GroupMods, MeterMods) as os-ken builds them, and as bytes serialized once per spec
and command (adapter).

Building a FlowMod with os-ken (an object per match field, instruction and action) and serializing it cost
~50 us; a first install of 1,000 workloads' routes and ACL is ~2,200 FlowMods per switch, and it kept a
50-switch controller's route engine busy for tens of seconds (a py-spy profile of ``benchmarks/scale.py``).
A table repeats its route flows on every switch, and a reinstall repeats them all: each (command, spec)
is serialized once, by os-ken, and only the transaction id is written into a copy of those bytes when sent.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from sdnctl.flows import FlowSpec, GroupSpec, MeterSpec

ofp = ofproto_v1_3
METER_FLAGS = ofp.OFPMF_KBPS | ofp.OFPMF_BURST | ofp.OFPMF_STATS
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
    return _serialized(flow_mod(ofproto_v1_3_parser, command, flow, _SERIALIZER))


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
