"""Moving a chain (placement/chains.py and PlacementOrchestrator.migrate), on the example fabric.

web runs next to the users (ea-n1, eb-n1), api and db in the cloud on two nodes (c-n1, c-n2). Users'
request times now: u1 2 x 12 + 2 x 0.5 = 25, u2 2 x 13 + 1 = 27: mean 26 ms. api alone on the metro node
m-n1 would be worse (each api call then crosses to the cloud: mean 28); api and db together there: 5.
"""

from __future__ import annotations

import dataclasses

import pytest

from netmodel.events import WorkloadPlaced
from netmodel.fabric import build_state
from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Resources, Workload
from placement.chains import plan_move
from placement.errors import PlacementRefused, Refusal
from placement.orchestrator import MigrationTarget, PlacementOrchestrator
from placement.scheduler import LATENCY_FIRST_PROFILE
from placement.snapshot import ClusterSnapshot
from placement.types import PlacementRequest, Unschedulable
from placement.watch import StepKind
from tests.unit.placement.helpers import apply, example_spec, running_bus
from tests.unit.placement.test_orchestrator import collect, wait_until

SIZES = {"web": Resources(500, 256), "api": Resources(1000, 512), "db": Resources(2000, 4096)}


def placed(workload: str, node: str) -> WorkloadPlaced:
    service = workload.split("-")[0]
    return WorkloadPlaced(
        Workload(WorkloadId(workload), ServiceName(service), SpiffeId(""), SIZES[service], NodeId(node), port=0)
    )


def fabric(request_slo: float | None = None, *where: tuple[str, str]) -> FabricState:
    spec = example_spec()
    web, api, db = spec.services
    web = dataclasses.replace(web, max_request_latency_ms=request_slo)
    state = build_state(dataclasses.replace(spec, services=(web, api, db)))
    layout = where or (("web-1", "ea-n1"), ("web-2", "eb-n1"), ("api-1", "c-n1"), ("db-1", "c-n2"))
    return apply(state, *(placed(w, n) for w, n in layout))


def api_request(state: FabricState, avoid: str = "c-n1") -> PlacementRequest:
    return PlacementRequest(ServiceName("api"), SIZES["api"], avoid=frozenset({NodeId(avoid)}))


def request_for(workload: Workload) -> PlacementRequest:
    return PlacementRequest(workload.service, workload.resources)


def test_a_chain_moves_together_when_the_move_alone_gains_nothing() -> None:
    state = fabric()
    snapshot = ClusterSnapshot(state)
    here = snapshot.index[NodeId("c-n1")]
    snapshot.forget(ServiceName("api"), SIZES["api"], here)
    others = [w for w in state.workloads.values() if w.id != "api-1"]
    plan = plan_move(snapshot, api_request(state), here, others, request_for, LATENCY_FIRST_PROFILE)
    assert not isinstance(plan, Unschedulable)
    assert plan.assignment.node == "m-n1"
    assert [(c.workload.id, c.assignment.node) for c in plan.companions] == [("db-1", "m-n1")]
    assert (plan.request_ms_now, plan.request_ms_alone, plan.request_ms_after) == pytest.approx((26.0, 28.0, 5.0))
    assert plan.gains
    assert plan.reason() == (
        "users' mean request time 26.0 -> 5.0 ms with db-1 to m-n1 (its calls go there; alone 28.0 ms)"
    )
    # the snapshot is left as it was given
    assert (
        snapshot.instances_of(ServiceName("db")).tolist()
        == ClusterSnapshot(state).instances_of(ServiceName("db")).tolist()
    )


def test_migrate_moves_the_chain_make_before_break_and_says_why() -> None:
    with running_bus(fabric()) as bus:
        o = PlacementOrchestrator(bus, profile=LATENCY_FIRST_PROFILE)
        steps = collect(o, bus)
        result = o.migrate(WorkloadId("api-1"), MigrationTarget(best=True))
        assert result.new.node == "m-n1"
        (db_move,) = result.companions
        assert (db_move.old.id, db_move.new.node) == ("db-1", "m-n1")
        nodes = {w.service: w.node for w in bus.state.workloads.values() if w.service != "web"}
        assert nodes == {"api": "m-n1", "db": "m-n1"}
        wait_until(lambda: sum(s.kind is StepKind.MIGRATION_COMPLETED for s in steps) == 2)
        started = [s.message for s in steps if s.kind is StepKind.MIGRATION_STARTED]
        assert "26.0 -> 5.0 ms with db-1 to m-n1" in started[0]
        (why,) = next(s.reasons for s in steps if s.kind is StepKind.MIGRATION_STARTED)
        assert why.startswith("users' mean request time 26.0 -> 5.0 ms")
        assert f"with {result.new.id}, which calls it, to m-n1" in started[1]


