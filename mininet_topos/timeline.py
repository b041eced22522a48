"""The stages of a migration, from the placement API's Watch events. Pure: events in, a timeline out.

A move's stages, all wall clock (``time.time()``, one machine): the decision (``MIGRATION_STARTED``),
routes and sidecars (``CONVERGENCE_WAITING`` plus the time each probe took, from ``CONVERGED``), the old
instance withdrawn (``MIGRATION_COMPLETED``). The lab adds what only it sees: when its agent started the
new instance, and when a user's request was first answered by it.

``split`` cuts the chain from the decision to the first answered request into back-to-back stages, each
said to be the control plane's (what edgectl does: placement, the agent, xDS), process start-up (the
app's Python start, Envoy's boot) or the users' (the wait for their next request, the request itself).
Its xDS milestones come from the xDS server's per-node ACK times (``xds_milestones``: samples of
``/api/v1/xds/clients`` taken during the move). When the agent started Envoy beside the app (before the
app listened), the two start-ups overlap: the chain then follows Envoy's boot and its first xDS, and
counts of the app's start-up only what is left of it once the sidecar serves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ENDED = ("MIGRATION_COMPLETED", "MIGRATION_ROLLED_BACK")
CONTROL_PLANE, START_UP, USERS = "control plane", "start-up", "users"
"""Whose time a stage of ``MigrationTimeline.split`` is."""
ENVOY_BOOT = "Envoy boot (until the xDS server handles its first request)"
"""Envoy's process start until its first xDS request reached the server's handler (the server's queue
before the handler runs, if any, is in it: only the server's clock sees the stream)."""
FIRST_XDS_ANSWER = "the xDS server's first answer"
"""From handling the new sidecar's first request to sending it its first response."""
FIRST_REQUEST = "the first request (new mTLS connections)"
"""From the last caller's ACK (or the request's start, if later) until the new instance answered it."""
NEW_INSTANCE_TO_CALLERS = "new sidecar serving -> every caller ACKed"
"""The control plane's own stage: the new instance can serve (its sidecar serves; side by side, its app
listens too) -> every caller's sidecar ACKed the endpoints with it."""


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
    app_started_at: float | None = None
    """The agent started the new app (its sidecar beside it, or once the app listens)."""
    app_listening_at: float | None = None
    """The new app accepted a connection (the agent's poll)."""
    envoy_started_at: float | None = None
    """The agent started the new sidecar's Envoy."""
    xds_stream_at: float | None = None
    """The xDS server handled the new sidecar's first request (its stream opened: Envoy had booted and
    dialled it; the server's own clock, ``connected_at`` of ``/api/v1/xds/clients``)."""
    xds_connected_at: float | None = None
    """The xDS server first sent the new sidecar a response."""
    sidecar_serving_at: float | None = None
    """The new sidecar ACKed its inbound listener and secrets: the xDS server counts it as serving."""
    callers_acked_at: float | None = None
    """Every caller's sidecar ACKed endpoints holding the new instance (the xDS server's ACK times)."""
    sidecars_at: float | None = None
    """The new sidecar served and every sidecar ACKed the endpoints with it (as the controller's
    convergence poll saw it: up to one poll interval after ``callers_acked_at``)."""
    first_request_sent_at: float | None = None
    """The user sent the request that was the first the new instance answered."""
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
            ("app started", since(self.app_started_at)),
            ("sidecars ACKed", since(self.sidecars_at)),
            ("first mTLS request", since(self.first_request_at)),
            ("old instance withdrawn", since(self.completed_at)),
        ]

    @property
    def started_beside(self) -> bool:
        """The agent started Envoy before the app listened (side by side)."""
        envoy, listening = self.envoy_started_at, self.app_listening_at
        return envoy is not None and listening is not None and envoy < listening

    @property
    def instance_ready_at(self) -> float | None:
        """The new instance could serve: its sidecar serves and its app listens."""
        if not self.started_beside:
            return self.sidecar_serving_at
        serving, listening = self.sidecar_serving_at, self.app_listening_at
        return None if serving is None or listening is None else max(serving, listening)

    def split(self) -> list[tuple[str, str, float | None]]:
        """The chain as back-to-back stages: (stage, whose time, seconds; None where a milestone is
        missing). Each stage runs from the one before it to its own milestone, so they add up to the
        decision -> first answered request; the routes (barrier-confirmed in parallel) are not in it.
        A first request already on its way before the last caller ACKed waited for nothing: its wait
        is 0 and the request counts from the last ACK. Side by side, the app's start-up counts only
        after the sidecar serves (what of it the chain waited for)."""
        decided, app, envoy = self.decided_at, self.app_started_at, self.envoy_started_at
        xds, serving, listening = self.xds_connected_at, self.sidecar_serving_at, self.app_listening_at
        stream = self.xds_stream_at
        steps: list[tuple[str, str, float | None, float | None]] = [
            ("placement -> the node agent starts the app", CONTROL_PLANE, decided, app)
        ]
        if self.started_beside:
            ready = self.instance_ready_at
            steps += [
                ("the agent starts Envoy beside the app", CONTROL_PLANE, app, envoy),
                (ENVOY_BOOT, START_UP, envoy, stream),
                (FIRST_XDS_ANSWER, CONTROL_PLANE, stream, xds),
                ("xDS to the new sidecar (until it serves)", CONTROL_PLANE, xds, serving),
                ("app start-up left once the sidecar serves", START_UP, serving, ready),
                (NEW_INSTANCE_TO_CALLERS, CONTROL_PLANE, ready, self.callers_acked_at),
            ]
        else:
            steps += [
                ("app start-up (until it listens)", START_UP, app, listening),
                ("the agent starts Envoy", CONTROL_PLANE, listening, envoy),
                (ENVOY_BOOT, START_UP, envoy, stream),
                (FIRST_XDS_ANSWER, CONTROL_PLANE, stream, xds),
                ("xDS to the new sidecar (until it serves)", CONTROL_PLANE, xds, serving),
                (NEW_INSTANCE_TO_CALLERS, CONTROL_PLANE, serving, self.callers_acked_at),
            ]
        out = [(name, whose, _between(start, end)) for name, whose, start, end in steps]
        acked, sent = self.callers_acked_at, self.first_request_sent_at
        wait = None if acked is None or sent is None else max(0.0, sent - acked)
        request_from = None if acked is None or sent is None else max(acked, sent)
        out.append(("wait for the next user request", USERS, wait))
        out.append((FIRST_REQUEST, USERS, _between(request_from, self.first_request_at)))
        return out

    def start_ups(self) -> tuple[float | None, float | None]:
        """(the app's start-up until it listens, Envoy's boot until the xDS server handles its first request),
        whether they overlapped or not."""
        return (
            _between(self.app_started_at, self.app_listening_at),
            _between(self.envoy_started_at, self.xds_stream_at),
        )


