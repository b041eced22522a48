"""The few frames the controller itself builds and reads: LLDP probes and ARP. Pure bytes in/out.

Hand-rolled with struct instead of a packet library: a probe is built and parsed for every port
every second, and the formats are tiny and fixed.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

LLDP_MULTICAST = bytes.fromhex("0180c200000e")
ETH_LLDP = 0x88CC
ETH_ARP = 0x0806
BROADCAST = b"\xff" * 6
EDGECTL_OUI = b"\xec\x00\x01"  # locally chosen; only our own probes carry it
ARP_REQUEST = 1
ARP_REPLY = 2


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!H", (kind << 9) | len(value)) + value


@dataclass(frozen=True, slots=True)
class Probe:
    dpid: int
    port: int
    instance: int  # the controller process that sent it
    seq: int


def build_lldp_probe(probe: Probe, src_mac: str) -> bytes:
    chassis = _tlv(1, b"\x07" + f"dpid:{probe.dpid:016x}".encode())
    port = _tlv(2, b"\x02" + struct.pack("!I", probe.port))
    ttl = _tlv(3, struct.pack("!H", 120))
    ours = _tlv(127, EDGECTL_OUI + b"\x01" + struct.pack("!IQ", probe.instance, probe.seq))
    return (
        LLDP_MULTICAST + mac_bytes(src_mac) + struct.pack("!H", ETH_LLDP) + chassis + port + ttl + ours + _tlv(0, b"")
    )


def parse_lldp_probe(frame: bytes) -> Probe | None:
    """Our probe's fields, or None for anything else (another LLDP speaker, garbage)."""
    if len(frame) < 14 or struct.unpack_from("!H", frame, 12)[0] != ETH_LLDP:
        return None
    offset = 14
    dpid = port = instance = seq = None
    while offset + 2 <= len(frame):
        (header,) = struct.unpack_from("!H", frame, offset)
        kind, length = header >> 9, header & 0x1FF
        value = frame[offset + 2 : offset + 2 + length]
        if len(value) != length:
            return None
        offset += 2 + length
        if kind == 0:
            break
        if kind == 1 and value[:1] == b"\x07" and value[1:6] == b"dpid:":
            try:
                dpid = int(value[6:].decode(), 16)
            except (UnicodeDecodeError, ValueError):
                return None
        elif kind == 2 and value[:1] == b"\x02" and length == 5:
            (port,) = struct.unpack("!I", value[1:])
        elif kind == 127 and value[:4] == EDGECTL_OUI + b"\x01" and length == 16:
            instance, seq = struct.unpack("!IQ", value[4:])
    if dpid is None or port is None or instance is None or seq is None:
        return None
    return Probe(dpid, port, instance, seq)


@dataclass(frozen=True, slots=True)
class Arp:
    op: int
    sender_mac: str
    sender_ip: str
    target_mac: str
    target_ip: str


def parse_arp(frame: bytes) -> Arp | None:
    if len(frame) < 42 or struct.unpack_from("!H", frame, 12)[0] != ETH_ARP:
        return None
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, 14)
    if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4) or op not in (ARP_REQUEST, ARP_REPLY):
        return None
    sha, spa, tha, tpa = frame[22:28], frame[28:32], frame[32:38], frame[38:42]
    return Arp(op, mac_str(sha), str(ipaddress.IPv4Address(spa)), mac_str(tha), str(ipaddress.IPv4Address(tpa)))


def build_arp(arp: Arp, eth_dst: str) -> bytes:
    header = mac_bytes(eth_dst) + mac_bytes(arp.sender_mac) + struct.pack("!H", ETH_ARP)
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, arp.op)
    body += mac_bytes(arp.sender_mac) + ipaddress.IPv4Address(arp.sender_ip).packed
    body += mac_bytes(arp.target_mac) + ipaddress.IPv4Address(arp.target_ip).packed
    return header + body


def arp_reply(request: Arp, answer_mac: str) -> bytes:
    """The reply ``request``'s sender would get from the owner of the target address."""
    reply = Arp(ARP_REPLY, answer_mac, request.target_ip, request.sender_mac, request.sender_ip)
    return build_arp(reply, request.sender_mac)
