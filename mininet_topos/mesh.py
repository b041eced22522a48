"""The service mesh inside a Mininet testbed (adapter): apps, their Envoy sidecars and user request loops
run in the hosts' network namespaces and follow the controller's placements, as a node agent would
(``mininet_topos.lab`` feeds it the placement API's Watch events).

Nothing here reaches into the root namespace by IP: a sidecar's xDS stream goes to the controller's Unix
socket (``edgectl run --xds-unix``), its admin API is a Unix socket in the run directory, and an app says
it listens on its stdout. Paths are shared across network namespaces; addresses are not.

    mesh = MeshTestbed(net, xds_socket="/tmp/run/xds.sock", run_dir=Path("/tmp/run"))
    mesh.start_client("u1")                       # users on u1 reach services at 127.0.0.1:<port>
    mesh.sync_one({"id": "web-1", "service": "web", "node": "ea-n1", "port": 8080})   # on PLACED
    mesh.stop_workload("web-1")                   # on REMOVED: stopped after the drain time
    load = mesh.start_load("u1", "web")           # a request loop through u1's sidecar
    ...
    mesh.stop()                                   # every process it started, by PID

It supervises what it started: when the app or the sidecar of a workload dies while the workload is
meant to run (not stopped by the agent), ``on_unhealthy(workload id, reason)`` is called once (the lab
reports it to the controller, ``POST /api/v1/workloads/health``), which withdraws and re-places it.

Per workload: the app (``mininet_topos.app``) on ``<app_host>:<port>`` and an Envoy whose node id is the
workload id; the controller serves it an inbound listener on ``<node ip>:<port>`` (mTLS with the workload's
SVID when the controller runs with ``--pki-dir``) and outbound listeners on ``127.0.0.1:<port>`` for the
services it calls. ``app_host`` must be what the controller's ``--mesh-app-host`` says.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshctl.bootstrap import render_bootstrap
from meshctl.sidecar import EnvoySidecar, stop_process
from mininet_topos.loadgen import Record, parse_record

CHECKOUT = str(Path(__file__).resolve().parents[1])
"""mininet_topos is the testbed, used from the checkout, not installed with the product (the wheel)."""


def checkout_env() -> dict[str, str]:
    """This environment with the checkout first on PYTHONPATH, so ``python -m mininet_topos.app`` (and
    ``.loadgen``) in a node's namespace runs this checkout's code, whatever directory the lab runs in."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (CHECKOUT, env.get("PYTHONPATH", "")) if p)
    return env


LOG = logging.getLogger("edgectl.testbed")

APP_START_TIMEOUT_S = 10.0
DEFAULT_DRAIN_S = 1.0
"""How long a withdrawn workload keeps running: requests already sent to it finish."""
SUPERVISE_INTERVAL_S = 0.05
"""How often the agent looks whether the apps and sidecars it runs are still alive."""


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """What the agent needs to run one workload (one row of /api/v1/workloads, plus whom it calls)."""

    id: str
    service: str
    node: str
    port: int
    calls: tuple[tuple[str, int], ...] = ()
    """(service, port) of each service it calls: the app reaches them at 127.0.0.1:<port>."""
    weights: tuple[tuple[float, int], ...] = ()
    """(per_request, bytes_per_call) of each call, in the order of ``calls`` (absent: once, no padding)."""

    def call_args(self) -> list[str]:
        """The app's ``--call`` arguments: ``SERVICE=127.0.0.1:PORT,PER_REQUEST,BYTES`` per call."""
        args = []
        for i, (callee, port) in enumerate(self.calls):
            per_request, bytes_per_call = self.weights[i] if i < len(self.weights) else (1.0, 0)
            args += ["--call", f"{callee}=127.0.0.1:{port},{per_request!r},{bytes_per_call}"]
        return args


