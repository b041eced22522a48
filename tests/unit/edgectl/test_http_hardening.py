"""The HTTP API against misbehaving clients, over raw sockets: early disconnects, cut-off requests, idle and
slow connections, too many connections, HEAD/OPTIONS, and 404 versus 405."""

from __future__ import annotations

import json
import logging
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest

from edgectl.http_api import HttpApi
from edgectl.metrics import ControllerMetrics
from edgectl.views import topology_view
from netmodel.fabric import build_state
from tests.unit.edgectl.fixtures import example_spec

Address = tuple[str, int]


@contextmanager
def served(**options: float) -> Iterator[tuple[HttpApi, list[object]]]:
    state = build_state(example_spec())
    commands: list[object] = []

    def rotate(_state: object, body: object) -> tuple[int, object]:
        commands.append(body)
        return 200, {"ok": True}

    api = HttpApi("127.0.0.1", 0, lambda: state, ControllerMetrics(), {"/api/v1/topology": topology_view}, **options)
    api.add_route("/api/v1/pki/rotate", rotate, method="POST")
    api.start()
    try:
        yield api, commands
    finally:
        api.stop()


def connect(address: Address) -> socket.socket:
    return socket.create_connection(address, timeout=10)


def read_reply(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Everything until the server closes, parsed: status, headers (lower-case names), body."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


def exchange(address: Address, request: bytes, *, end_writes: bool = False) -> tuple[int, dict[str, str], bytes]:
    with connect(address) as sock:
        sock.sendall(request)
        if end_writes:
            sock.shutdown(socket.SHUT_WR)
        return read_reply(sock)


def timed_healthz(address: Address) -> float:
    started = time.monotonic()
    status, _, body = exchange(address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and json.loads(body)["status"] == "ok"
    return time.monotonic() - started


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b""  # idle clients sent no request: the server has nothing to answer
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def test_a_client_that_goes_away_early_is_no_error(caplog, capsys) -> None:
    caplog.set_level(logging.DEBUG, logger="edgectl")
    with served() as (api, _):
        for _ in range(10):
            with connect(api.address) as sock:  # asks, then closes before the answer is written
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            with connect(api.address) as sock:  # half a request, then a reset while the server reads
                sock.sendall(b"GET /api/v1/topology HTTP/1.1\r\nHo")
                time.sleep(0.02)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert timed_healthz(api.address) < 5  # accepted after every connection above (one accept loop)
        wait_for(lambda: api.open_connections == 0, "every connection's thread to finish")
    assert "Traceback" not in capsys.readouterr().err
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert not [r for r in caplog.records if r.exc_info]


def test_a_cut_off_request_is_refused_not_served() -> None:
    with served() as (api, commands):
        status, _, body = exchange(
            api.address,
            b'POST /api/v1/pki/rotate HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n{"spiffe_id": "spiffe://x/y"}',
            end_writes=True,
        )
        assert status == 400 and "incomplete body: 29 of 60 bytes" in json.loads(body)["error"]
        status, _, body = exchange(api.address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", end_writes=True)
        assert status == 400 and "headers did not end" in json.loads(body)["error"]
        status, _, _ = exchange(api.address, b"GET /healthz HTTP/1.1", end_writes=True)
        assert status == 400
        assert commands == []
        ok = b"POST /api/v1/pki/rotate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        assert exchange(api.address, ok)[0] == 200 and commands == [{}]


def test_idle_and_slow_connections_are_closed_and_healthz_answers_meanwhile() -> None:
    with served(idle_timeout_s=1.5) as (api, _), ExitStack() as stack:
        idle = [stack.enter_context(connect(api.address)) for _ in range(300)]
        slow = stack.enter_context(connect(api.address))
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        wait_for(lambda: api.open_connections == 301, "the server to accept every connection")
        latencies = [timed_healthz(api.address) for _ in range(5)]
        assert max(latencies) < 2.0, latencies  # generous: ~1 ms on an idle machine
        slow_closed = False
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not slow_closed:
            try:
                slow.sendall(b"X-Drip: 1\r\n")  # a header every 0.3 s: each recv is quick, the request never ends
            except ConnectionError:
                slow_closed = True
            time.sleep(0.3)
            slow_closed = slow_closed or closed_by_server(slow)
            slow.setblocking(True)
        assert slow_closed, "a request trickling in forever kept its connection"
        open_ = list(idle)
        while open_ and time.monotonic() < deadline:
            open_ = [sock for sock in open_ if not closed_by_server(sock)]
            time.sleep(0.1)
        assert not open_, f"{len(open_)} idle connections still open"
        assert timed_healthz(api.address) < 5


def test_connections_beyond_the_cap_get_503_at_once() -> None:
    with served(max_connections=20) as (api, _):
        with ExitStack() as stack:
            for _ in range(20):
                stack.enter_context(connect(api.address))
            started = time.monotonic()
            status, headers, body = exchange(api.address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status == 503 and headers["content-type"] == "application/json" and json.loads(body)["error"]
            assert time.monotonic() - started < 2
        deadline = time.monotonic() + 10
        while exchange(api.address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")[0] != 200:
            assert time.monotonic() < deadline, "slots were not freed by closed connections"
            time.sleep(0.05)


def test_head_and_options() -> None:
    with served() as (api, _):
        status, headers, body = exchange(api.address, b"HEAD /api/v1/topology HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 1000
        assert headers["content-type"] == "application/json"
        status, headers, body = exchange(api.address, b"OPTIONS /api/v1/topology HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 204 and headers["allow"] == "GET, HEAD, OPTIONS" and body == b""
        status, headers, _ = exchange(api.address, b"OPTIONS /api/v1/pki/rotate HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 204 and headers["allow"] == "POST, OPTIONS"
        assert exchange(api.address, b"OPTIONS /nothing HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 404


@pytest.mark.parametrize(
    ("request_line", "status", "allow"),
    [
        (b"PUT /nothing", 404, None),
        (b"DELETE /api/v1/nothing", 404, None),
        (b"PUT /healthz", 405, "GET, HEAD, OPTIONS"),
        (b"DELETE /api/v1/topology", 405, "GET, HEAD, OPTIONS"),
        (b"PATCH /metrics", 405, "GET, HEAD, OPTIONS"),
        (b"GET /api/v1/pki/rotate", 405, "POST, OPTIONS"),
        (b"POST /api/v1/topology", 405, "GET, HEAD, OPTIONS"),
        (b"BREW /healthz", 501, None),
    ],
)
def test_unknown_path_is_404_wrong_method_405_and_every_error_is_json(
    request_line: bytes, status: int, allow: str | None
) -> None:
    with served() as (api, _):
        got, headers, body = exchange(api.address, request_line + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert got == status and headers.get("allow") == allow
    assert headers["content-type"] == "application/json" and json.loads(body)["error"]


def test_a_malformed_request_line_gets_json() -> None:
    with served() as (api, _):
        status, headers, body = exchange(api.address, b"GARBAGE\r\n\r\n")
    assert status == 400 and headers["content-type"] == "application/json" and json.loads(body)["error"]
