"""Metrics read from the controller's current state at scrape time: links, switch tables, OpenFlow
message counts, certificates, policy denials and rules. Nothing is counted on the hot path; each scrape
reads immutable snapshots (the model, the identity snapshot) and copies of small counters (port readings,
message totals, denial totals).

Label sets are bounded by what the controller holds right now: the links and switches of the model,
OpenFlow's message and error types, the identities currently issued; the denials' callers are bounded by
``DenialLog`` (beyond its series limit, new callers count as ``other``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from netmodel.bandwidth import ReservationPlan
from netmodel.ids import SwitchId, format_dpid
from netmodel.state import FabricState
from netmodel.types import LinkId
from sdnctl.meters import BEST_EFFORT_METER_BASE
from sdnctl.port_stats import link_loads

if TYPE_CHECKING:
    from pki.identities import IdentitySnapshot
    from sdnctl.message_counts import MessageTotals
    from sdnctl.port_stats import PortKey, PortReading

LINK_LABELS = ["src", "src_port", "dst", "dst_port"]
SWITCH_ROLES = ("master", "slave", "equal", "requested")  # sdnctl.roles.ROLES


@dataclass
class ScrapeSources:
    """Where each scrape reads from; a part that is not running is None (its families stay empty)."""

    state: Callable[[], FabricState] | None = None
    port_readings: Callable[[], Mapping[PortKey, PortReading]] | None = None
    switch_tables: Callable[[], Mapping[SwitchId, tuple[int, int]]] | None = None
    """Per switch: (flows, groups) the route engine has installed."""
    spoofed_packets: Callable[[], Mapping[tuple[str, int], int]] | None = None
    """Per (switch name, port): packets its source guard dropped since start."""
    openflow_messages: Callable[[], MessageTotals] | None = None
    identities: Callable[[], IdentitySnapshot] | None = None
    config_outcomes: Callable[[], Mapping[str, int]] | None = None
    """Desired-state documents applied and rejected since start."""
    policy_denials: Callable[[], Mapping[tuple[str, str, str], int]] | None = None
    """Denied calls since start per (caller, service, layer): ``DenialLog.totals``."""
    reservations: Callable[[FabricState], ReservationPlan] | None = None
    """The bandwidth reservation plan of a state (``ReservationCache.plan_for``)."""
    meter_counts: Callable[[], Mapping[tuple[SwitchId, int], MeterCounters]] | None = None
    """Per (switch, meter id): the meter's counters as last polled (``FabricApp.meter_counts``)."""
    cluster: Callable[[], Mapping[str, float]] | None = None
    """Replicated mode: this replica's standing (``edgectl.cluster_mode.Replica.metrics_view``)."""
    openflow_roles: Callable[[], Mapping[int, Mapping[str, object]]] | None = None
    """Per dpid: this controller's OpenFlow role on the switch (``FabricApp.roles_view``)."""
    openflow_role_changes: Callable[[], Mapping[str, int]] | None = None
    """Per role: how often a switch's role for this controller became it (``FabricApp.role_changes``)."""


class MeterCounters(Protocol):
    @property
    def packets(self) -> int: ...

    @property
    def dropped_packets(self) -> int: ...


def _switch_name(state: FabricState | None, dpid: SwitchId) -> str:
    switch = state.topology.switches.get(dpid) if state is not None else None
    return switch.name if switch is not None else format_dpid(dpid)


