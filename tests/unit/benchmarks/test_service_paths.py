"""The service-paths benchmark's reading of the testbed: which switch ports are the edge uplinks, and the
bytes OVS counted on them."""

from __future__ import annotations

from benchmarks.service_paths import FABRIC, cable_ends, parse_port_bytes
from netmodel.fabric_file import parse_fabric
from netmodel.types import Tier

DUMP_PORTS = """OFPST_PORT reply (OF1.3) (xid=0x2): 3 ports
  port LOCAL: rx pkts=0, bytes=0, drop=0, errs=0, frame=0, over=0, crc=0
           tx pkts=0, bytes=0, drop=0, errs=0, coll=0
           duration=12.345s
  port  1: rx pkts=10, bytes=1500, drop=0, errs=0, frame=0, over=0, crc=0
           tx pkts=20, bytes=2500, drop=0, errs=0, coll=0
           duration=12.345s
  port  12: rx pkts=1, bytes=60, drop=0, errs=0, frame=0, over=0, crc=0
           tx pkts=0, bytes=0, drop=0, errs=0, coll=0
"""


def test_port_bytes_are_rx_plus_tx_per_openflow_port() -> None:
    assert parse_port_bytes(DUMP_PORTS) == {1: 4000, 12: 60}


def test_the_edge_uplinks_are_the_edge_ends_of_the_cables_into_the_metro_ring() -> None:
    spec = parse_fabric(FABRIC.read_bytes(), str(FABRIC))
    uplinks = cable_ends(spec, {Tier.EDGE}, {Tier.METRO, Tier.CLOUD})
    assert sorted(end.link for end in uplinks) == ["ea1-m1", "ea1-m2", "eb1-m2", "eb1-m3", "ec1-m1", "ec1-m3"]
    assert {end.bridge for end in uplinks} == {"ea1", "eb1", "ec1"}
    ports = {(c.a, c.b): (int(c.a_port), int(c.b_port)) for c in spec.cables}
    assert next(e.port for e in uplinks if e.link == "ea1-m1") == ports[("ea1", "m1")][0]
    cloud = cable_ends(spec, {Tier.METRO}, {Tier.CLOUD})
    assert sorted(end.link for end in cloud) == ["m1-c1", "m3-c2"]
