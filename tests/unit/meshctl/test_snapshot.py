"""build_snapshots: the model as per-node Envoy resources (pure, fast)."""

from __future__ import annotations

import dataclasses

import pytest
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from meshctl import envoy_config as ec
from meshctl.snapshot import (
    InconsistentSnapshot,
    MeshConfig,
    MeshSnapshot,
    TlsIdentity,
    build_snapshots,
    check_consistent,
    make_resource,
    version_digest,
)
from meshctl.xds_types import (
    CLUSTER,
    ENDPOINTS,
    LISTENER,
    PUSH_ORDER,
    ROUTES,
    SECRET,
    WARM_UP_PATH,
    workload_outbound_host,
)
from netmodel import events as ev
from netmodel.ids import NodeId
from netmodel.state import FabricState
from netmodel.types import PolicyDefault
from tests.unit.meshctl.mesh_helpers import (
    base_state,
    place,
    placed_state,
    rds_names,
    route_clusters,
    tcp_clusters,
    workload,
)

TCP_DB = MeshConfig(tcp_services=frozenset({"db"}))


def allow_by_default(state: FabricState) -> FabricState:
    """The fabric's default is allow: sidecars enforce no RBAC (tests/unit/meshctl/test_rbac.py has it)."""
    return dataclasses.replace(state, default_policy=PolicyDefault.ALLOW)


def names(snapshot: MeshSnapshot, type_url: str) -> list[str]:
    return sorted(snapshot.of_type(type_url))


def endpoints_of(snapshot: MeshSnapshot, service: str) -> list[tuple[str, str, str, str, int, int]]:
    cla = snapshot.of_type(ENDPOINTS)[f"svc/{service}"].message
    return sorted(
        (
            group.locality.region,
            group.locality.zone,
            group.locality.sub_zone,
            lb.endpoint.address.socket_address.address,
            lb.endpoint.address.socket_address.port_value,
            lb.load_balancing_weight.value,
        )
        for group in cla.endpoints
        for lb in group.lb_endpoints
    )


def test_a_sidecar_per_placed_workload_and_a_client_per_host() -> None:
    state = place(placed_state(), workload("web-9", "web", None))
    snapshots = build_snapshots(state, TCP_DB)
    assert sorted(snapshots) == ["admin-1", "api-1", "api-2", "db-1", "u1", "u2", "web-1", "web-2"]
    for snapshot in snapshots.values():
        check_consistent(snapshot)
        assert snapshot.generation == state.generation
        assert set(snapshot.versions) == set(PUSH_ORDER)


def test_stable_names_for_a_workload_sidecar() -> None:
    web = build_snapshots(placed_state(), TCP_DB)["web-1"]
    assert names(web, CLUSTER) == ["local/web-1", "svc/admin", "svc/api"]
    assert names(web, ENDPOINTS) == ["svc/admin", "svc/api"]
    assert names(web, LISTENER) == ["admin", "api", "in/web-1", "out/8080", "out/9090"]
    assert names(web, ROUTES) == ["out/8080", "out/9090"]
    assert names(web, SECRET) == []
    assert web.wildcard_excluded == frozenset({"admin", "api"})  # gRPC api listeners: only when named


def test_endpoints_are_placed_workloads_with_locality_and_weight() -> None:
    snapshot = build_snapshots(placed_state(), TCP_DB)["web-1"]
    assert endpoints_of(snapshot, "api") == [
        ("eu-central", "dc1", "cloud", "10.1.9.10", 9090, 1),
        ("eu-west", "a", "edge-a", "10.1.1.11", 9090, 1),
    ]
    cla = snapshot.of_type(ENDPOINTS)["svc/api"].message
    assert all(group.load_balancing_weight.value == 1 for group in cla.endpoints)  # gRPC needs it


