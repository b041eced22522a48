"""The state-of-the-world ADS conversation, without gRPC: nonces, ACK/NACK, ordering, re-requests."""

from __future__ import annotations

import dataclasses

import pytest

from meshctl.cache import SnapshotCache
from meshctl.protocol import ProtocolError
from meshctl.snapshot import MeshConfig, TlsIdentity, build_snapshots
from meshctl.sotw import SotwStream
from meshctl.xds_types import CLUSTER, ENDPOINTS, LISTENER, PUSH_ORDER, ROUTES, SECRET
from netmodel import events as ev
from tests.unit.meshctl.mesh_helpers import (
    SotwClient,
    cache_for,
    client_state,
    converse,
    deliver,
    expected_state,
    names_of,
    placed_state,
    sotw_request,
    unpack,
    workload,
)

CONFIG = MeshConfig(tcp_services=frozenset({"db"}))


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def pushed(self, type_url: str) -> None:
        self.events.append(("push", type_url))

    def acked(self, type_url: str, seconds: float) -> None:
        assert seconds >= 0
        self.events.append(("ack", type_url))

    def nacked(self, type_url: str) -> None:
        self.events.append(("nack", type_url))


def settled(node_id: str = "web-1", config: MeshConfig = CONFIG):
    cache = cache_for(placed_state(), config)
    stream = SotwStream(cache)
    client = SotwClient(node_id)
    converse(stream, client, client.start())
    return cache, stream, client


def rebuild(cache: SnapshotCache, state, config: MeshConfig = CONFIG) -> None:
    cache.set_snapshots(build_snapshots(state, config))


def test_an_envoy_like_client_gets_everything_and_acks_it() -> None:
    cache, _stream, client = settled()
    assert client_state(client) == expected_state(cache, client, "web-1")
    applied = client.applied
    assert applied.index(CLUSTER) < applied.index(ENDPOINTS) and applied.index(LISTENER) < applied.index(ROUTES)
    view = cache.clients_view()["nodes"]["web-1"]
    assert view["in_sync"] and view["mode"] == "sotw"
    for type_name in ("cds", "eds", "lds", "rds"):
        assert view["types"][type_name]["acked"] == view["types"][type_name]["sent"]
        assert view["types"][type_name]["pending_nonce"] is None and view["types"][type_name]["current"]


def test_ack_by_nonce_then_silence_until_something_changes() -> None:
    cache = cache_for(placed_state(), CONFIG)
    recorder = Recorder()
    stream = SotwStream(cache, recorder)
    [response] = stream.on_request(sotw_request(CLUSTER, node_id="u1"))
    assert names_of(response) == ["svc/web"] and response.nonce
    ack = sotw_request(CLUSTER, nonce=response.nonce, version=response.version_info)
    assert stream.on_request(ack) == []
    assert recorder.events == [("push", CLUSTER), ("ack", CLUSTER)]
    assert cache.clients_view()["nodes"]["u1"]["types"]["cds"]["acked"] == response.version_info


def test_a_nack_is_recorded_and_the_rejected_config_is_not_sent_again() -> None:
    cache = cache_for(placed_state(), CONFIG)
    recorder = Recorder()
    stream = SotwStream(cache, recorder)
    [response] = stream.on_request(sotw_request(CLUSTER, node_id="u1"))
    nack = sotw_request(
        CLUSTER, nonce=response.nonce, version="", error="connect_timeout: value must be greater than 0"
    )
    assert stream.on_request(nack) == []
    status = cache.clients_view()["nodes"]["u1"]["types"]["cds"]
    assert (
        status["last_nack"]["error"].startswith("connect_timeout")
        and status["last_nack"]["version"] == response.version_info
    )
    assert status["acked"] is None and not status["current"]
    assert ("nack", CLUSTER) in recorder.events
    assert stream.on_change() == []  # same content: nothing to resend
    # The corrected config is pushed as soon as it exists.
    rebuild(cache, placed_state(), dataclasses.replace(CONFIG, connect_timeout_ms=2000))
    [fixed] = stream.on_change()
    assert fixed.version_info != response.version_info
    assert stream.on_request(sotw_request(CLUSTER, nonce=fixed.nonce, version=fixed.version_info)) == []
    assert cache.clients_view()["nodes"]["u1"]["types"]["cds"]["acked"] == fixed.version_info


