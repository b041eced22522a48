"""The state store's group commit: what is on disk before a waiter is released, and the id high-water mark.

The one system call the store makes through a hook is fsync: the tests replace it to see the order of
writes and to hold a commit while more changes arrive.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgectl.state_store import StateNotSaved, StateStore, workloads_to_json
from netmodel import events as ev
from netmodel.fabric import build_state
from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Resources, Workload
from tests.unit.edgectl.fixtures import example_spec

WAIT_S = 10.0  # generous: a loaded 2-core machine


def workload(n: int, service: str = "web") -> Workload:
    return Workload(
        WorkloadId(f"{service}-{n}"), ServiceName(service), SpiffeId(f"spiffe://x/{n}"), Resources(1, 1), NodeId("c-n1")
    )


def saved_ids(path: Path) -> list[str]:
    return [w["id"] for w in json.loads(path.read_text())["workloads"]]


class Changes:
    """A model and the store it feeds, as the bus would: apply, then hand over (event, new state)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.state: FabricState = build_state(example_spec())

    def apply(self, event: ev.Event) -> int:
        self.state = self.state.apply(event)
        self.store.on_model_change(event, self.state)
        return self.state.generation


def is_directory(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


@pytest.fixture
def store_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "state"


def test_file_data_then_rename_then_directory_are_synced_before_the_waiter_returns(store_dir: Path) -> None:
    seen: list[tuple[str, list[str] | None, bool]] = []
    path = store_dir / "workloads.json"

    def recording_fsync(fd: int) -> None:
        on_disk = saved_ids(path) if path.exists() else None
        seen.append(("directory" if is_directory(fd) else "file", on_disk, path.with_suffix(".json.tmp").exists()))
        os.fsync(fd)

    store = StateStore(str(store_dir), fsync=recording_fsync)
    changes = Changes(store)
    store.start(changes.state)
    try:
        generation = changes.apply(ev.WorkloadPlaced(workload(1)))
        store.wait_durable(generation, WAIT_S)
        # the temp file's data is synced while the old name still holds the old content (none here),
        # the directory after the rename made the new content the file's
        assert seen == [("file", None, True), ("directory", ["web-1"], False)]
        assert saved_ids(path) == ["web-1"]
    finally:
        store.stop()


def test_one_commit_covers_every_change_made_while_the_previous_one_was_syncing(store_dir: Path) -> None:
    gate = threading.Semaphore(0)
    syncing = threading.Event()

    def held_fsync(fd: int) -> None:
        if not is_directory(fd):
            syncing.set()
            assert gate.acquire(timeout=WAIT_S), "the test never released the commit"
        os.fsync(fd)

    store = StateStore(str(store_dir), fsync=held_fsync)
    changes = Changes(store)
    store.start(changes.state)
    released: dict[int, threading.Event] = {}
    errors: list[BaseException] = []

    def waiter(generation: int) -> threading.Thread:
        released[generation] = threading.Event()

        def wait() -> None:
            try:
                store.wait_durable(generation, WAIT_S)
                released[generation].set()
            except BaseException as exc:  # reported by the test thread
                errors.append(exc)

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        return thread

    try:
        first = changes.apply(ev.WorkloadPlaced(workload(1)))
        threads = [waiter(first)]
        assert syncing.wait(WAIT_S)  # the first commit is under way, held in its fsync
        later = [changes.apply(ev.WorkloadPlaced(workload(n))) for n in (2, 3, 4)]
        threads += [waiter(g) for g in later]
        assert not released[first].wait(0.2)  # nobody is released before the data is on disk
        gate.release()  # the first commit completes
        assert released[first].wait(WAIT_S)
        assert not any(released[g].is_set() for g in later)  # it did not cover them
        assert saved_ids(store_dir / "workloads.json") == ["web-1"]
        gate.release()  # the second commit: the three changes at once
        for thread in threads:
            thread.join(WAIT_S)
        assert not errors and all(e.is_set() for e in released.values())
        assert store.commits == 2
        assert saved_ids(store_dir / "workloads.json") == ["web-1", "web-2", "web-3", "web-4"]
    finally:
        for _ in range(4):
            gate.release()
        store.stop()


def test_a_change_that_touches_no_workload_is_covered_by_the_commit_before_it(store_dir: Path) -> None:
    store = StateStore(str(store_dir))
    changes = Changes(store)
    store.start(changes.state)
    try:
        placed = changes.apply(ev.WorkloadPlaced(workload(1)))
        store.wait_durable(placed, WAIT_S)
        unrelated = changes.apply(ev.NodeWentDown(NodeId("ea-n1")))
        assert unrelated > placed
        store.wait_durable(unrelated, 0.5)  # no write needed, none waited for
        assert store.commits == 1
    finally:
        store.stop()


def test_a_failed_write_is_reported_to_its_waiters_and_retried(store_dir: Path) -> None:
    failing = threading.Event()
    failing.set()

    def flaky_fsync(fd: int) -> None:
        if failing.is_set() and not is_directory(fd):
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(fd)

    store = StateStore(str(store_dir), fsync=flaky_fsync)
    changes = Changes(store)
    store.start(changes.state)
    try:
        generation = changes.apply(ev.WorkloadPlaced(workload(1)))
        with pytest.raises(StateNotSaved, match="Input/output error"):
            store.wait_durable(generation, WAIT_S)
        assert not (store_dir / "workloads.json").exists()
        failing.clear()  # the disk recovers: the store writes what it holds without a new change
        later = changes.apply(ev.WorkloadPlaced(workload(2)))
        store.wait_durable(later, WAIT_S)
        assert saved_ids(store_dir / "workloads.json") == ["web-1", "web-2"]
    finally:
        store.stop()


def test_the_id_high_water_mark_outlives_the_instances_that_set_it(store_dir: Path) -> None:
    store = StateStore(str(store_dir))
    changes = Changes(store)
    store.start(changes.state)
    try:
        for n in (1, 2, 3):
            changes.apply(ev.WorkloadPlaced(workload(n)))
        changes.apply(ev.WorkloadPlaced(workload(5, "db")))
        changes.apply(ev.WorkloadRemoved(WorkloadId("web-3")))
        store.wait_durable(changes.apply(ev.WorkloadRemoved(WorkloadId("db-5"))), WAIT_S)
    finally:
        store.stop()
    restarted = StateStore(str(store_dir))
    assert [e.workload.id for e in restarted.load_events()] == ["web-1", "web-2"]  # type: ignore[attr-defined]
    assert restarted.id_floors() == {"web": 3, "db": 5}


def test_a_file_without_a_high_water_mark_takes_it_from_its_ids(store_dir: Path) -> None:
    store_dir.mkdir()
    doc = {
        "version": 2,
        "workloads": [
            {
                "id": "web-4",
                "service": "web",
                "spiffe_id": "spiffe://x/web-4",
                "resources": {"cpu_millis": 1, "memory_mib": 1},
                "node": "c-n1",
                "port": 8080,
                "constraints": None,
            }
        ],
    }
    (store_dir / "workloads.json").write_text(json.dumps(doc))
    store = StateStore(str(store_dir))
    assert len(store.load_events()) == 1
    assert store.id_floors() == {"web": 4}


def test_a_bad_high_water_mark_makes_the_file_unreadable_not_the_process(store_dir: Path, caplog) -> None:
    store_dir.mkdir()
    (store_dir / "workloads.json").write_text(json.dumps({"version": 2, "workloads": [], "id_high_water": {"web": -1}}))
    store = StateStore(str(store_dir))
    assert store.load_events() == [] and store.id_floors() == {}
    assert "id_high_water" in caplog.text


def test_the_file_is_the_documents_json_also_when_workloads_change_in_place(store_dir: Path) -> None:
    store = StateStore(str(store_dir))
    changes = Changes(store)
    store.start(changes.state)
    try:
        for n in (1, 2, 3):
            changes.apply(ev.WorkloadPlaced(workload(n)))
        store.wait_durable(changes.apply(ev.WorkloadPlaced(workload(1, "db"))), WAIT_S)
        changes.apply(ev.WorkloadRemoved(WorkloadId("web-2")))
        moved = Workload(
            WorkloadId("web-3"), ServiceName("web"), SpiffeId("spiffe://x/3"), Resources(2, 2), NodeId("m-n1")
        )
        changes.apply(ev.WorkloadRemoved(WorkloadId("web-3")))
        store.wait_durable(changes.apply(ev.WorkloadPlaced(moved)), WAIT_S)
        on_disk = json.loads((store_dir / "workloads.json").read_text())
        assert on_disk == workloads_to_json(changes.state.workloads, {ServiceName("web"): 3, ServiceName("db"): 1})
    finally:
        store.stop()
    assert not list(store_dir.glob("*.tmp"))
