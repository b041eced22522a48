"""An etcd v3 client over gRPC stubs generated from etcd's own protos (cluster/etcd_pb; adapter).

One gRPC channel lists every member (pick_first): when the member in use dies, the channel connects to the
next and calls wait for it (wait_for_ready) within the client's timeout. Calls whose repetition does no harm
(reads, put, delete, lease grant/revoke/keep-alive, compact) are retried within ``timeout_s``, each attempt
given a third of it: a request forwarded to a leader that just died is dropped by raft and would otherwise
wait out etcd's own 5 s request timeout. A transaction that writes is retried only when etcd said it had no
leader (rejected before being proposed); any other failure raises EtcdUnavailable saying it may or may not
have been applied (its compares tell the caller on a re-read). A call that finds no member within
``timeout_s`` raises EtcdUnavailable naming the endpoints; it never hangs. Watches and the lease keep-alive
stream run on their own native threads. A watch stream silent for half the timeout asks etcd for its progress
(answered at once, events or not); one still silent a whole timeout after asking is on a member that stopped
answering, and the watch moves to the next member (``watch_failover_s``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from cluster.etcd_model import (
    Compare,
    Endpoint,
    EtcdCompacted,
    EtcdError,
    EtcdUnavailable,
    KeyValue,
    Member,
    MemberStatus,
    Op,
    TxnResult,
    WatchEvent,
    parse_endpoints,
    prefix_end,
    split_urls,
)
from cluster.etcd_pb import kv_pb2, rpc_pb2, rpc_pb2_grpc

__all__ = [
    "Compare",
    "EtcdClient",
    "EtcdCompacted",
    "EtcdError",
    "EtcdUnavailable",
    "KeyValue",
    "Member",
    "MemberStatus",
    "Op",
    "TxnResult",
    "Watch",
    "WatchEvent",
]

log = logging.getLogger(__name__)

# etcd refuses client pings more often than every 5 s (--grpc-keepalive-min-time): a paused member is
# noticed within about 7 s, a dead one at once (its connection closes).
_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]
_RETRY_PAUSE_S = 0.05
_WATCH_RECONNECT_PAUSE_S = _RETRY_PAUSE_S * 4
# etcd's "require leader" metadata: a member that loses its leader ends these streams (UNAVAILABLE) instead
# of keeping them open while it can no longer see new revisions or renew leases.
_REQUIRE_LEADER = (("hasleader", "true"),)
_COMPARE_RESULT = {
    "=": rpc_pb2.Compare.EQUAL,
    "!=": rpc_pb2.Compare.NOT_EQUAL,
    "<": rpc_pb2.Compare.LESS,
    ">": rpc_pb2.Compare.GREATER,
}
_COMPARE_TARGET = {
    "version": rpc_pb2.Compare.VERSION,
    "create_revision": rpc_pb2.Compare.CREATE,
    "mod_revision": rpc_pb2.Compare.MOD,
    "value": rpc_pb2.Compare.VALUE,
}


def channel_target(endpoints: Sequence[Endpoint], first: int = 0) -> str:
    """One gRPC target naming every member, from the ``first``-th on: ``ipv4:a:p,b:p`` (host names resolved
    now), or ``ipv6:...``. pick_first connects to the first that answers."""
    endpoints = [*endpoints[first:], *endpoints[:first]]
    addresses: list[tuple[int, str, int]] = []
    for endpoint in endpoints:
        try:
            infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ValueError(f"etcd endpoint {endpoint}: cannot resolve {endpoint.host!r} ({exc})") from exc
        v4 = [i for i in infos if i[0] == socket.AF_INET]
        family, _, _, _, sockaddr = (v4 or infos)[0]
        addresses.append((family, str(sockaddr[0]), endpoint.port))
    families = {family for family, _, _ in addresses}
    if families == {socket.AF_INET}:
        return "ipv4:" + ",".join(f"{host}:{port}" for _, host, port in addresses)
    if families == {socket.AF_INET6}:
        return "ipv6:" + ",".join(f"[{host}]:{port}" for _, host, port in addresses)
    raise ValueError("etcd endpoints mix IPv4 and IPv6 addresses; give them all in one family")


def _kv(message: Any) -> KeyValue:
    return KeyValue(
        key=message.key,
        value=message.value,
        create_revision=message.create_revision,
        mod_revision=message.mod_revision,
        version=message.version,
        lease=message.lease,
    )


def _compare_pb(compare: Compare) -> Any:
    message = rpc_pb2.Compare(
        result=_COMPARE_RESULT[compare.op], target=_COMPARE_TARGET[compare.target], key=compare.key
    )
    setattr(message, compare.target, compare.operand)
    return message


def _op_pb(op: Op) -> Any:
    if op.kind == "put":
        return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=op.key, value=op.value, lease=op.lease))
    if op.kind == "delete":
        return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=op.key, range_end=op.range_end))
    sort_order = rpc_pb2.RangeRequest.ASCEND if op.prefix else rpc_pb2.RangeRequest.NONE
    return rpc_pb2.RequestOp(
        request_range=rpc_pb2.RangeRequest(key=op.key, range_end=op.range_end, sort_order=sort_order)
    )


def _op_result(response: Any) -> list[KeyValue] | int | None:
    kind = response.WhichOneof("response")
    if kind == "response_range":
        return [_kv(kv) for kv in response.response_range.kvs]
    if kind == "response_delete_range":
        return int(response.response_delete_range.deleted)
    return None


class _Stubs:
    """One channel over every member and the stubs on it; replaced as a whole when the client rotates."""

    def __init__(self, endpoints: Sequence[Endpoint], first: int) -> None:
        self.channel = grpc.insecure_channel(channel_target(endpoints, first), options=_CHANNEL_OPTIONS)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.watch = rpc_pb2_grpc.WatchStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.cluster = rpc_pb2_grpc.ClusterStub(self.channel)


class Watch:
    """One watch on its own stream and thread; reconnects from the next revision when its member goes away."""

    def __init__(
        self,
        client: EtcdClient,
        create: Any,
        on_events: Callable[[list[WatchEvent], int], None],
        on_error: Callable[[Exception], None],
    ) -> None:
        self._client = client
        self._create = create
        self._on_events = on_events
        self._on_error = on_error
        self._next_revision = int(create.start_revision)
        self._cancelled = threading.Event()
        self._created = threading.Event()
        self._lock = threading.Lock()
        self._call: Any = None
        self._stream_created = False
        self._heard_at = 0.0  # monotonic time of the current stream's last response (or of its start)
        self._requests: queue.Queue[Any] | None = None
        self._thread = threading.Thread(target=self._run, name=f"etcd-watch-{create.key!r}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        """Stop delivering; no callback runs after this returns (unless called from a callback)."""
        self._cancelled.set()
        self._client._forget_watch(self)
        with self._lock:
            call, requests = self._call, self._requests
        if requests is not None:
            requests.put(None)
        if call is not None:
            call.cancel()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(timeout=5.0)

    def restart(self) -> None:
        """End the current stream (not the watch): it resumes from its next revision on the client's channel."""
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()

    def _run(self) -> None:
        unavailable_since: float | None = None
        last_error = ""
        while not self._cancelled.is_set():
            self._stream_created = False
            try:
                done = self._stream_once()
            except grpc.RpcError as exc:
                if self._cancelled.is_set():
                    return
                reconnect = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
                if exc.code() not in reconnect:
                    self._fail(self._client._error(exc, "watch"))
                    return
                last_error = exc.details() or exc.code().name
                log.debug("etcd watch %r: stream ended (%s); reconnecting", self._create.key, last_error)
                done = False
            except Exception as exc:  # a callback raised: stop, say so, do not skip events silently
                if not self._cancelled.is_set():
                    self._fail(exc)
                return
            if done or self._cancelled.is_set():
                return
            now = time.monotonic()
            if self._stream_created or unavailable_since is None:
                unavailable_since = now  # counted from the last stream that worked, not from the first outage
            if now - unavailable_since > max(self._client.timeout_s, 1.0):
                self._fail(
                    EtcdUnavailable(
                        f"watch {self._create.key!r}: no etcd member of {self._client.endpoints_text} answered "
                        f"for {self._client.timeout_s}s ({last_error})"
                    )
                )
                return
            self._cancelled.wait(_WATCH_RECONNECT_PAUSE_S)

    def _stream_once(self) -> bool:
        """One stream: True when the watch ended for good (compacted, cancelled by etcd)."""
        create = rpc_pb2.WatchCreateRequest()
        create.CopyFrom(self._create)
        create.start_revision = self._next_revision
        requests: queue.Queue[Any] = queue.Queue()
        requests.put(rpc_pb2.WatchRequest(create_request=create))
        stubs = self._client._stubs
        call = stubs.watch.Watch(iter(requests.get, None), wait_for_ready=True, metadata=_REQUIRE_LEADER)
        self._heard_at = time.monotonic()
        with self._lock:
            self._call, self._requests = call, requests
        if self._cancelled.is_set():
            call.cancel()
            return True
        if self._client._stubs is not stubs:  # the client rotated before restart() could see this call
            call.cancel()
        stream_over = threading.Event()
        threading.Thread(
            target=self._watchdog, args=(stubs, call, requests, stream_over), name="etcd-watch-probe", daemon=True
        ).start()
        try:
            for response in call:
                self._heard_at = time.monotonic()
                if response.compact_revision:
                    self._fail(EtcdCompacted(int(response.compact_revision)))
                    return True
                if response.canceled:
                    if not self._cancelled.is_set():
                        self._fail(EtcdError(f"watch {create.key!r} cancelled by etcd: {response.cancel_reason}"))
                    return True
                if response.created:
                    if self._next_revision == 0:
                        self._next_revision = int(response.header.revision) + 1
                    self._stream_created = True
                    self._created.set()
                if response.events:
                    events = [
                        WatchEvent("delete" if e.type == kv_pb2.Event.DELETE else "put", _kv(e.kv))
                        for e in response.events
                    ]
                    self._next_revision = events[-1].kv.mod_revision + 1
                    if self._cancelled.is_set():
                        return True
                    self._on_events(events, int(response.header.revision))
        finally:
            stream_over.set()
            requests.put(None)
            call.cancel()
        return self._cancelled.is_set()

    def _watchdog(self, stubs: _Stubs, call: Any, requests: queue.Queue[Any], stream_over: threading.Event) -> None:
        """Ends a stream whose member went silent: stopped or stuck, it keeps its TCP connection open, and
        gRPC's own keep-alive waits a minute on a ping that was already under way when it stopped."""
        timeout_s = self._client.timeout_s
        # Given up a timeout after a question, not after the last answer: a process that was itself stopped
        # for a while (its clock ran on) asks once more before it gives up on its member.
        asked_at: float | None = None
        while not stream_over.wait(timeout_s / 4):
            now = time.monotonic()
            if asked_at is not None and self._heard_at >= asked_at:
                asked_at = None
            if asked_at is not None and now - asked_at > timeout_s:
                log.info(
                    "etcd watch %r: progress not answered in %.1fs; moving to the next member",
                    self._create.key,
                    now - asked_at,
                )
                if self._client._stubs is stubs:
                    self._client._rotate()
                call.cancel()
                return
            if asked_at is None and now - self._heard_at > timeout_s / 2:
                asked_at = now
                requests.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    def _fail(self, error: Exception) -> None:
        self._created.set()  # wakes a watch() still waiting for creation
        self._cancelled.set()
        self._client._forget_watch(self)
        try:
            self._on_error(error)
        except Exception:
            log.exception("etcd watch: on_error raised")

    def wait_created(self, timeout_s: float) -> bool:
        return self._created.wait(timeout_s)


