"""``GET /api/v1/events`` on the real HTTP server over loopback, fed by a real EventBus: a snapshot then deltas,
resume with Last-Event-ID, slow and silent clients dropped while others keep receiving, streams past the request
deadline and in slots of their own, and /healthz answering beside 500 open streams."""

from __future__ import annotations

import json
import resource
import socket
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from edgectl.bus import EventBus
from edgectl.http_api import HttpApi
from edgectl.live_events import EventHub
from edgectl.live_views import apply_delta, live_views, same_views
from edgectl.metrics import ControllerMetrics
from edgectl.views import topology_view
from netmodel import events as ev
from netmodel.fabric import build_state
from netmodel.ids import NodeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Resources, ServiceName, SpiffeId, Workload
from tests.unit.edgectl.fixtures import example_spec
from tests.unit.edgectl.test_http_hardening import exchange, timed_healthz, wait_for

Address = tuple[str, int]
EVENTS = "/api/v1/events"


@dataclass
class Served:
    api: HttpApi
    hub: EventBus
    events: EventHub

    def publish(self, event: ev.Event) -> FabricState:
        state = self.hub.publish(event).result(timeout=10)
        wait_for(lambda: self.events.generation >= state.generation, "the hub to send the change")
        return state


@contextmanager
def served(
    *, client_buffer: int = 64, keepalive_s: float = 15.0, min_interval_s: float = 0.01, **options: float
) -> Iterator[Served]:
    bus = EventBus(build_state(example_spec()))
    hub = EventHub(lambda: bus.state, min_interval_s=min_interval_s, client_buffer=client_buffer)
    api = HttpApi(
        "127.0.0.1",
        0,
        lambda: bus.state,
        ControllerMetrics(),
        {"/api/v1/topology": topology_view},
        keepalive_s=keepalive_s,
        **options,  # type: ignore[arg-type]
    )
    api.add_event_stream(EVENTS, hub)
    bus.subscribe(hub)
    bus.start()
    hub.start()
    api.start()
    try:
        yield Served(api, bus, hub)
    finally:
        hub.stop()
        api.stop()
        bus.stop()


