"""End-to-end request time over the call graph (placement/callgraph.py), by hand on the example fabric.

One-way route latencies used below (ms): ea1-m2 3, eb1-m2 2, ea1-eb1 5, m2-c1 11, ea1-c1 12, eb1-c1 13,
c1-c2 0.5. Users: web's near hosts u1 (behind ea1) and u2 (behind eb1). Calls: web -> api -> db.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from netmodel.events import WorkloadPlaced
from netmodel.fabric import build_state
from netmodel.ids import HostId, NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import CallWeight, Resources, Service, Workload
from placement.callgraph import build_call_graph, request_times_ms
from placement.plugins import LatencyScore, RequestSlo, make_context
from placement.scheduler import FILTERS, LATENCY_FIRST_PROFILE, schedule
from placement.snapshot import ClusterSnapshot
from placement.types import Unschedulable
from tests.unit.placement.helpers import apply, example_spec, request

S = ServiceName


def svc(name: str, calls: tuple[str, ...] = (), near: tuple[str, ...] = (), **extra: object) -> Service:
    return Service(
        S(name),
        8000,
        1,
        Resources(100, 100),
        near=tuple(HostId(h) for h in near),
        calls=tuple(S(c) for c in calls),
        **extra,
    )  # type: ignore[arg-type]


def on(node: str, service: str, n: int = 1) -> WorkloadPlaced:
    return WorkloadPlaced(
        Workload(WorkloadId(f"{service}-{node}-{n}"), S(service), SpiffeId(""), Resources(100, 100), NodeId(node))
    )


def state_with(*placed: WorkloadPlaced, services: tuple[Service, ...] | None = None) -> FabricState:
    spec = example_spec()
    if services is not None:
        spec = dataclasses.replace(spec, services=services)
    return apply(build_state(spec), *placed)


def test_the_graph_orders_callers_first_and_cuts_cycles() -> None:
    services = {s.name: s for s in (svc("a", ("b", "c"), ("u1",)), svc("b", ("c",)), svc("c", ("a",)), svc("lone"))}
    graph = build_call_graph(services)
    assert graph.order == ("a", "b", "c")  # lone: no user reaches it
    assert graph.calls["c"] == ()  # c -> a goes back up the tree: cut
    assert graph.users == (("a", "u1"),)
    assert graph.involved == {"a", "b", "c"}


def test_request_time_is_every_round_trip_down_the_tree() -> None:
    state = state_with(on("ea-n1", "web"), on("m-n1", "api"), on("c-n1", "db"))
    snapshot = ClusterSnapshot(state)
    times = request_times_ms(snapshot.call_graph, snapshot.layout())
    # u1: web next door (0) + web->api ea1-m2 (2 x 3) + api->db m2-c1 (2 x 11) = 28; u2: + 2 x 5 to web = 38
    assert times.tolist() == pytest.approx([28.0, 38.0])


def test_call_weights_multiply_the_calls() -> None:
    spec = example_spec()
    web, api, db = spec.services
    heavy = dataclasses.replace(web, call_weights=((S("api"), CallWeight(2.0)),))
    state = state_with(on("ea-n1", "web"), on("m-n1", "api"), on("c-n1", "db"), services=(heavy, api, db))
    snapshot = ClusterSnapshot(state)
    assert request_times_ms(snapshot.call_graph, snapshot.layout()).tolist() == pytest.approx([56.0, 66.0])


def test_a_caller_uses_its_nearest_instances_only() -> None:
    # Two api instances: next to web (ea-n1) and in the cloud: web uses only the one beside it.
    state = state_with(on("ea-n1", "web"), on("ea-n1", "api"), on("c-n1", "api", 2), on("c-n1", "db"))
    snapshot = ClusterSnapshot(state)
    times = request_times_ms(snapshot.call_graph, snapshot.layout())
    assert times.tolist() == pytest.approx([24.0, 34.0])  # api->db ea1-c1: 2 x 12


def test_the_latency_score_counts_the_whole_chain_not_the_first_hop() -> None:
    # db in the cloud, api to place. Next to the users (edge) is 2.5 ms one way on average, the cloud
    # 12.5: a first-hop score would pick the edge. The chain says the cloud node beside db is better:
    # every api call goes on to db.
    web_on_both = (on("ea-n1", "web"), on("eb-n1", "web", 2), on("c-n1", "db"))
    snapshot = ClusterSnapshot(state_with(*web_on_both))
    values = LatencyScore().score(make_context(snapshot, request("api", 1000, 512)))
    got = dict(zip(snapshot.node_ids, values.tolist(), strict=True))
    assert got["c-n1"] == pytest.approx(-(24 + 26) / 2)  # web->api round trips; api->db next door
    assert got["m-n1"] == pytest.approx(-((6 + 22) + (4 + 22)) / 2)
    assert max(got, key=got.__getitem__) == "c-n1"
    decision = schedule(state_with(*web_on_both), request("api", 1000, 512), LATENCY_FIRST_PROFILE)
    assert not isinstance(decision, Unschedulable) and decision.assignments[0].node == "c-n1"


def test_a_service_outside_every_call_graph_keeps_the_one_way_score() -> None:
    spec = example_spec()
    alone = tuple(dataclasses.replace(s, calls=()) for s in spec.services)
    snapshot = ClusterSnapshot(state_with(services=alone))
    values = LatencyScore().score(make_context(snapshot, request("web", near=("u1", "u2"))))
    assert dict(zip(snapshot.node_ids, values.tolist(), strict=True))["m-n1"] == pytest.approx(-2.5)


def test_the_request_slo_is_checked_over_the_whole_chain() -> None:
    spec = example_spec()
    web, api, db = spec.services
    strict = dataclasses.replace(web, max_request_latency_ms=27.0, max_latency_ms=None)
    state = state_with(on("ea-n1", "web"), on("eb-n1", "web", 2), on("c-n1", "db"), services=(strict, api, db))
    snapshot = ClusterSnapshot(state)
    ctx = make_context(snapshot, request("api", 1000, 512))
    ok = {n for n, passes in zip(snapshot.node_ids, RequestSlo().passes(ctx).tolist(), strict=True) if passes}
    # The worst user's request with api on: c-n1 26 (u2: 2 x 13), m-n1 28 (u1: 2 x 3 + 2 x 11), c-n2 28 (u2:
    # 2 x 13.5 + 2 x 0.5), ea-n1 34 (u2 crosses to ea1 first), eb-n1 36 (u1 likewise).
    assert ok == {"c-n1"}
    assert RequestSlo() in FILTERS


def test_no_node_keeps_the_request_slo_names_the_best() -> None:
    spec = example_spec()
    web, api, db = spec.services
    strict = dataclasses.replace(web, max_request_latency_ms=10.0, max_latency_ms=None)
    state = state_with(on("ea-n1", "web"), on("eb-n1", "web", 2), on("c-n1", "db"), services=(strict, api, db))
    decision = schedule(state, request("api", 1000, 512))
    assert isinstance(decision, Unschedulable)
    assert (
        "no node keeps web's end-to-end max_request_latency_ms=10: best is 26 ms (from u2) at c-n1" in decision.message
    )


def test_a_request_that_names_its_own_users_makes_them_the_entry_users() -> None:
    snapshot = ClusterSnapshot(state_with())
    graph = snapshot.call_graph_for(S("web"), (HostId("u3"),))
    assert graph.users == (("web", "u3"),)
    assert snapshot.call_graph_for(S("web"), (HostId("u1"), HostId("u2"))) is snapshot.call_graph  # as declared
    values = LatencyScore().score(make_context(snapshot, request("web", near=("u3",))))
    got = dict(zip(snapshot.node_ids, values.tolist(), strict=True))
    assert max(got, key=got.__getitem__) == "ec-n1" and got["ec-n1"] == 0.0


def _failover_times(slo: float, layout: tuple[tuple[str, str], ...], down: str) -> tuple[list, list, list]:
    from netmodel.events import NodeWentDown
    from placement.failover import plan_failover
    from placement.types import declared_constraints

    spec = example_spec()
    web, api, db = spec.services
    services = (dataclasses.replace(web, max_request_latency_ms=slo), api, db)
    sizes = {"web": Resources(500, 256), "api": Resources(1000, 512), "db": Resources(2000, 4096)}
    placed = [
        WorkloadPlaced(Workload(WorkloadId(w), S(w.split("-")[0]), SpiffeId(""), sizes[w.split("-")[0]], NodeId(n)))
        for w, n in layout
    ]
    state = state_with(*placed, services=services).apply(NodeWentDown(NodeId(down)))
    plan = plan_failover(state, lambda w: declared_constraints(state.services[w.service]))
    after = state
    for move in plan.moves:
        new = Workload(
            WorkloadId(f"{move.old.id}-new"), move.old.service, SpiffeId(""), move.old.resources, move.to.node
        )
        after = after.apply(WorkloadPlaced(new))
    snapshot = ClusterSnapshot(after)
    times = request_times_ms(snapshot.call_graph, snapshot.layout()).tolist()
    return [(m.old.id, m.to.node) for m in plan.moves], [s.workload.id for s in plan.stranded], times


def test_a_failover_that_no_layout_can_keep_within_the_slo_takes_the_best_not_nothing() -> None:
    # api and db on the metro node, which fails. No layout keeps 20 ms for both users any more (the best:
    # both on c-n1, 24 and 26 ms): the failover takes it rather than strand api and fail every request.
    where = (("web-1", "ea-n1"), ("web-2", "eb-n1"), ("api-1", "m-n1"), ("db-1", "m-n1"))
    moves, stranded, times = _failover_times(20.0, where, "m-n1")
    assert sorted(moves) == [("api-1", "c-n1"), ("db-1", "c-n1")] and stranded == []
    assert times == pytest.approx([24.0, 26.0])


def test_a_failover_is_not_stranded_by_an_slo_the_rest_of_the_chain_already_broke() -> None:
    # Before the failure u2 waits 38 ms (SLO 30): web is on ea-n1 only. api's node fails: no node keeps 30 ms
    # for u2 (the best, c-n1, 34 ms); api still gets a node.
    where = (("web-1", "ea-n1"), ("api-1", "m-n1"), ("db-1", "c-n1"))
    moves, stranded, times = _failover_times(30.0, where, "m-n1")
    assert moves == [("api-1", "c-n1")] and stranded == [] and times == pytest.approx([24.0, 34.0])


def test_a_service_with_no_usable_instance_makes_requests_fail_not_faster() -> None:
    from netmodel.events import NodeWentDown

    state = state_with(on("ea-n1", "web"), on("eb-n1", "web", 2), on("c-n1", "api"), on("c-n2", "db"))
    snapshot = ClusterSnapshot(state)
    assert request_times_ms(snapshot.call_graph, snapshot.layout()).tolist() == pytest.approx([25.0, 27.0])
    down = ClusterSnapshot(state.apply(NodeWentDown(NodeId("c-n2"))))
    assert request_times_ms(down.call_graph, down.layout()).tolist() == [np.inf, np.inf]


def test_the_request_slo_of_an_entry_that_calls_nothing_is_enforced() -> None:
    spec = example_spec()
    web, api, db = spec.services
    alone = dataclasses.replace(web, calls=(), max_request_latency_ms=4.0, max_latency_ms=None)
    decision = schedule(state_with(services=(alone, api, db)), request("web"))
    # the round trip from both u1 and u2 within 4 ms: only m-n1 (6 and 4 ms) comes close, and it does not
    assert isinstance(decision, Unschedulable) and "max_request_latency_ms=4" in decision.message
    relaxed = dataclasses.replace(alone, max_request_latency_ms=6.0)
    decision = schedule(state_with(services=(relaxed, api, db)), request("web"))
    assert not isinstance(decision, Unschedulable) and decision.assignments[0].node == "m-n1"


def test_trees_are_placed_from_the_top_busiest_first() -> None:
    from placement.callgraph import busiest_first, calls_per_request

    services = {
        s.name: s
        for s in (
            svc(
                "front",
                ("rare", "hot"),
                ("u1",),
                call_weights=((S("hot"), CallWeight(4.0)), (S("rare"), CallWeight(0.1))),
            ),
            svc("rare", ("hot",)),
            svc("hot"),
            svc("lone"),
        )
    }
    graph = build_call_graph(services)
    assert calls_per_request(graph) == pytest.approx({"front": 1.0, "rare": 0.1, "hot": 4.1})
    assert busiest_first(graph) == ["front", "hot", "rare"]  # hot before rare, though rare calls it too


def test_declared_replicas_are_placed_in_that_order() -> None:
    from placement.replicas import placement_order

    spec = example_spec()
    services = {s.name: s for s in spec.services}
    assert placement_order(services) == ["web", "api", "db"]  # not by name (api, db, web)
