"""The xDS server's request parser reports a field sent with the wrong wire type (protobuf would keep
it as an unknown field, where it looks absent); client strings are escaped in its log lines."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2

from meshctl.cache import SnapshotCache
from meshctl.protocol import NullObserver
from meshctl.sotw import SotwStream
from meshctl.xds_grpc import _AdsServicer, _safe_parser, _Undecodable
from meshctl.xds_types import CLUSTER
from netmodel.logsafe import log_safe
from tests.unit.meshctl.mesh_helpers import sotw_request

parse = _safe_parser(discovery_pb2.DiscoveryRequest)


def test_a_wrong_wire_type_is_reported_as_one_naming_the_field() -> None:
    top = parse(bytes([0x08, 0x05]))  # version_info (a string) sent as a varint
    assert isinstance(top, _Undecodable)
    assert top.error == "wrong wire type for field 1 (version_info): varint, expected length-delimited"
    nested = parse(bytes([0x12, 0x02, 0x08, 0x05]))  # node { id as a varint }
    assert isinstance(nested, _Undecodable)
    assert nested.error == "wrong wire type for field 1 (node.id): varint, expected length-delimited"


def test_field_numbers_the_proto_lacks_are_tolerated() -> None:
    request = parse(bytes([0x12, 0x03, 0x0A, 0x01]) + b"A" + bytes([0xF8, 0x07, 0x01]))  # field 127: a newer Envoy's
    assert not isinstance(request, _Undecodable) and request.node.id == "A"


def test_log_safe_escapes_control_characters_and_cuts_long_text() -> None:
    assert log_safe("web-1\nINFO forged\r\x1b[2J\u2028\\") == "web-1\\nINFO forged\\r\\x1b[2J\\u2028\\\\"
    assert log_safe("é ok") == "é ok"
    assert log_safe("x" * 300, limit=10) == "x" * 10 + "..."


class FakeContext:
    def __init__(self) -> None:
        self.aborted: tuple[Any, str] | None = None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1\nERROR forged peer"

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [b"PEM"]}

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    async def write(self, _response: Any) -> None:
        pass

    async def abort(self, code: Any, details: str) -> None:
        self.aborted = (code, details)
        raise grpc.aio.AbortError()


async def _requests(*items: Any) -> AsyncIterator[Any]:
    for item in items:
        yield item


def serve(servicer: _AdsServicer, *requests: Any) -> FakeContext:
    context = FakeContext()

    async def run() -> None:
        stream = SotwStream(SnapshotCache())
        with pytest.raises(grpc.aio.AbortError):
            await servicer._serve(stream, _requests(*requests), context)  # type: ignore[arg-type]

    asyncio.run(run())
    return context


def only_line(caplog: pytest.LogCaptureFixture) -> str:
    (line,) = [r.getMessage() for r in caplog.records if r.name == "edgectl.mesh"]
    assert "\n" not in line
    return line


def test_a_refused_stream_logs_the_node_and_peer_escaped(caplog: pytest.LogCaptureFixture) -> None:
    servicer = _AdsServicer(SnapshotCache(), _Metrics(), authorize=lambda node, _pem: f"node {node} is not yours")
    with caplog.at_level(logging.INFO, logger="edgectl.mesh"):
        context = serve(servicer, sotw_request(CLUSTER, [], node_id="a\nb"))
    assert context.aborted is not None and context.aborted[0] == grpc.StatusCode.PERMISSION_DENIED
    line = only_line(caplog)
    assert "127.0.0.1:1\\nERROR forged peer" in line and "node a\\nb is not yours" in line


def test_an_ended_stream_logs_the_node_escaped(caplog: pytest.LogCaptureFixture) -> None:
    servicer = _AdsServicer(SnapshotCache(), _Metrics())
    with caplog.at_level(logging.INFO, logger="edgectl.mesh"):
        context = serve(servicer, sotw_request("type.example/Unknown", [], node_id="web-1\nERROR forged"))
    assert context.aborted is not None and context.aborted[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert "ending sotw stream of web-1\\nERROR forged: unknown type_url" in only_line(caplog)


class _Metrics(NullObserver):
    """The servicer's callbacks (``XdsCallbacks``), ignored."""

    def opened(self, mode: str) -> None:
        pass

    def closed(self, mode: str) -> None:
        pass

    def failed(self, code: str) -> None:
        pass
