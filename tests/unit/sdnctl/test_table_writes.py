"""Table writes serialized once (``sdnctl.table_writes``): the bytes are os-ken's own serialization of the same
message, the transaction id is the only thing a send changes, and a phase goes to the switch as one write
whose messages parse back in order, each with its own transaction id."""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest
from test_sdnctl_openflow_roles import FakeDatapath, connect, make_app, parse_messages

from sdnctl import table_writes
from sdnctl.flows import FlowSpec, GroupSpec, MeterSpec, SwitchDelta

ROUTE = FlowSpec(1, 100, (("eth_type", 0x0800), ("ipv4_dst", "10.0.0.7")), (("group", 7),), 0xEC00_0000_0A00_0007)
GUARD = FlowSpec(
    0, 300, (("eth_src", "00:00:00:00:00:01"), ("in_port", 3)), (("meter", 2), ("goto", 1)), 0xEC05_0000_0000_0001
)
GROUP = GroupSpec(7, (1, 2))
METER = MeterSpec(2, 5000, 2500)


@pytest.fixture(scope="module")
def openflow() -> Any:
    os.environ.setdefault("OSKEN_HUB_TYPE", "native")
    from os_ken.base import app_manager  # noqa: F401, I001 - must come first (os-ken circular import)
    from sdnctl import openflow

    return openflow


def own_serialization(msg: Any, xid: int) -> bytes:
    msg.xid = xid
    msg.serialize()
    return bytes(msg.buf)


@pytest.mark.parametrize("command", ["OFPFC_ADD", "OFPFC_MODIFY_STRICT", "OFPFC_DELETE_STRICT"])
@pytest.mark.parametrize("flow", [ROUTE, GUARD])
def test_a_flow_mod_is_os_kens_bytes_with_the_xid_written_in(command: str, flow: FlowSpec) -> None:
    datapath = FakeDatapath(1)
    code = getattr(datapath.ofproto, command)
    encoded = table_writes.flow_mod_bytes(code, flow)
    assert encoded.name == "OFPFlowMod"
    mine = table_writes.with_xid(encoded.data, 77)
    assert mine == own_serialization(table_writes.flow_mod(datapath.ofproto_parser, code, flow, datapath), 77)
    assert table_writes.flow_mod_bytes(code, flow) is encoded, "serialized once per command and flow"


def test_group_and_meter_mods_are_os_kens_bytes_too() -> None:
    datapath = FakeDatapath(1)
    parser, ofp = datapath.ofproto_parser, datapath.ofproto
    for command in (ofp.OFPGC_ADD, ofp.OFPGC_MODIFY, ofp.OFPGC_DELETE):
        encoded = table_writes.group_mod_bytes(command, GROUP)
        expected = own_serialization(table_writes.group_mod(parser, command, GROUP, datapath), 5)
        assert (encoded.name, table_writes.with_xid(encoded.data, 5)) == ("OFPGroupMod", expected)
    for command in (ofp.OFPMC_ADD, ofp.OFPMC_MODIFY, ofp.OFPMC_DELETE):
        encoded = table_writes.meter_mod_bytes(command, METER)
        expected = own_serialization(table_writes.meter_mod(parser, command, METER, datapath), 5)
        assert (encoded.name, table_writes.with_xid(encoded.data, 5)) == ("OFPMeterMod", expected)


def test_a_phase_is_one_write_of_its_messages_in_order_each_with_its_own_xid(openflow) -> None:
    app = make_app(openflow)
    datapath = connect(openflow, app, 1)
    writes: list[bytes] = []
    datapath.send = lambda buf: writes.append(buf) or True  # type: ignore[method-assign]
    delta = SwitchDelta(add_groups=(GROUP,), add_flows=(ROUTE,), modify_flows=(GUARD,), add_meters=(METER,))
    assert app.send_phase(1, delta, "make")
    assert len(writes) == 1, "one send for the whole phase"
    messages = parse_messages(datapath, writes[0])
    ofp = datapath.ofproto
    assert [type(m).__name__ for m in messages] == ["OFPMeterMod", "OFPGroupMod", "OFPFlowMod", "OFPFlowMod"]
    assert [m.command for m in messages[2:]] == [ofp.OFPFC_ADD, ofp.OFPFC_MODIFY_STRICT]
    assert messages[2].cookie == ROUTE.cookie and messages[3].cookie == GUARD.cookie
    xids = [struct.unpack_from("!I", m.buf, 4)[0] for m in messages]
    assert len(set(xids)) == 4 and xids == sorted(xids), xids
    sent = app.messages.totals().sent
    assert (sent["OFPMeterMod"], sent["OFPGroupMod"], sent["OFPFlowMod"]) == (1, 1, 2), "counted by type"


def test_an_empty_phase_sends_nothing_and_a_gone_switch_fails(openflow) -> None:
    app = make_app(openflow)
    datapath = connect(openflow, app, 1)
    writes: list[bytes] = []
    datapath.send = lambda buf: writes.append(buf) or True  # type: ignore[method-assign]
    assert app.send_phase(1, SwitchDelta(), "break")
    assert writes == []
    assert not app.send_phase(2, SwitchDelta(add_flows=(ROUTE,)), "make")


def test_random_flows_encode_to_os_kens_bytes_and_other_fields_go_to_os_ken() -> None:
    import random

    from test_flow_stats import random_flow

    datapath = FakeDatapath(1)
    parser, ofp = datapath.ofproto_parser, datapath.ofproto
    rng = random.Random(11)
    for _ in range(300):
        flow = random_flow(rng)
        command = rng.choice((ofp.OFPFC_ADD, ofp.OFPFC_MODIFY_STRICT, ofp.OFPFC_DELETE_STRICT))
        expected = own_serialization(table_writes.flow_mod(parser, command, flow, datapath), 0)
        assert table_writes.encode_flow_mod(command, flow) == expected, flow
    vlan = FlowSpec(1, 50, (("vlan_vid", 0x1000 | 7),), (("output", 2),), 0xEC00_0000_0000_0009)
    assert table_writes.encode_flow_mod(ofp.OFPFC_ADD, vlan) is None
    expected = own_serialization(table_writes.flow_mod(parser, ofp.OFPFC_ADD, vlan, datapath), 0)
    assert table_writes.flow_mod_bytes(ofp.OFPFC_ADD, vlan).data == expected
