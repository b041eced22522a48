"""sdnctl.frames: LLDP probes and ARP, bytes in and out; any bytes parse to a value or None, never raise."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from sdnctl.frames import (
    ARP_REPLY,
    ARP_REQUEST,
    BROADCAST,
    ETH_ARP,
    ETH_LLDP,
    LLDP_MULTICAST,
    Arp,
    Probe,
    _tlv,
    arp_reply,
    build_arp,
    build_lldp_probe,
    mac_bytes,
    mac_str,
    parse_arp,
    parse_lldp_probe,
)

SETTINGS = settings(max_examples=200, deadline=None)

probes = st.builds(
    Probe,
    dpid=st.integers(0, 2**64 - 1),
    port=st.integers(0, 2**32 - 1),
    instance=st.integers(0, 2**32 - 1),
    seq=st.integers(0, 2**64 - 1),
)
macs = st.binary(min_size=6, max_size=6).map(mac_str)
ipv4s = st.binary(min_size=4, max_size=4).map(lambda raw: ".".join(str(b) for b in raw))
arps = st.builds(Arp, op=st.sampled_from([ARP_REQUEST, ARP_REPLY]), sender_mac=macs, sender_ip=ipv4s,
                 target_mac=macs, target_ip=ipv4s)  # fmt: skip

SRC_MAC = "02:00:00:00:00:01"
PROBE = Probe(dpid=0x101, port=3, instance=7, seq=42)


# -- LLDP -------------------------------------------------------------------------------------------------


@SETTINGS
@given(probes, macs)
def test_lldp_probe_round_trip(probe: Probe, src_mac: str) -> None:
    frame = build_lldp_probe(probe, src_mac)
    assert frame[:6] == LLDP_MULTICAST and frame[6:12] == mac_bytes(src_mac)
    assert struct.unpack_from("!H", frame, 12)[0] == ETH_LLDP
    assert parse_lldp_probe(frame) == probe
    assert parse_lldp_probe(frame + bytes(20)) == probe  # Ethernet padding after the End TLV


def test_a_probe_carries_a_readable_chassis_id() -> None:
    frame = build_lldp_probe(PROBE, SRC_MAC)
    assert b"dpid:0000000000000101" in frame


def lldp_frame(*tlvs: bytes) -> bytes:
    return LLDP_MULTICAST + mac_bytes(SRC_MAC) + struct.pack("!H", ETH_LLDP) + b"".join(tlvs) + _tlv(0, b"")


def test_another_speakers_lldp_is_not_a_probe() -> None:
    # A switch's own LLDP: chassis id as a MAC (subtype 4), port as an interface name (subtype 5).
    switch = lldp_frame(
        _tlv(1, b"\x04" + mac_bytes(SRC_MAC)), _tlv(2, b"\x05eth1"), _tlv(3, struct.pack("!H", 120)),
        _tlv(5, b"leaf-1"),
    )  # fmt: skip
    assert parse_lldp_probe(switch) is None
    # os-ken's own discovery probe: the same "dpid:" chassis id, but no edgectl TLV.
    osken = lldp_frame(
        _tlv(1, b"\x07dpid:0000000000000101"), _tlv(2, b"\x02" + struct.pack("!I", 3)), _tlv(3, b"\x00\x78")
    )
    assert parse_lldp_probe(osken) is None
    # Someone else's organisation-specific TLV (another OUI) does not count as ours.
    foreign = lldp_frame(
        _tlv(1, b"\x07dpid:0000000000000101"), _tlv(2, b"\x02" + struct.pack("!I", 3)), _tlv(3, b"\x00\x78"),
        _tlv(127, b"\x00\x80\xc2\x01" + struct.pack("!IQ", 7, 42)),
    )  # fmt: skip
    assert parse_lldp_probe(foreign) is None


def test_non_lldp_and_short_frames_are_not_probes() -> None:
    frame = build_lldp_probe(PROBE, SRC_MAC)
    assert parse_lldp_probe(frame[:12] + struct.pack("!H", ETH_ARP) + frame[14:]) is None
    assert parse_lldp_probe(b"") is None
    assert parse_lldp_probe(frame[:13]) is None


def test_every_truncation_of_a_probe_is_rejected() -> None:
    frame = build_lldp_probe(PROBE, SRC_MAC)
    # Cut anywhere before the End TLV: a field is missing or a TLV is shorter than its length says.
    # (Only the 2-byte End TLV itself may be missing: every field is there, so the probe still parses.)
    for cut in range(len(frame) - 2):
        assert parse_lldp_probe(frame[:cut]) is None, cut


def test_a_malformed_chassis_id_is_rejected() -> None:
    bad = lldp_frame(
        _tlv(1, b"\x07dpid:xyz\xff"), _tlv(2, b"\x02" + struct.pack("!I", 3)), _tlv(3, b"\x00\x78"),
        _tlv(127, b"\xec\x00\x01\x01" + struct.pack("!IQ", 7, 42)),
    )  # fmt: skip
    assert parse_lldp_probe(bad) is None


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_parse_to_none_or_a_probe_never_an_exception(raw: bytes) -> None:
    for frame in (raw, LLDP_MULTICAST + mac_bytes(SRC_MAC) + struct.pack("!H", ETH_LLDP) + raw):
        result = parse_lldp_probe(frame)
        assert result is None or isinstance(result, Probe)


@SETTINGS
@given(probes, st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=6))
def test_a_corrupted_probe_never_raises(probe: Probe, flips: list[tuple[int, int]]) -> None:
    frame = bytearray(build_lldp_probe(probe, SRC_MAC))
    for position, value in flips:
        frame[position % len(frame)] = value
    result = parse_lldp_probe(bytes(frame))
    assert result is None or isinstance(result, Probe)


# -- ARP -------------------------------------------------------------------------------------------------------


@SETTINGS
@given(arps, macs)
def test_arp_round_trip(arp: Arp, eth_dst: str) -> None:
    frame = build_arp(arp, eth_dst)
    assert len(frame) == 42
    assert frame[:6] == mac_bytes(eth_dst) and frame[6:12] == mac_bytes(arp.sender_mac)
    assert struct.unpack_from("!H", frame, 12)[0] == ETH_ARP
    assert parse_arp(frame) == arp
    assert parse_arp(frame + bytes(18)) == arp  # padded to the 60-byte Ethernet minimum


def test_mac_strings_are_normalised_to_lower_case() -> None:
    request = Arp(ARP_REQUEST, "02:AB:00:00:00:01", "10.0.0.1", "00:00:00:00:00:00", "10.0.0.2")
    parsed = parse_arp(build_arp(request, "ff:ff:ff:ff:ff:ff"))
    assert parsed is not None and parsed.sender_mac == "02:ab:00:00:00:01"


def test_arp_reply_swaps_the_fields() -> None:
    request = Arp(ARP_REQUEST, "02:00:00:00:00:01", "10.0.1.1", "00:00:00:00:00:00", "10.0.9.10")
    frame = arp_reply(request, "02:00:00:00:09:0a")
    assert frame[:6] == mac_bytes("02:00:00:00:00:01")  # back to the asker, not broadcast
    assert frame[6:12] == mac_bytes("02:00:00:00:09:0a")
    assert parse_arp(frame) == Arp(
        op=ARP_REPLY,
        sender_mac="02:00:00:00:09:0a",
        sender_ip="10.0.9.10",
        target_mac="02:00:00:00:00:01",
        target_ip="10.0.1.1",
    )


@SETTINGS
@given(arps, macs)
def test_arp_reply_answers_any_request(request: Arp, answer_mac: str) -> None:
    reply = parse_arp(arp_reply(request, answer_mac))
    assert reply == Arp(ARP_REPLY, answer_mac, request.target_ip, request.sender_mac, request.sender_ip)


def test_not_arp_is_rejected() -> None:
    good = build_arp(Arp(ARP_REQUEST, SRC_MAC, "10.0.0.1", "00:00:00:00:00:00", "10.0.0.2"), mac_str(BROADCAST))
    assert parse_arp(good) is not None
    assert parse_arp(good[:41]) is None  # truncated
    assert parse_arp(good[:12] + struct.pack("!H", 0x0800) + good[14:]) is None  # IPv4, not ARP
    assert parse_arp(good[:14] + struct.pack("!H", 6) + good[16:]) is None  # not Ethernet hardware
    assert parse_arp(good[:16] + struct.pack("!H", 0x86DD) + good[18:]) is None  # not IPv4 addresses
    assert parse_arp(good[:20] + struct.pack("!H", 3) + good[22:]) is None  # RARP request


@SETTINGS
@given(st.binary(max_size=80))
def test_any_bytes_parse_to_none_or_an_arp_never_an_exception(raw: bytes) -> None:
    for frame in (raw, mac_bytes(SRC_MAC) * 2 + struct.pack("!H", ETH_ARP) + raw):
        result = parse_arp(frame)
        assert result is None or isinstance(result, Arp)
