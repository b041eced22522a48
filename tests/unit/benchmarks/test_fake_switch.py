"""The takeover benchmark's fake switch: Open vSwitch's role rules across several controller connections,
and tables that a controller reads back as it wrote them (messages built and read by os-ken's own parser)."""

from __future__ import annotations

import asyncio
import struct
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from benchmarks import fake_switch as fs

ofp = ofproto_v1_3
parser = ofproto_v1_3_parser
DATAPATH = SimpleNamespace(ofproto=ofp, ofproto_parser=parser, id=0x11)
MINUS_ONE = (1 << 64) - 1  # -1 as a signed 64-bit generation


def wire(msg: Any, xid: int = 7) -> bytes:
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def parsed(data: bytes) -> Any:
    version, kind, length, xid = struct.unpack_from("!BBHI", data)
    # os-ken's own 1.3 parser (``ofproto_parser.msg`` is the controller's strict one once a controller ran here)
    return ofproto_v1_3_parser.msg_parser(DATAPATH, version, kind, length, xid, data)


def role_request(role: int, generation: int) -> bytes:
    return wire(parser.OFPRoleRequest(DATAPATH, role, generation))


def switch(connections: int = 3) -> fs.FakeSwitch:
    sw = fs.FakeSwitch(0x11, {1: "s1-eth1", 2: "s1-eth2"}, connections, clock=lambda: 100.0)
    for conn in range(connections):
        sw.connection_up(conn)
    return sw


def flow_mod(command: int, priority: int = 100, port: int = 2, cookie: int = 0xEC00_0000_0000_0001) -> bytes:
    return wire(
        parser.OFPFlowMod(
            DATAPATH,
            cookie=cookie,
            cookie_mask=0,
            table_id=1,
            command=command,
            priority=priority,
            buffer_id=ofp.OFP_NO_BUFFER,
            out_port=ofp.OFPP_ANY,
            out_group=ofp.OFPG_ANY,
            match=parser.OFPMatch(eth_type=0x0800, ipv4_dst="10.0.0.2"),
            instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [parser.OFPActionOutput(port)])],
        )
    )


def reply_to(conn: int, sends: list[fs.Send]) -> Any:
    return parsed(next(data for to, data in sends if to == conn))


def error_of(sends: list[fs.Send]) -> tuple[int, int]:
    (_, data), *_ = sends
    msg = parsed(data)
    assert isinstance(msg, parser.OFPErrorMsg)
    return msg.type, msg.code


def test_a_master_request_demotes_the_other_master_and_the_reply_carries_the_generation() -> None:
    sw = switch()
    (_, reply), *_ = sw.handle(0, role_request(ofp.OFPCR_ROLE_MASTER, 5))
    assert (parsed(reply).role, parsed(reply).generation_id) == (ofp.OFPCR_ROLE_MASTER, 5)
    sends = sw.handle(1, role_request(ofp.OFPCR_ROLE_MASTER, 6))
    assert [sw.role_of(i) for i in range(3)] == ["slave", "master", "equal"]
    status = parsed(next(data for conn, data in sends if conn == 0))  # OVS tells the demoted one
    assert isinstance(status, parser.OFPExperimenter) and status.exp_type == fs.ONFT_ROLE_STATUS
    assert int.from_bytes(status.data[0:4], "big") == ofp.OFPCR_ROLE_SLAVE
    assert parsed(next(data for conn, data in sends if conn == 1)).role == ofp.OFPCR_ROLE_MASTER


def test_an_older_generation_is_stale_and_changes_nothing() -> None:
    sw = switch()
    sw.handle(1, role_request(ofp.OFPCR_ROLE_MASTER, 6))
    assert error_of(sw.handle(0, role_request(ofp.OFPCR_ROLE_MASTER, 5))) == (
        ofp.OFPET_ROLE_REQUEST_FAILED,
        ofp.OFPRRFC_STALE,
    )
    assert error_of(sw.handle(2, role_request(ofp.OFPCR_ROLE_SLAVE, 4))) == (
        ofp.OFPET_ROLE_REQUEST_FAILED,
        ofp.OFPRRFC_STALE,
    )
    assert [sw.role_of(i) for i in range(3)] == ["equal", "master", "equal"]
    assert sw.roles.election_id == 6
    assert [entry[2] for entry in sw.log if entry[2] != "connected"] == ["role:master", "stale", "stale"]


