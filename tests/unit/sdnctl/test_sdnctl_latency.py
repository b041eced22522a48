"""sdnctl.latency: link delay from probe transit times and control round trips, with hand-checked numbers.

delay(a, b) = (T(a->b) + T(b->a) - rtt(a) - rtt(b)) / 2, each term the minimum over its window: every
disturbance only ever adds time, so a delayed outlier never moves the estimate.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from netmodel.ids import PortNo, SwitchId
from netmodel.types import LinkId
from sdnctl.latency import WINDOW, LatencyEstimator

AB = LinkId(SwitchId(1), PortNo(1), SwitchId(2), PortNo(1))
BA = AB.reversed()
MS = 1e-3


def estimator(rtt_a: float = 2 * MS, rtt_b: float = 4 * MS) -> LatencyEstimator:
    est = LatencyEstimator()
    est.record_echo_rtt(1, rtt_a)
    est.record_echo_rtt(2, rtt_b)
    return est


def test_both_directions_hand_numbers() -> None:
    est = estimator(rtt_a=2 * MS, rtt_b=4 * MS)
    est.record_probe(AB, 10 * MS)
    est.record_probe(BA, 12 * MS)
    # (10 + 12 - 2 - 4) / 2 = 8 ms, the same both ways
    assert est.estimate_us(AB) == 8000
    assert est.estimate_us(BA) == 8000


def test_one_direction_only_hand_numbers() -> None:
    est = estimator(rtt_a=2 * MS, rtt_b=4 * MS)
    est.record_probe(AB, 10 * MS)
    # 10 - (2 + 4) / 2 = 7 ms
    assert est.estimate_us(AB) == 7000
    assert est.estimate_us(BA) is None  # no probe crossed b -> a yet


def test_symmetric_link_recovers_the_configured_delay() -> None:
    """Simulated: control one-way = rtt / 2 at each end, a 1.5 ms link."""
    est = estimator(rtt_a=0.6 * MS, rtt_b=0.9 * MS)
    link = 1.5 * MS
    est.record_probe(AB, 0.3 * MS + link + 0.45 * MS)
    est.record_probe(BA, 0.45 * MS + link + 0.3 * MS)
    assert est.estimate_us(AB) == 1500


def test_no_estimate_without_probes_or_round_trips() -> None:
    est = LatencyEstimator()
    assert est.estimate_us(AB) is None
    est.record_probe(AB, 10 * MS)
    assert est.estimate_us(AB) is None  # no rtt for either switch
    est.record_echo_rtt(1, 1 * MS)
    assert est.estimate_us(AB) is None  # still none for switch 2
    est.record_echo_rtt(2, 1 * MS)
    assert est.estimate_us(AB) == 9000


def test_a_negative_estimate_is_clamped_to_zero() -> None:
    est = estimator(rtt_a=5 * MS, rtt_b=5 * MS)
    est.record_probe(AB, 1 * MS)
    assert est.estimate_us(AB) == 0


def test_a_delayed_outlier_does_not_move_the_estimate() -> None:
    est = estimator(rtt_a=2 * MS, rtt_b=2 * MS)
    for transit in (5.0, 5.1, 5.05, 80.0, 5.2, 5.0, 5.1):  # one probe held up 75 ms by a GC pause
        est.record_probe(AB, transit * MS)
    est.record_echo_rtt(1, 50 * MS)  # and one slow echo
    assert est.estimate_us(AB) == 3000  # 5 - (2 + 2) / 2


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(0, 100), min_size=1, max_size=WINDOW - 1),
    st.floats(1, 20),
)
def test_added_delay_never_lowers_or_raises_the_estimate(extra_ms: list[float], base_ms: float) -> None:
    """Outliers only add time: however many (short of filling the window), the estimate stays put."""
    est = estimator(rtt_a=1 * MS, rtt_b=1 * MS)
    est.record_probe(AB, base_ms * MS)
    clean = est.estimate_us(AB)
    for extra in extra_ms:
        est.record_probe(AB, (base_ms + extra) * MS)
    assert est.estimate_us(AB) == clean


def test_old_samples_leave_the_window() -> None:
    est = estimator(rtt_a=0.0, rtt_b=0.0)
    est.record_probe(AB, 1 * MS)  # the link was fast...
    for _ in range(WINDOW - 1):
        est.record_probe(AB, 4 * MS)  # ...and then got slower
    assert est.estimate_us(AB) == 1000  # the low value is still in the window
    est.record_probe(AB, 4 * MS)
    assert est.estimate_us(AB) == 4000  # one more sample pushes it out


def test_loop_rtt_is_preferred_over_echo_rtt() -> None:
    est = estimator(rtt_a=1 * MS, rtt_b=1 * MS)
    est.record_probe(AB, 10 * MS)
    assert est.control_rtt_s(1) == 1 * MS
    assert est.estimate_us(AB) == 9000  # 10 - (1 + 1) / 2, echo only
    est.record_loop_rtt(1, 3 * MS)  # the datapath adds 2 ms the echo does not see
    assert est.control_rtt_s(1) == 3 * MS
    assert est.estimate_us(AB) == 8000  # 10 - (3 + 1) / 2
    est.record_echo_rtt(1, 0.1 * MS)  # a faster echo changes nothing while a loop rtt exists
    assert est.estimate_us(AB) == 8000


def test_forget_switch_drops_its_samples_and_its_links() -> None:
    est = estimator()
    est.record_loop_rtt(1, 3 * MS)
    est.record_probe(AB, 10 * MS)
    est.record_probe(BA, 10 * MS)
    est.forget_switch(1)
    assert est.control_rtt_s(1) is None
    assert est.estimate_us(AB) is None
    est.record_echo_rtt(1, 2 * MS)
    assert est.estimate_us(AB) is None  # the old transit samples went too
    assert est.control_rtt_s(2) == 4 * MS


def test_report_shows_the_minima_and_estimates_in_microseconds() -> None:
    est = estimator(rtt_a=2 * MS, rtt_b=4 * MS)
    est.record_probe(AB, 10 * MS)
    est.record_probe(AB, 11 * MS)
    report = est.report()
    assert report["switches"] == {
        "0000000000000001": {"echo_rtt_us": 2000, "loop_rtt_us": None},
        "0000000000000002": {"echo_rtt_us": 4000, "loop_rtt_us": None},
    }
    (link,) = report["links"]  # type: ignore[misc]
    assert link["transit_us"] == 10_000 and link["samples"] == 2 and link["estimate_us"] == 7000
    assert link["noise_us"] == 1000  # the median of [10, 11] is 11 (the upper one): 1 ms above the minimum


def test_noise_is_each_terms_median_above_its_minimum_combined_as_the_estimate_hand_numbers() -> None:
    est = LatencyEstimator()
    for rtt in (1.0, 1.2, 1.4):
        est.record_echo_rtt(1, rtt * MS)  # median 0.2 ms above the minimum
    est.record_echo_rtt(2, 1 * MS)  # one sample: no spread
    for transit in (5.0, 5.6, 5.8, 9.0, 5.2):
        est.record_probe(AB, transit * MS)  # sorted 5.0 5.2 5.6 5.8 9.0: median 0.6 ms above
    assert est.noise_us(AB) == 700  # one direction: 0.6 + (0.2 + 0) / 2
    for transit in (7.0, 7.4):
        est.record_probe(BA, transit * MS)  # median (the upper of two) 0.4 ms above
    assert est.noise_us(AB) == est.noise_us(BA) == 600  # both directions: (0.6 + 0.4 + 0.2 + 0) / 2
    est.record_loop_rtt(1, 3 * MS)  # the loop round trip stands for the control path, and so for its noise
    assert est.noise_us(AB) == 500  # (0.6 + 0.4 + 0 + 0) / 2
    assert est.noise_us(LinkId(SwitchId(1), PortNo(2), SwitchId(3), PortNo(1))) == 0  # no estimate, no noise


def test_a_steady_link_has_no_noise() -> None:
    est = estimator()
    for _ in range(WINDOW):
        est.record_probe(AB, 10 * MS)
        est.record_probe(BA, 10 * MS)
    assert est.noise_us(AB) == 0
