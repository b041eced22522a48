"""Waiting until the rest of the controller has applied a model generation.

A ``ConvergenceProbe`` answers one question for one subsystem: "have you applied generation N (or a
later one)?" — the route engine: flows installed and barrier-confirmed; meshctl: every affected
sidecar ACKed. The migration withdraws an old instance only when every probe says yes, so traffic
always has somewhere to go (make-before-break). With no probe registered there is nothing to wait for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

LOG = logging.getLogger("edgectl.placement")

GenerationCheck = Callable[[int], bool]
"""``check(generation)``: has this subsystem applied ``generation`` (or a later one)?"""

ScopedCheck = Callable[[int, frozenset[str]], bool]
"""``check(generation, workloads)``: applied ``generation``, and these new instances are served too."""

FIRST_POLL_S = 0.002
MAX_POLL_S = 0.05
MIN_LOOK_GAP_S = 0.001
"""Rung more often than this (a fan-out's sidecars ACK by the hundred), a wait looks again at most this often."""
LOOK_SHARE = 0.2
"""...and spends at most this share of its time looking: asking the sidecars probe walks the connected
streams (~1 ms at 1,000), so under a fan-out's rings a wait would otherwise take the GIL from the fan-out."""


class Progress:
    """A bell the subsystems ring when they may have applied something more (a round of switch barriers,
    a sidecar running a new snapshot), so a convergence wait asks its probes again at once instead of at
    its next poll (which backs off to ``MAX_POLL_S``: up to 50 ms late). The polls stay: a probe whose
    subsystem does not ring is still asked."""

    def __init__(self) -> None:
        self._rung = threading.Condition()
        self._count = 0

    def ring(self) -> None:
        """Cheap, from any thread."""
        with self._rung:
            self._count += 1
            self._rung.notify_all()

    def mark(self) -> int:
        """Taken before the probes are asked: a ring after it ends the next ``wait`` at once."""
        with self._rung:
            return self._count

    def wait(self, since: int, timeout_s: float) -> bool:
        """Until a ring after ``since`` (a ``mark``), or ``timeout_s``; whether it rang."""
        with self._rung:
            return self._rung.wait_for(lambda: self._count != since, timeout_s)


@runtime_checkable
class ConvergenceProbe(Protocol):
    """One subsystem's answer to "have you applied generation N?", with a name for events and logs."""

    name: str

    def __call__(self, generation: int) -> bool:
        """Has this subsystem applied ``generation`` (or a later one)?"""
        ...

    def for_workloads(self, generation: int, workloads: frozenset[str]) -> bool:
        """The same question, and are these new instances served too? (Unscoped probes ask ``self(generation)``.)"""
        ...


def probe_name(probe: ConvergenceProbe) -> str:
    return probe.name


class NamedProbe(ConvergenceProbe):
    """A probe with a short name for events and logs ("routes", "sidecars") instead of a qualname.

    ``scoped``: the same question about the instances a migration placed (the sidecars probe: "is the
    new instance an endpoint yet?"), asked instead of ``probe`` when the caller names them. Scoped, so
    an unrelated instance whose sidecar never comes up does not hold every migration back."""

    def __init__(self, name: str, probe: GenerationCheck, scoped: ScopedCheck | None = None) -> None:
        self.name = name
        self._probe = probe
        self._scoped = scoped

    def __call__(self, generation: int) -> bool:
        return self._probe(generation)

    def for_workloads(self, generation: int, workloads: frozenset[str]) -> bool:
        return self._scoped(generation, workloads) if self._scoped is not None else self._probe(generation)

    def __repr__(self) -> str:
        return f"NamedProbe({self.name!r})"


def as_probe(probe: ConvergenceProbe | GenerationCheck) -> ConvergenceProbe:
    """``probe`` itself, or a bare ``check(generation)`` as an unscoped probe named by its qualified name."""
    if isinstance(probe, ConvergenceProbe):
        return probe
    return NamedProbe(
        str(getattr(probe, "__qualname__", None) or getattr(probe, "__name__", None) or repr(probe)), probe
    )


def ask(probe: ConvergenceProbe, generation: int, workloads: frozenset[str]) -> bool:
    """``probe``'s answer for ``generation``, scoped to ``workloads`` when there are any."""
    if workloads:
        return bool(probe.for_workloads(generation, workloads))
    return bool(probe(generation))


def pending_probes(
    probes: Sequence[ConvergenceProbe], generation: int, workloads: frozenset[str] = frozenset()
) -> list[ConvergenceProbe]:
    """The probes that have not applied ``generation`` yet (a probe that raises has not)."""
    out = []
    for probe in probes:
        try:
            accepted = ask(probe, generation, workloads)
        except Exception:
            LOG.exception("convergence probe %s failed", probe_name(probe))
            accepted = False
        if not accepted:
            out.append(probe)
    return out


def timed_convergence(
    probes: Sequence[ConvergenceProbe],
    generation: int,
    timeout_s: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    workloads: frozenset[str] = frozenset(),
    progress: Progress | None = None,
) -> tuple[list[str], tuple[tuple[str, float], ...]]:
    """Poll until every probe accepts ``generation``: (names of those that did not in time (empty:
    converged), how long each one that did took, in seconds, in the order they did). Polls quickly at
    first (a route change lands in milliseconds), then every 50 ms; with ``progress``, also as soon as
    it rings (at most every ``MIN_LOOK_GAP_S``, and looking at most ``LOOK_SHARE`` of the time).
    ``workloads``: the new instances the wait is for (see ``NamedProbe``)."""
    started = clock()
    deadline = started + timeout_s
    interval = FIRST_POLL_S
    pending = list(probes)
    took: list[tuple[str, float]] = []
    while True:
        mark = progress.mark() if progress is not None else 0
        looked = clock()
        still = pending_probes(pending, generation, workloads)
        now = clock()
        took.extend((probe_name(p), now - started) for p in pending if p not in still)
        pending = still
        if not pending:
            return [], tuple(took)
        remaining = deadline - now
        if remaining <= 0:
            return [probe_name(p) for p in pending], tuple(took)
        if progress is None:
            sleep(min(interval, remaining))
        else:
            progress.wait(mark, min(interval, remaining))
            gap = looked + max(MIN_LOOK_GAP_S, (now - looked) / LOOK_SHARE) - clock()
            if gap > 0:
                sleep(gap)
        interval = min(interval * 2, MAX_POLL_S)
