"""The processes of the node's workloads (adapter): each workload's app and its Envoy sidecar, started,
watched, restarted and stopped as ``nodeagent.plan`` decides.

One loop thread owns every instance: it takes the WatchNode events (``update``), looks whether what
runs is still alive, asks the plan what to do and does it. A start waits for the app to listen (up to
``APP_START_TIMEOUT_S``), so it runs on a thread of its own and posts its outcome back to the loop.

The app and its sidecar start side by side when the controller holds the instance as starting (it stays
no endpoint, and is no failure): because it said so when it placed it (``update``'s ``held``, a first
start only) or because it was told so now (``announce``); once the app listens it is told the instance is
healthy. So Envoy's boot overlaps the app's start-up instead of following it. Without ``announce``,
or when the controller cannot be told, the sidecar is started once the app listens (then a serving
sidecar means a serving app).

Per workload, in ``<work-dir>/w/<id>/``: ``app.log`` (the app's stdout and stderr), the sidecar's
``bootstrap.json`` and ``envoy.log``, and its admin API on ``admin.sock``. The work directory is the
agent's alone (0700: the node key is there too); the app runs as ``run_as`` (``--run-as``) with only
PATH, LANG, PYTHONPATH, HOME and its own variables, in ``<work-dir>-apps/<id>/`` (``{work_dir}``, owned
by that user, 0700). The app runs in its own
process group (stopped as a group); the sidecar's xDS channel presents the node SVID from the node's SDS
file, so the controller serves it only while the workload is placed on this node.
``<work-dir>/status.json`` says what runs, rewritten atomically on each change.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshctl.bootstrap import XdsClientTls, render_bootstrap
from meshctl.sidecar import EnvoySidecar
from nodeagent import plan as p
from nodeagent.listening import Listener, listener_of
from nodeagent.warmup import sidecar_connections, warm_up_in_background
from pki.store import replace_file

LOG = logging.getLogger("edgectl.agent")

APP_START_TIMEOUT_S = 10.0
LISTEN_POLL_S = 0.005
TICK_S = 0.1
"""How often the loop looks at the processes when nothing else wakes it."""
STOP_TIMEOUT_S = 5.0
MAX_UNIX_PATH = 107
KEEP_STOPPED = 200
"""Stopped instances kept in status.json (their started_at), newest first."""

Report = Callable[[str, bool, str], None]
"""(workload id, healthy, reason): tell the controller."""
Announce = Callable[[str, bool], None]
"""(workload id, listening): tell the controller, and wait for its answer, that the app is starting
beside its sidecar (False) or now listens (True); raises when it could not be told (``Refused``: and
asking again would not help)."""
LISTENING_REPORT_S = 10.0
"""How long a start keeps telling the controller its app listens before it counts as failed."""


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    """What every sidecar of this node shares: where xDS is, and the files of its mTLS channel."""

    xds_address: str
    bundle_file: str
    sds_file: str
    server_id: str = ""
    envoy: str = ""
    """The Envoy binary ("": the one beside this interpreter, or on PATH)."""
    log_level: str = "warning"
    warm_up: bool = True
    """Each new sidecar's connections to the HTTP services its app calls are opened as soon as it can
    route to them, before the app's first request (``nodeagent.warmup``)."""


@dataclass(frozen=True, slots=True)
class RunAs:
    """The user the apps run as (``--run-as``): never the agent's own root, which holds the node key."""

    name: str
    uid: int
    gid: int


APP_ENV_PASSED = ("PATH", "LANG", "PYTHONPATH")
"""The only variables of the agent's environment an app inherits (when set)."""


def app_environment(
    agent_env: dict[str, str], own: Iterable[tuple[str, str]], home: str, code_root: str = ""
) -> dict[str, str]:
    """An app's environment: PATH, LANG and PYTHONPATH of the agent's, HOME (its own directory), then the
    service's ``env`` and the agent's EDGECTL_* values (``own``). Nothing else of the agent's: its
    environment may hold what the app must not see. ``code_root`` (where the agent's own packages are)
    ends PYTHONPATH, so ``{python} -m module`` finds what the agent finds although the app's cwd is
    its own directory."""
    env = {name: agent_env[name] for name in APP_ENV_PASSED if name in agent_env}
    if code_root:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), code_root) if p)
    env["HOME"] = home
    env.update(own)
    return env


