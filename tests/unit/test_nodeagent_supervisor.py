"""nodeagent/supervisor.py with real (tiny) processes: how the agent's children die with it, are stopped
side by side, and how an earlier agent's leftovers are found."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeagent import supervisor as sv
from nodeagent.plan import Command, EventKind, NodeContext, WorkloadSpec, crashed, started, starting

IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
)


def gone(pid: int) -> bool:
    """Exited (a zombie waiting for its new parent counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.05)
    return False


SETPRIV = shutil.which("setpriv")


@pytest.mark.parametrize(
    "setpriv",
    [None, pytest.param(SETPRIV, marks=pytest.mark.skipif(SETPRIV is None, reason="no setpriv"))],
    ids=["python-prctl", "setpriv"],
)
def test_a_child_started_behind_the_prefix_dies_with_its_parent(setpriv: str | None) -> None:
    if setpriv is not None and not sv.setpriv_has_pdeathsig(setpriv):
        pytest.skip("this setpriv has no --pdeathsig")
    # A parent that starts the child, says its PID, and is killed without any cleanup.
    parent_code = (
        "import subprocess, sys, time\n"
        "from nodeagent.supervisor import child_argv_prefix\n"
        "setpriv = sys.argv[1] or None\n"
        "child = subprocess.Popen([*child_argv_prefix(None, setpriv), 'sleep', '60'], start_new_session=True)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(sv.__file__).resolve().parents[1]))
    parent = subprocess.Popen([sys.executable, "-c", parent_code, setpriv or ""], stdout=subprocess.PIPE, env=env)
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        # Exec'd: the prefix has done its part. By its name, not its command line: the prefix's own command
        # line names ``sleep`` too, and killing the parent before the prefix set the signal proves nothing.
        while Path(f"/proc/{child}/comm").read_text().strip() != "sleep":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        parent.kill()
        parent.wait(10)
        assert wait_gone(child), "the child outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if child and not gone(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize(
    "setpriv",
    [None, pytest.param(SETPRIV, marks=pytest.mark.skipif(SETPRIV is None, reason="no setpriv"))],
    ids=["python-prctl", "setpriv"],
)
def test_a_child_whose_agent_is_already_gone_does_not_run(setpriv: str | None, tmp_path: Path) -> None:
    """The agent died before the prefix set the parent-death signal (here: the prefix is told another
    agent's PID): no signal will ever come, so the prefix exits instead of running the command."""
    if setpriv is not None and not sv.setpriv_has_pdeathsig(setpriv):
        pytest.skip("this setpriv has no --pdeathsig")
    ran = tmp_path / "ran"
    not_our_parent = 1
    done = subprocess.run(
        [*sv.child_argv_prefix(None, setpriv, parent_pid=not_our_parent), "touch", str(ran)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0 and "the node agent is gone" in done.stderr
    assert not ran.exists()
    # With the right parent the same prefix runs it (and passes the arguments through as they are).
    odd = tmp_path / "a name with 'quotes' and $dollars"
    done = subprocess.run(
        [*sv.child_argv_prefix(None, setpriv), "touch", str(odd)], capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 0 and odd.exists()
    # ... and with exactly the environment it was given (an app's environment is the agent's choice).
    given = {"EDGECTL_WORKLOAD": "w-1", "ONLY": "this"}
    env = shutil.which("env")
    assert env is not None
    done = subprocess.run(
        [*sv.child_argv_prefix(None, setpriv), env], env=given, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0
    assert dict(line.split("=", 1) for line in done.stdout.splitlines()) == given


def test_stopping_the_agent_stops_its_workloads_side_by_side(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sv, "STOP_TIMEOUT_S", 1.0)
    supervisor = sv.Supervisor(NodeContext("n1", sys.executable, str(tmp_path)), sv.SidecarSettings("unix:/x", "", ""))
    apps = []
    try:
        for i in range(3):
            app = subprocess.Popen(
                [sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE, start_new_session=True
            )
            apps.append(app)
            assert app.stdout is not None and app.stdout.readline() == b"ready\n"  # SIGTERM ignored from now
            spec = WorkloadSpec(f"w{i}", "web", 8080 + i)
            supervisor.instances[spec.id] = started(starting(spec, 0.0), 0.0)
            supervisor.processes[spec.id] = sv.Processes(app, None, 0.0)
        began = time.monotonic()
        supervisor.stop_all()
        took = time.monotonic() - began
        assert [app.poll() for app in apps] == [-signal.SIGKILL] * 3
        # Each needs STOP_TIMEOUT_S before its SIGKILL: side by side about 1 s, one after another 3 s.
        assert took < 2.5, took
        status = json.loads((tmp_path / "status.json").read_text())
        assert {w["state"] for w in status["workloads"].values()} == {"stopped"}
    finally:
        for app in apps:
            if app.poll() is None:
                app.kill()
                app.wait(10)


def test_the_leftovers_of_an_earlier_agent_are_found_by_pid_and_marker(tmp_path: Path) -> None:
    env = dict(os.environ, EDGECTL_WORKLOAD="web-1")
    ours = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)  # a PID reused by someone else
    try:
        status = {"workloads": {"web-1": {"state": "starting", "app_pid": ours.pid, "sidecar_pid": None}}}
        status["workloads"]["web-2"] = {"state": "running", "app_pid": other.pid, "sidecar_pid": other.pid}
        (tmp_path / "status.json").write_text(json.dumps(status))
        sv.stop_leftovers(tmp_path / "status.json", tmp_path)
        assert ours.wait(10) == -signal.SIGTERM
        assert other.poll() is None
    finally:
        for process in (ours, other):
            if process.poll() is None:
                process.kill()
                process.wait(10)


LISTENS = (
    "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(60)"
)


def test_a_start_says_when_the_app_listened_and_when_its_sidecar_was_started(tmp_path: Path) -> None:
    """status.json splits a start: the app's own start-up (until it listens), then Envoy's boot from when the
    agent started it. (The 'sidecar' here is `true`: what it does after its start is not the agent's.)"""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = sv.SidecarSettings("unix:/x", "", "", envoy=shutil.which("true") or "/bin/true")
    supervisor = sv.Supervisor(NodeContext("n1", sys.executable, str(tmp_path / "agent")), settings)
    spec = WorkloadSpec("w1", "web", port)
    command = Command((sys.executable, "-c", LISTENS, str(port)), ())
    processes = supervisor.launch(spec, command)
    try:
        assert processes.app_listening_at is not None and processes.sidecar_started_at is not None
        assert processes.started_at <= processes.app_listening_at <= processes.sidecar_started_at
        supervisor.instances[spec.id] = started(starting(spec, 0.0), 0.0)
        supervisor.processes[spec.id] = processes
        row = supervisor.status()["workloads"]["w1"]
        assert (row["app_listening_at"], row["sidecar_started_at"]) == (
            processes.app_listening_at,
            processes.sidecar_started_at,
        )
    finally:
        processes.stop()
        supervisor._spawner.shutdown(wait=False)


LISTENS_LATE = (
    "import socket, sys, time; time.sleep(0.3); s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1])));"
    " s.listen(); time.sleep(60)"
)


class Told:
    """An ``announce`` that records what the controller was told, failing the first ``fail`` calls of
    each kind given."""

    def __init__(self, fail_starting: int = 0, fail_listening: int = 0, refuse_listening: bool = False) -> None:
        self.calls: list[tuple[str, bool, float]] = []
        self.fail = {False: fail_starting, True: fail_listening}
        self.refuse_listening = refuse_listening

    def __call__(self, workload_id: str, listening: bool) -> None:
        self.calls.append((workload_id, listening, time.time()))
        if listening and self.refuse_listening:
            raise sv.Refused("NOT_FOUND: unknown workload")
        if self.fail[listening] > 0:
            self.fail[listening] -= 1
            raise ConnectionError("controller unreachable")


@contextlib.contextmanager
def late_listener(tmp_path: Path, told: Told, held: bool = False) -> Iterator[sv.Processes]:
    """Launch an app that listens after 0.3 s (its 'sidecar' is `true`); everything stopped afterwards,
    a failed start's processes too (before its StartFailed goes on)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = sv.SidecarSettings("unix:/x", "", "", envoy=shutil.which("true") or "/bin/true")
    supervisor = sv.Supervisor(NodeContext("n1", sys.executable, str(tmp_path / "agent")), settings, announce=told)
    command = Command((sys.executable, "-c", LISTENS_LATE, str(port)), ())
    try:
        processes = supervisor.launch(WorkloadSpec("w1", "web", port), command, held)
    except sv.StartFailed as failed:
        failed.processes.stop()
        supervisor._spawner.shutdown(wait=False)
        raise
    try:
        yield processes
    finally:
        processes.stop()
        supervisor._spawner.shutdown(wait=False)


def test_told_it_is_starting_the_sidecar_boots_beside_the_app_and_the_listening_app_is_reported(
    tmp_path: Path,
) -> None:
    told = Told()
    with late_listener(tmp_path, told) as processes:
        assert processes.app_listening_at is not None and processes.sidecar_started_at is not None
        assert processes.sidecar_started_at < processes.app_listening_at  # Envoy's boot overlaps the app's
        assert [(w, listening) for w, listening, _ in told.calls] == [("w1", False), ("w1", True)]
        assert told.calls[0][2] <= processes.sidecar_started_at  # the controller knew before Envoy could serve
        assert told.calls[1][2] >= processes.app_listening_at
        assert processes.announced


def test_when_the_start_cannot_be_told_the_sidecar_waits_for_the_app(tmp_path: Path) -> None:
    told = Told(fail_starting=1)
    with late_listener(tmp_path, told) as processes:
        assert processes.app_listening_at is not None and processes.sidecar_started_at is not None
        assert processes.app_listening_at <= processes.sidecar_started_at
        assert [(w, listening) for w, listening, _ in told.calls] == [("w1", False)]
        assert not processes.announced


def test_the_listening_app_is_told_again_until_the_controller_hears_it(tmp_path: Path) -> None:
    told = Told(fail_listening=2)
    with late_listener(tmp_path, told) as processes:
        assert [listening for _, listening, _ in told.calls] == [False, True, True, True]
        assert processes.announced


def test_a_start_whose_listening_app_cannot_be_told_fails_and_leaves_nothing_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sv, "LISTENING_REPORT_S", 0.2)
    told = Told(fail_listening=1000)
    with pytest.raises(sv.StartFailed, match="cannot tell the controller its app listens") as failed:  # noqa: SIM117
        with late_listener(tmp_path, told):
            pass
    processes = failed.value.processes
    assert processes.app is not None and processes.sidecar is not None  # both handed back to be stopped
    assert processes.app.poll() is not None


def test_a_refused_listening_report_fails_the_start_at_once(tmp_path: Path) -> None:
    told = Told(refuse_listening=True)
    with pytest.raises(sv.StartFailed, match="refused to hear its app listens: NOT_FOUND"):  # noqa: SIM117
        with late_listener(tmp_path, told):
            pass
    assert [listening for _, listening, _ in told.calls] == [False, True]  # not asked again


def test_a_start_the_controller_holds_already_boots_the_sidecar_at_once_and_reports_only_the_listening_app(
    tmp_path: Path,
) -> None:
    told = Told()
    with late_listener(tmp_path, told, held=True) as processes:
        assert processes.sidecar_started_at is not None and processes.app_listening_at is not None
        assert processes.sidecar_started_at < processes.app_listening_at
        assert [(w, listening) for w, listening, _ in told.calls] == [("w1", True)]


def test_status_json_shows_a_start_and_its_listening_app_before_the_controller_hears_of_it(tmp_path: Path) -> None:
    """The controller may end a move once it hears the app listens, before the start's thread is done:
    status.json has the start's times by then."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    work = tmp_path / "agent"
    rows: list[dict[str, object]] = []

    def told(workload_id: str, listening: bool) -> None:
        if not listening:
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the loop writes it: give it a moment, not the start's end
            row = json.loads((work / "status.json").read_text())["workloads"].get(workload_id, {})
            if row.get("app_listening_at") is not None:
                break
            time.sleep(0.01)
        rows.append(row)

    settings = sv.SidecarSettings("unix:/x", "", "", envoy=shutil.which("true") or "/bin/true")
    supervisor = sv.Supervisor(NodeContext("n1", sys.executable, str(work)), settings, announce=told)
    spec = WorkloadSpec("w1", "web", port, run=(sys.executable, "-c", LISTENS_LATE, str(port)))
    supervisor.start()
    try:
        supervisor.update(EventKind.SNAPSHOT, [spec], held=["w1"])
        deadline = time.monotonic() + 10
        while not rows and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rows, "the listening app was never reported"
        (row,) = rows
        assert row["state"] == "starting"
        assert row["started_at"] is not None and row["app_listening_at"] is not None
        assert row["started_at"] <= row["app_listening_at"]  # type: ignore[operator]
    finally:
        supervisor.stop_all()


def test_only_a_first_start_is_held_and_a_held_workload_that_runs_already_is_reported_at_once(tmp_path: Path) -> None:
    reports: list[tuple[str, bool, str]] = []
    supervisor = sv.Supervisor(
        NodeContext("n1", sys.executable, str(tmp_path / "agent")),
        sv.SidecarSettings("unix:/x", "", ""),
        report=lambda *r: reports.append(r),
        announce=Told(),
    )
    launched: list[tuple[str, bool]] = []
    supervisor._start_in_background = lambda action, held=False: launched.append((action.spec.id, held))  # type: ignore[method-assign]
    fresh, running, restarting = (WorkloadSpec(w, "web", 8000 + i) for i, w in enumerate(("w1", "w2", "w3")))
    supervisor.instances["w2"] = started(starting(running, 0.0), 0.0)
    supervisor.instances["w3"] = crashed(started(starting(restarting, 0.0), 0.0), 1.0, "app exited (1)")
    supervisor.update(EventKind.SNAPSHOT, [fresh, running, restarting], held=["w1", "w2", "w3", "gone"])
    supervisor._take_messages()
    assert reports == [("w2", True, "running already")]
    assert supervisor._held == {"w1"}  # w3's restart reports its own start; one no longer placed is forgotten
    supervisor.clock = lambda: 1_000.0  # past w3's restart backoff
    supervisor._act()
    assert sorted(launched) == [("w1", True), ("w3", False)]
    assert supervisor._held == set()
    supervisor._held.add("w3")  # held anyway (a watch of a moment before): still not for a restart
    supervisor.instances["w3"] = crashed(supervisor.instances["w3"], 1_001.0, "app exited (1)")
    supervisor.clock = lambda: 10_000.0
    supervisor._act()
    assert launched[-1] == ("w3", False)
    supervisor._spawner.shutdown(wait=False)
