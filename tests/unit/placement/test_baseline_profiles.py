"""The baseline profiles (placement/baseline_profiles.py) on the example fabric: kube-default-like knows no
network, diktyo-like puts a service near its callers' and callees' instances by static declared costs."""

from __future__ import annotations

import numpy as np

from netmodel.events import LinkLatencyMeasured, LinkWentDown
from placement.baseline_profiles import (
    DIKTYO_LIKE_PROFILE,
    KUBE_DEFAULT_LIKE_PROFILE,
    NetworkOverhead,
    all_profiles,
    declared_node_costs,
    dependencies_of,
)
from placement.plugins import make_context
from placement.requests import PlaceInput, build_place_request
from placement.scheduler import LATENCY_FIRST_PROFILE, PROFILES, schedule
from placement.snapshot import ClusterSnapshot
from placement.types import Decision
from tests.unit.placement.helpers import apply, example_state, link, request
from tests.unit.placement.test_plugins import on


def nodes_of(decision: object) -> list[str]:
    assert isinstance(decision, Decision), decision
    return [str(a.node) for a in decision.assignments]


def test_both_baselines_are_known_by_name_beside_the_schedulers_own() -> None:
    profiles = all_profiles()
    assert {"kube-default-like", "diktyo-like"} <= set(profiles)
    assert set(PROFILES) <= set(profiles)
    _, profile = build_place_request(example_state(), PlaceInput("web", profile="diktyo-like"))
    assert profile is DIKTYO_LIKE_PROFILE


def test_kube_default_like_ignores_latency_and_takes_the_least_allocated_node() -> None:
    near_u1 = request("web", near=("u1",), slo=3)
    assert nodes_of(schedule(example_state(), near_u1, LATENCY_FIRST_PROFILE)) == ["ea-n1"]
    # No latency score, no SLO filter: the big, empty cloud nodes win on resources.
    assert nodes_of(schedule(example_state(), near_u1, KUBE_DEFAULT_LIKE_PROFILE)) == ["c-n1"]


def test_kube_default_like_spreads_replicas_over_nodes_and_sites() -> None:
    (first, second, third) = nodes_of(
        schedule(example_state(), request("db", cpu=2000, memory=4096, replicas=3), KUBE_DEFAULT_LIKE_PROFILE)
    )
    assert len({first, second, third}) == 3
    sites = {"c-n1": "cloud", "c-n2": "cloud", "m-n1": "metro", "ea-n1": "a", "eb-n1": "b", "ec-n1": "c"}
    assert len({sites[first], sites[second]}) == 2  # the second replica leaves the first one's site


def test_diktyo_like_places_next_to_the_placed_instances_of_what_it_calls() -> None:
    for db_node in ("m-n1", "eb-n1"):
        state = apply(example_state(), on(db_node, "db", cpu=500, memory=512))
        assert nodes_of(schedule(state, request("api", cpu=1000, memory=512), DIKTYO_LIKE_PROFILE)) == [db_node]


def test_diktyo_like_counts_callers_too_and_scores_alike_with_nothing_placed() -> None:
    state = example_state()
    snapshot = ClusterSnapshot(state)
    assert dependencies_of(snapshot, "api") == ("db", "web")  # web calls api, api calls db
    assert not NetworkOverhead().score(make_context(snapshot, request("api"))).any()
    with_web = apply(state, on("ec-n1", "web", cpu=200, memory=128))
    assert nodes_of(schedule(with_web, request("api", cpu=500, memory=256), DIKTYO_LIKE_PROFILE)) == ["ec-n1"]


def test_diktyo_like_costs_are_static_zone_costs_from_the_declared_latencies() -> None:
    state = example_state()
    costs = declared_node_costs(ClusterSnapshot(state))
    index = {n: i for i, n in enumerate(ClusterSnapshot(state).node_ids)}
    assert costs[index["c-n1"], index["c-n1"]] == 0  # same node
    assert costs[index["c-n1"], index["c-n2"]] == 1  # same zone (site)
    assert costs[index["eb-n1"], index["m-n1"]] == 2  # eb1 -> m2, declared 2 ms
    assert costs[index["ea-n1"], index["c-n1"]] == 12  # ea1 -> m1 -> c1: 2 + 10 ms
    # Measurements and failures change nothing: the NetworkTopology is what was declared.
    measured = apply(state, LinkLatencyMeasured(((link(state, "eb1", "m2"), 40_000),), at=1.0))
    cut = apply(measured, LinkWentDown(link(state, "ea1", "m1")))
    assert np.array_equal(declared_node_costs(ClusterSnapshot(cut)), costs)
