"""The ADS servicer against an in-memory cache: it needs only ``XdsCache`` and ``XdsCallbacks``
(as go-control-plane's server needs only its cache interface and callbacks), so its stream handling
(first answer, ACK, NACK, wake-ups, the stream's life) is tested here without ``SnapshotCache``,
Prometheus or a socket. Both RPCs, SotW and delta, are driven through their public handlers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import pytest

from meshctl.servicer import AdsServicer, XdsCache, XdsCallbacks
from meshctl.snapshot import MeshConfig, MeshSnapshot, build_snapshots
from meshctl.xds_types import CLUSTER
from tests.unit.meshctl.mesh_helpers import delta_request, names_of, placed_state, sotw_request

NODE = "web-1"
DEADLINE_S = 10.0  # generous: a loaded 2-core machine


@dataclass
class FakeCache:
    """An ``XdsCache`` in a few dicts and lists: serves what the test sets, records what it is told."""

    snapshots: dict[str, MeshSnapshot] = field(default_factory=dict)
    watchers: dict[str, list[Callable[[str], None]]] = field(default_factory=dict)
    lookups: int = 0
    opened: list[tuple[str, str]] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    pushes: list[tuple[str, str, str, str]] = field(default_factory=list)
    acks: list[tuple[str, str, str]] = field(default_factory=list)
    nacks: list[tuple[str, str, str, str, int]] = field(default_factory=list)
    current: list[tuple[str, str, bool]] = field(default_factory=list)
    synced: list[tuple[str, MeshSnapshot | None]] = field(default_factory=list)
    publication: int = 0

    def set(self, node: str, snapshot: MeshSnapshot) -> None:
        self.snapshots[node] = snapshot
        self.publication += 1
        for watcher in list(self.watchers.get(node, [])):
            watcher(node)

    def snapshot(self, node: str) -> MeshSnapshot | None:
        self.lookups += 1
        return self.snapshots.get(node)

    def watch(self, node: str, watcher: Callable[[str], None]) -> Callable[[], None]:
        self.watchers.setdefault(node, []).append(watcher)
        return lambda: self.watchers[node].remove(watcher)

    def stream_opened(self, node: str, mode: str) -> None:
        self.opened.append((node, mode))

    def stream_closed(self, node: str) -> None:
        self.closed.append(node)

    def record_push(self, node: str, type_url: str, version: str, nonce: str) -> None:
        self.pushes.append((node, type_url, version, nonce))

    def record_ack(self, node: str, type_url: str, version: str) -> None:
        self.acks.append((node, type_url, version))

    def record_nack(self, node: str, type_url: str, rejected_version: str, error: str, code: int) -> None:
        self.nacks.append((node, type_url, rejected_version, error, code))

    def record_current(self, node: str, type_url: str, current: bool) -> None:
        self.current.append((node, type_url, current))

    def record_synced(self, node: str, applied: MeshSnapshot | None) -> None:
        self.synced.append((node, applied))


@dataclass
class FakeCallbacks:
    """An ``XdsCallbacks`` that lists what it was told, in order."""

    events: list[tuple[str, str]] = field(default_factory=list)

    def opened(self, mode: str) -> None:
        self.events.append(("opened", mode))

    def closed(self, mode: str) -> None:
        self.events.append(("closed", mode))

    def failed(self, code: str) -> None:
        self.events.append(("failed", code))

    def pushed(self, type_url: str) -> None:
        self.events.append(("pushed", type_url))

    def acked(self, type_url: str, seconds: float) -> None:
        assert seconds >= 0
        self.events.append(("acked", type_url))

    def nacked(self, type_url: str) -> None:
        self.events.append(("nacked", type_url))


class FakeContext:
    """The part of ``grpc.aio.ServicerContext`` the servicer uses; what it writes goes to a queue."""

    def __init__(self) -> None:
        self.written: asyncio.Queue[Any] = asyncio.Queue()
        self.aborted: tuple[Any, str] | None = None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    async def write(self, response: Any) -> None:
        await self.written.put(response)

    async def abort(self, code: Any, details: str) -> None:
        self.aborted = (code, details)
        raise grpc.aio.AbortError()


class CertifiedContext(FakeContext):
    """A stream whose client presented (and TLS verified) this certificate."""

    def __init__(self, certificate: str) -> None:
        super().__init__()
        self._certificate = certificate

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self._certificate.encode()]}


class Client:
    """One stream of the servicer, driven request by request from the test."""

    def __init__(self, servicer: AdsServicer, mode: str, context: FakeContext | None = None) -> None:
        self._requests: asyncio.Queue[Any] = asyncio.Queue()
        self.context = context if context is not None else FakeContext()
        handler = servicer.stream_aggregated_resources if mode == "sotw" else servicer.delta_aggregated_resources
        self.task = asyncio.create_task(handler(self._stream(), self.context))

    async def _stream(self) -> AsyncIterator[Any]:
        while (request := await self._requests.get()) is not None:
            yield request

    async def send(self, request: Any) -> None:
        await self._requests.put(request)

    async def response(self) -> Any:
        return await asyncio.wait_for(self.context.written.get(), DEADLINE_S)

    async def end(self) -> None:
        await self._requests.put(None)
        await asyncio.wait_for(self.task, DEADLINE_S)


async def until(condition: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.001)


@pytest.fixture(scope="module")
def snapshots() -> tuple[MeshSnapshot, MeshSnapshot]:
    """The node's snapshot, and one whose clusters changed (another connect timeout)."""
    state = placed_state()
    first = build_snapshots(state, MeshConfig())[NODE]
    changed = build_snapshots(state, replace(MeshConfig(), connect_timeout_ms=2500))[NODE]
    assert first.of_type(CLUSTER) and first.digest(CLUSTER) != changed.digest(CLUSTER)
    return first, changed


