"""The AccessLogService (adapter, grpc.aio): sidecars stream the requests and connections their RBAC
denied (``envoy_config.denial_access_log``), on the xDS server, and each becomes a denial in the
controller's log (``layer="envoy"``).

A stream is authorized like an ADS stream: its first message names the sidecar's node id, which must be
the one its client certificate may speak for (the same ``NodeAuthorizer``), and it never changes. A
stream without a client certificate is refused (every listener is mTLS when there is an authorizer).
Like an ADS stream it is authorized again when a change concerns its node (``open_streams``) and
before each message is taken: one that no longer passes ends with PERMISSION_DENIED. What a
stream adds is bounded: entries per message and message size (beyond: counted as dropped, not kept), and
the denial log itself keeps a bounded number of series and recent entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import grpc
from envoy.service.accesslog.v3 import als_pb2

from meshctl.denied_calls import DeniedCall, denied_http_call, denied_tcp_connection
from meshctl.servicer import NodeAuthorizer, OpenStreams, _peer_certificate
from netmodel.logsafe import log_safe
from netmodel.wire import Undecodable, safe_parser

LOG = logging.getLogger("edgectl.mesh")

SERVICE = "envoy.service.accesslog.v3.AccessLogService"
MAX_ENTRIES_PER_MESSAGE = 256
MAX_MESSAGE_BYTES = 256 * 1024
"""Envoy flushes its access log buffer at 16 KiB by default: a message far larger is not a sidecar's."""
_DONE = object()
_RECHECK_DUE = object()


class DenialRecorder(Protocol):
    """Where denials go (``edgectl.policy_denials.DenialLog`` is one)."""

    def record(self, *, layer: str, caller: str, service: str, at: float, count: int = 1, detail: str = "") -> None: ...


class AccessLogCallbacks(Protocol):
    """What the servicer reports (``meshctl.metrics.XdsMetrics`` is one)."""

    def access_log_stream(self, delta: int) -> None: ...

    def access_log_entries(self, outcome: str, count: int) -> None: ...


class AccessLogServicer:
    """``StreamAccessLogs``: every RBAC denial in a sidecar's entries is recorded for the service of
    the workload that sidecar belongs to (``service_of(node_id)``; None: not a workload's sidecar)."""

    def __init__(
        self,
        recorder: DenialRecorder | None,
        service_of: Callable[[str], str | None],
        callbacks: AccessLogCallbacks,
        authorize: NodeAuthorizer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._recorder = recorder
        self._service_of = service_of
        self._callbacks = callbacks
        self._authorize = authorize
        self._clock = clock
        self.open_streams = OpenStreams()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "StreamAccessLogs": grpc.stream_unary_rpc_method_handler(
                    self.stream_access_logs,
                    request_deserializer=safe_parser(als_pb2.StreamAccessLogsMessage),
                    response_serializer=als_pb2.StreamAccessLogsResponse.SerializeToString,
                )
            },
        )

    async def stream_access_logs(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        loop = asyncio.get_running_loop()
        # Bounded: a sidecar that floods is slowed by gRPC flow control, not buffered here.
        inbox: asyncio.Queue[Any] = asyncio.Queue(maxsize=16)

        def recheck() -> None:  # on the loop. Dropped when the inbox is full: every message rechecks anyway
            with contextlib.suppress(asyncio.QueueFull):
                inbox.put_nowait(_RECHECK_DUE)

        def recheck_from_any_thread() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(recheck)

        async def read() -> None:
            try:
                async for message in requests:
                    await inbox.put(message)
            except Exception as exc:  # the client went away mid-read
                LOG.debug("access log stream read ended: %s", log_safe(repr(exc)))
            await inbox.put(_DONE)

        node: str | None = None
        registration = self.open_streams.add(recheck_from_any_thread)
        self._callbacks.access_log_stream(+1)
        reader = asyncio.create_task(read())
        try:
            while (message := await inbox.get()) is not _DONE:
                if message is _RECHECK_DUE:
                    if node is not None:
                        await self._check(node, context, opened=False)
                    continue
                if isinstance(message, Undecodable):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not an access log message: {message.error}")
                named = message.identifier.node.id if message.HasField("identifier") else ""
                if node is None:
                    if not named:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message names no node")
                    registration.name(named)  # before the check: a change after it rechecks this stream
                    await self._check(named, context, opened=True)
                    node = named
                elif named and named != node:
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "a stream reports for one node only")
                else:
                    await self._check(node, context, opened=False)
                self._take(node, message)
        finally:
            reader.cancel()
            registration.remove()
            self._callbacks.access_log_stream(-1)
        return als_pb2.StreamAccessLogsResponse()

    async def _check(self, node: str, context: grpc.aio.ServicerContext, *, opened: bool) -> None:
        refusal = self._refusal(node, context)
        if refusal is None:
            return
        peer = log_safe(context.peer())
        if opened:
            LOG.warning("refusing access log stream from %s: %s", peer, log_safe(refusal))
        else:
            LOG.warning(
                "ending access log stream of %s from %s: no longer authorized: %s",
                log_safe(node),
                peer,
                log_safe(refusal),
            )
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)

    def _refusal(self, node: str, context: grpc.aio.ServicerContext) -> str | None:
        if self._authorize is None:
            return None
        certificate = _peer_certificate(context)
        if certificate is None:  # every listener is mTLS when there is an authorizer: fail closed
            return "no client certificate: the access log service requires mTLS"
        return self._authorize(node, certificate)

    def _take(self, node: str, message: Any) -> None:
        entries = len(message.http_logs.log_entry) + len(message.tcp_logs.log_entry)
        if message.ByteSize() > MAX_MESSAGE_BYTES:
            self._callbacks.access_log_entries("dropped", entries)
            return
        service = self._service_of(node)
        if service is None:
            self._callbacks.access_log_entries("unknown_node", entries)
            return
        now = self._clock()
        denied: list[DeniedCall | None] = [
            denied_http_call(e, service, now) for e in message.http_logs.log_entry[:MAX_ENTRIES_PER_MESSAGE]
        ]
        room = MAX_ENTRIES_PER_MESSAGE - len(denied)
        denied += [denied_tcp_connection(e, service, now) for e in message.tcp_logs.log_entry[: max(0, room)]]
        recorded = [call for call in denied if call is not None]
        for call in recorded:
            if self._recorder is not None:
                self._recorder.record(
                    layer="envoy", caller=call.caller, service=call.service, at=call.at, detail=call.detail
                )
        self._callbacks.access_log_entries("recorded", len(recorded))
        self._callbacks.access_log_entries("not_denied", len(denied) - len(recorded))
        self._callbacks.access_log_entries("dropped", entries - len(denied))
