"""Placement admission by bandwidth: the ``BandwidthFits`` filter, the orchestrator's check before it
publishes, and the refusal through the gRPC API. One edge switch behind a 10 Mbit/s uplink: an instance
of ``video`` on the metro or cloud node reserves the uplink both ways, one on the edge node reserves nothing
(its user shares the switch)."""

from __future__ import annotations

import threading
from dataclasses import replace
from functools import cache

import grpc
import numpy as np
import pytest

from netmodel.bandwidth import admission, plan_reservations
from netmodel.events import WorkloadPlaced
from netmodel.fabric import FabricSpec, build_state
from netmodel.fabric_file import parse_fabric
from netmodel.ids import HostId, NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Resources, Workload
from placement._pb import placement_pb2 as pb
from placement.baseline_profiles import KUBE_DEFAULT_LIKE_PROFILE
from placement.errors import PlacementRefused, Refusal
from placement.orchestrator import MigrationTarget, PlacementOrchestrator
from placement.plugins import BandwidthFits, make_context
from placement.scheduler import DEFAULT_PROFILE, schedule, schedule_batch
from placement.snapshot import ClusterSnapshot
from placement.types import Constraints, PlacementRequest, Unschedulable
from placement.unschedulable import BANDWIDTH, refusal_labels, rejecting_filter
from tests.unit.placement.helpers import running_bus, served_api

FABRIC = b"""
name: bw
subnet: 10.0.0.0/16
sites:
  - {id: edge, tier: edge, region: r, zone: a}
  - {id: metro, tier: metro, region: r, zone: b}
  - {id: cloud, tier: cloud, region: r, zone: c}
switches:
  - {id: e1, dpid: 0x1, site: edge}
  - {id: m1, dpid: 0x2, site: metro}
  - {id: c1, dpid: 0x3, site: cloud}
links:
  - {a: e1, b: m1, latency_ms: 1, bandwidth_mbps: 10}
  - {a: m1, b: c1, latency_ms: 5, bandwidth_mbps: 100}
hosts:
  - {id: u1, switch: e1, ip: 10.0.1.1}
nodes:
  - {id: e-n1, site: edge, switch: e1, cpu_millis: 1000, memory_mib: 1024, ip: 10.0.1.10}
  - {id: m-n1, site: metro, switch: m1, cpu_millis: 4000, memory_mib: 4096, ip: 10.0.2.10}
  - {id: m-n2, site: metro, switch: m1, cpu_millis: 400, memory_mib: 4096, ip: 10.0.2.11}
  - {id: c-n1, site: cloud, switch: c1, cpu_millis: 4000, memory_mib: 4096, ip: 10.0.3.10}
services:
  - {name: video, port: 8000, replicas: 1, cpu_millis: 500, memory_mib: 256, near: [u1], max_latency_ms: 20}
"""
UPLINK_FULL = "link e1:1->m1:1 has 4 of 6 Mbit/s left and no other path has room"
VIDEO = ServiceName("video")


@cache
def spec() -> FabricSpec:
    return parse_fabric(FABRIC, "bw.yaml")


def fabric(bandwidth: float | None = 6.0) -> FabricState:
    state = build_state(spec())
    video = replace(state.services[VIDEO], bandwidth_mbps=bandwidth)
    return replace(state, services={**state.services, VIDEO: video})


def placed(state: FabricState, number: int, node: str, bandwidth: float | None = None) -> FabricState:
    workload = Workload(
        WorkloadId(f"video-{number}"),
        VIDEO,
        SpiffeId(f"spiffe://edgectl.local/svc/video/w/video-{number}"),
        Resources(500, 256),
        NodeId(node),
        port=8000,
        bandwidth_mbps=bandwidth,
    )
    return state.apply(WorkloadPlaced(workload))


