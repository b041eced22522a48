"""Sidecar denial access logs: an entry becomes a denial (pure mapping), and the AccessLogService
records them for the sidecar's service, only for the node its certificate may speak for, bounded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2

from meshctl import access_log
from meshctl.access_log import AccessLogServicer
from meshctl.denied_calls import DeniedCall, denied_http_call, denied_tcp_connection
from netmodel.wire import Undecodable

CALLER = "spiffe://edgectl.local/host/u2"
DENIED = "rbac_access_denied_matched_policy[none]"


def http_entry(
    details: str = DENIED, san: str | None = CALLER, path: str = "/cart?token=secret", started: float = 100.0
) -> Any:
    entry = accesslog_pb2.HTTPAccessLogEntry()
    common = entry.common_properties
    common.downstream_remote_address.socket_address.address = "10.0.0.9"
    common.downstream_remote_address.socket_address.port_value = 40000
    if san is not None:
        common.tls_properties.peer_certificate_properties.subject_alt_name.add(uri=san)
    common.start_time.seconds = int(started)
    entry.request.request_method = base_pb2.GET
    entry.request.path = path
    entry.response.response_code.value = 403
    entry.response.response_code_details = details
    return entry


def test_an_rbac_403_is_a_denial_of_the_peer_identity() -> None:
    assert denied_http_call(http_entry(), "cart", now=200.0) == DeniedCall(CALLER, "cart", 100.0, "GET /cart")


def test_without_a_certificate_the_caller_is_its_address() -> None:
    denial = denied_http_call(http_entry(san=None), "cart", now=200.0)
    assert denial is not None and denial.caller == "10.0.0.9"


def test_the_apps_own_403_is_no_denial() -> None:
    assert denied_http_call(http_entry(details="via_upstream"), "cart", now=200.0) is None


def test_a_clock_far_ahead_is_not_believed_and_long_text_is_clipped() -> None:
    denial = denied_http_call(http_entry(started=10_000.0, path="/" + "x" * 5000), "cart", now=200.0)
    assert denial is not None and denial.at == 200.0 and len(denial.detail) <= 200


def test_a_tcp_connection_closed_by_rbac_is_a_denial() -> None:
    entry = accesslog_pb2.TCPAccessLogEntry()
    entry.common_properties.tls_properties.peer_certificate_properties.subject_alt_name.add(uri=CALLER)
    assert denied_tcp_connection(entry, "db", now=5.0) is None
    entry.common_properties.connection_termination_details = DENIED
    assert denied_tcp_connection(entry, "db", now=5.0) == DeniedCall(CALLER, "db", 5.0, "connection")


# -- the servicer -------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(self, **kwargs: Any) -> None:
        self.records.append(kwargs)


class Callbacks:
    def __init__(self) -> None:
        self.streams = 0
        self.entries: dict[str, int] = {}

    def access_log_stream(self, delta: int) -> None:
        self.streams += delta

    def access_log_entries(self, outcome: str, count: int) -> None:
        self.entries[outcome] = self.entries.get(outcome, 0) + count


class Context:
    def __init__(self, certificate: bytes | None = None) -> None:
        self.certificate = certificate
        self.aborted: tuple[Any, str] | None = None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self.certificate]} if self.certificate else {}

    async def abort(self, code: Any, details: str) -> None:
        self.aborted = (code, details)
        raise grpc.aio.AbortError()


def message(node: str | None, *entries: Any) -> Any:
    msg = als_pb2.StreamAccessLogsMessage()
    if node is not None:
        msg.identifier.node.id = node
        msg.identifier.log_name = "edgectl-denials"
    msg.http_logs.log_entry.extend(entries)
    return msg


async def _messages(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


def run(servicer: AccessLogServicer, items: list[Any], context: Context) -> None:
    async def go() -> None:
        with contextlib.suppress(grpc.aio.AbortError):
            await servicer.stream_access_logs(_messages(items), context)  # type: ignore[arg-type]

    asyncio.run(go())


def servicer(recorder: Recorder, callbacks: Callbacks, authorize: Any = None) -> AccessLogServicer:
    services = {"cart-1": "cart"}
    return AccessLogServicer(recorder, services.get, callbacks, authorize, clock=lambda: 200.0)


def test_denials_are_recorded_for_the_sidecars_service() -> None:
    recorder, callbacks = Recorder(), Callbacks()
    items = [message("cart-1", http_entry()), message(None, http_entry(details="via_upstream"), http_entry())]
    run(servicer(recorder, callbacks), items, Context())
    assert (
        recorder.records
        == [{"layer": "envoy", "caller": CALLER, "service": "cart", "at": 100.0, "detail": "GET /cart"}] * 2
    )
    assert callbacks.entries == {"recorded": 2, "not_denied": 1, "dropped": 0}
    assert callbacks.streams == 0  # opened, then closed


def test_a_peer_reports_only_for_the_node_its_certificate_names() -> None:
    recorder, callbacks = Recorder(), Callbacks()
    allowed = {"cart-1"}

    def authorize(node: str, _certificate: str) -> str | None:
        return None if node in allowed else f"certificate is not {node}'s"

    refused = Context(certificate=b"PEM")
    run(servicer(recorder, callbacks, authorize), [message("other-1", http_entry())], refused)
    assert refused.aborted is not None and refused.aborted[0] == grpc.StatusCode.PERMISSION_DENIED
    switched = Context(certificate=b"PEM")
    run(servicer(recorder, callbacks, authorize), [message("cart-1"), message("other-1", http_entry())], switched)
    assert switched.aborted is not None and switched.aborted[0] == grpc.StatusCode.PERMISSION_DENIED
    assert recorder.records == []


def test_bad_and_oversized_input_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, callbacks = Recorder(), Callbacks()
    context = Context()
    run(servicer(recorder, callbacks), [Undecodable("x", "garbage")], context)
    assert context.aborted is not None and context.aborted[0] == grpc.StatusCode.INVALID_ARGUMENT
    nameless = Context()
    run(servicer(recorder, callbacks), [message(None, http_entry())], nameless)
    assert nameless.aborted is not None and nameless.aborted[0] == grpc.StatusCode.INVALID_ARGUMENT

    run(servicer(recorder, callbacks), [message("u1", http_entry())], Context())  # a host's sidecar: no service
    assert callbacks.entries["unknown_node"] == 1 and recorder.records == []

    monkeypatch.setattr(access_log, "MAX_ENTRIES_PER_MESSAGE", 3)
    run(servicer(recorder, callbacks), [message("cart-1", *[http_entry()] * 5)], Context())
    assert len(recorder.records) == 3 and callbacks.entries["dropped"] == 2
    monkeypatch.setattr(access_log, "MAX_MESSAGE_BYTES", 100)
    run(servicer(recorder, callbacks), [message("cart-1", *[http_entry()] * 5)], Context())
    assert len(recorder.records) == 3 and callbacks.entries["dropped"] == 7


def test_a_stream_without_a_client_certificate_is_refused_when_there_is_an_authorizer() -> None:
    recorder, callbacks = Recorder(), Callbacks()
    anonymous = Context(certificate=None)
    run(servicer(recorder, callbacks, lambda _node, _certificate: None), [message("cart-1", http_entry())], anonymous)
    assert anonymous.aborted is not None and anonymous.aborted[0] == grpc.StatusCode.PERMISSION_DENIED
    assert recorder.records == []


def test_an_open_stream_is_ended_when_a_model_change_withdraws_its_authorization() -> None:
    recorder, callbacks = Recorder(), Callbacks()
    allowed = {"cart-1"}
    log = servicer(recorder, callbacks, lambda node, _c: None if node in allowed else f"{node} is not yours")
    context = Context(certificate=b"PEM")

    async def go() -> None:
        more: asyncio.Queue[Any] = asyncio.Queue()
        await more.put(message("cart-1", http_entry()))

        async def messages() -> AsyncIterator[Any]:
            while (item := await more.get()) is not None:
                yield item

        call = asyncio.create_task(log.stream_access_logs(messages(), context))  # type: ignore[arg-type]
        while not recorder.records:
            await asyncio.sleep(0.01)
        allowed.clear()  # the workload left the node
        log.open_streams.recheck_all()
        with contextlib.suppress(grpc.aio.AbortError):
            await asyncio.wait_for(call, 10)

    asyncio.run(go())
    assert context.aborted is not None and context.aborted[0] == grpc.StatusCode.PERMISSION_DENIED
    assert len(recorder.records) == 1 and callbacks.streams == 0
    assert len(log.open_streams) == 0