def warn_if_closed(directory: Path, run_as: RunAs) -> None:
    """Say so when ``run_as`` cannot pass through a directory above the apps' own (no x bit for it): an
    app still starts in its directory, but cannot reach it by path ({work_dir}, HOME)."""
    for above in [directory.absolute(), *directory.absolute().parents]:
        try:
            info = above.stat()
        except OSError:
            continue
        bit = 0o100 if info.st_uid == run_as.uid else 0o010 if info.st_gid == run_as.gid else 0o001
        if not info.st_mode & bit:
            LOG.warning(
                "%s does not let %s through: its apps cannot reach their own directories by path ({work_dir})",
                above,
                run_as.name,
            )
            return


PR_SET_PDEATHSIG = 1


def setpriv_has_pdeathsig(setpriv: str) -> bool:
    """util-linux's setpriv knows ``--pdeathsig`` since 2.33."""
    try:
        done = subprocess.run([setpriv, "--help"], capture_output=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return b"--pdeathsig" in done.stdout


def child_argv_prefix(run_as: RunAs | None, setpriv: str | None, parent_pid: int | None = None) -> list[str]:
    """The command prefix every process the agent starts runs behind: it dies with the agent (the
    parent-death signal, SIGKILL: an agent killed without its cleanup leaves no app or sidecar holding
    a port), and runs as ``run_as`` with no supplementary groups (None: the agent's own user).

    ``setpriv`` (util-linux, with --pdeathsig) when given, else this interpreter doing the same
    (setgroups, setgid, setuid, then prctl(PR_SET_PDEATHSIG): a change of user clears it, so it comes
    last; then exec). Either way the parent is checked after the signal is set: an agent that died before
    (between the fork and the prctl) sends none, so the child exits instead of running orphaned. The
    signal comes when the agent's THREAD that started the process ends: the supervisor starts every
    process from one thread that lives as long as the agent. ``parent_pid``: the agent's (this process)."""
    parent = str(os.getpid() if parent_pid is None else parent_pid)
    user = [f"--reuid={run_as.uid}", f"--regid={run_as.gid}", "--clear-groups"] if run_as is not None else []
    if setpriv:
        # sh's $PPID is its parent when it started, after setpriv's prctl. PWD, which sh sets and exports
        # itself, is unset, so the command gets the environment it was given (but for a PWD in it: sh
        # replaces that with the working directory anyway, and the agent gives none).
        check = f'[ "$PPID" = {parent} ] || {{ echo "the node agent is gone" >&2; exit 1; }}; unset PWD; exec "$@"'
        return [setpriv, *user, "--pdeathsig", "KILL", "--", "/bin/sh", "-c", check, "sh"]
    code = (
        "import ctypes, os, signal, sys\n"
        # The environment as given (the kernel's copy; read before a change of user makes it unreadable):
        # Python's own start-up may have added to os.environ (LC_CTYPE, coercing a C locale).
        "env = dict(v.split(b'=', 1) for v in open('/proc/self/environ', 'rb').read().split(b'\\0') if b'=' in v)\n"
        "if sys.argv[1]:\n"
        "    os.setgroups([]); os.setgid(int(sys.argv[2])); os.setuid(int(sys.argv[1]))\n"
        f"ctypes.CDLL(None, use_errno=True).prctl({PR_SET_PDEATHSIG}, int(signal.SIGKILL), 0, 0, 0)\n"
        "if os.getppid() != int(sys.argv[3]):\n"
        "    raise SystemExit('the node agent is gone')\n"
        "os.execvpe(sys.argv[4], sys.argv[4:], env)"
    )
    ids = [str(run_as.uid), str(run_as.gid)] if run_as is not None else ["", ""]
    return [sys.executable, "-c", code, *ids, parent]


@dataclass(slots=True)
class Processes:
    app: subprocess.Popen[bytes] | None
    sidecar: EnvoySidecar | None
    started_at: float
    """Wall clock when the app was started."""
    app_listening_at: float | None = None
    """Wall clock when the app first accepted a connection (the agent's poll): its start-up ends there."""
    sidecar_started_at: float | None = None
    """Wall clock when the agent started the sidecar (beside the app, or after it listens): Envoy's boot
    begins there."""
    announced: bool = False
    """The controller was told the app listens (the start reported the instance healthy itself)."""

    def death(self) -> str | None:
        if self.app is not None and (code := self.app.poll()) is not None:
            return f"app exited ({code})"
        process = self.sidecar.process if self.sidecar is not None else None
        if process is not None and (code := process.poll()) is not None:
            return f"sidecar exited ({code})"
        return None

    def stop(self) -> None:
        """Sidecar first (no new requests reach the app), then the app's process group."""
        if self.sidecar is not None:
            self.sidecar.stop(STOP_TIMEOUT_S)
        if self.app is not None:
            stop_group(self.app, STOP_TIMEOUT_S)


def stop_all_at_once(every: Iterable[tuple[str, Processes]]) -> None:
    """Stop several workloads' processes side by side (each may take up to 2 x STOP_TIMEOUT_S: 20 of
    them must not take 20 times that), logging each."""

    def stop(workload_id: str, processes: Processes) -> None:
        try:
            processes.stop()
        except Exception:
            LOG.exception("cannot stop %s", workload_id)
        else:
            LOG.info("stopped %s: the agent is stopping", workload_id)

    threads = [threading.Thread(target=stop, args=item, name=f"stop-{item[0]}", daemon=True) for item in every]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM to the process group led by ``process`` (started with ``start_new_session``), SIGKILL to it
    after ``timeout``. The group id is the leader's PID, which Linux does not reuse while the group lives."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # what the leader left behind in its group


class Refused(Exception):
    """The controller answered a report with no (the workload is not placed here any more, say)."""


class StartFailed(Exception):
    def __init__(self, reason: str, processes: Processes) -> None:
        super().__init__(reason)
        self.processes = processes


class Supervisor:
    def __init__(
        self,
        context: p.NodeContext,
        sidecars: SidecarSettings,
        *,
        drain_s: float = 1.0,
        report: Report | None = None,
        announce: Announce | None = None,
        identity: Callable[[], tuple[str, float]] = lambda: ("", 0.0),
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        run_as: RunAs | None = None,
    ) -> None:
        self.context = context
        self.run_as = run_as
        """None: the apps run as the agent's own user."""
        self.sidecars = sidecars
        self.drain_s = drain_s
        self.report = report or (lambda _id, _healthy, _reason: None)
        self.announce = announce
        """None: each sidecar starts once its app listens."""
        self._held: set[str] = set()
        """New workloads the controller holds as starting, not started yet (``update``'s ``held``)."""
        self.identity = identity
        self.clock = clock
        self.wall_clock = wall_clock
        self.work_root = Path(context.work_root)
        self.status_path = self.work_root / "status.json"
        self.desired: dict[str, p.WorkloadSpec] = {}
        self.instances: dict[str, p.Instance] = {}
        self.processes: dict[str, Processes] = {}
        self.launching: dict[str, Processes] = {}
        """The processes of starts under way, as soon as each exists: in status.json (their PIDs) so an
        agent killed meanwhile leaves the next one what to stop."""
        self.started_at: dict[str, float] = {}
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._pending: list[tuple[str, Any]] = []
        self._closing = threading.Event()
        self._starts: list[threading.Thread] = []
        self._thread: threading.Thread | None = None
        self._setpriv: str | None = None
        # Every process is started from this one thread: a parent-death signal fires when the THREAD
        # that started the process ends, and this one lives as long as the agent.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-spawn")

    # -- from outside ------------------------------------------------------------------------------

    def update(self, kind: p.EventKind, workloads: Iterable[p.WorkloadSpec], held: Iterable[str] = ()) -> None:
        """One WatchNode event (thread-safe); ``held``: the new workloads the controller already holds as
        starting (their first start need not report it)."""
        self._inbox.put(("event", (kind, tuple(workloads), frozenset(held))))

    def start(self) -> Supervisor:
        self.work_root.mkdir(parents=True, exist_ok=True)
        # The node key, the SDS file and the sidecars' admin sockets live here: the agent's alone.
        os.chmod(self.work_root, 0o700)
        if self.run_as is not None:
            warn_if_closed(Path(self.context.app_dir("x")).parent.parent, self.run_as)
        stop_leftovers(self.status_path, self.work_root)
        setpriv = shutil.which("setpriv")
        self._setpriv = setpriv if setpriv and setpriv_has_pdeathsig(setpriv) else None
        self._write_status()
        self._thread = threading.Thread(target=self._loop, name="agent-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop_all(self) -> None:
        """Stop every process this supervisor started (starts in progress finish first, then stop)."""
        self._closing.set()
        self._inbox.put(("wake", None))
        if self._thread is not None:
            self._thread.join(30)
        for thread in self._starts:
            thread.join(APP_START_TIMEOUT_S + STOP_TIMEOUT_S * 2)
        every = list(self.processes.items())
        while True:  # what starts finished after the loop ended
            if self._pending:
                kind, payload = self._pending.pop(0)
            else:
                try:
                    kind, payload = self._inbox.get_nowait()
                except queue.Empty:
                    break
            if kind in ("started", "failed"):
                every.append((payload[0], payload[1]))
        stop_all_at_once(every)
        self.processes.clear()
        self.launching.clear()
        for workload_id, instance in list(self.instances.items()):  # also those crashed or starting
            if instance.phase is not p.Phase.STOPPED:
                self.instances[workload_id] = p.stopped(instance, self.clock(), "the agent stopped")
        self._write_status()
        self._spawner.shutdown(wait=False)

    # -- the loop ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._closing.is_set():
            try:
                changed = self._take_messages()
                changed |= self._look_for_deaths()
                changed |= self._act()
                if changed:
                    self._write_status()
            except Exception:  # never let one bad step end supervision
                LOG.exception("agent supervisor: unexpected error")
            with contextlib.suppress(queue.Empty):  # wake on a message (kept in order), else after a tick
                self._pending.append(self._inbox.get(timeout=TICK_S))

    def _take_messages(self) -> bool:
        changed = False
        while True:
            if self._pending:
                kind, payload = self._pending.pop(0)
            else:
                try:
                    kind, payload = self._inbox.get_nowait()
                except queue.Empty:
                    return changed
            if kind == "event":
                event, workloads, held = payload
                self.desired = p.apply_event(self.desired, event, workloads)
                self._note_held(held)
                changed = True
            elif kind == "spawned":
                changed |= self._on_spawned(*payload)
            elif kind == "started":
                changed |= self._on_started(*payload)
            elif kind == "failed":
                changed |= self._on_start_failed(*payload)
            elif kind == "status":
                changed = True

    def _note_held(self, held: frozenset[str]) -> None:
        """The controller holds these as starting until told they serve: one that runs already is told at
        once; a new one's first start skips its own report of the start."""
        for workload_id in held:
            instance = self.instances.get(workload_id)
            if instance is None or instance.phase is p.Phase.STOPPED:
                self._held.add(workload_id)
            elif instance.phase is p.Phase.RUNNING:
                self._report(workload_id, True, "running already")
            # (else a start, a restart or a drain is under way: each start reports the app listening)
        self._held.intersection_update(self.desired)

    def _on_spawned(self, workload_id: str, processes: Processes) -> bool:
        instance = self.instances.get(workload_id)
        if instance is None or instance.phase is not p.Phase.STARTING:
            return False
        self.launching[workload_id] = processes
        return True

    def _on_started(self, workload_id: str, processes: Processes, why: str) -> bool:
        self.launching.pop(workload_id, None)
        instance = self.instances.get(workload_id)
        if instance is None or instance.phase is not p.Phase.STARTING:
            processes.stop()
            return False
        self.instances[workload_id] = p.started(instance, self.clock())
        self.processes[workload_id] = processes
        self.started_at[workload_id] = processes.started_at
        LOG.info("started %s (%s): %s", workload_id, instance.spec.service, why)
        if instance.restarts and not processes.announced:
            self._report(workload_id, True, f"serving again after restart {instance.restarts}")
        return True

    def _on_start_failed(self, workload_id: str, processes: Processes, reason: str) -> bool:
        self.launching.pop(workload_id, None)
        processes.stop()
        instance = self.instances.get(workload_id)
        if instance is None:
            return False
        crashed = p.crashed(instance, self.clock(), reason)
        self.instances[workload_id] = crashed
        self.started_at[workload_id] = processes.started_at
        LOG.warning(
            "%s did not start: %s; reporting it unhealthy, next try in %.1f s",
            workload_id,
            reason,
            crashed.restart_at - crashed.since,
        )
        self._report(workload_id, False, reason)
        return True

    def _look_for_deaths(self) -> bool:
        changed = False
        for workload_id, processes in list(self.processes.items()):
            instance = self.instances[workload_id]
            if instance.phase not in (p.Phase.RUNNING, p.Phase.DRAINING):
                continue
            why = processes.death()
            if why is None:
                continue
            processes.stop()
            del self.processes[workload_id]
            changed = True
            if instance.phase is p.Phase.DRAINING:
                self.instances[workload_id] = p.stopped(instance, self.clock(), f"{why} while draining")
                LOG.info("stopped %s: %s while draining", workload_id, why)
                continue
            crashed = p.crashed(instance, self.clock(), why)
            self.instances[workload_id] = crashed
            LOG.warning(
                "%s: %s; reporting it unhealthy, restarting in %.1f s",
                workload_id,
                why,
                crashed.restart_at - crashed.since,
            )
            self._report(workload_id, False, why)
        return changed

    def _act(self) -> bool:
        now = self.clock()
        actions = p.plan(self.desired, self.instances, now, self.drain_s, self.context)
        for action in actions:
            if isinstance(action, p.Start):
                previous = self.instances.get(action.spec.id)
                # Only a first start was held by the controller; a restart reports its own start.
                held = action.spec.id in self._held and (previous is None or previous.phase is p.Phase.STOPPED)
                self._held.discard(action.spec.id)
                self.instances[action.spec.id] = p.starting(action.spec, now, previous)
                self._start_in_background(action, held)
            elif isinstance(action, p.Refuse):
                self.instances[action.spec.id] = p.invalid(action.spec, now, action.why)
                LOG.error("not starting %s: %s; reporting it unhealthy", action.spec.id, action.why)
                self._report(action.spec.id, False, action.why)
            elif isinstance(action, p.Drain):
                self.instances[action.workload_id] = p.draining(self.instances[action.workload_id], now, self.drain_s)
                LOG.info("draining %s for %.1f s: removed from this node", action.workload_id, self.drain_s)
            else:
                processes = self.processes.pop(action.workload_id, None)
                if processes is not None:
                    processes.stop()
                self.instances[action.workload_id] = p.stopped(self.instances[action.workload_id], now, action.why)
                LOG.info("stopped %s: %s", action.workload_id, action.why)
        self._forget_old()
        return bool(actions)

    def _forget_old(self) -> None:
        stopped = [i for i, inst in self.instances.items() if inst.phase is p.Phase.STOPPED and i not in self.desired]
        for workload_id in sorted(stopped, key=lambda i: self.instances[i].since)[:-KEEP_STOPPED]:
            del self.instances[workload_id]
            self.started_at.pop(workload_id, None)

    def _report(self, workload_id: str, healthy: bool, reason: str) -> None:
        try:
            self.report(workload_id, healthy, reason)
        except Exception as exc:
            LOG.error("cannot report %s %s: %s", workload_id, "healthy" if healthy else "unhealthy", exc)

    # -- starting one workload -----------------------------------------------------------------------

    def _start_in_background(self, action: p.Start, held: bool = False) -> None:
        self._starts = [t for t in self._starts if t.is_alive()]
        thread = threading.Thread(
            target=self._start_one, args=(action, held), name=f"start-{action.spec.id}", daemon=True
        )
        self._starts.append(thread)
        thread.start()

    def _start_one(self, action: p.Start, held: bool = False) -> None:
        spec = action.spec
        try:
            processes = self.launch(spec, action.command, held)
        except StartFailed as exc:
            self._inbox.put(("failed", (spec.id, exc.processes, str(exc))))
            return
        except Exception as exc:
            self._inbox.put(("failed", (spec.id, Processes(None, None, self.wall_clock()), f"{exc}")))
            return
        self._inbox.put(("started", (spec.id, processes, action.why)))

    def launch(self, spec: p.WorkloadSpec, command: p.Command | None, held: bool = False) -> Processes:
        """Start the app and its sidecar: side by side when the controller holds the instance as starting
        (``held``: it said so on placing it) or was told so now (``announce``), else the sidecar once the
        app accepts connections."""
        work_dir = Path(self.context.work_dir(spec.id))
        work_dir.mkdir(parents=True, exist_ok=True)
        admin = work_dir / "admin.sock"
        if len(str(admin).encode()) > MAX_UNIX_PATH:
            raise StartFailed(
                f"{admin} is longer than {MAX_UNIX_PATH} bytes (a Unix socket path): use a shorter --work-dir",
                Processes(None, None, self.wall_clock()),
            )
        processes = Processes(None, None, self.wall_clock())
        held_by = self.announce if held else None
        if command is None:
            self._start_sidecar(spec, processes, work_dir, admin)
            if held_by is not None:
                self._tell_listening(held_by, spec.id, processes)  # no app to wait for
            return processes
        processes.app = self._start_app(spec, command, work_dir, self._app_dir(spec.id))
        self._inbox.put(("spawned", (spec.id, processes)))  # its PID in status.json before the wait
        # Told while the app's interpreter starts (unless the controller holds it already).
        announce = held_by or (self.announce if self._told_starting(spec.id) else None)
        if announce is not None:
            self._start_sidecar(spec, processes, work_dir, admin)
        try:
            wait_listening(processes.app, spec.app_host, spec.port, APP_START_TIMEOUT_S, self._closing)
        except RuntimeError as exc:
            raise StartFailed(str(exc), processes) from None
        processes.app_listening_at = self.wall_clock()
        self._inbox.put(("status", None))  # in status.json before the controller hears of it
        if announce is not None:
            self._tell_listening(announce, spec.id, processes)
        else:
            self._start_sidecar(spec, processes, work_dir, admin)
        return processes

    def _told_starting(self, workload_id: str) -> bool:
        """The controller knows the app starts beside its sidecar (so it is no endpoint before it
        listens); False: no ``announce``, or the controller could not be told."""
        if self.announce is None:
            return False
        try:
            self.announce(workload_id, False)
        except Exception as exc:
            LOG.warning("%s: cannot say it is starting (%s); its sidecar starts once its app listens", workload_id, exc)
            return False
        return True

    def _tell_listening(self, announce: Announce, workload_id: str, processes: Processes) -> None:
        """Tell the controller the app listens, trying again for up to ``LISTENING_REPORT_S``: until it
        is told, the instance is no endpoint. StartFailed when it cannot be, or when it refuses."""
        deadline = time.monotonic() + LISTENING_REPORT_S
        pause = 0.05
        while True:
            try:
                announce(workload_id, True)
            except Refused as exc:
                raise StartFailed(f"the controller refused to hear its app listens: {exc}", processes) from None
            except Exception as exc:
                if time.monotonic() + pause > deadline:
                    raise StartFailed(f"cannot tell the controller its app listens: {exc}", processes) from None
                if self._closing.wait(pause):
                    raise StartFailed("the agent is stopping", processes) from None
                pause = min(pause * 2, 1.0)
                continue
            processes.announced = True
            return

    def _start_sidecar(self, spec: p.WorkloadSpec, processes: Processes, work_dir: Path, admin: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            admin.unlink()
        tls = XdsClientTls("", "", self.sidecars.bundle_file, self.sidecars.server_id, sds_file=self.sidecars.sds_file)
        bootstrap = render_bootstrap(
            spec.id, spec.service, xds_address=self.sidecars.xds_address, admin_socket=str(admin), tls=tls
        )
        processes.sidecar_started_at = self.wall_clock()
        try:
            processes.sidecar = EnvoySidecar(
                bootstrap, log_level=self.sidecars.log_level, popen=self._envoy_popen, workdir=work_dir
            ).start()
        except OSError as exc:
            raise StartFailed(f"cannot start its sidecar: {exc}", processes) from None
        self._inbox.put(("spawned", (spec.id, processes)))
        if self.sidecars.warm_up:
            warm_up_in_background(
                spec.id, spec.calls, self._closing, spec.outbound_host, connections=sidecar_connections(str(admin))
            )

    def _app_dir(self, workload_id: str) -> Path:
        """The app's own directory, owned by the user it runs as, 0700; its parent lets others through
        but not list it."""
        app_dir = Path(self.context.app_dir(workload_id))
        app_dir.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(app_dir.parent, 0o711)
        app_dir.mkdir(exist_ok=True)
        if self.run_as is not None:
            os.chown(app_dir, self.run_as.uid, self.run_as.gid)
        os.chmod(app_dir, 0o700)
        return app_dir

    def _start_app(
        self, spec: p.WorkloadSpec, command: p.Command, work_dir: Path, app_dir: Path
    ) -> subprocess.Popen[bytes]:
        own = [
            *command.env,
            ("EDGECTL_WORKLOAD", spec.id),
            ("EDGECTL_SERVICE", spec.service),
            ("EDGECTL_NODE", self.context.node),
            ("EDGECTL_PORT", str(spec.port)),
            ("EDGECTL_APP_HOST", spec.app_host),
            ("EDGECTL_OUTBOUND_HOST", spec.outbound_host),
            ("EDGECTL_SPIFFE_ID", spec.spiffe_id),
            ("EDGECTL_WORK_DIR", str(app_dir)),
        ]
        env = app_environment(dict(os.environ), own, str(app_dir), str(Path(p.__file__).resolve().parents[1]))
        # Not Popen(user=, group=, preexec_fn=): those make CPython fork() instead of vfork(), and a fork
        # of this multi-threaded gRPC process can crash the child. A small exec wrapper does it.
        argv = [*child_argv_prefix(self.run_as, self._setpriv), *command.argv]
        with open(work_dir / "app.log", "ab") as log:
            try:
                return self._spawn(
                    argv,
                    env=env,
                    cwd=app_dir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise StartFailed(
                    f"cannot run {command.argv[0]!r}: {exc}", Processes(None, None, self.wall_clock())
                ) from None

    def _envoy_popen(self, command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        argv = [*child_argv_prefix(None, self._setpriv), self.sidecars.envoy or command[0], *command[1:]]
        return self._spawn(argv, start_new_session=True, **kwargs)

    def _spawn(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """``subprocess.Popen`` on the spawner thread (see ``child_argv_prefix``)."""

        def popen() -> subprocess.Popen[bytes]:
            return subprocess.Popen(argv, **kwargs)

        return self._spawner.submit(popen).result()

    # -- status.json -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        spiffe_id, expires_at = self.identity()
        workloads: dict[str, Any] = {}
        for workload_id, instance in sorted(self.instances.items()):
            processes = self.processes.get(workload_id) or self.launching.get(workload_id)
            state = "crashed" if instance.phase is p.Phase.INVALID else instance.phase.value
            app = processes.app if processes is not None else None
            sidecar = processes.sidecar if processes is not None else None
            workloads[workload_id] = {
                "service": instance.spec.service,
                "port": instance.spec.port,
                "state": state,
                # A start under way has one too: the controller may hear the app listens (and move
                # on) before the start's thread is done.
                "started_at": processes.started_at if processes is not None else self.started_at.get(workload_id),
                # Where a start's time went (process start-up, not the controller's): the app's own
                # start-up ends when it listens, Envoy's boot begins when the agent started it.
                "app_listening_at": processes.app_listening_at if processes is not None else None,
                "sidecar_started_at": processes.sidecar_started_at if processes is not None else None,
                "restarts": instance.restarts,
                "app_pid": app.pid if app is not None else None,
                "sidecar_pid": sidecar.pid if sidecar is not None else None,
                "reason": instance.reason,
            }
        return {"node": self.context.node, "spiffe_id": spiffe_id, "expires_at": expires_at, "workloads": workloads}

    def _write_status(self) -> None:
        try:
            replace_file(self.status_path, json.dumps(self.status(), indent=2).encode(), 0o644)
        except OSError as exc:
            LOG.error("cannot write %s: %s", self.status_path, exc)

    def write_status(self) -> None:
        """Have status.json rewritten (the identity was renewed); thread-safe."""
        self._inbox.put(("status", None))


def wait_listening(
    app: subprocess.Popen[bytes], host: str, port: int, timeout: float, cancelled: threading.Event
) -> None:
    """Return once the app listens on ``host:port``; RuntimeError if the app exits first, the time runs
    out, or the agent is stopping. The listening socket must be the app's (``nodeagent.listening``):
    another process on that address is not the app listening. Where that cannot be told (no /proc),
    a TCP connect that succeeds while the app runs is taken for it."""
    deadline = time.monotonic() + timeout
    other = False  # another process was seen listening on the address
    while True:
        code = app.poll()
        if code is not None:
            held = f"; another process listens on {host}:{port}" if other else ""
            raise RuntimeError(f"app exited ({code}) before it listened on {host}:{port}{held}")
        listener = listener_of(app.pid, host, port)
        if listener is Listener.APP or (listener is None and _accepts(host, port)):
            # Looked at again after: if our app died meanwhile, what answered is another process.
            code = app.poll()
            if code is not None:
                raise RuntimeError(f"app exited ({code}); something else answers on {host}:{port}")
            return
        other = other or listener is Listener.OTHER
        if time.monotonic() >= deadline:
            held = " (another process listens there)" if other else ""
            raise RuntimeError(f"app did not listen on {host}:{port} within {timeout:g} s{held}")
        # Every migration waits here between the app listening and its sidecar starting: poll often (a
        # look at the kernel's listening sockets costs ~0.1-0.2 ms; at 50 ms this added ~25 ms on average).
        if cancelled.wait(LISTEN_POLL_S):
            raise RuntimeError("the agent is stopping")


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def stop_leftovers(status_path: Path, work_root: Path) -> None:
    """Stop the apps and sidecars an earlier agent on this work directory left running (it was killed
    without its SIGTERM cleanup): they hold the ports the new ones need. A PID from the old status.json
    is only taken for ours when the process still says so: an app's environment names its workload, a
    sidecar's command line its bootstrap in this work directory. All are stopped side by side."""
    try:
        previous = json.loads(status_path.read_text()).get("workloads", {})
    except (OSError, ValueError, AttributeError):
        return
    leftovers: list[tuple[int, bool]] = []
    for workload_id, entry in previous.items() if isinstance(previous, dict) else ():
        if not isinstance(entry, dict):
            continue
        app_pid, sidecar_pid = entry.get("app_pid"), entry.get("sidecar_pid")
        bootstrap = str(work_root / "w" / str(workload_id) / "bootstrap.json").encode()
        if isinstance(sidecar_pid, int) and bootstrap in _proc_bytes(sidecar_pid, "cmdline").split(b"\0"):
            LOG.info("stopping the sidecar of %s an earlier agent left running (PID %d)", workload_id, sidecar_pid)
            leftovers.append((sidecar_pid, False))
        marker = f"EDGECTL_WORKLOAD={workload_id}".encode()
        if isinstance(app_pid, int) and marker in _proc_bytes(app_pid, "environ").split(b"\0"):
            LOG.info("stopping the app of %s an earlier agent left running (PID %d)", workload_id, app_pid)
            leftovers.append((app_pid, True))
    _terminate(leftovers)


def _proc_bytes(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""


def _running(pid: int) -> bool:
    """It exists and is no zombie (the state after the command name in /proc/PID/stat)."""
    fields = _proc_bytes(pid, "stat").rpartition(b")")[2].split()
    return bool(fields) and fields[0] != b"Z"


def _terminate(leftovers: list[tuple[int, bool]]) -> None:
    """SIGTERM to each (pid, whether its whole process group), SIGKILL to what still runs after
    STOP_TIMEOUT_S (not our children: polled through /proc)."""

    def signal_each(signum: signal.Signals) -> None:
        for pid, group in leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                (os.killpg if group else os.kill)(pid, signum)

    signal_each(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(_running(pid) for pid, _ in leftovers) and time.monotonic() < deadline:
        time.sleep(0.05)
    leftovers = [(pid, group) for pid, group in leftovers if _running(pid)]
    signal_each(signal.SIGKILL)