class _KeepAliveStream:
    """The kept-open LeaseKeepAlive stream: one request, one response at a time."""

    def __init__(self, stub: Any) -> None:
        self.requests: queue.Queue[Any] = queue.Queue()
        self.responses: queue.Queue[Any] = queue.Queue()
        self.call = stub.LeaseKeepAlive(iter(self.requests.get, None), wait_for_ready=True, metadata=_REQUIRE_LEADER)
        self.reader = threading.Thread(target=self._read, name="etcd-lease-keepalive", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self.responses.put(response)
            self.responses.put(EtcdUnavailable("the lease keep-alive stream ended"))
        except grpc.RpcError as exc:
            self.responses.put(exc)

    def close(self) -> None:
        self.requests.put(None)
        self.call.cancel()


class EtcdClient:
    def __init__(self, endpoints: Sequence[str], *, timeout_s: float = 2.0) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        parsed = parse_endpoints(endpoints)
        self.endpoints: tuple[str, ...] = tuple(str(e) for e in parsed)
        self.timeout_s = timeout_s
        self._parsed = parsed
        channel_target(parsed)  # a name that does not resolve is a ValueError now, not a timeout later
        self._stubs = _Stubs(parsed, 0)
        self._retired: _Stubs | None = None  # the channel before the last rotation, closed at the next one
        self._first = 0
        self._rotated_at = 0.0
        self._rotate_lock = threading.Lock()
        self._keepalive_lock = threading.Lock()
        self._keepalive: _KeepAliveStream | None = None
        self._watches: set[Watch] = set()
        self._watches_lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_urls(cls, text: str, **kw: Any) -> EtcdClient:
        """``"http://a:2379,http://b:2379"``; ValueError with a clear message on a bad URL."""
        return cls(split_urls(text), **kw)

    @property
    def endpoints_text(self) -> str:
        return ",".join(self.endpoints)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._watches_lock:
            watches = list(self._watches)
        for watch in watches:
            watch.cancel()
        with self._keepalive_lock:
            if self._keepalive is not None:
                self._keepalive.close()
                self._keepalive = None
        self._stubs.channel.close()
        if self._retired is not None:
            self._retired.channel.close()

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- unary calls ---------------------------------------------------------------------------------

    def _error(self, exc: grpc.RpcError, what: str) -> EtcdError:
        code, details = exc.code(), exc.details() or ""
        text = f"etcd {what} at {self.endpoints_text}: {code.name if code else '?'} {details}".rstrip()
        if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
            return EtcdCompacted(0, text)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
            return EtcdUnavailable(text)  # CANCELLED: the client replaced the channel (we cancel nothing else)
        return EtcdError(text)

    @property
    def watch_failover_s(self) -> float:
        """The longest a watch stays on a member that went silent before it resumes on the next one: its
        watchdog, checking every quarter timeout, asks for progress after half a timeout of silence and gives
        up a timeout after asking; then the watch pauses before it reconnects. Creating the new stream takes
        a round trip more."""
        return self.timeout_s * 2 + _WATCH_RECONNECT_PAUSE_S

    @property
    def _attempt_s(self) -> float:
        return max(self.timeout_s / 3, 0.2)

    def _rotate(self) -> None:
        """Start the channel at the next member: a member that is alive on TCP but silent (stopped, stuck)
        keeps its connection open, so the channel alone would stay on it. At most once per half timeout;
        the replaced channel is closed one rotation later, when no call can still be waiting on it.
        Watches move to the new channel at once (they resume from their next revision)."""
        if len(self._parsed) < 2 or self._closed:
            return
        with self._rotate_lock:
            now = time.monotonic()
            if now - self._rotated_at < self.timeout_s / 2:
                return
            self._rotated_at = now
            self._first = (self._first + 1) % len(self._parsed)
            retired, self._retired = self._retired, self._stubs
            self._stubs = _Stubs(self._parsed, self._first)
        log.info("etcd: no answer in time; the channel now starts at %s", self.endpoints[self._first])
        if retired is not None:
            retired.channel.close()
        with self._watches_lock:
            watches = list(self._watches)
        for watch in watches:
            watch.restart()

    def _call(self, method: Callable[[_Stubs], Any], request: Any, what: str, *, repeatable: bool = True) -> Any:
        if self._closed:
            raise EtcdError(f"etcd {what}: the client is closed")
        deadline = time.monotonic() + self.timeout_s
        last = "no answer"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EtcdUnavailable(
                    f"etcd {what}: no member of {self.endpoints_text} answered within {self.timeout_s}s ({last})"
                )
            attempt = min(remaining, self._attempt_s) if repeatable else remaining
            try:
                return method(self._stubs)(request, timeout=attempt, wait_for_ready=True)
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or ""
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    self._rotate()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED and repeatable:
                    last = f"no answer within {attempt:.2f}s"
                    continue
                if code == grpc.StatusCode.CANCELLED and not self._closed and repeatable:
                    last = "its channel was replaced"  # a rotation closed the channel under this call
                    continue
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise EtcdUnavailable(
                        f"etcd {what}: no member of {self.endpoints_text} answered within {self.timeout_s}s "
                        f"({last}; the write may or may not have been applied)"
                    ) from exc
                retry = code == grpc.StatusCode.UNAVAILABLE and (repeatable or "no leader" in details)
                if not retry:
                    error = self._error(exc, what)
                    if not repeatable and isinstance(error, EtcdUnavailable):
                        error = EtcdUnavailable(f"{error} (the write may or may not have been applied)")
                    raise error from exc
                last = f"{code.name} {details}"
                time.sleep(min(_RETRY_PAUSE_S, max(0.0, deadline - time.monotonic())))

    def _range(self, request: Any) -> tuple[list[KeyValue], int]:
        response = self._call(lambda s: s.kv.Range, request, f"get {request.key!r}")
        return [_kv(kv) for kv in response.kvs], int(response.header.revision)

    def get(self, key: bytes) -> KeyValue | None:
        kvs, _ = self._range(rpc_pb2.RangeRequest(key=key))
        return kvs[0] if kvs else None

    def get_prefix(
        self, prefix: bytes, *, revision: int = 0, limit: int = 0, keys_only: bool = False
    ) -> tuple[list[KeyValue], int]:
        """Keys starting with ``prefix``, sorted by key, at ``revision`` (0: now); and the header revision."""
        return self._range(
            rpc_pb2.RangeRequest(
                key=prefix,
                range_end=prefix_end(prefix),
                revision=revision,
                limit=limit,
                keys_only=keys_only,
                sort_order=rpc_pb2.RangeRequest.ASCEND,
                sort_target=rpc_pb2.RangeRequest.KEY,
            )
        )

    def get_range(self, start: bytes, end: bytes, *, revision: int = 0, limit: int = 0) -> tuple[list[KeyValue], int]:
        """Keys in [start, end), sorted by key; and the header revision."""
        return self._range(
            rpc_pb2.RangeRequest(
                key=start,
                range_end=end,
                revision=revision,
                limit=limit,
                sort_order=rpc_pb2.RangeRequest.ASCEND,
                sort_target=rpc_pb2.RangeRequest.KEY,
            )
        )

    def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        op = Op.put(key, value, lease)
        request = rpc_pb2.PutRequest(key=op.key, value=op.value, lease=op.lease)
        return int(self._call(lambda s: s.kv.Put, request, f"put {key!r}").header.revision)

    def delete(self, key: bytes, *, prefix: bool = False) -> int:
        op = Op.delete(key, prefix)
        request = rpc_pb2.DeleteRangeRequest(key=op.key, range_end=op.range_end)
        return int(self._call(lambda s: s.kv.DeleteRange, request, f"delete {key!r}").header.revision)

    def txn(self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        request = rpc_pb2.TxnRequest(
            compare=[_compare_pb(c) for c in compares],
            success=[_op_pb(o) for o in success],
            failure=[_op_pb(o) for o in failure],
        )
        writes = any(o.kind != "get" for o in (*success, *failure))
        response = self._call(lambda s: s.kv.Txn, request, "txn", repeatable=not writes)
        return TxnResult(
            succeeded=bool(response.succeeded),
            revision=int(response.header.revision),
            responses=[_op_result(r) for r in response.responses],
        )

    def compact(self, revision: int) -> None:
        """Forget the history before ``revision``; a revision already compacted is not an error."""
        try:
            self._call(lambda s: s.kv.Compact, rpc_pb2.CompactionRequest(revision=revision), "compact")
        except EtcdCompacted:
            return

    # --- leases --------------------------------------------------------------------------------------

    def grant(self, ttl_s: int) -> int:
        if ttl_s <= 0:
            raise ValueError(f"lease TTL must be positive, got {ttl_s}")
        response = self._call(lambda s: s.lease.LeaseGrant, rpc_pb2.LeaseGrantRequest(TTL=ttl_s), "lease grant")
        if response.error:
            raise EtcdError(f"etcd lease grant at {self.endpoints_text}: {response.error}")
        return int(response.ID)

    def revoke(self, lease_id: int) -> None:
        """Revoke the lease (its keys are deleted); no error if it is already gone."""
        try:
            self._call(lambda s: s.lease.LeaseRevoke, rpc_pb2.LeaseRevokeRequest(ID=lease_id), "lease revoke")
        except EtcdError as exc:
            if "lease not found" not in str(exc):
                raise

    def keepalive(self, lease_id: int) -> int:
        """Renew the lease once; the remaining TTL in seconds, 0 when the lease is gone."""
        deadline = time.monotonic() + self.timeout_s
        last = "no answer"
        with self._keepalive_lock:
            while True:
                if self._closed:
                    raise EtcdError("etcd lease keep-alive: the client is closed")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._drop_keepalive()
                    raise EtcdUnavailable(
                        f"etcd lease keep-alive: no member of {self.endpoints_text} answered within "
                        f"{self.timeout_s}s ({last})"
                    )
                if self._keepalive is None:
                    self._keepalive = _KeepAliveStream(self._stubs.lease)
                stream = self._keepalive
                stream.requests.put(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
                try:
                    item = stream.responses.get(timeout=min(remaining, self._attempt_s))
                except queue.Empty:  # its member may be waiting on a dead leader, or silent: a new stream
                    self._drop_keepalive()
                    self._rotate()
                    last = f"no answer within {self._attempt_s:.2f}s"
                    continue
                if isinstance(item, grpc.RpcError):
                    self._drop_keepalive()
                    error = self._error(item, "lease keep-alive")
                    if not isinstance(error, EtcdUnavailable) and item.code() != grpc.StatusCode.CANCELLED:
                        raise error
                    last = str(error)
                    time.sleep(min(_RETRY_PAUSE_S, max(0.0, deadline - time.monotonic())))
                    continue
                if isinstance(item, Exception):
                    self._drop_keepalive()
                    last = str(item)
                    continue
                return max(int(item.TTL), 0)

    def _drop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.close()
            self._keepalive = None

    # --- watches -------------------------------------------------------------------------------------

    def watch(
        self,
        key: bytes,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        on_events: Callable[[list[WatchEvent], int], None],
        on_error: Callable[[Exception], None],
    ) -> Watch:
        """Events on ``key`` (or every key under it) from ``start_revision`` (0: from now), in revision order,
        to ``on_events`` on the watch's own thread. The watch exists when this returns. A compacted start
        revision -> ``on_error(EtcdCompacted(compact_revision))``; no member for ``timeout_s`` ->
        ``on_error(EtcdUnavailable)``; after on_error the watch is over."""
        if self._closed:
            raise EtcdError("etcd watch: the client is closed")
        create = rpc_pb2.WatchCreateRequest(
            key=key, range_end=prefix_end(key) if prefix else b"", start_revision=start_revision
        )
        watch = Watch(self, create, on_events, on_error)
        with self._watches_lock:
            self._watches.add(watch)
        watch.start()
        if not watch.wait_created(self.timeout_s):
            watch.cancel()
            raise EtcdUnavailable(
                f"etcd watch {key!r}: no member of {self.endpoints_text} answered within {self.timeout_s}s"
            )
        return watch

    # --- cluster -------------------------------------------------------------------------------------

    def members(self) -> list[Member]:
        response = self._call(lambda s: s.cluster.MemberList, rpc_pb2.MemberListRequest(), "member list")
        return [
            Member(int(m.ID), m.name, tuple(m.peerURLs), tuple(m.clientURLs), bool(m.isLearner))
            for m in response.members
        ]

    def status(self) -> list[MemberStatus]:
        """Each endpoint's own view (asked on its own connection, all at once); ``error`` when it did not answer."""
        channels = [grpc.insecure_channel(endpoint) for endpoint in self.endpoints]
        try:
            futures = [
                rpc_pb2_grpc.MaintenanceStub(channel).Status.future(rpc_pb2.StatusRequest(), timeout=self.timeout_s)
                for channel in channels
            ]
            statuses = []
            for endpoint, future in zip(self.endpoints, futures, strict=True):
                try:
                    r = future.result()
                except grpc.RpcError as exc:
                    code = exc.code()
                    statuses.append(MemberStatus(endpoint, error=f"{code.name if code else '?'} {exc.details()}"))
                    continue
                statuses.append(
                    MemberStatus(
                        endpoint,
                        member_id=int(r.header.member_id),
                        leader_id=int(r.leader),
                        raft_term=int(r.raftTerm),
                        db_size=int(r.dbSize),
                        version=r.version,
                    )
                )
            return statuses
        finally:
            for channel in channels:
                with contextlib.suppress(Exception):
                    channel.close()

    def _forget_watch(self, watch: Watch) -> None:
        with self._watches_lock:
            self._watches.discard(watch)
