"""The ADS servicer (adapter): ``StreamAggregatedResources`` (state of the world) and
``DeltaAggregatedResources`` (incremental) on grpc.aio.

As go-control-plane's server depends on its ``cache.Cache`` interface and ``Callbacks``, this one
depends on ``XdsCache`` (what it and its streams call on the cache) and ``XdsCallbacks`` (told of
every stream opened, closed or failed, and of every push, ACK and NACK), never on ``SnapshotCache``
or the Prometheus metrics themselves: its tests drive it against an in-memory cache.

One coroutine per stream runs its protocol state machine (``meshctl.protocol``), so there is no lock
on the per-stream state and 1,000 streams cost no threads. The cache wakes a stream, from any thread,
when its node's content changed; the wake-up is handed to the stream's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from itertools import groupby
from operator import itemgetter
from typing import Any, Protocol

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from meshctl.delta import DeltaStream
from meshctl.encoding import ResponseEncoder, serialize
from meshctl.protocol import Observer, ProtocolError, StreamCache
from meshctl.snapshot import MeshSnapshot
from meshctl.sotw import SotwStream
from meshctl.wake_order import DEFAULT_CHUNK, FairWakeQueue
from netmodel.logsafe import log_safe
from netmodel.types import frozen_map
from netmodel.wire import Undecodable as _Undecodable
from netmodel.wire import safe_parser as _safe_parser

LOG = logging.getLogger("edgectl.mesh")

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"

NodeAuthorizer = Callable[[str, str], str | None]
"""``(node_id, peer certificate PEM) -> None`` (allowed) or why not (``PkiService.authorize_xds``)."""
NodeKnown = Callable[[str], bool]
"""``node_id -> bool``: the model has a sidecar of that id (a workload or a host)."""


class XdsCache(StreamCache, Protocol):
    """What the servicer asks of the cache: what a stream asks (``StreamCache``: the node's snapshot,
    recording pushes, ACKs, NACKs and what the node runs) and a watch on a node's content."""

    def watch(self, node: str, watcher: Callable[[str], None]) -> Callable[[], None]:
        """Call ``watcher(node)`` (from any thread) whenever ``node``'s content changes; returns the
        cancel function."""
        ...

    @property
    def publication(self) -> int:
        """How many times snapshots were published: the watchers one publication calls see its number."""
        ...


class XdsCallbacks(Observer, Protocol):
    """What the servicer reports (``meshctl.metrics.XdsMetrics`` is one): ``pushed``, ``acked`` and
    ``nacked`` per response (``protocol.Observer``), and each stream's life."""

    def opened(self, mode: str) -> None:
        """A ``mode`` ("sotw" or "delta") stream began."""
        ...

    def closed(self, mode: str) -> None:
        """A ``mode`` stream ended (however it ended)."""
        ...

    def failed(self, code: str) -> None:
        """A stream was ended with the gRPC status ``code`` (its name)."""
        ...


def _peer_certificate(context: Any) -> str | None:
    """The client's certificate (PEM) as gRPC verified it, or None (Unix socket, plaintext)."""
    try:
        certificates = context.auth_context().get("x509_pem_cert") or []
    except Exception:  # a context without an auth context (tests, plaintext)
        return None
    if not certificates:
        return None
    first = certificates[0]
    return first.decode() if isinstance(first, bytes) else str(first)


class _FairWaker:
    """Hands the cache's wake-ups (from the publisher's thread) to the streams on the server's loop,
    in the order of ``meshctl.wake_order``: what arrived together is one batch, batches are served round
    robin a chunk at a time, so a stream that needs a later change never waits behind a whole fan-out."""

    def __init__(self, loop: asyncio.AbstractEventLoop, chunk: int = DEFAULT_CHUNK) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._incoming: list[tuple[int, Callable[[], None]]] = []
        """(publication, wake-up) pairs not yet handed to the loop."""
        self._drain_scheduled = False
        self._queue: FairWakeQueue[Callable[[], None]] = FairWakeQueue(chunk)
        self._runner: asyncio.Task[None] | None = None

    def wake_from_any_thread(self, wake: Callable[[], None], publication: int) -> None:
        with self._lock:
            self._incoming.append((publication, wake))
            if self._drain_scheduled:
                return  # one hop to the loop for the whole batch
            self._drain_scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop is closing: nothing left to wake
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:  # on the loop
        with self._lock:
            incoming, self._incoming, self._drain_scheduled = self._incoming, [], False
        # One batch per publication: the loop may drain while the publisher is still waking the
        # streams of one (each hop to the loop lets it in), and those parts are one change.
        for publication, wakes in groupby(incoming, key=itemgetter(0)):
            self._queue.add_batch((wake for _, wake in wakes), change=publication)
        if self._runner is None or self._runner.done():
            self._runner = self._loop.create_task(self._run())

    async def _run(self) -> None:
        while chunk := self._queue.next_chunk():
            for wake in chunk:
                wake()
            await asyncio.sleep(0)  # those streams push, and ACKs are read, before the next chunk