def test_generations_compare_as_signed_64_bit_numbers_and_equal_ones_are_not_stale() -> None:
    sw = switch()
    sw.handle(0, role_request(ofp.OFPCR_ROLE_MASTER, MINUS_ONE))
    assert reply_to(1, sw.handle(1, role_request(ofp.OFPCR_ROLE_MASTER, 0))).role == ofp.OFPCR_ROLE_MASTER  # -1 < 0
    assert reply_to(2, sw.handle(2, role_request(ofp.OFPCR_ROLE_SLAVE, 0))).role == ofp.OFPCR_ROLE_SLAVE  # same one
    assert error_of(sw.handle(0, role_request(ofp.OFPCR_ROLE_MASTER, MINUS_ONE)))[0] == ofp.OFPET_ROLE_REQUEST_FAILED
    equal = sw.handle(0, role_request(ofp.OFPCR_ROLE_EQUAL, MINUS_ONE))  # EQUAL's generation is not checked
    assert reply_to(0, equal).role == ofp.OFPCR_ROLE_EQUAL


def test_a_slave_may_not_write_and_a_master_may() -> None:
    sw = switch()
    sw.handle(0, role_request(ofp.OFPCR_ROLE_MASTER, 1))
    sw.handle(1, role_request(ofp.OFPCR_ROLE_SLAVE, 1))
    for message in (
        flow_mod(ofp.OFPFC_ADD),
        wire(parser.OFPGroupMod(DATAPATH, ofp.OFPGC_ADD, ofp.OFPGT_FF, 1, [])),
        wire(parser.OFPMeterMod(DATAPATH, ofp.OFPMC_ADD, 0, 1, [])),
        wire(parser.OFPPacketOut(DATAPATH, ofp.OFP_NO_BUFFER, ofp.OFPP_CONTROLLER, [], b"x" * 14)),
    ):
        assert error_of(sw.handle(1, message)) == (ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_IS_SLAVE)
    assert sw.tables.flows == {} and sw.tables.groups == {} and sw.tables.meters == {}
    assert sw.handle(0, flow_mod(ofp.OFPFC_ADD)) == []
    assert len(sw.tables.flows) == 1


def test_a_closed_connection_comes_back_equal_and_the_election_id_stays() -> None:
    sw = switch()
    sw.handle(0, role_request(ofp.OFPCR_ROLE_MASTER, 9))
    sw.connection_down(0)
    assert sw.role_of(0) == "disconnected"
    sw.connection_up(0)
    assert sw.role_of(0) == "equal" and sw.roles.election_id == 9


def test_flows_read_back_as_written_modified_and_deleted_strictly() -> None:
    sw = switch(1)
    sw.handle(0, flow_mod(ofp.OFPFC_ADD, port=2))
    sw.handle(0, flow_mod(ofp.OFPFC_ADD, priority=200, port=1))
    sw.handle(0, flow_mod(ofp.OFPFC_MODIFY_STRICT, priority=200, port=2))
    sw.handle(0, flow_mod(ofp.OFPFC_DELETE_STRICT, priority=100))
    request = parser.OFPFlowStatsRequest(
        DATAPATH, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0xEC00_0000_0000_0000, 0xFFFF_0000_0000_0000
    )
    ((_, data),) = sw.handle(0, wire(request))
    (stat,) = parsed(data).body
    assert (stat.table_id, stat.priority, stat.cookie) == (1, 200, 0xEC00_0000_0000_0001)
    assert dict(stat.match.items()) == {"eth_type": 0x0800, "ipv4_dst": "10.0.0.2"}
    (instruction,) = stat.instructions
    assert [a.port for a in instruction.actions] == [2]
    other_cookie = parser.OFPFlowStatsRequest(
        DATAPATH, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0xAB00_0000_0000_0000, 0xFFFF_0000_0000_0000
    )
    assert parsed(sw.handle(0, wire(other_cookie))[0][1]).body == []


