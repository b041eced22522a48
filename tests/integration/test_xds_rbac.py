"""Authorization enforced by real Envoys: a service's ``allow_from`` becomes RBAC on its sidecar's inbound
listener (mTLS with SVIDs from edgectl's CA, served by SDS). An admitted caller gets 200, one the policy
does not admit gets 403 from the sidecar, Envoy's RBAC stats count it, the sidecar's access log reports it
to the controller's DenialLog, and a policy change in the desired state flips 403 to 200 live.
"""

from __future__ import annotations

import dataclasses
import http.client
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from edgectl.policy_denials import DenialLog
from meshctl.snapshot import MeshConfig
from meshctl.xds_types import WARM_UP_PATH, workload_outbound_host
from netmodel import events as ev
from netmodel.ids import HostId, ServiceName
from netmodel.types import AllowRule, PolicyDefault
from tests.integration.harness import free_port
from tests.integration.test_xds_harness import (
    NODE_IPS,
    Mesh,
    backends,
    fabric_text,
    get,
    make_workload,
    mesh,
    wait_until,
)

pytestmark = pytest.mark.integration

TD = "edgectl.local"
STRANGER = f"spiffe://{TD}/svc/hello/w/hello-1"


def allow(m: Mesh, revision: str, *rules: AllowRule) -> None:
    """A new desired state whose only change is web's ``allow_from``."""
    services = tuple(dataclasses.replace(s, allow_from=rules) if s.name == "web" else s for s in m.spec.services)
    m.bus.publish(ev.DesiredStateApplied(dataclasses.replace(m.spec, services=services), revision)).result(timeout=5)


