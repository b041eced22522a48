"""sdnctl.discovery: probes out, probes back, silent links down, latency reported when it moved.

A fake clock (plain floats) drives the core; nothing here touches a switch.
"""

from __future__ import annotations

from sdnctl_helpers import fabric, live

from netmodel import events as ev
from netmodel.ids import PortNo, SwitchId
from netmodel.state import FabricState
from netmodel.types import LinkId
from sdnctl import frames
from sdnctl.discovery import BEHIND_TIMEOUT_S, LINK_TIMEOUT_S, LOOP_FRESH_S, LOOP_PORT, Discovery, PacketOut
from sdnctl.latency import WINDOW, refines, worth_reporting

A, B = SwitchId(1), SwitchId(2)
PAIR = """
switches:
  - {id: a, dpid: 1, site: s}
  - {id: b, dpid: 2, site: s}
links:
  - {a: a, b: b, latency_ms: 1, bandwidth_mbps: 100}
"""
A_TO_B = LinkId(A, PortNo(1), B, PortNo(1))
B_TO_A = A_TO_B.reversed()
MS = 1e-3
WALL = 1_000_000.0


def pair() -> FabricState:
    return live(fabric(PAIR))


def cross(core: Discovery, state: FabricState, link: LinkId, sent: float, transit_s: float) -> tuple[ev.Event, ...]:
    """A probe out of ``link``'s source port at ``sent`` that arrives at its far end ``transit_s`` later."""
    packet = core.probe(link.src, link.src_port, "02:00:00:00:00:01", sent)
    assert packet.dpid == link.src and packet.port == link.src_port
    return core.on_probe(state, link.dst, link.dst_port, packet.data, sent + transit_s, WALL)


def unanswered(core: Discovery, link: LinkId, sent: float) -> None:
    """A probe out of ``link``'s source port at ``sent`` that never arrives."""
    core.probe(link.src, link.src_port, "02:00:00:00:00:01", sent)


def echo(core: Discovery, dpid: SwitchId, sent: float, rtt_s: float) -> None:
    request = core.echo(dpid, sent)
    assert request is not None
    core.on_echo_reply(dpid, request.data, sent + rtt_s)


def test_a_probe_is_an_lldp_frame_out_of_its_port_naming_switch_port_and_instance() -> None:
    core = Discovery(instance=7)
    packet = core.probe(A, 3, "", 0.0)
    probe = frames.parse_lldp_probe(packet.data)
    assert packet.dpid == A and packet.port == 3
    assert probe is not None and (probe.dpid, probe.port, probe.instance) == (A, 3, 7)


def test_a_probe_that_comes_back_elsewhere_is_a_discovered_link_news_only_when_the_model_lacks_it() -> None:
    core = Discovery(instance=7)
    declared_only = fabric(PAIR)  # the model holds the link, not yet discovered
    assert cross(core, declared_only, A_TO_B, 0.0, 0.001) == (ev.LinkDiscovered(A_TO_B, WALL),)
    assert cross(core, declared_only, A_TO_B, 1.0, 0.001) == (ev.LinkDiscovered(A_TO_B, WALL),)
    assert cross(core, pair(), A_TO_B, 2.0, 0.001) == ()


def test_the_first_crossing_is_news_even_when_the_model_already_holds_the_link() -> None:
    assert cross(Discovery(instance=7), pair(), A_TO_B, 0.0, 0.001) == (ev.LinkDiscovered(A_TO_B, WALL),)


def test_another_controllers_probe_and_foreign_lldp_are_ignored() -> None:
    ours, theirs = Discovery(instance=7), Discovery(instance=8)
    packet = theirs.probe(A, 1, "", 0.0)
    assert ours.on_probe(pair(), B, PortNo(1), packet.data, 0.001, WALL) == ()
    assert ours.on_probe(pair(), B, PortNo(1), b"\x01\x80\xc2\x00\x00\x0e" + b"\x00" * 6 + b"\x88\xcc", 0.1, WALL) == ()
    assert ours.housekeeping(pair(), {A, B}, 10.0, WALL).events == ()


