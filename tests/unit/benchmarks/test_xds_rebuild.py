"""The xDS rebuild benchmark at a tiny size: its changes, how it counts the nodes a build replaced, and the
figures it prints (one JSON object, every configuration and kind of change)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from benchmarks.xds_rebuild import (
    KINDS,
    ChangeDraw,
    build_model,
    mtls_config,
    percentiles,
    replaced,
    run,
    snapshots_of,
)
from meshctl.cache import SnapshotCache
from meshctl.snapshot import build_snapshots
from netmodel import events as ev
from placement.synthetic import FabricShape

TINY = FabricShape(edge_sites=3, edge_nodes=2, metro_sites=2, metro_nodes=2, cloud_sites=1, cloud_nodes=2, services=3)


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    result = run(TINY, workloads=50, changes=3, rounds=3)
    return json.loads(json.dumps(result))  # what the last line holds


def test_the_figures_hold_the_baseline_every_kind_and_the_quiet_build_for_both_configurations(
    figures: dict[str, Any],
) -> None:
    assert figures["benchmark"] == "xds_rebuild"
    assert figures["nodes"] == TINY.nodes and figures["services"] == 3
    assert figures["workloads"] == 50 and figures["sidecar_nodes"] == 50 + figures["hosts"]
    for name in ("plaintext", "mtls"):
        config = figures[name]
        assert set(config["baseline_full_rebuild"]) == {"best_ms", "median_ms", "changed_nodes_median"}
        for kind in KINDS:
            row = config[kind]
            assert set(row) == {"p50_ms", "p99_ms", "max_ms", "changed_nodes_p50", "changed_nodes_max"}
            assert 0 <= row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
            assert row["changed_nodes_max"] >= 1  # a change reaches at least the node it concerns
        assert set(config["nothing_changed"]) == {"p50_ms", "p99_ms", "max_ms"}
        assert config["nodes_differing_from_full_rebuild"] == 0
        assert isinstance(config["goal_met_p50"], bool) and isinstance(config["goal_met_p99"], bool)


def test_the_changes_place_new_workloads_in_turn_evict_placed_ones_and_move_them_to_another_node() -> None:
    state = build_model(TINY, 50)
    draw = ChangeDraw(state, seed=1)
    placed = [draw.event("placed", state) for _ in range(3)]
    assert all(isinstance(e, ev.WorkloadPlaced) and e.workload.id not in state.workloads for e in placed)
    assert len({e.workload.service for e in placed if isinstance(e, ev.WorkloadPlaced)}) == 3
    evicted = draw.event("evicted", state)
    assert isinstance(evicted, ev.WorkloadRemoved) and evicted.workload in state.workloads
    moved = draw.event("migrated", state)
    assert isinstance(moved, ev.WorkloadPlaced)
    assert moved.workload.node != state.workloads[moved.workload.id].node
    with pytest.raises(ValueError, match="unknown change kind"):
        draw.event("scaled", state)


def test_replaced_counts_the_nodes_whose_snapshot_object_changed_appeared_or_went() -> None:
    state = build_model(TINY, 50)
    config = mtls_config(state)
    assert set(config.identities) == set(state.hosts) | set(state.workloads)
    cache = SnapshotCache()
    cache.set_snapshots(build_snapshots(state, config))
    before = snapshots_of(cache)
    cache.set_snapshots(build_snapshots(state, config))
    assert replaced(before, cache) == 0  # same content: the cache keeps every node's snapshot
    gone = next(iter(state.workloads))
    cache.set_snapshots(build_snapshots(state.apply(ev.WorkloadRemoved(gone)), config))
    assert replaced(before, cache) >= 1 and gone not in snapshots_of(cache)


def test_percentiles_are_taken_from_the_sorted_times() -> None:
    times = [float(k) for k in range(100, 0, -1)]
    assert percentiles(times) == {"p50_ms": 50.5, "p99_ms": 99.0, "max_ms": 100.0}