def video(cpu: int = 500, bandwidth: float | None = None, replicas: int = 1) -> PlacementRequest:
    constraints = Constraints(max_latency_ms=20.0, near=(HostId("u1"),))
    return PlacementRequest(VIDEO, Resources(cpu, 256), constraints, replicas=replicas, bandwidth_mbps=bandwidth)


def over_committed(state: FabricState) -> list[str]:
    """Whatever breaks the contract in ``state``: a link reserved past its capacity, a demand left unreserved."""
    plan = plan_reservations(state)
    problems = [f"unreserved: {u.demand.key}: {u.reason}" for u in plan.unreserved]
    capacity = {link: attrs.capacity_mbps for link, attrs in state.topology.links.items()}
    problems += [f"{link}: {mbps} > {capacity[link]}" for link, mbps in plan.links().items() if mbps > capacity[link]]
    return problems


# -- the filter ------------------------------------------------------------------------------------------


def test_a_node_behind_a_full_link_is_refused_and_the_link_named() -> None:
    state = placed(fabric(), 1, "m-n1")  # 6 of the uplink's 10 Mbit/s, each way
    ctx = make_context(ClusterSnapshot(state), video())
    ok = BandwidthFits().passes(ctx)
    assert dict(zip(ctx.snapshot.node_ids, ok.tolist(), strict=True)) == {
        "c-n1": False,
        "e-n1": True,
        "m-n1": False,
        "m-n2": False,
    }
    (reason,) = BandwidthFits().explain(ctx, ~ok, ctx.snapshot.all_nodes)
    assert reason == f"3 nodes without the bandwidth (c-n1, m-n1, m-n2): {UPLINK_FULL}"


def test_an_instance_that_reserves_nothing_skips_the_filter() -> None:
    state = placed(fabric(bandwidth=None), 1, "m-n1", bandwidth=10.0)  # the uplink is full
    for request in (video(), video(bandwidth=0.0)):
        ctx = make_context(ClusterSnapshot(state), request)
        assert BandwidthFits().passes(ctx).all()
        assert ctx.bandwidth == {}  # not one node evaluated


def test_only_the_nodes_the_earlier_filters_let_through_are_evaluated() -> None:
    state = placed(fabric(), 1, "m-n1")
    ctx = make_context(ClusterSnapshot(state), video())
    ctx.considered = np.array([False, False, True, False])  # c-n1, e-n1, m-n1, m-n2
    BandwidthFits().passes(ctx)
    assert list(ctx.bandwidth) == [2]


def test_nodes_on_one_switch_are_routed_once_and_answered_alike() -> None:
    # video calls store (1 Mbit/s each way); video-1 on c-n1, store-1 on m-n1; m-n1 and m-n2 share m1.
    state = placed(fabric(), 1, "c-n1")
    callee = replace(state.services[VIDEO], name=ServiceName("store"), port=9000, bandwidth_mbps=None)
    caller = replace(state.services[VIDEO], call_bandwidth=((ServiceName("store"), 1.0),))
    state = replace(state, services={**state.services, VIDEO: caller, callee.name: callee})
    store = Workload(WorkloadId("store-1"), callee.name, SpiffeId(""), Resources(1, 1), NodeId("m-n1"))
    state = state.apply(WorkloadPlaced(store))
    for request in (video(), video(bandwidth=1.0), video(bandwidth=2.0)):
        snapshot = ClusterSnapshot(state)
        base, before = snapshot.bandwidth_base()
        for i in range(len(snapshot)):  # the grouped answer is each node's own
            alone = snapshot.candidate_workload(base, request, VIDEO, i, len(base.workloads))
            expected = admission(before, plan_reservations(base.apply(WorkloadPlaced(alone)), before))
            got = snapshot.bandwidth_admission(request, i)
            assert (got and got.message) == (expected and expected.message), (request, snapshot.node_ids[i])
        assert len(snapshot._admitted) == 3  # c1 (a caller there already), e1, m1 (two nodes, one routing)