def test_workload_port_overrides_service_port_and_down_nodes_drop_out() -> None:
    state = placed_state()
    u1 = build_snapshots(state, TCP_DB)["u1"]
    assert endpoints_of(u1, "web") == [
        ("eu-west", "a", "edge-a", "10.1.1.10", 8080, 1),
        ("eu-west", "a", "edge-a", "10.1.1.11", 18080, 1),
    ]
    drained = build_snapshots(state.apply(ev.NodeWentDown(NodeId("ea-n2"))), TCP_DB)["u1"]
    assert endpoints_of(drained, "web") == [("eu-west", "a", "edge-a", "10.1.1.10", 8080, 1)]


def test_moving_a_workload_changes_only_endpoints_of_its_callers() -> None:
    before = build_snapshots(placed_state(), TCP_DB)
    moved = placed_state().apply(ev.WorkloadPlaced(workload("api-2", "api", "ea-n1")))
    after = build_snapshots(moved, TCP_DB)
    for node_id in ("web-1", "web-2"):  # they call api: endpoints change, nothing else
        changed = [t for t in PUSH_ORDER if before[node_id].digest(t) != after[node_id].digest(t)]
        assert changed == [ENDPOINTS]
    for node_id in ("u1", "u2", "admin-1", "api-1", "db-1"):
        assert all(before[node_id].digest(t) == after[node_id].digest(t) for t in PUSH_ORDER)
    # api-2 itself moved: its inbound listener now binds the new node's address.
    inbound = after["api-2"].of_type(LISTENER)["in/api-2"].message
    assert inbound.address.socket_address.address == "10.1.1.10"


def test_outbound_listener_per_port_with_a_virtual_host_per_service() -> None:
    web = build_snapshots(placed_state(), TCP_DB)["web-1"]
    listener = web.of_type(LISTENER)["out/8080"].message
    # On web-1's own address (its inbound port is 8080): 127.1.31.144.
    assert (listener.address.socket_address.address, listener.address.socket_address.port_value) == (
        workload_outbound_host(8080),
        8080,
    )
    assert rds_names(listener) == {"out/8080"}
    routes = web.of_type(ROUTES)["out/8080"].message
    hosts = {vh.name: list(vh.domains) for vh in routes.virtual_hosts}
    # web calls admin (8080) and api (9090): alone on its port, admin also answers any host.
    assert hosts == {"admin": ["admin", "admin:8080", "*"]}
    assert route_clusters(routes) == {"svc/admin"}


def outbound_address(snapshot: MeshSnapshot, listener: str) -> tuple[str, int]:
    address = snapshot.of_type(LISTENER)[listener].message.address.socket_address
    return address.address, address.port_value


def test_each_workload_listens_for_its_apps_calls_on_an_address_of_its_own() -> None:
    # Two sidecars of one node listening on one address and port would share its connections (Envoy binds
    # with SO_REUSEPORT): web-1's app could call api through web-3's sidecar, with web-3's identity.
    state = place(placed_state(), workload("web-3", "web", "ea-n1", port=18081))
    snapshots = build_snapshots(state, TCP_DB)
    expected = {"web-1": 8080, "web-2": 18080, "web-3": 18081}
    for wid, port in expected.items():
        assert outbound_address(snapshots[wid], "out/9090") == (workload_outbound_host(port), 9090)
        assert outbound_address(snapshots[wid], "out/8080") == (workload_outbound_host(port), 8080)
        check_consistent(snapshots[wid])
    assert len({workload_outbound_host(port) for port in expected.values()}) == 3
    assert outbound_address(snapshots["api-1"], "out/5432") == (workload_outbound_host(9090), 5432)  # TCP too
    # The routes stay shared; a host's client sidecar (users on the host) keeps outbound_host.
    assert snapshots["web-1"].of_type(ROUTES)["out/9090"] is snapshots["web-3"].of_type(ROUTES)["out/9090"]
    assert outbound_address(snapshots["u1"], "out/8080") == ("127.0.0.1", 8080)
    # Rebuilt on an unchanged model: the same resources (and versions).
    again = build_snapshots(state, TCP_DB)
    assert again["web-3"].versions == snapshots["web-3"].versions


