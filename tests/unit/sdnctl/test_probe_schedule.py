"""sdnctl.probe_schedule: a round's probes, switch by switch in turn, in batches spread over the interval."""

from __future__ import annotations

import itertools

from sdnctl.probe_schedule import BATCH_S, batches, interleaved


def test_the_switches_take_turns_so_probes_sent_together_reach_different_switches() -> None:
    plan = interleaved({2: [0, 1, 2], 1: [0, 1], 3: [0]})
    assert plan == [(1, 0), (2, 0), (3, 0), (1, 1), (2, 1), (2, 2)]
    assert interleaved({}) == []


def test_a_small_fabric_sends_each_probe_alone_at_its_own_time() -> None:
    # 12 probes in a second: 67 ms apart, far more than a batch.
    rounds = batches(12, 1.0)
    assert [list(sent) for _, sent in rounds] == [[k] for k in range(12)]
    assert rounds[1][0] - rounds[0][0] > BATCH_S
    assert rounds[-1][0] < 0.8


def test_a_large_fabric_sends_the_probes_due_within_a_batch_together_and_every_one_once() -> None:
    count = 1900  # ~500 switches: a loop probe each and ~1,400 ports
    rounds = batches(count, 1.0)
    sent = [k for _, positions in rounds for k in positions]
    assert sent == list(range(count))
    assert 150 <= len(rounds) <= 250  # a wake-up every ~5 ms, not one per probe
    times = [at for at, _ in rounds]
    assert times == sorted(times) and times[-1] < 0.8
    assert all(b - a >= BATCH_S * 0.9 for a, b in itertools.pairwise(times))
    assert batches(0, 1.0) == []
