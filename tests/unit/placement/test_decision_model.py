"""The decision model a Place keeps for the next: advanced by what it placed, equal to one built anew,
rebuilt after any other change; and the failover passes a Place burst no longer costs."""

from __future__ import annotations

import threading

import numpy as np

from netmodel.events import (
    LinkLatencyMeasured,
    LinkLoadMeasured,
    LinkWentDown,
    NodeWentDown,
    WorkloadHealthChanged,
    WorkloadPlaced,
    WorkloadRemoved,
    WorkloadStarting,
)
from netmodel.ids import NodeId, PortNo, ServiceName, SpiffeId, SwitchId, WorkloadId
from netmodel.types import LinkId, Resources, Workload
from placement.decision_model import DecisionModel, highest_numbers, ports_in_use
from placement.orchestrator import PlacementOrchestrator
from placement.scheduler import DEFAULT_PROFILE, schedule_on
from placement.snapshot import ClusterSnapshot
from placement.synthetic import FabricShape, build_fabric, random_requests
from placement.types import Decision
from tests.unit.placement.helpers import example_state, request, running_bus

SMALL = FabricShape(edge_sites=6, edge_nodes=2, metro_sites=2, metro_nodes=3, cloud_sites=1, cloud_nodes=4, services=3)


def same_counts(a: ClusterSnapshot, b: ClusterSnapshot) -> None:
    assert np.array_equal(a.used_cpu, b.used_cpu)
    assert np.array_equal(a.used_memory, b.used_memory)
    for service in a.state.services:
        assert np.array_equal(a.instances_of(service), b.instances_of(service)), service


def test_a_settled_snapshot_equals_one_built_from_the_model_and_decides_alike() -> None:
    state = build_fabric(SMALL, seed=3)
    kept = DecisionModel(state, reserves=False)
    for k, req in enumerate(random_requests(state, 40, seed=4), start=1):
        outcome = schedule_on(kept.snapshot, req, DEFAULT_PROFILE)
        fresh_outcome = schedule_on(ClusterSnapshot(state), req, DEFAULT_PROFILE)
        assert type(outcome) is type(fresh_outcome)
        if not isinstance(outcome, Decision):
            continue
        assert isinstance(fresh_outcome, Decision)
        assert outcome.assignments[0].node == fresh_outcome.assignments[0].node
        workload = kept.snapshot.candidate_workload(
            state, req, req.service, kept.snapshot.index[outcome.assignments[0].node], k
        )
        workload = workload.__class__(
            WorkloadId(f"{req.service}-{k}"),
            req.service,
            workload.spiffe_id,
            req.resources,
            workload.node,
            port=8000 + k,
        )
        state = state.apply(WorkloadPlaced(workload))
        assert kept.settle(state, [workload])
        assert kept.state is state
        same_counts(kept.snapshot, ClusterSnapshot(state))
        assert kept.ports() == ports_in_use(state)
        assert kept.highest(req.service) == highest_numbers(state)[req.service]


def test_settle_refuses_a_model_with_another_change_in_between() -> None:
    state = build_fabric(SMALL, seed=3)
    kept = DecisionModel(state, reserves=False)
    req = request(service="svc0", cpu=100, memory=64)
    outcome = schedule_on(kept.snapshot, req, DEFAULT_PROFILE)
    assert isinstance(outcome, Decision)
    node = outcome.assignments[0].node
    other = sorted(n for n in state.nodes if n != node)[0]
    workload = Workload(WorkloadId("svc0-1"), req.service, SpiffeId(""), req.resources, node)
    after = state.apply(NodeWentDown(other)).apply(WorkloadPlaced(workload))
    assert not kept.settle(after, [workload])
    assert kept.state is state  # unchanged: the caller builds a new one


def counting_snapshots(monkeypatch: object) -> list[int]:
    built: list[int] = []
    real = DecisionModel

    def counted(*args: object, **kwargs: object) -> DecisionModel:
        built.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("placement.orchestrator.DecisionModel", counted)  # type: ignore[attr-defined]
    return built


