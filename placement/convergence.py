"""Waiting until the rest of the controller has applied a model generation.

A ``ConvergenceProbe`` answers one question for one subsystem: "have you applied generation N (or a
later one)?" — the route engine: flows installed and barrier-confirmed; meshctl: every affected
sidecar ACKed. The migration withdraws an old instance only when every probe says yes, so traffic
always has somewhere to go (make-before-break). With no probe registered there is nothing to wait for.
"""

from __future__ import annotations

import logging
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
) -> tuple[list[str], tuple[tuple[str, float], ...]]:
    """Poll until every probe accepts ``generation``: (names of those that did not in time (empty:
    converged), how long each one that did took, in seconds, in the order they did). Polls quickly at
    first (a route change lands in milliseconds), then every 50 ms. ``workloads``: the new instances
    the wait is for (see ``NamedProbe``)."""
    started = clock()
    deadline = started + timeout_s
    interval = FIRST_POLL_S
    pending = list(probes)
    took: list[tuple[str, float]] = []
    while True:
        still = pending_probes(pending, generation, workloads)
        now = clock()
        took.extend((probe_name(p), now - started) for p in pending if p not in still)
        pending = still
        if not pending:
            return [], tuple(took)
        remaining = deadline - now
        if remaining <= 0:
            return [probe_name(p) for p in pending], tuple(took)
        sleep(min(interval, remaining))
        interval = min(interval * 2, MAX_POLL_S)
