"""Flow-stats replies read by ``sdnctl.flow_stats``: the same flows and counters as os-ken's own parser gives,
on the bytes os-ken serializes (every match field, instruction and action edgectl writes, and a foreign
one), each distinct flow parsed once, and bad entries refused as os-ken's parse refuses them."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from test_sdnctl_openflow_metrics import FakeDatapath

from sdnctl import table_writes
from sdnctl.flows import FlowSpec

ROUTE = FlowSpec(
    1, 100, (("eth_type", 0x0800), ("ipv4_dst", "10.0.0.7")), (("group", 0x0A000007),), 0xEC00_0000_0A00_0007
)
ARP = FlowSpec(
    1,
    100,
    (("arp_tpa", "10.0.0.7"), ("eth_type", 0x0806)),
    (("group", 7), ("controller", 0xFFFF)),
    0xEC02_0000_0A00_0007,
)
LOCAL = FlowSpec(1, 100, (("eth_type", 0x0800), ("ipv4_dst", "10.0.0.1")), (("output", 3),), 0xEC00_0000_0A00_0001)
LLDP = FlowSpec(0, 1000, (("eth_type", 0x88CC),), (("controller", 0xFFFF),), 0xEC01_0000_0000_0001)
TO_FORWARD = FlowSpec(0, 0, (), (("goto", 1),), 0xEC01_0000_0000_0003)
GUARD = FlowSpec(
    0,
    300,
    (("arp_sha", "00:00:00:00:00:01"), ("arp_spa", "10.0.0.1"), ("eth_src", "00:00:00:00:00:01"), ("in_port", 3)),
    (("goto", 1),),
    0xEC05_0000_0000_0001,
)
DENY = FlowSpec(
    0,
    500,
    (
        ("eth_type", 0x0800),
        ("ip_proto", 6),
        ("ipv4_dst", "10.0.0.9"),
        ("ipv4_src", "10.0.0.1"),
        ("tcp_dst", 9090),
        ("tcp_flags", (0x002, 0x012)),
    ),
    (),
    0xEC06_0000_0000_0001,
)
METERED = FlowSpec(
    1, 200, (("eth_type", 0x0800), ("ipv4_dst", "10.0.0.10")), (("meter", 7), ("output", 3)), 0xEC04_0000_0000_0001
)
FLOWS = (ROUTE, ARP, LOCAL, LLDP, TO_FORWARD, GUARD, DENY, METERED)


@pytest.fixture(scope="module")
def openflow() -> Any:
    import os

    os.environ.setdefault("OSKEN_HUB_TYPE", "native")
    from os_ken.base import app_manager  # noqa: F401, I001 - must come first (os-ken circular import)
    from sdnctl import openflow

    return openflow


def entry_bytes(openflow: Any, flow: FlowSpec, packets: int, extra_instructions: tuple[Any, ...] = ()) -> bytes:
    """One ofp_flow_stats entry for ``flow`` as a switch sends it: os-ken serializes its match and instructions."""
    datapath = FakeDatapath(1)
    parser, ofp = datapath.ofproto_parser, datapath.ofproto
    mod = table_writes.flow_mod(parser, ofp.OFPFC_ADD, flow, datapath)
    entry = bytearray(ofp.OFP_FLOW_STATS_0_SIZE)
    offset = ofp.OFP_FLOW_STATS_0_SIZE + mod.match.serialize(entry, ofp.OFP_FLOW_STATS_0_SIZE)
    for instruction in (*mod.instructions, *extra_instructions):
        instruction.serialize(entry, offset)
        offset += instruction.len
    struct.pack_into(
        ofp.OFP_FLOW_STATS_0_PACK_STR,
        entry,
        0,
        offset,  # length
        flow.table,
        12,  # duration (s, ns)
        34,
        flow.priority,
        0,  # idle and hard timeouts, flags
        0,
        0,
        flow.cookie,
        packets,
        packets * 100,  # bytes
    )
    return bytes(entry[:offset])


def reply_bytes(entries: list[bytes], xid: int = 9, flags: int = 0) -> bytes:
    body = b"".join(entries)
    header = struct.pack("!BBHI", 4, 19, 16 + len(body), xid) + struct.pack("!HH4x", 1, flags)
    return header + body


def both(openflow: Any, data: bytes, reader: Any) -> tuple[Any, Any]:
    from os_ken.ofproto import ofproto_v1_3_parser

    datapath = FakeDatapath(1)
    version, msg_type, msg_len, xid = struct.unpack_from("!BBHI", data)
    ours = reader.parse(datapath, version, msg_type, msg_len, xid, bytearray(data))
    theirs = ofproto_v1_3_parser.msg_parser(datapath, version, msg_type, msg_len, xid, bytearray(data))
    return ours, theirs


def test_every_flow_edgectl_writes_reads_as_os_ken_reads_it(openflow) -> None:
    from sdnctl.flow_stats import FlowStatsReader, flow_spec_of

    reader = FlowStatsReader()
    data = reply_bytes([entry_bytes(openflow, flow, packets) for packets, flow in enumerate(FLOWS)], flags=1)
    ours, theirs = both(openflow, data, reader)
    assert type(ours) is type(theirs)
    assert (ours.xid, ours.type, ours.flags, ours.msg_len) == (theirs.xid, theirs.type, theirs.flags, theirs.msg_len)
    assert [flow_spec_of(s) for s in ours.body] == [flow_spec_of(s) for s in theirs.body] == list(FLOWS)
    assert [(s.packet_count, s.byte_count) for s in ours.body] == [(s.packet_count, s.byte_count) for s in theirs.body]
    assert reader.misses == len(FLOWS)


def test_a_flow_read_again_or_on_another_switch_is_not_parsed_again_and_its_counters_are_new(openflow) -> None:
    from sdnctl.flow_stats import FlowStatsReader

    reader = FlowStatsReader()
    first, _ = both(openflow, reply_bytes([entry_bytes(openflow, ROUTE, 5)]), reader)
    again, _ = both(openflow, reply_bytes([entry_bytes(openflow, ROUTE, 8), entry_bytes(openflow, ARP, 1)]), reader)
    assert reader.misses == 2  # ROUTE once, ARP once
    assert again.body[0].spec is first.body[0].spec
    assert [s.packet_count for s in again.body] == [8, 1]


def test_a_flow_that_differs_in_any_part_of_its_identity_is_its_own(openflow) -> None:
    from dataclasses import replace

    from sdnctl.flow_stats import FlowStatsReader

    reader = FlowStatsReader()
    variants = [
        ROUTE,
        replace(ROUTE, priority=101),
        replace(ROUTE, table=0),
        replace(ROUTE, cookie=ROUTE.cookie + 1),
        replace(ROUTE, actions=(("group", 8),)),
        replace(ROUTE, match=(("eth_type", 0x0800), ("ipv4_dst", "10.0.0.8"))),
    ]
    ours, _ = both(openflow, reply_bytes([entry_bytes(openflow, flow, 1) for flow in variants]), reader)
    assert [s.spec for s in ours.body] == variants


def test_an_action_edgectl_never_writes_reads_as_foreign(openflow) -> None:
    from sdnctl.flow_stats import FlowStatsReader, flow_spec_of

    datapath = FakeDatapath(1)
    parser, ofp = datapath.ofproto_parser, datapath.ofproto
    pop = parser.OFPInstructionActions(ofp.OFPIT_WRITE_ACTIONS, [parser.OFPActionPopVlan()])
    ours, theirs = both(openflow, reply_bytes([entry_bytes(openflow, LOCAL, 1, (pop,))]), FlowStatsReader())
    assert flow_spec_of(ours.body[0]) == flow_spec_of(theirs.body[0])
    assert ("foreign", ofp.OFPAT_POP_VLAN) in ours.body[0].spec.actions


def test_the_memory_starts_over_at_its_limit_and_reads_stay_right(openflow) -> None:
    from sdnctl.flow_stats import FlowStatsReader

    reader = FlowStatsReader(limit=2)
    for _ in range(2):
        ours, _ = both(openflow, reply_bytes([entry_bytes(openflow, flow, 1) for flow in FLOWS]), reader)
        assert [s.spec for s in ours.body] == list(FLOWS)


def test_other_messages_are_left_to_os_ken(openflow) -> None:
    from sdnctl.flow_stats import FlowStatsReader

    reader = FlowStatsReader()
    port_stats = struct.pack("!BBHI", 4, 19, 16, 1) + struct.pack("!HH4x", 4, 0)
    assert reader.parse(FakeDatapath(1), 4, 19, 16, 1, bytearray(port_stats)) is None
    flow_stats_1_0 = reply_bytes([])
    assert reader.parse(FakeDatapath(1), 1, 19, 16, 9, bytearray(flow_stats_1_0)) is None
    echo = struct.pack("!BBHI", 4, 2, 8, 1)
    assert reader.parse(FakeDatapath(1), 4, 2, 8, 1, bytearray(echo)) is None
    empty, theirs = both(openflow, reply_bytes([]), reader)
    assert empty.body == [] == theirs.body


@pytest.mark.parametrize(
    ("cut", "why"),
    [
        (lambda e: e[:40], "bytes left"),  # shorter than any entry
        (lambda e: struct.pack("!H", 20) + e[2:], "does not fit"),  # says it is shorter than an entry can be
        (lambda e: struct.pack("!H", len(e) + 64) + e[2:], "does not fit"),  # says more than the reply holds
    ],
)
def test_an_entry_whose_length_does_not_add_up_is_refused(openflow, cut: Any, why: str) -> None:
    from sdnctl.flow_stats import FlowStatsReader

    data = reply_bytes([cut(entry_bytes(openflow, ROUTE, 1))])
    version, msg_type, msg_len, xid = struct.unpack_from("!BBHI", data)
    with pytest.raises(ValueError, match=why):
        FlowStatsReader().parse(FakeDatapath(1), version, msg_type, msg_len, xid, bytearray(data))


def test_a_bad_match_inside_a_well_sized_entry_is_refused_as_os_ken_refuses_it(openflow) -> None:
    from sdnctl.flow_stats import FlowStatsReader

    entry = bytearray(entry_bytes(openflow, ROUTE, 1))
    struct.pack_into("!H", entry, 50, 200)  # the match claims 200 bytes, past the entry and the reply
    data = reply_bytes([bytes(entry)])
    version, msg_type, msg_len, xid = struct.unpack_from("!BBHI", data)
    with pytest.raises(Exception):  # noqa: B017 - whatever os-ken's parse raises (strict_msg wraps it)
        FlowStatsReader().parse(FakeDatapath(1), version, msg_type, msg_len, xid, bytearray(data))
