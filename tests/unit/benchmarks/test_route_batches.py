"""benchmarks/route_batches.py: a seeded batch changes the links it says, and every variant agrees."""

from __future__ import annotations

import random

from benchmarks.route_batches import batch, run_size
from benchmarks.route_hysteresis import live_fabric


def test_a_batch_changes_that_many_link_directions_the_same_way_for_a_seed() -> None:
    state = live_fabric(20, 10)
    after = batch(state, 7, random.Random(3))
    changed = [link for link in state.topology.links if after.topology.links[link] != state.topology.links[link]]
    assert len(changed) == 7
    again = batch(state, 7, random.Random(3))
    assert all(again.topology.links[link] == after.topology.links[link] for link in state.topology.links)


def test_every_variant_gives_the_same_distances_for_small_and_whole_fabric_batches() -> None:
    rows = run_size(20, [1, None], seed=1, max_reps=3)
    assert [row["changed_links"] for row in rows] == [1, rows[0]["links"]]
    assert all(row["same_distances"] for row in rows)