def test_a_move_that_makes_the_chain_slower_is_refused() -> None:
    # api and db together on the metro node, between the users: every other node makes users wait longer,
    # with or without db following.
    state = fabric(None, ("web-1", "ea-n1"), ("web-2", "eb-n1"), ("api-1", "m-n1"), ("db-1", "m-n1"))
    with running_bus(state) as bus:
        o = PlacementOrchestrator(bus, profile=LATENCY_FIRST_PROFILE)
        with pytest.raises(PlacementRefused) as refused:
            o.migrate(WorkloadId("api-1"), MigrationTarget(best=True))
        assert refused.value.kind is Refusal.FAILED_PRECONDITION
        assert (
            "would gain nothing" in refused.value.reason and "users' mean request time 5.0 ->" in refused.value.reason
        )
        assert bus.state is state or set(bus.state.workloads) == set(state.workloads)


def test_a_move_that_would_break_the_end_to_end_slo_is_refused() -> None:
    with running_bus(fabric(30.0)) as bus:
        before = dict(bus.state.workloads)
        o = PlacementOrchestrator(bus, profile=LATENCY_FIRST_PROFILE)
        with pytest.raises(PlacementRefused) as refused:
            o.migrate(WorkloadId("api-1"), MigrationTarget(node=NodeId("ea-n1")))
        # u2 would cross to ea1 for every api call: 2 x 5 + 2 x 12.5 = 35 ms > 30
        assert "no node keeps web's end-to-end max_request_latency_ms=30: best is 35 ms (from u2) at ea-n1" in (
            refused.value.reason
        )
        assert dict(bus.state.workloads) == before


def test_the_grpc_migrate_answer_lists_the_companions() -> None:
    from placement._pb import placement_pb2 as pb
    from tests.unit.placement.helpers import served_api

    with served_api(fabric(), profile=LATENCY_FIRST_PROFILE) as (bus, _server, stub):
        answer = stub.Migrate(pb.MigrateRequest(workload_id="api-1", best=True), timeout=10)
        assert answer.workload.node == "m-n1"
        (db,) = answer.companions
        assert (db.from_workload_id, db.workload.node) == ("db-1", "m-n1")
        # placed together, withdrawn together: both new instances before either old one goes
        assert max(answer.placed_generation, db.placed_generation) < min(
            answer.removed_generation, db.removed_generation
        )
        assert {w.id for w in bus.state.workloads.values()} >= {answer.workload.id, db.workload.id}


def test_a_chain_that_does_not_converge_is_rolled_back_whole() -> None:
    from placement.convergence import NamedProbe

    with running_bus(fabric()) as bus:
        before = {w.id: w.node for w in bus.state.workloads.values()}
        never = NamedProbe("sidecars", lambda generation: False)
        o = PlacementOrchestrator(bus, [never], profile=LATENCY_FIRST_PROFILE, convergence_timeout_s=0.2)
        steps = collect(o, bus)
        with pytest.raises(PlacementRefused) as refused:
            o.migrate(WorkloadId("api-1"), MigrationTarget(best=True))
        assert refused.value.kind is Refusal.DEADLINE_EXCEEDED and "db-1 on c-n2" in refused.value.reason
        assert {w.id: w.node for w in bus.state.workloads.values()} == before  # both new instances removed
        wait_until(lambda: sum(s.kind is StepKind.MIGRATION_ROLLED_BACK for s in steps) == 2)
        # and the instances are free again: the chain can be tried once more
        o2 = PlacementOrchestrator(bus, profile=LATENCY_FIRST_PROFILE)
        assert o2.migrate(WorkloadId("api-1"), MigrationTarget(best=True)).companions


def test_an_explicit_node_moves_that_instance_only() -> None:
    with running_bus(fabric()) as bus:
        o = PlacementOrchestrator(bus, profile=LATENCY_FIRST_PROFILE)
        result = o.migrate(WorkloadId("api-1"), MigrationTarget(node=NodeId("m-n1")))
        assert result.new.node == "m-n1" and result.companions == ()
        assert {w.node for w in bus.state.workloads.values() if w.service == "db"} == {"c-n2"}
