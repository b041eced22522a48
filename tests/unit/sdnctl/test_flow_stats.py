"""Flow-stats replies read by ``sdnctl.flow_stats``: the same flows and counters as os-ken's own parser gives,
on the bytes os-ken serializes (every match field, instruction and action edgectl writes, masked fields,
random flows of them; anything else left to os-ken), and bad entries refused."""

from __future__ import annotations

import struct
from collections.abc import Callable
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
    assert reader.fallbacks == 0, "every flow edgectl writes is decoded without os-ken"


def test_each_read_takes_the_counters_of_that_read(openflow) -> None:
    from sdnctl.flow_stats import FlowStatsReader

    reader = FlowStatsReader()
    first, _ = both(openflow, reply_bytes([entry_bytes(openflow, ROUTE, 5)]), reader)
    again, _ = both(openflow, reply_bytes([entry_bytes(openflow, ROUTE, 8), entry_bytes(openflow, ARP, 1)]), reader)
    assert [s.packet_count for s in first.body] == [5]
    assert [(s.spec, s.packet_count) for s in again.body] == [(ROUTE, 8), (ARP, 1)]


def test_flows_of_a_read_share_their_addresses_and_match_fields(openflow) -> None:
    """A read holds a switch's whole table: an address or match field many flows have is one object."""
    from sdnctl.flow_stats import FlowStatsReader

    other = FlowSpec(DENY.table, DENY.priority + 1, DENY.match, DENY.actions, DENY.cookie)
    read, _ = both(
        openflow, reply_bytes([entry_bytes(openflow, DENY, 1), entry_bytes(openflow, other, 2)]), FlowStatsReader()
    )
    first, second = (stat.spec for stat in read.body)
    assert (first, second) == (DENY, other)
    for mine, theirs in zip(first.match, second.match, strict=True):
        assert mine is theirs


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


def test_an_action_edgectl_never_writes_is_left_to_os_ken_and_reads_as_foreign(openflow) -> None:
    from sdnctl.flow_stats import FlowStatsReader, flow_spec_of

    datapath = FakeDatapath(1)
    parser, ofp = datapath.ofproto_parser, datapath.ofproto
    pop = parser.OFPInstructionActions(ofp.OFPIT_WRITE_ACTIONS, [parser.OFPActionPopVlan()])
    reader = FlowStatsReader()
    ours, theirs = both(openflow, reply_bytes([entry_bytes(openflow, LOCAL, 1, (pop,))]), reader)
    assert flow_spec_of(ours.body[0]) == flow_spec_of(theirs.body[0])
    assert ("foreign", ofp.OFPAT_POP_VLAN) in ours.body[0].spec.actions
    assert reader.fallbacks == 1


def test_a_match_field_edgectl_never_writes_is_left_to_os_ken(openflow) -> None:
    from sdnctl.flow_stats import FlowStatsReader, flow_spec_of

    vlan = FlowSpec(1, 50, (("eth_type", 0x0800), ("vlan_vid", 0x1000 | 7)), (("output", 2),), 0xEC00_0000_0000_0009)
    reader = FlowStatsReader()
    ours, theirs = both(openflow, reply_bytes([entry_bytes(openflow, vlan, 1)]), reader)
    assert flow_spec_of(ours.body[0]) == flow_spec_of(theirs.body[0])
    assert reader.fallbacks == 1


def _mac(rng: Any) -> str:
    return ":".join(f"{rng.randrange(256):02x}" for _ in range(6))


def _ipv4(rng: Any) -> str:
    return ".".join(str(rng.randrange(256)) for _ in range(4))


MASKABLE: dict[str, Callable[[Any], Any]] = {
    "eth_dst": _mac,
    "eth_src": _mac,
    "ipv4_src": _ipv4,
    "ipv4_dst": _ipv4,
    "arp_spa": _ipv4,
    "arp_tpa": _ipv4,
    "arp_sha": _mac,
    "arp_tha": _mac,
    "tcp_flags": lambda rng: rng.randrange(1 << 12),
    "metadata": lambda rng: rng.randrange(1 << 64),
}
PLAIN: dict[str, Callable[[Any], Any]] = {
    "in_port": lambda rng: rng.randrange(1, 1 << 16),
    "eth_type": lambda rng: rng.choice((0x0800, 0x0806)),
    "ip_proto": lambda rng: rng.choice((6, 17)),
    "tcp_src": lambda rng: rng.randrange(1 << 16),
    "tcp_dst": lambda rng: rng.randrange(1 << 16),
    "udp_src": lambda rng: rng.randrange(1 << 16),
    "udp_dst": lambda rng: rng.randrange(1 << 16),
    "arp_op": lambda rng: rng.choice((1, 2)),
}


def random_flow(rng: Any) -> FlowSpec:
    match: dict[str, Any] = {}
    for name in rng.sample(sorted(PLAIN), rng.randrange(0, 4)):
        match[name] = PLAIN[name](rng)
    for name in rng.sample(sorted(MASKABLE), rng.randrange(0, 4)):
        value = MASKABLE[name](rng)
        match[name] = (value, MASKABLE[name](rng)) if rng.random() < 0.4 else value
    actions: list[tuple[str, int]] = []
    if rng.random() < 0.3:
        actions.append(("meter", rng.randrange(1, 1 << 20)))
    for _ in range(rng.randrange(0, 3)):
        kind = rng.choice(("output", "group", "controller"))
        actions.append((kind, 0xFFFF if kind == "controller" else rng.randrange(1, 1 << 20)))
    if rng.random() < 0.3:
        actions.append(("goto", rng.randrange(1, 5)))
    table, priority, cookie = rng.randrange(4), rng.randrange(1 << 16), rng.randrange(1 << 64)
    return FlowSpec(table, priority, tuple(sorted(match.items())), tuple(actions), cookie)


def test_random_flows_of_every_decoded_field_read_as_os_ken_reads_them(openflow) -> None:
    """Masked values come back as os-ken gives them (the value as serialized, that is, masked)."""
    import random

    from sdnctl.flow_stats import FlowStatsReader, flow_spec_of

    rng = random.Random(7)
    reader = FlowStatsReader()
    for _ in range(40):
        flows = [random_flow(rng) for _ in range(10)]
        ours, theirs = both(openflow, reply_bytes([entry_bytes(openflow, flow, 3) for flow in flows]), reader)
        assert [flow_spec_of(s) for s in ours.body] == [flow_spec_of(s) for s in theirs.body]
    assert reader.fallbacks == 0


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
