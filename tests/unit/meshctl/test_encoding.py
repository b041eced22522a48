"""Serialize once: responses are built from bytes encoded once per resource version, shared by every
stream of a server, SotW and delta; a changed resource is encoded anew and never served stale."""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2

from meshctl.delta import DeltaStream
from meshctl.encoding import EncodedResponse, ResponseEncoder, serialize
from meshctl.snapshot import MeshConfig, build_snapshots, make_resource
from meshctl.sotw import SotwStream
from meshctl.xds_types import CLUSTER, ENDPOINTS
from netmodel import events as ev
from tests.unit.meshctl.mesh_helpers import (
    cache_for,
    delta_request,
    placed_state,
    sotw_request,
    unpack,
    workload,
)

CONFIG = MeshConfig(tcp_services=frozenset({"db"}))


def endpoint_ips(type_url: str, packed) -> set[str]:
    cla = unpack(type_url, packed)
    return {lb.endpoint.address.socket_address.address for group in cla.endpoints for lb in group.lb_endpoints}


def sotw_endpoints(stream: SotwStream, node: str) -> EncodedResponse:
    [response] = stream.on_request(sotw_request(ENDPOINTS, ["svc/web"], node_id=node))
    return response


def test_encoded_sotw_response_is_the_message_protobuf_would_send() -> None:
    cache = cache_for(placed_state(), CONFIG)
    [response] = SotwStream(cache).on_request(sotw_request(CLUSTER, node_id="u1"))
    assert isinstance(response, EncodedResponse)
    snapshot = cache.snapshot("u1")
    assert snapshot is not None
    clusters = snapshot.of_type(CLUSTER)
    expected = discovery_pb2.DiscoveryResponse(version_info=response.version_info, type_url=CLUSTER, nonce="1")
    expected.resources.extend(clusters[name].packed for name in sorted(clusters))
    assert discovery_pb2.DiscoveryResponse.FromString(serialize(response)) == expected
    assert response.nonce == "1" and response.type_url == CLUSTER


def test_encoded_delta_response_is_the_message_protobuf_would_send() -> None:
    encoder = ResponseEncoder()
    resource = make_resource("c1", discovery_pb2.DiscoveryRequest(type_url="x"))  # any message will do
    response = encoder.delta(CLUSTER, "3-abc", [resource], ["gone", ""], "7")
    expected = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info="3-abc", type_url=CLUSTER, nonce="7", removed_resources=["gone", ""]
    )
    expected.resources.add(name="c1", version=resource.digest, resource=resource.packed)
    assert discovery_pb2.DeltaDiscoveryResponse.FromString(serialize(response)) == expected


def test_streams_of_a_server_share_the_bytes_of_shared_content_sotw() -> None:
    cache = cache_for(placed_state(), CONFIG)
    encoder = ResponseEncoder()
    first = sotw_endpoints(SotwStream(cache, encoder=encoder), "u1")
    encodes = encoder.encodes
    hits = encoder.hits
    second = sotw_endpoints(SotwStream(cache, encoder=encoder), "u2")  # u1 and u2 call the same services
    assert encoder.encodes == encodes  # nothing encoded again
    assert encoder.hits == hits + 1  # the whole body came from the cache
    assert first.data == second.data  # the same content, the same nonce ("1" on each stream)


def test_streams_of_a_server_share_the_bytes_of_shared_content_delta() -> None:
    cache = cache_for(placed_state(), CONFIG)
    encoder = ResponseEncoder()
    [first] = DeltaStream(cache, encoder=encoder).on_request(delta_request(CLUSTER, node_id="u1"))
    encodes = encoder.encodes
    [second] = DeltaStream(cache, encoder=encoder).on_request(delta_request(CLUSTER, node_id="u2"))
    assert encoder.encodes == encodes and encoder.hits >= len(second.resources)
    assert first.data == second.data


def test_a_changed_resource_is_encoded_again_and_never_served_stale_sotw() -> None:
    cache = cache_for(placed_state(), CONFIG)
    encoder = ResponseEncoder()
    stream = SotwStream(cache, encoder=encoder)
    before = sotw_endpoints(stream, "u1")
    [old] = before.resources
    assert "10.1.9.10" not in endpoint_ips(ENDPOINTS, old)
    stream.on_request(sotw_request(ENDPOINTS, ["svc/web"], nonce=before.nonce, version=before.version_info))
    encodes = encoder.encodes
    moved = placed_state().apply(ev.WorkloadPlaced(workload("web-1", "web", "c-n1")))
    cache.set_snapshots(build_snapshots(moved, CONFIG))
    [after] = stream.on_change()
    assert encoder.encodes > encodes
    assert after.version_info != before.version_info
    [new] = after.resources
    assert "10.1.9.10" in endpoint_ips(ENDPOINTS, new)
    # Another stream of the same node gets the new bytes too, from the cache.
    encodes = encoder.encodes
    again = sotw_endpoints(SotwStream(cache, encoder=encoder), "u2")
    assert encoder.encodes == encodes and again.resources[0] == new


def test_a_changed_resource_is_encoded_again_and_never_served_stale_delta() -> None:
    cache = cache_for(placed_state(), CONFIG)
    encoder = ResponseEncoder()
    stream = DeltaStream(cache, encoder=encoder)
    [answer] = stream.on_request(delta_request(ENDPOINTS, ["svc/web"], node_id="u1"))
    stream.on_request(delta_request(ENDPOINTS, nonce=answer.nonce))
    moved = placed_state().apply(ev.WorkloadPlaced(workload("web-1", "web", "c-n1")))
    cache.set_snapshots(build_snapshots(moved, CONFIG))
    [update] = stream.on_change()
    [entry] = update.resources
    assert entry.version != answer.resources[0].version
    assert "10.1.9.10" in endpoint_ips(ENDPOINTS, entry.resource)


def test_same_name_and_version_but_other_content_is_not_confused() -> None:
    """The key is the content digest, not the version label alone: a rebuilt resource whose type
    version is reused (the label survives a restart) still gets its own bytes."""
    encoder = ResponseEncoder()
    a = make_resource("c", discovery_pb2.DiscoveryRequest(type_url="a"))
    b = make_resource("c", discovery_pb2.DiscoveryRequest(type_url="b"))
    one = encoder.sotw(CLUSTER, "1-x", "d1", [a], "1")
    two = encoder.sotw(CLUSTER, "1-x", "d2", [b], "1")
    assert one.resources[0] == a.packed and two.resources[0] == b.packed


def test_the_cache_is_bounded_and_evicts_oldest_first() -> None:
    encoder = ResponseEncoder(max_bytes=600)
    for index in range(50):
        resource = make_resource(f"c{index}", discovery_pb2.DiscoveryRequest(type_url=f"t{index}"))
        encoder.delta(CLUSTER, "1", [resource], [], "1")
    assert encoder.cached_bytes <= 600 and 0 < len(encoder) < 100
    # What was evicted is encoded again when asked for, correctly.
    first = make_resource("c0", discovery_pb2.DiscoveryRequest(type_url="t0"))
    [entry] = encoder.delta(CLUSTER, "1", [first], [], "2").resources
    assert entry.name == "c0" and entry.resource == first.packed
