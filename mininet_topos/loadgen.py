"""A user's request loop: GET a URL at a steady rate and print one JSON line per request.

Runs inside a Mininet host's network namespace (``host.popen``). Standard library only, and nothing
from the rest of the project, so it starts fast.

Run: ``python -m mininet_topos.loadgen --url http://127.0.0.1:8080/ --host web --rate 50``.
Each line on stdout: ``{"t", "ms", "status", "workload", "caller", "error"}`` (see ``Record``).
Runs until ``--duration`` has elapsed or SIGTERM/SIGINT (the request in flight finishes first), exit 0.

``parse_records`` and ``summarize`` read those lines back (tests, benchmarks, the demo's report).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import signal
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

WORKLOAD_HEADER = "x-edgectl-workload"
MAX_ERROR_CHARS = 200  # a reason, not a page of HTML


@dataclass(frozen=True, slots=True)
class Record:
    """One request: when it was sent (time.time()), how long it took, and who answered."""

    t: float
    ms: float
    status: int  # 0: no HTTP response (connect refused, reset, timeout)
    workload: str | None  # the x-edgectl-workload response header
    caller: str | None  # "caller" in the JSON body: the SPIFFE id the service saw
    error: str | None  # transport error, or why a response was not a success
    served_by: tuple[str, ...] = ()
    """Every workload on the request's way: the one that answered, then those it called (depth first)."""

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def _optional_str(value: Any) -> bool:
    return value is None or isinstance(value, str)


def parse_record(line: str) -> Record | None:
    """The Record on this line, or None when it is blank or not one (a partial last line, a stray print)."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    t, ms, status = data.get("t"), data.get("ms"), data.get("status")
    workload, caller, error = data.get("workload"), data.get("caller"), data.get("error")
    if not (isinstance(t, int | float) and isinstance(ms, int | float) and isinstance(status, int)):
        return None
    if any(isinstance(value, bool) for value in (t, ms, status)):  # bool is an int, but true is no status
        return None
    if not (_optional_str(workload) and _optional_str(caller) and _optional_str(error)):
        return None
    served = data.get("served_by", [])
    if not isinstance(served, list) or not all(isinstance(w, str) for w in served):
        return None
    return Record(float(t), float(ms), status, workload, caller, error, tuple(served))


def workloads_in(body: Any) -> tuple[str, ...]:
    """The workloads that answered, from the app's JSON body: its own, then its calls' (depth first)."""
    if not isinstance(body, dict):
        return ()
    own = body.get("workload")
    found = [own] if isinstance(own, str) else []
    calls = body.get("calls")
    for call in calls if isinstance(calls, list) else ():
        found.extend(workloads_in(call))
    return tuple(found)


def parse_records(lines: Iterable[str]) -> list[Record]:
    """Records from loadgen's output lines, in order; blank and garbled lines are skipped."""
    return [record for record in map(parse_record, lines) if record is not None]


@dataclass(frozen=True, slots=True)
class Summary:
    sent: int
    failed: int
    p50_ms: float | None  # over successful requests only; None when there were none
    p99_ms: float | None
    served_by: Mapping[str, int]  # workload -> requests it answered (failed ones too: it still answered)


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(records: Iterable[Record], start: float | None = None, end: float | None = None) -> Summary:
    """Counts and latency over the records sent in [start, end) (either bound None: open)."""
    window = [record for record in records if (start is None or record.t >= start) and (end is None or record.t < end)]
    latencies = sorted(record.ms for record in window if record.ok)
    served_by = Counter(record.workload for record in window if record.workload is not None)
    return Summary(
        sent=len(window),
        failed=sum(1 for record in window if not record.ok),
        p50_ms=percentile(latencies, 50) if latencies else None,
        p99_ms=percentile(latencies, 99) if latencies else None,
        served_by=dict(served_by),
    )


def _error_reason(status: int, reason: str, body: Any) -> str | None:
    if 200 <= status < 300:
        return None
    detail = body.get("error") if isinstance(body, dict) else None
    text = f"HTTP {status} {reason}".strip() + (f": {detail}" if isinstance(detail, str) else "")
    return text[:MAX_ERROR_CHARS]


class Client:
    """One persistent connection, reopened for the next request after any error."""

    def __init__(self, host: str, port: int, path: str, host_header: str, timeout: float) -> None:
        self.host, self.port, self.path, self.host_header, self.timeout = host, port, path, host_header, timeout
        self.connection: http.client.HTTPConnection | None = None

    def get(self) -> Record:
        sent = time.time()
        began = time.perf_counter()
        try:
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.connection.request("GET", self.path, headers={"Host": self.host_header})
            response = self.connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            ms = (time.perf_counter() - began) * 1000.0
            self.close()
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return Record(sent, ms, 0, None, None, error[:MAX_ERROR_CHARS])
        ms = (time.perf_counter() - began) * 1000.0
        try:
            body: Any = json.loads(data)
        except ValueError:
            body = None
        caller = body.get("caller") if isinstance(body, dict) else None
        return Record(
            t=sent,
            ms=ms,
            status=response.status,
            workload=response.getheader(WORKLOAD_HEADER),
            caller=caller if isinstance(caller, str) else None,
            error=_error_reason(response.status, response.reason, body),
            served_by=workloads_in(body),
        )

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def run(
    send: Callable[[], Record],
    emit: Callable[[Record], None],
    rate: float,
    duration: float | None,
    stop: threading.Event,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Send at fixed slots start + i/rate until duration or stop; returns how many were sent.

    A request that overruns its slot delays the next ones, which then go out back to back until the
    schedule is caught up: every slot is a request, so the offered load is what --rate says.
    """
    interval = 1.0 / rate
    start = clock()
    end = math.inf if duration is None else start + duration
    sent = 0
    while not stop.is_set():
        due = start + sent * interval
        if due >= end:
            break
        wait = due - clock()
        if wait > 0 and stop.wait(wait):  # the signal handler sets stop: wake at once
            break
        if clock() >= end:
            break
        emit(send())
        sent += 1
    return sent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mininet_topos.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="http://HOST:PORT/PATH to GET")
    parser.add_argument("--host", help="Host header (default: the URL's host), e.g. the service name")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (default 50)")
    parser.add_argument("--timeout", type=float, default=2.0, help="per-request timeout, seconds (default 2)")
    parser.add_argument("--duration", type=float, help="seconds to run (default: until SIGTERM/SIGINT)")
    args = parser.parse_args(argv)
    url = urllib.parse.urlsplit(args.url)
    if url.scheme != "http" or not url.hostname:
        parser.error(f"--url must be http://HOST[:PORT]/..., got {args.url!r}")
    if args.rate <= 0 or args.timeout <= 0:
        parser.error("--rate and --timeout must be > 0")
    if args.duration is not None and args.duration < 0:
        parser.error("--duration must be >= 0")
    return args


def client_for(url: str, host_header: str | None, timeout: float) -> Client:
    parts = urllib.parse.urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    hostname = parts.hostname or ""
    return Client(hostname, parts.port or 80, path, host_header or parts.netloc, timeout)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()

    def request_stop(_signum: int, _frame: object) -> None:
        stop.set()  # only a flag: the request in flight completes and is printed

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    client = client_for(args.url, args.host, args.timeout)

    def emit(record: Record) -> None:
        print(record.to_json(), flush=True)

    try:
        run(client.get, emit, args.rate, args.duration, stop)
    except BrokenPipeError:  # whoever read our output is gone; nothing left to report to
        # Point stdout at /dev/null so the interpreter's final flush does not complain a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