def test_the_servicer_needs_only_the_protocols() -> None:
    cache: XdsCache = FakeCache()  # mypy checks the fakes against the protocols
    callbacks: XdsCallbacks = FakeCallbacks()
    AdsServicer(cache, callbacks)


def test_sotw_answers_records_the_ack_and_keeps_the_last_good_config_after_a_nack(
    snapshots: tuple[MeshSnapshot, MeshSnapshot],
) -> None:
    first, changed = snapshots
    cache, callbacks = FakeCache({NODE: first}), FakeCallbacks()

    async def scenario() -> None:
        client = Client(AdsServicer(cache, callbacks), "sotw")
        await client.send(sotw_request(CLUSTER, [], node_id=NODE))
        answer = await client.response()
        assert names_of(answer) == sorted(first.of_type(CLUSTER))
        assert cache.opened == [(NODE, "sotw")] and NODE in cache.watchers

        await client.send(sotw_request(CLUSTER, [], nonce=answer.nonce, version=answer.version_info))
        await until(lambda: bool(cache.acks))
        assert cache.acks == [(NODE, CLUSTER, answer.version_info)]
        assert ("acked", CLUSTER) in callbacks.events
        assert cache.synced == [(NODE, first)]

        cache.set(NODE, changed)  # the cache wakes the stream: the change is pushed
        update = await client.response()
        assert update.version_info != answer.version_info and update.nonce != answer.nonce
        await client.send(sotw_request(CLUSTER, [], nonce=update.nonce, version=answer.version_info, error="bad"))
        await until(lambda: bool(cache.nacks))
        assert cache.nacks == [(NODE, CLUSTER, update.version_info, "bad", 3)]
        assert ("nacked", CLUSTER) in callbacks.events

        lookups = cache.lookups
        cache.set(NODE, changed)  # woken again with the very content it rejected
        await until(lambda: cache.lookups > lookups)
        await client.end()
        assert client.context.written.empty(), "the rejected content was sent again"
        assert client.context.aborted is None

    asyncio.run(scenario())
    assert cache.acks == [(NODE, CLUSTER, cache.pushes[0][2])]  # what it runs is still the first
    assert (NODE, changed) not in cache.synced and cache.synced[-1] == (NODE, None)
    assert callbacks.events == [
        ("opened", "sotw"),
        ("pushed", CLUSTER),
        ("acked", CLUSTER),
        ("pushed", CLUSTER),
        ("nacked", CLUSTER),
        ("closed", "sotw"),
    ]
    assert cache.closed == [NODE] and cache.watchers[NODE] == []