def test_a_link_not_crossed_for_the_timeout_goes_down_exactly_once() -> None:
    core, state = Discovery(instance=7), pair()
    cross(core, state, A_TO_B, 10.0, 0.001)
    unanswered(core, A_TO_B, 10.001)  # the next round's probe, and every one after it, never arrives
    assert core.housekeeping(state, {A, B}, 10.001 + LINK_TIMEOUT_S - 0.01, WALL).events == ()
    result = core.housekeeping(state, {A, B}, 10.001 + LINK_TIMEOUT_S + 0.01, WALL)
    assert [e for e in result.events if isinstance(e, ev.LinkWentDown)] == [ev.LinkWentDown(A_TO_B)]
    assert [link for link, _ in result.silent_s] == [A_TO_B]
    assert result.silent_s[0][1] > LINK_TIMEOUT_S
    # The model still says up (the event is not applied yet): no second LinkWentDown for the same silence.
    assert core.housekeeping(state, {A, B}, 30.0, WALL).events == ()
    # A probe crosses again: tracked again, and a later silence is reported again.
    cross(core, state, A_TO_B, 40.0, 0.001)
    unanswered(core, A_TO_B, 41.0)
    assert core.housekeeping(state, {A, B}, 50.0, WALL).events == (ev.LinkWentDown(A_TO_B),)


def test_a_link_whose_port_sent_no_probe_since_it_was_crossed_is_not_silent() -> None:
    """A probe loop starved of the CPU sends nothing: the link is not to blame. Silence counts from the
    first probe out of its port that did not come back, and that first probe after the spell meets what
    the spell left queued: it has as long as a probe into a switch the controller is behind on."""
    core, state = Discovery(instance=7), pair()
    cross(core, state, A_TO_B, 10.0, 0.001)
    assert core.housekeeping(state, {A, B}, 30.0, WALL).events == (), "nothing went out for 20 s"
    unanswered(core, A_TO_B, 30.0)
    assert core.housekeeping(state, {A, B}, 30.0 + LINK_TIMEOUT_S + 0.01, WALL).events == ()
    assert core.housekeeping(state, {A, B}, 30.0 + BEHIND_TIMEOUT_S - 0.01, WALL).events == ()
    assert core.housekeeping(state, {A, B}, 30.0 + BEHIND_TIMEOUT_S + 0.01, WALL).events == (ev.LinkWentDown(A_TO_B),)


def test_a_link_probed_steadily_goes_down_after_the_link_timeout() -> None:
    """No spell: probes went out each second, the last one that crossed 1 s before the first that did not."""
    core, state = Discovery(instance=7), pair()
    cross(core, state, A_TO_B, 10.0, 0.001)
    unanswered(core, A_TO_B, 11.0)
    assert core.housekeeping(state, {A, B}, 11.0 + LINK_TIMEOUT_S - 0.01, WALL).events == ()
    assert core.housekeeping(state, {A, B}, 11.0 + LINK_TIMEOUT_S + 0.01, WALL).events == (ev.LinkWentDown(A_TO_B),)


def loop_answered(core: Discovery, state: FabricState, dpid: SwitchId, sent: float) -> None:
    """A loop probe to ``dpid`` at ``sent`` that its own table returns 1 ms later."""
    packet = core.loop_probe(dpid, sent)
    assert core.on_probe(state, dpid, PortNo(0), packet.data, sent + 0.001, WALL) == ()


def test_a_link_is_silent_only_while_both_its_switches_answer_what_was_sent_after_its_probe() -> None:
    """The switches' control paths behind (at 500 simulated switches, 30-95 s): a probe that could not
    have come back yet says nothing of the cable. Loop probes and echoes cross the same paths."""
    core, state = Discovery(instance=7), pair()
    for dpid in (A, B):
        loop_answered(core, state, dpid, 9.5)
    cross(core, state, A_TO_B, 10.0, 0.001)
    unanswered(core, A_TO_B, 11.0)
    for dpid in (A, B):
        core.loop_probe(dpid, 12.0)  # sent after the probe; no answer: both paths are behind
    later = 11.0 + BEHIND_TIMEOUT_S + 1
    assert core.housekeeping(state, {A, B}, later, WALL).events == ()
    loop_answered(core, state, A, 12.5)  # A's path carried something sent after the probe; B's not yet
    assert core.housekeeping(state, {A, B}, later + 1, WALL).events == ()
    echo(core, B, 13.5, 0.001)  # now B's (an echo: its loop probes had gone stale)
    assert core.housekeeping(state, {A, B}, later + 2, WALL).events == (ev.LinkWentDown(A_TO_B),)