def mtls_get(ip: str, port: int, files: dict[str, Path], path: str = "/cart?x=1") -> int | str:
    """GET / straight to a sidecar's inbound listener over mTLS with ``files``' certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # SPIFFE: identity is the URI SAN, not a host name
    context.load_verify_locations(str(files["bundle"]))
    context.load_cert_chain(str(files["chain"]), str(files["key"]))
    connection = http.client.HTTPSConnection(ip, port, timeout=5, context=context)
    try:
        connection.request("GET", path, headers={"host": "web"})
        with connection.getresponse() as response:  # read by Content-Length: no wait for the close
            response.read()
            return response.status
    except (ssl.SSLError, OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        connection.close()


def rbac_denied(stats: str) -> int:
    for line in stats.splitlines():
        name, _, value = line.partition(": ")
        if name == "http.in_web.rbac.denied":
            return int(value)
    return 0


def test_allow_from_is_enforced_by_the_callee_sidecar_and_denials_reach_the_controller(tmp_path: Path) -> None:
    from pki.ca import CertificateAuthority
    from pki.identities import IdentitySnapshot

    ca, _root_key = CertificateAuthority.create(TD)
    now = time.time()
    app_port = free_port()
    server = dataclasses.replace(
        make_workload("web-1", "web", "n1", app_port), spiffe_id=f"spiffe://{TD}/svc/web/w/web-1"
    )
    svids = {
        "web-1": ca.issue_with_new_key(f"spiffe://{TD}/svc/web/w/web-1", now),
        "u1": ca.issue_with_new_key(f"spiffe://{TD}/host/u1", now),
    }
    stranger_svid = ca.issue_with_new_key(STRANGER, now)
    files = {"chain": tmp_path / "chain.pem", "key": tmp_path / "key.pem", "bundle": tmp_path / "bundle.pem"}
    files["chain"].write_text(stranger_svid.cert_chain_pem)
    files["key"].write_text(stranger_svid.private_key_pem)
    files["bundle"].write_text(ca.bundle_pem)
    denials = DenialLog()

    with (
        mesh(MeshConfig(), default_policy=PolicyDefault.DENY, denials=denials) as m,
        backends(("web-app", "127.0.0.1", app_port)) as (app,),
    ):
        allow(m, "r1", AllowRule(host=HostId("u1")))
        m.place(server)
        m.server.use_identities(IdentitySnapshot(version=1, identities=svids, bundle_pem=ca.bundle_pem), mtls=True)
        callee = m.envoy("web-1", "web")
        m.envoy("u1", "users", delta=True)
        wait_until(lambda: m.node_view("u1").get("in_sync") and m.node_view("web-1").get("in_sync"), 15, "in sync")

        # Admitted (allow_from: host u1): through u1's sidecar and mTLS.
        assert wait_until(lambda: get(m.web_port)[0] == 200, 15, "u1's request over mTLS")
        # Not admitted: a genuine SVID of the trust domain (hello's), straight to web's sidecar: 403.
        inbound = (NODE_IPS["n1"], app_port)
        assert mtls_get(*inbound, files) == 403
        assert rbac_denied(callee.admin("/stats?filter=rbac")) >= 1

        # The sidecar's access log reports it: (service:hello, web, envoy) in the controller's log.
        key = ("service:hello", "web", "envoy")
        wait_until(lambda: denials.totals().get(key, 0) >= 1, 15, "the denial in the DenialLog")
        recent = denials.recent()[0]
        assert (recent.caller, recent.detail) == (STRANGER, "GET /cart")
        assert ("host:u1", "web", "envoy") not in denials.totals()
        assert m.metric("edgectl_xds_access_log_entries_total", outcome="not_denied") == 0  # 200s stay in Envoy

        # The policy admits hello too: 403 turns into 200 without restarting anything.
        started = time.monotonic()
        allow(m, "r2", AllowRule(host=HostId("u1")), AllowRule(service=ServiceName("hello")))
        wait_until(lambda: mtls_get(*inbound, files) == 200, 15, "hello admitted", interval=0.02)
        flip = time.monotonic() - started
        print(f"policy change -> 200 at the callee's sidecar in {flip * 1000:.0f} ms")
        assert get(m.web_port)[0] == 200  # u1 still admitted

        # And back: removing the grant denies again.
        started = time.monotonic()
        allow(m, "r3", AllowRule(host=HostId("u1")))
        wait_until(lambda: mtls_get(*inbound, files) == 403, 15, "hello denied again", interval=0.02)
        print(f"policy change -> 403 at the callee's sidecar in {(time.monotonic() - started) * 1000:.0f} ms")

        # A grant limited to paths and methods: hello may GET /status, nothing else.
        allow(
            m, "r4", AllowRule(host=HostId("u1")), AllowRule(ServiceName("hello"), paths=("/status",), methods=("GET",))
        )
        wait_until(lambda: mtls_get(*inbound, files, "/status/x") == 200, 15, "hello admitted to /status")
        assert mtls_get(*inbound, files, "/cart") == 403
        assert m.node_view("web-1")["types"]["lds"]["nacks"] == 0

        # A path rule admits whole segments of the normalized path, however the request spells it.
        assert mtls_get(*inbound, files, "/status") == 200
        assert mtls_get(*inbound, files, "/status?verbose=1") == 200
        assert mtls_get(*inbound, files, "/status//x/./y") == 200
        assert mtls_get(*inbound, files, "/statusadmin") == 403
        assert mtls_get(*inbound, files, "/status/../cart") == 403
        assert mtls_get(*inbound, files, "/status/x/../../cart") == 403
        assert mtls_get(*inbound, files, "/status%2F..%2Fcart") in (400, 403)
        assert mtls_get(*inbound, files, "/status%2f..%2fcart") in (400, 403)
        assert mtls_get(*inbound, files, "/status%5C..%5Ccart") in (400, 403)

        # A node agent's warm-up (a GET of WARM_UP_PATH) is answered by the sidecar itself, whatever the
        # rules say of paths: 204, no request reaches the app and no denial is counted. Anything else
        # there (another method, a longer path) is an ordinary request, under the rules.
        hits, denied = app.hits, rbac_denied(callee.admin("/stats?filter=rbac"))
        assert mtls_get(*inbound, files, WARM_UP_PATH) == 204
        assert (app.hits, rbac_denied(callee.admin("/stats?filter=rbac"))) == (hits, denied)
        assert mtls_get(*inbound, files, WARM_UP_PATH + "/x") == 403


def two_callers_fabric(web_port: int, hello_port: int) -> str:
    """web admits hello only; hello and other both call it."""
    nodes = fabric_text(web_port, hello_port).split("services:")[0]
    other = f"{{name: other, port: {free_port()}, replicas: 1, cpu_millis: 100, memory_mib: 64, calls: [web]}}"
    return (
        nodes
        + f"""services:
  - {{name: web, port: {web_port}, replicas: 1, cpu_millis: 100, memory_mib: 64, allow_from: [{{service: hello}}]}}
  - {{name: hello, port: {hello_port}, replicas: 1, cpu_millis: 100, memory_mib: 64, calls: [web]}}
  - {other}