def test_aggregate_stats_count_the_flows_a_flow_stats_request_would_list() -> None:
    sw = switch(1)
    sw.handle(0, flow_mod(ofp.OFPFC_ADD, port=2))
    sw.handle(0, flow_mod(ofp.OFPFC_ADD, priority=200, port=1))
    sw.handle(0, flow_mod(ofp.OFPFC_ADD, priority=300, cookie=0xAB00_0000_0000_0001))

    def totals(cookie: int) -> Any:
        request = parser.OFPAggregateStatsRequest(
            DATAPATH, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, 0xFFFF_0000_0000_0000, parser.OFPMatch()
        )
        ((_, data),) = sw.handle(0, wire(request))
        return parsed(data).body

    assert (totals(0xEC00_0000_0000_0000).flow_count, totals(0xAB00_0000_0000_0000).flow_count) == (2, 1)
    assert totals(0xEC00_0000_0000_0000).packet_count == 0


def test_groups_and_meters_read_back_with_ovs_errors_for_a_duplicate_or_unknown_id() -> None:
    sw = switch(1)
    buckets = [parser.OFPBucket(0, 3, ofp.OFPG_ANY, [parser.OFPActionOutput(3)])]
    sw.handle(0, wire(parser.OFPGroupMod(DATAPATH, ofp.OFPGC_ADD, ofp.OFPGT_FF, 4, buckets)))
    assert error_of(sw.handle(0, wire(parser.OFPGroupMod(DATAPATH, ofp.OFPGC_ADD, ofp.OFPGT_FF, 4, buckets)))) == (
        ofp.OFPET_GROUP_MOD_FAILED,
        ofp.OFPGMFC_GROUP_EXISTS,
    )
    flags = ofp.OFPMF_KBPS | ofp.OFPMF_BURST | ofp.OFPMF_STATS
    sw.handle(0, wire(parser.OFPMeterMod(DATAPATH, ofp.OFPMC_ADD, flags, 7, [parser.OFPMeterBandDrop(1000, 100)])))
    assert error_of(sw.handle(0, wire(parser.OFPMeterMod(DATAPATH, ofp.OFPMC_MODIFY, flags, 8, [])))) == (
        ofp.OFPET_METER_MOD_FAILED,
        ofp.OFPMMFC_UNKNOWN_METER,
    )
    ((_, groups),) = sw.handle(0, wire(parser.OFPGroupDescStatsRequest(DATAPATH, 0)))
    (group,) = parsed(groups).body
    assert (group.type, group.group_id, [b.watch_port for b in group.buckets]) == (ofp.OFPGT_FF, 4, [3])
    ((_, meters),) = sw.handle(0, wire(parser.OFPMeterConfigStatsRequest(DATAPATH, 0, ofp.OFPM_ALL)))
    (meter,) = parsed(meters).body
    assert (meter.meter_id, meter.flags, meter.bands[0].rate, meter.bands[0].burst_size) == (7, flags, 1000, 100)
    assert [entry[2] for entry in sw.log][-1] == "readback"


def test_a_long_table_is_read_in_several_replies_under_64_kib() -> None:
    sw = switch(1)
    for i in range(1500):
        sw.handle(0, flow_mod(ofp.OFPFC_ADD, priority=i))
    request = parser.OFPFlowStatsRequest(DATAPATH, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0)
    replies = [parsed(data) for _, data in sw.handle(0, wire(request))]
    assert len(replies) > 1 and all(len(r.buf) < 65536 for r in replies)
    assert [bool(r.flags & ofp.OFPMPF_REPLY_MORE) for r in replies] == [True] * (len(replies) - 1) + [False]
    assert sum(len(r.body) for r in replies) == 1500


