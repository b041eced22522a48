"""The cycle collector's schedule: full passes on its thread, thresholds restored, cyclic garbage still freed."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

from edgectl import collector
from edgectl.collector import CollectorSchedule, release_free_heap


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_no_automatic_full_pass_while_started_and_thresholds_restored_after() -> None:
    before = gc.get_threshold()
    first, second = CollectorSchedule(interval_s=3600), CollectorSchedule(interval_s=3600)
    first.start()
    try:
        second.start()
        assert gc.get_threshold()[:2] == before[:2] and gc.get_threshold()[2] > 1_000_000
        second.stop()
        assert gc.get_threshold()[2] > 1_000_000  # the other schedule still runs
    finally:
        first.stop()
        gc.unfreeze()
    assert gc.get_threshold() == before


def test_a_scheduled_pass_runs_and_reports_and_cyclic_garbage_is_still_freed() -> None:
    passes: list[tuple[float, int]] = []
    done = threading.Event()

    def on_pass(seconds: float, collected: int) -> None:
        passes.append((seconds, collected))
        done.set()

    schedule = CollectorSchedule(interval_s=0.05, on_pass=on_pass, unfreeze_every=1)
    schedule.start()
    try:
        cycles = [Cycle() for _ in range(100)]
        alive = [weakref.ref(cycle) for cycle in cycles]
        del cycles  # unreachable now, but in cycles: only a collection frees them
        assert done.wait(10)
        done.clear()
        assert done.wait(10)  # a pass that started after they became garbage
    finally:
        schedule.stop()
        gc.unfreeze()
    assert all(ref() is None for ref in alive)
    assert all(seconds >= 0 and collected >= 0 for seconds, collected in passes)


def test_garbage_alive_at_a_pass_is_frozen_until_the_next_whole_heap_pass() -> None:
    schedule = CollectorSchedule(interval_s=3600, unfreeze_every=3)  # passes run by hand here
    schedule.start()
    try:
        cycles = [Cycle() for _ in range(10)]
        alive = [weakref.ref(cycle) for cycle in cycles]
        schedule.full_pass()  # they survive it: frozen
        del cycles
        schedule.full_pass()
        assert all(ref() is not None for ref in alive)  # a pass scans only what came after the last
        schedule.full_pass()  # the third: the whole heap
        assert all(ref() is None for ref in alive)
    finally:
        schedule.stop()
        gc.unfreeze()


def test_interval_and_unfreeze_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        CollectorSchedule(interval_s=0)
    with pytest.raises(ValueError, match="at least 1"):
        CollectorSchedule(unfreeze_every=0)


def test_each_pass_gives_the_c_allocators_free_memory_back(monkeypatch: pytest.MonkeyPatch) -> None:
    assert release_free_heap()  # glibc (Debian): malloc_trim exists and runs
    released: list[bool] = []
    monkeypatch.setattr(collector, "release_free_heap", lambda: released.append(True) or True)
    schedule = CollectorSchedule(interval_s=3600)
    schedule.start()
    try:
        schedule.full_pass()
        schedule.full_pass()
    finally:
        schedule.stop()
        gc.unfreeze()
    assert released == [True, True]
