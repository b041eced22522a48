"""When each probe of a round goes out. Pure.

A round probes every switch (a loop probe, then each port that is up) once per ``PROBE_INTERVAL_S``,
spread over the interval: a burst of probes queues behind itself in the controller and in the switch,
and the queueing lands in the measured latencies. Spreading them one by one, though, woke the prober
for every probe (~2,400 times a second at 500 switches), and each wake-up is a hand-off of the
interpreter's lock: ~7 % of a core. So probes due within ``BATCH_S`` of each other go out together,
and the round visits the switches in turn (every switch's first probe, then every switch's second,
...): the probes of one batch go to different switches, and none waits behind another at its switch.

The pause comes before each batch, counted from the end of the one before, not from the round's
start: a controller too busy to send a round in its interval sends fewer probes a second (as it did
one probe at a time), instead of catching up in bursts that add to what made it late.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

K = TypeVar("K", bound=int)  # a switch's dpid (SwitchId)

BATCH_S = 0.005
"""Probes due within this of each other go out in one wake-up (the interpreter's switch interval)."""


def interleaved(probes_by_switch: Mapping[K, Sequence[int]]) -> list[tuple[K, int]]:
    """(switch, port) of every probe of a round, the switches in turn: each switch's first probe (in
    dpid order), then each one's second, and so on."""
    ordered = [(dpid, probes_by_switch[dpid]) for dpid in sorted(probes_by_switch)]
    longest = max((len(ports) for _, ports in ordered), default=0)
    return [(dpid, ports[k]) for k in range(longest) for dpid, ports in ordered if k < len(ports)]


def batches(count: int, interval_s: float, batch_s: float = BATCH_S) -> tuple[float, list[range]]:
    """(the pause before each batch, the plan positions of each batch) for a round of ``count`` probes:
    the pauses add up to four fifths of ``interval_s`` (the rest is left for the round's bookkeeping),
    as many probes together as fall due within ``batch_s``, at least one."""
    if count <= 0:
        return 0.0, []
    gap = interval_s / (count + count // 4)
    per_batch = max(1, int(batch_s / gap))
    return per_batch * gap, [range(start, min(start + per_batch, count)) for start in range(0, count, per_batch)]