def test_the_request_may_reserve_less_than_its_service_declares() -> None:
    state = placed(fabric(), 1, "m-n1")
    ctx = make_context(ClusterSnapshot(state), video(bandwidth=4.0))  # exactly what is left
    assert BandwidthFits().passes(ctx).all()


# -- the scheduler -------------------------------------------------------------------------------------------


def test_placed_where_the_link_has_room_when_the_preferred_nodes_are_behind_a_full_one() -> None:
    without = placed(fabric(bandwidth=None), 1, "m-n1")
    first = schedule(without, video())
    assert not isinstance(first, Unschedulable) and first.assignments[0].node != "e-n1"  # edge is scarce
    decision = schedule(placed(fabric(), 1, "m-n1"), video())
    assert not isinstance(decision, Unschedulable)
    assert decision.assignments[0].node == "e-n1"


def test_refused_with_the_link_named_when_no_node_fits() -> None:
    state = placed(fabric(), 1, "m-n1")
    outcome = schedule(state, video(cpu=2000))  # too big for the edge node
    assert isinstance(outcome, Unschedulable)
    assert UPLINK_FULL in outcome.message
    assert rejecting_filter(ClusterSnapshot(state), video(cpu=2000), DEFAULT_PROFILE) == BANDWIDTH


def test_replicas_of_one_request_count_each_other() -> None:
    outcome = schedule(fabric(), video(bandwidth=4.0, replicas=3))
    assert not isinstance(outcome, Unschedulable)
    nodes = [a.node for a in outcome.assignments]
    assert nodes.count("e-n1") == 1  # 4 + 4 through the uplink, the third has 2 left
    state = fabric()
    for k, node in enumerate(nodes, 1):
        state = placed(state, k, node, bandwidth=4.0)
    assert over_committed(state) == []


def test_batch_placement_respects_bandwidth() -> None:
    state = fabric()
    snapshot = ClusterSnapshot(state)
    result = schedule_batch(snapshot, [video(bandwidth=4.0, cpu=600) for _ in range(4)])
    nodes = [d.assignments[0].node for d in result.decisions]
    assert len(nodes) == 3 and nodes.count("e-n1") == 1  # the edge node holds one of these, the uplink two
    (refused,) = result.unschedulable
    assert "link e1:1->m1:1 has 2 of 4 Mbit/s left" in refused.message
    for k, node in enumerate(nodes, 1):
        state = placed(state, k, node, bandwidth=4.0)
    assert over_committed(state) == []


def test_baselines_without_the_filter_still_label_bandwidth_refusals() -> None:
    assert BandwidthFits() in DEFAULT_PROFILE.filters
    assert BandwidthFits() not in KUBE_DEFAULT_LIKE_PROFILE.filters
    assert BANDWIDTH in refusal_labels(KUBE_DEFAULT_LIKE_PROFILE)


# -- the orchestrator ------------------------------------------------------------------------------------------


def test_the_orchestrator_refuses_what_a_profile_without_the_filter_chose() -> None:
    with running_bus(placed(fabric(), 1, "m-n1")) as bus:
        orchestrator = PlacementOrchestrator(bus, profile=KUBE_DEFAULT_LIKE_PROFILE)
        before = bus.state
        with pytest.raises(PlacementRefused) as refused:
            orchestrator.place(video(cpu=2000))
        assert refused.value.kind is Refusal.RESOURCE_EXHAUSTED and refused.value.rejected_by == BANDWIDTH
        assert refused.value.reason.endswith(UPLINK_FULL)
        assert bus.state.workloads == before.workloads
        result = orchestrator.place(video(), DEFAULT_PROFILE)
        assert [w.node for w in result.workloads] == ["e-n1"]


