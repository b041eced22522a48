"""Prometheus metrics of the xDS server, on a registry the caller passes in (nothing global)."""

from __future__ import annotations

import contextlib
from collections import Counter as Counter_
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from meshctl.xds_types import short_name

PUSH_TO_ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class XdsMetrics:
    """Counts pushes, ACKs and NACKs per type and times push-to-ACK (the ``protocol.Observer``), and
    open streams and stream errors (with those: the servicer's ``XdsCallbacks``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._pushes = Counter("edgectl_xds_pushes", "xDS responses sent, by type", ["type"], registry=self.registry)
        self._acks = Counter("edgectl_xds_acks", "xDS responses ACKed, by type", ["type"], registry=self.registry)
        self._nacks = Counter("edgectl_xds_nacks", "xDS responses NACKed, by type", ["type"], registry=self.registry)
        self._push_to_ack = Histogram(
            "edgectl_xds_push_to_ack_seconds",
            "Time from sending an xDS response to its ACK, by type",
            ["type"],
            buckets=PUSH_TO_ACK_BUCKETS,
            registry=self.registry,
        )
        self.streams = Gauge("edgectl_xds_streams", "Open ADS streams, by variant", ["mode"], registry=self.registry)
        self.stream_errors = Counter(
            "edgectl_xds_stream_errors",
            "ADS streams ended by an error, by gRPC status",
            ["code"],
            registry=self.registry,
        )
        self.builds = Counter(
            "edgectl_xds_snapshot_builds",
            "Snapshot builds from the model (every node's, or those a change touched), by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.build_seconds = Histogram(
            "edgectl_xds_snapshot_build_seconds",
            "Time to build the snapshots a model change touches and publish them",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.build_running = Gauge(
            "edgectl_xds_snapshot_build_running_seconds",
            "How long the snapshot build under way has run (0: none is); a long one moves no counter until it ends",
            registry=self.registry,
        )
        self._access_log_streams = Gauge(
            "edgectl_xds_access_log_streams", "Open sidecar access log (denial) streams", registry=self.registry
        )
        self._access_log_entries = Counter(
            "edgectl_xds_access_log_entries",
            "Sidecar access log entries received, by outcome (recorded as a denial, not_denied, dropped, unknown_node)",
            ["outcome"],
            registry=self.registry,
        )
        self._per_type: dict[str, tuple[str, Any, Any, Any]] = {}
        self.push_counts: Counter_[str] = Counter_()
        """Pushes per type as plain numbers (cheap to read often, unlike collecting the registry)."""
        self._collectors = [
            self._pushes,
            self._acks,
            self._nacks,
            self._push_to_ack,
            self.streams,
            self.stream_errors,
            self.builds,
            self.build_seconds,
            self.build_running,
            self._access_log_streams,
            self._access_log_entries,
        ]

    def _of(self, type_url: str) -> tuple[str, Any, Any, Any]:
        """The type's label and its labelled children, looked up once (``labels()`` costs microseconds,
        paid twice per stream in a fan-out)."""
        children = self._per_type.get(type_url)
        if children is None:
            label = short_name(type_url)
            children = (label, self._pushes.labels(label), self._acks.labels(label), self._push_to_ack.labels(label))
            self._per_type[type_url] = children
        return children

    def pushed(self, type_url: str) -> None:
        label, pushes, _acks, _push_to_ack = self._of(type_url)
        pushes.inc()
        self.push_counts[label] += 1

    def acked(self, type_url: str, seconds: float) -> None:
        _label, _pushes, acks, push_to_ack = self._of(type_url)
        acks.inc()
        push_to_ack.observe(seconds)

    def nacked(self, type_url: str) -> None:
        self._nacks.labels(short_name(type_url)).inc()

    def opened(self, mode: str) -> None:
        self.streams.labels(mode).inc()

    def closed(self, mode: str) -> None:
        self.streams.labels(mode).dec()

    def failed(self, code: str) -> None:
        self.stream_errors.labels(code).inc()

    def access_log_stream(self, delta: int) -> None:
        self._access_log_streams.inc(delta)

    def access_log_entries(self, outcome: str, count: int) -> None:
        if count > 0:
            self._access_log_entries.labels(outcome).inc(count)

    def unregister(self) -> None:
        """Let a later server register the same names on this registry (a restart in one process)."""
        for collector in self._collectors:
            with contextlib.suppress(KeyError):
                self.registry.unregister(collector)
