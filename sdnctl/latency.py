"""Link latency from LLDP probe times and OpenFlow echo round trips. Pure (times are passed in).

A probe sent to switch a at t0 and received from switch b at t1 took
T(a->b) = control(a) + link(a->b) + control(b). Echo RTTs estimate each switch's control path, so
delay(a, b) = (T(a->b) + T(b->a) - rtt(a) - rtt(b)) / 2, using medians of recent samples: a median
shrugs off the odd probe delayed by a GC pause or a busy core, where a mean would not.

An echo round trip skips the switch's datapath, while a probe crosses it twice (packet-out, then
packet-in through the slow path): on OVS's userspace datapath that alone is ~0.3 ms per probe. So
where a "loop probe" round trip exists (a probe the switch's LLDP flow returns at once, datapath
included) it stands for rtt(x); the echo RTT is the fallback.
"""

from __future__ import annotations

import statistics
from collections import deque

from netmodel.types import LinkId

WINDOW = 9


class LatencyEstimator:
    def __init__(self, window: int = WINDOW) -> None:
        self._window = window
        self._rtt: dict[int, deque[float]] = {}
        self._loop_rtt: dict[int, deque[float]] = {}
        self._transit: dict[LinkId, deque[float]] = {}

    def record_echo_rtt(self, dpid: int, rtt_s: float) -> None:
        self._rtt.setdefault(dpid, deque(maxlen=self._window)).append(rtt_s)

    def record_loop_rtt(self, dpid: int, rtt_s: float) -> None:
        self._loop_rtt.setdefault(dpid, deque(maxlen=self._window)).append(rtt_s)

    def control_rtt_s(self, dpid: int) -> float | None:
        samples = self._loop_rtt.get(dpid) or self._rtt.get(dpid)
        return statistics.median(samples) if samples else None

    def record_probe(self, link: LinkId, transit_s: float) -> None:
        self._transit.setdefault(link, deque(maxlen=self._window)).append(transit_s)

    def forget_switch(self, dpid: int) -> None:
        self._rtt.pop(dpid, None)
        self._loop_rtt.pop(dpid, None)
        for link in [link for link in self._transit if dpid in (link.src, link.dst)]:
            del self._transit[link]

    def estimate_us(self, link: LinkId) -> int | None:
        forward = self._transit.get(link)
        rtt_a, rtt_b = self.control_rtt_s(link.src), self.control_rtt_s(link.dst)
        if not forward or rtt_a is None or rtt_b is None:
            return None
        control = rtt_a + rtt_b
        backward = self._transit.get(link.reversed())
        if backward:
            delay = (statistics.median(forward) + statistics.median(backward) - control) / 2
        else:
            delay = statistics.median(forward) - control / 2
        return max(0, round(delay * 1e6))
