"""Prometheus metrics of one controller instance (own registry: nothing global, nothing at import)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, PlatformCollector, ProcessCollector

from netmodel.events import Event
from netmodel.state import FabricState


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.events = Counter(
            "edgectl_model_events",
            "Events offered to the model, by type and outcome",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.generation = Gauge("edgectl_model_generation", "Generation of the current model", registry=self.registry)
        self.switches = Gauge(
            "edgectl_switches", "Switches in the model by connection state", ["state"], registry=self.registry
        )
        self.links = Gauge("edgectl_links", "Link directions in the model by state", ["state"], registry=self.registry)
        self.flow_drift = Counter(
            "edgectl_flow_drift",
            "Drift checks that found a switch's flows or groups changed behind the controller's back",
            ["switch"],
            registry=self.registry,
        )

        self.config_load_error = Gauge(
            "edgectl_config_load_error",
            "1 while the newest desired-state document could not be applied (the last good one runs)",
            registry=self.registry,
        )
        self.config_info = Gauge(
            "edgectl_config_info",
            "The desired-state revision the model runs (value 1), with its source",
            ["revision", "source"],
            registry=self.registry,
        )
        self.config_converged = Gauge(
            "edgectl_config_converged",
            "1 when the data plane converged on the applied revision (routes barrier-confirmed, sidecars ACKed)",
            registry=self.registry,
        )

        self.config_view: Callable[[], dict[str, Any]] | None = None
        """The desired-state status (/api/v1/config), read at each scrape."""

    def observe_config(self, view: dict[str, Any]) -> None:
        self.config_load_error.set(1 if view["status"] == "error" else 0)
        self.config_info.clear()
        if view["revision"]:
            self.config_info.labels(view["revision"], view["source"]).set(1)
        self.config_converged.set(0 if view["health"] == "degraded" else 1)

    def observe_event(self, event: Event, outcome: str) -> None:
        self.events.labels(type(event).__name__, outcome).inc()

    def observe_state(self, state: FabricState) -> None:
        if self.config_view is not None:
            self.observe_config(self.config_view())
        self.generation.set(state.generation)
        switches = state.topology.switches.values()
        connected = sum(1 for s in switches if s.connected)
        self.switches.labels("connected").set(connected)
        self.switches.labels("disconnected").set(len(switches) - connected)
        links = state.topology.links.values()
        up = sum(1 for attrs in links if attrs.up)
        self.links.labels("up").set(up)
        self.links.labels("down").set(len(links) - up)
