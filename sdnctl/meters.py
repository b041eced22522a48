"""Bandwidth reservations in the switches: OpenFlow 1.3 meters and the flows that use them. Pure.

From a ``netmodel.bandwidth.ReservationPlan``, per switch (``compile_reservations``):

- per reservation with links, at every switch of its path, a forwarding flow (table 1, priority 200,
  above the routes) matching its TCP traffic exactly (``eth_type, ip_proto=6, ipv4_src, ipv4_dst`` and
  ``tcp_dst`` or ``tcp_src`` = the instance's port) out along the reserved path; at the first switch
  the flow first goes through the reservation's own meter (rate = the reservation, one DROP band), so
  nothing enters the path faster than it reserved;
- best-effort policing: for every link L with anything reserved, at L's source switch a meter
  ``0x30000 + L.src_port`` of rate ``capacity - reserved`` (at least 64 kbit/s), and every IPv4 route
  flow of that switch whose primary next hop leaves by that port goes through it first
  (``sdnctl.flows.police``). So the reserved traffic plus everything else never exceeds the link.

DROP is the only band type OVS's userspace datapath implements, so best effort is capped at what is
left over even while a reservation is idle: reservations are not work-conserving.

Meter ids are derived, not allocated, so a restarted controller computes the ids a switch already
holds: a reservation's meter is ``crc32(demand key)`` folded into ``[1, 0x30000)``; when two keys of
one switch fold to the same id, the keys in (id, key) order take the next free id upward (wrapping).
Best-effort meters are ``0x30000 + port``. Cookies: ``0xec04 << 48 | crc32(demand key)``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from netmodel.bandwidth import Reservation, ReservationPlan
from netmodel.ids import PortNo, SwitchId
from sdnctl.acl import is_acl_key
from sdnctl.flows import (
    BASE_KEY,
    ETH_TYPE_IPV4,
    TABLE_FORWARD,
    Action,
    CompiledSwitch,
    Entry,
    FlowSpec,
    MeterSpec,
    SwitchDelta,
    diff_meters,
    merge_deltas,
    police,
    replace_entries,
)

__all__ = [
    "COOKIE_RESERVATION",
    "EMPTY_PART",
    "MeterSpec",
    "SwitchReservations",
    "compile_reservations",
    "meter_spec",
    "reservation_meter_ids",
    "with_reservations",
]

COOKIE_RESERVATION = 0xEC04_0000_0000_0000  # | crc32 of the demand key
COOKIE_RESERVATION_MASK = 0xFFFF_0000_0000_0000
PRIORITY_RESERVATION = 200
IP_PROTO_TCP = 6
RESERVATION_METER_END = 0x30000  # reservations' meters: [1, 0x30000)
BEST_EFFORT_METER_BASE = 0x30000  # best-effort meter of port p: 0x30000 + p
OFPM_MAX = 0xFFFF_0000  # the last meter id OpenFlow 1.3 allows
MIN_BEST_EFFORT_MBPS = 0.064  # a link fully reserved still lets a trickle of best effort through
# Burst: the bucket a meter may spend at once, as seconds of its rate. Measured here (OVS 3.1 userspace
# datapath, one netdev bridge between two namespaces, a 10 Mbit/s meter, 1500-byte packets; docs/bandwidth.md):
# - UDP offered at 20 Mbit/s, 5 s: without the BURST flag OVS makes the bucket one second of the rate
#   (11.2-11.6 Mbit/s of payload delivered, +15 %); a bucket smaller than one frame (10 kbit) passes
#   nothing; 100 kbit (10 ms) and 500 kbit (50 ms) deliver 9.73 and 9.77 (the rate, less 1472/1514 of
#   headers): the bucket does not matter to an unresponsive flow beyond its first second.
# - One TCP stream (iperf): the meter drops a whole bucketful at once and TCP waits for a retransmit
#   timeout each time, so goodput is about 4.7 buckets per second until it reaches the rate: 0.45, 2.4
#   and 4.7 Mbit/s for 10, 50 and 100 ms; 9.2 for 200 ms (96 % of the 9.56 TCP payload a 10 Mbit/s
#   meter lets through); 9.46 for 500 ms (99 %), over 20 s (the first bucket taken out).
# So half a second for a reservation's meter: a reserved TCP flow gets its rate; the price is that a
# reserved flow idle for a while may send half a second of its rate at once.
BURST_S = 0.5
# Best effort is held to what a link's reservations leave, and the link's queue is shared with the
# reserved flows: a bucket of half a second let the unreserved traffic of e1's 20 Mbit/s uplink (the
# bandwidth lab, UDP at twice the uplink) keep the queue full, and round trips beside the reserved flow
# rose to 80 ms p99 (46 of 400 lost); 10 ms of the rate kept them at the idle path's (benchmarks/bandwidth.py).
# Unreserved TCP through so small a bucket gets well below what is left (a few buckets a second, above).
BEST_EFFORT_BURST_S = 0.01
# Best effort gets what the reservations leave less 5 % of the link: with the link exactly full, its queue
# has no room to drain and grows on any unevenness (the lab's round trips beside a reserved flow: 80 ms).
BEST_EFFORT_HEADROOM = 0.05
MIN_BURST_KB = 24  # two 1500-byte frames: a bucket smaller than a frame would drop every frame
ENTRY_PREFIX = "bw:"  # a switch's reservation entries: bw:<demand key>


@dataclass(frozen=True, slots=True)
class SwitchReservations:
    """A switch's part of the reservations: its reservation flows as entries, its meters, and which
    ports' route flows are policed by which best-effort meter."""

    entries: Mapping[str, Entry] = field(default_factory=lambda: MappingProxyType({}))
    meters: frozenset[MeterSpec] = frozenset()
    policed: Mapping[PortNo, int] = field(default_factory=lambda: MappingProxyType({}))
    meter_ids: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    """The meter of each reservation (by demand key) that enters the fabric at this switch."""


