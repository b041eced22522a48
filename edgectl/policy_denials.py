"""Denied calls, from both enforcement points: the sidecars' RBAC (``layer="envoy"``, from their access
logs) and the switches' ACL drops (``layer="network"``, from flow counters). One log per controller:
totals per (caller, service, layer) for ``/metrics``, and the most recent denials for ``/api/v1/policy``.

    denials = DenialLog()
    denials.record(layer="envoy", caller="spiffe://example.org/host/u2", service="cart", at=now, detail="GET /")
    denials.totals()   # {("host:u2", "cart", "envoy"): 1}

A caller is kept as seen (a SPIFFE id, or an address when the layer has no identity) and labelled for
metrics by ``caller_label``: ``service:<name>`` for any instance of a service, ``host:<id>``, else the
text itself, so a service's instances share one series however often they move.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

LAYERS = ("envoy", "network")
RECENT = 256
"""Denials kept for the API, newest first (older ones still count in the totals)."""
MAX_SERIES = 10_000
"""Distinct (caller, service, layer) totals kept: beyond, new callers count under ``other``, so a caller
inventing identities (or addresses) cannot grow the controller's memory or the scrape without bound."""


def caller_label(caller: str) -> str:
    """``service:<name>`` for a workload SPIFFE id (``spiffe://td/svc/<name>/w/<id>``), ``host:<id>``
    for a host identity, else ``caller`` unchanged (an address, an unknown identity)."""
    if caller.startswith("spiffe://"):
        segments = caller[len("spiffe://") :].split("/")[1:]
        if len(segments) == 4 and segments[0] == "svc" and segments[2] == "w":
            return f"service:{segments[1]}"
        if len(segments) == 2 and segments[0] == "host":
            return f"host:{segments[1]}"
    return caller


@dataclass(frozen=True, slots=True)
class Denial:
    at: float
    layer: str
    caller: str
    service: str
    count: int = 1
    detail: str = ""
    """What was refused, e.g. ``GET /cart`` (envoy) or ``s1 port 3`` (network)."""

    def as_json(self) -> dict[str, object]:
        return {
            "at": self.at,
            "layer": self.layer,
            "caller": self.caller,
            "caller_label": caller_label(self.caller),
            "service": self.service,
            "count": self.count,
            "detail": self.detail,
        }


class DenialLog:
    """Thread-safe: the xDS server's access-log streams and the route engine's counter polls record;
    scrapes and API reads read."""

    def __init__(self, recent: int = RECENT, max_series: int = MAX_SERIES) -> None:
        self._lock = threading.Lock()
        self._recent: deque[Denial] = deque(maxlen=recent)
        self._totals: dict[tuple[str, str, str], int] = {}
        self._max_series = max_series

    def record(self, *, layer: str, caller: str, service: str, at: float, count: int = 1, detail: str = "") -> None:
        if layer not in LAYERS:
            raise ValueError(f"layer must be one of {', '.join(LAYERS)}, not {layer!r}")
        if count <= 0:
            return
        denial = Denial(at, layer, caller, service, count, detail)
        key = (caller_label(caller), service, layer)
        with self._lock:
            self._recent.appendleft(denial)
            if key not in self._totals and len(self._totals) >= self._max_series:
                key = ("other", service, layer)
            self._totals[key] = self._totals.get(key, 0) + count

    def recent(self, limit: int = RECENT) -> list[Denial]:
        """The newest first."""
        with self._lock:
            return list(self._recent)[: max(0, limit)]

    def totals(self) -> dict[tuple[str, str, str], int]:
        """(caller label, service, layer) -> denied attempts since start."""
        with self._lock:
            return dict(self._totals)