@pytest.mark.parametrize(("port", "address"), [(1, "127.1.0.1"), (8080, "127.1.31.144"), (65535, "127.1.255.255")])
def test_workload_outbound_host_is_an_address_per_port(port: int, address: str) -> None:
    assert workload_outbound_host(port) == address


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_workload_outbound_host_rejects_what_is_not_a_port(port: int) -> None:
    with pytest.raises(ValueError, match="not a TCP port"):
        workload_outbound_host(port)


def test_services_sharing_a_port_are_told_apart_by_host() -> None:
    config = MeshConfig(host_calls={"u1": ("web", "admin")})
    u1 = build_snapshots(placed_state(), config)["u1"]
    routes = u1.of_type(ROUTES)["out/8080"].message
    assert {vh.name: list(vh.domains) for vh in routes.virtual_hosts} == {
        "admin": ["admin", "admin:8080"],
        "web": ["web", "web:8080"],
    }
    assert names(u1, LISTENER) == ["admin", "out/8080", "web"]


def test_tcp_services_get_a_tcp_proxy_and_conflicts_are_reported() -> None:
    api = build_snapshots(placed_state(), TCP_DB)["api-1"]
    assert tcp_clusters(api.of_type(LISTENER)["out/5432"].message) == {"svc/db"}
    assert names(api, ROUTES) == []
    config = MeshConfig(tcp_services=frozenset({"admin"}), host_calls={"u1": ("web", "admin")})
    u1 = build_snapshots(placed_state(), config)["u1"]
    assert any("admin" in p and "8080" in p for p in u1.problems)
    check_consistent(u1)


def test_hosts_call_the_entry_services_unless_configured() -> None:
    snapshots = build_snapshots(placed_state(), TCP_DB)
    # Nobody calls web: it is the entry service users reach.
    assert names(snapshots["u1"], CLUSTER) == ["svc/web"]
    configured = build_snapshots(placed_state(), MeshConfig(host_calls={"u1": ("api",)}))
    assert names(configured["u1"], CLUSTER) == ["svc/api"]
    assert names(configured["u2"], CLUSTER) == []


def test_inbound_listener_binds_the_node_address_and_forwards_to_the_app() -> None:
    web2 = build_snapshots(placed_state(), TCP_DB)["web-2"]
    inbound = web2.of_type(LISTENER)["in/web-2"].message
    assert (inbound.address.socket_address.address, inbound.address.socket_address.port_value) == ("10.1.1.11", 18080)
    local = web2.of_type(CLUSTER)["local/web-2"].message
    address = local.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (address.address, address.port_value) == ("127.0.0.1", 18080)
    assert not inbound.filter_chains[0].HasField("transport_socket")  # plaintext by default


def _identities() -> dict[str, TlsIdentity]:
    return {
        n: TlsIdentity(f"CERT-{n}", f"KEY-{n}") for n in ("web-1", "web-2", "api-1", "api-2", "db-1", "admin-1", "u1")
    }


MTLS = MeshConfig(mtls=True, trust_bundle_pem="BUNDLE", identities=_identities(), tcp_services=frozenset({"db"}))


def test_a_node_gets_only_its_own_secrets() -> None:
    snapshots = build_snapshots(placed_state(), MTLS)
    for node_id, snapshot in snapshots.items():
        secrets = snapshot.of_type(SECRET)
        if node_id == "u2":
            assert names(snapshot, SECRET) == ["trust-bundle"]
            assert any("no certificate" in p for p in snapshot.problems)
            continue
        assert names(snapshot, SECRET) == ["identity", "trust-bundle"]
        identity = secrets["identity"].message.tls_certificate
        assert identity.certificate_chain.inline_string == f"CERT-{node_id}"
        assert identity.private_key.inline_string == f"KEY-{node_id}"
        everything = b"".join(r.packed.value for t in PUSH_ORDER for r in snapshot.of_type(t).values())
        others = [n for n in _identities() if n != node_id]
        assert not any(f"KEY-{other}".encode() in everything for other in others)


