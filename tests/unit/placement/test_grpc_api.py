"""The placement gRPC API through a real server on 127.0.0.1 and a real client channel."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from netmodel.events import NodeWentDown
from netmodel.ids import NodeId
from placement._pb import placement_pb2 as pb
from tests.unit.placement.helpers import served_api


def read_all(call: object, into: list[pb.PlacementEvent]) -> None:
    """Read a Watch stream until it ends or is cancelled."""
    try:
        for event in call:  # type: ignore[attr-defined]
            into.append(event)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.CANCELLED, exc


def code_of(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    raise AssertionError("the call succeeded")


def test_place_get_list_evict() -> None:
    with served_api() as (bus, _server, stub):
        placed = stub.Place(pb.PlaceRequest(service="web", replicas=2))
        assert [(w.id, w.node) for w in placed.workloads] == [("web-1", "m-n1"), ("web-2", "ea-n1")]
        web1 = placed.workloads[0]
        assert web1.site == "metro" and web1.tier == pb.TIER_METRO and web1.status == "running"
        assert dict(web1.latency_ms) == {"u1": 3.0, "u2": 2.0}
        assert web1.constraints.max_latency_ms == 5 and list(web1.constraints.near) == ["u1", "u2"]
        assert web1.spiffe_id == "spiffe://edgectl.local/svc/web/w/web-1"
        assert placed.generation == bus.state.generation
        assert stub.Get(pb.GetRequest(workload_id="web-2")).node == "ea-n1"
        assert [w.id for w in stub.List(pb.ListRequest(node="ea-n1")).workloads] == ["web-2"]
        evicted = stub.Evict(pb.EvictRequest(workload_id="web-2"))
        assert evicted.workload.id == "web-2" and set(bus.state.workloads) == {"web-1"}


def test_dry_run_changes_nothing() -> None:
    with served_api() as (bus, _server, stub):
        before = bus.state
        response = stub.Place(pb.PlaceRequest(service="db", dry_run=True))
        assert response.generation == 0 and response.workloads[0].node == "c-n1"
        assert bus.state is before
        # nor does it use up an id: the real Place gets the one the dry run showed
        assert response.workloads[0].id == "db-1"
        assert stub.Place(pb.PlaceRequest(service="db")).workloads[0].id == "db-1"


@pytest.mark.parametrize(
    ("request_", "code", "text"),
    [
        (pb.PlaceRequest(service="web", cpu_millis=-5), grpc.StatusCode.INVALID_ARGUMENT, "cpu_millis must be >= 0"),
        (pb.PlaceRequest(service="nope"), grpc.StatusCode.INVALID_ARGUMENT, "unknown service 'nope'"),
        (
            pb.PlaceRequest(service="web", constraints=pb.Constraints(tiers=[9])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown tier 9",
        ),
        (
            pb.PlaceRequest(
                service="web", constraints=pb.Constraints(anti_affinity=[pb.AffinityTerm(service="db", scope=5)])
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown scope 5",
        ),
        (
            pb.PlaceRequest(service="web", constraints=pb.Constraints(max_latency_ms=1, near=["u3"]), cpu_millis=1500),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "0/6 nodes are available: 5 nodes beyond max_latency_ms=1 from host u3; Insufficient cpu on 1 node",
        ),
    ],
)
def test_place_refusals_have_the_right_code_and_reason(
    request_: pb.PlaceRequest, code: grpc.StatusCode, text: str
) -> None:
    with served_api() as (bus, _server, stub):
        before = bus.state
        got_code, details = code_of(lambda: stub.Place(request_))
        assert got_code == code and text in details, details
        assert bus.state is before


def test_latency_reason_names_the_best_node() -> None:
    with served_api() as (_bus, _server, stub):
        code, details = code_of(
            lambda: stub.Place(
                pb.PlaceRequest(service="web", constraints=pb.Constraints(max_latency_ms=2, near=["u1", "u3"]))
            )
        )
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details == (
            "0/6 nodes are available: no node satisfies max_latency_ms=2 from hosts u1, u3: "
            "best is 3 ms (from u1) at m-n1"
        )


def test_not_found_and_failed_precondition() -> None:
    with served_api() as (_bus, _server, stub):
        for call in (
            lambda: stub.Get(pb.GetRequest(workload_id="web-9")),
            lambda: stub.Evict(pb.EvictRequest(workload_id="web-9")),
            lambda: stub.Migrate(pb.MigrateRequest(workload_id="web-9", best=True)),
        ):
            assert code_of(call) == (grpc.StatusCode.NOT_FOUND, "no workload 'web-9'")
        (w,) = stub.Place(pb.PlaceRequest(service="db")).workloads
        assert code_of(lambda: stub.Migrate(pb.MigrateRequest(workload_id=w.id, node=w.node))) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            f"{w.id} is already on {w.node}",
        )
        assert code_of(lambda: stub.Migrate(pb.MigrateRequest(workload_id=w.id)))[0] == grpc.StatusCode.INVALID_ARGUMENT
        assert (
            code_of(lambda: stub.Migrate(pb.MigrateRequest(workload_id=w.id, best=False)))[0]
            == grpc.StatusCode.INVALID_ARGUMENT
        )
        assert code_of(lambda: stub.Migrate(pb.MigrateRequest(workload_id=w.id, node_or_site="mars"))) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "no node or site is called 'mars'",
        )
        code, _ = code_of(lambda: stub.Migrate(pb.MigrateRequest(workload_id=w.id, best=True, timeout_s=-1)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_migrate_to_a_site_by_name_and_watch_every_step() -> None:
    with served_api() as (_bus, server, stub):
        (w,) = stub.Place(pb.PlaceRequest(service="web")).workloads
        events: list[pb.PlacementEvent] = []
        call = stub.Watch(pb.WatchRequest(include_existing=True))
        reader = threading.Thread(target=read_all, args=(call, events), daemon=True)
        reader.start()
        deadline = time.monotonic() + 5
        while server.events.watchers == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        moved = stub.Migrate(pb.MigrateRequest(workload_id=w.id, node_or_site="edge-b"))
        assert moved.workload.node == "eb-n1" and moved.from_workload_id == w.id
        while len(events) < 7 and time.monotonic() < deadline:
            time.sleep(0.01)
        call.cancel()
        reader.join(5)
        kinds = [pb.PlacementEvent.Kind.Name(e.kind) for e in events]
        assert (
            kinds
            == [
                "KIND_PLACED",  # existing
                "KIND_MIGRATION_STARTED",
                "KIND_PLACED",
                "KIND_CONVERGENCE_WAITING",
                "KIND_CONVERGED",
                "KIND_REMOVED",
                "KIND_MIGRATION_COMPLETED",
            ][: len(kinds)]
            and len(kinds) == 7
        )
        assert events[0].message == "already placed" and events[0].workload.id == w.id
        assert {e.migration_id for e in events[1:]} - {""} == {moved.migration_id}
        assert events[-1].workload.id == moved.workload.id and events[-1].from_workload_id == w.id


def test_a_node_failure_is_watched_and_re_placed() -> None:
    with served_api() as (bus, server, stub):
        (w,) = stub.Place(pb.PlaceRequest(service="db")).workloads
        assert w.node == "c-n1"
        events: list[pb.PlacementEvent] = []
        call = stub.Watch(pb.WatchRequest())
        threading.Thread(target=read_all, args=(call, events), daemon=True).start()
        deadline = time.monotonic() + 5
        while server.events.watchers == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        bus.publish(NodeWentDown(NodeId("c-n1"))).result(5)
        while w.id in bus.state.workloads and time.monotonic() < deadline:
            time.sleep(0.01)
        (replacement,) = stub.List(pb.ListRequest()).workloads
        assert replacement.node == "c-n2"
        while (
            not any(e.kind == pb.PlacementEvent.KIND_MIGRATION_COMPLETED for e in events)
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        call.cancel()
        assert events[0].kind == pb.PlacementEvent.KIND_FAILOVER_STARTED
        assert "node c-n1 is down" in events[0].message


def test_unknown_fields_and_undecodable_bytes_are_invalid_arguments() -> None:
    with served_api() as (bus, server, _stub):
        channel = grpc.insecure_channel(server.address)
        place = channel.unary_unary("/edgectl.placement.v1.Placement/Place")
        request = pb.PlaceRequest(service="web").SerializeToString()
        with_unknown = request + b"\xa8\x06\x01"  # field 101, varint 1
        constraints = pb.Constraints(near=["u1"]).SerializeToString() + b"\xf8\x01\x01"  # + field 31
        nested_unknown = request + b"\x22" + bytes([len(constraints)]) + constraints  # as field 4
        for payload, text in (
            (with_unknown, "fields this server does not know (field numbers 101)"),
            (b"\xff\xff\xff", "request is not a valid edgectl.placement.v1.PlaceRequest"),
            (nested_unknown, "constraints.31"),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                place(payload, timeout=5)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert text in refused.value.details()
        channel.close()
        assert not bus.state.workloads


def test_health_and_reflection() -> None:
    with served_api() as (_bus, server, _stub):
        channel = grpc.insecure_channel(server.address)
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "edgectl.placement.v1.Placement"):
            status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(
            reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        )
        names = {s.name for s in answers[0].list_services_response.service}
        assert "edgectl.placement.v1.Placement" in names and "grpc.health.v1.Health" in names
        answers = list(
            reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="edgectl.placement.v1.Placement")])
            )
        )
        proto = descriptor_pb2.FileDescriptorProto.FromString(
            answers[0].file_descriptor_response.file_descriptor_proto[0]
        )
        assert proto.name == "edgectl/placement/v1/placement.proto"
        channel.close()


def test_a_port_in_use_is_an_os_error() -> None:
    with served_api() as (bus, server, _stub):
        from placement.grpc_api import start_placement_api

        with pytest.raises(OSError):
            start_placement_api(bus, "127.0.0.1", server.port)


def test_changes_are_answered_once_durable_and_a_failed_save_is_unavailable() -> None:
    asked: list[int] = []
    failing = threading.Event()

    def durable(generation: int) -> str | None:
        asked.append(generation)
        return "cannot save placements to /x: disk full" if failing.is_set() else None

    with served_api(durable=durable) as (_bus, _server, stub):
        placed = stub.Place(pb.PlaceRequest(service="db"))
        assert asked == [placed.generation]
        stub.Place(pb.PlaceRequest(service="db", dry_run=True))  # changes nothing: waits for nothing
        moved = stub.Migrate(pb.MigrateRequest(workload_id="db-1", node="c-n2"), timeout=10)
        assert asked[-1] == moved.removed_generation
        evicted = stub.Evict(pb.EvictRequest(workload_id=moved.workload.id))
        assert asked[-1] == evicted.generation and len(asked) == 3
        failing.set()
        code, details = code_of(lambda: stub.Place(pb.PlaceRequest(service="db")))
        assert code == grpc.StatusCode.UNAVAILABLE
        assert "db-3 is applied but not saved" in details and "disk full" in details