def test_concurrent_placements_never_over_commit_a_link() -> None:
    with running_bus(fabric(bandwidth=3.0)) as bus:
        orchestrator = PlacementOrchestrator(bus)
        outcomes: list[str] = []
        start = threading.Barrier(8)

        def place(k: int) -> None:
            start.wait()
            profile = KUBE_DEFAULT_LIKE_PROFILE if k % 2 else DEFAULT_PROFILE
            try:
                orchestrator.place(video(), profile)
                outcomes.append("ok")
            except PlacementRefused as exc:
                outcomes.append(exc.kind.value)

        threads = [threading.Thread(target=place, args=(k,)) for k in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        state = bus.state
    # 3 fit behind the uplink (9 of 10 Mbit/s), 2 on the edge node; a kube-like one that comes once the
    # uplink is full picks a node behind it anyway and is refused, so how many in all depends on the order.
    assert len(outcomes) == 8 and set(outcomes) <= {"ok", "RESOURCE_EXHAUSTED"}
    assert 3 <= outcomes.count("ok") <= 5 and len(state.workloads) == outcomes.count("ok")
    assert over_committed(state) == []


def test_a_migration_counts_both_instances_until_the_old_one_is_withdrawn() -> None:
    # Without the old instance's 6 Mbit/s the new one would fit; with it, 4 are left.
    for profile in (DEFAULT_PROFILE, KUBE_DEFAULT_LIKE_PROFILE):
        with running_bus(placed(fabric(), 1, "m-n1")) as bus:
            orchestrator = PlacementOrchestrator(bus, profile=profile)
            with pytest.raises(PlacementRefused) as refused:
                orchestrator.migrate(WorkloadId("video-1"), MigrationTarget(node=NodeId("c-n1")))
            assert refused.value.kind is Refusal.RESOURCE_EXHAUSTED, profile.name
            assert UPLINK_FULL in refused.value.reason, profile.name
            assert set(bus.state.workloads) == {"video-1"}
    with running_bus(placed(fabric(), 1, "m-n1", bandwidth=4.0)) as bus:  # 4 + 4 fit: it moves
        orchestrator = PlacementOrchestrator(bus)
        result = orchestrator.migrate(WorkloadId("video-1"), MigrationTarget(node=NodeId("c-n1")))
        assert result.new.node == "c-n1" and result.new.bandwidth_mbps == 4.0
        assert over_committed(result.state) == []


# -- the gRPC API ----------------------------------------------------------------------------------------------


def test_grpc_refuses_for_bandwidth_with_resource_exhausted_naming_the_link() -> None:
    with served_api(placed(fabric(), 1, "m-n1")) as (_bus, _server, stub):
        with pytest.raises(grpc.RpcError) as refused:
            stub.Place(pb.PlaceRequest(service="video", cpu_millis=2000))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert UPLINK_FULL in refused.value.details()


def test_grpc_carries_the_requested_bandwidth_onto_the_workload() -> None:
    with served_api(fabric()) as (bus, _server, stub):
        response = stub.Place(pb.PlaceRequest(service="video", bandwidth_mbps=2.5))
        (workload,) = response.workloads
        assert workload.HasField("bandwidth_mbps") and workload.bandwidth_mbps == 2.5
        assert bus.state.workloads[WorkloadId(workload.id)].bandwidth_mbps == 2.5
        listed = stub.List(pb.ListRequest()).workloads
        assert [w.bandwidth_mbps for w in listed] == [2.5]
        target = "c-n1" if workload.node != "c-n1" else "m-n1"
        moved = stub.Migrate(pb.MigrateRequest(workload_id=workload.id, node=target))
        assert moved.workload.bandwidth_mbps == 2.5
        assert bus.state.workloads[WorkloadId(moved.workload.id)].bandwidth_mbps == 2.5
        declared = stub.Place(pb.PlaceRequest(service="video")).workloads[0]
        assert declared.bandwidth_mbps == 6.0  # its service's
        assert bus.state.workloads[WorkloadId(declared.id)].bandwidth_mbps is None  # follows the service
        none = stub.Place(pb.PlaceRequest(service="video", bandwidth_mbps=0)).workloads[0]
        assert not none.HasField("bandwidth_mbps")


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), 1e6 + 1])
def test_grpc_refuses_an_invalid_bandwidth(value: float) -> None:
    with served_api(fabric()) as (bus, _server, stub):
        before = bus.state
        with pytest.raises(grpc.RpcError) as refused:
            stub.Place(pb.PlaceRequest(service="video", bandwidth_mbps=value))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "bandwidth_mbps" in refused.value.details()
        assert bus.state is before


