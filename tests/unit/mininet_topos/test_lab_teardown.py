"""mininet_topos/lab.py's teardown of the node agents, with real processes and no Mininet: an agent too
slow to stop is killed, and what it left running is stopped before its directory goes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mininet_topos import lab as lab_module

STUCK = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"


def test_what_a_killed_agent_left_running_is_stopped_before_its_files_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lab_module, "AGENT_STOP_TIMEOUT_S", 0.5)
    lab = lab_module.Lab(tmp_path / "fabric.yaml", tmp_path)
    lab.agents_dir = tmp_path / "agents"
    work_dir = lab.agents_dir / "n1"
    work_dir.mkdir(parents=True)
    agent = subprocess.Popen([sys.executable, "-c", STUCK], stdout=subprocess.PIPE)  # an agent slow to stop
    app = subprocess.Popen(  # a workload's app in its own session, as the agent starts them
        [sys.executable, "-c", STUCK],
        stdout=subprocess.PIPE,
        env=dict(os.environ, EDGECTL_WORKLOAD="web-1"),
        start_new_session=True,
    )
    try:
        assert agent.stdout is not None and agent.stdout.readline() == b"ready\n"
        assert app.stdout is not None and app.stdout.readline() == b"ready\n"
        status = {"workloads": {"web-1": {"state": "running", "app_pid": app.pid, "sidecar_pid": None}}}
        (work_dir / "status.json").write_text(json.dumps(status))
        lab.agents["n1"] = agent
        began = time.monotonic()
        lab._stop_agents()
        assert agent.poll() == -signal.SIGKILL
        assert app.wait(15) == -signal.SIGKILL  # it ignores SIGTERM too
        assert time.monotonic() - began < 30
    finally:
        for process in (agent, app):
            if process.poll() is None:
                process.kill()
                process.wait(10)