def test_a_late_answer_still_shows_that_the_control_path_carried_what_was_sent_after_the_probe() -> None:
    """A path 19 s behind answers loop probes 19 s late. Waited for only as long as a link probe, they
    never counted, and links were judged on their probes alone (at 500 simulated switches, by the dozen)."""
    core, state = Discovery(instance=7), pair()
    for dpid in (A, B):
        loop_answered(core, state, dpid, 9.5)
    cross(core, state, A_TO_B, 10.0, 0.001)
    unanswered(core, A_TO_B, 11.0)
    loops = {dpid: core.loop_probe(dpid, 12.0) for dpid in (A, B)}
    assert core.housekeeping(state, {A, B}, 30.0, WALL).events == ()  # 19 s on: both paths still behind
    for dpid, packet in loops.items():
        core.on_probe(state, dpid, PortNo(0), packet.data, 31.0, WALL)
    assert [round(core.latency.control_rtt_s(s) or 0, 6) for s in (A, B)] == [0.001, 0.001]  # no sample of 19 s
    assert core.housekeeping(state, {A, B}, 31.5, WALL).events == (ev.LinkWentDown(A_TO_B),)


def test_a_link_out_of_a_switch_left_unprobed_starts_its_silence_over() -> None:
    """Its probe waited in the controller's queue behind the switch's table install: not the link's fault."""
    core, state = Discovery(instance=7), pair()
    cross(core, state, A_TO_B, 10.0, 0.001)
    unanswered(core, A_TO_B, 10.5)
    assert core.housekeeping(state, {A, B}, 20.0, WALL, unprobed={A}).events == ()
    assert core.housekeeping(state, {A, B}, 30.0, WALL).events == (), "no probe out of it since"
    unanswered(core, A_TO_B, 30.0)
    assert core.housekeeping(state, {A, B}, 30.0 + LINK_TIMEOUT_S + 0.01, WALL).events == (), "first after a spell"
    unanswered(core, A_TO_B, 31.0)
    assert core.housekeeping(state, {A, B}, 30.0 + BEHIND_TIMEOUT_S + 0.01, WALL).events == (ev.LinkWentDown(A_TO_B),)


def test_a_link_into_a_switch_whose_messages_wait_unread_gets_longer_before_it_goes_down() -> None:
    """Its probes may be among the unread messages (the controller is behind, not the link)."""
    core, state = Discovery(instance=7), pair()
    cross(core, state, A_TO_B, 10.0, 0.001)
    unanswered(core, A_TO_B, 10.001)
    later = 10.001 + LINK_TIMEOUT_S + 0.5
    assert core.housekeeping(state, {A, B}, later, WALL, behind={B}).events == ()
    assert core.housekeeping(state, {A, B}, later, WALL, behind={A}).events == (ev.LinkWentDown(A_TO_B),)
    cross(core, state, A_TO_B, 20.0, 0.001)
    unanswered(core, A_TO_B, 20.001)
    assert core.housekeeping(state, {A, B}, 20.001 + BEHIND_TIMEOUT_S - 0.01, WALL, behind={B}).events == ()
    gone = core.housekeeping(state, {A, B}, 20.001 + BEHIND_TIMEOUT_S + 0.01, WALL, behind={B})
    assert gone.events == (ev.LinkWentDown(A_TO_B),), "silent that long: down however far behind"


def test_a_link_to_a_disconnected_switch_or_already_down_is_not_taken_down_by_silence() -> None:
    core, state = Discovery(instance=7), pair()
    cross(core, state, A_TO_B, 0.0, 0.001)
    unanswered(core, A_TO_B, 0.001)
    assert core.housekeeping(state, {A}, 10.0, WALL).events == ()
    assert core.housekeeping(state.apply(ev.LinkWentDown(A_TO_B)), {A, B}, 10.0, WALL).events == ()
    assert core.housekeeping(state, {A, B}, 10.0, WALL).events == (ev.LinkWentDown(A_TO_B),)


def test_a_link_never_crossed_is_not_taken_down_by_silence() -> None:
    assert Discovery(instance=7).housekeeping(pair(), {A, B}, 100.0, WALL).events == ()


