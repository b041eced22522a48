"""A follower's placement API forwards Place, Migrate and Evict to the leader's, as bytes: two real gRPC
servers on 127.0.0.1 over one model bus (as replicas share one log), real client channels."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from placement._pb import placement_pb2 as pb
from placement._pb import placement_pb2_grpc as pb_grpc
from placement.grpc_api import DECIDED_KEY, SERVICE_NAME, PlacementServer, start_placement_api
from tests.unit.placement.helpers import running_bus


def refuse_to_decide(*_args: object, **_kwargs: object) -> Any:
    raise AssertionError("the follower's orchestrator decided a write")


@contextlib.contextmanager
def leader_and_follower() -> Iterator[tuple[Any, PlacementServer, PlacementServer, Any, Any]]:
    """(bus, leader, follower, leader stub, follower stub); the follower forwards its writes and its own
    orchestrator fails the test if it is ever asked to decide one."""
    with running_bus() as bus:
        leader = start_placement_api(bus, "127.0.0.1", 0)
        follower = start_placement_api(bus, "127.0.0.1", 0, failover=False)
        follower.forward_writes_to(leader.address)
        for name in ("place", "migrate", "evict"):
            setattr(follower.orchestrator, name, refuse_to_decide)
        channels = [grpc.insecure_channel(s.address) for s in (leader, follower)]
        try:
            yield bus, leader, follower, *(pb_grpc.PlacementStub(c) for c in channels)
        finally:
            for channel in channels:
                channel.close()
            follower.stop()
            leader.stop()


def error_of(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    raise AssertionError("the call succeeded")


def test_writes_on_the_follower_are_decided_by_the_leader_once_and_reads_are_served_locally() -> None:
    with leader_and_follower() as (bus, leader, follower, _leader_stub, stub):
        assert follower.writes_forwarded_to == leader.address
        placed = stub.Place(pb.PlaceRequest(service="web", replicas=2), timeout=10)
        assert [(w.id, w.node) for w in placed.workloads] == [("web-1", "m-n1"), ("web-2", "ea-n1")]
        assert set(bus.state.workloads) == {"web-1", "web-2"}  # once: not doubled
        assert placed.generation == bus.state.generation
        moved = stub.Migrate(pb.MigrateRequest(workload_id="web-2", node="eb-n1"), timeout=10)
        assert moved.from_workload_id == "web-2" and moved.workload.node == "eb-n1"
        evicted = stub.Evict(pb.EvictRequest(workload_id="web-1"), timeout=10)
        assert evicted.workload.id == "web-1"
        assert {w.id: w.node for w in bus.state.workloads.values()} == {moved.workload.id: "eb-n1"}

        leader.stop()  # reads never needed it
        assert [w.id for w in stub.List(pb.ListRequest(), timeout=5).workloads] == [moved.workload.id]
        assert stub.Get(pb.GetRequest(workload_id=moved.workload.id), timeout=5).node == "eb-n1"


def test_the_leaders_errors_come_back_as_they_are() -> None:
    with leader_and_follower() as (_bus, _leader, _follower, leader_stub, stub):
        requests = [
            lambda s: s.Place(pb.PlaceRequest(service="nope"), timeout=10),
            lambda s: s.Place(pb.PlaceRequest(service="web", cpu_millis=10**9), timeout=10),
            lambda s: s.Evict(pb.EvictRequest(workload_id="web-9"), timeout=10),
            lambda s: s.Migrate(pb.MigrateRequest(workload_id="web-9", best=True), timeout=10),
        ]
        for make in requests:
            direct = error_of(lambda m=make: m(leader_stub))
            assert error_of(lambda m=make: m(stub)) == direct
            assert direct[0] is not grpc.StatusCode.UNAVAILABLE

        # Bytes no server can decode: the leader's verdict, not the follower's.
        channels = [grpc.insecure_channel(s) for s in (_leader.address, _follower.address)]
        try:
            raw = [c.unary_unary(f"/{SERVICE_NAME}/Place") for c in channels]
            direct = error_of(lambda: raw[0](b"\xff\xff\xff", timeout=10))
            assert direct[0] is grpc.StatusCode.INVALID_ARGUMENT
            assert error_of(lambda: raw[1](b"\xff\xff\xff", timeout=10)) == direct
        finally:
            for channel in channels:
                channel.close()


def test_a_leader_gone_is_unavailable_naming_it_and_none_decides_here_again() -> None:
    with leader_and_follower() as (bus, leader, follower, _leader_stub, stub):
        address = leader.address
        leader.stop()
        code, details = error_of(lambda: stub.Place(pb.PlaceRequest(service="web"), timeout=10))
        assert code is grpc.StatusCode.UNAVAILABLE
        assert details == f"the leader at {address} is unreachable; retry"
        assert not bus.state.workloads

        follower.forward_writes_to(None)  # this replica leads now
        del follower.orchestrator.place  # its own again (the instance attribute hid the method)
        assert follower.writes_forwarded_to is None
        (web,) = stub.Place(pb.PlaceRequest(service="web"), timeout=10).workloads
        assert set(bus.state.workloads) == {web.id}


def test_two_replicas_that_each_think_the_other_leads_do_not_bounce_a_write() -> None:
    with running_bus() as bus:
        a = start_placement_api(bus, "127.0.0.1", 0, failover=False)
        b = start_placement_api(bus, "127.0.0.1", 0, failover=False)
        a.forward_writes_to(b.address)
        b.forward_writes_to(a.address)
        channel = grpc.insecure_channel(a.address)
        try:
            code, details = error_of(
                lambda: pb_grpc.PlacementStub(channel).Place(pb.PlaceRequest(service="web"), timeout=10)
            )
            assert code is grpc.StatusCode.UNAVAILABLE and "not the leader either" in details
            assert not bus.state.workloads
        finally:
            channel.close()
            a.stop()
            b.stop()


class RecordingLeader:
    """A stand-in leader (a real gRPC server) that records what reached it and answers as told."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, float | None, dict[str, str]]] = []
        self.answer: tuple[grpc.StatusCode, str, bool] | None = None  # None: OK, reply b"ok"
        self.block = False  # True: wait until the call is cancelled
        self.entered, self.cancelled = threading.Event(), threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))

        def place(raw: bytes, context: grpc.ServicerContext) -> bytes:
            metadata = {key: value for key, value in context.invocation_metadata()}
            self.seen.append((raw, context.time_remaining(), metadata))
            if self.block:
                context.add_callback(self.cancelled.set)
                self.entered.set()
                self.cancelled.wait(20)
            if self.answer is None:
                return b"ok"
            code, details, decided = self.answer
            if decided:
                context.set_trailing_metadata(((DECIDED_KEY, "here"),))
            context.abort(code, details)
            raise AssertionError("unreachable")

        handler = grpc.method_handlers_generic_handler(
            SERVICE_NAME, {"Place": grpc.unary_unary_rpc_method_handler(place)}
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(None).wait(5)


@pytest.fixture
def recording_leader() -> Iterator[tuple[RecordingLeader, Any]]:
    leader = RecordingLeader()
    with running_bus() as bus:
        follower = start_placement_api(bus, "127.0.0.1", 0, failover=False)
        follower.forward_writes_to(leader.address)
        channel = grpc.insecure_channel(follower.address)
        try:
            yield leader, channel.unary_unary(f"/{SERVICE_NAME}/Place")
        finally:
            channel.close()
            follower.stop()
            leader.stop()


def test_the_bytes_the_deadline_and_the_callers_metadata_reach_the_leader(recording_leader) -> None:
    leader, place = recording_leader
    reply = place(b"\x0a\x03web", timeout=30, metadata=[("x-request-id", "r-1")])
    assert reply == b"ok"
    ((raw, remaining, metadata),) = leader.seen
    assert raw == b"\x0a\x03web"
    assert remaining is not None and 20 < remaining < 31  # the caller's deadline (30 s), not a new one (330 s)
    assert metadata["x-request-id"] == "r-1"
    assert "edgectl-placement-forwarded-by" in metadata


def test_an_unavailable_the_leader_decided_is_passed_on_and_one_it_did_not_is_a_retry(recording_leader) -> None:
    leader, place = recording_leader
    leader.answer = (grpc.StatusCode.UNAVAILABLE, "the placement is applied but not saved: disk full", True)
    assert error_of(lambda: place(b"", timeout=10)) == leader.answer[:2]
    # Not its placement API that said it, and no connection was made: never sent, a retry is safe.
    leader.answer = (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; Connection refused", False)
    assert error_of(lambda: place(b"", timeout=10)) == (
        grpc.StatusCode.UNAVAILABLE,
        f"the leader at {leader.address} is unreachable; retry",
    )
    # The connection broke mid-call (a leader killed while deciding): the change may be made, no retry.
    leader.answer = (grpc.StatusCode.UNAVAILABLE, "Socket closed", False)
    code, details = error_of(lambda: place(b"", timeout=10))
    assert code == grpc.StatusCode.UNAVAILABLE and "the change may have been made" in details
    leader.answer = (grpc.StatusCode.FAILED_PRECONDITION, "web-3 is being migrated", False)
    assert error_of(lambda: place(b"", timeout=10)) == leader.answer[:2]


def test_a_caller_that_goes_away_cancels_the_forwarded_call(recording_leader) -> None:
    leader, place = recording_leader
    leader.block = True
    call = place.future(b"", timeout=30)
    assert leader.entered.wait(10), "the write did not reach the leader"
    call.cancel()
    assert leader.cancelled.wait(10), "the leader's call went on after the caller left"


def test_with_mtls_the_follower_checks_its_caller_and_the_leader_sees_the_followers_certificate() -> None:
    from cryptography import x509

    from pki.ca import CertificateAuthority
    from pki.policy import controller_spiffe_id
    from placement.grpc_api import ApiTls

    td = "edgectl.local"
    ca, _ = CertificateAuthority.create(td)
    now = time.time()

    def spiffe_id(pem: str) -> str:
        names = x509.load_pem_x509_certificate(pem.encode()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
        return str(names.value.get_values_for_type(x509.UniformResourceIdentifier)[0])

    def allowing(seen: list[str]) -> Any:
        def authorize(pem: str) -> str | None:
            seen.append(spiffe_id(pem))
            return None if "/operator/" in seen[-1] or "/controller/" in seen[-1] else "not an operator"

        return authorize

    def credentials(svid: Any) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            ca.bundle_pem.encode(), svid.private_key_pem.encode(), svid.cert_chain_pem.encode()
        )

    server = ca.issue_with_new_key(controller_spiffe_id(td), now, ip_addresses=("127.0.0.1",))
    operator = ca.issue_with_new_key(f"spiffe://{td}/operator/alice", now)
    workload = ca.issue_with_new_key(f"spiffe://{td}/svc/web/w/web-1", now)
    leader_saw: list[str] = []
    follower_saw: list[str] = []
    with running_bus() as bus:
        tls = {
            side: ApiTls(server.cert_chain_pem, server.private_key_pem, ca.bundle_pem, allowing(seen))
            for side, seen in (("leader", leader_saw), ("follower", follower_saw))
        }
        leader = start_placement_api(bus, "127.0.0.1", 0, tls=tls["leader"])
        follower = start_placement_api(bus, "127.0.0.1", 0, failover=False, tls=tls["follower"])
        follower.forward_writes_to(leader.address, credentials(server))
        channels = [grpc.secure_channel(follower.address, credentials(svid)) for svid in (operator, workload)]
        try:
            as_operator, as_workload = (pb_grpc.PlacementStub(c) for c in channels)
            code, _details = error_of(lambda: as_workload.Place(pb.PlaceRequest(service="web"), timeout=10))
            assert code is grpc.StatusCode.PERMISSION_DENIED
            assert leader_saw == [] and not bus.state.workloads  # refused before anything left
            (web,) = as_operator.Place(pb.PlaceRequest(service="web"), timeout=10).workloads
            assert set(bus.state.workloads) == {web.id}
            assert leader_saw == [controller_spiffe_id(td)]
            assert follower_saw == [f"spiffe://{td}/svc/web/w/web-1", f"spiffe://{td}/operator/alice"]
        finally:
            for channel in channels:
                channel.close()
            follower.stop()
            leader.stop()
