"""Malformed requests get a clean INVALID_ARGUMENT with a reason and never take the server down."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from meshctl.xds_types import CLUSTER, LISTENER
from tests.integration.test_xds_harness import make_workload, mesh

pytestmark = pytest.mark.integration

SOTW = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
DELTA = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"


class Conversation:
    """A raw ADS stream: send requests one at a time, read responses, see how it ended."""

    def __init__(self, channel: grpc.Channel, delta: bool = False, raw: bool = False) -> None:
        self._requests: queue.Queue[Any] = queue.Queue()
        method = DELTA if delta else SOTW
        response_class = discovery_pb2.DeltaDiscoveryResponse if delta else discovery_pb2.DiscoveryResponse
        serializer = (lambda b: b) if raw else (lambda m: m.SerializeToString())
        call = channel.stream_stream(
            method, request_serializer=serializer, response_deserializer=response_class.FromString
        )
        self._responses = call(self._iterate())
        self._received: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _iterate(self) -> Iterator[Any]:
        while (request := self._requests.get()) is not None:
            yield request

    def _read(self) -> None:
        try:
            for response in self._responses:
                self._received.put(response)
        except grpc.RpcError as exc:
            self._received.put(exc)

    def send(self, request: Any) -> None:
        self._requests.put(request)

    def receive(self, timeout: float = 5.0) -> Any:
        item = self._received.get(timeout=timeout)
        if isinstance(item, Exception):
            raise item
        return item

    def error(self, timeout: float = 5.0) -> grpc.RpcError:
        while True:
            item = self._received.get(timeout=timeout)
            if isinstance(item, grpc.RpcError):
                return item

    def close(self) -> None:
        self._requests.put(None)
        self._responses.cancel()


def sotw(type_url: str, node: str | None = "u1", nonce: str = "", names: tuple[str, ...] = ()) -> Any:
    request = discovery_pb2.DiscoveryRequest(type_url=type_url, response_nonce=nonce, resource_names=list(names))
    if node is not None:
        request.node.id = node
    return request


def delta(type_url: str, node: str | None = "u1", nonce: str = "") -> Any:
    request = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=nonce)
    if node is not None:
        request.node.id = node
    return request


def assert_invalid(conversation: Conversation, *reason: str) -> None:
    error = conversation.error()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    for part in reason:
        assert part in error.details(), error.details()


@pytest.fixture
def world():
    with mesh() as m:
        m.place(make_workload("web-1", "web", "n1", 31999))
        with grpc.insecure_channel(m.tcp_address) as channel:
            yield m, channel


def test_unknown_type_url(world) -> None:
    _m, channel = world
    for is_delta, request in ((False, sotw("type.googleapis.com/nope.Nope")), (True, delta("type.googleapis.com/x"))):
        conversation = Conversation(channel, delta=is_delta)
        conversation.send(request)
        assert_invalid(conversation, "unknown type_url")


def test_missing_node(world) -> None:
    _m, channel = world
    for is_delta, request in ((False, sotw(CLUSTER, node=None)), (True, delta(CLUSTER, node=None))):
        conversation = Conversation(channel, delta=is_delta)
        conversation.send(request)
        assert_invalid(conversation, "node.id")


def test_garbage_nonce(world) -> None:
    _m, channel = world
    conversation = Conversation(channel)
    conversation.send(sotw(CLUSTER))
    first = conversation.receive()
    conversation.send(sotw(CLUSTER, node=None, nonce="definitely-not-ours"))
    assert_invalid(conversation, "never sent", "definitely-not-ours")
    assert first.nonce
    conversation = Conversation(channel, delta=True)
    conversation.send(delta(CLUSTER))
    conversation.receive()
    conversation.send(delta(CLUSTER, node=None, nonce="99999"))
    assert_invalid(conversation, "never sent")


def test_bytes_that_are_no_request_and_a_changing_node(world) -> None:
    _m, channel = world
    conversation = Conversation(channel, raw=True)
    conversation.send(b"\xff\xff\xff\xff not protobuf")
    assert_invalid(conversation, "not a valid")
    conversation = Conversation(channel)
    conversation.send(sotw(CLUSTER, node="u1"))
    conversation.receive()
    conversation.send(sotw(LISTENER, node="web-1"))
    assert_invalid(conversation, "changed")
    conversation = Conversation(channel)
    conversation.send(sotw(CLUSTER, names=tuple(f"n{i}" for i in range(10_001))))
    assert_invalid(conversation, "more than")


def test_a_storm_of_bad_streams_leaves_the_server_serving(world) -> None:
    m, channel = world
    conversations = []
    for i in range(60):
        conversation = Conversation(channel, delta=bool(i % 2))
        conversation.send((delta if i % 2 else sotw)("type.googleapis.com/bad", node=f"x{i}"))
        conversations.append(conversation)
    for conversation in conversations:
        assert_invalid(conversation, "unknown type_url")
    good = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(iter([sotw(CLUSTER)]))
    response = next(good)
    assert response.type_url == CLUSTER and response.resources
    good.cancel()
    assert m.metric("edgectl_xds_stream_errors_total", code="INVALID_ARGUMENT") >= 60
    assert "x1" not in m.server.clients_view()["nodes"]  # unknown nodes are forgotten when they go
