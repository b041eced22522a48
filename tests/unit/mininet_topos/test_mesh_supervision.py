"""The testbed agent notices an app or sidecar that died under it, and says so once; not one it stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from meshctl.sidecar import stop_process
from mininet_topos import mesh as mesh_module
from mininet_topos.mesh import MeshTestbed, RunningWorkload, WorkloadSpec, checkout_env


class FakeSidecar:
    """Stands in for an EnvoySidecar: a real process the agent can watch and stop."""

    def __init__(self) -> None:
        self.process = sleeper()

    def stop(self) -> None:
        stop_process(self.process)


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.DEVNULL)


def running(mesh: MeshTestbed, workload_id: str) -> RunningWorkload:
    workload = RunningWorkload(WorkloadSpec(workload_id, "web", "n1", 8080), sleeper(), FakeSidecar())  # type: ignore[arg-type]
    with mesh._lock:
        mesh.workloads[workload_id] = workload
        mesh._supervise_from_now()
    return workload


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_dead_app_or_sidecar_is_reported_once_and_a_stopped_workload_never(tmp_path: Path) -> None:
    reports: list[tuple[str, str]] = []

    def on_unhealthy(workload_id: str, why: str) -> None:
        reports.append((workload_id, why))

    mesh = MeshTestbed(object(), xds_socket="unused", run_dir=tmp_path, on_unhealthy=on_unhealthy)
    try:
        app_dies, sidecar_dies, stopped = (running(mesh, w) for w in ("web-1", "web-2", "web-3"))
        mesh.stop_workload("web-3", drain_s=0)  # the agent's own stop: no report
        os.kill(app_dies.app.pid, signal.SIGKILL)
        wait_until(lambda: ("web-1", "app exited (-9)") in reports)
        os.kill(sidecar_dies.sidecar.process.pid, signal.SIGKILL)
        wait_until(lambda: ("web-2", "sidecar exited (-9)") in reports)
        time.sleep(0.3)  # several more supervision rounds: nothing reported twice
        assert sorted(reports) == [("web-1", "app exited (-9)"), ("web-2", "sidecar exited (-9)")]
        assert stopped.app.poll() is not None
    finally:
        mesh.stop()
    assert mesh.workloads == {} and app_dies.sidecar.process.poll() is not None


def test_the_app_and_the_load_run_this_checkouts_code_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mininet_topos is not installed with the product: the agent's ``python -m mininet_topos.app`` finds
    this checkout's copy through checkout_env(), also when the lab runs in another directory."""
    monkeypatch.delenv("PYTHONPATH", raising=False)
    probe = "import mininet_topos.app, mininet_topos.loadgen as g; print(g.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=checkout_env(), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == Path(mesh_module.__file__).with_name("loadgen.py")
