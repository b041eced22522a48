"""Port counters -> rates per port and each link's load: the pure core behind the link metrics."""

from __future__ import annotations

import pytest
from sdnctl_helpers import fabric, link_between, live

from netmodel.ids import PortNo, SwitchId
from sdnctl.message_counts import MessageCounts
from sdnctl.port_stats import PortRates, link_loads

FABRIC = """
switches: [{id: a, dpid: 1, site: s}, {id: b, dpid: 2, site: s}]
links: [{a: a, b: b, latency_ms: 1, bandwidth_mbps: 100}]
"""
A, B = SwitchId(1), SwitchId(2)


def test_a_rate_needs_two_readings_and_is_bytes_per_second_between_them() -> None:
    rates = PortRates()
    first = rates.record(A, PortNo(1), tx_bytes=1_000, rx_bytes=500, now=10.0)
    assert first.tx_bytes_per_s is None and first.rx_bytes_per_s is None
    second = rates.record(A, PortNo(1), tx_bytes=6_000, rx_bytes=1_500, now=12.0)
    assert second.tx_bytes_per_s == pytest.approx(2_500.0)
    assert second.rx_bytes_per_s == pytest.approx(500.0)
    assert rates.readings()[(A, PortNo(1))] == second


def test_a_counter_that_went_backwards_or_a_reading_out_of_order_gives_no_rate() -> None:
    rates = PortRates()
    rates.record(A, PortNo(1), 10_000, 10_000, now=10.0)
    assert rates.record(A, PortNo(1), 100, 20_000, now=11.0).tx_bytes_per_s is None  # the switch restarted
    assert rates.record(A, PortNo(1), 300, 20_100, now=11.0).tx_bytes_per_s is None  # no time passed
    assert rates.record(A, PortNo(1), 500, 20_300, now=12.0).tx_bytes_per_s == pytest.approx(200.0)


def test_a_disconnected_switch_is_forgotten_and_starts_over() -> None:
    rates = PortRates()
    rates.record(A, PortNo(1), 1, 1, now=1.0)
    rates.record(B, PortNo(1), 1, 1, now=1.0)
    rates.forget_switch(A)
    assert set(rates.readings()) == {(B, PortNo(1))}
    assert rates.record(A, PortNo(1), 5, 5, now=2.0).tx_bytes_per_s is None


def test_a_links_load_is_what_its_source_port_sends_over_its_declared_capacity() -> None:
    state = live(fabric(FABRIC))
    a_to_b = link_between(state, 1, 2)
    b_to_a = a_to_b.reversed()
    rates = PortRates()
    rates.record(a_to_b.src, a_to_b.src_port, 0, 0, now=0.0)
    rates.record(a_to_b.src, a_to_b.src_port, 2_500_000, 0, now=2.0)  # 1.25 MB/s = 10 Mbit/s of 100
    rates.record(b_to_a.src, b_to_a.src_port, 42, 0, now=2.0)  # read once: bytes, no rate yet
    loads = {load.link: load for load in link_loads(state, rates.readings())}
    assert loads[a_to_b].tx_bytes == 2_500_000
    assert loads[a_to_b].bytes_per_s == pytest.approx(1_250_000.0)
    assert loads[a_to_b].utilization == pytest.approx(0.1)
    assert loads[b_to_a].tx_bytes == 42 and loads[b_to_a].utilization is None


def test_ports_not_on_a_link_and_links_not_read_are_not_loads() -> None:
    state = live(fabric(FABRIC))
    rates = PortRates()
    rates.record(A, PortNo(99), 1, 1, now=0.0)
    assert link_loads(state, rates.readings()) == []


def test_message_counts_by_type_and_errors_by_type_and_code() -> None:
    counts = MessageCounts()
    counts.sent("OFPFlowMod", 3)
    counts.sent("OFPBarrierRequest")
    counts.received("OFPBarrierReply")
    counts.error("bad_request", 4)
    counts.error("bad_request", 4)
    totals = counts.totals()
    assert totals.sent == {"OFPFlowMod": 3, "OFPBarrierRequest": 1}
    assert totals.received == {"OFPBarrierReply": 1}
    assert totals.errors == {("bad_request", 4): 2}
    counts.sent("OFPFlowMod")
    assert totals.sent["OFPFlowMod"] == 3  # a copy: later counts do not change it
