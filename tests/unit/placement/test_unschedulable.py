"""The filter named for a refused Place: the one after which no candidate node was left (pure)."""

from __future__ import annotations

from netmodel.ids import NodeId
from netmodel.types import Tier
from placement.scheduler import DEFAULT_PROFILE, schedule
from placement.snapshot import ClusterSnapshot
from placement.types import Unschedulable
from placement.unschedulable import NO_CANDIDATES, OTHER, refusal_labels, rejecting_filter
from tests.unit.placement.helpers import example_state, request


def named(**options: object) -> str:
    """The filter named for a request the scheduler refuses."""
    state = example_state()
    wanted = request(**options)  # type: ignore[arg-type]
    assert isinstance(schedule(state, wanted), Unschedulable)
    return rejecting_filter(ClusterSnapshot(state), wanted, DEFAULT_PROFILE)


def test_each_refusal_is_named_by_the_filter_that_left_no_node() -> None:
    assert named(cpu=10_000_000) == "ResourcesFit"
    assert named(slo=0.001, near=("u1", "u2")) == "LatencySlo"


def test_candidates_that_do_not_exist_and_requests_that_fit_once() -> None:
    assert named(candidates=frozenset({NodeId("nowhere")})) == NO_CANDIDATES
    state = example_state()
    fits = request(tiers=(Tier.EDGE,))
    assert rejecting_filter(ClusterSnapshot(state), fits, DEFAULT_PROFILE) == OTHER


def test_the_label_set_is_the_profiles_filters_and_two_more() -> None:
    assert refusal_labels(DEFAULT_PROFILE) == (
        "NodeHealthy",
        "TierAllowed",
        "ServiceAffinity",
        "LatencySlo",
        "RequestSlo",
        "ResourcesFit",
        "BandwidthFits",
        NO_CANDIDATES,
        OTHER,
    )
