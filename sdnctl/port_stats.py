"""Byte counters from OpenFlow port statistics: a rate per port, and the load of each link (pure).

The OpenFlow adapter polls every switch's port counters and hands each reading here with the time it
arrived (``now``, monotonic seconds); a rate needs two readings of the same port. A counter that went
backwards (the switch restarted, the port was re-created) starts over: no rate until the next reading.
A link direction's load is what its source port transmits.

Once per poll round ``load_report`` turns the rates into one ``LinkLoadMeasured`` for the model, holding
only the directions whose load changed enough to matter (``load_changed``), so the model's generation
does not move on counter noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from netmodel import events as ev
from netmodel.ids import PortNo, SwitchId
from netmodel.state import FabricState
from netmodel.types import LinkId

PortKey = tuple[SwitchId, PortNo]


@dataclass(frozen=True, slots=True)
class PortReading:
    """A port's counters as last read, and the rates since the reading before (None: no earlier one)."""

    tx_bytes: int
    rx_bytes: int
    at: float
    tx_bytes_per_s: float | None = None
    rx_bytes_per_s: float | None = None


class PortRates:
    """The latest reading of every port of the connected switches. One writer (the OpenFlow event
    thread); readers take ``readings()``, a copy, from any thread."""

    def __init__(self) -> None:
        self._readings: dict[PortKey, PortReading] = {}

    def record(self, dpid: SwitchId, port: PortNo, tx_bytes: int, rx_bytes: int, now: float) -> PortReading:
        key = (dpid, port)
        previous = self._readings.get(key)
        reading = PortReading(tx_bytes, rx_bytes, now)
        if (
            previous is not None
            and now > previous.at
            and tx_bytes >= previous.tx_bytes
            and rx_bytes >= previous.rx_bytes
        ):
            elapsed = now - previous.at
            reading = PortReading(
                tx_bytes,
                rx_bytes,
                now,
                (tx_bytes - previous.tx_bytes) / elapsed,
                (rx_bytes - previous.rx_bytes) / elapsed,
            )
        self._readings[key] = reading
        return reading

    def forget_switch(self, dpid: SwitchId) -> None:
        """A disconnected switch: its counters start over when it is back."""
        for key in [k for k in self._readings if k[0] == dpid]:
            del self._readings[key]

    def readings(self) -> dict[PortKey, PortReading]:
        return dict(self._readings)


@dataclass(frozen=True, slots=True)
class LinkLoad:
    """One link direction: what its source port sent (bytes, the switch's counter), at what rate, and
    that rate as a fraction of the link's declared capacity (None: no rate yet, or no capacity)."""

    link: LinkId
    tx_bytes: int
    bytes_per_s: float | None
    utilization: float | None


def link_loads(state: FabricState, readings: Mapping[PortKey, PortReading]) -> list[LinkLoad]:
    """The load of every link direction of the model whose source port has been read."""
    loads = []
    for link, attrs in state.topology.links.items():
        reading = readings.get((link.src, link.src_port))
        if reading is None:
            continue
        rate = reading.tx_bytes_per_s
        capacity_bytes_per_s = attrs.capacity_mbps * 1e6 / 8
        utilization = rate / capacity_bytes_per_s if rate is not None and capacity_bytes_per_s > 0 else None
        loads.append(LinkLoad(link, reading.tx_bytes, rate, utilization))
    return loads


LOAD_CHANGE_OF_CAPACITY = 0.01
"""A load that moved by more than 1 % of the link's declared capacity is news..."""
LOAD_CHANGE_RELATIVE = 0.05
"""...and so is one that moved by more than 5 % of the load the model holds,..."""
LOAD_NOISE_BPS = 10_000.0
"""...but never a move of 10 kbit/s or less: the controller's own probes (LLDP and loop probes, about
70 bytes per port a second) and where a poll falls against them make that much noise on an idle link."""


def load_changed(held_bps: float | None, measured_bps: float | None, capacity_mbps: float) -> bool:
    """Whether a measured load differs enough from the one the model holds to be published: the first
    measurement and the end of one always do; else a move by more than 1 % of capacity or 5 % of the held
    load (whichever is smaller: a change small against a busy link but large against a quiet one counts),
    and by more than 10 kbit/s."""
    if held_bps is None or measured_bps is None:
        return held_bps != measured_bps
    capacity_bps = max(capacity_mbps, 0.0) * 1e6
    bound = min(LOAD_CHANGE_OF_CAPACITY * capacity_bps, LOAD_CHANGE_RELATIVE * held_bps)
    return abs(measured_bps - held_bps) > max(bound, LOAD_NOISE_BPS)


def load_report(state: FabricState, readings: Mapping[PortKey, PortReading], at: float) -> ev.LinkLoadMeasured | None:
    """One event for a poll round: every link direction whose measured load ``load_changed`` against the
    one in ``state`` (a direction whose port has no rate any more, its switch gone, is cleared), or None
    when nothing did. ``at``: wall-clock time of the round."""
    changes: list[tuple[LinkId, float | None]] = []
    for link, attrs in state.topology.links.items():
        reading = readings.get((link.src, link.src_port))
        if reading is not None and reading.tx_bytes_per_s is None:
            continue  # read once (again: the counter started over): the rate comes with the next reading
        measured = reading.tx_bytes_per_s * 8 if reading is not None and reading.tx_bytes_per_s is not None else None
        if load_changed(attrs.measured_load_bps, measured, attrs.capacity_mbps):
            changes.append((link, measured))
    return ev.LinkLoadMeasured(tuple(changes), at) if changes else None
