"""netmodel.wire: the one request deserializer of the gRPC servers never raises and names bad fields."""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2

from netmodel.wire import Undecodable, field_problems, safe_parser
from placement._pb import placement_pb2 as pb

parse = safe_parser(discovery_pb2.DiscoveryRequest)


def test_bytes_that_are_no_message_are_undecodable_not_an_exception() -> None:
    result = parse(b"\xff\xff\xff")
    assert isinstance(result, Undecodable)
    assert result.reason.startswith("request is not a valid envoy.service.discovery.v3.DiscoveryRequest: ")


def test_every_wrong_wire_type_is_named_with_its_path() -> None:
    # version_info (a string) as a varint, and node { id as a varint }
    result = parse(bytes([0x08, 0x05, 0x12, 0x02, 0x08, 0x05]))
    assert isinstance(result, Undecodable)
    assert result.error == (
        "wrong wire type for field 1 (version_info): varint, expected length-delimited; "
        "wrong wire type for field 1 (node.id): varint, expected length-delimited"
    )


def test_unknown_field_numbers_are_listed_by_path_not_refused() -> None:
    # resource_names[0] is a string: no nested message; Constraints (field 4 of PlaceRequest) carries field 15
    data = bytes([0x0A, 0x03]) + b"web" + bytes([0x22, 0x02, 0x78, 0x01]) + bytes([0xF8, 0x07, 0x01])
    request = safe_parser(pb.PlaceRequest)(data)
    assert not isinstance(request, Undecodable)
    assert field_problems(request).unknown == ("127", "constraints.15")
    assert field_problems(request).wrong_wire_type == ()


def test_both_grpc_servers_use_one_tls_settings_type() -> None:
    from meshctl.xds_grpc import XdsTls
    from pki.grpc_tls import ServerTls
    from placement.grpc_api import ApiTls

    assert XdsTls.__origin__ is ServerTls and ApiTls.__origin__ is ServerTls  # type: ignore[attr-defined]
    tls = XdsTls("chain", "key", "ca")
    assert "key" not in repr(tls) and tls.authorize is None


def test_a_canonical_request_takes_the_fast_path_and_an_unusual_encoding_still_decodes() -> None:
    from envoy.config.core.v3 import base_pb2

    from netmodel.wire import nothing_unknown

    request = discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id="web-1"), type_url="t", version_info="v1")
    data = request.SerializeToString()
    assert nothing_unknown(discovery_pb2.DiscoveryRequest.FromString(data), len(data))
    assert parse(data) == request
    # version_info twice (last wins): a valid, unusual encoding; not canonical, so the slow path decides
    twice = data + bytes([0x0A, 0x02]) + b"v2"
    assert not nothing_unknown(discovery_pb2.DiscoveryRequest.FromString(twice), len(twice))
    decoded = parse(twice)
    assert not isinstance(decoded, Undecodable) and decoded.version_info == "v2"


def test_an_unknown_or_mistyped_field_deep_inside_a_message_is_still_seen() -> None:
    # node { locality { field 9 (unknown), as a varint } } and node { id as a varint }
    locality_with_unknown = bytes([0x22, 0x02, 0x48, 0x01])  # Node.locality (4) = { 9: 1 }
    node = bytes([0x12, len(locality_with_unknown)]) + locality_with_unknown
    decoded = parse(node)
    assert not isinstance(decoded, Undecodable)  # unknown numbers are tolerated by the parser...
    assert field_problems(decoded).unknown == ("node.locality.9",)  # ...and kept, so a server can refuse them
    assert isinstance(parse(bytes([0x12, 0x02, 0x08, 0x05])), Undecodable)  # node.id as a varint
