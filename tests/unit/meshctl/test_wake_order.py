"""Fair wake-ups: a stream that needs a later change does not wait behind a whole earlier fan-out."""

from __future__ import annotations

import pytest

from meshctl.wake_order import FairWakeQueue


def drain(queue: FairWakeQueue[str]) -> list[list[str]]:
    chunks = []
    while chunk := queue.next_chunk():
        chunks.append(chunk)
    return chunks


def test_a_later_small_change_is_served_after_one_chunk_of_a_big_fan_out() -> None:
    queue: FairWakeQueue[str] = FairWakeQueue(chunk=4)
    queue.add_batch(f"s{i}" for i in range(1000))
    first = queue.next_chunk()
    queue.add_batch(["envoy"])
    assert first == ["s0", "s1", "s2", "s3"]
    assert queue.next_chunk() == ["s4", "s5", "s6", "s7"]  # the batch whose turn it was
    assert queue.next_chunk() == ["envoy"]  # not after the 992 others


def test_a_stream_woken_again_moves_to_the_newest_batch_and_is_served_once() -> None:
    queue: FairWakeQueue[str] = FairWakeQueue(chunk=2)
    queue.add_batch(["a", "b", "c", "d", "e", "f"])
    queue.add_batch(["f", "f"])
    assert len(queue) == 6
    chunks = drain(queue)
    assert chunks[:2] == [["a", "b"], ["f"]]
    served = [item for chunk in chunks for item in chunk]
    assert sorted(served) == ["a", "b", "c", "d", "e", "f"]  # each exactly once
    assert len(queue) == 0 and queue.next_chunk() == []


def test_batches_take_turns() -> None:
    queue: FairWakeQueue[str] = FairWakeQueue(chunk=2)
    queue.add_batch(["a1", "a2", "a3", "a4"])
    queue.add_batch(["b1", "b2", "b3", "b4"])
    assert drain(queue) == [["a1", "a2"], ["b1", "b2"], ["a3", "a4"], ["b3", "b4"]]


def test_the_arrival_order_within_a_change_is_kept_and_empty_batches_cost_nothing() -> None:
    queue: FairWakeQueue[str] = FairWakeQueue(chunk=10)
    queue.add_batch([])
    queue.add_batch(["x", "y", "x"])
    assert drain(queue) == [["x", "y"]]


def test_a_chunk_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FairWakeQueue(chunk=0)