def test_places_in_a_row_build_one_model_and_a_change_from_elsewhere_another(monkeypatch: object) -> None:
    built = counting_snapshots(monkeypatch)
    with running_bus() as bus:
        o = PlacementOrchestrator(bus)
        placed = [o.place(request(cpu=10, memory=8)).workloads[0] for _ in range(5)]
        assert len(built) == 1
        assert [w.id for w in placed] == [f"web-{k}" for k in range(1, 6)]
        # two instances on one node never share a port (the kept ports advance with each placement)
        by_node: dict[NodeId, list[int]] = {}
        for w in bus.state.workloads.values():
            assert w.node is not None
            by_node.setdefault(w.node, []).append(w.port)
        assert all(len(ports) == len(set(ports)) for ports in by_node.values())
        node = placed[-1].node
        assert node is not None
        bus.publish(NodeWentDown(node)).result(timeout=5)  # not this orchestrator's change
        after = o.place(request(cpu=10, memory=8)).workloads[0]
        assert len(built) == 2
        assert after.node != node  # decided on the newest model, not the kept one


def test_concurrent_places_never_over_commit_nor_share_an_id() -> None:
    state = example_state()
    with running_bus(state) as bus:
        o = PlacementOrchestrator(bus)
        cpu = 500
        room = sum(n.capacity.cpu_millis // cpu for n in state.nodes.values())
        refused: list[str] = []

        def client() -> None:
            for _ in range(room):
                try:
                    o.place(request(cpu=cpu, memory=1))
                except Exception as exc:  # RESOURCE_EXHAUSTED once full
                    refused.append(str(exc))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        final = bus.state
        assert len(final.workloads) == room  # every node full, none beyond
        for node in final.nodes.values():
            used = sum(w.resources.cpu_millis for w in final.workloads.values() if w.node == node.id)
            assert used <= node.capacity.cpu_millis
        assert len(refused) == 4 * room - room


def test_a_failover_pass_is_skipped_for_its_own_placements_only() -> None:
    with running_bus() as bus:
        o = PlacementOrchestrator(bus)
        o.fail_over()  # nothing displaced, nothing stranded: clean
        seen: list[bool] = []

        class Recorder:
            def on_model_change(self, event: object, state: object) -> None:
                seen.append(o.failover_needed(event, state))  # type: ignore[arg-type]

        bus.subscribe(Recorder())
        mine = o.place(request(cpu=10, memory=8)).workloads[0]
        assert seen == [False]
        foreign = Workload(WorkloadId("web-99"), ServiceName("web"), mine.spiffe_id, Resources(1, 1), mine.node)
        bus.publish(WorkloadPlaced(foreign)).result(timeout=5)  # placed elsewhere (a restore): looked at
        assert seen == [False, True]
        bus.publish(WorkloadRemoved(foreign.id)).result(timeout=5)  # frees room; nobody waits for it
        assert seen == [False, True, False]
        assert mine.node is not None
        bus.publish(NodeWentDown(mine.node)).result(timeout=5)
        assert seen == [False, True, False, True]
        o.fail_over()  # it moves the displaced instance: not clean
        assert o.failover_needed(WorkloadRemoved(mine.id), bus.state)


def test_measurements_wake_no_failover_pass_unless_a_latency_may_help_a_stranded_instance() -> None:
    link = LinkId(SwitchId(1), PortNo(1), SwitchId(2), PortNo(1))
    latency, load = LinkLatencyMeasured(((link, 900),), 1.0), LinkLoadMeasured(((link, 1e6),), 1.0)
    with running_bus() as bus:
        o = PlacementOrchestrator(bus)
        o.fail_over()  # nothing displaced, nothing stranded: clean
        assert not o.failover_needed(latency, bus.state)
        assert not o.failover_needed(load, bus.state)
        assert o.failover_needed(LinkWentDown(link), bus.state), "a link down may cut a node off"
        o._failover_clean = False  # as after a pass that left an instance stranded
        assert o.failover_needed(latency, bus.state), "a lower latency may bring it within its SLO"
        assert not o.failover_needed(load, bus.state)


def test_a_start_and_its_healthy_report_wake_no_failover_pass_but_a_failed_start_does() -> None:
    w = WorkloadId("web-1")
    with running_bus() as bus:
        o = PlacementOrchestrator(bus)
        o.fail_over()  # clean
        assert not o.failover_needed(WorkloadStarting(w, 1.0), bus.state)
        assert not o.failover_needed(WorkloadHealthChanged(w, True, "app listening"), bus.state)
        assert o.failover_needed(WorkloadHealthChanged(w, False, "app exited (1)"), bus.state)
