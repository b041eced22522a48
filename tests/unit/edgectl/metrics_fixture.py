"""A controller's registry with a real value in every metric family: a real model (the example fabric,
live, measured), the route engine's real tables, port readings, OpenFlow counts, a real CA's SVIDs,
xDS metrics on the same registry, placement steps from a real hub. Shared by the metric tests, the
docs/metrics.md and dashboard checks, and promtool."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edgectl.metrics import ControllerMetrics
from edgectl.policy_denials import DenialLog
from meshctl.metrics import XdsMetrics
from netmodel import events as ev
from netmodel.bandwidth import plan_reservations
from netmodel.fabric import build_state
from netmodel.ids import HostId, NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Resources, Workload
from pki.identities import IdentityManager
from placement.watch import PlacementEvents, StepKind
from sdnctl.flows import compile_all
from sdnctl.message_counts import MessageCounts
from sdnctl.openflow import MeterCounts
from sdnctl.pathing import compute_routes
from sdnctl.port_stats import PortRates
from tests.unit.edgectl.fixtures import example_spec

TD = "example.org"
NOW = 1_800_000_000.0


def live_state() -> FabricState:
    """The example fabric with every switch connected, every link discovered and measured (latency_ms + 0.1)."""
    state = build_state(example_spec())
    for dpid in sorted(state.topology.switches):
        state = state.apply(ev.SwitchConnected(dpid, (), NOW))
    links = sorted(state.topology.links)
    for link in links:
        state = state.apply(ev.LinkDiscovered(link, NOW))
    measured = tuple((link, state.topology.links[link].latency_us + 100) for link in links)
    return state.apply(ev.LinkLatencyMeasured(measured, NOW))


def reserving(state: FabricState) -> FabricState:
    """``state`` with web reserving 60 Mbit/s per instance and three instances on m-n1: two reserved, one not."""
    web = dataclasses.replace(state.services[ServiceName("web")], bandwidth_mbps=60.0, near=(HostId("u1"),))
    state = dataclasses.replace(state, services={**state.services, web.name: web})
    for n in (1, 2, 3):
        workload = Workload(
            WorkloadId(f"web-{n}"), web.name, SpiffeId(f"spiffe://{TD}/web"), Resources(1, 1), NodeId("m-n1"), 8080 + n
        )
        state = state.apply(ev.WorkloadPlaced(workload))
    return state


@dataclass
class Populated:
    metrics: ControllerMetrics
    xds: XdsMetrics
    state: FabricState
    rates: PortRates
    messages: MessageCounts
    identities: IdentityManager


def populated_metrics() -> Populated:
    from pki.ca import CertificateAuthority

    state = live_state()
    metrics = ControllerMetrics()
    metrics.sources.state = lambda: state

    rates = PortRates()
    for n, link in enumerate(sorted(state.topology.links)):
        rates.record(link.src, link.src_port, 1_000, 1_000, now=10.0)
        rates.record(link.src, link.src_port, 1_000 + 125_000 * (n + 1), 2_000, now=12.0)
    metrics.sources.port_readings = rates.readings

    tables = compile_all(compute_routes(state))
    metrics.sources.switch_tables = lambda: {
        dpid: (len(c.config.flows), len(c.config.groups)) for dpid, c in tables.items()
    }
    messages = MessageCounts()
    messages.sent("OFPFlowMod", 12)
    messages.sent("OFPBarrierRequest", 3)
    messages.received("OFPBarrierReply")
    messages.received("OFPPacketIn")
    messages.error("bad_request", 4)
    metrics.sources.openflow_messages = messages.totals

    ca = CertificateAuthority.create(TD, now=NOW)[0]
    identities = IdentityManager(ca)
    identities.reconcile({"web-1": f"spiffe://{TD}/svc/web/w/web-1", "api-1": f"spiffe://{TD}/svc/api/w/api-1"}, NOW)
    metrics.sources.identities = lambda: identities.snapshot
    metrics.observe_identities(identities.snapshot)

    metrics.observe_event(ev.LinkWentDown(sorted(state.topology.links)[0]), "applied")
    metrics.flow_drift.labels("ea1").inc()
    metrics.config_view = lambda: {
        "status": "synced",
        "revision": "3f2a",
        "source": "file fabric.yaml",
        "health": "converged",
        "applied_at": NOW,
    }
    metrics.sources.config_outcomes = lambda: {"applied": 2, "rejected": 1}
    denials = DenialLog()
    denials.record(layer="envoy", caller=f"spiffe://{TD}/host/u3", service="api", at=NOW, detail="GET /")
    denials.record(layer="network", caller="10.0.3.1", service="db", at=NOW, count=4, detail="c1 port 4")
    metrics.sources.policy_denials = denials.totals
    metrics.sources.reservations = lambda _state: plan_reservations(reserving(state))
    metrics.sources.meter_counts = lambda: {
        (0xA1, 17): MeterCounts(packets=900, bytes=1_350_000, dropped_packets=3, dropped_bytes=4_500),
        (0xA1, 0x30001): MeterCounts(packets=5_000, bytes=7_500_000, dropped_packets=1_200, dropped_bytes=1_800_000),
    }
    metrics.sources.cluster = lambda: {
        "leader": 1.0,
        "generation": 42.0,
        "leadership_changes": 1.0,
        "etcd_reachable": 1.0,
        "read_only": 0.0,
        "applied_revision": 1234.0,
    }
    metrics.sources.openflow_roles = lambda: {
        0xA1: {"role": "master", "generation_id": 7},
        0xB1: {"role": "requested", "generation_id": 7},
    }
    metrics.sources.openflow_role_changes = lambda: {"master": 2, "slave": 1}
    metrics.route_compute_seconds.observe(0.004)
    metrics.observe_route_apply(0.012, 3)
    metrics.observe_request("place", "ok")
    metrics.observe_request("place", "RESOURCE_EXHAUSTED", "ResourcesFit")
    hub = PlacementEvents(clock=iter([100.0, 100.2, 101.0, 101.1, 102.0]).__next__)
    hub.add_listener(metrics.observe_step)
    hub.emit(StepKind.MIGRATION_STARTED, migration_id="mig-1")
    hub.emit(StepKind.CONVERGENCE_WAITING, migration_id="mig-1")
    hub.emit(StepKind.CONVERGED, migration_id="mig-1", converged_after=(("routes", 0.3), ("sidecars", 0.7)))
    hub.emit(StepKind.MIGRATION_COMPLETED, migration_id="mig-1")
    hub.emit(StepKind.PLACED)

    xds = XdsMetrics(metrics.registry)
    xds.pushed("type.googleapis.com/envoy.config.cluster.v3.Cluster")
    xds.acked("type.googleapis.com/envoy.config.cluster.v3.Cluster", 0.002)
    xds.nacked("type.googleapis.com/envoy.config.cluster.v3.Cluster")
    xds.opened("sotw")
    xds.failed("CANCELLED")
    xds.builds.labels("ok").inc()
    xds.build_seconds.observe(0.01)

    metrics.observe_state(state)
    return Populated(metrics, xds, state, rates, messages, identities)
