"""How long each stage of a migration took, from the placement steps as they are emitted (pure).

A move's steps: ``MIGRATION_STARTED`` (decided), ``CONVERGENCE_WAITING`` (the new instance is in the
model), ``CONVERGED`` (every probe applied that generation, with the seconds each took), then
``MIGRATION_COMPLETED`` (the old instance withdrawn) or ``MIGRATION_ROLLED_BACK``. The stages:

- ``place``: decided -> new instance in the model
- ``converge``: in the model -> every probe applied it (routes, sidecars)
- ``withdraw``: converged -> old instance withdrawn
- ``total``: decided -> completed or rolled back

Moves that never end (a lost step) are forgotten oldest first beyond ``max_open``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STAGES = ("place", "converge", "withdraw", "total")
OUTCOMES = {"MIGRATION_COMPLETED": "completed", "MIGRATION_ROLLED_BACK": "rolled_back"}


@dataclass(frozen=True, slots=True)
class StageTimes:
    """What one step finished: (stage, seconds), (probe, seconds), and the move's outcome if it ended."""

    stages: tuple[tuple[str, float], ...] = ()
    probes: tuple[tuple[str, float], ...] = ()
    outcome: str | None = None


@dataclass(slots=True)
class _Open:
    started_at: float
    last_at: float
    seen: set[str] = field(default_factory=set)


class MigrationStages:
    def __init__(self, max_open: int = 1024) -> None:
        self.max_open = max_open
        self._open: dict[str, _Open] = {}

    @property
    def open(self) -> int:
        return len(self._open)

    def on_step(
        self, kind: str, migration_id: str, at: float, converged_after: tuple[tuple[str, float], ...] = ()
    ) -> StageTimes:
        """Feed one step (its kind's name, e.g. ``"CONVERGED"``); the stages it ended."""
        if not migration_id:
            return StageTimes()
        if kind == "MIGRATION_STARTED":
            self._open.pop(migration_id, None)
            self._open[migration_id] = _Open(at, at)
            while len(self._open) > self.max_open:
                del self._open[next(iter(self._open))]
            return StageTimes()
        move = self._open.get(migration_id)
        if move is None:
            return StageTimes()
        if kind == "CONVERGENCE_WAITING":
            return self._stage(move, "place", at)
        if kind == "CONVERGED":
            times = self._stage(move, "converge", at)
            return StageTimes(times.stages, tuple((name, max(0.0, s)) for name, s in converged_after))
        if kind in OUTCOMES:
            del self._open[migration_id]
            # withdrawn after converging; a failover that withdraws after its timeout has no such stage
            converged = kind == "MIGRATION_COMPLETED" and "converge" in move.seen
            stages = self._stage(move, "withdraw", at).stages if converged else ()
            return StageTimes((*stages, ("total", max(0.0, at - move.started_at))), (), OUTCOMES[kind])
        return StageTimes()

    @staticmethod
    def _stage(move: _Open, stage: str, at: float) -> StageTimes:
        """The stage that ended at ``at``, timed from the step before it (once per stage)."""
        if stage in move.seen:
            return StageTimes()
        move.seen.add(stage)
        seconds = max(0.0, at - move.last_at)
        move.last_at = at
        return StageTimes(((stage, seconds),))