def test_ports_features_and_an_lldp_probe_reach_only_the_controllers_that_are_not_slave() -> None:
    sw = switch()
    ((_, features),) = sw.handle(0, wire(parser.OFPFeaturesRequest(DATAPATH)))
    assert parsed(features).datapath_id == 0x11
    ((_, ports),) = sw.handle(0, wire(parser.OFPPortDescStatsRequest(DATAPATH, 0)))
    assert [(p.port_no, p.name.decode(), p.state) for p in parsed(ports).body] == [
        (1, "s1-eth1", ofp.OFPPS_LIVE),
        (2, "s1-eth2", ofp.OFPPS_LIVE),
    ]
    sw.handle(0, role_request(ofp.OFPCR_ROLE_MASTER, 1))
    sw.handle(1, role_request(ofp.OFPCR_ROLE_SLAVE, 1))
    lldp = b"\x01\x80\xc2\x00\x00\x0e" + b"\x02" * 6 + b"\x88\xcc" + b"probe"
    probe = parser.OFPPacketOut(DATAPATH, ofp.OFP_NO_BUFFER, ofp.OFPP_CONTROLLER, [parser.OFPActionOutput(2)], lldp)
    assert sw.handle(0, wire(probe)) == [] and sw.emitted == [(2, lldp)]
    delivered = sw.receive_frame(1, lldp)
    assert [conn for conn, _ in delivered] == [0, 2]  # the master and the connection still EQUAL
    packet_in = parsed(delivered[0][1])
    assert (packet_in.match["in_port"], bytes(packet_in.data)) == (1, lldp)


def test_an_lldp_packet_out_through_the_table_comes_straight_back_to_the_controllers_that_are_not_slave() -> None:
    sw = switch()
    sw.handle(1, role_request(ofp.OFPCR_ROLE_SLAVE, 1))
    lldp = b"\x01\x80\xc2\x00\x00\x0e" + b"\x02" * 6 + b"\x88\xcc" + b"loop"
    loop = parser.OFPPacketOut(
        DATAPATH, ofp.OFP_NO_BUFFER, ofp.OFPP_CONTROLLER, [parser.OFPActionOutput(ofp.OFPP_TABLE)], lldp
    )
    back = sw.handle(0, wire(loop))
    assert [conn for conn, _ in back] == [0, 2] and sw.emitted == []
    packet_in = parsed(back[0][1])
    assert (packet_in.match["in_port"], bytes(packet_in.data)) == (ofp.OFPP_CONTROLLER, lldp)
    ipv4 = b"\x02" * 12 + b"\x08\x00" + b"not lldp"
    other = parser.OFPPacketOut(
        DATAPATH, ofp.OFP_NO_BUFFER, ofp.OFPP_CONTROLLER, [parser.OFPActionOutput(ofp.OFPP_TABLE)], ipv4
    )
    assert sw.handle(0, wire(other)) == []  # no flow sends it anywhere


def test_a_cut_cable_reports_its_port_down_to_every_controller_and_relays_no_probe_until_mended() -> None:
    sw = switch()
    sw.handle(1, role_request(ofp.OFPCR_ROLE_SLAVE, 1))
    sends = sw.set_link(1, up=False)
    assert [conn for conn, _ in sends] == [0, 1, 2]  # OVS tells slaves of port changes too
    status = parsed(sends[0][1])
    assert (status.reason, status.desc.port_no, status.desc.state) == (ofp.OFPPR_MODIFY, 1, ofp.OFPPS_LINK_DOWN)
    ((_, ports),) = sw.handle(0, wire(parser.OFPPortDescStatsRequest(DATAPATH, 0)))
    assert [p.state for p in parsed(ports).body] == [ofp.OFPPS_LINK_DOWN, ofp.OFPPS_LIVE]
    lldp = b"\x01\x80\xc2\x00\x00\x0e" + b"\x02" * 6 + b"\x88\xcc" + b"probe"
    assert sw.receive_frame(1, lldp) == []
    assert parsed(sw.set_link(1, up=True)[0][1]).desc.state == ofp.OFPPS_LIVE
    assert [conn for conn, _ in sw.receive_frame(1, lldp)] == [0, 2]


