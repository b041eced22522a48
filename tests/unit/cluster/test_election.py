"""The election's decisions: the oldest campaign leads, its revision is the generation, and a leader's
lease deadline runs from when its last acknowledged keepalive was sent."""

from __future__ import annotations

import pytest

from cluster.election import (
    LEASE_MARGIN,
    Candidate,
    CandidateError,
    Leadership,
    leader_of,
    lease_deadline,
    may_lead,
)


def candidate(replica: str, revision: int) -> Candidate:
    return Candidate(replica_id=replica, lease=revision * 10, revision=revision, http=f"{replica}:1")


def test_the_oldest_campaign_leads_and_its_revision_is_the_generation() -> None:
    leader = leader_of([candidate("r2", 17), candidate("r1", 9), candidate("r3", 30)])
    assert leader is not None and leader.replica_id == "r1"
    assert Leadership(leader, "r1").is_leader and Leadership(leader, "r1").generation == 9
    assert not Leadership(leader, "r2").is_leader


def test_no_candidate_no_leader() -> None:
    assert leader_of([]) is None
    assert Leadership(None, "r1").generation == 0 and not Leadership(None, "r1").is_leader


def test_a_candidate_round_trips_and_bad_values_are_refused() -> None:
    original = Candidate("r1", 0x1234, 0, "127.0.0.1:8080", "127.0.0.1:50051", "127.0.0.1:18000", "127.0.0.1:4000")
    assert Candidate.decode(original.encode(), 42) == Candidate(
        "r1", 0x1234, 42, "127.0.0.1:8080", "127.0.0.1:50051", "127.0.0.1:18000", "127.0.0.1:4000"
    )
    for bad in (b"", b"[]", b'{"lease": 1}', b'{"replica_id": "r", "lease": "x"}', b"\xff"):
        with pytest.raises(CandidateError):
            Candidate.decode(bad, 1)


def test_the_lease_deadline_counts_from_the_send_time_minus_a_margin() -> None:
    assert lease_deadline(100.0, 1.0) == pytest.approx(100.0 + 1.0 - LEASE_MARGIN)
    assert lease_deadline(100.0, 2.0, margin=0.5) == pytest.approx(101.0)


def test_a_leader_stops_acting_at_its_deadline_and_a_follower_never_acts() -> None:
    me = Leadership(candidate("r1", 5), "r1")
    assert may_lead(me, now=10.0, deadline=10.5)
    assert not may_lead(me, now=10.5, deadline=10.5)  # cut off from etcd: steps down before the lease ends
    follower = Leadership(candidate("r2", 4), "r1")
    assert not may_lead(follower, now=0.0, deadline=99.0)