def test_private_keys_never_show_in_reprs() -> None:
    assert "KEY" not in repr(TlsIdentity("CERT", "KEY"))
    assert "KEY" not in repr(MTLS)
    secret = build_snapshots(placed_state(), MTLS)["web-1"].of_type(SECRET)["identity"]
    assert "KEY" not in repr(secret)


def test_mtls_inbound_accepts_only_callers_by_spiffe_id() -> None:
    # Without RBAC (the fabric's default is allow) the TLS layer admits only the declared callers.
    snapshots = build_snapshots(allow_by_default(placed_state()), MTLS)
    inbound = snapshots["api-1"].of_type(LISTENER)["in/api-1"].message
    tls = tls_pb2.DownstreamTlsContext()
    inbound.filter_chains[0].transport_socket.typed_config.Unpack(tls)
    assert tls.require_client_certificate.value
    context = tls.common_tls_context
    assert [s.name for s in context.tls_certificate_sds_secret_configs] == ["identity"]
    sans = [
        m.matcher.exact
        for m in context.combined_validation_context.default_validation_context.match_typed_subject_alt_names
    ]
    assert sans == ["spiffe://edgectl.local/svc/web"]  # only web calls api
    assert context.combined_validation_context.validation_context_sds_secret_config.name == "trust-bundle"
    # The caller's identity reaches the app, and cannot be forged by the caller.
    manager = hcm_pb2.HttpConnectionManager()
    inbound.filter_chains[0].filters[0].typed_config.Unpack(manager)
    assert manager.forward_client_cert_details == hcm_pb2.HttpConnectionManager.SANITIZE_SET
    # web is called by the hosts' users; a service nobody may call gets an unmatchable SAN, never "any".
    web = snapshots["web-1"].of_type(LISTENER)["in/web-1"].message
    web_tls = tls_pb2.DownstreamTlsContext()
    web.filter_chains[0].transport_socket.typed_config.Unpack(web_tls)
    web_sans = web_tls.common_tls_context.combined_validation_context.default_validation_context
    assert [m.matcher.exact for m in web_sans.match_typed_subject_alt_names] == [
        "spiffe://edgectl.local/host/u1",
        "spiffe://edgectl.local/host/u2",
    ]
    nobody = build_snapshots(allow_by_default(placed_state()), dataclasses.replace(MTLS, host_calls={}))["web-1"]
    nobody_tls = tls_pb2.DownstreamTlsContext()
    nobody.of_type(LISTENER)["in/web-1"].message.filter_chains[0].transport_socket.typed_config.Unpack(nobody_tls)
    matchers = nobody_tls.common_tls_context.combined_validation_context.default_validation_context
    assert [m.matcher.exact for m in matchers.match_typed_subject_alt_names] == [ec.NO_CALLER_SAN]


def test_mtls_clusters_check_the_server_identity() -> None:
    cluster = build_snapshots(placed_state(), MTLS)["web-1"].of_type(CLUSTER)["svc/api"].message
    tls = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(tls)
    validation = tls.common_tls_context.combined_validation_context.default_validation_context
    assert [m.matcher.exact for m in validation.match_typed_subject_alt_names] == ["spiffe://edgectl.local/svc/api"]


