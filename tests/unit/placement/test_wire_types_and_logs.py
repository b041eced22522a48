"""The API's request checks name a field sent with the wrong protobuf wire type as such (not as a
field the server does not know), and what clients send is escaped in the API's log lines."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest

from netmodel.wire import safe_parser as _parser
from placement._pb import placement_pb2 as pb
from placement.errors import PlacementRefused, Refusal
from placement.grpc_api import _checked, _unary


def refusal_of(message_class: Any, data: bytes) -> str:
    with pytest.raises(PlacementRefused) as refused:
        _checked(_parser(message_class)(data))
    assert refused.value.kind is Refusal.INVALID_ARGUMENT
    return refused.value.reason


def test_a_known_field_with_the_wrong_wire_type_is_reported_as_such() -> None:
    reason = refusal_of(pb.GetRequest, bytes([0x08, 0x05]))  # field 1 (a string) sent as a varint
    assert "wrong wire type for field 1 (workload_id): varint, expected length-delimited" in reason
    assert "does not know" not in reason


def test_a_wrong_wire_type_inside_a_nested_message_names_its_path() -> None:
    # service "web"; constraints { max_latency_ms (a double) sent as a varint }
    data = bytes([0x0A, 0x03]) + b"web" + bytes([0x22, 0x02, 0x10, 0x05])
    reason = refusal_of(pb.PlaceRequest, data)
    assert "wrong wire type for field 2 (constraints.max_latency_ms): varint, expected 64-bit" in reason


def test_a_field_number_the_proto_lacks_is_still_an_unknown_field() -> None:
    reason = refusal_of(pb.GetRequest, bytes([0x78, 0x01]))  # field 15
    assert "fields this server does not know (field numbers 15)" in reason


class RefusedContext:
    """What ``_unary`` reads of a call: a peer and a client certificate; ``abort`` raises as grpc does."""

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5\nERROR forged peer"

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [b"PEM"]}

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise RuntimeError(f"aborted: {code} {details}")


def test_a_refusal_log_line_escapes_what_the_client_sent(caplog: pytest.LogCaptureFixture) -> None:
    handler = _unary(lambda _request, _context: None, authorize=lambda _pem: "identity 'x\nERROR forged' refused")
    with caplog.at_level(logging.WARNING, logger="edgectl.placement.api"), pytest.raises(RuntimeError):
        handler(pb.GetRequest(), RefusedContext())  # type: ignore[arg-type]
    (line,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in line
    assert "127.0.0.1:5\\nERROR forged peer" in line and "'x\\nERROR forged' refused" in line
