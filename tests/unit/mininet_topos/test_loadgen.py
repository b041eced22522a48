"""The request loop: records in and out, the summary, the fixed-rate schedule, and a real run on loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import pytest

from mininet_topos.loadgen import Record, client_for, parse_args, parse_records, run, summarize, workloads_in
from tests.unit.mininet_topos.test_app import REPO, get, read_line, running_app


def record(
    t: float, ms: float = 1.0, status: int = 200, workload: str | None = "w1", error: str | None = None
) -> Record:
    return Record(t=t, ms=ms, status=status, workload=workload, caller=None, error=error)


def test_a_record_is_ok_only_with_200_and_no_error() -> None:
    assert record(0).ok
    assert not record(0, status=502, error="HTTP 502 Bad Gateway").ok
    assert not record(0, status=0, workload=None, error="ConnectionRefusedError").ok
    assert not record(0, status=200, error="odd").ok


def test_records_round_trip_and_garbage_is_skipped() -> None:
    a = Record(t=1.5, ms=2.25, status=200, workload="web-1", caller="spiffe://td/host/u1", error=None)
    b = Record(t=2.0, ms=2000.0, status=0, workload=None, caller=None, error="TimeoutError: timed out")
    lines = [
        a.to_json() + "\n",
        "",
        "   \n",
        "not json",
        '{"t": 1.0',  # a partial last line (the process was killed mid-write)
        "[1, 2]",
        '{"t": "soon", "ms": 1, "status": 200, "workload": null, "caller": null, "error": null}',
        '{"t": 1, "ms": 1, "status": true, "workload": null, "caller": null, "error": null}',
        '{"t": 1, "ms": 1, "status": 200, "workload": 7, "caller": null, "error": null}',
        '{"t": 1, "ms": 1, "status": 200}',  # fields absent: read as null
        b.to_json(),
    ]
    assert parse_records(lines) == [a, Record(1.0, 1.0, 200, None, None, None), b]
    assert json.loads(a.to_json()) == {
        "t": 1.5,
        "ms": 2.25,
        "status": 200,
        "workload": "web-1",
        "caller": "spiffe://td/host/u1",
        "error": None,
        "served_by": [],
    }


def test_served_by_names_every_workload_on_the_way_depth_first() -> None:
    body = {
        "workload": "web-1",
        "calls": [{"workload": "api-2", "calls": [{"workload": "db-1", "calls": []}]}, {"workload": "auth-1"}],
    }
    assert workloads_in(body) == ("web-1", "api-2", "db-1", "auth-1")
    assert workloads_in({"error": "x"}) == () and workloads_in(None) == ()
    record = Record(1.0, 1.0, 200, "web-1", None, None, ("web-1", "api-2"))
    assert parse_records([record.to_json()]) == [record]
    assert parse_records(['{"t": 1, "ms": 1, "status": 200, "served_by": [1]}']) == []


def test_summary_over_a_window() -> None:
    records = [record(float(t), ms=float(t + 1)) for t in range(100)]  # ms 1..100
    records.append(record(50.5, ms=9999.0, status=502, workload="w2", error="HTTP 502 Bad Gateway"))
    records.append(record(60.5, ms=2000.0, status=0, workload=None, error="TimeoutError"))
    whole = summarize(records)
    assert (whole.sent, whole.failed, whole.p50_ms, whole.p99_ms) == (102, 2, 50.0, 99.0)  # failures not in latency
    assert whole.served_by == {"w1": 100, "w2": 1}
    window = summarize(records, start=50.0, end=60.0)  # t in [50, 60): 10 ok plus the 502
    assert (window.sent, window.failed, window.p50_ms, window.p99_ms) == (11, 1, 55.0, 60.0)
    assert window.served_by == {"w1": 10, "w2": 1}
    assert summarize(records, start=99.0).sent == 1


def test_summary_of_nothing_ok() -> None:
    empty = summarize([])
    assert (empty.sent, empty.failed, empty.p50_ms, empty.p99_ms, dict(empty.served_by)) == (0, 0, None, None, {})
    failing = summarize([record(0, status=0, workload=None, error="refused")])
    assert (failing.sent, failing.failed, failing.p50_ms, failing.p99_ms) == (1, 1, None, None)


class FakeTime(threading.Event):
    """A clock that moves only when the loop waits or a request takes time."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None and timeout > 0
        self.now += timeout
        return self.is_set()


def test_a_slow_request_delays_the_next_slots_but_none_is_skipped() -> None:
    fake = FakeTime()
    sent_at: list[float] = []

    def send() -> Record:
        sent_at.append(fake.now)
        fake.now += 0.35 if len(sent_at) == 1 else 0.01  # the first request overruns three slots
        return record(fake.now)

    count = run(send, lambda _: None, rate=10, duration=1.0, stop=fake, clock=fake.clock)
    assert count == 10  # every slot of 1 s at 10/s
    assert sent_at == pytest.approx([0.0, 0.35, 0.36, 0.37, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])


def test_stop_ends_the_loop_after_the_request_in_flight() -> None:
    fake = FakeTime()
    emitted: list[Record] = []

    def send() -> Record:
        if len(emitted) == 2:
            fake.set()  # the signal arrives while the third request is in flight
        return record(fake.now)

    assert run(send, emitted.append, rate=100, duration=None, stop=fake, clock=fake.clock) == 3
    assert len(emitted) == 3


def test_arguments() -> None:
    args = parse_args(["--url", "http://10.0.0.1:8080/"])
    assert (args.host, args.rate, args.timeout, args.duration) == (None, 50.0, 2.0, None)
    for bad in (["--url", "https://x/"], ["--url", "x:80"], ["--url", "http://x/", "--rate", "0"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
    client = client_for("http://127.0.0.1:8080/a?b=1", "web", 2.0)
    assert (client.host, client.port, client.path, client.host_header) == ("127.0.0.1", 8080, "/a?b=1", "web")
    assert client_for("http://h", None, 1.0).host_header == "h" and client_for("http://h", None, 1.0).path == "/"


def test_a_user_reaches_front_then_back_on_loopback() -> None:
    with (
        running_app("back-1", "back") as back,
        running_app("front-1", "front", (f"back={back[0]}:{back[1]}",)) as front,
    ):
        url = f"http://{front[0]}:{front[1]}/"
        command = [sys.executable, "-m", "mininet_topos.loadgen", "--url", url, "--host", "front"]
        command += ["--rate", "20", "--duration", "1"]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
        status, _, body = get(front)
    records = parse_records(done.stdout.splitlines())
    assert len(records) == len(done.stdout.splitlines()) and 15 <= len(records) <= 21, done.stdout
    assert all(r.ok and r.workload == "front-1" for r in records), done.stdout
    assert status == 200 and [call["workload"] for call in body["calls"]] == ["back-1"]
    assert summarize(records).served_by == {"front-1": len(records)}
    assert done.stderr == ""


def test_sigterm_finishes_and_exits_cleanly() -> None:
    with running_app("front-1", "front") as front:
        command = [sys.executable, "-m", "mininet_topos.loadgen", "--url", f"http://{front[0]}:{front[1]}/"]
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = parse_records([read_line(process, 10.0)])
            assert first and first[0].ok
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.terminate()
            process.wait(timeout=10)
    assert process.returncode == 0 and err == ""
    assert all(line and parse_records([line]) for line in out.splitlines())  # no half-written line
