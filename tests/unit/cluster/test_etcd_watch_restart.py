"""A watch's stream and the client's channel rotation, on stand-in streams (no etcd, no network)."""

from __future__ import annotations

import queue
import threading
import time
from types import SimpleNamespace
from typing import Any

import grpc

from cluster.etcd import EtcdClient, WatchEvent
from cluster.etcd_pb import kv_pb2, rpc_pb2


class _Cancelled(grpc.RpcError):  # type: ignore[misc]  # grpc is untyped
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.CANCELLED

    def details(self) -> str:
        return "cancelled"


class StandInCall:
    """A watch stream that answers what it is given and ends (CANCELLED) only when cancelled."""

    def __init__(self, *responses: Any) -> None:
        self._responses: queue.Queue[Any] = queue.Queue()
        for response in responses:
            self._responses.put(response)
        self.cancelled = threading.Event()

    def __iter__(self) -> StandInCall:
        return self

    def __next__(self) -> Any:
        response = self._responses.get()
        if response is None:
            raise _Cancelled()
        return response

    def cancel(self) -> None:
        self.cancelled.set()
        self._responses.put(None)


def _created(revision: int) -> Any:
    return rpc_pb2.WatchResponse(created=True, header=rpc_pb2.ResponseHeader(revision=revision))


def test_a_stream_started_on_the_channel_a_rotation_just_replaced_moves_to_the_new_one() -> None:
    """The rotation's restart() came before the stream was stored: the stream must not stay on the old
    channel (its member stopped answering) until something else ends it."""
    client = EtcdClient(["127.0.0.1:1", "127.0.0.1:2"], timeout_s=60.0)  # nothing connects: stand-in stubs
    real_stubs = client._stubs
    old_call = StandInCall(_created(5))
    event = kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv_pb2.KeyValue(key=b"k", value=b"new", mod_revision=6))
    new_call = StandInCall(
        _created(5), rpc_pb2.WatchResponse(header=rpc_pb2.ResponseHeader(revision=6), events=[event])
    )
    new_stubs = SimpleNamespace(watch=SimpleNamespace(Watch=lambda *a, **kw: new_call))

    def watch_on_the_old_channel(*args: Any, **kw: Any) -> StandInCall:
        client._stubs = new_stubs  # type: ignore[assignment]  # a rotation, between the stream's two steps
        return old_call

    client._stubs = SimpleNamespace(watch=SimpleNamespace(Watch=watch_on_the_old_channel))  # type: ignore[assignment]
    delivered: list[WatchEvent] = []
    errors: list[Exception] = []
    watch = client.watch(b"k", on_events=lambda events, _: delivered.extend(events), on_error=errors.append)
    try:
        assert old_call.cancelled.wait(5.0), "the stream stayed on the replaced channel"
        assert new_call.cancelled.wait(0) is False
        deadline = time.monotonic() + 5.0
        while not delivered and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [e.kv.value for e in delivered] == [b"new"] and not errors
    finally:
        watch.cancel()
        client._stubs = real_stubs
        client.close()
