"""MigrationTimeline: the stages of one move, relative to its decision, and the whole chain."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgectl.lab import MigrationTimeline
from mininet_topos.mesh import wait_for_line


def timeline(**stages: float | None) -> MigrationTimeline:
    t = MigrationTimeline("mig-1", "api-1", "api-2", "ea-n1", "c-n1", requested_at=99.0, decided_at=100.0)
    for name, value in stages.items():
        setattr(t, name, value)
    return t


def test_the_chain_ends_when_routes_sidecars_and_a_first_request_are_all_done() -> None:
    t = timeline(routes_at=100.005, sidecars_at=100.120, first_request_at=100.300, completed_at=100.125)
    assert t.chain_s == pytest.approx(0.300)
    stages = dict(t.stages())
    assert stages["placement decided"] == 0.0
    assert stages["flows barrier-confirmed"] == pytest.approx(0.005)
    assert stages["old instance withdrawn"] == pytest.approx(0.125)
    # A first request can come before the last ACK is counted: the chain still waits for both.
    assert timeline(routes_at=100.005, sidecars_at=100.4, first_request_at=100.3).chain_s == pytest.approx(0.4)


def test_a_stage_that_never_came_leaves_the_chain_open() -> None:
    t = timeline(routes_at=100.005, sidecars_at=100.120)
    assert t.chain_s is None
    assert dict(t.stages())["first mTLS request"] is None
    assert timeline(decided_at=None).chain_s is None


def test_waiting_for_a_line_from_a_process() -> None:
    command = [sys.executable, "-c", "import sys; print('booting'); print('listening 127.0.0.2:8080', flush=True)"]
    with subprocess.Popen(command, stdout=subprocess.PIPE) as process:
        assert wait_for_line(process, b"listening", 10, "app") == b"listening 127.0.0.2:8080"
    with (
        subprocess.Popen([sys.executable, "-c", "print('oops')"], stdout=subprocess.PIPE) as process,
        pytest.raises(RuntimeError, match="exited"),
    ):
        wait_for_line(process, b"listening", 10, "app")
    command = [sys.executable, "-c", "import time; time.sleep(5)"]
    with subprocess.Popen(command, stdout=subprocess.PIPE) as process:
        try:
            with pytest.raises(TimeoutError, match="no 'listening' line"):
                wait_for_line(process, b"listening", 0.2, "app")
        finally:
            process.kill()
