"""The pacer's pure parts: frame arithmetic, the pacing schedule, the receiver's summary, the probe's figures."""

from __future__ import annotations

import json

import pytest

from mininet_topos.pacer import (
    PacerError,
    Summary,
    due_packets,
    frame_bytes,
    packets_per_second,
    parse_args,
    percentile,
    ping_summary,
    summarize,
    total_packets,
    udp_payload_for_frame,
)


@pytest.mark.parametrize(("frame", "payload"), [(64, 22), (512, 470), (1500, 1458), (1514, 1472)])
def test_udp_payload_makes_the_frame_exactly(frame: int, payload: int) -> None:
    assert udp_payload_for_frame(frame) == payload
    assert frame_bytes("udp", payload) == frame


def test_a_tcp_segment_of_1448_bytes_is_a_full_frame() -> None:
    assert frame_bytes("tcp", 1448) == 1514


@pytest.mark.parametrize("frame", [63, 1515, 0])
def test_frames_outside_ethernet_are_refused(frame: int) -> None:
    with pytest.raises(PacerError, match="frame must be"):
        udp_payload_for_frame(frame)


def test_packet_rate_counts_whole_frames() -> None:
    assert packets_per_second(10, 64) == pytest.approx(19531.25)
    assert packets_per_second(8, 1514) == pytest.approx(660.5, abs=0.1)
    with pytest.raises(PacerError):
        packets_per_second(0, 64)


def test_the_schedule_sends_packet_k_at_k_over_pps() -> None:
    pps = 1000.0
    assert due_packets(-0.1, pps, 10) == 0
    assert due_packets(0.0, pps, 10) == 1  # the first leaves at once
    assert due_packets(0.0015, pps, 10) == 2
    assert due_packets(0.0095, pps, 10) == 10
    assert due_packets(5.0, pps, 10) == 10  # never more than the total
    assert total_packets(2.0, 19531.25) == 39062
    assert total_packets(0.0001, 10) == 1


def test_the_schedule_averages_the_rate_over_a_run() -> None:
    pps = packets_per_second(5, 512)
    total = total_packets(3.0, pps)
    assert due_packets(3.0 - 1e-9, pps, total) == pytest.approx(total, abs=1)
    assert due_packets(1.5, pps, total) == pytest.approx(total / 2, abs=1)


def test_summary_takes_the_steady_part_and_counts_udp_frames_whole() -> None:
    # 0.1 s intervals: a slow first one, eight steady ones of 10 datagrams of 22 bytes (64-byte frames), a partial last
    buckets = [22] + [220] * 8 + [44]
    counts = [1] + [10] * 8 + [2]
    summary = summarize("udp", buckets, counts, 0.1, warmup=0.1, duration=0.95)
    assert summary.frames == 83
    assert summary.bytes == 22 * 83
    assert summary.l2_bytes == 64 * 83
    assert summary.steady_s == pytest.approx(0.8)
    assert summary.l2_mbps == pytest.approx(10 * 64 * 8 / 0.1 / 1e6)
    assert summary.goodput_mbps == pytest.approx(10 * 22 * 8 / 0.1 / 1e6)


def test_summary_of_tcp_counts_segments_of_1448() -> None:
    summary = summarize("tcp", [1448 * 10] * 5, [3] * 5, 0.1, warmup=0.0, duration=0.5)
    assert summary.frames == 50
    assert summary.l2_bytes == 1514 * 50
    assert summary.goodput_mbps == pytest.approx(1448 * 10 * 8 / 0.1 / 1e6)
    assert summary.l2_mbps == pytest.approx(1514 * 10 * 8 / 0.1 / 1e6)


def test_summary_of_a_short_run_uses_every_interval_and_of_nothing_is_zero() -> None:
    short = summarize("udp", [100, 100], [1, 1], 0.1, warmup=1.0, duration=0.15)
    assert short.steady_s == pytest.approx(0.2)
    empty = summarize("udp", [], [], 0.1, warmup=1.0, duration=0.0)
    assert (empty.bytes, empty.l2_mbps, empty.goodput_mbps) == (0, 0.0, 0.0)


def test_summary_is_one_json_line() -> None:
    line = summarize("udp", [470] * 3, [1] * 3, 0.1, 0.0, 0.3).to_json()
    assert "\n" not in line
    assert Summary(**json.loads(line)).frames == 3


def test_probe_figures() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    out = ping_summary([1.0, 2.0, 10.0], sent=4)
    assert (out["received"], out["lost"], out["p50_ms"], out["max_ms"]) == (3, 1, 2.0, 10.0)
    assert ping_summary([], 5)["p50_ms"] is None


def test_bad_arguments_are_refused_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["send", "--to", "10.0.0.1", "--port", "1", "--rate-mbps", "5", "--frame", "40"])
    assert "frame must be 64..1514" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["send", "--to", "10.0.0.1", "--port", "1", "--rate-mbps", "-1"])
    assert "rate must be > 0" in capsys.readouterr().err


def test_a_tcp_receiver_waits_out_a_retransmission_timeout_before_it_calls_the_flow_over() -> None:
    assert parse_args(["recv", "--proto", "tcp", "--port", "1"]).idle == 5.0
    assert parse_args(["recv", "--port", "1"]).idle == 1.0
    assert parse_args(["recv", "--port", "1", "--idle", "3"]).idle == 3.0


def test_the_callers_side_reads_ready_and_the_result_and_stops_what_it_started() -> None:
    import subprocess
    import sys

    from mininet_topos.controller_process import stop_processes
    from mininet_topos.pacer import result_of, wait_ready

    script = "import sys; print('{\"ready\": true}', file=sys.stderr, flush=True); print('{\"l2_mbps\": 8.0}')"
    done = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_ready(done)
    assert result_of(done, 10) == {"l2_mbps": 8.0}
    failed = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.exit('no port')"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with pytest.raises(RuntimeError, match="did not start"):
        wait_ready(failed)
    failed.wait(5)
    stuck = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stop_processes([stuck, done], timeout=2)
    assert stuck.returncode is not None
