"""The dashboard's live stream and page on a 500-switch fabric: event to Server-Sent Events delivery (p50,
p99) with 1, 10 and 100 clients, the controller's CPU per connected client (idle and under 50 events/s,
against 0 clients), the snapshot's and a delta's size, and page load to every switch drawn in headless
Chromium.

The model: a generated edge/metro/cloud fabric (placement/synthetic.py: 486 edge, 10 metro and 4 cloud
sites, one switch each, 1,152 compute nodes, 486 user hosts) with 1,000 workloads placed. It sits behind a
real EventBus, with the real EventHub subscribed and the real HttpApi serving ``/`` and ``/api/v1/events``
on 127.0.0.1 (an ephemeral port), wired as ``edgectl.controller`` wires them; no OpenFlow, no Mininet.
This process is the controller: it also publishes the events (70% LinkLatencyMeasured of one cable, 10%
a cable down or back up, 10% WorkloadPlaced, 10% WorkloadRemoved), paced at ``--rate`` a second.

The stream's clients run in ONE other process (``--clients``, asyncio, a connection each), so their
parsing costs the controller neither CPU nor the GIL. A client records when each message's blank line
arrives (CLOCK_MONOTONIC, shared by both processes) and its ``id``, the generation of the model it
brings up to: an event's delivery time is from just before it was published to the first message whose
generation is at least the one the event made. CPU is this process's user+system time (getrusage) over a
phase's wall time; per client it is the excess over the same phase with no client, divided by N. The page
is opened in Debian's chromium (selenium, chromium-driver); the time of a load is the page's own clock
(performance.now(), from navigation start) when ``g.switch[data-switch]`` counts every switch.

Prints human lines, then one JSON object of figures as the last line; exits 1 if something failed (an
event never delivered, a client dropped, the page not drawn). Not a timed test: the machine is shared.
Run: .venv/bin/python benchmarks/dashboard.py  (about 2 minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import random
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

EVENTS_PATH = "/api/v1/events"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CLIENT_COUNTS = (1, 10, 100)


# -- pure helpers (tests/unit/benchmarks/test_dashboard.py) ---------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between the closest ranks; ValueError if empty."""
    if not values:
        raise ValueError("no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not within 0-100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class SseMessage:
    """One message of an event stream: its fields, and the bytes it took on the wire (its blank line too)."""

    id: str | None
    event: str
    data: str
    size: int


@dataclass(slots=True)
class SseParser:
    """Server-Sent Events from bytes fed in pieces as they arrive (the WHATWG rules this stream needs:
    ``field: value`` lines, comments, a blank line ends a message, LF or CRLF). A message with no data
    (a keepalive comment alone) is not dispatched."""

    _buffer: bytes = b""
    _fields: dict[str, list[str]] = field(default_factory=dict)
    _size: int = 0

    def feed(self, chunk: bytes) -> list[SseMessage]:
        self._buffer += chunk
        messages = []
        while (end := self._buffer.find(b"\n")) >= 0:
            raw, self._buffer = self._buffer[: end + 1], self._buffer[end + 1 :]
            self._size += len(raw)
            line = raw.rstrip(b"\n").rstrip(b"\r").decode()
            if line == "":
                if "data" in self._fields:
                    ids = self._fields.get("id")
                    messages.append(
                        SseMessage(
                            ids[-1] if ids else None,
                            (self._fields.get("event") or ["message"])[-1],
                            "\n".join(self._fields["data"]),
                            self._size,
                        )
                    )
                self._fields, self._size = {}, 0
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            self._fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
        return messages


def message_generation(event_id: str | None) -> int:
    """The generation an event id names (``BOOT.GENERATION``; -1 without one)."""
    if not event_id:
        return -1
    return int(event_id.rpartition(".")[2])


def delivery_times(published: Mapping[int, float], arrivals: Iterable[tuple[int, float]]) -> dict[int, float]:
    """Per generation published (its publish time), the seconds until the first arrival of a message whose
    generation is at least it (a delta brings every generation up to its own). Generations no message
    reached are left out."""
    times: dict[int, float] = {}
    pending = sorted(published)
    i = 0
    for generation, arrived in sorted(arrivals, key=lambda a: a[1]):
        while i < len(pending) and pending[i] <= generation:
            times[pending[i]] = arrived - published[pending[i]]
            i += 1
    return times


# -- the clients' process ---------------------------------------------------------------------------------------
async def _client(port: int, ready: asyncio.Event, log: list[tuple[int, float, int]], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
    writer.write(f"GET {EVENTS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        errors.append(head.split(b"\r\n", 1)[0].decode())
        ready.set()
        return
    parser = SseParser()
    try:
        while chunk := await reader.read(1 << 20):
            now = time.monotonic()
            for message in parser.feed(chunk):
                log.append((message_generation(message.id), now, message.size))
                if message.event == "snapshot":
                    ready.set()
        errors.append("the server ended the stream")
    finally:
        ready.set()
        writer.close()


async def _clients_main(port: int, count: int) -> None:
    """Connect ``count`` streams, say ``ready`` once each has its snapshot, log every message until stdin
    says ``stop``, then print the logs as one JSON line."""
    logs: list[list[tuple[int, float, int]]] = [[] for _ in range(count)]
    errors: list[str] = []
    readies = [asyncio.Event() for _ in range(count)]
    tasks = [asyncio.create_task(_client(port, readies[k], logs[k], errors)) for k in range(count)]
    await asyncio.gather(*(r.wait() for r in readies))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"logs": logs, "errors": errors}), flush=True)


