"""The latency-rebuild benchmark at a tiny size: its batches and the figures it prints."""

from __future__ import annotations

import json
import random

from benchmarks.latency_rebuild import JITTERS, latency_batch, placed_scale_model, run


def test_a_batch_measures_distinct_links_within_the_jitter_of_their_declared_latency() -> None:
    state = placed_scale_model(50, 20, 200)
    batch = latency_batch(state, random.Random(0), 10, 0.5)
    links = [link for link, _ in batch.latencies_us]
    assert len(set(links)) == 10
    for link, measured in batch.latencies_us:
        declared = state.topology.links[link].declared_latency_us or 1000
        assert 0.5 * declared - 1 <= measured <= 1.5 * declared + 1


def test_the_figures_hold_the_baseline_and_each_jitter_and_the_cache_equals_a_full_build() -> None:
    figures = json.loads(json.dumps(run(50, 20, 200, batches=2, links=10, rounds=1)))
    assert figures["benchmark"] == "latency_rebuild" and figures["workloads"] == 200
    assert figures["baseline_full_rebuild"]["best_ms"] > 0
    for jitter in JITTERS:
        row = figures[f"jitter_{round(jitter * 100)}"]
        assert 0 < max(row["p50_ms"], row["p99_ms"]) <= row["max_ms"]
        assert 0 <= row["changed_nodes_p50"] <= row["changed_nodes_max"] <= 220
    assert figures["nodes_differing_from_full_rebuild"] == 0