def test_the_fleet_cuts_both_ends_of_a_cable_and_refuses_a_port_without_one() -> None:
    a = fs.FakeSwitch(1, {1: "a-eth1", 2: "a-eth2"}, 1, clock=lambda: 5.0)
    b = fs.FakeSwitch(2, {1: "b-eth1"}, 1, clock=lambda: 5.0)
    fleet = fs.Fleet({1: a, 2: b}, {(1, 1): (2, 1), (2, 1): (1, 1)}, [("127.0.0.1", 6653)])
    answer = fleet.command("link 1 1 down")
    assert answer["ends"] == [["0000000000000001", 1], ["0000000000000002", 1]]
    assert a.down_ports == {1} and b.down_ports == {1}
    assert "error" in fleet.command("link 1 2 down")  # a host port: no cable
    fleet.command("link 2 1 up")
    assert a.down_ports == set() and b.down_ports == set()


def test_the_fleet_relays_a_probe_across_a_cable_after_the_cables_latency() -> None:
    a = fs.FakeSwitch(1, {1: "a-eth1"}, 1)
    b = fs.FakeSwitch(2, {1: "b-eth1"}, 1)
    a.connection_up(0)
    b.connection_up(0)
    fleet = fs.Fleet({1: a, 2: b}, {(1, 1): (2, 1), (2, 1): (1, 1)}, [("127.0.0.1", 6653)], delays_s={(1, 1): 0.05})
    arrived: list[tuple[int, float]] = []
    fleet.send = lambda dpid, sends: arrived.extend((dpid, time.monotonic()) for _ in sends)  # type: ignore[method-assign]
    lldp = b"\x01\x80\xc2\x00\x00\x0e" + b"\x02" * 6 + b"\x88\xcc" + b"probe"

    async def probe() -> float:
        a.emitted.append((1, lldp))
        sent = time.monotonic()
        fleet.deliver_emitted(a)
        assert arrived == []  # on its way
        await asyncio.sleep(0.2)
        return sent

    sent = asyncio.run(probe())
    ((dpid, at),) = arrived
    assert dpid == 2 and at - sent >= 0.05


def test_a_fleet_holds_its_cables_declared_latencies_only_when_asked() -> None:
    diamond = str(Path(__file__).parents[2] / "data" / "fabrics" / "diamond.yaml")
    assert fs.fleet_of(diamond, [("127.0.0.1", 6653)]).delays_s == {}
    delayed = fs.fleet_of(diamond, [("127.0.0.1", 6653)], cable_delays=True)
    assert set(delayed.delays_s) == set(delayed.peers) and sorted(set(delayed.delays_s.values())) == [0.001, 0.01]


def test_a_strict_flow_mod_finds_its_flow_by_key_and_respects_the_cookie_mask() -> None:
    sw = switch()
    sw.handle(0, flow_mod(ofp.OFPFC_ADD, cookie=0xEC01))
    sw.handle(0, flow_mod(ofp.OFPFC_ADD, priority=200, cookie=0xEC02))
    delete = parser.OFPFlowMod(
        DATAPATH, cookie=0xEC09, cookie_mask=0xFFFF, table_id=1, command=ofp.OFPFC_DELETE_STRICT, priority=100,
        buffer_id=ofp.OFP_NO_BUFFER, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(eth_type=0x0800, ipv4_dst="10.0.0.2"),
    )  # fmt: skip
    sw.handle(0, wire(delete))
    assert len(sw.tables.flows) == 2  # the cookie does not match: kept
    sw.handle(0, flow_mod(ofp.OFPFC_DELETE_STRICT, cookie=0xEC01))
    assert [key[1] for key in sw.tables.flows] == [200]
