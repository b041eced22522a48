"""Sidecar RBAC: each inbound listener lets in exactly what its service's ``allow_from`` grants (pure)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from meshctl.cache import SnapshotCache
from meshctl.metrics import XdsMetrics
from meshctl.publisher import NO_PKI_WARNING, SnapshotPublisher
from meshctl.snapshot import MeshConfig, TlsIdentity, build_snapshots
from meshctl.xds_types import LISTENER, XDS_CLUSTER
from netmodel import events as ev
from netmodel.ids import HostId, NodeId, ServiceName, SpiffeId
from netmodel.state import FabricState
from netmodel.types import AllowRule, PolicyDefault, Protocol
from tests.unit.meshctl.mesh_helpers import base_state, place, workload

TD = "edgectl.local"
MTLS = MeshConfig(mtls=True, trust_bundle_pem="BUNDLE", identities={"api-1": TlsIdentity("CERT", "KEY")})


def instance(wid: str, service: str, node: str):  # type: ignore[no-untyped-def]
    return dataclasses.replace(workload(wid, service, node), spiffe_id=SpiffeId(f"spiffe://{TD}/svc/{service}/w/{wid}"))


def with_rules(state: FabricState, service: str, *rules: AllowRule, **changes: object) -> FabricState:
    services = dict(state.services)
    services[ServiceName(service)] = dataclasses.replace(services[ServiceName(service)], allow_from=rules, **changes)
    return dataclasses.replace(state, services=services)


def placed(*rules: AllowRule, **changes: object) -> FabricState:
    state = place(base_state(), instance("web-1", "web", "ea-n1"), instance("api-1", "api", "c-n1"))
    return with_rules(state, "api", *rules, **changes)


def inbound(state: FabricState, config: MeshConfig = MTLS, wid: str = "api-1"):  # type: ignore[no-untyped-def]
    return build_snapshots(state, config)[wid].of_type(LISTENER)[f"in/{wid}"].message


def http_manager(listener) -> hcm_pb2.HttpConnectionManager:  # type: ignore[no-untyped-def]
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return manager


def http_rbac(listener) -> rbac_pb2.RBAC | None:  # type: ignore[no-untyped-def]
    manager = http_manager(listener)
    names = [f.name for f in manager.http_filters]
    assert names[-1] == "envoy.filters.http.router"
    if "envoy.filters.http.rbac" not in names:
        return None
    assert names == ["envoy.filters.http.rbac", "envoy.filters.http.router"]  # RBAC before the router
    config = http_rbac_pb2.RBAC()
    manager.http_filters[0].typed_config.Unpack(config)
    return config.rules


def principal(policy: rbac_pb2.Policy) -> tuple[str, str]:
    (only,) = policy.principals
    matcher = only.authenticated.principal_name
    return matcher.WhichOneof("match_pattern"), getattr(matcher, matcher.WhichOneof("match_pattern"))


def test_each_grant_is_a_policy_on_the_peer_spiffe_id() -> None:
    rules = http_rbac(
        inbound(
            placed(
                AllowRule(service=ServiceName("web")),
                AllowRule(host=HostId("u1")),
                AllowRule(spiffe_id="spiffe://other/x/"),
            )
        )
    )
    assert rules is not None and rules.action == rbac_pb2.RBAC.ALLOW
    assert sorted(rules.policies) == ["allow_from[0]", "allow_from[1]", "allow_from[2]"]
    assert principal(rules.policies["allow_from[0]"]) == ("prefix", f"spiffe://{TD}/svc/web/")
    assert principal(rules.policies["allow_from[1]"]) == ("exact", f"spiffe://{TD}/host/u1")
    assert principal(rules.policies["allow_from[2]"]) == ("prefix", "spiffe://other/x/")
    for policy in rules.policies.values():
        assert [p.any for p in policy.permissions] == [True]


def matched_paths(rules: list[Any]) -> list[tuple[str, str]]:
    return [(p.url_path.path.exact, p.url_path.path.prefix) for p in rules]


def test_paths_are_ored_whole_segments_anded_with_ored_methods() -> None:
    rule = AllowRule(host=HostId("u1"), paths=("/status", "/health", "/api/"), methods=("GET", "HEAD"))
    rules = http_rbac(inbound(placed(rule)))
    assert rules is not None
    (permission,) = rules.policies["allow_from[0]"].permissions
    paths, methods = permission.and_rules.rules
    # "/status": exactly it or what is under "/status/" (not "/statusadmin"); "/api/": a plain prefix.
    assert matched_paths(paths.or_rules.rules) == [
        ("/status", ""),
        ("", "/status/"),
        ("/health", ""),
        ("", "/health/"),
        ("", "/api/"),
    ]
    assert [(m.header.name, m.header.string_match.exact) for m in methods.or_rules.rules] == [
        (":method", "GET"),
        (":method", "HEAD"),
    ]
    only_paths = http_rbac(inbound(placed(AllowRule(host=HostId("u1"), paths=("/status",)))))
    assert only_paths is not None
    (single,) = only_paths.policies["allow_from[0]"].permissions
    assert matched_paths(single.or_rules.rules) == [("/status", ""), ("", "/status/")]


def test_inbound_paths_are_normalized_before_the_rules_see_them() -> None:
    manager = http_manager(inbound(placed(AllowRule(host=HostId("u1"), paths=("/status",)))))
    assert manager.normalize_path.value and manager.merge_slashes
    assert manager.path_with_escaped_slashes_action == manager.REJECT_REQUEST


def test_default_deny_without_grants_is_rbac_that_admits_nobody() -> None:
    rules = http_rbac(inbound(placed()))
    assert rules is not None and rules.action == rbac_pb2.RBAC.ALLOW and not rules.policies


def test_with_rbac_tls_admits_the_trust_domain_and_rbac_decides() -> None:
    # So a caller the policy does not admit gets a 403 that is counted, not a failed handshake.
    tls = tls_pb2.DownstreamTlsContext()
    inbound(placed()).filter_chains[0].transport_socket.typed_config.Unpack(tls)
    sans = tls.common_tls_context.combined_validation_context.default_validation_context.match_typed_subject_alt_names
    assert [(m.matcher.prefix, m.matcher.exact) for m in sans] == [(f"spiffe://{TD}/", "")]
    assert tls.require_client_certificate.value


def test_default_allow_means_no_rbac_filter() -> None:
    state = dataclasses.replace(placed(AllowRule(host=HostId("u1"))), default_policy=PolicyDefault.ALLOW)
    listener = inbound(state)
    assert http_rbac(listener) is None
    assert not http_manager(listener).access_log


def test_without_pki_no_rbac_filter() -> None:
    listener = inbound(placed(AllowRule(host=HostId("u1"))), MeshConfig())
    assert http_rbac(listener) is None
    assert not listener.filter_chains[0].HasField("transport_socket")


def test_denials_stream_to_the_controller_on_the_xds_cluster() -> None:
    manager = http_manager(inbound(placed(AllowRule(host=HostId("u1")))))
    assert manager.stat_prefix == "in_api"  # so http.in_api.rbac.denied names the service
    (log,) = manager.access_log
    assert log.name == "envoy.access_loggers.http_grpc"
    config = als_pb2.HttpGrpcAccessLogConfig()
    log.typed_config.Unpack(config)
    assert config.common_config.grpc_service.envoy_grpc.cluster_name == XDS_CLUSTER
    assert config.common_config.transport_api_version == 2  # V3
    assert log.filter.status_code_filter.comparison.value.default_value == 403


def test_tcp_service_gets_network_rbac_before_tcp_proxy() -> None:
    state = placed(
        AllowRule(service=ServiceName("web")), AllowRule(host=HostId("u1"), paths=("/x",)), protocol=Protocol.TCP
    )
    listener = inbound(state)
    filters = listener.filter_chains[0].filters
    assert [f.name for f in filters] == ["envoy.filters.network.rbac", "envoy.filters.network.tcp_proxy"]
    config = network_rbac_pb2.RBAC()
    filters[0].typed_config.Unpack(config)
    assert config.stat_prefix == "in_api"
    # A path-limited grant cannot be checked on a connection: left out (fail closed), not widened.
    assert sorted(config.rules.policies) == ["allow_from[0]"]
    (log,) = listener.access_log  # on the listener: it sees connections a filter closed
    assert log.name == "envoy.access_loggers.tcp_grpc"
    assert log.filter.extension_filter.name == "envoy.access_loggers.extension_filters.cel"


def versions(snapshots, node: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return dict(snapshots[node].versions)


def test_policy_change_reaches_only_the_callee_and_a_move_changes_no_rbac() -> None:
    state = place(
        base_state(),
        instance("web-1", "web", "ea-n1"),
        instance("api-1", "api", "c-n1"),
        instance("db-1", "db", "c-n1"),
    )
    state = with_rules(state, "api", AllowRule(service=ServiceName("web")))
    before = build_snapshots(state, MTLS)
    changed = build_snapshots(
        with_rules(state, "api", AllowRule(service=ServiceName("web")), AllowRule(host=HostId("u1"))), MTLS
    )
    assert before["api-1"].digest(LISTENER) != changed["api-1"].digest(LISTENER)
    for node in ("web-1", "db-1", "u1", "u2"):
        assert before[node].versions == changed[node].versions, node
    # The caller moves: the callee's inbound listener (its RBAC) stays byte-identical.
    moved = state.apply(ev.WorkloadPlaced(dataclasses.replace(state.workloads["web-1"], node=NodeId("ea-n2"))))  # type: ignore[index]
    after = build_snapshots(moved, MTLS)
    assert before["api-1"].digest(LISTENER) == after["api-1"].digest(LISTENER)
    # The callee moves: its new inbound listener (another address) keeps exactly the same RBAC.
    callee_moved = state.apply(
        ev.WorkloadPlaced(dataclasses.replace(state.workloads["api-1"], node=NodeId("ea-n2")))  # type: ignore[index]
    )
    new_listener = build_snapshots(callee_moved, MTLS)["api-1"].of_type(LISTENER)["in/api-1"].message
    old_listener = before["api-1"].of_type(LISTENER)["in/api-1"].message
    assert new_listener.address != old_listener.address
    assert http_rbac(new_listener) == http_rbac(old_listener)
    assert http_manager(new_listener).access_log == http_manager(old_listener).access_log


def test_publisher_warns_once_that_without_pki_only_switches_enforce(caplog: pytest.LogCaptureFixture) -> None:
    state = placed(AllowRule(host=HostId("u1")))
    current = [state]
    publisher = SnapshotPublisher(lambda: current[0], MeshConfig(), SnapshotCache(), XdsMetrics())
    with caplog.at_level(logging.WARNING, logger="edgectl.mesh"):
        publisher.build_now()
        current[0] = with_rules(state, "api")
        publisher.build_now()
    assert [r.getMessage() for r in caplog.records].count(NO_PKI_WARNING) == 1


def test_publisher_rebuilds_when_only_the_fabric_default_changes() -> None:
    state = placed(AllowRule(host=HostId("u1")))
    current = [state]
    cache = SnapshotCache()
    publisher = SnapshotPublisher(lambda: current[0], MTLS, cache, XdsMetrics())
    publisher.build_now()
    listener = cache.snapshot("api-1").of_type(LISTENER)["in/api-1"].message  # type: ignore[union-attr]
    assert http_rbac(listener) is not None
    current[0] = dataclasses.replace(state, default_policy=PolicyDefault.ALLOW, generation=state.generation + 1)
    publisher.build_now()
    listener = cache.snapshot("api-1").of_type(LISTENER)["in/api-1"].message  # type: ignore[union-attr]
    assert http_rbac(listener) is None