def measured_pair(core: Discovery, state: FabricState, transit_s: float, at: float) -> None:
    """Control round trips of 1 ms on both switches, probes both ways taking ``transit_s``."""
    echo(core, A, at, 0.001)
    echo(core, B, at, 0.001)
    cross(core, state, A_TO_B, at, transit_s)
    cross(core, state, B_TO_A, at, transit_s)


def latency_reports(events: tuple[ev.Event, ...]) -> list[dict[LinkId, int]]:
    return [dict(e.latencies_us) for e in events if isinstance(e, ev.LinkLatencyMeasured)]


def test_latency_is_reported_once_it_rests_on_three_samples_then_only_when_it_moved_enough() -> None:
    core, state = Discovery(instance=7), pair()
    measured_pair(core, state, 0.003, 0.0)  # (3 + 3 - 1 - 1) / 2 = 2 ms
    measured_pair(core, state, 0.003, 1.0)
    assert latency_reports(core.housekeeping(state, {A, B}, 1.5, WALL).events) == []  # two samples: not yet
    measured_pair(core, state, 0.003, 2.0)
    first = core.housekeeping(state, {A, B}, 2.5, WALL).events
    assert latency_reports(first) == [{A_TO_B: 2000, B_TO_A: 2000}]
    assert first[-1] == ev.LinkLatencyMeasured(((A_TO_B, 2000), (B_TO_A, 2000)), WALL)
    assert latency_reports(core.housekeeping(state, {A, B}, 3.0, WALL).events) == []
    measured_pair(core, state, 0.00295, 3.0)  # 1950 us: 50 us off, below the 100 us floor
    assert latency_reports(core.housekeeping(state, {A, B}, 3.5, WALL).events) == []
    measured_pair(core, state, 0.0027, 4.0)  # 1700 us: 300 us off, but the samples' median is 300 us above it
    assert latency_reports(core.housekeeping(state, {A, B}, 4.5, WALL).events) == []
    measured_pair(core, state, 0.0027, 5.0)
    assert latency_reports(core.housekeeping(state, {A, B}, 5.5, WALL).events) == []
    measured_pair(core, state, 0.0027, 6.0)  # three of seven at 2.7 ms: the median is 2.95, 250 us above
    assert latency_reports(core.housekeeping(state, {A, B}, 6.5, WALL).events) == [{A_TO_B: 1700, B_TO_A: 1700}]


def test_a_first_estimate_taken_under_load_is_corrected_once_the_samples_are_steady() -> None:
    """Start-up: every switch's tables are being written, and a 2 ms link's first probes read 4-40 ms."""
    core, state = Discovery(instance=7), pair()
    for at, transit in ((0.0, 0.043), (1.0, 0.011), (2.0, 0.005)):
        measured_pair(core, state, transit, at)
    assert latency_reports(core.housekeeping(state, {A, B}, 2.5, WALL).events) == [{A_TO_B: 4000, B_TO_A: 4000}]
    measured_pair(core, state, 0.003, 3.0)
    assert core.latency.estimate_us(A_TO_B) == 2000 and core.latency.noise_us(A_TO_B) == 8000
    assert latency_reports(core.housekeeping(state, {A, B}, 3.5, WALL).events) == []
    for at in (4.0, 5.0):
        measured_pair(core, state, 0.003, at)
    assert core.latency.noise_us(A_TO_B) == 2000  # the median sample is the 5 ms one: not yet
    assert latency_reports(core.housekeeping(state, {A, B}, 5.5, WALL).events) == []
    measured_pair(core, state, 0.003, 6.0)  # four of seven at 3 ms: steady
    assert latency_reports(core.housekeeping(state, {A, B}, 6.5, WALL).events) == [{A_TO_B: 2000, B_TO_A: 2000}]


def control_and_transit(core: Discovery, state: FabricState, at: float, control_s: float, transit_s: float) -> None:
    echo(core, A, at, control_s)
    echo(core, B, at, control_s)
    cross(core, state, A_TO_B, at, transit_s)
    cross(core, state, B_TO_A, at, transit_s)


