"""What the node agent should do next (pure): the workloads the controller placed on this node against
the instances that run here -> start, drain, stop, restart after a backoff, or refuse a bad command.

The desired set comes from the WatchNode stream (``apply_event``: a SNAPSHOT replaces it, PLACED adds,
REMOVED takes away); the agent keeps one ``Instance`` per workload it has touched and moves it through
its phases with the transition functions below. ``plan`` reads both and returns the actions, in the
order they must run. No clock is read here: every function takes ``now`` (monotonic seconds).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from netmodel.placeholders import TemplateError, expand

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
BACKOFF_RESET_AFTER_S = 60.0
"""An instance that ran this long before it crashed starts its backoff from the beginning again."""


@dataclass(frozen=True, slots=True)
class Call:
    """A service the workload calls: its app reaches it at <outbound_host>:<port> (its sidecar's outbound)."""

    service: str
    port: int
    per_request: float = 1.0
    bytes_per_call: int = 0
    protocol: str = "http"
    """The callee's: "http" or "tcp"."""


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """One workload placed on this node, as the controller describes it (placeholders not filled in)."""

    id: str
    service: str
    port: int
    address: str = ""
    app_host: str = "127.0.0.1"
    run: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    spiffe_id: str = ""
    calls: tuple[Call, ...] = ()
    protocol: str = "http"
    outbound_host: str = "127.0.0.1"
    """Where the app reaches the services it calls: the workload's own address (its sidecar's outbound
    listeners), so that its calls leave with its own identity."""


class EventKind(enum.StrEnum):
    SNAPSHOT = "SNAPSHOT"
    PLACED = "PLACED"
    REMOVED = "REMOVED"


def apply_event(
    desired: Mapping[str, WorkloadSpec], kind: EventKind, workloads: Iterable[WorkloadSpec]
) -> dict[str, WorkloadSpec]:
    """The desired workloads after one WatchNode event. A SNAPSHOT is the whole truth (after a reconnect
    too): what it does not list is gone."""
    if kind is EventKind.SNAPSHOT:
        return {w.id: w for w in workloads}
    updated = dict(desired)
    for workload in workloads:
        if kind is EventKind.PLACED:
            updated[workload.id] = workload
        else:
            updated.pop(workload.id, None)
    return updated


# -- placeholders ----------------------------------------------------------------------------------


def calls_text(calls: Sequence[Call], host: str = "127.0.0.1") -> str:
    """``svc=HOST:PORT,PER_REQUEST,BYTES;...`` ("" when it calls nothing)."""
    return ";".join(f"{c.service}={host}:{c.port},{c.per_request!r},{c.bytes_per_call}" for c in calls)


@dataclass(frozen=True, slots=True)
class Command:
    """A workload's process as the agent starts it: argv and its extra environment, filled in."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]


def placeholder_values(spec: WorkloadSpec, node: str, python: str, work_dir: str) -> dict[str, str]:
    return {
        "python": python,
        "workload": spec.id,
        "service": spec.service,
        "node": node,
        "port": str(spec.port),
        "host": spec.app_host,
        "listen": f"[{spec.app_host}]:{spec.port}" if ":" in spec.app_host else f"{spec.app_host}:{spec.port}",
        "outbound": spec.outbound_host,
        "calls": calls_text(spec.calls, spec.outbound_host),
        "work_dir": work_dir,
    }


def render_command(spec: WorkloadSpec, node: str, python: str, work_dir: str) -> Command:
    """The workload's argv and env with every placeholder filled in; ``TemplateError`` names the bad one."""
    values = placeholder_values(spec, node, python, work_dir)
    argv = tuple(expand(arg, values) for arg in spec.run)
    env = tuple((name, expand(value, values)) for name, value in spec.env)
    return Command(argv, env)


# -- instances -------------------------------------------------------------------------------------


class Phase(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    CRASHED = "crashed"
    """Its app or sidecar died (or never came up): restarted at ``restart_at`` while it is wanted."""
    INVALID = "invalid"
    """Its command cannot be filled in: never started until the controller sends a new description."""
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Instance:
    """The agent's record of one workload it has started (or refused)."""

    spec: WorkloadSpec
    phase: Phase
    since: float
    """When it entered this phase (monotonic)."""
    restarts: int = 0
    failures: int = 0
    """Crashes in a row, each without a run of BACKOFF_RESET_AFTER_S in between."""
    restart_at: float = 0.0
    drain_until: float = 0.0
    reason: str = ""


def changed_fields(running: WorkloadSpec, wanted: WorkloadSpec) -> list[str]:
    """What of a workload's description its processes were started from differs from what is wanted
    now (empty: nothing). The node address and the protocol are the controller's (its sidecar's xDS
    config follows them without a restart); everything its command, environment or port is made of is
    the agent's to apply."""
    fields = ("service", "port", "app_host", "outbound_host", "run", "env", "spiffe_id", "calls")
    return [name for name in fields if getattr(running, name) != getattr(wanted, name)]


def backoff_s(failures: int) -> float:
    """The wait before restarting after the ``failures``-th crash in a row: 0.5 s doubling, at most 30 s."""
    return float(min(BACKOFF_FIRST_S * 2 ** max(failures - 1, 0), BACKOFF_MAX_S))


def starting(spec: WorkloadSpec, now: float, previous: Instance | None = None) -> Instance:
    if previous is not None and previous.phase is Phase.CRASHED:
        return replace(previous, spec=spec, phase=Phase.STARTING, since=now, restarts=previous.restarts + 1)
    return Instance(spec, Phase.STARTING, now)


def started(instance: Instance, now: float) -> Instance:
    return replace(instance, phase=Phase.RUNNING, since=now, reason="")


def crashed(instance: Instance, now: float, reason: str) -> Instance:
    """It died (or failed to start): restart after a backoff that grows with crashes in a row."""
    ran_long = instance.phase is Phase.RUNNING and now - instance.since >= BACKOFF_RESET_AFTER_S
    failures = 1 if ran_long else instance.failures + 1
    return replace(
        instance, phase=Phase.CRASHED, since=now, failures=failures, restart_at=now + backoff_s(failures), reason=reason
    )


def invalid(spec: WorkloadSpec, now: float, reason: str) -> Instance:
    return Instance(spec, Phase.INVALID, now, reason=reason)


def draining(instance: Instance, now: float, drain_s: float) -> Instance:
    return replace(instance, phase=Phase.DRAINING, since=now, drain_until=now + drain_s)


def stopped(instance: Instance, now: float, reason: str) -> Instance:
    return replace(instance, phase=Phase.STOPPED, since=now, reason=reason)


# -- the plan --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    spec: WorkloadSpec
    command: Command | None
    """None: the service has no ``run`` command, so only its sidecar is started."""
    why: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """Its command cannot be filled in: report it unhealthy, start nothing."""

    spec: WorkloadSpec
    why: str


@dataclass(frozen=True, slots=True)
class Drain:
    workload_id: str
    until: float


@dataclass(frozen=True, slots=True)
class Stop:
    workload_id: str
    why: str


Action = Start | Refuse | Drain | Stop


@dataclass(frozen=True, slots=True)
class NodeContext:
    """What fills the node-wide placeholders: the node id, the agent's interpreter, its work directory."""

    node: str
    python: str
    work_root: str

    def work_dir(self, workload_id: str) -> str:
        """The agent's files of a workload (its sidecar's bootstrap and admin socket, the logs)."""
        return f"{self.work_root.rstrip('/')}/w/{workload_id}"

    def app_dir(self, workload_id: str) -> str:
        """The app's own directory (``{work_dir}``, its HOME and cwd): beside the agent's work directory,
        not in it, so that the app, running as another user, reaches none of the node's keys or sockets."""
        return f"{self.work_root.rstrip('/')}-apps/{workload_id}"


def _start(spec: WorkloadSpec, context: NodeContext, why: str) -> Action:
    if not spec.run:
        return Start(spec, None, why)
    try:
        command = render_command(spec, context.node, context.python, context.app_dir(spec.id))
    except TemplateError as exc:
        return Refuse(spec, str(exc))
    return Start(spec, command, why)


def plan(
    desired: Mapping[str, WorkloadSpec],
    instances: Mapping[str, Instance],
    now: float,
    drain_s: float,
    context: NodeContext,
) -> list[Action]:
    """The actions that bring the instances to the desired workloads, in the order they must run.

    - wanted and not running (or stopped): start it; a draining instance holding its port is stopped
      first (it has been withdrawn from every caller; the port is needed now by its replacement);
    - running and no longer wanted: drain (keeps serving requests in flight for ``drain_s``), then stop;
    - still starting and no longer wanted: nothing yet; it is drained as soon as it has started;
    - crashed: restarted at its ``restart_at`` while wanted, cleaned up when not;
    - invalid (bad placeholder): refused once; started only when a new description arrives;
    - running with a changed description (run, env, calls, port, host): stopped, then started again
      with the new one at once. Not drained: the controller keeps routing its callers to this same
      workload, and its sidecar (Envoy node id = the workload id) is served the new config anyway, so
      an old and a new instance cannot overlap; the old one is stopped before the new one starts, as
      the port is usually the same. Still starting: it is restarted as soon as it has started.
    """
    actions: list[Action] = []
    stopping: set[str] = set()
    for workload_id, instance in sorted(instances.items()):
        wanted = desired.get(workload_id)
        if instance.phase is Phase.DRAINING and now >= instance.drain_until:
            # Also when it was placed again meanwhile: it is started afresh once stopped.
            actions.append(Stop(workload_id, "drained after its removal"))
            stopping.add(workload_id)
        elif wanted is None:
            if instance.phase is Phase.RUNNING:
                actions.append(Drain(workload_id, now + drain_s))
            elif instance.phase in (Phase.CRASHED, Phase.INVALID):
                actions.append(Stop(workload_id, "removed"))
                stopping.add(workload_id)
    for workload_id, spec in sorted(desired.items()):
        known = instances.get(workload_id)
        if known is None or known.phase is Phase.STOPPED:
            why = "placed"
        elif known.phase is Phase.CRASHED and now >= known.restart_at:
            why = f"restart {known.restarts + 1} after: {known.reason}"
        elif known.phase is Phase.INVALID and known.spec != spec:
            why = "placed again with a new description"
        elif known.phase is Phase.RUNNING and (changed := changed_fields(known.spec, spec)):
            why = f"its description changed ({', '.join(changed)})"
            actions.append(Stop(workload_id, why))
            stopping.add(workload_id)
        else:
            continue
        for other_id, other in sorted(instances.items()):
            holds_port = other.phase is Phase.DRAINING and other.spec.port == spec.port
            if other_id != workload_id and holds_port and other_id not in stopping:
                actions.append(Stop(other_id, f"its port {spec.port} is needed by {workload_id}"))
                stopping.add(other_id)
        actions.append(_start(spec, context, why))
    return actions