class SseClient:
    """A raw-socket EventSource: sends the request, then reads messages (and comments) as they come."""

    def __init__(self, address: Address, last_event_id: str | None = None, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:  # before connecting: the window the server sees
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(address)
        extra = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id is not None else ""
        self.sock.sendall(f"GET {EVENTS} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{extra}\r\n".encode())
        self.buffer = b""
        self.status = 0
        self.headers: dict[str, str] = {}

    def read_headers(self) -> None:
        while b"\r\n\r\n" not in self.buffer:
            self._recv()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {n.lower(): v.strip() for n, _, v in (line.partition(":") for line in lines)}

    def _recv(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError("the server closed the stream")
        self.buffer += chunk

    def block(self) -> str:
        """The next message or comment, as text."""
        if not self.status:
            self.read_headers()
        while b"\n\n" not in self.buffer:
            self._recv()
        block, _, self.buffer = self.buffer.partition(b"\n\n")
        return block.decode()

    def message(self) -> tuple[str, int, dict[str, Any]]:
        """The next message (comments skipped): event, id, data."""
        while True:
            fields: dict[str, str] = {}
            for line in self.block().split("\n"):
                name, _, value = line.partition(": ")
                if name:
                    fields[name] = value
            if "event" in fields:
                return fields["event"], int(fields["id"].rpartition(".")[2]), json.loads(fields["data"])

    def close(self) -> None:
        self.sock.close()


@contextmanager
def streaming(address: Address, **options: Any) -> Iterator[SseClient]:
    client = SseClient(address, **options)
    try:
        yield client
    finally:
        client.close()


def first_link(state: FabricState) -> Any:
    return sorted(state.topology.links)[0]


def placed(workload_id: str, node: str) -> ev.WorkloadPlaced:
    return ev.WorkloadPlaced(
        Workload(WorkloadId(workload_id), ServiceName("web"), SpiffeId(""), Resources(100, 64), NodeId(node))
    )


def test_a_snapshot_then_a_delta_for_each_change() -> None:
    with served() as s, streaming(s.api.address) as client:
        kind, generation, body = client.message()
        assert client.status == 200 and client.headers["content-type"].startswith("text/event-stream")
        assert client.headers["cache-control"] == "no-cache"
        assert kind == "snapshot" and generation == body["generation"] == s.hub.state.generation
        assert set(body["views"]) == {"topology", "workloads", "service_paths", "events"}
        held = body["views"]
        after = s.publish(ev.LinkWentDown(first_link(s.hub.state)))
        kind, generation, delta = client.message()
        assert kind == "delta" and generation == delta["generation"] == after.generation
        assert [len(delta["views"]["topology"]["links"]["upsert"])] == [2]
        assert [e["kind"] for e in delta["events"]] == ["LinkWentDown"]
        held = apply_delta(held, delta, generation)
        after = s.publish(placed("web-1", "ea-n1"))
        kind, generation, delta = client.message()
        assert [row["key"] for row in delta["views"]["workloads"]["workloads"]["upsert"]] == ["web-1"]
        held = apply_delta(held, delta, generation)
        assert same_views({k: v for k, v in held.items() if k != "events"}, live_views(after))
        assert [e["kind"] for e in held["events"]][-2:] == ["LinkWentDown", "WorkloadPlaced"]
        with streaming(s.api.address) as fresh:  # a new client's snapshot is what this one holds now
            _, _, snapshot = fresh.message()
            assert same_views(snapshot["views"], held)


def test_last_event_id_resumes_with_the_deltas_missed() -> None:
    with served() as s:
        with streaming(s.api.address) as client:
            _, seen, _ = client.message()
        link = first_link(s.hub.state)
        down = s.publish(ev.LinkWentDown(link)).generation
        up = s.publish(ev.LinkCameUp(link)).generation
        boot = s.events.boot  # ids are BOOT.GENERATION: generations start over with a restart
        with streaming(s.api.address, last_event_id=f"{boot}.{seen}") as client:
            assert [client.message()[:2] for _ in range(2)] == [("delta", down), ("delta", up)]
        with streaming(s.api.address, last_event_id=f"{boot}.{up}") as client:  # current: nothing until a change
            later = s.publish(placed("web-1", "ea-n1")).generation
            assert client.message()[:2] == ("delta", later)
        # never sent, or sent by another process (a restart: the same generation means another model): a snapshot
        for unknown in (f"{boot}.999999", f"{boot}.-1", "garbage", "", str(later), f"0{boot}.{later}"):
            with streaming(s.api.address, last_event_id=unknown) as client:
                assert client.message()[:2] == ("snapshot", later), unknown


def test_a_client_that_never_reads_is_dropped_and_the_others_keep_receiving() -> None:
    with served(client_buffer=4) as s, ExitStack() as stack:
        silent = stack.enter_context(streaming(s.api.address, rcvbuf=4096))  # never reads a byte
        reader = stack.enter_context(streaming(s.api.address))
        assert reader.message()[0] == "snapshot"
        wait_for(lambda: s.events.clients == 2, "both clients to subscribe")
        links = sorted(s.hub.state.topology.links)
        latest, latency = 0, 1000
        deadline = time.monotonic() + 60
        while s.events.clients_dropped == 0:  # every link's latency changes: deltas of some KB each
            assert time.monotonic() < deadline, "the silent client was never dropped"
            latency += 1
            latest = s.publish(ev.LinkLatencyMeasured(tuple((link, latency) for link in links), at=1.0)).generation
            while (got := reader.message()[1]) < latest:  # the reader keeps up, never held back by the silent one
                pass
            assert got == latest
        assert s.events.clients == 1
        healthz = [timed_healthz(s.api.address) for _ in range(5)]
        assert statistics.median(healthz) < 0.1, healthz
        # the server closed the silent one: what it holds, then the end (or a reset)
        silent.sock.settimeout(10)
        ended = False
        while not ended:
            try:
                ended = silent.sock.recv(1 << 16) == b""
            except ConnectionError:
                ended = True
        latest = s.publish(ev.LinkWentDown(links[0])).generation
        assert reader.message()[1] == latest
        wait_for(lambda: s.api.open_streams == 1, "the dropped stream's thread to end")


def test_a_stream_outlives_the_request_deadline_and_keeps_alive() -> None:
    with served(idle_timeout_s=1.0, keepalive_s=0.3) as s, streaming(s.api.address) as client:
        assert client.message()[0] == "snapshot"
        assert client.block() == ": keepalive"
        time.sleep(2.5)  # past the 1 s a request may take to arrive
        later = s.publish(ev.LinkWentDown(first_link(s.hub.state))).generation
        assert client.message()[:2] == ("delta", later)


def test_streams_have_slots_of_their_own() -> None:
    with served(max_connections=2, max_streams=3) as s, ExitStack() as stack:
        clients = []
        for _ in range(3):
            # One after another: until its request is read, a connection holds one of the 2 ordinary slots
            # (the server cannot know it is a stream before), so three opened at once may find both taken.
            clients.append(stack.enter_context(streaming(s.api.address)))
            assert clients[-1].message()[0] == "snapshot"
        wait_for(lambda: s.api.open_streams == 3, "three streams")
        refused = stack.enter_context(streaming(s.api.address))
        refused.read_headers()
        # An event stream that says "retry in 1 s" and ends, not a 503: on any answer but an event stream a
        # browser's EventSource gives up for good.
        assert refused.status == 200 and refused.headers["content-type"].startswith("text/event-stream")
        assert refused.block().startswith("retry: 1000")
        for _ in range(3):  # the ordinary slots are all free beside the streams
            assert exchange(s.api.address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
        clients[0].close()
        wait_for(lambda: s.api.open_streams == 2, "a closed stream's slot to be freed", timeout=30)


def test_the_route_answers_head_and_refuses_other_methods_and_ignores_its_query() -> None:
    with served() as s:
        status, headers, body = exchange(s.api.address, f"HEAD {EVENTS} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status == 200 and headers["content-type"] == "text/event-stream; charset=utf-8" and body == b""
        assert "content-length" not in headers  # GET's headers: a stream has no length
        status, headers, _ = exchange(s.api.address, f"POST {EVENTS} HTTP/1.1\r\nContent-Length: 0\r\n\r\n".encode())
        assert status == 405 and headers["allow"] == "GET, HEAD, OPTIONS"
        with socket.create_connection(s.api.address, timeout=10) as sock:
            sock.sendall(f"GET {EVENTS}?x=%zz&&=;{'q' * 8000} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = b""
            while b"event: snapshot" not in data:
                data += sock.recv(1 << 16)
        long_line = f"GET {EVENTS}?{'q' * 70000} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        assert exchange(s.api.address, long_line)[0] == 414  # the server's request-line bound, as for any path
        wait_for(lambda: s.api.open_streams == 0, "every stream to end")


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / (1 << 20)


def enough_files(needed: int) -> None:
    """Both ends of every connection live in this process: raise the soft limit on open files if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))


def test_healthz_answers_fast_beside_500_idle_streams_and_a_silent_one() -> None:
    enough_files(4096)
    with served(client_buffer=8) as s, ExitStack() as stack:
        before = rss_mib()
        silent = stack.enter_context(streaming(s.api.address, rcvbuf=4096))
        clients = [silent] + [stack.enter_context(streaming(s.api.address)) for _ in range(500)]
        wait_for(lambda: s.api.open_streams == len(clients), "every stream to be served", timeout=60)
        link = first_link(s.hub.state)
        for _ in range(10):  # a few changes go to every stream; none of them reads
            s.publish(ev.LinkWentDown(link))
            s.publish(ev.LinkCameUp(link))
        latencies = [timed_healthz(s.api.address) for _ in range(9)]
        assert statistics.median(latencies) < 0.1, latencies  # ~1-5 ms on an idle machine
        grown = rss_mib() - before
        assert grown < 300, f"{grown:.0f} MiB for 501 streams"  # threads, sockets and buffers, both ends
        # the streams took none of the ordinary slots (the last healthz's thread may still be ending)
        wait_for(lambda: s.api.open_connections == 0, "the ordinary slots to be free")


def test_streams_never_take_the_descriptors_ordinary_connections_need(monkeypatch) -> None:
    """Under the common 1024 open-files limit, 1024 stream slots beside 512 connections would run the process
    out of descriptors (accept fails, /healthz stops answering): the stream slots shrink to what fits."""
    from edgectl import http_server

    with served() as s:
        server = s.api._server
        monkeypatch.setattr(http_server.resource, "getrlimit", lambda _which: (1024, 4096))
        assert server.stream_limit() == 1024 - server.max_connections - http_server.FD_RESERVE
        monkeypatch.setattr(http_server.resource, "getrlimit", lambda _which: (1 << 20, 1 << 20))
        assert server.stream_limit() == server.max_streams


def test_accept_backs_off_when_out_of_descriptors(monkeypatch) -> None:
    import errno

    from edgectl import http_server

    with served() as s:
        server = s.api._server
        slept: list[float] = []

        def no_descriptors(_self: object) -> None:
            raise OSError(errno.EMFILE, "Too many open files")

        import socketserver

        monkeypatch.setattr(socketserver.TCPServer, "get_request", no_descriptors)
        monkeypatch.setattr(http_server.time, "sleep", slept.append)
        try:
            server.get_request()
        except OSError as exc:
            assert exc.errno == errno.EMFILE
        assert slept == [http_server.ACCEPT_BACKOFF_S]  # not a hot loop on a listening socket always readable


def test_stopping_the_api_ends_its_streams() -> None:
    with served() as s, ExitStack() as stack:
        clients = [stack.enter_context(streaming(s.api.address)) for _ in range(3)]
        for client in clients:
            assert client.message()[0] == "snapshot"
        wait_for(lambda: s.events.clients == 3, "three subscribers")
        s.api.stop()
        wait_for(lambda: s.events.clients == 0, "the streams to end with the API")