"""
    )


def test_two_callers_on_one_node_each_call_with_their_own_identity() -> None:
    """hello-1 and other-1 run on one node and both call web, which admits hello only. Each app calls
    through its own sidecar's address (``workload_outbound_host``): every call of hello's is admitted and
    every call of other's denied. On one shared address (Envoy binds with SO_REUSEPORT) the kernel would
    hand each new connection to either sidecar, and the calls would leave with either identity."""
    from pki.ca import CertificateAuthority
    from pki.identities import IdentitySnapshot

    ca, _root_key = CertificateAuthority.create(TD)
    app_host = "127.0.0.5"  # apart from 127.0.0.1, where the apps' calls went before (and may not bind)
    config = MeshConfig(app_host=app_host)
    with mesh(config, default_policy=PolicyDefault.DENY, fabric=two_callers_fabric) as m:
        other_port = next(s.port for s in m.spec.services if s.name == "other")
        placed = {
            "web-1": ("web", "n2", m.web_port),
            "hello-1": ("hello", "n1", m.hello_port),
            "other-1": ("other", "n1", other_port),
        }
        svids = {}
        with backends(("web-app", app_host, m.web_port)) as (app,):
            for wid, (service, node, port) in placed.items():
                spiffe_id = f"spiffe://{TD}/svc/{service}/w/{wid}"
                m.place(dataclasses.replace(make_workload(wid, service, node, port), spiffe_id=spiffe_id))
                svids[wid] = ca.issue_with_new_key(spiffe_id, time.time())
            m.server.use_identities(IdentitySnapshot(version=1, identities=svids, bundle_pem=ca.bundle_pem), mtls=True)
            for wid, (service, _node, _port) in placed.items():
                m.envoy(wid, service)
            wait_until(lambda: all(m.node_view(wid).get("in_sync") for wid in placed), 15, "in sync")
            hello_out, other_out = workload_outbound_host(m.hello_port), workload_outbound_host(other_port)
            assert hello_out != other_out
            wait_until(lambda: get(m.web_port, hello_out)[0] == 200, 15, "hello's call admitted")
            wait_until(lambda: get(m.web_port, other_out)[0] == 403, 15, "other's call denied")
            # Every call a new connection (urllib): each one a new draw, were the address shared.
            statuses = [(get(m.web_port, hello_out)[0], get(m.web_port, other_out)[0]) for _ in range(40)]
            assert set(statuses) == {(200, 403)}, statuses
            # What reached web's app came from hello-1's sidecar (mTLS: the caller's SVID, forwarded).
            assert app.identities and all("/svc/hello/w/hello-1" in who for who in app.identities), app.identities


def test_tcp_service_closes_the_connection_of_a_caller_not_admitted(tmp_path: Path) -> None:
    from pki.ca import CertificateAuthority
    from pki.identities import IdentitySnapshot

    ca, _root_key = CertificateAuthority.create(TD)
    now = time.time()
    app_port = free_port()
    server = dataclasses.replace(
        make_workload("web-1", "web", "n1", app_port), spiffe_id=f"spiffe://{TD}/svc/web/w/web-1"
    )
    svids = {
        "web-1": ca.issue_with_new_key(f"spiffe://{TD}/svc/web/w/web-1", now),
        "u1": ca.issue_with_new_key(f"spiffe://{TD}/host/u1", now),
    }
    stranger_svid = ca.issue_with_new_key(STRANGER, now)
    files = {"chain": tmp_path / "chain.pem", "key": tmp_path / "key.pem", "bundle": tmp_path / "bundle.pem"}
    files["chain"].write_text(stranger_svid.cert_chain_pem)
    files["key"].write_text(stranger_svid.private_key_pem)
    files["bundle"].write_text(ca.bundle_pem)
    denials = DenialLog()

    config = MeshConfig(tcp_services=frozenset({"web"}))
    with (
        mesh(config, default_policy=PolicyDefault.DENY, denials=denials) as m,
        backends(("web-app", "127.0.0.1", app_port)),
    ):
        allow(m, "r1", AllowRule(host=HostId("u1")))
        m.place(server)
        m.server.use_identities(IdentitySnapshot(version=1, identities=svids, bundle_pem=ca.bundle_pem), mtls=True)
        callee = m.envoy("web-1", "web")
        m.envoy("u1", "users", delta=True)
        wait_until(lambda: m.node_view("u1").get("in_sync") and m.node_view("web-1").get("in_sync"), 15, "in sync")

        assert wait_until(lambda: get(m.web_port)[0] == 200, 15, "u1's connection over mTLS")
        inbound = (NODE_IPS["n1"], app_port)
        refused = mtls_get(*inbound, files)
        assert refused != 200 and not isinstance(refused, int), refused  # closed, no HTTP answer
        stats = callee.admin("/stats?filter=rbac")
        assert "in_web.rbac.denied: 1" in stats.splitlines(), stats

        key = ("service:hello", "web", "envoy")
        wait_until(lambda: denials.totals().get(key, 0) >= 1, 15, "the denied connection in the DenialLog")
        assert denials.recent()[0].detail == "connection"
        # Envoy sends only what RBAC closed: u1's admitted connections never reached the controller.
        assert m.metric("edgectl_xds_access_log_entries_total", outcome="not_denied") == 0

        allow(m, "r2", AllowRule(host=HostId("u1")), AllowRule(service=ServiceName("hello")))
        wait_until(lambda: mtls_get(*inbound, files) == 200, 15, "hello admitted")


def test_access_log_streams_are_bound_to_the_client_certificate_over_mtls() -> None:
    """The real PKI's xDS authorization on the real mTLS gRPC listener: web-1's SVID may report web-1's
    denials; u1's SVID may not report for web-1 (PERMISSION_DENIED, nothing recorded)."""
    import grpc
    from envoy.data.accesslog.v3 import accesslog_pb2
    from envoy.service.accesslog.v3 import als_pb2

    from edgectl.bus import EventBus
    from meshctl.access_log import SERVICE
    from meshctl.xds_grpc import XdsTls, start_mesh
    from netmodel.fabric import build_state
    from netmodel.fabric_file import parse_fabric
    from pki.ca import CertificateAuthority
    from pki.service import PkiService
    from tests.integration.test_xds_harness import fabric_text

    ca, _root_key = CertificateAuthority.create(TD)
    bus = EventBus(build_state(parse_fabric(fabric_text(free_port(), free_port()).encode(), "rbac.yaml")))
    bus.start()
    web = f"spiffe://{TD}/svc/web/w/web-1"
    bus.publish(
        ev.WorkloadPlaced(dataclasses.replace(make_workload("web-1", "web", "n1", free_port()), spiffe_id=web))
    ).result(timeout=5)
    pki = PkiService(ca, lambda: bus.state, hosts=lambda _s: ["u1"]).start()
    control = pki.control_tls()
    denials = DenialLog()
    tls = XdsTls(control.cert_chain_pem, control.private_key_pem, control.bundle_pem, pki.authorize_xds)
    mesh_server = start_mesh(lambda: bus.state, bus.subscribe, "127.0.0.1", 0, tls=tls, denials=denials)

    def report(spiffe_id: str) -> Any:
        svid = ca.issue_with_new_key(spiffe_id, time.time())
        creds = grpc.ssl_channel_credentials(
            root_certificates=control.bundle_pem.encode(),
            private_key=svid.private_key_pem.encode(),
            certificate_chain=svid.cert_chain_pem.encode(),
        )
        entry = accesslog_pb2.HTTPAccessLogEntry()
        entry.common_properties.tls_properties.peer_certificate_properties.subject_alt_name.add(uri=STRANGER)
        entry.request.path = "/cart"
        entry.response.response_code_details = "rbac_access_denied_matched_policy[none]"
        message = als_pb2.StreamAccessLogsMessage()
        message.identifier.node.id = "web-1"
        message.http_logs.log_entry.append(entry)
        with grpc.secure_channel(f"127.0.0.1:{mesh_server.address[1]}", creds) as channel:
            call = channel.stream_unary(
                f"/{SERVICE}/StreamAccessLogs",
                request_serializer=als_pb2.StreamAccessLogsMessage.SerializeToString,
                response_deserializer=als_pb2.StreamAccessLogsResponse.FromString,
            )
            try:
                return call(iter([message]), timeout=10)
            except grpc.RpcError as exc:
                return exc

    try:
        refused = report(f"spiffe://{TD}/host/u1")
        assert isinstance(refused, grpc.RpcError) and refused.code() == grpc.StatusCode.PERMISSION_DENIED, refused
        assert denials.totals() == {}
        accepted = report(web)
        assert not isinstance(accepted, grpc.RpcError), accepted
        assert denials.totals() == {("service:hello", "web", "envoy"): 1}
    finally:
        mesh_server.stop()
        pki.stop()
        bus.stop()