# -- the controller's side ------------------------------------------------------------------------------------------
def build_model() -> Any:
    from netmodel import events as ev
    from placement.synthetic import FabricShape, build_fabric

    state = build_fabric(FabricShape(edge_sites=486, edge_nodes=2, metro_nodes=10, cloud_nodes=20, services=20), seed=7)
    nodes = sorted(state.nodes)
    for i in range(1000):
        state = state.apply(ev.WorkloadPlaced(workload(f"w{i}", f"svc{i % 20}", nodes[(i * 7) % len(nodes)])))
    return state


def workload(wid: str, service: str, node: str) -> Any:
    from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId
    from netmodel.types import Resources, Workload

    spiffe = SpiffeId(f"spiffe://edgectl.local/svc/{service}")
    return Workload(WorkloadId(wid), ServiceName(service), spiffe, Resources(100, 64), NodeId(node))


class Controller:
    """The bus, the hub and the HTTP API, as ``edgectl.controller`` wires them; ``drive`` publishes events."""

    def __init__(self, state: Any) -> None:
        from edgectl.bus import EventBus
        from edgectl.http_api import HttpApi
        from edgectl.live_events import EventHub
        from edgectl.metrics import ControllerMetrics
        from edgectl.views import services_view, topology_view, workloads_view

        metrics = ControllerMetrics()
        self.bus = EventBus(state, observer=metrics.observe_event)
        metrics.sources.state = lambda: self.bus.state
        routes: dict[str, Callable[[Any], Any]] = {
            "/api/v1/topology": topology_view,
            "/api/v1/workloads": workloads_view,
        }
        self.http = HttpApi("127.0.0.1", 0, state=lambda: self.bus.state, metrics=metrics, routes=routes)
        self.http.add_route("/api/v1/services", services_view)
        self.hub = EventHub(lambda: self.bus.state)
        self.rng = random.Random(1)
        self.cables = sorted(
            (link for link in state.topology.links if link.src < link.dst), key=lambda k: (k.src, k.src_port)
        )
        self.nodes = sorted(state.nodes)
        self.down: Any = None
        self.extra = 0
        self.rejected = 0

    def start(self) -> int:
        self.bus.start()
        self.bus.subscribe(self.hub)
        self.hub.start()
        self.http.add_event_stream(EVENTS_PATH, self.hub)
        self.http.start()
        return self.http.address[1]

    def stop(self) -> None:
        self.http.stop()
        self.hub.stop()
        self.bus.stop()

    def next_event(self, k: int) -> Any:
        from netmodel import events as ev
        from netmodel.ids import WorkloadId

        kind = k % 10
        if kind == 7:
            if self.down is None:
                self.down = self.rng.choice(self.cables)
                return ev.LinkWentDown(self.down)
            up, self.down = self.down, None
            return ev.LinkCameUp(up)
        if kind == 8:
            self.extra += 1
            node = self.rng.choice(self.nodes)
            return ev.WorkloadPlaced(workload(f"bench-{self.extra}", f"svc{self.extra % 20}", node))
        if kind == 9:
            return ev.WorkloadRemoved(WorkloadId(f"bench-{self.extra}"))
        cable = self.rng.choice(self.cables)
        latency = self.rng.randint(500, 20000)
        return ev.LinkLatencyMeasured(((cable, latency), (cable.reversed(), latency)), at=time.time())

    def drive(self, rate: float, seconds: float) -> dict[int, float]:
        """Publish ``rate`` events a second for ``seconds``: per generation made, when it was published."""
        published: dict[int, float] = {}
        lock = threading.Lock()

        def made(sent: float, future: Future[Any]) -> None:
            if future.exception() is not None:
                self.rejected += 1
                return
            with lock:
                published[future.result().generation] = sent

        started = time.monotonic()
        last: Future[Any] | None = None
        for k in range(int(rate * seconds)):
            delay = started + k / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            event = self.next_event(k)
            sent = time.monotonic()
            last = self.bus.publish(event)
            last.add_done_callback(functools.partial(made, sent))
        if last is not None:
            last.exception(timeout=10)  # applied (or rejected): the callbacks before it ran too
        time.sleep(1.0)  # the last delta (0.2 s of coalescing, then 50 ms of views) reaches every client
        with lock:
            return dict(published)