def _between(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


def whose_totals(split: Iterable[tuple[str, str, float | None]]) -> dict[str, float | None]:
    """Seconds of the chain per owner (control plane, start-up, users); None if a stage of it is missing."""
    totals: dict[str, float | None] = {}
    for _name, whose, seconds in split:
        before = totals.get(whose, 0.0)
        totals[whose] = None if before is None or seconds is None else before + seconds
    return totals


def xds_stream_opened(samples: Iterable[Mapping[str, Any]], new: str) -> float | None:
    """When the xDS server handled the first request of ``new``'s stream (its ``connected_at``), from the
    first sample that shows the stream; None if none does."""
    for nodes in samples:
        mine = nodes.get(new) or {}
        if mine.get("streams") and mine.get("connected_at") is not None:
            return float(mine["connected_at"])
    return None


def xds_milestones(
    samples: Iterable[Mapping[str, Any]],
    new: str,
    callers: Iterable[str],
    converged_at: float | None,
    listening_at: float | None = None,
) -> tuple[float | None, float | None, float | None]:
    """(new sidecar's first xDS response, its serving, every caller's ACK of the new endpoint) from samples
    of ``/api/v1/xds/clients``'s ``nodes`` taken during a move, in order; None where not seen.

    The xDS server keeps, per node and type, when it last sent and when the node last ACKed, and the ACK
    before that. Serving: the first sample with both its listeners and secrets ACKed (the readiness gate's
    condition). A caller's ACK of the new endpoint: the first endpoints (EDS) ACK at or after that (the
    last ACK or the one before: the old instance's withdrawal, a few ms later, makes a newer one); an ACK
    seen only after ``converged_at`` (when the controller saw every caller ACKed) is not this one, and
    the figure stays None. ``listening_at``: when the app of a sidecar started beside it listened; the
    callers' ACK counts from then at the earliest (the instance was no endpoint before)."""
    connected = serving = None
    acks: dict[str, float] = {}
    wanted = set(callers)
    for nodes in samples:
        mine = nodes.get(new) or {}
        types = mine.get("types") or {}
        if connected is None and mine.get("streams"):
            sent = [t["sent_at"] for t in types.values() if t.get("sent_at") is not None]
            connected = min(sent) if sent else None
        if serving is None:
            acked = [types.get(name, {}).get("acked_at") for name in ("lds", "sds")]
            if all(a is not None for a in acked):
                serving = max(a for a in acked if a is not None)
        if serving is None:
            continue
        ready = serving if listening_at is None else max(serving, listening_at)
        for caller in wanted - acks.keys():
            eds = ((nodes.get(caller) or {}).get("types") or {}).get("eds", {})
            seen = [eds.get("acked_at"), (eds.get("previous_acked") or {}).get("at")]
            after = [at for at in seen if at is not None and at >= ready]
            if after:
                acks[caller] = min(after)
    if serving is None or not wanted or acks.keys() != wanted:
        return connected, serving, None
    last = max(acks.values())
    if converged_at is not None and last > converged_at:
        return connected, serving, None
    return connected, serving, last


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