def test_a_nacking_client_keeps_its_last_good_config() -> None:
    bad_timeout = dataclasses.replace(CONFIG, connect_timeout_ms=-1000)

    def reject(type_url, message):
        if type_url == CLUSTER and message.connect_timeout.ToMilliseconds() <= 0:
            return "connect_timeout: value must be greater than 0"
        return None

    cache, stream, client = settled("u1")
    client.reject = reject
    good = client_state(client)
    rebuild(cache, placed_state(), bad_timeout)
    requests = [r for response in stream.on_change() for r in client.receive(response)]
    converse(stream, client, requests)
    assert client.nacks and client_state(client) == good
    assert cache.clients_view()["nodes"]["u1"]["types"]["cds"]["last_nack"] is not None
    assert not cache.is_synced("u1")
    rebuild(cache, placed_state(), CONFIG)  # corrected: back to the good content
    converse(stream, client, [r for response in stream.on_change() for r in client.receive(response)])
    assert client_state(client) == good
    assert cache.is_synced("u1")


def test_stale_nonces_are_ignored_and_unknown_ones_end_the_stream() -> None:
    cache = cache_for(placed_state(), CONFIG)
    stream = SotwStream(cache)
    [first] = stream.on_request(sotw_request(CLUSTER, node_id="u1"))
    assert stream.on_request(sotw_request(CLUSTER, nonce=first.nonce, version=first.version_info)) == []
    rebuild(cache, placed_state(), dataclasses.replace(CONFIG, connect_timeout_ms=2000))
    [second] = stream.on_change()
    # A request with the older nonce was sent before the client saw ``second``: ignore it, the
    # answer to ``second`` will carry the client's whole view.
    assert stream.on_request(sotw_request(CLUSTER, nonce=first.nonce, version=first.version_info)) == []
    assert cache.clients_view()["nodes"]["u1"]["types"]["cds"]["pending_nonce"] == second.nonce
    with pytest.raises(ProtocolError, match="never sent"):
        stream.on_request(sotw_request(CLUSTER, nonce="not-a-nonce"))
    with pytest.raises(ProtocolError, match="never sent"):
        stream.on_request(sotw_request(CLUSTER, nonce="4242"))


def test_requests_must_name_a_node_and_a_served_type() -> None:
    cache = cache_for(placed_state(), CONFIG)
    with pytest.raises(ProtocolError, match=r"node\.id"):
        SotwStream(cache).on_request(sotw_request(CLUSTER))
    with pytest.raises(ProtocolError, match="unknown type_url"):
        SotwStream(cache).on_request(sotw_request("type.googleapis.com/envoy.config.core.v3.Nope", node_id="u1"))
    stream = SotwStream(cache)
    stream.on_request(sotw_request(CLUSTER, node_id="u1"))
    with pytest.raises(ProtocolError, match="changed"):
        stream.on_request(sotw_request(LISTENER, node_id="u2"))
    with pytest.raises(ProtocolError, match="longer"):
        SotwStream(cache).on_request(sotw_request(ENDPOINTS, names=["x" * 5000], node_id="u1"))


def test_a_nonce_from_an_earlier_stream_is_ignored_on_reconnect() -> None:
    cache = cache_for(placed_state(), CONFIG)
    [response] = SotwStream(cache).on_request(sotw_request(CLUSTER, node_id="u1", nonce="17"))
    assert names_of(response) == ["svc/web"]


def test_a_reconnecting_client_gets_its_content_again_under_the_same_versions() -> None:
    cache, _old, client = settled("web-1")
    before = dict(client.version)
    fresh = SotwStream(cache)  # the control plane restarted; Envoy reconnects with its versions
    sent = converse(fresh, client, client.reconnect())
    # Sent again (after a NACK Envoy's version does not say what it runs), but under the labels the
    # client already gives this content: it ends on the same versions.
    assert {r.type_url for r in sent} == {CLUSTER, ENDPOINTS, LISTENER, ROUTES}
    assert client.version == before
    assert cache.is_synced("web-1")


def test_reconnect_with_older_content_gets_the_current() -> None:
    cache, _old, client = settled("web-1")
    rebuild(cache, placed_state().apply(ev.WorkloadPlaced(workload("api-2", "api", "ea-n1"))))
    fresh = SotwStream(cache)
    client.nonce.clear()
    client.sent_node = False
    [response] = fresh.on_request(client._request(ENDPOINTS, client.subscribed[ENDPOINTS]))
    assert response.type_url == ENDPOINTS and response.version_info != client.version[ENDPOINTS]


