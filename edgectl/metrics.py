"""Prometheus metrics of one controller instance (own registry: nothing global, nothing at import)."""

from __future__ import annotations

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

    def observe_event(self, event: Event, outcome: str) -> None:
        self.events.labels(type(event).__name__, outcome).inc()

    def observe_state(self, state: FabricState) -> None:
        self.generation.set(state.generation)
        switches = state.topology.switches.values()
        connected = sum(1 for s in switches if s.connected)
        self.switches.labels("connected").set(connected)
        self.switches.labels("disconnected").set(len(switches) - connected)
        links = state.topology.links.values()
        up = sum(1 for attrs in links if attrs.up)
        self.links.labels("up").set(up)
        self.links.labels("down").set(len(links) - up)