def test_delta_answers_records_the_ack_and_keeps_the_last_good_config_after_a_nack(
    snapshots: tuple[MeshSnapshot, MeshSnapshot],
) -> None:
    first, changed = snapshots
    cache, callbacks = FakeCache({NODE: first}), FakeCallbacks()

    async def scenario() -> None:
        client = Client(AdsServicer(cache, callbacks), "delta")
        await client.send(delta_request(CLUSTER, node_id=NODE))
        answer = await client.response()
        assert sorted(names_of(answer)) == sorted(first.of_type(CLUSTER))
        assert cache.opened == [(NODE, "delta")]

        await client.send(delta_request(CLUSTER, nonce=answer.nonce))
        await until(lambda: bool(cache.acks))
        assert cache.acks == [(NODE, CLUSTER, answer.system_version_info)]
        assert ("acked", CLUSTER) in callbacks.events

        cache.set(NODE, changed)
        update = await client.response()
        assert update.nonce != answer.nonce and names_of(update)  # the changed clusters
        await client.send(delta_request(CLUSTER, nonce=update.nonce, error="bad"))
        await until(lambda: bool(cache.nacks))
        assert cache.nacks == [(NODE, CLUSTER, update.system_version_info, "bad", 3)]
        assert ("nacked", CLUSTER) in callbacks.events

        lookups = cache.lookups
        cache.set(NODE, changed)
        await until(lambda: cache.lookups > lookups)
        await client.end()
        assert client.context.written.empty(), "the rejected content was sent again"
        assert client.context.aborted is None

    asyncio.run(scenario())
    assert len(cache.acks) == 1  # what it runs is still the first
    assert (NODE, changed) not in cache.synced and cache.synced[-1] == (NODE, None)
    assert callbacks.events == [
        ("opened", "delta"),
        ("pushed", CLUSTER),
        ("acked", CLUSTER),
        ("pushed", CLUSTER),
        ("nacked", CLUSTER),
        ("closed", "delta"),
    ]
    assert cache.closed == [NODE] and cache.watchers[NODE] == []


def test_a_malformed_stream_is_ended_and_reported_through_the_callbacks() -> None:
    cache, callbacks = FakeCache(), FakeCallbacks()

    async def scenario() -> FakeContext:
        client = Client(AdsServicer(cache, callbacks), "sotw")
        await client.send(sotw_request(CLUSTER, []))  # no node id
        with pytest.raises(grpc.aio.AbortError):
            await asyncio.wait_for(client.task, DEADLINE_S)
        return client.context

    context = asyncio.run(scenario())
    assert context.aborted is not None and context.aborted[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert callbacks.events == [("opened", "sotw"), ("failed", "INVALID_ARGUMENT"), ("closed", "sotw")]


def test_without_an_authorizer_a_model_change_does_not_wake_every_stream_to_recheck(
    snapshots: tuple[MeshSnapshot, MeshSnapshot],
) -> None:
    first, _changed = snapshots
    cache, callbacks = FakeCache({NODE: first}), FakeCallbacks()

    async def scenario() -> None:
        servicer = AdsServicer(cache, callbacks)
        client = Client(servicer, "sotw")
        await client.send(sotw_request(CLUSTER, [], node_id=NODE))
        await client.response()
        assert len(servicer.open_streams) == 0  # nothing to recheck: every stream may be served
        await client.end()

    asyncio.run(scenario())


def test_a_recheck_of_some_nodes_authorizes_their_streams_again_and_no_other(
    snapshots: tuple[MeshSnapshot, MeshSnapshot],
) -> None:
    """A model change that concerns one workload (it left its node) rechecks that workload's stream only:
    with 1,000 sidecars, a recheck of every stream per placement was 1,000 wake-ups."""
    first, _changed = snapshots
    other = "web-2"
    cache, callbacks = FakeCache({NODE: first, other: replace(first, node_id=other)}), FakeCallbacks()
    allowed = {NODE, other}
    asked: list[tuple[str, str]] = []

    def authorize(node: str, certificate: str) -> str | None:
        asked.append((node, certificate))
        return None if node in allowed else f"{node} is no longer placed on the agent's node"

    async def scenario() -> None:
        servicer = AdsServicer(cache, callbacks, authorize=authorize)
        leaving = Client(servicer, "sotw", CertifiedContext("agent-of-node-1"))
        staying = Client(servicer, "delta", CertifiedContext("agent-of-node-2"))
        await leaving.send(sotw_request(CLUSTER, [], node_id=NODE))
        await leaving.response()
        await staying.send(delta_request(CLUSTER, node_id=other))
        await staying.response()
        await asyncio.sleep(0.05)  # each stream also wakes itself once it watches (and checks again)
        assert set(asked) == {(NODE, "agent-of-node-1"), (other, "agent-of-node-2")}
        assert len(servicer.open_streams) == 2

        asked.clear()
        allowed.discard(NODE)
        servicer.open_streams.recheck([NODE, "a-node-with-no-stream"])
        with pytest.raises(grpc.aio.AbortError):
            await asyncio.wait_for(leaving.task, DEADLINE_S)
        assert leaving.context.aborted is not None
        assert leaving.context.aborted[0] == grpc.StatusCode.PERMISSION_DENIED
        assert asked == [(NODE, "agent-of-node-1")]  # the other stream was not woken
        assert len(servicer.open_streams) == 1  # the ended stream is gone from the registry

        servicer.open_streams.recheck_all()
        await until(lambda: len(asked) == 2)
        assert asked[1] == (other, "agent-of-node-2") and staying.context.aborted is None
        await staying.end()
        assert len(servicer.open_streams) == 0

    asyncio.run(scenario())
