"""The state store's journal (large models): a commit appends its changes instead of rewriting the file;
a restart replays them in order; a torn last line or lines of an earlier file are not replayed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from edgectl.state_store import StateStore
from netmodel import events as ev
from netmodel.ids import ServiceName, WorkloadId
from tests.unit.edgectl.test_state_store_durability import WAIT_S, Changes, saved_ids, workload


def journaled(directory: Path, compact_after: int = 1000) -> tuple[StateStore, Changes]:
    store = StateStore(str(directory), journal_from=0, compact_after=compact_after)
    store.start()
    return store, Changes(store)


def restored(directory: Path) -> tuple[list[str], dict[ServiceName, int]]:
    store = StateStore(str(directory))
    events = store.load_events()
    return [str(e.workload.id) for e in events if isinstance(e, ev.WorkloadPlaced)], store.id_floors()


def test_commits_append_and_a_restart_replays_them_in_order(tmp_path: Path) -> None:
    store, changes = journaled(tmp_path)
    try:
        store.wait_durable(changes.apply(ev.WorkloadPlaced(workload(1))), WAIT_S)  # the first: the whole file
        rewritten = (tmp_path / "workloads.json").read_text()
        for n in (2, 3, 4):
            store.wait_durable(changes.apply(ev.WorkloadPlaced(workload(n))), WAIT_S)
        store.wait_durable(changes.apply(ev.WorkloadRemoved(WorkloadId("web-2"))), WAIT_S)
        store.wait_durable(changes.apply(ev.WorkloadPlaced(workload(5))), WAIT_S)
        assert (tmp_path / "workloads.json").read_text() == rewritten  # not rewritten since
        assert saved_ids(tmp_path / "workloads.json") == ["web-1"]
    finally:
        store.stop()
    ids, floors = restored(tmp_path)
    assert ids == ["web-1", "web-3", "web-4", "web-5"]
    assert floors == {"web": 5}


def test_an_id_given_and_withdrawn_between_two_commits_keeps_its_high_water(tmp_path: Path) -> None:
    store, changes = journaled(tmp_path)
    try:
        store.wait_durable(changes.apply(ev.WorkloadPlaced(workload(1))), WAIT_S)
        changes.apply(ev.WorkloadPlaced(workload(9)))
        store.wait_durable(changes.apply(ev.WorkloadRemoved(WorkloadId("web-9"))), WAIT_S)
    finally:
        store.stop()
    assert restored(tmp_path) == (["web-1"], {"web": 9})


def test_a_torn_last_line_ends_the_replay(tmp_path: Path) -> None:
    store, changes = journaled(tmp_path)
    try:
        for n in (1, 2, 3):
            store.wait_durable(changes.apply(ev.WorkloadPlaced(workload(n))), WAIT_S)
    finally:
        store.stop()
    with open(tmp_path / "workloads.journal", "a") as handle:
        handle.write('{"e": 1, "placed": {"id": "web-4", "serv')  # a crash in the middle of a commit
    assert restored(tmp_path)[0] == ["web-1", "web-2", "web-3"]


def test_a_rewrite_folds_the_journal_and_its_old_lines_are_never_replayed(tmp_path: Path) -> None:
    store, changes = journaled(tmp_path, compact_after=4)
    try:
        for n in (1, 2, 3):
            store.wait_durable(changes.apply(ev.WorkloadPlaced(workload(n))), WAIT_S)
        old_lines = (tmp_path / "workloads.journal").read_text()
        assert len(old_lines.splitlines()) == 4  # two commits, a placement and a high-water mark each
        store.wait_durable(changes.apply(ev.WorkloadPlaced(workload(4))), WAIT_S)  # the journal is long: rewrite
        assert saved_ids(tmp_path / "workloads.json") == ["web-1", "web-2", "web-3", "web-4"]
        assert (tmp_path / "workloads.journal").read_text() == ""
        store.wait_durable(changes.apply(ev.WorkloadRemoved(WorkloadId("web-3"))), WAIT_S)
    finally:
        store.stop()
    # a crash between the rename and the emptying would have left the old lines: they are not this file's
    with open(tmp_path / "workloads.journal", "a") as handle:
        handle.write(old_lines.replace('"web-2"', '"web-7"'))
    assert restored(tmp_path)[0] == ["web-1", "web-2", "web-4"]


def test_an_instance_changed_where_it_stands_rewrites_the_file(tmp_path: Path) -> None:
    store, changes = journaled(tmp_path)
    try:
        for n in (1, 2):
            store.wait_durable(changes.apply(ev.WorkloadPlaced(workload(n))), WAIT_S)
        moved = replace(workload(1), port=9000)
        store.wait_durable(changes.apply(ev.WorkloadPlaced(moved)), WAIT_S)
        on_disk = json.loads((tmp_path / "workloads.json").read_text())["workloads"]
        assert [(w["id"], w["port"]) for w in on_disk] == [("web-1", 9000), ("web-2", 0)]
    finally:
        store.stop()
    assert restored(tmp_path)[0] == ["web-1", "web-2"]


def test_journal_lines_from_the_events_restore_the_model_in_its_order(tmp_path: Path) -> None:
    """Random placements, removals, moves and health changes, some in bursts between two commits: the
    store learns what changed from the events (no pass over every workload), and a restart restores
    exactly the model's workloads in the model's order."""
    import random

    rng = random.Random(5)
    store, changes = journaled(tmp_path, compact_after=100_000)
    serial = 0
    try:
        for _ in range(120):
            for _ in range(rng.choice((1, 1, 2, 4))):
                placed = sorted(changes.state.workloads)
                kind = rng.choice(("place", "place", "remove", "health", "move") if placed else ("place",))
                if kind == "place":
                    serial += 1
                    changes.apply(ev.WorkloadPlaced(workload(serial)))
                elif kind == "remove":
                    changes.apply(ev.WorkloadRemoved(WorkloadId(rng.choice(placed))))
                elif kind == "health":
                    target = WorkloadId(rng.choice(placed))
                    changes.apply(ev.WorkloadHealthChanged(target, target in changes.state.unhealthy, "test"))
                else:  # replaced where it stands: the file is rewritten
                    moved = changes.state.workloads[WorkloadId(rng.choice(placed))]
                    changes.apply(ev.WorkloadPlaced(replace(moved, port=moved.port + 1)))
            store.wait_durable(changes.state.generation, WAIT_S)
    finally:
        store.stop()
    assert restored(tmp_path)[0] == list(changes.state.workloads)


def test_several_changes_in_one_commit_keep_the_models_order(tmp_path: Path) -> None:
    """One commit covering several events (group commit): the new workloads are journaled in the
    model's order, found from the events alone."""
    from netmodel.changes import WorkloadChanges

    store = StateStore(str(tmp_path), journal_from=0)
    changes = Changes(store)
    for n in (1, 2, 3):
        changes.state = changes.state.apply(ev.WorkloadPlaced(workload(n)))
    assert store._commit(changes.state, {}, None)  # the whole file
    noted = WorkloadChanges(changes.state, with_health=False)
    for event in (
        ev.WorkloadPlaced(workload(7)),
        ev.WorkloadRemoved(WorkloadId("web-2")),
        ev.WorkloadPlaced(workload(5)),
        ev.WorkloadHealthChanged(WorkloadId("web-1"), False, "test"),
        ev.WorkloadPlaced(workload(6)),
    ):
        changes.state = changes.state.apply(event)
        noted.note(event, changes.state)
    rewritten = (tmp_path / "workloads.json").read_text()
    assert store._commit(changes.state, {}, noted)
    assert (tmp_path / "workloads.json").read_text() == rewritten  # journaled, not rewritten
    assert restored(tmp_path)[0] == list(changes.state.workloads) == ["web-1", "web-3", "web-7", "web-5", "web-6"]
