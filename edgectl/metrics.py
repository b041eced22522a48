"""Prometheus metrics of one controller instance (own registry: nothing global, nothing at import).

Every metric is listed in docs/metrics.md. What can be read from a snapshot is read at scrape time
(``edgectl.scrape_metrics``); what only an event knows (a route computation's time, a placement step,
a migration's stages, SVIDs issued) is counted as it happens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector

from edgectl.scrape_metrics import ScrapeSources, SnapshotCollector
from netmodel.events import Event
from netmodel.state import FabricState
from placement.migration_stages import MigrationStages

if TYPE_CHECKING:
    from pki.identities import IdentitySnapshot
    from placement.watch import PlacementStep

ROUTE_COMPUTE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
ROUTE_APPLY_ROUND_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
GC_PASS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
MIGRATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


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
        self.gc_full_pass = Histogram(
            "edgectl_gc_full_pass_seconds",
            "The cycle collector's scheduled full passes over the whole heap (every thread waits meanwhile)",
            buckets=GC_PASS_BUCKETS,
            registry=self.registry,
        )
        self.gc_full_pass_collected = Counter(
            "edgectl_gc_full_pass_collected_objects",
            "Objects the scheduled full passes found unreachable (cyclic garbage)",
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
        self.config_applied_at = Gauge(
            "edgectl_config_last_applied_timestamp_seconds",
            "When the running desired-state revision was applied (unix time)",
            registry=self.registry,
        )
        self.config_converged = Gauge(
            "edgectl_config_converged",
            "1 when the data plane converged on the applied revision (routes barrier-confirmed, sidecars ACKed)",
            registry=self.registry,
        )

        self.config_view: Callable[[], dict[str, Any]] | None = None
        """The desired-state status (/api/v1/config), read at each scrape."""

        self.route_compute_seconds = Histogram(
            "edgectl_route_compute_seconds",
            "Time to compute a new model generation's routes and per-switch tables",
            buckets=ROUTE_COMPUTE_BUCKETS,
            registry=self.registry,
        )
        self.route_apply_seconds = Histogram(
            "edgectl_route_apply_seconds",
            "Time to send a model generation's route changes to the switches and have every switch confirm them",
            buckets=ROUTE_COMPUTE_BUCKETS,
            registry=self.registry,
        )
        self.route_apply_rounds = Histogram(
            "edgectl_route_apply_rounds",
            "Loop-free rounds a generation's route changes were sent in (each confirmed before the next)",
            buckets=ROUTE_APPLY_ROUND_BUCKETS,
            registry=self.registry,
        )
        self.route_apply_running = Gauge(
            "edgectl_route_apply_running_seconds",
            "How long the route changes out to the switches now have waited for their confirmation (0: none out)",
            registry=self.registry,
        )
        self.placement_requests = Counter(
            "edgectl_placement_requests",
            "Place, Migrate and Evict calls of the placement API, by outcome (ok, or the gRPC status of the refusal)",
            ["operation", "outcome"],
            registry=self.registry,
        )
        self.placement_unschedulable = Counter(
            "edgectl_placement_unschedulable",
            "Place calls no node could take, by the filter that rejected the last candidate node",
            ["filter"],
            registry=self.registry,
        )
        self.placement_steps = Counter(
            "edgectl_placement_steps",
            "Placement events by kind (the Watch stream's: placed, removed, migration steps, unschedulable)",
            ["kind"],
            registry=self.registry,
        )
        self.migrations = Counter(
            "edgectl_migrations", "Migrations ended, by outcome", ["outcome"], registry=self.registry
        )
        self.migration_stage_seconds = Histogram(
            "edgectl_migration_stage_seconds",
            "Time each stage of a migration took (place, converge, withdraw, and the total)",
            ["stage"],
            buckets=MIGRATION_BUCKETS,
            registry=self.registry,
        )
        self.migration_convergence_seconds = Histogram(
            "edgectl_migration_convergence_seconds",
            "Time each convergence probe (routes, sidecars) took to apply a migration's generation",
            ["probe"],
            buckets=MIGRATION_BUCKETS,
            registry=self.registry,
        )
        self.svids_issued = Counter(
            "edgectl_svids_issued",
            "X.509-SVIDs issued to workloads and hosts (new and rotated)",
            registry=self.registry,
        )
        self._stages = MigrationStages()
        self._serial_of: dict[str, int] = {}
        """Subject -> the serial of its certificate in the last identity snapshot seen."""
        self._identities_version: int | None = None

        self.sources = ScrapeSources()
        """What the scrape-time collector reads; the controller sets each part as it starts it."""
        self.registry.register(SnapshotCollector(self.sources))

    def observe_route_apply(self, seconds: float, rounds: int) -> None:
        self.route_apply_seconds.observe(seconds)
        self.route_apply_rounds.observe(rounds)

    def observe_request(self, operation: str, outcome: str, rejected_by: str = "") -> None:
        """A placement API command answered (``placement.grpc_api``'s observer)."""
        self.placement_requests.labels(operation, outcome).inc()
        if rejected_by:
            self.placement_unschedulable.labels(rejected_by).inc()

    def observe_step(self, step: PlacementStep) -> None:
        """A placement step (``PlacementEvents`` listener: called in sequence order, under its lock)."""
        kind = step.kind.name
        self.placement_steps.labels(kind.lower()).inc()
        times = self._stages.on_step(kind, step.migration_id, step.at, step.converged_after)
        for stage, seconds in times.stages:
            self.migration_stage_seconds.labels(stage).observe(seconds)
        for probe, seconds in times.probes:
            self.migration_convergence_seconds.labels(probe).observe(seconds)
        if times.outcome is not None:
            self.migrations.labels(times.outcome).inc()

    def observe_identities(self, snapshot: IdentitySnapshot) -> None:
        """The PKI's new identity snapshot: its certificates not in the previous one were just issued. Only
        the subjects it says changed are looked at, when it was made from the one seen last (one per
        Place with the PKI on: a pass over 10,000 serials each was ~1 ms)."""
        from pki.identities import subjects_changed_since

        changed = subjects_changed_since(snapshot, self._identities_version)
        identities = snapshot.identities
        subjects = changed if changed is not None else identities.keys() | self._serial_of.keys()
        issued = 0
        for subject in subjects:
            svid = identities.get(subject)
            if svid is None:
                self._serial_of.pop(subject, None)
            elif self._serial_of.get(subject) != svid.info.serial:
                self._serial_of[subject] = svid.info.serial
                issued += 1
        self._identities_version = snapshot.version
        if issued:
            self.svids_issued.inc(issued)

    def observe_config(self, view: dict[str, Any]) -> None:
        self.config_load_error.set(1 if view["status"] == "error" else 0)
        self.config_info.clear()
        if view["revision"]:
            self.config_info.labels(view["revision"], view["source"]).set(1)
        self.config_converged.set(0 if view["health"] == "degraded" else 1)
        if view.get("applied_at") is not None:
            self.config_applied_at.set(view["applied_at"])

    def observe_gc_pass(self, seconds: float, collected: int) -> None:
        self.gc_full_pass.observe(seconds)
        self.gc_full_pass_collected.inc(collected)

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
