"""The desired-state layer of a running controller: the last good document, applying a new one, status.

One ``DesiredState`` per controller. Documents arrive from the ``--config`` file (hot reload),
``edgectl apply`` (HTTP) or a git commit; each goes through the same steps, one at a time:

1. a document that does not parse is rejected: its ``FILE:LINE`` problems become the status, the
   log line and ``edgectl_config_load_error 1``; the model is not touched (the last good state runs);
2. the plan is computed (``edgectl.plan``, pure) on the live model;
3. ``DesiredStateApplied`` goes to the model writer: declarations replaced, observations kept, so
   the route engine sends only the difference (no flow flushed, no switch reconnected) and meshctl
   pushes only changed resources;
4. it waits until the routes are barrier-confirmed and the sidecars ACKed that generation, and
   reports what did not converge in time.

Sync status (does the controller run the newest document: ``synced`` / ``progressing`` / ``error``)
and health (did the data plane converge) are reported apart, as Argo CD does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from edgectl.plan import Plan, PlanInputs, compute_plan
from netmodel.events import DesiredStateApplied, Event
from netmodel.fabric import FabricSpec
from netmodel.state import FabricState
from placement.convergence import ConvergenceProbe, Progress, timed_convergence

LOG = logging.getLogger("edgectl.desired")
HISTORY_LENGTH = 200
DEFAULT_CONVERGE_TIMEOUT_S = 30.0

SYNCED = "synced"
PROGRESSING = "progressing"
ERROR = "error"


class DocumentRefused(ValueError):
    """A document that parses but cannot be applied (an SLO no node meets): the last good one runs."""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    revision: str
    plan: Plan
    applied: bool
    """False for a dry run, or when the document changed nothing."""
    generation: int
    converged: bool
    not_converged: tuple[str, ...] = ()
    """The probes still behind at the timeout (``routes``, ``sidecars``)."""
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    revision: str
    source: str
    applied_at: float
    generation: int
    summary: dict[str, Any]
    converged: bool
    converge_seconds: float
    not_converged: tuple[str, ...] = ()


@dataclass
class _Status:
    revision: str = ""
    """What the model runs (the last good document)."""
    source: str = ""
    applied_at: float | None = None
    status: str = PROGRESSING
    error: str = ""
    error_revision: str = ""
    error_source: str = ""
    error_at: float | None = None
    healthy: bool | None = None
    not_converged: tuple[str, ...] = ()
    orphans: tuple[str, ...] = ()


class DesiredState:
    def __init__(
        self,
        publish: Callable[[Event], Future[FabricState]],
        plan_inputs: Callable[[FabricSpec | None], PlanInputs],
        *,
        prune: bool = False,
        probes: Sequence[ConvergenceProbe] = (),
        save: Callable[[str, str, Mapping[str, bytes]], None] | None = None,
        clock: Callable[[], float] = time.time,
        progress: Progress | None = None,
    ) -> None:
        self._publish = publish
        self._plan_inputs = plan_inputs
        self.prune = prune
        self._probes = list(probes)
        self._progress = progress  # rung by the probes' subsystems: convergence is seen at once
        self._save = save
        """Keeps each applied document (its revision, source and files) across restarts (--state-dir)."""
        self._clock = clock
        self._lock = threading.Lock()  # one document at a time, plan to convergence
        self._status = _Status()
        self.applied_spec: FabricSpec | None = None
        """The document the model runs, with its orphans (None before the first)."""
        self._history: deque[HistoryEntry] = deque(maxlen=HISTORY_LENGTH)
        self._outcomes = {"applied": 0, "rejected": 0}
        """Documents applied and rejected since start (metrics)."""

    # -- the steps --------------------------------------------------------------------------------

    def adopt(self, document: FabricSpec, revision: str, source: str) -> None:
        """The document the model was built from at start: running, nothing to apply."""
        with self._lock:
            self.applied_spec = document
            now = self._clock()
            self._history.append(HistoryEntry(revision, source, now, 0, {"initial": True}, True, 0.0))
            self._set(revision=revision, source=source, applied_at=now, status=SYNCED, healthy=None)

    def plan(self, document: FabricSpec, revision: str) -> Plan:
        return compute_plan(self._plan_inputs(self.applied_spec), document, revision, prune=self.prune)

    def apply(
        self,
        document: FabricSpec,
        revision: str,
        source: str,
        *,
        dry_run: bool = False,
        timeout_s: float = DEFAULT_CONVERGE_TIMEOUT_S,
        sources: Mapping[str, bytes] | None = None,
    ) -> ApplyResult:
        """Plan, then (unless ``dry_run``) apply and wait for convergence. Serialized: a document
        arriving while the previous one converges waits for it."""
        with self._lock:
            try:
                plan = self.plan(document, revision)
            except Exception as exc:  # a core's bug on this document: refused like a bad document
                LOG.exception("planning revision %s failed", revision)
                self._fail(f"cannot plan revision {revision}: {exc!r}", revision, source)
                raise DocumentRefused(str(exc)) from exc
            if dry_run:
                return ApplyResult(revision, plan, applied=False, generation=-1, converged=True)
            if plan.problems:
                error = "cannot be applied:\n" + "\n".join(plan.problems)
                self._fail(error, revision, source)
                raise DocumentRefused(error)
            if not plan and revision == self._status.revision:
                # The running document again (a SIGHUP, a repeated apply): nothing to send, nothing to wait for.
                self._set(status=SYNCED, error="", error_revision="", error_source="", error_at=None)
                return ApplyResult(revision, plan, applied=False, generation=-1, converged=True)
            started = time.monotonic()
            self._set(status=PROGRESSING)
            # No timeout: the writer applies every event it queued; giving up here would report an error
            # for a revision the model then runs anyway.
            try:
                state = self._publish(DesiredStateApplied(plan.spec, revision)).result()
            except Exception as exc:  # the writer refused it (EventRejected): the model is unchanged
                self._fail(f"the model refused revision {revision}: {exc}", revision, source)
                raise DocumentRefused(str(exc)) from exc
            self.applied_spec = plan.spec
            if self._save is not None and sources is not None:
                try:
                    self._save(revision, source, sources)
                except OSError as exc:  # the model runs it; only a restart would start from an older one
                    LOG.error("revision %s applied but not saved: %s", revision, exc)
            missing, _took = timed_convergence(self._probes, state.generation, timeout_s, progress=self._progress)
            behind = tuple(missing)
            seconds = time.monotonic() - started
            now = self._clock()
            entry = HistoryEntry(
                revision=revision,
                source=source,
                applied_at=now,
                generation=state.generation,
                summary=_summary(plan),
                converged=not behind,
                converge_seconds=round(seconds, 4),
                not_converged=behind,
            )
            self._history.append(entry)
            self._outcomes["applied"] += 1
            self._set(
                revision=revision,
                source=source,
                applied_at=now,
                status=SYNCED,
                error="",
                error_revision="",
                error_source="",
                error_at=None,
                healthy=not behind,
                not_converged=behind,
                orphans=plan.orphans.names,
            )
            if behind:
                LOG.warning(
                    "revision %s applied from %s; not converged after %.1f s: %s",
                    revision,
                    source,
                    seconds,
                    ", ".join(behind),
                )
            else:
                LOG.info(
                    "revision %s applied from %s: %d FlowMods, %d sidecars, converged in %.3f s",
                    revision,
                    source,
                    plan.flow_mods,
                    len(plan.xds),
                    seconds,
                )
            return ApplyResult(revision, plan, True, state.generation, not behind, behind, seconds)

    def reject(self, error: str, revision: str, source: str) -> None:
        """A document that cannot be applied (bad YAML, a dangling reference, unreadable): the last good
        state keeps running; the error is the status until a good document arrives."""
        with self._lock:
            self._fail(error, revision, source)

    # -- views ------------------------------------------------------------------------------------

    @property
    def revision(self) -> str:
        return self._status.revision

    @property
    def applied_generation(self) -> int:
        """The model generation the running revision was applied at (0: the one the model started from)."""
        return self._history[-1].generation if self._history else 0

    @property
    def status(self) -> str:
        return self._status.status

    @property
    def error(self) -> str:
        return self._status.error

    def outcomes(self) -> dict[str, int]:
        """How many documents were applied and rejected since start."""
        return dict(self._outcomes)

    def view(self) -> dict[str, Any]:
        s = self._status
        return {
            "revision": s.revision,
            "source": s.source,
            "status": s.status,
            "error": s.error or None,
            "error_revision": s.error_revision or None,
            "error_source": s.error_source or None,
            "error_at": s.error_at,
            "applied_at": s.applied_at,
            "health": None if s.healthy is None else ("converged" if s.healthy else "degraded"),
            "not_converged": list(s.not_converged),
            "prune": self.prune,
            "orphans": list(s.orphans),
        }

    def history_view(self) -> dict[str, Any]:
        return {
            "history": [
                {
                    "revision": e.revision,
                    "source": e.source,
                    "applied_at": e.applied_at,
                    "generation": e.generation,
                    "changes": e.summary,
                    "converged": e.converged,
                    "converge_seconds": e.converge_seconds,
                    "not_converged": list(e.not_converged),
                }
                for e in reversed(self._history)
            ]
        }

    # -- internals --------------------------------------------------------------------------------

    def _fail(self, error: str, revision: str, source: str) -> None:
        self._outcomes["rejected"] += 1
        LOG.error(
            "desired state from %s (revision %s) rejected; revision %s keeps running:\n%s",
            source,
            revision or "?",
            self._status.revision or "(none)",
            error,
        )
        self._set(status=ERROR, error=error, error_revision=revision, error_source=source, error_at=self._clock())

    def _set(self, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(self._status, name, value)


def _summary(plan: Plan) -> dict[str, Any]:
    return {
        "objects_added": list(plan.objects.added),
        "objects_removed": list(plan.objects.removed),
        "objects_changed": list(plan.objects.changed),
        "orphans": list(plan.orphans.names),
        "flow_mods": plan.flow_mods,
        "switches": [c.name for c in plan.openflow],
        "sidecars": len(plan.xds),
        "placed": len(plan.placement.placed),
        "moved": len(plan.placement.moved),
        "evicted": len(plan.placement.evicted) + len(plan.evicted_by_prune),
    }