def test_endpoints_are_answered_when_envoy_re_asks_with_an_acked_nonce() -> None:
    _cache, stream, client = settled("web-1")
    eds_nonce, eds_version = client.nonce[ENDPOINTS], client.version[ENDPOINTS]
    again = sotw_request(ENDPOINTS, names=sorted(client.subscribed[ENDPOINTS]), nonce=eds_nonce, version=eds_version)
    [response] = stream.on_request(again)
    assert response.type_url == ENDPOINTS and sorted(names_of(response)) == ["svc/admin", "svc/api"]


def test_endpoints_follow_a_rebuilt_cluster_even_when_unchanged() -> None:
    cache, stream, client = settled("web-1")
    client.reask_endpoints = False  # even if the client does not re-ask, the server resends
    rebuild(cache, placed_state(), dataclasses.replace(CONFIG, connect_timeout_ms=2500))
    responses = stream.on_change()
    assert [r.type_url for r in responses] == [CLUSTER, ENDPOINTS]
    converse(stream, client, [r for response in responses for r in client.receive(response)])
    assert client_state(client) == expected_state(cache, client, "web-1")


def test_pushes_go_clusters_endpoints_listeners_routes() -> None:
    cache, stream, _client = settled("web-1")
    changed = placed_state().apply(ev.WorkloadPlaced(workload("api-2", "api", "ea-n1")))
    changed = changed.apply(ev.WorkloadPlaced(workload("admin-1", "admin", "c-n1", port=28081)))
    rebuild(cache, changed, dataclasses.replace(CONFIG, connect_timeout_ms=3000, request_timeout_ms=5000))
    responses = stream.on_change()
    order = [r.type_url for r in responses]
    assert order == [t for t in PUSH_ORDER if t in order]
    assert order[:2] == [CLUSTER, ENDPOINTS] and ROUTES in order


def test_a_tcp_listener_waits_until_its_cluster_is_acked() -> None:
    cache, stream, _client = settled("u1")
    with_db = dataclasses.replace(CONFIG, host_calls={"u1": ("web", "db")})
    rebuild(cache, placed_state(), with_db)
    # The new TCP listener names svc/db, which Envoy would not wait for: it is held back.
    assert [(r.type_url, sorted(names_of(r))) for r in stream.on_change()] == [(CLUSTER, ["svc/db", "svc/web"])]
    assert not cache.is_synced("u1")
    clusters_ack = sotw_request(CLUSTER, nonce="1"[:0] or stream._types[CLUSTER].nonce, version="x")
    after_ack = stream.on_request(clusters_ack)
    assert [(r.type_url, sorted(names_of(r))) for r in after_ack] == [
        (LISTENER, [f"out/{p}" for p in sorted(["5432", "8080"])])
    ]


def test_what_names_a_rejected_cluster_is_held_back() -> None:
    # web stops calling admin and calls db (TCP) instead; the client rejects db's cluster. The TCP
    # listener that would send to it never reaches the client until the cluster is accepted.
    def reject(type_url, message):
        return "no db for you" if type_url == CLUSTER and message.name == "svc/db" else None

    cache, stream, client = settled("web-1")
    client.reject = reject
    state = placed_state()
    services = dict(state.services)
    services["web"] = dataclasses.replace(services["web"], calls=("api", "db"))
    rebuild(cache, dataclasses.replace(state, services=services))
    first = stream.on_change()
    converse(stream, client, deliver(client, first))  # checks no route ever names a missing cluster
    assert client.nacks
    assert "svc/db" not in client.have[CLUSTER]  # (this client rejects a response as a whole)
    assert set(client.have[LISTENER]) == {"in/web-1", "out/9090"}  # out/5432 held back
    assert not cache.is_synced("web-1")
    rebuild(cache, dataclasses.replace(state, services=services), dataclasses.replace(CONFIG, connect_timeout_ms=999))
    client.reject = lambda _t, _m: None  # fixed: now it is accepted, and the listener follows
    converse(stream, client, deliver(client, stream.on_change()))
    assert "out/5432" in client.have[LISTENER] and cache.is_synced("web-1")


def _remove_admin_from_web(state):
    services = dict(state.services)
    services["web"] = dataclasses.replace(services["web"], calls=("api",))
    return dataclasses.replace(state, services=services)


def test_removed_clusters_go_last_after_the_routes_stop_using_them() -> None:
    cache, stream, client = settled("web-1")
    rebuild(cache, _remove_admin_from_web(placed_state()))
    first = stream.on_change()
    sent = first + converse(stream, client, deliver(client, first))  # checks no dangling route, ever
    order = [(r.type_url, sorted(names_of(r))) for r in sent]
    lds_removal = order.index((LISTENER, ["in/web-1", "out/9090"]))
    cds_removal = order.index((CLUSTER, ["local/web-1", "svc/api"]))
    assert lds_removal < cds_removal  # the listener naming admin goes before admin's cluster
    assert all(t in (ENDPOINTS, ROUTES) for t, _ in order[:lds_removal])
    assert client_state(client) == expected_state(cache, client, "web-1")


