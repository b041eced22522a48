"""The stages of a migration, from the placement API's Watch events. Pure: events in, a timeline out.

A move's stages, all wall clock (``time.time()``, one machine): the decision (``MIGRATION_STARTED``),
routes and sidecars (``CONVERGENCE_WAITING`` plus the time each probe took, from ``CONVERGED``), the old
instance withdrawn (``MIGRATION_COMPLETED``). The lab adds what only it sees: when its agent started the
new instance, and when a user's request was first answered by it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ENDED = ("MIGRATION_COMPLETED", "MIGRATION_ROLLED_BACK")


@dataclass(frozen=True, slots=True)
class Event:
    """One placement event from the Watch stream."""

    kind: str  # PLACED, REMOVED, MIGRATION_STARTED, CONVERGENCE_WAITING, CONVERGED, ...
    at: float
    generation: int
    workload_id: str
    node: str
    service: str
    migration_id: str
    from_workload_id: str
    message: str
    converged_after: tuple[tuple[str, float], ...] = ()
    reasons: tuple[str, ...] = ()


@dataclass(slots=True)
class MigrationTimeline:
    """When each stage of one move was done (wall clock; None: not seen)."""

    migration_id: str
    old: str
    new: str
    from_node: str
    to_node: str
    requested_at: float
    decided_at: float | None = None
    placed_generation: int = 0
    waiting_at: float | None = None
    routes_at: float | None = None
    """Every switch confirmed (barrier) the routes of the placed generation."""
    sidecar_started_at: float | None = None
    """The agent started the new app and sidecar."""
    sidecars_at: float | None = None
    """The new sidecar served and every sidecar ACKed the endpoints with it."""
    first_request_at: float | None = None
    """A user request answered by the new instance (over mTLS through the sidecars) completed."""
    completed_at: float | None = None
    """The old instance was withdrawn."""
    error: str = ""
    reason: str = ""
    """Why placement chose the new node, when it says (for a call graph: the users' request time)."""

    @property
    def chain_s(self) -> float | None:
        """Decision -> routes, sidecars and first successful request all done."""
        ends = (self.routes_at, self.sidecars_at, self.first_request_at)
        if self.decided_at is None or any(e is None for e in ends):
            return None
        return max(e for e in ends if e is not None) - self.decided_at

    def stages(self) -> list[tuple[str, float | None]]:
        """(stage, seconds after the decision) in the order they are meant to happen."""
        base = self.decided_at

        def since(t: float | None) -> float | None:
            return None if t is None or base is None else t - base

        return [
            ("placement decided", since(self.decided_at)),
            ("flows barrier-confirmed", since(self.routes_at)),
            ("sidecar started", since(self.sidecar_started_at)),
            ("sidecars ACKed", since(self.sidecars_at)),
            ("first mTLS request", since(self.first_request_at)),
            ("old instance withdrawn", since(self.completed_at)),
        ]


def fill_stages(timeline: MigrationTimeline, events: Iterable[Event]) -> None:
    """Set the stages of ``timeline`` its migration's events show; a stage that never came stays None.

    A failover moves several instances and waits once, for all of them: a move without a wait of its
    own takes that one."""
    seen = list(events)
    mine = {e.kind: e for e in seen if e.migration_id == timeline.migration_id}
    decided, waiting, completed = (mine.get(k) for k in ("MIGRATION_STARTED", "CONVERGENCE_WAITING", ENDED[0]))
    converged = mine.get("CONVERGED")
    timeline.decided_at = decided.at if decided else None
    timeline.reason = "; ".join(decided.reasons) if decided else ""
    timeline.completed_at = completed.at if completed else None
    if completed is not None:  # the instance that replaced the old one
        timeline.new, timeline.to_node = completed.workload_id, completed.node
    if converged is None and waiting is None and decided is not None:
        waiting = next((e for e in seen if e.kind == "CONVERGENCE_WAITING"), None)
        converged = next((e for e in seen if e.kind == "CONVERGED"), None)
    if waiting is not None:
        timeline.waiting_at, timeline.placed_generation = waiting.at, waiting.generation
    if converged is not None and waiting is not None:
        took = dict(converged.converged_after)
        if "routes" in took:
            timeline.routes_at = waiting.at + took["routes"]
        if "sidecars" in took:
            timeline.sidecars_at = waiting.at + took["sidecars"]
    elif completed is not None:
        timeline.error = "withdrawn before every probe converged (failover timeout)"
