"""A real ``edgectl run`` process, started and stopped the one way the integration tests, the benchmarks,
the lab and the demo all use: on free loopback ports, ready once ``/healthz`` answers, stopped by PID.

    with edgectl_run("examples/edge-cloud.yaml", "--pki-dir", ca) as controller:
        controller.get_json("/api/v1/topology")

``start_edgectl`` returns the running process for owners that stop it themselves (the lab).
Also the Mininet testbed of a fabric file on that controller (``mininet_testbed``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.ports import free_port as free_port  # re-exported: the tests, benchmarks and lab pick ports here

REPO = Path(__file__).resolve().parents[1]


class WaitTimedOut(AssertionError, TimeoutError):
    """A wait ran out of time: a failed assertion to a test, a ``TimeoutError`` to the lab and the demo."""


class ControllerExited(RuntimeError):
    """``edgectl run`` exited while it was expected to run; the message ends with its log."""


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
    retry_on: tuple[type[Exception], ...] = (Exception,),
) -> Any:
    """Poll ``predicate`` until it returns something true (returned) or ``timeout`` seconds passed
    (``WaitTimedOut``, naming the last error). An exception of ``retry_on`` counts as not yet; any
    other ends the wait at once."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except retry_on as exc:
            last_error = exc
        time.sleep(interval)
    raise WaitTimedOut(f"timed out after {timeout:g} s waiting for {what}" + (f" ({last_error})" if last_error else ""))


@dataclass
class ControllerProcess:
    process: subprocess.Popen[bytes]
    openflow_port: int
    http_port: int
    log_path: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def get_json(self, path: str) -> Any:
        status, body = http_get(self.http + path)
        assert status == 200, f"GET {path}: {status} {body[:200]!r}"
        return json.loads(body)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        """True while it runs; ``ControllerExited`` with the end of its log once it exited."""
        if self.process.poll() is not None:
            raise ControllerExited(f"edgectl run exited:\n{self.log()[-2000:]}")
        return True

    def route(self, src: str, dst: str) -> dict[str, Any] | None:
        """The controller's route from endpoint src to dst in /api/v1/routes, if it has one."""
        routes = self.get_json("/api/v1/routes")["routes"]
        return next((r for r in routes if r["src"] == src and r["dst"] == dst), None)

    def wait_fabric_ready(self, src: str, dst: str, timeout: float = 40) -> None:
        """Every switch connected, every link discovered, and a route from src to dst."""

        def topology() -> Any:
            return self.get_json("/api/v1/topology")

        wait_until(lambda: all(s["connected"] for s in topology()["switches"]), timeout, what="switches connected")
        wait_until(lambda: all(x["discovered"] for x in topology()["links"]), timeout, what="links discovered")
        wait_until(lambda: self.route(src, dst), timeout, what=f"route {src} -> {dst}")

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return int(self.process.returncode)


def stop_processes(processes: Iterable[subprocess.Popen[Any]], timeout: float = 5.0) -> None:
    """Stop processes this run started, by their PIDs: SIGTERM, then SIGKILL after ``timeout``; reaped."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        if process.poll() is None:
            process.kill()
            process.wait()


def start_edgectl(
    fabric_file: str | Path | None,
    *extra: str,
    openflow_port: int | None = None,
    http_port: int | None = None,
    log_path: Path | None = None,
    cwd: Path | None = REPO,
    ready_timeout: float = 15.0,
) -> ControllerProcess:
    """Start ``edgectl run`` and wait until ``/healthz`` says ok; the caller stops it (``.stop()``).

    Every server listens on a free port unless ``extra`` chooses it: the defaults (18000, 50051, 50052) clash
    between runs. Output goes to ``log_path`` (a new temporary file by default). If it exits or does not
    get ready it is stopped, and ``ControllerExited`` or ``WaitTimedOut`` says why."""
    openflow_port = openflow_port or free_port()
    http_port = http_port or free_port()
    if log_path is None:
        with tempfile.NamedTemporaryFile(prefix="edgectl-run-", suffix=".log", delete=False) as named:
            log_path = Path(named.name)  # outlives the process, for its owner to read
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed once the process has its own copy
    command = [
        sys.executable,
        "-m",
        "edgectl.cli",
        "run",
        *(["--config", str(fabric_file)] if fabric_file is not None else []),  # None: a git source alone
        "--openflow-port",
        str(openflow_port),
        "--http-port",
        str(http_port),
        *extra,
    ]
    for flag in ("--xds-port", "--api-port", "--agent-port"):
        if flag not in extra:
            command += [flag, str(free_port())]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    controller = ControllerProcess(process, openflow_port, http_port, log_path)
    try:
        wait_until(
            lambda: controller.alive() and json.loads(http_get(controller.http + "/healthz", 0.5)[1])["status"] == "ok",
            ready_timeout,
            what="edgectl /healthz",
            retry_on=(OSError, ValueError, KeyError),
        )
    except BaseException:
        controller.stop()
        raise
    return controller


@contextlib.contextmanager
def edgectl_run(
    fabric_file: str | Path | None, *extra: str, openflow_port: int | None = None, http_port: int | None = None
) -> Iterator[ControllerProcess]:
    """Start `edgectl run` on free ports; wait for /healthz; always stop it by PID and remove its log (a
    temporary file, read while it runs: ``log()``)."""
    controller = start_edgectl(fabric_file, *extra, openflow_port=openflow_port, http_port=http_port)
    try:
        yield controller
    finally:
        controller.stop()
        controller.log_path.unlink(missing_ok=True)


@contextlib.contextmanager
def mininet_testbed(fabric_file: str | Path, openflow_port: int, **build_args: Any) -> Iterator[Any]:
    """A started Mininet testbed from a fabric file; always stopped (net.stop removes what it made)."""
    from mininet.log import setLogLevel

    import mininet_topos

    setLogLevel("warning")
    net = mininet_topos.build(str(fabric_file), controller=("127.0.0.1", openflow_port), **build_args)
    try:
        net.start()
        yield net
    finally:
        net.stop()
