"""The replica reconciler on a real EventBus: declared replicas placed, kept, scaled, moved; failures retried."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from edgectl.bus import EventBus
from netmodel.events import DesiredStateApplied, NodeWentDown, WorkloadHealthChanged
from netmodel.fabric import FabricSpec, build_state
from netmodel.ids import NodeId, ServiceName, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Workload
from placement.orchestrator import FailoverLoop, PlacementOrchestrator
from placement.replica_loop import ReplicaLoop
from placement.watch import StepKind
from tests.unit.placement.helpers import example_spec, request, running_bus


def spec_with(**replicas: int | tuple[int, float | None]) -> FabricSpec:
    """The example's document with every service's replicas (and optionally SLO) as given, 0 for the rest."""
    services = []
    for service in example_spec().services:
        wanted = replicas.get(service.name, 0)
        count, slo = wanted if isinstance(wanted, tuple) else (wanted, service.max_latency_ms)
        services.append(replace(service, replicas=count, max_latency_ms=slo))
    return replace(example_spec(), services=tuple(services))


def declared(state: FabricState, service: str = "web") -> list[Workload]:
    return sorted((w for w in state.workloads.values() if w.declared and w.service == service), key=lambda w: w.id)


def wait_for(bus: EventBus, predicate: object, timeout: float = 10.0) -> FabricState:
    state = bus.wait_for(predicate, timeout)  # type: ignore[arg-type]
    assert state is not None, "timed out"
    return state


@contextmanager
def reconciling(
    spec: FabricSpec, *, failover: bool = False, slow_convergence: bool = False
) -> Iterator[tuple[EventBus, PlacementOrchestrator, ReplicaLoop]]:
    with running_bus(build_state(spec)) as bus:
        # slow_convergence: a probe that never accepts, so every move waits its whole (short) timeout
        probes = [lambda generation: False] if slow_convergence else []
        orchestrator = PlacementOrchestrator(bus, probes, convergence_timeout_s=0.5)
        bus.subscribe(orchestrator.events)
        loop = ReplicaLoop(orchestrator, min_backoff_s=0.05, max_backoff_s=0.2)
        bus.subscribe(loop)
        failover_loop = FailoverLoop(orchestrator) if failover else None
        if failover_loop is not None:
            bus.subscribe(failover_loop)
            failover_loop.start()
        loop.start()
        try:
            yield bus, orchestrator, loop
        finally:
            loop.stop()
            if failover_loop is not None:
                failover_loop.stop()


def test_declared_replicas_are_placed_at_start_with_ids_spiffe_ids_and_no_constraints_of_their_own() -> None:
    with reconciling(spec_with(web=2, db=1)) as (bus, _o, loop):
        state = wait_for(bus, lambda s: len(declared(s)) == 2 and len(declared(s, "db")) == 1)
        web = declared(state)
        assert [w.id for w in web] == ["web-1", "web-2"]
        assert web[0].spiffe_id == "spiffe://edgectl.local/svc/web/w/web-1"
        assert web[0].constraints is None  # they follow the service's declaration
        assert len({w.node for w in web}) == 2
        view = loop.status_view(bus.state)["services"]
        assert view["web"] == {"replicas": 2, "placed": 2, "instances": ["web-1", "web-2"], "pending": None}
        assert view["api"]["replicas"] == 0


def test_an_evicted_declared_instance_is_replaced_and_a_placed_one_is_left_alone() -> None:
    with reconciling(spec_with(web=2)) as (bus, orchestrator, _loop):
        wait_for(bus, lambda s: len(declared(s)) == 2)
        (own,) = orchestrator.place(request(replicas=1)).workloads  # the operator's: not counted, not drained
        assert not own.declared
        orchestrator.evict(WorkloadId("web-1"))
        state = wait_for(bus, lambda s: [w.id for w in declared(s)] == ["web-2", "web-4"])
        assert own.id in state.workloads
        time.sleep(0.3)  # nothing more happens
        assert len(bus.state.workloads) == 3


def test_scaling_up_and_down_in_the_document_places_and_drains() -> None:
    with reconciling(spec_with(web=1)) as (bus, _o, _loop):
        wait_for(bus, lambda s: len(declared(s)) == 1)
        bus.publish(DesiredStateApplied(spec_with(web=3), "r2")).result(5)
        state = wait_for(bus, lambda s: len(declared(s)) == 3)
        assert len({w.node for w in declared(state)}) == 3
        bus.publish(DesiredStateApplied(spec_with(web=1), "r3")).result(5)
        state = wait_for(bus, lambda s: len(declared(s)) == 1)
        assert [w.id for w in declared(state)] == ["web-1"]  # the newest drained first when all else ties


def test_a_tightened_slo_moves_the_breaking_instance_make_before_break() -> None:
    with reconciling(spec_with(web=2)) as (bus, orchestrator, _loop):
        steps = orchestrator.events.subscribe()
        state = wait_for(bus, lambda s: len(declared(s)) == 2)
        # web: 5 ms from u1 and u2; from both, m-n1 is 3 ms, ea-n1 and eb-n1 5 ms. At 4 ms only m-n1 is left.
        on_edge = [w for w in declared(state) if w.node != "m-n1"]
        assert len(on_edge) == 1
        bus.publish(DesiredStateApplied(spec_with(web=(2, 4.0)), "r2")).result(5)
        state = wait_for(bus, lambda s: on_edge[0].id not in s.workloads and len(declared(s)) == 2)
        assert {w.node for w in declared(state)} == {NodeId("m-n1")}
        kinds = []
        while (step := steps.get(0.01)) is not None:
            kinds.append(step.kind)
        assert StepKind.MIGRATION_STARTED in kinds and StepKind.MIGRATION_COMPLETED in kinds


def test_what_fits_nowhere_is_reported_once_per_reason_retried_with_backoff_and_placed_when_it_fits() -> None:
    with reconciling(spec_with(web=(2, 0.5))) as (bus, orchestrator, loop):
        passes: list[int] = []
        original = orchestrator.reconcile_replicas

        def counted(previous: FabricState | None = None) -> object:
            passes.append(1)
            return original(previous)

        orchestrator.reconcile_replicas = counted  # type: ignore[method-assign,assignment]
        steps = orchestrator.events.subscribe()
        deadline = time.monotonic() + 5
        while loop.status_view(bus.state)["services"]["web"]["pending"] is None and time.monotonic() < deadline:
            time.sleep(0.02)
        pending = loop.status_view(bus.state)["services"]["web"]["pending"]
        assert pending is not None and "no node satisfies max_latency_ms=0.5" in pending
        passes.clear()
        for _ in range(40):  # model changes that do not help web: no new report, few passes (backoff)
            orchestrator.place(request(service="db", cpu=1, memory=1))
            time.sleep(0.02)
        assert 1 <= len(passes) <= 15, len(passes)
        bus.publish(NodeWentDown(NodeId("c-n2"))).result(5)  # the reason changes: said again
        deadline = time.monotonic() + 5
        while (
            "c-n2" not in (loop.status_view(bus.state)["services"]["web"]["pending"] or "")
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        unschedulable = []
        while (step := steps.get(0.05)) is not None:
            if step.kind is StepKind.UNSCHEDULABLE:
                unschedulable.append(step.message)
        # the first report may have come before the subscription; the new reason came once
        assert len([m for m in unschedulable if "1 node down: c-n2" in m]) == 1
        assert len(unschedulable) <= 2
        assert not declared(bus.state)
        bus.publish(DesiredStateApplied(spec_with(web=(2, 5.0)), "r2")).result(5)
        wait_for(bus, lambda s: len(declared(s)) == 2)
        deadline = time.monotonic() + 5
        while loop.status_view(bus.state)["services"]["web"]["pending"] is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert loop.status_view(bus.state)["services"]["web"]["pending"] is None


def test_failover_and_the_reconciler_never_place_two_for_one_missing_replica() -> None:
    with reconciling(spec_with(web=2), failover=True, slow_convergence=True) as (bus, _o, loop):
        state = wait_for(bus, lambda s: len(declared(s)) == 2)
        passes: list[tuple[int, int]] = []
        original = loop.reconcile

        def counted() -> object:
            done = original()
            passes.append((len(done.placed), len(done.evicted)))
            return done

        loop.reconcile = counted  # type: ignore[method-assign,assignment]
        lost = declared(state)[0]
        # failover replaces it make-before-break: both exist for 0.5 s, the reconciler must not drain one
        bus.publish(WorkloadHealthChanged(lost.id, healthy=False, reason="app exited")).result(5)
        state = wait_for(bus, lambda s: lost.id not in s.workloads and len(declared(s)) == 2)
        down = declared(state)[1].node
        bus.publish(NodeWentDown(NodeId(str(down)))).result(5)
        wait_for(bus, lambda s: all(w.node != down for w in declared(s)) and len(declared(s)) == 2)
        time.sleep(0.5)
        final = declared(bus.state)
        assert len(final) == 2 and all(w.declared for w in final)
        assert sum(1 for w in bus.state.workloads.values() if w.service == ServiceName("web")) == 2
        assert passes and all(p == (0, 0) for p in passes), passes  # failover did it all
