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

The minimum is only as good as the window's best sample: while the controller or a switch is busy for
the whole window, the minima carry that lag and wander with it. ``noise_us`` says how far a window's
samples typically sit above its minimum; a change within it is not reported (``worth_reporting``), so
the controller's own load does not move routes between paths of equal latency. A link's first estimate
waits for 3 samples of each term: one sample taken while every switch's tables were being written read up
to 41 ms on links of 0 us. Those 3 may all come from one busy spell (a first estimate 31 % low was seen on a
1 ms link: its control round trips were lifted, so too much was subtracted, and the window's quieter
samples moved it 364 us against a noise of 367). An estimate on a whole window whose every term's minimum
is at or below what it was when the last one was reported (``refines``) found quieter samples, not more
load: it is reported past the 5 % / 100 us floor alone, its noise not weighed. Such reports only ever
lower the minima they rest on, so they cannot flap.
"""

from __future__ import annotations

from collections import deque

from netmodel.types import LinkId

WINDOW = 12
FIRST_REPORT_SAMPLES = 3
"""Samples each term needs before a link's first estimate is reported."""


Terms = tuple[float, float | None, float, float]


def refines(now: Terms | None, then: Terms | None) -> bool:
    """Whether an estimate resting on minima ``now`` only found quieter samples than one resting on
    ``then``: the same terms, none of them higher."""
    if now is None or then is None or (now[1] is None) != (then[1] is None):
        return False
    return all(a is None or b is None or a <= b for a, b in zip(now, then, strict=True))


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
        samples = self._control_samples(dpid)
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

    def terms(self, link: LinkId) -> Terms | None:
        """The windowed minima ``estimate_us(link)`` rests on (forward transit, backward transit or None,
        the two control round trips), in seconds; None when there is no estimate."""
        forward = self._transit.get(link)
        rtt_a, rtt_b = self.control_rtt_s(link.src), self.control_rtt_s(link.dst)
        if not forward or rtt_a is None or rtt_b is None:
            return None
        backward = self._transit.get(link.reversed())
        return (min(forward), min(backward) if backward else None, rtt_a, rtt_b)

    def noise_us(self, link: LinkId) -> int:
        """The jitter of ``estimate_us``: each term's median sample minus its minimum, combined as the
        estimate combines the terms. 0 when there is no estimate."""
        forward = self._transit.get(link)
        control_a, control_b = self._control_samples(link.src), self._control_samples(link.dst)
        if not forward or not control_a or not control_b:
            return 0
        control = _above_min(control_a) + _above_min(control_b)
        backward = self._transit.get(link.reversed())
        if backward:
            noise = (_above_min(forward) + _above_min(backward) + control) / 2
        else:
            noise = _above_min(forward) + control / 2
        return round(noise * 1e6)

    def samples(self, link: LinkId) -> int:
        """How many samples the fewest-sampled term of ``estimate_us`` has (its forward transit and the
        two switches' control round trips)."""
        forward = self._transit.get(link)
        control_a, control_b = self._control_samples(link.src), self._control_samples(link.dst)
        return min(len(forward or ()), len(control_a or ()), len(control_b or ()))

    def _control_samples(self, dpid: int) -> deque[float] | None:
        return self._loop_rtt.get(dpid) or self._rtt.get(dpid)

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
                    "noise_us": self.noise_us(link),
                }
                for link, samples in sorted(self._transit.items())
            ],
        }


def worth_reporting(
    reported_us: int | None, estimate_us: int, noise_us: int = 0, samples: int = WINDOW, refined: bool = False
) -> bool:
    """Whether a new estimate is news for the model. The first one once it rests on
    ``FIRST_REPORT_SAMPLES`` samples of each term; after that a change worth a re-route: more than 5% or
    100 us (whichever is larger) away from the last one reported, and more than the measurement's own
    ``noise_us``, unless the new estimate is ``refined`` (see ``refines``) and rests on a whole window: the
    noise gate is there for minima that wander up with load, not for quieter samples found; and a whole
    window's minima are the best the estimator will know, so a start-up's falling minima move routes
    once, not at every step down."""
    if reported_us is None:
        return samples >= FIRST_REPORT_SAMPLES
    floor = max(100, reported_us * 0.05)
    if refined and samples >= WINDOW:
        return abs(estimate_us - reported_us) > floor
    return abs(estimate_us - reported_us) > max(floor, noise_us)


def _above_min(samples: deque[float]) -> float:
    """How far the median sample sits above the minimum."""
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] - ordered[0]
