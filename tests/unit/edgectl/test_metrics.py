"""Every metric of a controller's registry with a real model behind it: the values a scrape shows."""

from __future__ import annotations

import pytest

from edgectl.metrics import ControllerMetrics
from netmodel.ids import format_dpid
from netmodel.state import FabricState
from netmodel.types import LinkId
from placement.watch import PlacementEvents, StepKind
from tests.unit.edgectl.metrics_fixture import NOW, live_state, populated_metrics


def labels_of(state: FabricState, link: LinkId) -> dict[str, str]:
    switches = state.topology.switches
    return {
        "src": switches[link.src].name,
        "src_port": str(link.src_port),
        "dst": switches[link.dst].name,
        "dst_port": str(link.dst_port),
    }


def test_link_latency_transmitted_bytes_and_utilization_per_link_direction() -> None:
    populated = populated_metrics()
    registry, state = populated.metrics.registry, populated.state
    links = sorted(state.topology.links)
    for n, link in enumerate(links):
        labels = labels_of(state, link)
        attrs = state.topology.links[link]
        assert registry.get_sample_value("edgectl_link_latency_seconds", labels) == pytest.approx(
            attrs.measured_latency_us / 1e6
        )
        sent = 125_000 * (n + 1)  # bytes over 2 s
        assert registry.get_sample_value("edgectl_link_transmit_bytes_total", labels) == 1_000 + sent
        assert registry.get_sample_value("edgectl_link_utilization_ratio", labels) == pytest.approx(
            sent / 2 * 8 / (attrs.capacity_mbps * 1e6)
        )


def test_a_link_not_measured_or_not_read_has_no_series() -> None:
    metrics = ControllerMetrics()
    from netmodel.fabric import build_state
    from tests.unit.edgectl.fixtures import example_spec

    state = build_state(example_spec())  # declared only: nothing measured, no switch read
    metrics.sources.state = lambda: state
    families = {f.name: f for f in metrics.registry.collect()}
    assert families["edgectl_link_latency_seconds"].samples == []
    assert families["edgectl_link_transmit_bytes"].samples == []
    assert families["edgectl_link_utilization_ratio"].samples == []


def test_flows_and_groups_per_switch_by_name() -> None:
    populated = populated_metrics()
    tables = populated.metrics.sources.switch_tables
    assert tables is not None
    for dpid, (flows, groups) in tables().items():
        name = populated.state.topology.switches[dpid].name
        assert populated.metrics.registry.get_sample_value("edgectl_switch_flows", {"switch": name}) == flows
        assert populated.metrics.registry.get_sample_value("edgectl_switch_groups", {"switch": name}) == groups
        assert flows > 0


def test_a_switch_unknown_to_the_model_is_named_by_its_dpid() -> None:
    metrics = ControllerMetrics()
    metrics.sources.state = live_state
    metrics.sources.switch_tables = lambda: {0x77: (3, 1)}
    assert metrics.registry.get_sample_value("edgectl_switch_flows", {"switch": format_dpid(0x77)}) == 3


def test_openflow_messages_by_type_and_errors_by_type_and_code() -> None:
    registry = populated_metrics().metrics.registry
    assert registry.get_sample_value("edgectl_openflow_messages_sent_total", {"type": "OFPFlowMod"}) == 12
    assert registry.get_sample_value("edgectl_openflow_messages_received_total", {"type": "OFPPacketIn"}) == 1
    assert registry.get_sample_value("edgectl_openflow_errors_total", {"type": "bad_request", "code": "4"}) == 1


def test_certificate_expiry_per_identity_the_earliest_and_svids_issued() -> None:
    populated = populated_metrics()
    registry = populated.metrics.registry
    svids = populated.identities.snapshot.identities
    for subject, svid in svids.items():
        labels = {"subject": subject, "spiffe_id": str(svid.spiffe_id)}
        assert registry.get_sample_value("edgectl_certificate_expiry_timestamp_seconds", labels) == svid.info.not_after
    earliest = min(s.info.not_after for s in svids.values())
    assert registry.get_sample_value("edgectl_certificate_earliest_expiry_timestamp_seconds") == earliest
    assert registry.get_sample_value("edgectl_svids_issued_total") == 2
    # A rotation issues one more; the same snapshot seen again issues nothing.
    populated.identities.rotate(next(iter(svids.values())).spiffe_id, svids["web-1"].info.not_before + 60)
    populated.metrics.observe_identities(populated.identities.snapshot)
    populated.metrics.observe_identities(populated.identities.snapshot)
    assert registry.get_sample_value("edgectl_svids_issued_total") == 3


def test_without_a_pki_the_certificate_families_are_empty() -> None:
    families = {f.name: f for f in ControllerMetrics().registry.collect()}
    assert families["edgectl_certificate_expiry_timestamp_seconds"].samples == []
    assert families["edgectl_certificate_earliest_expiry_timestamp_seconds"].samples == []


