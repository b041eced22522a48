"""The orchestrator with a real EventBus: place, evict, make-before-break migration, failover."""

from __future__ import annotations

import threading
import time
from typing import cast

import pytest

from netmodel.events import NodeCameUp, NodeWentDown, WorkloadPlaced
from netmodel.ids import NodeId, ServiceName, SiteId, SpiffeId, WorkloadId
from netmodel.types import Resources, Workload
from placement.errors import PlacementRefused, Refusal
from placement.failover import FailoverPlan
from placement.orchestrator import FailoverLoop, MigrationTarget, PlacementOrchestrator
from placement.watch import PlacementStep, StepKind
from tests.unit.placement.helpers import request, running_bus


def wait_until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("timed out")


def collect(orchestrator: PlacementOrchestrator, bus: object) -> list[PlacementStep]:
    """Every placement step from now on (the model's PLACED/REMOVED too, as start_placement_api wires it)."""
    bus.subscribe(orchestrator.events)  # type: ignore[attr-defined]
    steps: list[PlacementStep] = []
    subscription = orchestrator.events.subscribe()

    def drain() -> None:
        while not subscription.closed:
            step = subscription.get(0.05)
            if step is not None:
                steps.append(step)

    threading.Thread(target=drain, daemon=True).start()
    return steps


def test_place_publishes_through_the_bus_with_fresh_ids_and_spiffe_ids() -> None:
    with running_bus() as bus:
        o = PlacementOrchestrator(bus, trust_domain="example.org")
        first = o.place(request(replicas=2))
        assert [w.id for w in first.workloads] == ["web-1", "web-2"]
        assert first.workloads[0].spiffe_id == "spiffe://example.org/svc/web/w/web-1"
        assert first.workloads[0].port == 8080
        assert set(bus.state.workloads) == {"web-1", "web-2"}
        assert first.generation == bus.state.generation
        o.evict(WorkloadId("web-2"))
        # never reused within a process, even after an eviction
        assert [w.id for w in o.place(request()).workloads] == ["web-3"]


def test_a_dry_run_uses_up_no_workload_id() -> None:
    with running_bus() as bus:
        o = PlacementOrchestrator(bus)
        shown = [w.id for w in o.place(request(replicas=2), dry_run=True).workloads]
        assert shown == ["web-1", "web-2"]
        assert [w.id for w in o.place(request(), dry_run=True).workloads] == ["web-1"]
        # the real Place gives the ids the dry run showed
        assert [w.id for w in o.place(request(replicas=2)).workloads] == shown
        assert [w.id for w in o.place(request(), dry_run=True).workloads] == ["web-3"]
        assert [w.id for w in o.place(request()).workloads] == ["web-3"]


def test_ids_start_above_the_floors_given_before_a_restart() -> None:
    with running_bus() as bus:
        o = PlacementOrchestrator(bus, id_floors={ServiceName("web"): 7})
        assert [w.id for w in o.place(request()).workloads] == ["web-8"]
        assert [w.id for w in o.place(request(service="db", cpu=1, memory=1)).workloads] == ["db-1"]


def test_refusals_change_nothing() -> None:
    with running_bus() as bus:
        o = PlacementOrchestrator(bus)
        before = bus.state
        with pytest.raises(PlacementRefused) as refused:
            o.place(request(cpu=10**6))
        assert refused.value.kind is Refusal.RESOURCE_EXHAUSTED
        with pytest.raises(PlacementRefused) as refused:
            o.evict(WorkloadId("nope-1"))
        assert refused.value.kind is Refusal.NOT_FOUND
        assert o.place(request(), dry_run=True).generation == 0
        assert bus.state is before


