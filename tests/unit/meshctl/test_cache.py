"""SnapshotCache: consistent snapshots only, wake only changed nodes, versions that name real changes."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from meshctl.cache import SnapshotCache
from meshctl.snapshot import InconsistentSnapshot, MeshConfig, build_snapshots, digest_of, version_string
from meshctl.xds_types import CLUSTER, ENDPOINTS, LISTENER, PUSH_ORDER, ROUTES, SECRET
from netmodel import events as ev
from tests.unit.meshctl.mesh_helpers import placed_state, workload

CONFIG = MeshConfig(tcp_services=frozenset({"db"}))


def broken(snapshot):
    """The snapshot without its endpoints (versions recomputed, as a build would)."""
    resources = {t: dict(snapshot.of_type(t)) for t in PUSH_ORDER}
    resources[ENDPOINTS].clear()
    versions = {t: version_string(snapshot.generation + 1, digest_of(resources[t].values())) for t in PUSH_ORDER}
    return dataclasses.replace(snapshot, resources=resources, versions=versions)


def test_an_inconsistent_snapshot_is_refused_and_the_last_good_one_stays() -> None:
    cache = SnapshotCache()
    good = build_snapshots(placed_state(), CONFIG)
    cache.set_snapshots(good)
    with pytest.raises(InconsistentSnapshot):
        cache.set_snapshot("web-1", broken(good["web-1"]))
    assert cache.snapshot("web-1") is good["web-1"]
    result = cache.set_snapshots({**good, "web-1": broken(good["web-1"])})
    assert set(result.rejected) == {"web-1"} and "ClusterLoadAssignment" in result.rejected["web-1"]
    assert cache.snapshot("web-1") is good["web-1"]


def test_only_nodes_whose_content_changed_are_woken() -> None:
    cache = SnapshotCache()
    cache.set_snapshots(build_snapshots(placed_state(), CONFIG))
    woken: list[str] = []
    for node_id in cache.nodes():
        cache.watch(node_id, woken.append)
    moved = placed_state().apply(ev.WorkloadPlaced(workload("api-2", "api", "ea-n1")))
    result = cache.set_snapshots(build_snapshots(moved, CONFIG))
    # web-1/web-2 call api (endpoints changed); api-2 moved (its inbound listener changed).
    assert result.changed == {"web-1", "web-2", "api-2"}
    assert sorted(woken) == ["api-2", "web-1", "web-2"]
    woken.clear()
    same = build_snapshots(moved.apply(ev.WorkloadPlaced(workload("web-9", "web", None))), CONFIG)
    assert cache.set_snapshots(same).changed == frozenset() and woken == []


def test_an_unchanged_type_keeps_its_version_so_versions_name_real_changes() -> None:
    cache = SnapshotCache()
    first = build_snapshots(placed_state(), CONFIG)
    cache.set_snapshots(first)
    moved = placed_state().apply(ev.WorkloadPlaced(workload("api-2", "api", "ea-n1")))
    cache.set_snapshots(build_snapshots(moved, CONFIG))
    web = cache.snapshot("web-1")
    assert web is not None
    for type_url in (CLUSTER, LISTENER, ROUTES):
        assert web.version(type_url) == first["web-1"].version(type_url)
    assert web.version(ENDPOINTS).startswith(f"{moved.generation}-")
    assert web.version(ENDPOINTS) != first["web-1"].version(ENDPOINTS)


def test_nodes_gone_from_the_model_are_dropped_and_watches_cancel() -> None:
    cache = SnapshotCache()
    snapshots = build_snapshots(placed_state(), CONFIG)
    cache.set_snapshots(snapshots)
    woken: list[str] = []
    cancel = cache.watch("web-1", woken.append)
    cancel()
    cache.set_snapshots({n: s for n, s in snapshots.items() if n != "db-1"})
    assert cache.snapshot("db-1") is None
    moved = placed_state().apply(ev.WorkloadPlaced(workload("api-2", "api", "ea-n1")))
    cache.set_snapshots(build_snapshots(moved, CONFIG))
    assert woken == []


def test_status_records_pushes_acks_and_nacks() -> None:
    clock = iter(range(100, 200))
    cache = SnapshotCache(clock=lambda: float(next(clock)))
    cache.set_snapshots(build_snapshots(placed_state(), CONFIG))
    cache.stream_opened("u1", "sotw")
    cache.record_push("u1", CLUSTER, "3-aaaa", "1")
    view = cache.clients_view()["nodes"]["u1"]
    assert view["streams"] == 1 and view["mode"] == "sotw"
    assert view["types"]["cds"]["pending_nonce"] == "1" and view["types"]["cds"]["sent"] == "3-aaaa"
    cache.record_nack("u1", CLUSTER, "3-aaaa", "bad timeout", 13)
    cache.record_push("u1", CLUSTER, "4-bbbb", "2")
    cache.record_ack("u1", CLUSTER, "4-bbbb")
    cds = cache.clients_view()["nodes"]["u1"]["types"]["cds"]
    assert cds["acked"] == "4-bbbb" and cds["pending_nonce"] is None
    assert cds["last_nack"]["error"] == "bad timeout" and cds["last_nack"]["version"] == "3-aaaa"
    assert (cds["pushes"], cds["acks"], cds["nacks"]) == (2, 1, 1)
    assert cds["previous_acked"] is None
    acked_at = cds["acked_at"]
    cache.record_push("u1", CLUSTER, "5-cccc", "3")
    cache.record_ack("u1", CLUSTER, "5-cccc")  # a second ACK: the first is kept as the one before
    cds = cache.clients_view()["nodes"]["u1"]["types"]["cds"]
    assert cds["acked"] == "5-cccc" and cds["previous_acked"] == {"version": "4-bbbb", "at": acked_at}
    snapshot = cache.snapshot("u1")
    assert snapshot is not None
    assert not cache.is_synced("u1")
    cache.record_synced("u1", snapshot)
    assert cache.is_synced("u1") and cache.clients_view()["nodes"]["u1"]["in_sync"]


def test_a_stream_of_an_unknown_node_is_forgotten_when_it_closes() -> None:
    cache = SnapshotCache()
    cache.stream_opened("ghost", "delta")
    assert "ghost" in cache.clients_view()["nodes"]
    cache.stream_closed("ghost")
    assert "ghost" not in cache.clients_view()["nodes"]


def test_concurrent_sets_and_reads_do_not_tear() -> None:
    cache = SnapshotCache()
    states = [placed_state()]
    for node_id in ("ea-n1", "ea-n2", "c-n1"):
        states.append(placed_state().apply(ev.WorkloadPlaced(workload("api-2", "api", node_id))))
    builds = [build_snapshots(s, CONFIG) for s in states]
    errors: list[BaseException] = []

    def writer() -> None:
        for i in range(200):
            cache.set_snapshots(builds[i % len(builds)])

    def reader() -> None:
        try:
            for _ in range(2000):
                snapshot = cache.snapshot("web-1")
                if snapshot is not None:
                    assert set(snapshot.versions) == set(PUSH_ORDER)
                cache.clients_view()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_new_secrets_alone_are_published_and_a_broken_reference_still_refused() -> None:
    """A snapshot whose clusters, listeners and routes are its last good one's (a new trust bundle)
    is not checked again; one whose endpoints lost a name is."""
    cache = SnapshotCache()
    config = dataclasses.replace(CONFIG, mtls=True, trust_bundle_pem="-----BUNDLE-----")
    good = build_snapshots(placed_state(), config)
    cache.set_snapshots(good)
    renewed = build_snapshots(placed_state(), dataclasses.replace(config, trust_bundle_pem="-----BUNDLE 2-----"))
    web = dataclasses.replace(
        good["web-1"],
        resources={**good["web-1"].resources, SECRET: renewed["web-1"].of_type(SECRET)},
        versions={**good["web-1"].versions, SECRET: renewed["web-1"].version(SECRET)},
    )
    result = cache.update_snapshots({"web-1": web})
    assert result.changed == {"web-1"} and not result.rejected
    assert cache.snapshot("web-1").of_type(SECRET) is renewed["web-1"].of_type(SECRET)
    result = cache.update_snapshots({"web-1": broken(web)})
    assert set(result.rejected) == {"web-1"}