def test_a_first_estimate_low_from_lifted_control_round_trips_rises_once_a_window_holds_quieter_ones() -> None:
    """Seen on a loaded machine: a 1 ms link's first three control round trips were lifted, so too much was
    subtracted (690 us reported); the window's later samples came quieter (1054 us), but that was 364 us
    away against a noise of 367 us, and the model kept 690 for good."""
    core, state = Discovery(instance=7), pair()
    for at in (0.0, 1.0, 2.0):
        control_and_transit(core, state, at, 1.6 * MS, 3 * MS)
    assert latency_reports(core.housekeeping(state, {A, B}, 2.5, WALL).events) == [{A_TO_B: 1400, B_TO_A: 1400}]
    for i in range(4):
        control_and_transit(core, state, 3.0 + i, (1.0 if i < 2 else 1.6) * MS, 3.3 * MS)
    assert core.latency.estimate_us(A_TO_B) == 2000 and core.latency.noise_us(A_TO_B) == 900  # moved 600: within
    assert latency_reports(core.housekeeping(state, {A, B}, 6.5, WALL).events) == []  # quieter, but half a window
    for i in range(WINDOW - 8):
        control_and_transit(core, state, 7.0 + i, 1.6 * MS, 3.3 * MS)
    assert core.latency.samples(A_TO_B) == WINDOW - 1
    assert latency_reports(core.housekeeping(state, {A, B}, 10.5, WALL).events) == []
    control_and_transit(core, state, 11.0, 1.6 * MS, 3.3 * MS)
    assert core.latency.noise_us(A_TO_B) == 900  # still not past the noise, but every term only came quieter
    assert latency_reports(core.housekeeping(state, {A, B}, 11.5, WALL).events) == [{A_TO_B: 2000, B_TO_A: 2000}]


def test_control_round_trips_lifted_by_load_for_a_whole_window_move_no_route_within_the_noise() -> None:
    core, state = Discovery(instance=7), pair()
    for at in (0.0, 1.0, 2.0):
        control_and_transit(core, state, at, 1.0 * MS, 3 * MS)
    assert latency_reports(core.housekeeping(state, {A, B}, 2.5, WALL).events) == [{A_TO_B: 2000, B_TO_A: 2000}]
    for i in range(WINDOW):  # the quiet samples leave the window: the control minima go up with the load
        control_and_transit(core, state, 3.0 + i, (1.4 if i % 2 else 1.9) * MS, 3 * MS)
    assert core.latency.estimate_us(A_TO_B) == 1600 and core.latency.noise_us(A_TO_B) == 500
    assert latency_reports(core.housekeeping(state, {A, B}, 15.5, WALL).events) == []


def test_an_estimate_refines_another_only_on_the_same_terms_none_of_them_higher() -> None:
    then = (3.0, 3.1, 1.0, 1.2)
    assert refines(then, then) and refines((2.9, 3.1, 0.8, 1.2), then)
    assert not refines((2.9, 3.2, 0.8, 1.2), then)  # one term went up: load, maybe
    assert not refines((2.9, None, 0.8, 1.2), then) and not refines((2.9, 3.1, 0.8, 1.2), (3.0, None, 1.0, 1.2))
    assert refines((2.9, None, 0.8, 1.2), (3.0, None, 1.0, 1.2))
    assert not refines(None, then) and not refines(then, None)


def test_no_latency_is_reported_without_the_switches_control_round_trips() -> None:
    core, state = Discovery(instance=7), pair()
    cross(core, state, A_TO_B, 0.0, 0.003)
    assert latency_reports(core.housekeeping(state, {A, B}, 0.5, WALL).events) == []


def test_a_forgotten_switch_takes_its_measurements_along() -> None:
    core, state = Discovery(instance=7), pair()
    measured_pair(core, state, 0.003, 0.0)
    core.forget_switch(B)
    assert core.latency.estimate_us(A_TO_B) is None


def test_a_loop_probe_goes_through_the_table_and_its_round_trip_stands_for_the_control_path() -> None:
    core = Discovery(instance=7)
    packet = core.loop_probe(A, 0.0)
    assert packet == PacketOut(A, None, packet.data)
    probe = frames.parse_lldp_probe(packet.data)
    assert probe is not None and probe.port == LOOP_PORT
    echo(core, A, 0.0, 0.001)
    assert core.on_probe(pair(), A, PortNo(4), packet.data, 0.002, WALL) == ()
    assert core.latency.control_rtt_s(A) == 0.002


