"""Two deltas of one switch made one after the other (routes, then ACL or reservations) sent as one:
where both touch the same flow, group or meter, the later word is the one sent."""

from __future__ import annotations

from netmodel.ids import PortNo
from sdnctl.flows import TABLE_FORWARD, FlowSpec, GroupSpec, MeterSpec, SwitchDelta, merge_deltas

MATCH = (("eth_type", 0x0800), ("ipv4_dst", "10.0.0.9"))


def route(*actions: tuple[str, int]) -> FlowSpec:
    return FlowSpec(TABLE_FORWARD, 100, MATCH, actions, 0xEC00_0000_0A00_0009)


def test_a_flow_modified_twice_is_sent_once_as_the_later_one() -> None:
    # Routes recompiled the flow with the old policing (meter 0x30002); then the reservations took the
    # meter away (its last reservation gone) and deleted it: the stale modify must not be sent.
    stale, final = route(("meter", 0x30002), ("group", 9)), route(("group", 9))
    first = SwitchDelta(modify_flows=(stale,))
    then = SwitchDelta(modify_flows=(final,), delete_meters=(MeterSpec(0x30002, 11_000, 110),))
    merged = merge_deltas(first, then)
    assert merged.modify_flows == (final,) and merged.add_flows == ()
    assert merged.delete_meters == (MeterSpec(0x30002, 11_000, 110),)


def test_an_add_then_a_modify_stays_an_add_and_disjoint_parts_are_kept() -> None:
    added, policed = route(("group", 9)), route(("meter", 5), ("group", 9))
    other = FlowSpec(0, 10, (("in_port", 1),), (), 0xEC03)
    merged = merge_deltas(SwitchDelta(add_flows=(added, other)), SwitchDelta(modify_flows=(policed,)))
    assert set(merged.add_flows) == {policed, other} and merged.modify_flows == ()


def test_a_group_or_meter_deleted_then_written_again_is_a_modify() -> None:
    group = GroupSpec(9, (PortNo(1), PortNo(2)))
    meter = MeterSpec(7, 8_000, 4_000)
    merged = merge_deltas(
        SwitchDelta(delete_groups=(group,), delete_meters=(meter,)),
        SwitchDelta(add_groups=(GroupSpec(9, (PortNo(2),)),), add_meters=(MeterSpec(7, 9_000, 4_500),)),
    )
    assert merged.modify_groups == (GroupSpec(9, (PortNo(2),)),) and not merged.add_groups and not merged.delete_groups
    assert merged.modify_meters == (MeterSpec(7, 9_000, 4_500),) and not merged.add_meters
