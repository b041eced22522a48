"""Endpoints views kept across changes on a generated edge-cloud fabric (many sites and priority levels,
unlike the hand-made one; the xDS rebuild benchmark's model, small): after each placement, eviction or
move the cache holds what a full build of that model publishes, while the views the changes reached were
rebased from the callers' last ones, also when a change added or removed a whole priority level."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.xds_rebuild import KINDS, ChangeDraw, build_model
from meshctl.cache import SnapshotCache
from meshctl.mesh_builder import MeshBuilder
from meshctl.snapshot import MeshConfig, SnapshotBuilder, build_snapshots
from placement.synthetic import FabricShape
from tests.unit.meshctl.test_mesh_builder import content

SHAPE = FabricShape(edge_sites=10, edge_nodes=2, metro_sites=3, metro_nodes=2, cloud_sites=2, cloud_nodes=2, services=3)


@pytest.mark.parametrize("seed", range(3))
def test_views_kept_across_changes_equal_a_full_build(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rebases: list[tuple[int, int, bool]] = []  # (levels before, levels after, rebased)
    rebased = SnapshotBuilder._rebased

    def spy(self: SnapshotBuilder, name: Any, old: Any, levels: Any) -> Any:
        view = rebased(self, name, old, levels)
        rebases.append((len(old.levels), len(levels), view is not None))
        return view

    monkeypatch.setattr(SnapshotBuilder, "_rebased", spy)
    made_anew: list[int] = []  # the step of each view made anew (from the service's kept endpoint list)
    new_view = SnapshotBuilder._new_view
    step = -1

    def counting(self: SnapshotBuilder, name: Any, levels: Any) -> Any:
        made_anew.append(step)
        return new_view(self, name, levels)

    monkeypatch.setattr(SnapshotBuilder, "_new_view", counting)
    state = build_model(SHAPE, 40)
    draw = ChangeDraw(state, seed)
    builder, cache, config = MeshBuilder(), SnapshotCache(), MeshConfig()
    first = builder.update(state, config, None)
    assert first is not None
    cache.set_snapshots(first.snapshots)
    for step in range(90):
        state = state.apply(draw.event(KINDS[step % len(KINDS)], state))
        update = builder.update(state, config, None)
        if update is not None:
            cache.update_snapshots(update.snapshots, update.removed)
        expected = build_snapshots(state, config, None, builder.paths)
        assert sorted(cache.nodes()) == sorted(expected), step
        for node, snapshot in expected.items():
            held = cache.snapshot(node)
            assert held is not None and content(held) == content(snapshot), (step, node)
    assert any(done for _, _, done in rebases), "no view was rebased: the test misses what it is about"
    assert any(done and before != after for before, after, done in rebases), "no rebase across a new level count"
    assert any(at >= 0 for at in made_anew), "no view made anew after a change: its endpoint list goes unchecked"