def test_migration_is_make_before_break() -> None:
    seen: list[tuple[int, set[str]]] = []
    with running_bus() as bus:

        def routes_installed(generation: int) -> bool:
            seen.append((generation, set(bus.state.workloads)))
            return len(seen) >= 3  # converges on the third look

        o = PlacementOrchestrator(bus, [routes_installed])
        steps = collect(o, bus)
        (old,) = o.place(request(near=("u1",), slo=5)).workloads
        assert old.node == "m-n1"
        result = o.migrate(old.id, MigrationTarget(node=NodeId("ea-n1")))
        assert result.new.node == "ea-n1" and result.old.id == old.id
        # while the probe was asked, both instances were in the model
        assert all({old.id, result.new.id} <= names for _, names in seen)
        assert {g for g, _ in seen} == {result.placed_generation}
        assert set(bus.state.workloads) == {result.new.id}
        assert result.removed_generation > result.placed_generation
        wait_until(lambda: any(s.kind is StepKind.MIGRATION_COMPLETED for s in steps))
        kinds = [s.kind for s in steps]
        assert kinds == [
            StepKind.PLACED,
            StepKind.MIGRATION_STARTED,
            StepKind.PLACED,
            StepKind.CONVERGENCE_WAITING,
            StepKind.CONVERGED,
            StepKind.REMOVED,
            StepKind.MIGRATION_COMPLETED,
        ]
        assert [s.sequence for s in steps] == sorted(s.sequence for s in steps)
        (converged,) = [s for s in steps if s.kind is StepKind.CONVERGED]
        assert [name for name, _ in converged.converged_after] == [
            "test_migration_is_make_before_break.<locals>.routes_installed"
        ]


def test_migration_that_does_not_converge_is_rolled_back() -> None:
    with running_bus() as bus:

        def sidecars_acked(generation: int) -> bool:
            return False

        o = PlacementOrchestrator(bus, [sidecars_acked])
        (old,) = o.place(request()).workloads
        with pytest.raises(PlacementRefused) as refused:
            o.migrate(old.id, MigrationTarget(best=True), timeout_s=0.05, force=True)
        assert refused.value.kind is Refusal.DEADLINE_EXCEEDED
        assert "sidecars_acked" in refused.value.reason and "rolled back" in refused.value.reason
        assert set(bus.state.workloads) == {old.id}
        assert o.status_of(old.id) == ("running", ())


def test_migration_targets() -> None:
    with running_bus() as bus:
        o = PlacementOrchestrator(bus)
        (w,) = o.place(request()).workloads
        assert w.node == "c-n1"
        with pytest.raises(PlacementRefused) as refused:
            o.migrate(w.id, MigrationTarget(node=NodeId("c-n1")))
        assert refused.value.kind is Refusal.FAILED_PRECONDITION
        with pytest.raises(PlacementRefused) as refused:
            o.migrate(w.id, MigrationTarget(node=NodeId("zz")))
        assert refused.value.kind is Refusal.INVALID_ARGUMENT
        moved = o.migrate(w.id, MigrationTarget(site=SiteId("edge-c")))
        assert moved.new.node == "ec-n1"
        drained = o.migrate(moved.new.id, MigrationTarget(best=True))
        assert drained.new.node == "c-n1"
        (big,) = o.place(request(cpu=1500)).workloads
        with pytest.raises(PlacementRefused) as refused:
            o.migrate(big.id, MigrationTarget(node=NodeId("ec-n1")))
        assert refused.value.kind is Refusal.RESOURCE_EXHAUSTED
        assert refused.value.reason.startswith(f"cannot move {big.id} to ec-n1: 0/1 candidate nodes are available: ")
        assert "Insufficient cpu on 1 node (needs 1500m; most free: 1000m at ec-n1)" in refused.value.reason


def test_a_workload_being_migrated_cannot_be_evicted_or_migrated_again() -> None:
    release = threading.Event()
    with running_bus() as bus:
        o = PlacementOrchestrator(bus, [lambda generation: release.is_set()])
        (w,) = o.place(request()).workloads
        errors: list[Exception] = []
        mover = threading.Thread(target=lambda: o.migrate(w.id, MigrationTarget(best=True), force=True), daemon=True)
        mover.start()
        wait_until(lambda: o.status_of(w.id)[0] == "migrating")
        for action in (lambda: o.evict(w.id), lambda: o.migrate(w.id, MigrationTarget(best=True), force=True)):
            try:
                action()
            except PlacementRefused as exc:
                errors.append(exc)
        release.set()
        mover.join(5)
        assert [e.kind for e in errors] == [Refusal.FAILED_PRECONDITION] * 2  # type: ignore[attr-defined]
        assert "is part of migration mig-1" in str(errors[0])


