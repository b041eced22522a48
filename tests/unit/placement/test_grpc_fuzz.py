"""Hypothesis over request fields, through the real gRPC server: only proper status codes come back,
and a refused request leaves the model exactly as it was (the same state object: not even a no-op
event was applied)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from placement._pb import placement_pb2 as pb
from tests.unit.placement.helpers import served_api

PROPER = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}

names = st.one_of(
    st.sampled_from(["web", "api", "db", "u1", "u2", "u3", "ea-n1", "c-n1", "edge-a", "cloud", "web-1", "best"]),
    st.text(max_size=12),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=300),
)
int64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-10, 5000))
doubles = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0.1, 20))
enums = st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(0, 4))


@st.composite
def place_requests(draw: st.DrawFn) -> pb.PlaceRequest:
    terms = st.lists(st.builds(pb.AffinityTerm, service=names, scope=enums), max_size=3)
    constraints = pb.Constraints(
        tiers=draw(st.lists(enums, max_size=4)),
        near=draw(st.lists(names, max_size=4)),
        affinity=draw(terms),
        anti_affinity=draw(terms),
    )
    if draw(st.booleans()):
        constraints.max_latency_ms = draw(doubles)
    request = pb.PlaceRequest(
        service=draw(names),
        constraints=constraints,
        replicas=draw(st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 4))),
        profile=draw(st.sampled_from(["", "default", "latency-first", "nope"])),
        dry_run=draw(st.booleans()),
    )
    if draw(st.booleans()):
        request.cpu_millis = draw(int64)
    if draw(st.booleans()):
        request.memory_mib = draw(int64)
    return request


@st.composite
def migrate_requests(draw: st.DrawFn) -> pb.MigrateRequest:
    request = pb.MigrateRequest(workload_id=draw(names), timeout_s=draw(st.one_of(doubles, st.just(0.0))))
    target = draw(st.sampled_from(["node", "site", "best", "node_or_site", None]))
    if target == "best":
        request.best = draw(st.booleans())
    elif target is not None:
        setattr(request, target, draw(names))
    return request


@pytest.fixture(scope="module")
def api() -> Iterator[tuple[object, object, object]]:
    with served_api(convergence_timeout_s=0.5) as served:
        yield served


def call(method: object, request: object) -> grpc.StatusCode:
    try:
        method(request, timeout=10)  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(request=place_requests())
def test_place_fuzz(api: tuple[object, object, object], request: pb.PlaceRequest) -> None:
    bus, _server, stub = api
    before = bus.state  # type: ignore[attr-defined]
    code = call(stub.Place, request)  # type: ignore[attr-defined]
    assert code in PROPER
    after = bus.state  # type: ignore[attr-defined]
    if code != grpc.StatusCode.OK or request.dry_run:
        assert after is before
    else:
        for workload_id in set(after.workloads) - set(before.workloads):  # keep the cluster from filling up
            stub.Evict(pb.EvictRequest(workload_id=workload_id))  # type: ignore[attr-defined]


@FUZZ
@given(request=migrate_requests(), seed_place=st.booleans())
def test_migrate_evict_get_fuzz(
    api: tuple[object, object, object], request: pb.MigrateRequest, seed_place: bool
) -> None:
    bus, _server, stub = api
    if seed_place and not bus.state.workloads:  # type: ignore[attr-defined]
        stub.Place(pb.PlaceRequest(service="web", replicas=1))  # type: ignore[attr-defined]
    for method, message in (
        (stub.Migrate, request),  # type: ignore[attr-defined]
        (stub.Get, pb.GetRequest(workload_id=request.workload_id)),  # type: ignore[attr-defined]
        (stub.Evict, pb.EvictRequest(workload_id=request.workload_id)),  # type: ignore[attr-defined]
        (stub.List, pb.ListRequest(service=request.workload_id, node=request.node)),  # type: ignore[attr-defined]
    ):
        before = bus.state  # type: ignore[attr-defined]
        code = call(method, message)
        assert code in PROPER | {grpc.StatusCode.DEADLINE_EXCEEDED}
        if code != grpc.StatusCode.OK:
            assert bus.state is before or code == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]


@FUZZ
@given(payload=st.binary(max_size=200), method=st.sampled_from(["Place", "Migrate", "Evict", "Get", "List"]))
def test_raw_bytes_fuzz(api: tuple[object, object, object], payload: bytes, method: str) -> None:
    bus, server, _stub = api
    before = bus.state  # type: ignore[attr-defined]
    with grpc.insecure_channel(server.address) as channel:  # type: ignore[attr-defined]
        code = call(channel.unary_unary(f"/edgectl.placement.v1.Placement/{method}"), payload)
    assert code in PROPER
    if code != grpc.StatusCode.OK:
        assert bus.state is before  # type: ignore[attr-defined]
