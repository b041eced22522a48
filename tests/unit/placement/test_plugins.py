"""Each filter and score plugin on its own, over the example fabric's six nodes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from netmodel.events import NodeWentDown, SwitchConnected, SwitchDisconnected, WorkloadPlaced
from netmodel.fabric import build_state
from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.types import Resources, Tier, Workload
from placement.plugins import (
    BalanceScore,
    CostScore,
    LatencyScore,
    LatencySlo,
    NodeHealthy,
    NodeSpread,
    ResourcesFit,
    ServiceAffinity,
    SiteSpread,
    TierAllowed,
    make_context,
)
from placement.snapshot import ClusterSnapshot
from placement.types import AffinityTerm, PlacementRequest, Scope
from tests.unit.placement.helpers import apply, dpid, example_spec, example_state, request

NODES = ("c-n1", "c-n2", "ea-n1", "eb-n1", "ec-n1", "m-n1")  # the snapshot's order: sorted ids


def on(node: str, service: str = "api", n: int = 1, cpu: int = 1000, memory: int = 512) -> WorkloadPlaced:
    wid = WorkloadId(f"{service}-{node}-{n}")
    return WorkloadPlaced(Workload(wid, ServiceName(service), SpiffeId(""), Resources(cpu, memory), NodeId(node)))


def passing(plugin: object, req: PlacementRequest, state: object = None) -> set[str]:
    snapshot = ClusterSnapshot(state or example_state())  # type: ignore[arg-type]
    mask = plugin.passes(make_context(snapshot, req))  # type: ignore[attr-defined]
    return {snapshot.node_ids[i] for i in np.flatnonzero(mask)}


def reasons(plugin: object, req: PlacementRequest, state: object = None) -> list[str]:
    snapshot = ClusterSnapshot(state or example_state())  # type: ignore[arg-type]
    ctx = make_context(snapshot, req)
    ok = plugin.passes(ctx)  # type: ignore[attr-defined]
    return plugin.explain(ctx, ~ok, snapshot.all_nodes)  # type: ignore[attr-defined,no-any-return]


def scores(plugin: object, req: PlacementRequest, state: object = None) -> dict[str, float]:
    snapshot = ClusterSnapshot(state or example_state())  # type: ignore[arg-type]
    values = plugin.score(make_context(snapshot, req))  # type: ignore[attr-defined]
    return dict(zip(snapshot.node_ids, values.tolist(), strict=True))


def test_snapshot_orders_nodes_by_id() -> None:
    assert ClusterSnapshot(example_state()).node_ids == NODES


# -- filters ---------------------------------------------------------------------------------------------


def test_node_healthy_rejects_a_down_node_and_one_behind_a_disconnected_switch() -> None:
    state = apply(
        example_state(),
        NodeWentDown(NodeId("eb-n1")),
        SwitchConnected(dpid("c1"), (), at=1.0),
        SwitchDisconnected(dpid("c1"), at=2.0),
    )
    assert passing(NodeHealthy(), request(), state) == set(NODES) - {"eb-n1", "c-n1"}
    assert reasons(NodeHealthy(), request(), state) == [
        "1 node down: eb-n1",
        "1 node behind a switch that is down: c-n1",
    ]


def test_a_switch_never_connected_is_not_known_down() -> None:
    assert passing(NodeHealthy(), request()) == set(NODES)


def test_tier_allowed() -> None:
    assert passing(TierAllowed(), request(tiers=(Tier.EDGE,))) == {"ea-n1", "eb-n1", "ec-n1"}
    assert passing(TierAllowed(), request(tiers=(Tier.CLOUD,))) == {"c-n1", "c-n2"}
    assert passing(TierAllowed(), request()) == set(NODES)
    assert reasons(TierAllowed(), request(tiers=(Tier.CLOUD,))) == [
        "4 nodes not in tier cloud: ea-n1, eb-n1, ec-n1 and 1 more"
    ]


def test_affinity_on_node_and_site() -> None:
    state = apply(example_state(), on("c-n1", "db"))
    node_term = AffinityTerm(ServiceName("db"), Scope.NODE)
    site_term = AffinityTerm(ServiceName("db"), Scope.SITE)
    assert passing(ServiceAffinity(), request(affinity=(node_term,)), state) == {"c-n1"}
    assert passing(ServiceAffinity(), request(affinity=(site_term,)), state) == {"c-n1", "c-n2"}
    assert reasons(ServiceAffinity(), request(affinity=(node_term,)), state) == [
        "5 nodes without an instance of db on the same node"
    ]


def test_anti_affinity_on_node_and_site() -> None:
    state = apply(example_state(), on("c-n1", "db"))
    node_term = AffinityTerm(ServiceName("db"), Scope.NODE)
    site_term = AffinityTerm(ServiceName("db"), Scope.SITE)
    assert passing(ServiceAffinity(), request(anti_affinity=(node_term,)), state) == set(NODES) - {"c-n1"}
    assert passing(ServiceAffinity(), request(anti_affinity=(site_term,)), state) == set(NODES) - {"c-n1", "c-n2"}
    assert reasons(ServiceAffinity(), request(anti_affinity=(site_term,)), state) == [
        "2 nodes already with an instance of db on the same site (anti-affinity)"
    ]


@pytest.mark.parametrize(
    ("near", "slo", "expected"),
    [
        (("u1",), 3.0, {"ea-n1", "m-n1"}),  # ea-n1 0, m-n1 3 (exactly the SLO counts)
        (("u1",), 2.9, {"ea-n1"}),
        (("u1", "u2"), 5.0, {"ea-n1", "eb-n1", "ec-n1", "m-n1"}),  # every near host within 5
        (("u1", "u2"), 2.0, set()),
        (("u3",), 13.5, set(NODES)),  # c-n2 is 13.5 from u3
        (("u3",), 13.4, set(NODES) - {"c-n2"}),
    ],
)
def test_latency_slo_against_route_latencies(near: tuple[str, ...], slo: float, expected: set[str]) -> None:
    assert passing(LatencySlo(), request(near=near, slo=slo)) == expected


def test_latency_slo_reason_names_the_best_node_and_the_limiting_host() -> None:
    assert reasons(LatencySlo(), request(near=("u3",), slo=2.5)) == ["5 nodes beyond max_latency_ms=2.5 from host u3"]
    # not one node meets it: the best one is named, with the host that limits it
    assert reasons(LatencySlo(), request(near=("u1", "u3"), slo=2.0)) == [
        "no node satisfies max_latency_ms=2 from hosts u1, u3: best is 3 ms (from u1) at m-n1"
    ]


def test_latency_without_slo_still_needs_a_route_from_near_hosts() -> None:
    state = apply(example_state(), SwitchConnected(dpid("c1"), (), at=1.0), SwitchDisconnected(dpid("c1"), at=2.0))
    assert passing(LatencySlo(), request(near=("u1",)), state) == set(NODES) - {"c-n1"}
    assert passing(LatencySlo(), request(), state) == set(NODES)


def test_resources_fit_counts_what_is_placed() -> None:
    state = apply(example_state(), on("ea-n1", cpu=1800), on("eb-n1", memory=2000))
    assert passing(ResourcesFit(), request(cpu=500, memory=48), state) == set(NODES) - {"ea-n1"}
    assert passing(ResourcesFit(), request(cpu=100, memory=100), state) == set(NODES) - {"eb-n1"}
    assert passing(ResourcesFit(), request(cpu=200, memory=48), state) == set(NODES)  # exactly full fits
    assert reasons(ResourcesFit(), request(cpu=20000, memory=100000), state) == [
        "Insufficient cpu on 6 nodes (needs 20000m; most free: 16000m at c-n1)",
        "Insufficient memory on 6 nodes (needs 100000 MiB; most free: 65536 MiB at c-n1)",
    ]


# -- scores ------------------------------------------------------------------------------------------------


def test_latency_score_is_minus_mean_latency_from_near_hosts() -> None:
    """A service outside every call graph: the mean one-way latency from its near hosts (web calls api
    in the example, so the calls are taken out; with them, see test_callgraph.py)."""
    spec = example_spec()
    state = build_state(
        dataclasses.replace(spec, services=tuple(dataclasses.replace(s, calls=()) for s in spec.services))
    )
    got = scores(LatencyScore(), request(near=("u1", "u2")), state)
    assert got["m-n1"] == pytest.approx(-2.5)  # (3 + 2) / 2
    assert got["c-n1"] == pytest.approx(-12.5)  # (12 + 13) / 2
    assert set(scores(LatencyScore(), request(), state).values()) == {0.0}


def test_latency_score_of_a_caller_counts_round_trips() -> None:
    """web calls api (not placed yet): the request time is the round trip from its users, twice one way."""
    got = scores(LatencyScore(), request(near=("u1", "u2")))
    assert got["m-n1"] == pytest.approx(-5.0)
    assert got["c-n1"] == pytest.approx(-25.0)


def test_cost_score_makes_edge_expensive() -> None:
    got = scores(CostScore(), request())
    assert got["ea-n1"] < got["m-n1"] < got["c-n1"] == 0.0


def test_balance_score_prefers_the_emptier_and_even_node() -> None:
    state = apply(example_state(), on("c-n1", cpu=8000, memory=1024))
    got = scores(BalanceScore(), request(cpu=1000, memory=1024), state)
    assert got["c-n2"] > got["c-n1"]
    assert got["c-n2"] > got["ea-n1"]  # a small node is left fuller


def test_spread_scores_count_instances_of_the_same_service() -> None:
    state = apply(example_state(), on("c-n1", "web"))
    node = scores(NodeSpread(), request("web"), state)
    site = scores(SiteSpread(), request("web"), state)
    # web declares 2 replicas and has 1: an occupied node or site costs 1 (plus the small tail)
    assert node["c-n1"] == pytest.approx(-1.005) and node["c-n2"] == 0
    assert site["c-n1"] == site["c-n2"] == pytest.approx(-1.005) and site["m-n1"] == 0
    # past its replica count only the tail is left
    full = apply(state, on("c-n2", "web"))
    assert scores(NodeSpread(), request("web"), full)["c-n1"] == pytest.approx(-0.005)
    assert set(scores(NodeSpread(), request("api"), state).values()) == {0.0}
