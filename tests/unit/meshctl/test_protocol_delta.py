"""The incremental (delta) ADS conversation, without gRPC."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from meshctl.cache import SnapshotCache
from meshctl.delta import DeltaStream
from meshctl.protocol import ProtocolError
from meshctl.snapshot import MeshConfig, build_snapshots
from meshctl.xds_types import CLUSTER, ENDPOINTS, LISTENER, ROUTES
from netmodel import events as ev
from tests.unit.meshctl.mesh_helpers import (
    DeltaClient,
    cache_for,
    client_state,
    converse,
    deliver,
    delta_request,
    expected_state,
    names_of,
    placed_state,
    workload,
)

CONFIG = MeshConfig(tcp_services=frozenset({"db"}))


def settled(node_id: str = "web-1", config: MeshConfig = CONFIG):
    cache = cache_for(placed_state(), config)
    stream = DeltaStream(cache)
    client = DeltaClient(node_id)
    converse(stream, client, client.start())
    return cache, stream, client


def rebuild(cache: SnapshotCache, state, config: MeshConfig = CONFIG) -> None:
    cache.set_snapshots(build_snapshots(state, config))


def push(stream, client) -> list:
    first = stream.on_change()
    return first + converse(stream, client, deliver(client, first))


def test_an_envoy_like_client_gets_everything_and_acks_it() -> None:
    cache, _stream, client = settled()
    assert client_state(client) == expected_state(cache, client, "web-1")
    assert cache.is_synced("web-1")
    view = cache.clients_view()["nodes"]["web-1"]
    assert view["mode"] == "delta" and all(t["current"] for t in view["types"].values())


def test_only_changed_resources_are_sent() -> None:
    cache, stream, client = settled()
    rebuild(cache, placed_state().apply(ev.WorkloadPlaced(workload("api-2", "api", "ea-n1"))))
    sent = push(stream, client)
    assert [(r.type_url, names_of(r)) for r in sent] == [(ENDPOINTS, ["svc/api"])]
    assert client_state(client) == expected_state(cache, client, "web-1")


def test_initial_resource_versions_are_honoured() -> None:
    cache, _old, client = settled()
    # Reconnect (a new stream) telling the server what it has: nothing needs sending.
    fresh = DeltaStream(cache)
    client.sent_node = False
    initial = {t: dict(client.versions[t]) for t in (CLUSTER, LISTENER)}
    sent = converse(fresh, client, client.start(initial))
    eds_and_rds = [
        delta_request(ENDPOINTS, sorted(client.subscribed[ENDPOINTS]), initial=dict(client.versions[ENDPOINTS])),
        delta_request(ROUTES, sorted(client.subscribed[ROUTES]), initial=dict(client.versions[ROUTES])),
    ]
    sent += converse(fresh, client, eds_and_rds)
    assert sent == []
    # One stale version: only that resource comes.
    stale = DeltaStream(cache)
    client.sent_node = False
    initial[CLUSTER]["svc/api"] = "0000000000000000"
    [response] = stale.on_request(delta_request(CLUSTER, node_id="web-1", initial=initial[CLUSTER]))
    assert names_of(response) == ["svc/api"] and list(response.removed_resources) == []


def test_resources_gone_while_disconnected_are_removed_on_reconnect() -> None:
    cache, _old, client = settled()
    # While it was disconnected, admin left web's calls; the client still runs everything for it.
    state = placed_state()
    services = dict(state.services)
    services["web"] = dataclasses.replace(services["web"], calls=("api",))
    rebuild(cache, dataclasses.replace(state, services=services))
    fresh = DeltaStream(cache)
    reconnect = client.reconnect()
    # Its clusters are current, and svc/admin is not removed yet: this stream has not heard which
    # listeners and routes the client runs, and one of them may still send to it.
    assert fresh.on_request(reconnect[0]) == []
    sent = converse(fresh, client, reconnect[1:])
    removed = [(r.type_url, list(r.removed_resources)) for r in sent if r.removed_resources]
    assert (CLUSTER, ["svc/admin"]) in removed and (LISTENER, ["out/8080"]) in removed
    assert removed.index((LISTENER, ["out/8080"])) < removed.index((CLUSTER, ["svc/admin"]))
    assert client_state(client) == expected_state(cache, client, "web-1")


def test_removed_resources_are_sent_last_in_reverse_order() -> None:
    cache, stream, client = settled()
    state = placed_state()
    services = dict(state.services)
    services["web"] = dataclasses.replace(services["web"], calls=("api",))
    rebuild(cache, dataclasses.replace(state, services=services))
    sent = push(stream, client)  # push() checks no route ever names a missing cluster
    removals = [(r.type_url, list(r.removed_resources)) for r in sent if r.removed_resources]
    assert removals == [
        (LISTENER, ["out/8080"]),
        (ROUTES, ["out/8080"]),
        (CLUSTER, ["svc/admin"]),
        (ENDPOINTS, ["svc/admin"]),
    ]
    assert all(not r.removed_resources for r in sent[: sent.index(next(r for r in sent if r.removed_resources))])
    assert client_state(client) == expected_state(cache, client, "web-1")


def test_a_named_resource_that_does_not_exist_is_answered_as_removed() -> None:
    cache = cache_for(placed_state(), CONFIG)
    stream = DeltaStream(cache)
    [response] = stream.on_request(delta_request(ENDPOINTS, ["svc/nope"], node_id="web-1"))
    assert list(response.removed_resources) == ["svc/nope"] and not response.resources
    assert stream.on_request(delta_request(ENDPOINTS, nonce=response.nonce)) == []  # said once


def test_endpoints_are_resent_for_a_rebuilt_cluster() -> None:
    cache, stream, client = settled()
    rebuild(cache, placed_state(), dataclasses.replace(CONFIG, connect_timeout_ms=2500))
    sent = push(stream, client)
    assert [(r.type_url, sorted(names_of(r))) for r in sent][:2] == [
        (CLUSTER, ["local/web-1", "svc/admin", "svc/api"]),
        (ENDPOINTS, ["svc/admin", "svc/api"]),
    ]


def test_a_nack_forgets_what_it_rejected_and_the_next_change_resends_it() -> None:
    def reject(type_url, message):
        if type_url == CLUSTER and message.name == "svc/api" and message.connect_timeout.ToMilliseconds() <= 0:
            return "svc/api: connect_timeout must be greater than 0"
        return None

    cache, stream, client = settled()
    client.reject = reject
    rebuild(cache, placed_state(), dataclasses.replace(CONFIG, connect_timeout_ms=-1000))
    sent = push(stream, client)
    assert [r.type_url for r in sent] == [CLUSTER, ENDPOINTS]  # endpoints follow rebuilt clusters
    status = cache.clients_view()["nodes"]["web-1"]["types"]["cds"]
    assert "connect_timeout" in status["last_nack"]["error"] and not status["current"]
    assert not cache.is_synced("web-1")
    assert stream.on_change() == []  # nothing new: no loop of resends
    # The config goes back to what the client ran before. Which versions it runs after a NACK is not
    # known (Envoy may have applied part of the response), so all three are sent again; they equal
    # what it confirmed running, so no cluster is rebuilt and no endpoints need resending.
    rebuild(cache, placed_state(), CONFIG)
    resent = push(stream, client)
    assert [(r.type_url, sorted(names_of(r))) for r in resent] == [(CLUSTER, ["local/web-1", "svc/admin", "svc/api"])]
    assert client_state(client) == expected_state(cache, client, "web-1")
    assert cache.is_synced("web-1")


def test_subscribing_again_resends_even_if_unchanged() -> None:
    _cache, stream, _client = settled()
    [response] = stream.on_request(delta_request(ENDPOINTS, ["svc/api"]))
    assert names_of(response) == ["svc/api"]


def test_unsubscribing_under_a_wildcard_is_answered() -> None:
    cache = cache_for(placed_state(), CONFIG)
    stream = DeltaStream(cache)
    [first] = stream.on_request(delta_request(CLUSTER, ["*", "svc/api"], node_id="web-1"))
    assert stream.on_request(delta_request(CLUSTER, nonce=first.nonce)) == []
    # svc/api is also in the wildcard: the client must be told to keep it (resent)...
    [kept] = stream.on_request(delta_request(CLUSTER, unsubscribe=["svc/api"]))
    assert names_of(kept) == ["svc/api"]
    stream.on_request(delta_request(CLUSTER, nonce=kept.nonce))
    # ...and a name outside the wildcard is answered as removed.
    [named] = stream.on_request(delta_request(CLUSTER, ["svc/other"]))
    assert list(named.removed_resources) == ["svc/other"]
    stream.on_request(delta_request(CLUSTER, nonce=named.nonce))
    [gone] = stream.on_request(delta_request(CLUSTER, unsubscribe=["svc/other"]))
    assert list(gone.removed_resources) == ["svc/other"]


def test_wildcard_and_named_subscriptions() -> None:
    cache = cache_for(placed_state(), CONFIG)
    [wildcard] = DeltaStream(cache).on_request(delta_request(LISTENER, node_id="web-1"))
    assert sorted(names_of(wildcard)) == ["in/web-1", "out/8080", "out/9090"]
    [named] = DeltaStream(cache).on_request(delta_request(LISTENER, ["api"], node_id="web-1"))
    assert names_of(named) == ["api"]  # a gRPC client asks for its listener by name
    stream = DeltaStream(cache)
    [star] = stream.on_request(delta_request(LISTENER, ["*"], node_id="web-1"))
    assert sorted(names_of(star)) == ["in/web-1", "out/8080", "out/9090"]
    stream.on_request(delta_request(LISTENER, nonce=star.nonce))
    [dropped] = stream.on_request(delta_request(LISTENER, ["api"], unsubscribe=["*"]))
    assert names_of(dropped) == ["api"]


def test_subscription_changes_count_even_with_a_stale_nonce() -> None:
    cache = cache_for(placed_state(), CONFIG)
    stream = DeltaStream(cache)
    [first] = stream.on_request(delta_request(ENDPOINTS, ["svc/api"], node_id="web-1"))
    stream.on_request(delta_request(ENDPOINTS, nonce=first.nonce))
    rebuild(cache, placed_state().apply(ev.WorkloadPlaced(workload("api-2", "api", "ea-n1"))))
    [update] = stream.on_change()
    # The client had not seen ``update`` when it subscribed to admin, quoting the older nonce.
    assert stream.on_request(delta_request(ENDPOINTS, ["svc/admin"], nonce=first.nonce)) == []
    [admin] = stream.on_request(delta_request(ENDPOINTS, nonce=update.nonce))
    assert names_of(admin) == ["svc/admin"]


def test_malformed_requests_end_the_stream() -> None:
    cache = cache_for(placed_state(), CONFIG)
    with pytest.raises(ProtocolError, match=r"node\.id"):
        DeltaStream(cache).on_request(delta_request(CLUSTER))
    with pytest.raises(ProtocolError, match="unknown type_url"):
        DeltaStream(cache).on_request(delta_request("type.googleapis.com/x", node_id="u1"))
    stream = DeltaStream(cache)
    stream.on_request(delta_request(CLUSTER, node_id="u1"))
    with pytest.raises(ProtocolError, match="never sent"):
        stream.on_request(delta_request(CLUSTER, nonce="garbage"))


def test_names_a_nacked_response_added_are_still_removed_later() -> None:
    # Envoy applies the valid part of a response it NACKs: a cluster added by a rejected response may
    # be running, and must be removed when it leaves the snapshot.
    def reject(type_url, message):
        bad = type_url == CLUSTER and message.name == "svc/api"
        return "svc/api rejected" if bad and message.connect_timeout.ToMilliseconds() == 2500 else None

    cache, stream, client = settled()
    client.reject, client.partial = reject, True
    state = placed_state()
    services = dict(state.services)
    slow = dataclasses.replace(CONFIG, connect_timeout_ms=2500)
    services["web"] = dataclasses.replace(services["web"], calls=("api", "admin", "db"))
    rebuild(cache, dataclasses.replace(state, services=services), slow)
    push(stream, client)
    assert client.nacks and "svc/db" in client.have[CLUSTER]  # applied despite the NACK
    services["web"] = dataclasses.replace(services["web"], calls=("api", "admin"))
    rebuild(cache, dataclasses.replace(state, services=services), slow)
    push(stream, client)
    assert "svc/db" not in client.have[CLUSTER]


def test_a_pass_looks_only_at_the_types_whose_resources_or_client_state_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import meshctl.delta as delta_module

    cache, stream, client = settled()
    looked: list[str] = []
    scope = delta_module._scope

    def spy(state: Any, serving: Any, excluded: Any) -> Any:
        looked.append(next(iter(serving), ""))
        return scope(state, serving, excluded)

    monkeypatch.setattr(delta_module, "_scope", spy)
    assert stream.on_change() == []
    assert looked == []  # nothing changed since the last pass over any type: none is looked at
    rebuild(cache, placed_state().apply(ev.WorkloadPlaced(workload("api-2", "api", "ea-n1"))))
    first = stream.on_change()
    assert [(r.type_url, names_of(r)) for r in first] == [(ENDPOINTS, ["svc/api"])]
    assert len(looked) == 4  # a new build: every type's resources are new objects
    looked.clear()
    assert converse(stream, client, deliver(client, first)) == []
    # Its ACK changed what the endpoints' pass reads, and nothing another type's reads.
    assert looked == ["svc/admin"]
    assert client_state(client) == expected_state(cache, client, "web-1")