def test_mtls_sidecars_open_connections_to_each_other_with_tcp_fast_open() -> None:
    mtls = build_snapshots(placed_state(), MTLS)
    options = mtls["web-1"].of_type(CLUSTER)["svc/api"].message.upstream_bind_config.socket_options
    assert [(o.level, o.name, o.int_value, o.state) for o in options] == [
        (6, ec.TCP_FASTOPEN_CONNECT, 1, ec.socket_option_pb2.SocketOption.STATE_PREBIND)  # IPPROTO_TCP
    ]
    inbound = mtls["api-1"].of_type(LISTENER)["in/api-1"].message
    assert inbound.tcp_fast_open_queue_length.value == ec.FAST_OPEN_QUEUE
    tcp_inbound = build_snapshots(placed_state(), dataclasses.replace(MTLS, tcp_services=frozenset({"db"})))
    assert tcp_inbound["db-1"].of_type(LISTENER)["in/db-1"].message.tcp_fast_open_queue_length.value > 0
    # The local app's cluster and the outbound listeners (loopback) do not need it.
    assert not mtls["api-1"].of_type(CLUSTER)["local/api-1"].message.HasField("upstream_bind_config")
    assert not mtls["web-1"].of_type(LISTENER)["out/9090"].message.HasField("tcp_fast_open_queue_length")
    # Turned off, or in plaintext (where Envoy would count a connection as made at connect(), and a
    # refused one as a reset rather than a connect failure): connections open as usual.
    for config in (dataclasses.replace(MTLS, tcp_fast_open=False), MeshConfig()):
        built = build_snapshots(placed_state(), config)
        assert not built["web-1"].of_type(CLUSTER)["svc/api"].message.HasField("upstream_bind_config")
        assert not built["api-1"].of_type(LISTENER)["in/api-1"].message.HasField("tcp_fast_open_queue_length")
    with pytest.raises(ValueError, match="mTLS clusters only"):
        ec.eds_cluster("svc/api", 1000, http=True, fast_open=True)


def test_inbound_sidecars_answer_warm_ups_themselves_and_http_clusters_keep_a_spare_connection() -> None:
    built = build_snapshots(placed_state(), MTLS)
    inbound = built["api-1"].of_type(LISTENER)["in/api-1"].message
    manager = hcm_pb2.HttpConnectionManager()
    inbound.filter_chains[0].filters[0].typed_config.Unpack(manager)
    (host,) = manager.route_config.virtual_hosts
    warm_up, *to_the_app = host.routes
    assert warm_up.match.path == WARM_UP_PATH and warm_up.direct_response.status == 204
    assert [(h.name, h.string_match.exact) for h in warm_up.match.headers] == [(":method", "GET")]
    assert ec.HTTP_RBAC_FILTER in warm_up.typed_per_filter_config  # RBAC off for this route alone
    assert to_the_app and all(r.route.cluster == "local/api-1" for r in to_the_app)
    cluster = built["web-1"].of_type(CLUSTER)["svc/api"].message
    assert cluster.preconnect_policy.per_upstream_preconnect_ratio.value == ec.PRECONNECT_RATIO
    tcp = build_snapshots(placed_state(), dataclasses.replace(MTLS, tcp_services=frozenset({"db"})))
    assert not tcp["api-1"].of_type(CLUSTER)["svc/db"].message.HasField("preconnect_policy")


def test_builds_are_deterministic_and_shared_between_nodes() -> None:
    a = build_snapshots(placed_state(), TCP_DB)
    b = build_snapshots(placed_state(), TCP_DB)
    assert {n: dict(s.versions) for n, s in a.items()} == {n: dict(s.versions) for n, s in b.items()}
    # Both hosts call web: the very same resource objects (packed once).
    assert a["u1"].of_type(CLUSTER)["svc/web"] is a["u2"].of_type(CLUSTER)["svc/web"]


def test_version_is_generation_and_content_hash() -> None:
    state = placed_state()
    snapshot = build_snapshots(state, TCP_DB)["u1"]
    generation, _, digest = snapshot.version(CLUSTER).partition("-")
    assert int(generation) == state.generation and len(digest) == 16
    assert version_digest(snapshot.version(CLUSTER)) == digest


def test_check_consistent_names_every_dangling_reference() -> None:
    good = build_snapshots(placed_state(), TCP_DB)["web-1"]
    resources = {t: dict(good.of_type(t)) for t in PUSH_ORDER}
    del resources[ENDPOINTS]["svc/api"]
    del resources[ROUTES]["out/9090"]
    del resources[CLUSTER]["svc/admin"]
    broken = dataclasses.replace(good, resources=resources)
    with pytest.raises(InconsistentSnapshot) as raised:
        check_consistent(broken)
    text = str(raised.value)
    assert "Cluster 'svc/api' needs ClusterLoadAssignment 'svc/api'" in text
    assert "Listener 'out/9090' needs RouteConfiguration 'out/9090'" in text
    assert "RouteConfiguration 'out/8080' needs Cluster 'svc/admin'" in text