@dataclass(slots=True)
class RunningWorkload:
    spec: WorkloadSpec
    app: subprocess.Popen[bytes]
    sidecar: EnvoySidecar
    stopping: bool = False
    reported: bool = False
    """Its death was reported (once is enough: the controller re-places it)."""

    def death(self) -> str | None:
        """Why this workload no longer serves (its app or its sidecar exited), or None."""
        code = self.app.poll()
        if code is not None:
            return f"app exited ({code})"
        process = self.sidecar.process
        code = process.poll() if process is not None else None
        if code is not None:
            return f"sidecar exited ({code})"
        return None


@dataclass(slots=True)
class UserLoad:
    """A request loop (``mininet_topos.loadgen``) on a user host; its records arrive as they happen."""

    host: str
    service: str
    process: subprocess.Popen[bytes]
    records: list[Record] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    reader: threading.Thread | None = None

    def snapshot(self, since: float = 0.0) -> list[Record]:
        with self.lock:
            return [r for r in self.records if r.t >= since]

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            record = parse_record(raw.decode(errors="replace"))
            if record is not None:
                with self.lock:
                    self.records.append(record)

    def stop(self, timeout: float = 5.0) -> None:
        stop_process(self.process, timeout)
        if self.reader is not None:
            self.reader.join(timeout)


