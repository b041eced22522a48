"""Link latency from LLDP probe times and OpenFlow echo round trips. Pure (times are passed in).

A probe sent to switch a at t0 and received from switch b at t1 took
T(a->b) = control(a) + link(a->b) + control(b). Echo RTTs estimate each switch's control path, so
delay(a, b) = (T(a->b) + T(b->a) - rtt(a) - rtt(b)) / 2, each term the minimum over a window of
recent samples. Every disturbance (a GC pause, a busy core, a queue in OVS) only ever adds time, so
the minimum is the estimate of the undisturbed path (NTP's clock filter works the same way); a mean
or even a median carried that load into the link (a median was 38% off on a 1 ms link under a ping
flood here, the minimum within 10%). The window (12 probes, 12 s) bounds how long an old low value
outlives a real latency increase.

An echo round trip skips the switch's datapath, while a probe crosses it twice (packet-out, then
packet-in through the slow path): on OVS's userspace datapath that alone is ~0.3 ms per probe. So
where a "loop probe" round trip exists (a probe the switch's LLDP flow returns at once, datapath
included) it stands for rtt(x); the echo RTT is the fallback.
"""

from __future__ import annotations

from collections import deque

from netmodel.types import LinkId

WINDOW = 12


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
        return min(samples) if samples else None

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
            delay = (min(forward) + min(backward) - control) / 2
        else:
            delay = min(forward) - control / 2
        return max(0, round(delay * 1e6))

    def report(self) -> dict[str, object]:
        """The windowed minima behind the estimates, in microseconds: for operators and tests."""

        def us(samples: deque[float] | None) -> int | None:
            return round(min(samples) * 1e6) if samples else None

        return {
            "switches": {
                f"{dpid:016x}": {"echo_rtt_us": us(self._rtt.get(dpid)), "loop_rtt_us": us(self._loop_rtt.get(dpid))}
                for dpid in sorted(set(self._rtt) | set(self._loop_rtt))
            },
            "links": [
                {
                    "src": f"{link.src:016x}",
                    "src_port": link.src_port,
                    "dst": f"{link.dst:016x}",
                    "dst_port": link.dst_port,
                    "transit_us": us(samples),
                    "samples": len(samples),
                    "estimate_us": self.estimate_us(link),
                }
                for link, samples in sorted(self._transit.items())
            ],
        }


def worth_reporting(reported_us: int | None, estimate_us: int) -> bool:
    """Whether a new estimate is news for the model: the first one, or a change worth a re-route,
    more than 5% or 100 us (whichever is larger) away from the last one reported."""
    return reported_us is None or abs(estimate_us - reported_us) > max(100, reported_us * 0.05)
