"""nodeagent.warmup against real sockets on loopback: a listener that is not there yet is waited for, a
gateway error (no endpoint yet) is tried again, the first other answer ends it unless the new sidecar
says it has no connection yet (the answer came through another sidecar on the address), a TCP callee is
never sent an HTTP request, and a warm-up that finds nothing gives up at its deadline."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from meshctl.xds_types import WARM_UP_PATH
from nodeagent.plan import Call
from nodeagent.warmup import request, sidecar_connections, status_of, warm_up, warm_up_in_background


@contextmanager
def serving(server: socket.socket, answer: Callable[[bytes], bytes]) -> Iterator[list[bytes]]:
    """Accept on a bound ``server`` until the block ends, one request per connection, each answered with
    ``answer(request)``; yields the requests read."""
    server.listen()
    server.settimeout(0.1)
    seen: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                seen.append(connection.recv(4096))
                connection.sendall(answer(seen[-1]))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()


@contextmanager
def sidecar_outbound(answers: list[int], port: int = 0) -> Iterator[tuple[int, list[bytes]]]:
    """A listener standing in for a sidecar's outbound one: answers each request with the next status
    of ``answers`` (the last one from then on); yields its port and the requests it read."""
    server = socket.socket()
    server.bind(("127.0.0.1", port))
    statuses = iter(answers)
    last = answers[-1]

    def answer(_request: bytes) -> bytes:
        return f"HTTP/1.1 {next(statuses, last)} X\r\ncontent-length: 0\r\n\r\n".encode()

    with serving(server, answer) as seen:
        yield server.getsockname()[1], seen


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_request_names_the_callee_and_the_warm_up_path() -> None:
    assert request("db") == f"GET {WARM_UP_PATH} HTTP/1.1\r\nHost: db\r\nConnection: close\r\n\r\n".encode()
    assert status_of(b"HTTP/1.1 204 No Content\r\n\r\n") == 204
    assert status_of(b"garbage") is None
    assert status_of(b"") is None


def test_gateway_errors_are_tried_again_until_the_callee_answers() -> None:
    with sidecar_outbound([503, 503, 204]) as (port, seen):
        result = warm_up("127.0.0.1", Call("db", port), time.monotonic() + 5, threading.Event())
    assert result.status == 204 and result.service == "db"
    assert len(seen) == 3 and all(r.startswith(f"GET {WARM_UP_PATH} ".encode()) for r in seen)


def test_a_listener_not_there_yet_is_waited_for() -> None:
    port = free_port()
    results: list[int | None] = []

    def later() -> None:
        results.append(warm_up("127.0.0.1", Call("db", port), time.monotonic() + 5, threading.Event()).status)

    thread = threading.Thread(target=later)
    thread.start()
    time.sleep(0.2)  # refused meanwhile: the sidecar has not its listener yet
    with sidecar_outbound([204], port) as (_, seen):
        thread.join(timeout=5)
    assert results == [204] and len(seen) == 1


def test_nothing_listening_gives_up_at_the_deadline_and_cancel_stops_it_sooner() -> None:
    port = free_port()
    started = time.monotonic()
    result = warm_up("127.0.0.1", Call("db", port), time.monotonic() + 0.3, threading.Event())
    assert result.status is None and 0.2 < time.monotonic() - started < 2.0
    cancelled = threading.Event()
    cancelled.set()
    started = time.monotonic()
    assert warm_up("127.0.0.1", Call("db", port), time.monotonic() + 30, cancelled).status is None
    assert time.monotonic() - started < 1.0


def test_only_http_callees_are_warmed_in_the_background() -> None:
    done: list[tuple[str, int | None]] = []
    with sidecar_outbound([204]) as (http_port, seen), sidecar_outbound([204]) as (tcp_port, tcp_seen):
        calls = [Call("api", http_port), Call("cache", tcp_port, protocol="tcp")]
        threads = warm_up_in_background(
            "web-1", calls, threading.Event(), done=lambda r: done.append((r.service, r.status))
        )
        for thread in threads:
            thread.join(timeout=5)
    assert done == [("api", 204)]
    assert len(seen) == 1 and tcp_seen == []


def test_an_answer_through_another_sidecar_on_the_address_is_sent_again_until_ours_has_a_connection() -> None:
    # Ours says it has no connection to db for the first two answers (they came through another
    # sidecar sharing 127.0.0.1:<port>), then one: three requests in all.
    with sidecar_outbound([204]) as (port, seen):
        counts = iter([0, 0, 1])
        result = warm_up(
            "127.0.0.1", Call("db", port), time.monotonic() + 5, threading.Event(), lambda _s: next(counts)
        )
    assert (result.status, result.tries, result.elsewhere, len(seen)) == (204, 3, 2, 3)
    # A sidecar whose admin API does not answer (not up yet) cannot tell: sent again for a second, then
    # the answer is taken.
    with sidecar_outbound([204]) as (port, seen):
        started = time.monotonic()
        result = warm_up("127.0.0.1", Call("db", port), time.monotonic() + 5, threading.Event(), lambda _s: None)
    assert result.status == 204 and result.elsewhere == len(seen) - 1 > 10
    assert 1.0 <= time.monotonic() - started < 3.0


def test_the_sidecars_connections_are_read_from_its_admin_api(tmp_path: Path) -> None:
    admin = tmp_path / "admin.sock"
    stats = "cluster.svc/db.upstream_cx_total: 2\n"
    with unix_http_server(admin, stats):
        assert sidecar_connections(str(admin))("db") == 2
    assert sidecar_connections(str(tmp_path / "gone.sock"))("db") is None


@contextmanager
def unix_http_server(path: Path, body: str) -> Iterator[None]:
    """An HTTP server on a Unix socket answering every GET with ``body`` (an Envoy admin API's stats)."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    data = body.encode()
    with serving(server, lambda _request: b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(data), data)):
        yield
