"""The demo workload: XFCC parsing, arguments, and two real apps on loopback (front calls back)."""

from __future__ import annotations

import http.client
import json
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from mininet_topos.app import CallCounts, Caller, Target, caller_from_xfcc, parse_address, parse_args, parse_target

REPO = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 10.0


@pytest.mark.parametrize(
    ("header", "caller"),
    [
        (None, None),
        ("", None),
        ("By=spiffe://td/svc/web/w/web-1;Hash=abc;URI=spiffe://td/host/u1", "spiffe://td/host/u1"),
        ("uri=spiffe://td/a", "spiffe://td/a"),  # Envoy writes URI; keys are not case-sensitive here
        # Two hops: the last element is the one our sidecar added, about its own client.
        ("By=spiffe://td/x;URI=spiffe://td/first, By=spiffe://td/y;URI=spiffe://td/second", "spiffe://td/second"),
        ('By=spiffe://td/y;URI="spiffe://td/quoted"', "spiffe://td/quoted"),
        # Quoted values may hold the separators; they must not split the element or the field.
        ('Hash=h;Subject="CN=a,O=b;c";URI=spiffe://td/u2', "spiffe://td/u2"),
        ('By=spiffe://td/x;URI=spiffe://td/first,Subject="O=\\"q,\\"";URI=spiffe://td/last', "spiffe://td/last"),
        ("By=spiffe://td/x;Hash=abc", None),  # no client certificate URI SAN
        ("URI=spiffe://td/first,By=spiffe://td/x;Hash=abc", None),  # only the last element counts
        ("By=spiffe://td/x;URI=", None),
    ],
)
def test_caller_is_the_uri_of_the_last_xfcc_element(header: str | None, caller: str | None) -> None:
    assert caller_from_xfcc(header) == caller


def test_addresses_and_targets() -> None:
    assert parse_address("10.0.0.1:8080") == ("10.0.0.1", 8080)
    assert parse_address("[::1]:80") == ("::1", 80)
    assert parse_target("api=127.0.0.1:15001") == Target("api", "127.0.0.1", 15001)
    for bad in ("10.0.0.1", ":80", "host:http", "host:70000"):
        with pytest.raises(ValueError):
            parse_address(bad)
    with pytest.raises(ValueError):
        parse_target("127.0.0.1:15001")


def test_arguments() -> None:
    args = parse_args(["--workload", "w1", "--service", "web", "--listen", "0.0.0.0:80", "--call", "a=h:1"])
    assert (args.workload, args.service, args.listen, args.call) == (
        "w1",
        "web",
        ("0.0.0.0", 80),
        [Target("a", "h", 1)],
    )
    with pytest.raises(SystemExit):
        parse_args(["--workload", "w1", "--service", "web", "--listen", "nope"])


def test_calls_in_one_argument_as_the_run_placeholder_gives_them() -> None:
    base = ["--workload", "w1", "--service", "web", "--listen", "127.0.0.1:0"]
    args = parse_args([*base, "--calls", "api=127.0.0.1:9090,2.0,512;db=127.0.0.1:5432,0.5,0"])
    assert args.call == [Target("api", "127.0.0.1", 9090, 2.0, 512), Target("db", "127.0.0.1", 5432, 0.5, 0)]
    assert parse_args([*base, "--calls", ""]).call == []  # {calls} of a service that calls nobody
    both = parse_args([*base, "--call", "a=h:1", "--calls", "b=h:2,1,0"]).call
    assert both == [Target("a", "h", 1), Target("b", "h", 2, 1.0, 0)]
    with pytest.raises(SystemExit):
        parse_args([*base, "--calls", "api=nowhere"])


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "no line from the process in time"
    return process.stdout.readline()


@contextmanager
def running_app(workload: str, service: str, calls: tuple[str, ...] = (), port: int = 0) -> Iterator[tuple[str, int]]:
    """Start the app on loopback (port 0: it picks a free one and prints it); stop it however the test ends."""
    command = [sys.executable, "-m", "mininet_topos.app", "--workload", workload, "--service", service]
    command += ["--listen", f"127.0.0.1:{port}", *(arg for call in calls for arg in ("--call", call))]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        line = read_line(process, START_TIMEOUT_S)
        assert line.startswith("listening "), line
        host, port = parse_address(line.split()[1])
        yield host, port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # never leave it behind: a later test (or run) would find it
            process.kill()
            process.wait(timeout=10)