EMPTY_PART = SwitchReservations()


def is_reservation_key(key: str) -> bool:
    return key.startswith(ENTRY_PREFIX)


def reservation_cookie(key: str) -> int:
    return COOKIE_RESERVATION | zlib.crc32(key.encode())


def meter_spec(meter_id: int, mbps: float, burst_s: float = BURST_S) -> MeterSpec:
    """A meter of ``mbps`` with the burst chosen by measurement (``BURST_S``; ``BEST_EFFORT_BURST_S``)."""
    rate_kbps = max(1, round(mbps * 1000))
    return MeterSpec(meter_id, rate_kbps, max(MIN_BURST_KB, round(rate_kbps * burst_s)))


def _base_meter_id(key: str) -> int:
    return zlib.crc32(key.encode()) % (RESERVATION_METER_END - 1) + 1


def reservation_meter_ids(keys: Iterable[str]) -> dict[str, int]:
    """The meter id of each demand key at one switch: its hash, the next free id on a collision (keys
    in (hash, key) order). The same keys always get the same ids, whatever order they come in."""
    ids: dict[str, int] = {}
    taken: set[int] = set()
    for base, key in sorted((_base_meter_id(key), key) for key in set(keys)):
        meter_id = base
        while meter_id in taken:
            meter_id = meter_id % (RESERVATION_METER_END - 1) + 1
        taken.add(meter_id)
        ids[key] = meter_id
    return ids


def _match(reservation: Reservation) -> tuple[tuple[str, object], ...]:
    demand = reservation.demand
    field_name, port = demand.l4
    return tuple(
        sorted(
            (
                ("eth_type", ETH_TYPE_IPV4),
                ("ip_proto", IP_PROTO_TCP),
                ("ipv4_src", demand.src_ip),
                ("ipv4_dst", demand.dst_ip),
                (field_name, port),
            )
        )
    )