def delta_compute_ms(state: Any, rounds: int = 5) -> float:
    """The median milliseconds of what the hub does once per delta on this model, here one cable's latency
    changed: the views, the diff against the previous ones, the frame encoded."""
    from edgectl.live_events import sse_frame
    from edgectl.live_views import diff_views, live_views
    from netmodel import events as ev

    before = live_views(state)
    cable = min(state.topology.links, key=lambda k: (k.src, k.src_port))
    times = []
    for k in range(rounds):
        after = state.apply(ev.LinkLatencyMeasured(((cable, 1000 + k), (cable.reversed(), 1000 + k)), at=0.0))
        started = time.perf_counter()
        frame = sse_frame(after.generation, "delta", diff_views(before, live_views(after)))
        times.append((time.perf_counter() - started) * 1000)
        assert frame
    return percentile(times, 50)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def threads_cpu(name: str = "process_request_thread") -> dict[int, float]:
    """Per thread of this process whose name has ``name`` (by default those serving a connection: the event
    streams while clients are connected), its CPU seconds so far (the kernel's schedstat, in ns)."""
    cpu = {}
    for thread in threading.enumerate():
        if name in thread.name and thread.native_id is not None:
            try:
                text = Path(f"/proc/self/task/{thread.native_id}/schedstat").read_text()
            except OSError:  # it ended meanwhile
                continue
            cpu[thread.native_id] = int(text.split()[0]) / 1e9
    return cpu


