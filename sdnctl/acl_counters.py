"""From the ACL drop flows' packet counters to denials and spoofing reports. Pure.

The OpenFlow adapter reads the packet count of every ACL drop flow (policy drops and guard drops,
by cookie) on each port-stats poll; ``DropCounters.update`` turns two readings of a switch into the packets dropped in
between, per flow. The first reading of a switch (this controller just started, or the switch just
connected) is the baseline: packets dropped before are not reported again. A flow that appeared
between two readings counts from zero, and one whose counter went backwards (re-added) starts over.

``SpoofReports`` keeps the source-guard drops per switch port and says them at most once per port
every ``SPOOF_LOG_INTERVAL_S`` (the count since the last line), so a flood makes one line, not one
per poll; ``totals`` are the counter behind ``edgectl_spoofed_packets_dropped_total``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from netmodel.ids import SwitchId
from sdnctl.acl import DropLabel, spoof_message
from sdnctl.flows import MatchField

FlowKey = tuple[int, int, tuple[MatchField, ...]]  # FlowSpec.key: table, priority, match
SPOOF_LOG_INTERVAL_S = 10.0


class DropCounters:
    """The last packet count of every ACL flow of every switch. One caller at a time."""

    def __init__(self) -> None:
        self._last: dict[SwitchId, dict[FlowKey, int]] = {}
        self._installed: dict[SwitchId, set[FlowKey]] = {}

    def installed(self, dpid: SwitchId, keys: Iterable[FlowKey]) -> None:
        """Flows this controller just added: they count from zero, also in a switch's first reading."""
        self._installed.setdefault(dpid, set()).update(keys)

    def update(self, dpid: SwitchId, packets: Mapping[FlowKey, int]) -> dict[FlowKey, int]:
        """The packets each flow dropped since the switch's previous reading (only flows that dropped some)."""
        previous = self._last.get(dpid)
        self._last[dpid] = dict(packets)
        fresh = self._installed.pop(dpid, set())
        if previous is None:
            previous = {key: count for key, count in packets.items() if key not in fresh}
        out: dict[FlowKey, int] = {}
        for key, count in packets.items():
            before = previous.get(key, 0)
            delta = count - before if count >= before else count
            if delta > 0:
                out[key] = delta
        return out

    def forget_switch(self, dpid: SwitchId) -> None:
        self._last.pop(dpid, None)
        self._installed.pop(dpid, None)


@dataclass(slots=True)
class _PortReport:
    label: DropLabel
    pending: int = 0
    last_logged_at: float | None = None


class SpoofReports:
    """Source-guard drops per switch port: totals, and the rate-limited log lines."""

    def __init__(self, interval_s: float = SPOOF_LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._ports: dict[tuple[str, int], _PortReport] = {}
        self._totals: dict[tuple[str, int], int] = {}

    def add(self, label: DropLabel, packets: int) -> None:
        if packets <= 0:
            return
        key = (label.switch, label.port)
        report = self._ports.setdefault(key, _PortReport(label))
        report.label = label
        report.pending += packets
        self._totals[key] = self._totals.get(key, 0) + packets

    def due(self, now: float) -> list[str]:
        """The lines to log now: per port with drops not yet said, at most one per interval."""
        lines = []
        for report in self._ports.values():
            if report.pending and (report.last_logged_at is None or now - report.last_logged_at >= self.interval_s):
                lines.append(spoof_message(report.label, report.pending))
                report.pending = 0
                report.last_logged_at = now
        return lines

    def totals(self) -> dict[tuple[str, int], int]:
        """(switch name, port) -> packets dropped by its source guard since start."""
        return dict(self._totals)
