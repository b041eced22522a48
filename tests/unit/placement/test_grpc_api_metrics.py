"""The placement API tells its observer each Place, Migrate and Evict and its outcome: ok, or the status
code of the refusal (a bounded label set); reads (Get, List) are not decisions and are not reported."""

from __future__ import annotations

import grpc
import pytest

from placement._pb import placement_pb2 as pb
from tests.unit.placement.helpers import served_api


def test_decisions_and_refusals_reach_the_observer_with_their_status_code() -> None:
    seen: list[tuple[str, str, str]] = []

    def observe(operation: str, outcome: str, rejected_by: str) -> None:
        seen.append((operation, outcome, rejected_by))

    with served_api(observe=observe) as (_bus, _server, stub):
        placed = stub.Place(pb.PlaceRequest(service="web"))
        with pytest.raises(grpc.RpcError) as refused:
            stub.Place(pb.PlaceRequest(service="web", cpu_millis=10_000_000))
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError):
            stub.Place(pb.PlaceRequest(service="nope"))
        stub.Get(pb.GetRequest(workload_id=placed.workloads[0].id))
        stub.Evict(pb.EvictRequest(workload_id=placed.workloads[0].id))
        with pytest.raises(grpc.RpcError):
            stub.Evict(pb.EvictRequest(workload_id=placed.workloads[0].id))
    assert seen == [
        ("place", "ok", ""),
        ("place", "RESOURCE_EXHAUSTED", "ResourcesFit"),
        ("place", "INVALID_ARGUMENT", ""),
        ("evict", "ok", ""),
        ("evict", "NOT_FOUND", ""),
    ]