def test_cli_places_with_a_bandwidth_and_lists_it(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from placement.cli import register

    def run(argv: list[str]) -> int:
        parser = argparse.ArgumentParser(prog="edgectl")
        register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(argv)
        return int(args.placement_handler(args))

    with served_api(placed(fabric(), 1, "m-n1")) as (bus, server, _stub):
        api = ["--api", server.address]
        assert run(["place", "--service", "video", "--bandwidth-mbps", "2.5", *api]) == 0
        (new,) = set(bus.state.workloads) - {"video-1"}
        assert bus.state.workloads[new].bandwidth_mbps == 2.5
        capsys.readouterr()
        assert run(["workloads", *api]) == 0
        out = capsys.readouterr().out
        assert "bandwidth" in out and "2.5 Mbit/s" in out and "6 Mbit/s" in out
        assert run(["place", "--service", "video", "--cpu-millis", "2000", *api]) == 1
        err = capsys.readouterr().err
        assert err.startswith("edgectl place: RESOURCE_EXHAUSTED: ")
        assert "link e1:1->m1:1 has 1.5 of 6 Mbit/s left" in err  # the 2.5 went through it too
        assert run(["place", "--service", "video", "--bandwidth-mbps", "-3", *api]) == 1
        assert "INVALID_ARGUMENT: bandwidth_mbps must be >= 0" in capsys.readouterr().err


def test_the_replica_pass_leaves_what_the_network_refuses_for_a_later_pass() -> None:
    state = fabric()
    state = replace(state, services={**state.services, VIDEO: replace(state.services[VIDEO], replicas=3)})
    with running_bus(state) as bus:
        orchestrator = PlacementOrchestrator(bus, profile=KUBE_DEFAULT_LIKE_PROFILE)  # no BandwidthFits
        done = orchestrator.reconcile_replicas()
        assert 1 <= len(done.placed) < 3
        assert over_committed(bus.state) == []


def test_bandwidth_refusals_are_labelled_for_metrics_whichever_decided() -> None:
    seen: list[tuple[str, str, str]] = []

    def observe(operation: str, outcome: str, rejected_by: str) -> None:
        seen.append((operation, outcome, rejected_by))

    with served_api(placed(fabric(), 1, "m-n1"), observe=observe) as (_bus, _server, stub):
        for profile in ("", "kube-default-like"):  # the filter; the orchestrator's check before publishing
            with pytest.raises(grpc.RpcError) as refused:
                stub.Place(pb.PlaceRequest(service="video", cpu_millis=2000, profile=profile))
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert UPLINK_FULL in refused.value.details()
    assert seen == [("place", "RESOURCE_EXHAUSTED", BANDWIDTH)] * 2


def test_an_instance_whose_node_went_away_before_publishing_is_refused_not_an_internal_error() -> None:
    with running_bus(fabric()) as bus:
        orchestrator = PlacementOrchestrator(bus)
        ghost = Workload(
            WorkloadId("video-9"), ServiceName("video"), SpiffeId(""), Resources(1, 1), NodeId("gone"), 8554
        )
        with orchestrator._lock, pytest.raises(PlacementRefused) as refused:
            orchestrator._publish_placed(ghost)
        assert refused.value.kind is Refusal.FAILED_PRECONDITION and "refused" in refused.value.reason