class MeshTestbed:
    def __init__(
        self,
        net: Any,
        *,
        xds_socket: str,
        run_dir: Path,
        app_host: str = "127.0.0.2",
        drain_s: float = DEFAULT_DRAIN_S,
        envoy_log_level: str = "warning",
        on_unhealthy: Callable[[str, str], None] | None = None,
    ) -> None:
        self.net = net
        self.xds_socket = xds_socket
        self.run_dir = run_dir
        self.app_host = app_host
        self.drain_s = drain_s
        self._envoy_log_level = envoy_log_level
        self._lock = threading.RLock()
        self.workloads: dict[str, RunningWorkload] = {}
        self.clients: dict[str, EnvoySidecar] = {}
        self.loads: list[UserLoad] = []
        self._timers: list[threading.Timer] = []
        services = getattr(getattr(net, "spec", None), "services", ())
        self._service_ports = {s.name: s.port for s in services}
        self._service_calls = {s.name: tuple(s.weighted_calls()) for s in services}
        self.errors: list[str] = []
        self._claimed: set[str] = set()  # started or starting: never started twice
        self._removed: set[str] = set()  # withdrawn before it had started
        self._starting = 0
        self._started = threading.Condition(self._lock)
        self._closing = False
        self._started_at: dict[str, float] = {}
        self.on_unhealthy = on_unhealthy
        self.supervise_interval_s = SUPERVISE_INTERVAL_S
        self._supervisor: threading.Thread | None = None
        self._supervisor_stop = threading.Event()

    # -- sidecars --------------------------------------------------------------------------------------

    def _sidecar(self, node_id: str, service: str, host: Any) -> EnvoySidecar:
        workdir = self.run_dir / node_id
        workdir.mkdir(parents=True, exist_ok=True)
        admin = workdir / "admin.sock"
        with contextlib.suppress(FileNotFoundError):
            admin.unlink()
        bootstrap = render_bootstrap(node_id, service, xds_address=f"unix:{self.xds_socket}", admin_socket=str(admin))
        return EnvoySidecar(bootstrap, log_level=self._envoy_log_level, popen=host.popen, workdir=workdir).start()

    def start_client(self, host_id: str) -> EnvoySidecar:
        """The client sidecar of a user host: its users call services at 127.0.0.1:<service port>."""
        sidecar = self._sidecar(host_id, "users", self.net.get(host_id))
        self.clients[host_id] = sidecar
        return sidecar

    # -- workloads -------------------------------------------------------------------------------------

    def spec_of(self, row: dict[str, Any]) -> WorkloadSpec:
        service = str(row["service"])
        port = int(row.get("port") or self._service_ports.get(service, 0))
        declared = self._service_calls.get(service, ())
        calls = tuple((callee, self._service_ports[callee]) for callee, _ in declared)
        weights = tuple((weight.per_request, weight.bytes_per_call) for _, weight in declared)
        return WorkloadSpec(str(row["id"]), service, str(row["node"]), port, calls, weights)

    def start_workload(self, spec: WorkloadSpec) -> RunningWorkload | None:
        """Start the app, and once it listens its sidecar: the controller makes the instance an
        endpoint when the sidecar has applied its config, so by then the app answers. Returns None when
        the instance was withdrawn (or the testbed stopped) while it started: it is stopped again."""
        host = self.net.get(spec.node)
        with self._lock:
            if self._closing:
                return None
            self._starting += 1
            draining = [
                w.spec.id
                for w in self.workloads.values()
                if w.stopping and w.spec.node == spec.node and w.spec.port == spec.port
            ]
        try:
            for workload_id in draining:
                # Withdrawn from every caller already (it drains only for requests in flight): its port
                # is needed now, by the instance that replaces it on this node.
                self._stop_now(workload_id)
            return self._start(spec, host)
        finally:
            with self._lock:
                self._starting -= 1
                self._started.notify_all()

    def _start(self, spec: WorkloadSpec, host: Any) -> RunningWorkload | None:
        started_at = time.time()
        with self._lock:
            self._claimed.add(spec.id)
            self._started_at[spec.id] = started_at
        workdir = self.run_dir / spec.id
        workdir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "mininet_topos.app",
            "--workload",
            spec.id,
            "--service",
            spec.service,
            "--listen",
            f"{self.app_host}:{spec.port}",
            *spec.call_args(),
        ]
        app = host.popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=checkout_env()
        )
        try:
            wait_for_line(app, b"listening", APP_START_TIMEOUT_S, f"app of {spec.id}")
            _keep_reading(app, workdir / "app.log")  # a full pipe would block the app
            sidecar = self._sidecar(spec.id, spec.service, host)
        except BaseException:
            stop_process(app)
            raise
        running = RunningWorkload(spec, app, sidecar)
        with self._lock:
            self.workloads[spec.id] = running
            withdrawn = spec.id in self._removed or self._closing
            self._supervise_from_now()
        if withdrawn:
            self._stop_now(spec.id)
            return None
        return running

    def stop_workload(self, workload_id: str, drain_s: float | None = None) -> None:
        """Stop a workload's sidecar and app after ``drain_s`` (requests already on their way finish).
        One still starting is stopped as soon as it has started."""
        with self._lock:
            running = self.workloads.get(workload_id)
            if running is None:
                self._removed.add(workload_id)
                return
            if running.stopping:
                return
            running.stopping = True
        delay = self.drain_s if drain_s is None else drain_s
        if delay <= 0:
            self._stop_now(workload_id)
            return
        timer = threading.Timer(delay, self._stop_now, args=(workload_id,))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _stop_now(self, workload_id: str) -> None:
        with self._lock:
            running = self.workloads.pop(workload_id, None)
        if running is not None:
            running.sidecar.stop()
            stop_process(running.app)

    # -- supervision ------------------------------------------------------------------------------------

    def _supervise_from_now(self) -> None:
        if self._supervisor is None and self.on_unhealthy is not None:
            self._supervisor = threading.Thread(target=self._supervise, name="mesh-supervisor", daemon=True)
            self._supervisor.start()

    def _supervise(self) -> None:
        while not self._supervisor_stop.wait(self.supervise_interval_s):
            with self._lock:
                running = [w for w in self.workloads.values() if not w.stopping and not w.reported]
            for workload in running:
                why = workload.death()
                if why is None:
                    continue
                with self._lock:
                    # One the agent stops leaves self.workloads before it is killed: not a death.
                    if self.workloads.get(workload.spec.id) is not workload or workload.stopping or workload.reported:
                        continue
                    workload.reported = True
                self._report_unhealthy(workload.spec, why)

    def _report_unhealthy(self, spec: WorkloadSpec, why: str) -> None:
        LOG.warning("%s on %s: %s; reporting it unhealthy", spec.id, spec.node, why)
        assert self.on_unhealthy is not None
        try:
            self.on_unhealthy(spec.id, why)
        except Exception as exc:
            message = f"cannot report {spec.id} unhealthy ({why}): {exc}"
            LOG.error("%s", message)
            self.errors.append(message)

    def started_at(self, workload_id: str) -> float | None:
        """When the agent started that workload (wall clock, comparable with every other process's;
        also after it stopped), or None."""
        with self._lock:
            return self._started_at.get(workload_id)

    def sync_one(self, row: dict[str, Any]) -> None:
        """Start one placed workload unless it runs (or is starting) already."""
        with self._lock:
            if str(row["id"]) in self._claimed:
                return
            self._claimed.add(str(row["id"]))
        self._start_logged(self.spec_of(row))

    def _start_logged(self, spec: WorkloadSpec) -> None:
        try:
            self.start_workload(spec)
        except Exception as exc:
            message = f"cannot start {spec.id} on {spec.node}: {exc}"
            LOG.error("%s", message)
            self.errors.append(message)

    # -- users -----------------------------------------------------------------------------------------

    def start_load(self, host_id: str, service: str, rate: float = 50.0, timeout_s: float = 2.0) -> UserLoad:
        port = self._service_ports[service]
        command = [
            sys.executable,
            "-m",
            "mininet_topos.loadgen",
            "--url",
            f"http://127.0.0.1:{port}/",
            "--host",
            service,
            "--rate",
            str(rate),
            "--timeout",
            str(timeout_s),
        ]
        process = self.net.get(host_id).popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=checkout_env()
        )
        load = UserLoad(host_id, service, process)
        load.reader = threading.Thread(target=load._read, name=f"load-{host_id}", daemon=True)
        load.reader.start()
        self.loads.append(load)
        return load

    # -- teardown --------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything this testbed started, by PID: loads, workloads, client sidecars. Starts in
        progress finish first (and stop what they started)."""
        with self._lock:
            self._closing = True
            self._started.wait_for(lambda: self._starting == 0, timeout=APP_START_TIMEOUT_S + 10)
        self._supervisor_stop.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
        for timer in self._timers:
            timer.cancel()
        for load in self.loads:
            load.stop()
        with self._lock:
            workloads = list(self.workloads.values())
            self.workloads.clear()
        for running in workloads:
            running.sidecar.stop()
            stop_process(running.app)
        for sidecar in self.clients.values():
            sidecar.stop()
        self.clients.clear()


def _keep_reading(process: subprocess.Popen[bytes], log: Path) -> None:
    """Copy what ``process`` writes from now on to ``log``, on a daemon thread, until it exits."""
    stream = process.stdout
    if stream is None:
        return
    process.stdout = None  # the thread owns the pipe now: it closes it at EOF, nobody else does
    fd = stream.fileno()  # read as wait_for_line did, unbuffered: nothing is left in a buffer

    def copy() -> None:
        try:
            with contextlib.suppress(OSError), open(log, "ab") as out:
                for chunk in iter(lambda: os.read(fd, 65536), b""):
                    out.write(chunk)
                    out.flush()
        finally:
            stream.close()

    threading.Thread(target=copy, name=f"app-log-{log.parent.name}", daemon=True).start()


def wait_for_line(process: subprocess.Popen[bytes], prefix: bytes, timeout: float, what: str) -> bytes:
    """Read ``process``'s stdout until a line starting with ``prefix`` (what it printed before is kept
    for the error), without blocking past ``timeout``."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    seen = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{what}: no {prefix.decode()!r} line within {timeout:g} s; output: {seen[-500:]!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            raise RuntimeError(f"{what} exited ({process.wait()}) before saying {prefix.decode()!r}: {seen[-500:]!r}")
        seen += chunk
        for line in seen.splitlines():
            if line.startswith(prefix):
                return line
