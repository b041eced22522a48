"""Leader election on etcd, the decisions (pure): who leads, with which generation, and until when.

Every replica puts one key under ``<root>/election/`` bound to its lease (etcd's election recipe). The
candidate whose key has the lowest ``create_revision`` leads; that revision is its **generation**: it
grows with every new leader (a later key always has a later revision), so the switches can refuse an
older leader's requests (OpenFlow's generation_id). A candidate keeps leading only while its lease is
surely alive: the deadline runs from the moment the last successful keepalive was *sent* (a monotonic
clock, never the wall clock: skewed clocks cannot extend it), minus a margin for the switches to hear
the step-down before etcd lets the next leader in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

LEASE_MARGIN = 0.25
"""The share of the TTL a leader gives up before its lease could expire (steps down early, never late)."""


class CandidateError(ValueError):
    """An election key's value is not a candidate this version understands."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One replica's campaign: its id, the lease it holds, where it serves, and its key's revision."""

    replica_id: str
    lease: int
    revision: int = 0
    """The election key's create_revision (0 until etcd has it): the generation if this one leads."""
    http: str = ""
    api: str = ""
    xds: str = ""
    liveness: str = ""
    """host:port the candidate keeps listening on while it runs: a closed connection means its process died."""

    def encode(self) -> bytes:
        return json.dumps(
            {
                "replica_id": self.replica_id,
                "lease": self.lease,
                "http": self.http,
                "api": self.api,
                "xds": self.xds,
                "liveness": self.liveness,
            },
            sort_keys=True,
        ).encode()

    @staticmethod
    def decode(value: bytes, revision: int) -> Candidate:
        try:
            fields = json.loads(value)
            return Candidate(
                replica_id=str(fields["replica_id"]),
                lease=int(fields["lease"]),
                revision=revision,
                http=str(fields.get("http", "")),
                api=str(fields.get("api", "")),
                xds=str(fields.get("xds", "")),
                liveness=str(fields.get("liveness", "")),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise CandidateError(f"not a candidate: {exc}") from None


@dataclass(frozen=True, slots=True)
class Leadership:
    """What this replica knows of the election: the leader (None while there is none) and whether it is us."""

    leader: Candidate | None
    replica_id: str

    @property
    def is_leader(self) -> bool:
        return self.leader is not None and self.leader.replica_id == self.replica_id

    @property
    def generation(self) -> int:
        return self.leader.revision if self.leader is not None else 0


def leader_of(candidates: Iterable[Candidate]) -> Candidate | None:
    """The candidate with the oldest key (ties cannot happen: revisions are unique)."""
    return min(candidates, key=lambda c: c.revision, default=None)


def lease_deadline(acked_request_sent_at: float, ttl_s: float, margin: float = LEASE_MARGIN) -> float:
    """Until when (monotonic) a lease is surely alive, given when its last acknowledged keepalive left.

    etcd restarts the TTL when it receives the keepalive, which is after we sent it: counting from the
    send time can only end early. ``margin`` of the TTL is kept back for the step-down to reach the switches.
    """
    return acked_request_sent_at + ttl_s * (1.0 - margin)


def may_lead(leadership: Leadership, now: float, deadline: float) -> bool:
    """Whether this replica may act as the leader at ``now``: elected, and its lease surely alive."""
    return leadership.is_leader and now < deadline
