"""Byte counters from OpenFlow port statistics: a rate per port, and the load of each link (pure).

The OpenFlow adapter polls every switch's port counters and hands each reading here with the time it
arrived (``now``, monotonic seconds); a rate needs two readings of the same port. A counter that went
backwards (the switch restarted, the port was re-created) starts over: no rate until the next reading.
A link direction's load is what its source port transmits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