def test_a_replaced_cluster_is_kept_until_the_routes_moved_to_the_new_one() -> None:
    cache, stream, client = settled("web-1")
    state = placed_state()
    services = dict(state.services)
    services["web"] = dataclasses.replace(services["web"], calls=("api", "db"))  # admin out, db in
    rebuild(cache, dataclasses.replace(state, services=services), MeshConfig())
    first = stream.on_change()
    sent = first + converse(stream, client, deliver(client, first))
    clusters = [sorted(names_of(r)) for r in sent if r.type_url == CLUSTER]
    assert clusters[0] == ["local/web-1", "svc/admin", "svc/api", "svc/db"]  # old and new together
    assert clusters[-1] == ["local/web-1", "svc/api", "svc/db"]
    assert client_state(client) == expected_state(cache, client, "web-1")


def test_wildcard_leaves_out_grpc_listeners_that_a_named_request_gets() -> None:
    cache = cache_for(placed_state(), CONFIG)
    [wildcard] = SotwStream(cache).on_request(sotw_request(LISTENER, node_id="web-1"))
    assert sorted(names_of(wildcard)) == ["in/web-1", "out/8080", "out/9090"]
    [named] = SotwStream(cache).on_request(sotw_request(LISTENER, names=["api"], node_id="web-1"))
    assert names_of(named) == ["api"]
    # Legacy wildcard ends once names were given: an empty list then means "nothing".
    stream = SotwStream(cache)
    [r1] = stream.on_request(sotw_request(CLUSTER, names=["svc/api"], node_id="web-1"))
    [r2] = stream.on_request(sotw_request(CLUSTER, names=[], nonce=r1.nonce, version=r1.version_info))
    assert names_of(r2) == []
    [r3] = stream.on_request(sotw_request(CLUSTER, names=["*"], nonce=r2.nonce, version=r2.version_info))
    assert sorted(names_of(r3)) == ["local/web-1", "svc/admin", "svc/api"]


def test_newly_requested_names_are_sent_even_if_unchanged() -> None:
    cache = cache_for(placed_state(), CONFIG)
    stream = SotwStream(cache)
    [r1] = stream.on_request(sotw_request(ENDPOINTS, names=["svc/api"], node_id="web-1"))
    assert stream.on_request(sotw_request(ENDPOINTS, names=["svc/api"], nonce=r1.nonce, version=r1.version_info)) == []
    [r2] = stream.on_request(
        sotw_request(ENDPOINTS, names=["svc/api", "svc/admin"], nonce=r1.nonce, version=r1.version_info)
    )
    assert sorted(names_of(r2)) == ["svc/admin", "svc/api"]
    # Names nobody serves get no answer in SotW (there is no way to say "does not exist").
    assert SotwStream(cache).on_request(sotw_request(ENDPOINTS, names=["svc/nope"], node_id="web-1")) == []


def test_a_node_only_ever_gets_its_own_identity() -> None:
    identities = {n: TlsIdentity(f"CERT-{n}", f"KEY-{n}") for n in ("web-1", "api-1")}
    config = dataclasses.replace(CONFIG, mtls=True, trust_bundle_pem="BUNDLE", identities=identities)
    cache = cache_for(placed_state(), config)
    [response] = SotwStream(cache).on_request(
        sotw_request(SECRET, names=["identity", "trust-bundle", "api-1", "*"], node_id="web-1")
    )
    secrets = {unpack(SECRET, r).name: unpack(SECRET, r) for r in response.resources}
    assert set(secrets) == {"identity", "trust-bundle"}
    assert secrets["identity"].tls_certificate.private_key.inline_string == "KEY-web-1"
    assert b"KEY-api-1" not in response.SerializeToString()


def test_an_unknown_node_waits_and_is_served_when_it_appears() -> None:
    cache = cache_for(placed_state(), CONFIG)
    stream = SotwStream(cache)
    assert stream.on_request(sotw_request(CLUSTER, node_id="web-7")) == []
    rebuild(cache, placed_state().apply(ev.WorkloadPlaced(workload("web-7", "web", "c-n1"))))
    [response] = stream.on_change()
    assert "local/web-7" in names_of(response)