class SnapshotCollector(Collector):
    def __init__(self, sources: ScrapeSources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        state = self.sources.state() if self.sources.state is not None else None
        yield from self._links(state)
        yield from self._switches(state)
        yield from self._openflow()
        yield from self._roles(state)
        yield from self._certificates()
        yield from self._config()
        yield from self._policy(state)
        yield from self._bandwidth(state)
        yield from self._cluster()

    def _cluster(self) -> Iterator[Metric]:
        view = self.sources.cluster() if self.sources.cluster is not None else None
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "leader": GaugeMetricFamily(
                "edgectl_cluster_leader", "1 while this replica leads the cluster (acts on switches and placements)"
            ),
            "generation": GaugeMetricFamily(
                "edgectl_cluster_generation",
                "The current leader's generation (its election revision: the OpenFlow generation_id); 0 without one",
            ),
            "leadership_changes": CounterMetricFamily(
                "edgectl_cluster_leadership_changes",
                "Times this replica started or stopped leading since it started",
            ),
            "etcd_reachable": GaugeMetricFamily(
                "edgectl_cluster_etcd_reachable", "1 while this replica's last etcd request succeeded"
            ),
            "read_only": GaugeMetricFamily(
                "edgectl_cluster_read_only", "1 while this replica serves its last model read-only (etcd unreachable)"
            ),
            "applied_revision": GaugeMetricFamily(
                "edgectl_cluster_log_applied_revision", "The etcd revision of the last log entry this replica applied"
            ),
        }
        for name, family in families.items():
            if view is not None:
                family.add_metric([], float(view[name]))
            yield family

    def _links(self, state: FabricState | None) -> Iterator[Metric]:
        latency = GaugeMetricFamily(
            "edgectl_link_latency_seconds",
            "Measured one-way latency of a link direction (links not measured yet are left out)",
            labels=LINK_LABELS,
        )
        sent = CounterMetricFamily(
            "edgectl_link_transmit_bytes",
            "Bytes the link direction's source port transmitted (the switch's port counter)",
            labels=LINK_LABELS,
        )
        utilization = GaugeMetricFamily(
            "edgectl_link_utilization_ratio",
            "Transmit rate of the link direction over its declared capacity, between the last two port-stats polls",
            labels=LINK_LABELS,
        )
        if state is not None:
            for link, attrs in state.topology.links.items():
                if attrs.measured_latency_us is not None:
                    latency.add_metric(self._link_labels(state, link), attrs.measured_latency_us / 1e6)
            readings = self.sources.port_readings() if self.sources.port_readings is not None else {}
            for load in link_loads(state, readings):
                labels = self._link_labels(state, load.link)
                sent.add_metric(labels, load.tx_bytes)
                if load.utilization is not None:
                    utilization.add_metric(labels, load.utilization)
        yield from (latency, sent, utilization)

    def _bandwidth(self, state: FabricState | None) -> Iterator[Metric]:
        reserved = GaugeMetricFamily(
            "edgectl_link_reserved_mbps",
            "Bandwidth reserved on a link direction, Mbit/s (link directions with a reservation)",
            labels=LINK_LABELS,
        )
        demands = GaugeMetricFamily(
            "edgectl_bandwidth_demands",
            "Bandwidth demands of placed instances, by whether a path with room carries them",
            labels=["state"],
        )
        packets = CounterMetricFamily(
            "edgectl_meter_packets",
            "Packets that entered the switch's meters (reservation: a reserved flow at its ingress switch;"
            " best_effort: the unreserved traffic of a link that carries reservations), since the meter was added",
            labels=["switch", "kind"],
        )
        dropped = CounterMetricFamily(
            "edgectl_meter_dropped_packets",
            "Packets the switch's meters dropped for exceeding their rate (the DROP band), since the meter was added",
            labels=["switch", "kind"],
        )
        if self.sources.meter_counts is not None:
            totals: dict[tuple[str, str], list[int]] = {}
            for (dpid, meter_id), counts in self.sources.meter_counts().items():
                kind = "best_effort" if meter_id >= BEST_EFFORT_METER_BASE else "reservation"
                row = totals.setdefault((_switch_name(state, dpid), kind), [0, 0])
                row[0] += counts.packets
                row[1] += counts.dropped_packets
            for (switch, kind), (entered, lost) in sorted(totals.items()):
                packets.add_metric([switch, kind], entered)
                dropped.add_metric([switch, kind], lost)
        yield from (packets, dropped)
        if state is not None and self.sources.reservations is not None:
            plan = self.sources.reservations(state)
            for link, mbps in plan.links().items():
                reserved.add_metric(self._link_labels(state, link), mbps)
            unreserved = len(plan.unreserved)
            demands.add_metric(["reserved"], len(plan.outcomes) - unreserved)
            demands.add_metric(["unreserved"], unreserved)
        yield from (reserved, demands)

    @staticmethod
    def _link_labels(state: FabricState, link: LinkId) -> list[str]:
        return [
            _switch_name(state, link.src),
            str(link.src_port),
            _switch_name(state, link.dst),
            str(link.dst_port),
        ]

    def _switches(self, state: FabricState | None) -> Iterator[Metric]:
        flows = GaugeMetricFamily(
            "edgectl_switch_flows",
            "Flows of edgectl's a switch holds (read or confirmed installed)",
            labels=["switch"],
        )
        groups = GaugeMetricFamily(
            "edgectl_switch_groups",
            "Groups of edgectl's a switch holds (read or confirmed installed)",
            labels=["switch"],
        )
        tables = self.sources.switch_tables() if self.sources.switch_tables is not None else {}
        for dpid, (flow_count, group_count) in sorted(tables.items()):
            name = _switch_name(state, dpid)
            flows.add_metric([name], flow_count)
            groups.add_metric([name], group_count)
        spoofed = CounterMetricFamily(
            "edgectl_spoofed_packets_dropped",
            "Packets a switch port's source guard dropped: a source address or MAC the port's endpoint does not own",
            labels=["switch", "port"],
        )
        totals = self.sources.spoofed_packets() if self.sources.spoofed_packets is not None else {}
        for (switch, port), count in sorted(totals.items()):
            spoofed.add_metric([switch, str(port)], count)
        yield from (flows, groups, spoofed)

    def _openflow(self) -> Iterator[Metric]:
        sent = CounterMetricFamily(
            "edgectl_openflow_messages_sent", "OpenFlow messages the controller sent, by message type", labels=["type"]
        )
        received = CounterMetricFamily(
            "edgectl_openflow_messages_received",
            "OpenFlow messages the controller handled, by message type",
            labels=["type"],
        )
        errors = CounterMetricFamily(
            "edgectl_openflow_errors",
            "OpenFlow error messages switches sent, by error type and code",
            labels=["type", "code"],
        )
        if self.sources.openflow_messages is not None:
            totals = self.sources.openflow_messages()
            for name, count in sorted(totals.sent.items()):
                sent.add_metric([name], count)
            for name, count in sorted(totals.received.items()):
                received.add_metric([name], count)
            for (error_type, code), count in sorted(totals.errors.items()):
                errors.add_metric([error_type, str(code)], count)
        yield from (sent, received, errors)

    def _roles(self, state: FabricState | None) -> Iterator[Metric]:
        changes = CounterMetricFamily(
            "edgectl_openflow_role_changes",
            "Times a switch's OpenFlow role for this controller became master, slave or equal (replicated mode)",
            labels=["role"],
        )
        current = GaugeMetricFamily(
            "edgectl_openflow_switch_role",
            "This controller's OpenFlow role on each connected switch: 1 for the current role (requested: the "
            "switch's answer is awaited), 0 for the others",
            labels=["switch", "role"],
        )
        if self.sources.openflow_role_changes is not None:
            for role, count in sorted(self.sources.openflow_role_changes().items()):
                changes.add_metric([role], count)
        if self.sources.openflow_roles is not None:
            for dpid, view in sorted(self.sources.openflow_roles().items()):
                name = _switch_name(state, SwitchId(dpid))
                for role in SWITCH_ROLES:
                    current.add_metric([name, role], 1 if view.get("role") == role else 0)
        yield from (changes, current)

    def _config(self) -> Iterator[Metric]:
        documents = CounterMetricFamily(
            "edgectl_config_documents",
            "Desired-state documents (file, directory, git commit, apply) since start, by outcome",
            labels=["outcome"],
        )
        if self.sources.config_outcomes is not None:
            for outcome, count in sorted(self.sources.config_outcomes().items()):
                documents.add_metric([outcome], count)
        yield documents

    def _certificates(self) -> Iterator[Metric]:
        expiry = GaugeMetricFamily(
            "edgectl_certificate_expiry_timestamp_seconds",
            "When each SVID currently issued expires (unix time), by subject and SPIFFE id",
            labels=["subject", "spiffe_id"],
        )
        earliest = GaugeMetricFamily(
            "edgectl_certificate_earliest_expiry_timestamp_seconds",
            "When the first of the SVIDs currently issued expires (unix time)",
        )
        if self.sources.identities is not None:
            svids = self.sources.identities().identities
            for subject, svid in sorted(svids.items()):
                expiry.add_metric([subject, str(svid.spiffe_id)], svid.info.not_after)
            if svids:
                earliest.add_metric([], min(svid.info.not_after for svid in svids.values()))
        yield from (expiry, earliest)

    def _policy(self, state: FabricState | None) -> Iterator[Metric]:
        denied = CounterMetricFamily(
            "edgectl_policy_denied",
            "Calls refused by the authorization policy since start, by caller (service:NAME, host:ID, or as seen), "
            "service and enforcement layer (envoy: the sidecar's RBAC; network: the switches' ACL)",
            labels=["caller", "service", "layer"],
        )
        rules = GaugeMetricFamily(
            "edgectl_policy_rules", "allow_from rules each declared service has", labels=["service"]
        )
        if self.sources.policy_denials is not None:
            for (caller, service, layer), count in sorted(self.sources.policy_denials().items()):
                denied.add_metric([caller, service, layer], count)
        if state is not None:
            for name, declared in sorted(state.services.items()):
                rules.add_metric([name], len(declared.allow_from))
        yield from (denied, rules)