_WAKE = object()
_RECHECK = object()
_END = object()


class OpenStreams:
    """The open streams of a servicer, to be re-authorized when what authorizes them changes: authorization
    is a function of the model and the PKI (a node SVID may serve the workloads placed on its node, and
    placement changes), so a stream allowed when it opened is not allowed forever. A stream is named by
    its node once it says which (``OpenStream.name``): a change that concerns some nodes rechecks their
    streams only (``recheck``), one that may concern any rechecks all (``recheck_all``); a stream not named
    yet is authorized on its first request anyway. Any thread may call these; each stream re-runs its
    check on its own event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rechecks: dict[int, Callable[[], None]] = {}
        self._by_node: dict[str, dict[int, Callable[[], None]]] = {}
        self._next = 0

    def add(self, recheck: Callable[[], None]) -> OpenStream:
        """Register a stream's ``recheck`` (cheap); name it once its node is known, remove it when it ends."""
        with self._lock:
            key, self._next = self._next, self._next + 1
            self._rechecks[key] = recheck
        return OpenStream(self, key)

    def _name(self, key: int, node: str) -> None:
        with self._lock:
            recheck = self._rechecks.get(key)
            if recheck is not None:
                self._by_node.setdefault(node, {})[key] = recheck

    def _remove(self, key: int, node: str | None) -> None:
        with self._lock:
            self._rechecks.pop(key, None)
            streams = self._by_node.get(node) if node is not None else None
            if streams is not None:
                streams.pop(key, None)
                if not streams:
                    del self._by_node[node]  # type: ignore[arg-type]

    def recheck_all(self) -> None:
        with self._lock:
            rechecks = list(self._rechecks.values())
        for recheck in rechecks:
            recheck()

    def recheck(self, nodes: Iterable[str]) -> None:
        """Recheck the streams named by one of ``nodes``."""
        with self._lock:
            rechecks = [recheck for node in nodes for recheck in self._by_node.get(node, {}).values()]
        for recheck in rechecks:
            recheck()

    def __len__(self) -> int:
        with self._lock:
            return len(self._rechecks)


class OpenStream:
    """One stream's registration in ``OpenStreams``."""

    __slots__ = ("_key", "_node", "_streams")

    def __init__(self, streams: OpenStreams, key: int) -> None:
        self._streams = streams
        self._key = key
        self._node: str | None = None

    def name(self, node: str) -> None:
        """The stream serves ``node`` (once; call it before the stream's first check, so that no change
        after that check can miss it)."""
        if self._node is None:
            self._node = node
            self._streams._name(self._key, node)

    def remove(self) -> None:
        self._streams._remove(self._key, self._node)


