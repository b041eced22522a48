"""Refusals: a request the placement service will not carry out, with the reason for a person."""

from __future__ import annotations

import enum


class Refusal(enum.Enum):
    """Named after the gRPC status codes they become (``grpc_api`` maps them)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    """The request itself is wrong: a negative cpu, an unknown host, an unknown tier."""
    NOT_FOUND = "NOT_FOUND"
    """The workload the request is about does not exist."""
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    """Right request, wrong moment: the workload is being migrated, is already on that node."""
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    """No node can take it: the scheduler's reasons."""
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    """A migration did not converge in time (it was rolled back)."""
    UNAVAILABLE = "UNAVAILABLE"
    """The model writer did not answer in time, or (``--state-dir``) the change could not be saved."""


class PlacementRefused(Exception):
    def __init__(self, kind: Refusal, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.rejected_by = ""
        """A Place the scheduler refused: the filter that left no node (``placement.unschedulable``), for
        metrics; "" otherwise."""


_NEVER_CONNECTED = (
    "failed to connect to all addresses",
    "connection refused",
    "connections to all backends failing",
    "dns resolution failed",
    "no route to host",
    "name resolution",
)


def never_reached_a_server(details: str) -> bool:
    """Whether an UNAVAILABLE's details say no connection was made (the call never left): only then may a
    write be sent to another replica. A connection that broke mid-call (a leader killed while deciding)
    may have applied it: sending it again could make it twice."""
    text = details.lower()
    return any(marker in text for marker in _NEVER_CONNECTED)
