"""The node agent's client with several controller addresses (a replicated controller): calls move to
the next address when the one asked is UNAVAILABLE. Real gRPC servers over TLS on 127.0.0.1, each a
stand-in controller that answers the NodeAgent calls and records them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from nodeagent._pb import agent_pb2 as pb
from nodeagent.client import ControllerClient
from nodeagent.plan import EventKind
from pki.ca import CertificateAuthority
from tests.integration.harness import free_port

TD = "failover.test"
SERVICE = "edgectl.agent.v1.NodeAgent"


class StandInController:
    """A NodeAgent gRPC server under its own name; ``refuse`` makes ReportHealth answer that code."""

    def __init__(self, name: str, ca: CertificateAuthority) -> None:
        self.name = name
        self.calls: list[str] = []
        self.refuse: grpc.StatusCode | None = None
        self.stopping = threading.Event()
        svid = ca.issue_with_new_key(f"spiffe://{TD}/controller/{name}", time.time(), ip_addresses=["127.0.0.1"])
        credentials = grpc.ssl_server_credentials(
            [(svid.private_key_pem.encode(), svid.cert_chain_pem.encode())],
            root_certificates=ca.bundle_pem.encode(),
            require_client_auth=False,
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handlers = {
            "Attest": grpc.unary_unary_rpc_method_handler(
                self._svid, pb.AttestRequest.FromString, pb.NodeSvid.SerializeToString
            ),
            "RenewNodeSvid": grpc.unary_unary_rpc_method_handler(
                self._svid, pb.RenewRequest.FromString, pb.NodeSvid.SerializeToString
            ),
            "ReportHealth": grpc.unary_unary_rpc_method_handler(
                self._health, pb.HealthReport.FromString, pb.HealthReply.SerializeToString
            ),
            "WatchNode": grpc.unary_stream_rpc_method_handler(
                self._watch, pb.WatchNodeRequest.FromString, pb.NodeEvent.SerializeToString
            ),
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.address = f"127.0.0.1:{self.server.add_secure_port('127.0.0.1:0', credentials)}"
        self.server.start()

    def _svid(self, request: Any, _context: grpc.ServicerContext) -> pb.NodeSvid:
        self.calls.append(type(request).__name__)
        return pb.NodeSvid(spiffe_id=f"spiffe://{TD}/node/n1", cert_chain_pem=self.name, expires_at=1.0)

    def _health(self, _request: pb.HealthReport, context: grpc.ServicerContext) -> pb.HealthReply:
        self.calls.append("HealthReport")
        if self.refuse is not None:
            context.abort(self.refuse, f"{self.name} refuses")
        return pb.HealthReply()

    def _watch(self, _request: pb.WatchNodeRequest, context: grpc.ServicerContext) -> Iterator[pb.NodeEvent]:
        self.calls.append("WatchNode")
        yield pb.NodeEvent(kind=pb.NodeEvent.SNAPSHOT, generation=len(self.name))
        while context.is_active() and not self.stopping.wait(0.05):
            pass
        context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} is shutting down")

    def stop(self) -> None:
        self.stopping.set()
        self.server.stop(1).wait(5)


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(TD)[0]


@pytest.fixture
def controllers(ca: CertificateAuthority) -> Iterator[list[StandInController]]:
    started = [StandInController(name, ca) for name in ("one", "two")]
    try:
        yield started
    finally:
        for controller in started:
            controller.stop()


def identified(client: ControllerClient, ca: CertificateAuthority) -> ControllerClient:
    client.attest("n1", "token", "csr", ca.bundle_pem.encode())
    node = ca.issue_with_new_key(f"spiffe://{TD}/node/n1", time.time())
    client.use_identity(node.cert_chain_pem, node.private_key_pem, ca.bundle_pem.encode())
    return client


def test_attest_tries_each_address_until_one_answers(
    ca: CertificateAuthority, controllers: list[StandInController]
) -> None:
    one, _two = controllers
    dead = f"127.0.0.1:{free_port()}"
    client = ControllerClient([dead, one.address])
    try:
        issued = client.attest("n1", "token", "csr", ca.bundle_pem.encode())
        assert issued.cert_chain_pem == "one" and client.target == one.address
    finally:
        client.close()
    alone = ControllerClient(dead)
    with pytest.raises(grpc.RpcError) as raised:
        alone.attest("n1", "token", "csr", ca.bundle_pem.encode())
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE


def test_calls_move_to_the_next_controller_when_one_is_unavailable(
    ca: CertificateAuthority, controllers: list[StandInController]
) -> None:
    one, two = controllers
    client = identified(ControllerClient([one.address, two.address]), ca)
    try:
        client.report_health("web-1", True, "")
        assert one.calls == ["AttestRequest", "HealthReport"] and two.calls == []
        one.stop()
        client.report_health("web-1", True, "")
        assert two.calls == ["HealthReport"] and client.target == two.address
        assert client.renew("csr").cert_chain_pem == "two"  # and stays there
    finally:
        client.close()


def test_a_refusal_is_not_an_outage_and_is_not_retried_elsewhere(
    ca: CertificateAuthority, controllers: list[StandInController]
) -> None:
    one, two = controllers
    one.refuse = grpc.StatusCode.PERMISSION_DENIED
    client = identified(ControllerClient(f"{one.address},{two.address}".split(",")), ca)
    try:
        with pytest.raises(grpc.RpcError) as raised:
            client.report_health("web-1", False, "crashed")
        assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert two.calls == [] and client.target == one.address
    finally:
        client.close()


def test_a_watch_that_ends_unavailable_is_opened_again_on_the_next_controller(
    ca: CertificateAuthority, controllers: list[StandInController]
) -> None:
    one, two = controllers
    client = identified(ControllerClient([one.address, two.address]), ca)
    try:
        _call, events = client.watch("n1")
        kind, _workloads, generation, _held = next(events)
        assert (kind, generation) == (EventKind.SNAPSHOT, len("one"))
        one.stop()
        with pytest.raises(grpc.RpcError) as raised:
            next(events)
        assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
        assert client.target == two.address
        _call, events = client.watch("n1")
        assert next(events)[2] == len("two")
        assert two.calls == ["WatchNode"]
    finally:
        client.close()