def test_missing_secrets_are_not_inconsistent() -> None:
    # A certificate not issued yet must not stop endpoint updates: the TLS listener just waits.
    u2 = build_snapshots(placed_state(), MTLS)["u2"]
    check_consistent(u2)


def test_make_resource_digest_is_the_content() -> None:
    one = make_resource("x", ec.trust_bundle_secret("A"))
    assert make_resource("x", ec.trust_bundle_secret("A")).digest == one.digest
    assert make_resource("x", ec.trust_bundle_secret("B")).digest != one.digest


placements = st.lists(
    st.tuples(
        st.sampled_from(["web", "admin", "api", "db"]),
        st.sampled_from(["ea-n1", "ea-n2", "c-n1", None]),
        st.integers(min_value=0, max_value=3),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(placements, st.booleans(), st.sets(st.sampled_from(["ea-n1", "ea-n2", "c-n1"])))
def test_every_build_is_consistent(chosen: list, mtls: bool, down: set) -> None:
    state = base_state()
    for i, (service, node_id, port_index) in enumerate(chosen):
        state = state.apply(
            ev.WorkloadPlaced(workload(f"{service}-{i}", service, node_id, port=[0, 7000, 7001, 8080][port_index]))
        )
    for node_id in down:
        state = state.apply(ev.NodeWentDown(NodeId(node_id)))
    config = dataclasses.replace(MTLS, mtls=mtls)
    snapshots = build_snapshots(state, config)
    placed = {w.id for w in state.workloads.values() if w.node is not None}
    assert set(snapshots) == placed | {"u1", "u2"}
    for snapshot in snapshots.values():
        check_consistent(snapshot)
    again = build_snapshots(state, config)
    assert {n: dict(s.versions) for n, s in snapshots.items()} == {n: dict(s.versions) for n, s in again.items()}
    for node_id in down:  # a drained node serves nobody
        for snapshot in snapshots.values():
            for cla in snapshot.of_type(ENDPOINTS).values():
                ips = {
                    lb.endpoint.address.socket_address.address for g in cla.message.endpoints for lb in g.lb_endpoints
                }
                assert state.nodes[NodeId(node_id)].ip not in ips


def test_pki_style_instance_ids_are_matched_by_service_prefix() -> None:
    # The PKI names each instance spiffe://<td>/svc/<service>/w/<id>: listeners and clusters then
    # accept any instance of the service, so scaling it changes nothing anywhere.
    def instance(wid: str, service: str, node: str):
        return dataclasses.replace(
            workload(wid, service, node), spiffe_id=f"spiffe://edgectl.local/svc/{service}/w/{wid}"
        )

    state = place(allow_by_default(base_state()), instance("web-1", "web", "ea-n1"), instance("api-1", "api", "c-n1"))
    before = build_snapshots(state, MTLS)
    inbound = before["api-1"].of_type(LISTENER)["in/api-1"].message
    tls = tls_pb2.DownstreamTlsContext()
    inbound.filter_chains[0].transport_socket.typed_config.Unpack(tls)
    matchers = tls.common_tls_context.combined_validation_context.default_validation_context
    assert [(m.matcher.prefix, m.matcher.exact) for m in matchers.match_typed_subject_alt_names] == [
        ("spiffe://edgectl.local/svc/web/", "")
    ]
    scaled = place(state, instance("web-2", "web", "ea-n2"), instance("api-2", "api", "ea-n1"))
    after = build_snapshots(scaled, MTLS)
    for type_url in (CLUSTER, LISTENER):  # web-1's clusters (svc/api) and api-1's listener unchanged
        assert before["web-1"].digest(type_url) == after["web-1"].digest(type_url)
        assert before["api-1"].digest(type_url) == after["api-1"].digest(type_url)