@pytest.mark.parametrize("trust_domain", [TD, "example.org"])
def test_with_the_pki_the_first_snapshot_served_is_already_mtls(
    caplog: pytest.LogCaptureFixture, trust_domain: str
) -> None:
    """Started with the PKI's identities, the mesh never builds (nor serves) a plaintext inbound listener,
    and does not warn that only the switches enforce the policy."""
    from edgectl.bus import EventBus
    from meshctl.envoy_config import IDENTITY_SECRET, TRUST_BUNDLE_SECRET
    from meshctl.publisher import NO_PKI_WARNING
    from meshctl.snapshot import inbound_listener_name
    from meshctl.xds_grpc import start_mesh
    from meshctl.xds_types import LISTENER, SECRET
    from netmodel.fabric import build_state
    from netmodel.fabric_file import parse_fabric
    from pki.ca import CertificateAuthority
    from pki.service import PkiService
    from tests.integration.test_xds_harness import fabric_text

    ca, _root_key = CertificateAuthority.create(trust_domain)
    bus = EventBus(build_state(parse_fabric(fabric_text(free_port(), free_port()).encode(), "rbac.yaml")))
    bus.start()
    web = dataclasses.replace(
        make_workload("web-1", "web", "n1", free_port()), spiffe_id=f"spiffe://{trust_domain}/svc/web/w/web-1"
    )
    bus.publish(ev.WorkloadPlaced(web)).result(timeout=5)
    pki = PkiService(ca, lambda: bus.state, hosts=lambda _s: ["u1"]).start()
    try:
        mesh_server = start_mesh(
            lambda: bus.state,
            bus.subscribe,
            "127.0.0.1",
            0,
            config=MeshConfig(trust_domain=trust_domain),
            identities=pki.snapshot,
            crl_pem=pki.trust_crls_pem(),
        )
        try:
            snapshot = mesh_server.cache.snapshot("web-1")
            assert snapshot is not None
            assert set(snapshot.of_type(SECRET)) == {IDENTITY_SECRET, TRUST_BUNDLE_SECRET}
            assert "web-1" in pki.snapshot.identities  # (an SVID of this trust domain, served)
            listener = snapshot.of_type(LISTENER)[inbound_listener_name("web-1")].message
            assert listener.filter_chains[0].HasField("transport_socket")  # TLS, from the first build
            assert NO_PKI_WARNING not in [r.getMessage() for r in caplog.records]
        finally:
            mesh_server.stop()
    finally:
        pki.stop()
        bus.stop()
