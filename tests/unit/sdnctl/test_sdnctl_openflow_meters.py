"""The os-ken adapter's side of meters, with os-ken's real message classes: MeterMods as written, meter
instructions first in a FlowMod and read back into the same FlowSpec, meters read back as written (any
other shape as foreign), and the meters' counters polled into ``meter_counts``."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from test_sdnctl_openflow_metrics import FakeDatapath, app_with

from sdnctl import table_writes
from sdnctl.flows import FlowSpec, MeterSpec


@pytest.fixture(scope="module")
def openflow() -> Any:
    import os

    os.environ.setdefault("OSKEN_HUB_TYPE", "native")
    from os_ken.base import app_manager  # noqa: F401, I001 - must come first (os-ken circular import)
    from sdnctl import openflow

    return openflow


def test_a_metered_flow_is_written_meter_first_and_reads_back_equal(openflow) -> None:
    datapath = FakeDatapath(1)
    parser, ofp = datapath.ofproto_parser, datapath.ofproto
    flow = FlowSpec(
        1,
        200,
        (("eth_type", 0x0800), ("ip_proto", 6), ("ipv4_dst", "10.0.0.10"), ("ipv4_src", "10.0.0.1"), ("tcp_dst", 80)),
        (("meter", 7), ("output", 3)),
        0xEC04_0000_0000_0001,
    )
    mod = table_writes.flow_mod(parser, ofp.OFPFC_ADD, flow, datapath)
    assert [type(i).__name__ for i in mod.instructions] == ["OFPInstructionMeter", "OFPInstructionActions"]
    assert mod.instructions[0].meter_id == 7
    mod.serialize()  # valid on the wire
    stat = parser.OFPFlowStats(
        table_id=1, priority=200, cookie=flow.cookie, match=mod.match, instructions=mod.instructions
    )
    assert openflow.flow_spec_of(stat) == flow


def test_meter_mods_carry_one_drop_band_in_kbps_with_a_burst_and_delete_carries_none(openflow) -> None:
    datapath = FakeDatapath(1)
    parser, ofp = datapath.ofproto_parser, datapath.ofproto
    meter = MeterSpec(0x30002, 6000, 3000)
    add = table_writes.meter_mod(parser, ofp.OFPMC_ADD, meter, datapath)
    assert add.meter_id == 0x30002 and add.flags & ofp.OFPMF_KBPS and add.flags & ofp.OFPMF_BURST
    ((band,),) = [add.bands]
    assert (band.type, band.rate, band.burst_size) == (ofp.OFPMBT_DROP, 6000, 3000)
    add.serialize()
    delete = table_writes.meter_mod(parser, ofp.OFPMC_DELETE, meter, datapath)
    assert delete.command == ofp.OFPMC_DELETE and delete.bands == []


def test_a_meter_reads_back_as_written_and_any_other_shape_as_foreign(openflow) -> None:
    datapath = FakeDatapath(1)
    parser, ofp = datapath.ofproto_parser, datapath.ofproto
    ours = parser.OFPMeterConfigStats(
        flags=table_writes.METER_FLAGS, meter_id=5, bands=[parser.OFPMeterBandDrop(rate=4000, burst_size=2000)]
    )
    assert openflow._meter_spec(ours) == MeterSpec(5, 4000, 2000)
    pktps = parser.OFPMeterConfigStats(
        flags=ofp.OFPMF_PKTPS | ofp.OFPMF_BURST, meter_id=5, bands=[parser.OFPMeterBandDrop(rate=4000, burst_size=2000)]
    )
    two_bands = parser.OFPMeterConfigStats(
        flags=table_writes.METER_FLAGS,
        meter_id=5,
        bands=[parser.OFPMeterBandDrop(rate=4000, burst_size=2000), parser.OFPMeterBandDrop(rate=1, burst_size=1)],
    )
    remark = parser.OFPMeterConfigStats(
        flags=table_writes.METER_FLAGS, meter_id=5, bands=[parser.OFPMeterBandDscpRemark(rate=4000, burst_size=2000)]
    )
    for other in (pktps, two_bands, remark):
        assert openflow._meter_spec(other) == MeterSpec(5, 0, 0)


def meter_stats_reply(app: Any, dpid: int, *meters: tuple[int, int, int, int], more: bool = False) -> Any:
    datapath = app.switches[dpid].datapath
    parser = datapath.ofproto_parser
    msg = parser.OFPMeterStatsReply(datapath)
    msg.flags = datapath.ofproto.OFPMPF_REPLY_MORE if more else 0
    msg.body = [
        parser.OFPMeterStats(
            meter_id=meter_id,
            packet_in_count=packets,
            byte_in_count=size,
            band_stats=[parser.OFPMeterBandStats(dropped, dropped * 1500)],
        )
        for meter_id, packets, size, dropped in meters
    ]
    return SimpleNamespace(msg=msg)


def test_meter_counters_are_polled_per_switch_and_a_deleted_meter_goes(openflow) -> None:
    app = app_with(openflow, 1, 2)
    app._meters_by_switch = {}
    app._meter_reads = {}
    app.request_meter_stats()
    for dpid in (1, 2):
        (request,) = app.switches[dpid].datapath.sent
        assert type(request).__name__ == "OFPMeterStatsRequest" and request.meter_id == openflow.ofp.OFPM_ALL
    app._meter_stats_reply(meter_stats_reply(app, 1, (5, 10, 15_000, 2), (6, 1, 100, 0), more=True))
    assert app.meter_counts == {}, "a multipart answer counts once complete"
    app._meter_stats_reply(meter_stats_reply(app, 1, (0x30001, 3, 300, 0)))
    app._meter_stats_reply(meter_stats_reply(app, 2, (5, 1, 1, 1)))
    assert set(app.meter_counts) == {(1, 5), (1, 6), (1, 0x30001), (2, 5)}
    assert app.meter_counts[(1, 5)] == openflow.MeterCounts(10, 15_000, 2, 3_000)
    app._meter_stats_reply(meter_stats_reply(app, 1, (5, 20, 30_000, 4)))
    assert set(app.meter_counts) == {(1, 5), (2, 5)}, "meter 6 and 0x30001 of switch 1 are gone"
    assert app.meter_counts[(1, 5)].packets == 20