def test_failover_loop_replaces_instances_of_a_failed_node_and_retries_stranded_ones() -> None:
    with running_bus() as bus:
        o = PlacementOrchestrator(bus)
        steps = collect(o, bus)
        loop = FailoverLoop(o)
        bus.subscribe(loop)
        loop.start()
        try:
            edge = o.place(request(near=("u3",), slo=1, cpu=600)).workloads[0]  # only ec-n1 is that close
            spill = o.place(request(near=("u3",), slo=13.5, cpu=300, tiers=())).workloads[0]
            assert (edge.node, spill.node) == ("ec-n1", "c-n1")
            moved = o.migrate(spill.id, MigrationTarget(node=NodeId("ec-n1"))).new
            bus.publish(NodeWentDown(NodeId("ec-n1"))).result(5)
            # the one with room elsewhere within its SLO spills to the cloud; the other is stranded
            wait_until(lambda: moved.id not in bus.state.workloads)
            replacement = [w for w in bus.state.workloads.values() if w.id not in (edge.id, moved.id)]
            assert [w.node for w in replacement] == ["c-n1"]
            wait_until(lambda: o.status_of(edge.id)[0] == "stranded")
            assert "node ec-n1 is down" in o.status_of(edge.id)[1][0]
            # (the status is set just before the step is emitted, and steps reach the drain thread later)
            wait_until(lambda: any(s.kind is StepKind.UNSCHEDULABLE for s in steps))
            unschedulable = [s for s in steps if s.kind is StepKind.UNSCHEDULABLE]
            assert len(unschedulable) == 1 and unschedulable[0].workload == edge
            # capacity comes back: the node itself; the stranded instance is fine where it is again
            bus.publish(NodeCameUp(NodeId("ec-n1"))).result(5)
            wait_until(lambda: o.status_of(edge.id)[0] == "running")
            assert bus.state.workloads[edge.id].node == "ec-n1"
        finally:
            loop.stop()


def test_a_stranded_instance_moves_once_another_node_has_room() -> None:
    with running_bus() as bus:
        o = PlacementOrchestrator(bus)
        loop = FailoverLoop(o)
        bus.subscribe(loop)
        loop.start()
        try:
            (w,) = o.place(request(near=("u1",), slo=3, cpu=2000, candidates=frozenset({NodeId("ea-n1")}))).workloads
            blocker = Workload(WorkloadId("db-9"), ServiceName("db"), SpiffeId(""), Resources(4000, 1), NodeId("m-n1"))
            bus.publish(WorkloadPlaced(blocker)).result(5)
            bus.publish(NodeWentDown(NodeId("ea-n1"))).result(5)
            wait_until(lambda: o.status_of(w.id)[0] == "stranded")
            o.evict(WorkloadId("db-9"))
            wait_until(lambda: w.id not in bus.state.workloads)
            (replacement,) = bus.state.workloads.values()
            assert replacement.node == "m-n1"
        finally:
            loop.stop()


def test_instances_sharing_a_node_get_ports_of_their_own() -> None:
    with running_bus() as bus:
        o = PlacementOrchestrator(bus)
        web_port = bus.state.services[ServiceName("web")].port
        first, second = o.place(request(candidates=frozenset({NodeId("c-n1")}), replicas=2)).workloads
        assert (first.node, second.node) == ("c-n1", "c-n1")
        assert {first.port, second.port} == {web_port, web_port + 1}
        # Moving a third one in takes the next free port; moving one out frees its port for the next.
        (third,) = o.place(request(candidates=frozenset({NodeId("ea-n1")}))).workloads
        moved = o.migrate(third.id, MigrationTarget(node=NodeId("c-n1")))
        assert moved.new.port == web_port + 2
        o.evict(first.id)
        (fourth,) = o.place(request(candidates=frozenset({NodeId("c-n1")}))).workloads
        assert fourth.port == web_port


def test_first_free_port() -> None:
    from placement.orchestrator import first_free_port

    assert first_free_port(8080, set()) == 8080
    assert first_free_port(8080, {8080, 8081}) == 8082
    assert first_free_port(0, {1}) == 0
    assert first_free_port(65535, {65535}) == 1024
    with pytest.raises(PlacementRefused):
        first_free_port(80, set(range(80, 65536)) | set(range(1024, 65536)))


