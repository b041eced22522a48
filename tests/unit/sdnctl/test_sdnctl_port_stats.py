"""Port counters -> rates per port and each link's load: the pure core behind the link metrics."""

from __future__ import annotations

import pytest
from sdnctl_helpers import fabric, link_between, live

from netmodel import events as ev
from netmodel.ids import PortNo, SwitchId
from sdnctl.message_counts import MessageCounts
from sdnctl.port_stats import PortRates, link_loads, load_changed, load_report

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


# -- the model's link load: what is worth publishing ------------------------------------------------


@pytest.mark.parametrize(
    ("held", "measured", "capacity_mbps", "changed"),
    [
        (None, 0.0, 100, True),  # the first measurement, even of nothing
        (5e6, None, 100, True),  # no longer measured
        (None, None, 100, False),
        (0.0, 5_000.0, 100, False),  # probe noise on an idle link: 10 kbit/s or less is never news
        (0.0, 20_000.0, 100, True),  # a quiet link starts carrying something: 5 % of 0 is 0
        (10e6, 10.4e6, 100, False),  # +0.4 Mbit/s: 0.4 % of capacity, 4 % of the load
        (10e6, 10.6e6, 100, True),  # +0.6 Mbit/s: 6 % of the load
        (10e6, 9.4e6, 100, True),  # down as well as up
        (80e6, 81.5e6, 100, True),  # a busy link: 1.5 % of capacity, though only 1.9 % of the load
        (80e6, 80.9e6, 100, False),
        (800e6, 811e6, 1000, True),  # 1.1 % of capacity, 1.4 % of the load
        (800e6, 809e6, 1000, False),
    ],
)
def test_a_load_is_news_when_it_moved_by_1_percent_of_capacity_or_5_percent_of_itself(
    held: float | None, measured: float | None, capacity_mbps: float, changed: bool
) -> None:
    assert load_changed(held, measured, capacity_mbps) is changed


def test_a_round_is_one_event_with_only_the_directions_whose_load_changed_enough() -> None:
    state = live(fabric(FABRIC))
    a_to_b = link_between(state, 1, 2)
    b_to_a = a_to_b.reversed()
    rates = PortRates()
    rates.record(a_to_b.src, a_to_b.src_port, 0, 0, now=0.0)
    rates.record(b_to_a.src, b_to_a.src_port, 0, 0, now=0.0)
    assert load_report(state, rates.readings(), at=100.0) is None  # one reading each: no rate yet
    rates.record(a_to_b.src, a_to_b.src_port, 2_500_000, 0, now=2.0)  # 10 Mbit/s
    rates.record(b_to_a.src, b_to_a.src_port, 1_000, 0, now=2.0)  # 4 kbit/s: probes
    report = load_report(state, rates.readings(), at=102.0)
    assert report == ev.LinkLoadMeasured(((a_to_b, pytest.approx(10e6)), (b_to_a, pytest.approx(4_000.0))), 102.0)
    state = state.apply(report)
    assert state.topology.links[a_to_b].utilization == pytest.approx(0.1)
    assert load_report(state, rates.readings(), at=104.0) is None  # the model holds it already
    rates.record(a_to_b.src, a_to_b.src_port, 2_500_000 + 1_280_000, 0, now=4.0)  # 5.12 Mbit/s: halved
    rates.record(b_to_a.src, b_to_a.src_port, 2_000, 0, now=4.0)  # the same noise
    later = load_report(state, rates.readings(), at=104.0)
    assert later is not None and [link for link, _ in later.loads_bps] == [a_to_b]


def test_a_gone_switch_clears_its_links_load_and_a_counter_that_started_over_keeps_it_until_a_rate() -> None:
    state = live(fabric(FABRIC))
    a_to_b = link_between(state, 1, 2)
    state = state.apply(ev.LinkLoadMeasured(((a_to_b, 8e6), (a_to_b.reversed(), 8e6)), 1.0))
    rates = PortRates()
    rates.record(a_to_b.src, a_to_b.src_port, 100, 0, now=0.0)  # a's counter read once (it started over)
    report = load_report(state, rates.readings(), at=2.0)  # b's port is not read at all (b is gone)
    assert report == ev.LinkLoadMeasured(((a_to_b.reversed(), None),), 2.0)
