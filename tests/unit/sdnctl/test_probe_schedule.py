"""sdnctl.probe_schedule: a round's probes, switch by switch in turn, in batches spread over the interval."""

from __future__ import annotations

from sdnctl.probe_schedule import BATCH_S, batches, interleaved


def test_the_switches_take_turns_so_probes_sent_together_reach_different_switches() -> None:
    plan = interleaved({2: [0, 1, 2], 1: [0, 1], 3: [0]})
    assert plan == [(1, 0), (2, 0), (3, 0), (1, 1), (2, 1), (2, 2)]
    assert interleaved({}) == []


def test_a_small_fabric_sends_each_probe_alone_after_its_own_pause() -> None:
    # 12 probes in a second: 67 ms apart, far more than a batch.
    pause, rounds = batches(12, 1.0)
    assert [list(sent) for sent in rounds] == [[k] for k in range(12)]
    assert pause > BATCH_S and pause * len(rounds) <= 0.8


def test_a_large_fabric_sends_the_probes_due_within_a_batch_together_and_every_one_once() -> None:
    count = 1900  # ~500 switches: a loop probe each and ~1,400 ports
    pause, rounds = batches(count, 1.0)
    assert [k for positions in rounds for k in positions] == list(range(count))
    assert 150 <= len(rounds) <= 250  # a wake-up every ~5 ms, not one per probe
    assert BATCH_S * 0.9 <= pause <= BATCH_S
    assert pause * len(rounds) <= 0.8 + pause
    assert batches(0, 1.0) == (0.0, [])