def cpu_added(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """The CPU seconds the threads alive at both readings spent between them."""
    return sum(after[tid] - before[tid] for tid in after.keys() & before.keys())


@contextmanager
def clients(port: int, count: int) -> Iterator[subprocess.Popen[str]]:
    """``count`` stream clients in another process, each past its snapshot."""
    command = [sys.executable, __file__, "--clients", str(count), "--port", str(port)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the clients did not connect: {line!r}")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def stop_clients(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = process.communicate("stop\n", timeout=60)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def measure_phase(controller: Controller, count: int, rate: float, seconds: float, rest: float) -> dict[str, Any]:
    """CPU at rest and under load with ``count`` clients; with clients, their delivery times and sizes."""

    hub: dict[str, float] = {}

    def cpu_over(action: Any) -> tuple[float, Any]:
        cpu, wall = cpu_seconds(), time.monotonic()
        value = action()
        return (cpu_seconds() - cpu) / (time.monotonic() - wall), value

    def drive() -> dict[int, float]:
        """The events; meanwhile, the hub thread's CPU per delta (the same work whatever the clients)."""
        deltas, hub_cpu = controller.hub.deltas_sent, threads_cpu("event-hub")
        published = controller.drive(rate, seconds)
        sent = controller.hub.deltas_sent - deltas
        hub["hub_ms_per_delta"] = cpu_added(hub_cpu, threads_cpu("event-hub")) * 1000 / max(sent, 1)
        return published

    if count == 0:
        idle, _ = cpu_over(lambda: time.sleep(rest))
        busy, published = cpu_over(drive)
        return {"clients": 0, "cpu_idle": idle, "cpu_load": busy, "events": len(published), **hub}
    with clients(controller.http.address[1], count) as process:
        time.sleep(0.5)  # the snapshots' sends end
        threads = threads_cpu()
        if len(threads) != count:
            raise RuntimeError(f"{len(threads)} stream threads for {count} clients")
        idle, _ = cpu_over(lambda: time.sleep(rest))
        threads_idle = threads_cpu()
        wall = time.monotonic()
        busy, published = cpu_over(drive)
        streams_load = cpu_added(threads_idle, threads_cpu()) / (time.monotonic() - wall)
        streams_idle = cpu_added(threads, threads_idle) / rest
        result = stop_clients(process)
    logs = result["logs"]
    times: list[float] = []
    undelivered = 0
    for log in logs:
        got = delivery_times(published, [(gen, at) for gen, at, _ in log])
        undelivered += len(published) - len(got)
        times.extend(got.values())
    first = logs[0]
    return {
        "clients": count,
        "cpu_idle": idle,
        "cpu_load": busy,
        "streams_cpu_idle": streams_idle,
        "streams_cpu_load": streams_load,
        "events": len(published),
        "deltas": len(first) - 1,
        "snapshot_bytes": first[0][2] if first else 0,
        "delta_bytes": [size for _, _, size in first[1:]],
        "delivery_ms": [t * 1000 for t in times],
        "undelivered": undelivered,
        "errors": result["errors"],
        **hub,
    }


def page_loads(url: str, switches: int, loads: int) -> list[float]:
    """Milliseconds from navigation start to every switch drawn, for each of ``loads`` loads of ``url``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-extensions"):
        options.add_argument(arg)
    options.add_argument("--window-size=1500,1000")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    watch = (
        "window.__drawnAt = null; const __watch = setInterval(() => {"
        f" if (document.querySelectorAll('g.switch[data-switch]').length >= {switches})"
        " { window.__drawnAt = performance.now(); clearInterval(__watch); } }, 5);"
    )
    times = []
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": watch})
        for _ in range(loads):
            driver.get("about:blank")
            driver.get(url)
            deadline = time.monotonic() + 60
            while (drawn := driver.execute_script("return window.__drawnAt")) is None:
                if time.monotonic() > deadline:
                    count = driver.execute_script("return document.querySelectorAll('g.switch[data-switch]').length")
                    raise RuntimeError(f"the page drew {count} of {switches} switches within 60 s")
                time.sleep(0.05)
            times.append(float(drawn))
    finally:
        driver.quit()
    return times


SCREEN_WATCH = (
    "window.__want = []; window.__seen = {}; setInterval(() => { for (const sel of window.__want) {"
    " if (!(sel in window.__seen) && document.querySelector(sel)) window.__seen[sel] ="
    " performance.timeOrigin + performance.now(); } }, 5);"
)
"""In the page: the wall-clock time (ms) each awaited selector first matched (polled every 5 ms)."""


def cable_selector(state: Any, link: Any, up: bool) -> str:
    """The page's line for a cable (``data-link`` is the two switch names, sorted, joined by "-")."""
    a, b = sorted((state.topology.switches[link.src].name, state.topology.switches[link.dst].name))
    return f"path.link[data-link='{a}-{b}'][data-state='{'up' if up else 'down'}']"


def event_to_screen(url: str, controller: Controller, switches: int, rounds: int, rate: float) -> list[float]:
    """Milliseconds from publishing a link's failure (then its repair) to the page drawing it so, with the
    model taking ``rate`` other events a second meanwhile: the whole path, model -> hub -> stream -> page."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from netmodel import events as ev

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-extensions"):
        options.add_argument(arg)
    options.add_argument("--window-size=1500,1000")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    times: list[float] = []
    background = threading.Thread(target=controller.drive, args=(rate, rounds * 1.2 + 5), daemon=True)
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": SCREEN_WATCH})
        driver.get(url)
        deadline = time.monotonic() + 60
        while driver.execute_script("return document.querySelectorAll('g.switch[data-switch]').length") < switches:
            if time.monotonic() > deadline:
                raise RuntimeError("the page did not draw every switch within 60 s")
            time.sleep(0.1)
        background.start()
        state = controller.bus.state
        measured = [c for c in controller.cables if c != controller.down][:: max(1, len(controller.cables) // rounds)]
        for cable in measured[:rounds]:
            for up in (False, True):
                selector = cable_selector(state, cable, up)
                driver.execute_script("window.__want.push(arguments[0])", selector)
                sent = time.time() * 1000.0
                controller.bus.publish(ev.LinkCameUp(cable) if up else ev.LinkWentDown(cable)).result(timeout=10)
                until = time.monotonic() + 10
                while (seen := driver.execute_script("return window.__seen[arguments[0]] || null", selector)) is None:
                    if time.monotonic() > until:
                        raise RuntimeError(f"the page did not show {selector} within 10 s")
                    time.sleep(0.01)
                times.append(float(seen) - sent)
                time.sleep(0.2)
    finally:
        driver.quit()
        background.join(rounds * 1.2 + 15)
    return times


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50), 1), "p99": round(percentile(values, 99), 1)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="model events a second")
    parser.add_argument("--seconds", type=float, default=20.0, help="of events per client count")
    parser.add_argument("--rest", type=float, default=4.0, help="seconds of idle CPU per client count")
    parser.add_argument("--loads", type=int, default=5, help="page loads in Chromium")
    parser.add_argument("--screen-rounds", type=int, default=20, help="cables failed and repaired for event to screen")
    parser.add_argument("--clients", type=int, help=argparse.SUPPRESS)  # the clients' process
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.clients is not None:
        asyncio.run(_clients_main(args.port, args.clients))
        return 0

    wall = time.monotonic()
    failures: list[str] = []
    state = build_model()
    switches = len(state.topology.switches)
    print(
        f"model: {switches} switches, {len(state.topology.links)} link directions, {len(state.nodes)} nodes, "
        f"{len(state.hosts)} hosts, {len(state.workloads)} workloads"
    )
    compute_ms = delta_compute_ms(state)
    print(f"one delta's views, diff and encoding: {compute_ms:.0f} ms (median of 5)")
    controller = Controller(state)
    port = controller.start()
    phases = []
    try:
        for count in (0, *CLIENT_COUNTS):
            phase = measure_phase(controller, count, args.rate, args.seconds, args.rest)
            phases.append(phase)
            line = (
                f"{count:>3} clients: CPU {phase['cpu_idle'] * 100:5.1f}% idle, {phase['cpu_load'] * 100:5.1f}% "
                f"under {args.rate:g} events/s ({phase['events']} events; the hub's thread "
                f"{phase['hub_ms_per_delta']:.0f} ms of CPU a delta)"
            )
            if count:
                if phase["delivery_ms"]:
                    line += ", event to client " + "{p50} ms p50, {p99} ms p99".format(**summary(phase["delivery_ms"]))
                failures += [f"{count} clients: {e}" for e in phase["errors"]]
                if phase["undelivered"]:
                    failures.append(f"{count} clients: {phase['undelivered']} event deliveries missing")
            print(line, flush=True)
        if shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER):
            try:
                loads = page_loads(f"http://127.0.0.1:{port}/", switches, args.loads)
                print(f"page load to {switches} switches drawn: " + ", ".join(f"{t:.0f}" for t in loads) + " ms")
            except Exception as exc:
                failures.append(f"page load: {exc}")
                loads = []
            try:
                screen = event_to_screen(
                    f"http://127.0.0.1:{port}/", controller, switches, args.screen_rounds, args.rate
                )
                print(
                    f"event to screen (a cable down, then up, drawn so in the page; {args.rate:g} other events/s): "
                    f"p50 {percentile(screen, 50):.0f} ms, p95 {percentile(screen, 95):.0f} ms, "
                    f"p99 {percentile(screen, 99):.0f} ms over {len(screen)}"
                )
            except Exception as exc:
                failures.append(f"event to screen: {exc}")
                screen = []
        else:
            failures.append("chromium and chromium-driver are not installed (scripts/setup.sh installs them)")
            loads = []
        dropped = controller.hub.clients_dropped
        if dropped:
            failures.append(f"{dropped} clients dropped as too slow")
    finally:
        controller.stop()

    base = phases[0]
    with_clients = phases[1:]
    snapshot_bytes = with_clients[0]["snapshot_bytes"] if with_clients else 0
    deltas = [size for p in with_clients for size in p["delta_bytes"]]
    figures: dict[str, Any] = {
        "benchmark": "dashboard",
        "switches": switches,
        "workloads": len(state.workloads),
        "event_rate": args.rate,
        "seconds_per_phase": args.seconds,
        "snapshot_bytes": snapshot_bytes,
        "delta_bytes": {"p50": round(percentile(deltas, 50)), "max": max(deltas)} if deltas else None,
        "delta_compute_ms": round(compute_ms, 1),
        "deltas_per_s": round(with_clients[0]["deltas"] / args.seconds, 1) if with_clients else None,
        "delivery_ms": {str(p["clients"]): summary(p["delivery_ms"]) for p in with_clients if p["delivery_ms"]},
        "cpu_pct_0_clients": {"idle": round(base["cpu_idle"] * 100, 2), "load": round(base["cpu_load"] * 100, 2)},
        "hub_cpu_ms_per_delta": {str(p["clients"]): round(p["hub_ms_per_delta"], 1) for p in phases},
        "cpu_pct_per_client": {
            str(p["clients"]): {
                "idle": round((p["cpu_idle"] - base["cpu_idle"]) * 100 / p["clients"], 3),
                "load": round((p["cpu_load"] - base["cpu_load"]) * 100 / p["clients"], 3),
            }
            for p in with_clients
        },
        "stream_thread_cpu_pct_per_client": {
            str(p["clients"]): {
                "idle": round(p["streams_cpu_idle"] * 100 / p["clients"], 4),
                "load": round(p["streams_cpu_load"] * 100 / p["clients"], 4),
            }
            for p in with_clients
        },
        "page_load_ms": {"first": round(loads[0]), "p50": round(percentile(loads, 50))} if loads else None,
        "event_to_screen_ms": {
            "p50": round(percentile(screen, 50)),
            "p95": round(percentile(screen, 95)),
            "p99": round(percentile(screen, 99)),
            "events": len(screen),
        }
        if screen
        else None,
        "clients_process": "one asyncio process, a connection per client",
        "failures": failures,
    }
    print(f"snapshot {snapshot_bytes / 1024:.0f} KiB; delta {figures['delta_bytes']} bytes")
    for count, cpu in figures["cpu_pct_per_client"].items():
        own = figures["stream_thread_cpu_pct_per_client"][count]
        print(
            f"CPU per client with {count} (of one core): process over 0 clients {cpu['idle']}% idle, "
            f"{cpu['load']}% under load; its stream thread {own['idle']}% idle, {own['load']}% under load"
        )
    figures["wall_s"] = round(time.monotonic() - wall, 1)
    print(f"wall time {figures['wall_s']} s")
    for failure in failures:
        print(f"FAILED: {failure}")
    print(json.dumps(figures))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