def test_no_echo_is_sent_while_loop_probes_time_the_control_path() -> None:
    core = Discovery(instance=7)
    assert core.echo(A, 0.0) is not None  # nothing answered yet: the echo is the fallback
    core.on_probe(pair(), A, PortNo(4), core.loop_probe(A, 1.0).data, 1.001, WALL)
    assert core.echo(A, 1.5) is None and core.echo(A, 1.001 + LOOP_FRESH_S - 0.01) is None
    assert core.echo(B, 1.5) is not None  # another switch: its own loop probes count
    assert core.echo(A, 1.011 + LOOP_FRESH_S) is not None  # loop probes stopped coming back
    core.on_probe(pair(), A, PortNo(4), core.loop_probe(A, 10.0).data, 10.001, WALL)
    core.forget_switch(A)
    assert core.echo(A, 10.5) is not None  # back later: measured afresh


def test_an_echo_reply_that_is_not_ours_or_never_asked_for_is_ignored() -> None:
    core = Discovery(instance=7)
    core.on_echo_reply(A, b"someone else", 1.0)
    request = core.echo(B, 0.0)
    assert request is not None
    core.on_echo_reply(A, request.data, 1.0)  # asked of B, answered by A
    assert core.latency.control_rtt_s(A) is None


def test_probes_that_never_came_back_are_forgotten_after_the_timeout() -> None:
    core, state = Discovery(instance=7), pair()
    packet = core.probe(A, 1, "", 0.0)
    core.housekeeping(state, {A, B}, LINK_TIMEOUT_S + 1, WALL)
    core.on_probe(state, B, PortNo(1), packet.data, LINK_TIMEOUT_S + 1.5, WALL)
    assert core.latency.report()["links"] == []  # arrived, but no transit time to record


def test_the_latency_report_rule_is_three_samples_first_then_5_percent_or_100_us_or_the_noise_whichever_is_larger() -> (
    None
):
    assert not worth_reporting(None, 0, samples=2) and worth_reporting(None, 0, samples=3)
    assert worth_reporting(None, 0, noise_us=5000, samples=3)  # the first one is news, however scattered
    assert not worth_reporting(1000, 1100) and not worth_reporting(1000, 900)
    assert worth_reporting(1000, 1101) and worth_reporting(1000, 899)
    assert not worth_reporting(10_000, 10_500) and worth_reporting(10_000, 10_501)
    assert not worth_reporting(1000, 1400, noise_us=400) and worth_reporting(1000, 1401, noise_us=400)


def test_a_change_within_the_measurements_own_noise_is_not_reported_until_the_samples_settle() -> None:
    """A busy controller: its lag puts probes and control round trips alike anywhere from 0 to 0.8 ms
    late, and the windows' minima wander with it. That is not the link's latency changing."""
    core, state = Discovery(instance=7), pair()
    for at in (0.0, 0.3, 0.6):
        measured_pair(core, state, 0.003, at)
    assert latency_reports(core.housekeeping(state, {A, B}, 0.9, WALL).events) == [{A_TO_B: 2000, B_TO_A: 2000}]
    transit_lag = [0.8, 0.5, 0.7, 0.4, 0.6, 0.8, 0.5, 0.7, 0.6, 0.8, 0.5, 0.4]  # ms; minimum 0.4, median 0.6
    control_lag = [0.0, 0.6, 0.3, 0.5, 0.2, 0.6, 0.4, 0.1, 0.5, 0.3, 0.6, 0.4]  # minimum 0, median 0.4
    for i, (transit, control) in enumerate(zip(transit_lag, control_lag, strict=True)):
        at = 1.0 + i
        echo(core, A, at, (1 + control) * MS)
        echo(core, B, at, (1 + control) * MS)
        cross(core, state, A_TO_B, at, (3 + transit) * MS)
        cross(core, state, B_TO_A, at, (3 + transit) * MS)
    # Every undisturbed sample has left the windows: the estimate moved 0.4 ms, within its noise of 0.6
    assert core.latency.estimate_us(A_TO_B) == 2400 and core.latency.noise_us(A_TO_B) == 600
    assert latency_reports(core.housekeeping(state, {A, B}, 12.5, WALL).events) == []
    for i in range(WINDOW):
        measured_pair(core, state, 0.0034, 13.0 + i)  # steady again, 0.4 ms slower: that stands out
    assert core.latency.noise_us(A_TO_B) == 0
    assert latency_reports(core.housekeeping(state, {A, B}, 25.5, WALL).events) == [{A_TO_B: 2400, B_TO_A: 2400}]
