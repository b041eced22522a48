"""Fair wake-ups: a stream that needs a later change does not wait behind a whole earlier fan-out."""

from __future__ import annotations

import pytest

from meshctl.wake_order import FairWakeQueue


def drain(queue: FairWakeQueue[str]) -> list[list[str]]:
    chunks = []
    while chunk := queue.next_chunk():
        chunks.append(chunk)
    return chunks


def test_a_later_small_change_is_served_next_during_a_big_fan_out() -> None:
    queue: FairWakeQueue[str] = FairWakeQueue(chunk=4)
    queue.add_batch(f"s{i}" for i in range(1000))
    first = queue.next_chunk()
    queue.add_batch(["envoy"])
    assert first == ["s0", "s1", "s2", "s3"]
    assert queue.next_chunk() == ["envoy"]  # not after the 996 others, nor after their next chunk
    assert queue.next_chunk() == ["s4", "s5", "s6", "s7"]


def test_changes_that_keep_coming_delay_a_fan_out_by_a_chunk_each_and_never_stop_it() -> None:
    queue: FairWakeQueue[str] = FairWakeQueue(chunk=4)
    queue.add_batch(f"s{i}" for i in range(12))
    served: list[list[str]] = [queue.next_chunk()]
    for change in range(5):
        queue.add_batch([f"c{change}"])
        served += [queue.next_chunk(), queue.next_chunk()]
    assert served == [
        ["s0", "s1", "s2", "s3"],
        ["c0"],
        ["s4", "s5", "s6", "s7"],
        ["c1"],
        ["s8", "s9", "s10", "s11"],
        ["c2"],
        [],
        ["c3"],
        [],
        ["c4"],
        [],
    ]


def test_a_stream_woken_again_moves_to_the_newest_batch_and_is_served_once() -> None:
    queue: FairWakeQueue[str] = FairWakeQueue(chunk=2)
    queue.add_batch(["a", "b", "c", "d", "e", "f"])
    queue.add_batch(["f", "f"])
    assert len(queue) == 6
    chunks = drain(queue)
    assert chunks[:2] == [["f"], ["a", "b"]]  # the newer change first
    served = [item for chunk in chunks for item in chunk]
    assert sorted(served) == ["a", "b", "c", "d", "e", "f"]  # each exactly once
    assert len(queue) == 0 and queue.next_chunk() == []


def test_a_new_batch_goes_first_then_batches_take_turns() -> None:
    queue: FairWakeQueue[str] = FairWakeQueue(chunk=2)
    queue.add_batch(["a1", "a2", "a3", "a4", "a5", "a6"])
    queue.add_batch(["b1", "b2", "b3", "b4"])
    assert drain(queue) == [["b1", "b2"], ["a1", "a2"], ["b3", "b4"], ["a3", "a4"], ["a5", "a6"]]


def test_the_arrival_order_within_a_change_is_kept_and_empty_batches_cost_nothing() -> None:
    queue: FairWakeQueue[str] = FairWakeQueue(chunk=10)
    queue.add_batch([])
    queue.add_batch(["x", "y", "x"])
    assert drain(queue) == [["x", "y"]]


def test_a_chunk_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FairWakeQueue(chunk=0)


def test_the_parts_of_one_change_are_one_batch_and_a_later_change_is_still_served_next() -> None:
    queue: FairWakeQueue[str] = FairWakeQueue(chunk=4)
    for part in range(250):  # the loop took the fan-out's wake-ups in 250 parts of 4
        queue.add_batch([f"s{part}-{i}" for i in range(4)], change=1)
    first = queue.next_chunk()
    queue.add_batch(["envoy"], change=2)
    assert len(first) == 4
    assert queue.next_chunk() == ["envoy"]  # not behind one chunk of each of 250 parts
    assert len(queue.next_chunk()) == 4


def test_a_change_whose_batch_was_served_starts_a_new_one() -> None:
    queue: FairWakeQueue[str] = FairWakeQueue(chunk=4)
    queue.add_batch(["a", "b"], change=7)
    assert queue.next_chunk() == ["a", "b"]
    queue.add_batch(["c"], change=7)  # more of change 7 after its batch was served
    assert queue.next_chunk() == ["c"]
    assert queue.next_chunk() == []
    queue.add_batch(["d"], change=8)
    queue.add_batch(["a"], change=8)
    queue.add_batch(["d"], change=8)  # (a stream woken twice by one change is queued once)
    assert drain(queue) == [["d", "a"]]