def test_a_migration_asks_scoped_probes_about_its_new_instance() -> None:
    from placement.convergence import NamedProbe

    asked: list[frozenset[str]] = []

    def new_instance_served(_generation: int, workloads: frozenset[str]) -> bool:
        asked.append(workloads)
        return True

    with running_bus() as bus:
        o = PlacementOrchestrator(bus, [NamedProbe("sidecars", lambda _g: False, new_instance_served)])
        (old,) = o.place(request()).workloads
        moved = o.migrate(old.id, MigrationTarget(best=True), timeout_s=2, force=True)
        assert asked and all(ws == {moved.new.id} for ws in asked)


def test_after_a_failover_no_two_instances_on_a_node_share_a_port() -> None:
    with running_bus() as bus:
        o = PlacementOrchestrator(bus)
        for node in ("ea-n1", "eb-n1", "ec-n1"):
            o.place(request(candidates=frozenset({NodeId(node)})))
        # Both lose their node and only c-n1 is left to take them: one plan, two moves to one node.
        for node in [n for n in bus.state.nodes if n not in ("ec-n1", "c-n1")]:
            bus.publish(NodeWentDown(NodeId(node))).result(timeout=5)
        plan = o.fail_over()
        assert [m.to.node for m in plan.moves] == ["c-n1", "c-n1"]
        state = bus.state
        web_port = state.services[ServiceName("web")].port
        seen: set[tuple[str, int]] = set()
        for w in state.workloads.values():
            key = (str(w.node), w.port or web_port)
            assert key not in seen, f"two instances on {key}"
            seen.add(key)


def test_failover_replaces_an_instance_reported_unhealthy_and_withdraws_it() -> None:
    from netmodel.events import WorkloadHealthChanged

    with running_bus() as bus:
        o = PlacementOrchestrator(bus)
        steps = collect(o, bus)
        loop = FailoverLoop(o)
        bus.subscribe(loop)
        loop.start()
        try:
            first, second = o.place(request(replicas=2)).workloads
            bus.publish(WorkloadHealthChanged(first.id, healthy=False, reason="app exited (-9)")).result(5)
            wait_until(lambda: first.id not in bus.state.workloads)
            replacement = [w for w in bus.state.workloads.values() if w.id != second.id]
            assert len(replacement) == 1 and replacement[0].id not in (first.id, second.id)
            assert bus.state.unhealthy == {}
            # (steps reach the drain thread after the model change the test saw)
            wait_until(lambda: any(s.kind is StepKind.FAILOVER_STARTED for s in steps))
            started = [s for s in steps if s.kind is StepKind.FAILOVER_STARTED]
            assert len(started) == 1 and "unhealthy" in started[0].message and first.id in started[0].message
            wait_until(lambda: any(s.kind is StepKind.MIGRATION_COMPLETED for s in steps))
        finally:
            loop.stop()


class _TimedPasses:
    """An orchestrator whose every failover pass takes ``pass_s`` and returns ``plan``."""

    def __init__(self, plan: FailoverPlan, pass_s: float) -> None:
        self.plan, self.pass_s, self.passes = plan, pass_s, 0

    def fail_over(self) -> FailoverPlan:
        self.passes += 1
        time.sleep(self.pass_s)
        return self.plan


@pytest.mark.parametrize("moves", [False, True])
def test_failover_passes_that_only_strand_take_at_most_their_share_of_the_time(moves: bool) -> None:
    """Woken without pause (a fabric coming up), passes that move nothing and strand instances are spaced so
    they take at most STRANDED_PASS_SHARE of the time; passes that move something follow each other."""
    from placement.failover import Move, Stranded
    from placement.orchestrator import STRANDED_PASS_SHARE

    plan = FailoverPlan(moves=(cast(Move, object()),)) if moves else FailoverPlan(stranded=(cast(Stranded, object()),))
    orchestrator = _TimedPasses(plan, pass_s=0.02)
    loop = FailoverLoop(cast(PlacementOrchestrator, orchestrator))
    loop.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            loop.wake()
            time.sleep(0.002)
    finally:
        loop.stop()
    most = 1.0 / orchestrator.pass_s  # back to back
    if moves:
        assert orchestrator.passes >= most / 2
    else:
        assert 1 <= orchestrator.passes <= most * STRANDED_PASS_SHARE + 1