class AdsServicer:
    """The ADS service: one coroutine per stream feeds its protocol state machine (``meshctl.sotw``,
    ``meshctl.delta``) the client's requests and the cache's wake-ups, and writes what it returns.
    It knows the cache only as ``XdsCache`` and reports through ``XdsCallbacks``."""

    wake_chunk = DEFAULT_CHUNK
    """Streams woken per turn of the fair order (``meshctl.wake_order``)."""

    def __init__(
        self,
        cache: XdsCache,
        callbacks: XdsCallbacks,
        authorize: NodeAuthorizer | None = None,
        known: NodeKnown | None = None,
    ) -> None:
        self._cache = cache
        self._callbacks = callbacks
        self._authorize = authorize
        self._known = known
        self._waker: _FairWaker | None = None
        """Created on the loop of the first stream (one servicer serves on one loop)."""
        self.encoder = ResponseEncoder()
        """Shared by every stream of this server: a resource many nodes get is encoded once per version."""
        self.open_streams = OpenStreams()
        """Re-authorized on every model change (``recheck_all``): see ``_serve``."""

    def _stand_in(self, mode: str) -> Callable[[str], MeshSnapshot | None] | None:
        """For one stream: what to serve a node the cache has no snapshot of. A node of the model
        (placed, its first snapshot still being built) gets nothing yet, its snapshot follows in
        milliseconds; a node the model does not know gets an empty configuration at once, and one log
        line, rather than a silent hold that makes its Envoy wait out its initial-fetch timeout. It
        gets its real configuration as soon as the model has it (the stream's watch wakes it)."""
        known = self._known
        if known is None:
            return None
        told = False

        def stand_in(node: str) -> MeshSnapshot | None:
            nonlocal told
            if known(node):
                return None
            if not told:
                told = True
                LOG.warning(
                    "xDS %s stream of node %s: no workload or host of the model has that id; serving it an "
                    "empty configuration",
                    mode,
                    log_safe(node),
                )
            return _empty_snapshot(node)

        return stand_in

    def _refusal(self, node: str, certificate: str | None) -> str | None:
        """Why a stream whose client presented ``certificate`` may not be served for ``node`` now (None: it may)."""
        if self._authorize is None:
            return None
        if certificate is None:  # every listener is mTLS when there is an authorizer: should not happen
            return "no client certificate: the xDS server requires mTLS"
        return self._authorize(node, certificate)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self.stream_aggregated_resources,
                    request_deserializer=_safe_parser(discovery_pb2.DiscoveryRequest),
                    response_serializer=serialize,
                ),
                "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self.delta_aggregated_resources,
                    request_deserializer=_safe_parser(discovery_pb2.DeltaDiscoveryRequest),
                    response_serializer=serialize,
                ),
            },
        )

    async def stream_aggregated_resources(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> None:
        await self._serve(
            SotwStream(self._cache, self._callbacks, stand_in=self._stand_in("sotw"), encoder=self.encoder),
            requests,
            context,
        )

    async def delta_aggregated_resources(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        stream = DeltaStream(self._cache, self._callbacks, stand_in=self._stand_in("delta"), encoder=self.encoder)
        await self._serve(stream, requests, context)

    async def _serve(
        self, stream: SotwStream | DeltaStream, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> None:
        loop = asyncio.get_running_loop()
        # Bounded: a client that floods requests is slowed by gRPC flow control, not buffered here.
        inbox: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)
        woken = False

        def wake() -> None:  # on the loop: at most one wake-up queued per stream
            nonlocal woken
            if woken:
                return
            try:
                inbox.put_nowait(_WAKE)
                woken = True
            except asyncio.QueueFull:
                pass  # every queued request runs a full pass over the newest snapshot anyway

        if self._waker is None:
            self._waker = _FairWaker(loop, self.wake_chunk)
        waker = self._waker

        def wake_from_any_thread(_node: str) -> None:
            waker.wake_from_any_thread(wake, self._cache.publication)

        def recheck() -> None:  # on the loop. Dropped when the inbox is full: every item rechecks anyway
            with contextlib.suppress(asyncio.QueueFull):
                inbox.put_nowait(_RECHECK)

        def recheck_from_any_thread() -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(recheck)

        async def read() -> None:
            try:
                async for request in requests:
                    await inbox.put(request)
            except Exception as exc:  # the client went away mid-read
                LOG.debug("stream read ended: %s", log_safe(repr(exc)))
            await inbox.put(_END)

        reader = asyncio.create_task(read())
        cancel_watch: Callable[[], None] | None = None
        # Without an authorizer every stream may always be served: a model change need not wake each
        # one to check (in a fan-out that was one more wake-up per stream, ahead of the push).
        registration = self.open_streams.add(recheck_from_any_thread) if self._authorize is not None else None
        # Read once: a connection's peer certificate does not change, and every message is authorized.
        certificate = _peer_certificate(context) if self._authorize is not None else None
        self._callbacks.opened(stream.mode)
        try:
            while True:
                item = await inbox.get()
                if item is _END:
                    return
                if isinstance(item, _Undecodable):
                    raise ProtocolError(f"request is not a valid {stream.mode} discovery request: {item.error}")
                # Authorized on its first request, and again before anything else is served: the
                # model may have changed since (the workload removed from, or moved off, the node of a
                # node SVID), and the snapshot a wake-up would serve was built from that change.
                node = stream.node_id
                if node is None and item is not _WAKE and item is not _RECHECK:
                    node = str(getattr(getattr(item, "node", None), "id", ""))
                if node is not None:
                    if registration is not None:
                        registration.name(node)  # before the check: a change after it rechecks this stream
                    refusal = self._refusal(node, certificate)
                    if refusal is not None:
                        peer = log_safe(context.peer())
                        if stream.node_id is None:
                            LOG.warning("refusing %s stream from %s: %s", stream.mode, peer, log_safe(refusal))
                        else:
                            LOG.warning(
                                "ending %s stream of %s from %s: no longer authorized: %s",
                                stream.mode,
                                log_safe(node),
                                peer,
                                log_safe(refusal),
                            )
                        self._callbacks.failed("PERMISSION_DENIED")
                        await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
                if item is _RECHECK:
                    continue
                if item is _WAKE:
                    woken = False
                    responses = stream.on_change()
                else:
                    responses = stream.on_request(item)
                    if cancel_watch is None and stream.node_id is not None:
                        cancel_watch = self._cache.watch(stream.node_id, wake_from_any_thread)
                        wake()  # a change between the first answer and the watch must not be lost
                for response in responses:
                    await context.write(response)
        except ProtocolError as exc:
            who = log_safe(stream.node_id or context.peer())
            LOG.info("ending %s stream of %s: %s", stream.mode, who, log_safe(exc, limit=1024))
            self._callbacks.failed("INVALID_ARGUMENT")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            if context.cancelled() or context.done():
                return  # the client went away while we wrote: nothing is wrong here
            LOG.exception("%s stream of %s failed", stream.mode, log_safe(stream.node_id))
            self._callbacks.failed("INTERNAL")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error in the xDS server (logged)")
        finally:
            if registration is not None:
                registration.remove()
            reader.cancel()
            if cancel_watch is not None:
                cancel_watch()
            stream.close()
            self._callbacks.closed(stream.mode)


def _empty_snapshot(node: str) -> MeshSnapshot:
    return MeshSnapshot(node, 0, frozen_map({}), frozen_map({}))