def get(address: tuple[str, int], headers: dict[str, str] | None = None) -> tuple[int, str | None, Any]:
    connection = http.client.HTTPConnection(*address, timeout=5)
    try:
        connection.request("GET", "/any/path", headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("x-edgectl-workload"), json.loads(response.read())
    finally:
        connection.close()


def test_front_calls_back_and_reports_its_caller() -> None:
    with (
        running_app("back-1", "back") as back,
        running_app("front-1", "front", (f"back={back[0]}:{back[1]}",)) as front,
    ):
        xfcc = "By=spiffe://td/svc/front/w/front-1;Hash=abc;URI=spiffe://td/host/u1"
        status, workload, body = get(front, {"x-forwarded-client-cert": xfcc})
        assert (status, workload) == (200, "front-1")
        assert body == {
            "workload": "front-1",
            "service": "front",
            "caller": "spiffe://td/host/u1",
            "calls": [{"workload": "back-1", "service": "back", "caller": None, "calls": []}],
        }


def test_a_failed_downstream_call_is_a_502_naming_the_service() -> None:
    with running_app("back-1", "back") as back:
        dead = f"back={back[0]}:{back[1]}"
    # The back is stopped: its port refuses connections.
    with running_app("front-1", "front", (dead,)) as front:
        status, workload, body = get(front)
    assert (status, workload) == (502, "front-1")
    assert body["workload"] == "front-1" and body["error"].startswith("back: ")


def _get_on(connection: http.client.HTTPConnection) -> Any:
    connection.request("GET", "/")
    response = connection.getresponse()
    assert response.status == 200
    return json.loads(response.read())


def test_a_downstream_restarted_under_a_kept_alive_connection_is_reached_again() -> None:
    # The front keeps one connection to the back per thread; when the back restarts, that connection
    # is dead, and the front must reconnect once rather than answer 502.
    with ExitStack() as stack:
        first_back = ExitStack()
        stack.enter_context(first_back)
        _, back_port = first_back.enter_context(running_app("back-1", "back"))
        front = stack.enter_context(running_app("front-1", "front", (f"back=127.0.0.1:{back_port}",)))
        connection = http.client.HTTPConnection(*front, timeout=5)  # one client connection: one front thread
        stack.callback(connection.close)
        assert _get_on(connection)["calls"][0]["workload"] == "back-1"
        first_back.close()
        stack.enter_context(running_app("back-2", "back", port=back_port))
        assert _get_on(connection)["calls"][0]["workload"] == "back-2"


def test_sigterm_exits_cleanly() -> None:
    command = [
        sys.executable,
        "-m",
        "mininet_topos.app",
        "--workload",
        "w",
        "--service",
        "s",
        "--listen",
        "127.0.0.1:0",
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert read_line(process, START_TIMEOUT_S).startswith("listening 127.0.0.1:")
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.returncode == 0
        assert process.stderr is not None and process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=10)


def test_weighted_targets_and_their_arguments() -> None:
    assert parse_target("cart=127.0.0.1:7070,0.5,2048") == Target("cart", "127.0.0.1", 7070, 0.5, 2048)
    assert parse_target("cart=[::1]:7070,3") == Target("cart", "::1", 7070, 3.0, 0)
    target = parse_target("cart=h:1,1,1001")
    assert (target.request_bytes, target.response_bytes) == (500, 501)
    for bad in ("cart=h:1,-1", "cart=h:1,nan", "cart=h:1,inf", "cart=h:1,1,-5", "cart=h:1,1,2,3", "cart=h:1,x"):
        with pytest.raises(ValueError):
            parse_target(bad)


@pytest.mark.parametrize(
    ("per_request", "expected"),
    [(3, [3, 3, 3, 3]), (0.5, [0, 1, 0, 1]), (0.25, [0, 0, 0, 1]), (1.5, [1, 2, 1, 2]), (0, [0, 0, 0, 0])],
)
def test_call_counts_average_per_request_deterministically(per_request: float, expected: list[int]) -> None:
    counts = CallCounts((Target("a", "h", 1, per_request),))
    assert [counts.next_request()[0] for _ in expected] == expected


def test_one_in_ten_is_exact_over_many_requests() -> None:
    counts = CallCounts((Target("a", "h", 1, 0.1), Target("b", "h", 2, 4.0)))
    made = [counts.next_request() for _ in range(1000)]
    assert sum(a for a, _ in made) == 100 and sum(b for _, b in made) == 4000
    assert [i for i, (a, _) in enumerate(made[:30]) if a] == [9, 19, 29]


def test_weighted_calls_are_made_per_request_and_move_their_bytes() -> None:
    with (
        running_app("back-1", "back") as back,
        running_app("half-1", "half") as half,
        running_app(
            "front-1", "front", (f"back={back[0]}:{back[1]},3,4000", f"half={half[0]}:{half[1]},0.5,0")
        ) as front,
    ):
        first, second = get(front)[2], get(front)[2]
        assert [c["workload"] for c in first["calls"]] == ["back-1"] * 3
        assert [c["workload"] for c in second["calls"]] == ["back-1"] * 3 + ["half-1"]
        assert all("pad" not in c for c in first["calls"])  # the caller drops the padding it asked for
        # The back answers a call with the padding asked for (half of the call's bytes).
        status, _, padded = get(back, {"x-edgectl-pad": "2000"})
        assert status == 200 and padded["pad"] == "x" * 2000
        assert "pad" not in get(back)[2]


def test_a_weighted_call_sends_half_its_bytes_as_the_request_body() -> None:
    import http.server
    import threading

    seen: list[tuple[int, str | None]] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen.append((len(self.rfile.read(length)), self.headers.get("x-edgectl-pad")))
            data = b'{"workload": "r", "pad": "xx"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        caller = Caller()
        assert caller.call(Target("r", "127.0.0.1", server.server_address[1], 1, 3000)) == {"workload": "r"}
        caller.close()
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [(1500, "1500")]


def test_calls_as_one_argument_as_the_node_agent_gives_them() -> None:
    args = parse_args(
        [
            "--workload",
            "w1",
            "--service",
            "web",
            "--listen",
            "127.0.0.1:80",
            "--call",
            "a=h:1",
            "--calls",
            "b=h:2,0.5,10;c=h:3",
        ]
    )
    assert [(t.service, t.port, t.per_request, t.bytes_per_call) for t in args.call] == [
        ("a", 1, 1.0, 0),
        ("b", 2, 0.5, 10),
        ("c", 3, 1.0, 0),
    ]
    none = parse_args(["--workload", "w1", "--service", "web", "--listen", "127.0.0.1:80", "--calls", ""])
    assert none.call == []
    with pytest.raises(SystemExit):
        parse_args(["--workload", "w1", "--service", "web", "--listen", "127.0.0.1:80", "--calls", "b=nope"])