def test_placement_requests_steps_and_migration_stages() -> None:
    registry = populated_metrics().metrics.registry
    value = registry.get_sample_value
    assert value("edgectl_placement_requests_total", {"operation": "place", "outcome": "ok"}) == 1
    assert value("edgectl_placement_requests_total", {"operation": "place", "outcome": "RESOURCE_EXHAUSTED"}) == 1
    assert value("edgectl_placement_unschedulable_total", {"filter": "ResourcesFit"}) == 1
    assert value("edgectl_placement_steps_total", {"kind": "migration_started"}) == 1
    assert value("edgectl_placement_steps_total", {"kind": "placed"}) == 1
    assert value("edgectl_migrations_total", {"outcome": "completed"}) == 1
    # STARTED 100.0, WAITING 100.2, CONVERGED 101.0, COMPLETED 101.1
    for stage, seconds in (("place", 0.2), ("converge", 0.8), ("withdraw", 0.1), ("total", 1.1)):
        assert value("edgectl_migration_stage_seconds_sum", {"stage": stage}) == pytest.approx(seconds)
        assert value("edgectl_migration_stage_seconds_count", {"stage": stage}) == 1
    assert value("edgectl_migration_convergence_seconds_sum", {"probe": "sidecars"}) == pytest.approx(0.7)


def test_a_rolled_back_migration_is_counted_as_such() -> None:
    metrics = ControllerMetrics()
    hub = PlacementEvents(clock=iter([0.0, 0.1, 5.0]).__next__)
    hub.add_listener(metrics.observe_step)
    hub.emit(StepKind.MIGRATION_STARTED, migration_id="mig-7")
    hub.emit(StepKind.CONVERGENCE_WAITING, migration_id="mig-7")
    hub.emit(StepKind.MIGRATION_ROLLED_BACK, migration_id="mig-7")
    value = metrics.registry.get_sample_value
    assert value("edgectl_migrations_total", {"outcome": "rolled_back"}) == 1
    assert value("edgectl_migration_stage_seconds_sum", {"stage": "total"}) == pytest.approx(5.0)
    assert value("edgectl_migration_stage_seconds_count", {"stage": "withdraw"}) is None


def test_route_compute_time_and_config() -> None:
    registry = populated_metrics().metrics.registry
    assert registry.get_sample_value("edgectl_route_compute_seconds_count") == 1
    assert registry.get_sample_value("edgectl_route_apply_seconds_sum") == pytest.approx(0.012)
    assert registry.get_sample_value("edgectl_route_apply_rounds_bucket", {"le": "2.0"}) == 0
    assert registry.get_sample_value("edgectl_route_apply_rounds_bucket", {"le": "4.0"}) == 1
    assert registry.get_sample_value("edgectl_config_info", {"revision": "3f2a", "source": "file fabric.yaml"}) == 1
    assert registry.get_sample_value("edgectl_config_load_error") == 0
    assert registry.get_sample_value("edgectl_config_last_applied_timestamp_seconds") == NOW
    assert registry.get_sample_value("edgectl_config_documents_total", {"outcome": "rejected"}) == 1
    assert registry.get_sample_value("edgectl_config_documents_total", {"outcome": "applied"}) == 2


def test_policy_denials_per_caller_service_and_layer_and_rules_per_service() -> None:
    registry = populated_metrics().metrics.registry
    value = registry.get_sample_value
    assert value("edgectl_policy_denied_total", {"caller": "host:u3", "service": "api", "layer": "envoy"}) == 1
    assert value("edgectl_policy_denied_total", {"caller": "10.0.3.1", "service": "db", "layer": "network"}) == 4
    assert value("edgectl_policy_rules", {"service": "web"}) == 3  # the example: u1, u2 and u3 call web
    assert value("edgectl_policy_rules", {"service": "db"}) == 1


def test_without_denials_the_denied_family_is_empty() -> None:
    metrics = ControllerMetrics()
    metrics.sources.state = live_state
    assert not [s for f in metrics.registry.collect() if f.name == "edgectl_policy_denied" for s in f.samples]


def test_openflow_roles_per_switch_and_role_changes() -> None:
    populated = populated_metrics()
    registry, switches = populated.metrics.registry, populated.state.topology.switches
    first, second = switches[0xA1].name, switches[0xB1].name
    assert registry.get_sample_value("edgectl_openflow_switch_role", {"switch": first, "role": "master"}) == 1
    assert registry.get_sample_value("edgectl_openflow_switch_role", {"switch": first, "role": "slave"}) == 0
    assert registry.get_sample_value("edgectl_openflow_switch_role", {"switch": second, "role": "requested"}) == 1
    assert registry.get_sample_value("edgectl_openflow_switch_role", {"switch": second, "role": "master"}) == 0
    assert registry.get_sample_value("edgectl_openflow_role_changes_total", {"role": "master"}) == 2
    assert registry.get_sample_value("edgectl_openflow_role_changes_total", {"role": "slave"}) == 1