def compile_reservations(plan: ReservationPlan) -> dict[SwitchId, SwitchReservations]:
    """Every switch's part of ``plan`` (switches with nothing to do are left out)."""
    with_path = [r for r in plan.reservations if r.links]
    at_ingress: dict[SwitchId, list[str]] = {}
    for reservation in with_path:
        at_ingress.setdefault(reservation.switches[0], []).append(reservation.demand.key)
    meter_ids = {dpid: reservation_meter_ids(keys) for dpid, keys in at_ingress.items()}
    entries: dict[SwitchId, dict[str, Entry]] = {}
    meters: dict[SwitchId, set[MeterSpec]] = {}
    matched: set[tuple[SwitchId, tuple[tuple[str, object], ...]]] = set()
    for reservation in with_path:
        demand = reservation.demand
        match = _match(reservation)
        cookie = reservation_cookie(demand.key)
        hops = [link.src_port for link in reservation.links] + [reservation.out_port]
        for position, (dpid, port) in enumerate(zip(reservation.switches, hops, strict=True)):
            if (dpid, match) in matched:
                continue  # one match, one flow: the first reservation of it (in plan order) holds it
            matched.add((dpid, match))
            actions: tuple[Action, ...] = (("output", port),)
            if position == 0:
                meter_id = meter_ids[dpid][demand.key]
                meters.setdefault(dpid, set()).add(meter_spec(meter_id, demand.mbps))
                actions = (("meter", meter_id), *actions)
            flow = FlowSpec(TABLE_FORWARD, PRIORITY_RESERVATION, match, actions, cookie)
            entries.setdefault(dpid, {})[ENTRY_PREFIX + demand.key] = ((flow,), None)
    policed: dict[SwitchId, dict[PortNo, int]] = {}
    for link, reserved in plan.links().items():
        capacity = plan.capacity_mbps.get(link, 0.0)
        left = max(capacity * (1.0 - BEST_EFFORT_HEADROOM) - reserved, MIN_BEST_EFFORT_MBPS)
        meter_id = BEST_EFFORT_METER_BASE + link.src_port
        if meter_id > OFPM_MAX:
            continue  # a port number no meter id can follow (OpenFlow's reserved range): not policed
        meters.setdefault(link.src, set()).add(meter_spec(meter_id, left, BEST_EFFORT_BURST_S))
        policed.setdefault(link.src, {})[link.src_port] = meter_id
    return {
        dpid: SwitchReservations(
            MappingProxyType(entries.get(dpid, {})),
            frozenset(meters.get(dpid, ())),
            MappingProxyType(policed.get(dpid, {})),
            MappingProxyType(meter_ids.get(dpid, {})),
        )
        for dpid in entries.keys() | meters.keys()
    }


def _is_route_key(key: str) -> bool:
    return key != BASE_KEY and not is_acl_key(key) and not is_reservation_key(key)


def with_reservations(compiled: CompiledSwitch, part: SwitchReservations) -> tuple[CompiledSwitch, SwitchDelta]:
    """A switch's tables with its reservation part replaced by ``part`` (reservation entries, meters,
    and the route flows' best-effort meters), and the delta of what changed."""
    changes: dict[str, Entry | None] = {key: None for key in compiled.entries if is_reservation_key(key)}
    changes.update(part.entries)
    if dict(part.policed) != dict(compiled.policed):
        for key, entry in compiled.entries.items():
            if _is_route_key(key):
                policed = police(entry, part.policed)
                if policed != entry:
                    changes[key] = policed
    new, delta = replace_entries(compiled, changes)
    add_meters, modify_meters, delete_meters = diff_meters(compiled.meters, part.meters)
    if new is compiled and not (add_meters or modify_meters or delete_meters) and compiled.policed == part.policed:
        return compiled, SwitchDelta()
    meters_delta = SwitchDelta(add_meters=add_meters, modify_meters=modify_meters, delete_meters=delete_meters)
    return CompiledSwitch(new.entries, part.meters, part.policed), merge_deltas(delta, meters_delta)
