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

import pytest

from edgectl.policy_denials import DenialLog
from meshctl.snapshot import MeshConfig
from netmodel import events as ev
from netmodel.ids import HostId, ServiceName
from netmodel.types import AllowRule, PolicyDefault
from tests.integration.harness import free_port
from tests.integration.test_xds_harness import NODE_IPS, Mesh, backends, get, make_workload, mesh, wait_until

pytestmark = pytest.mark.integration

TD = "edgectl.local"
STRANGER = f"spiffe://{TD}/svc/hello/w/hello-1"


def allow(m: Mesh, revision: str, *rules: AllowRule) -> None:
    """A new desired state whose only change is web's ``allow_from``."""
    services = tuple(dataclasses.replace(s, allow_from=rules) if s.name == "web" else s for s in m.spec.services)
    m.bus.publish(ev.DesiredStateApplied(dataclasses.replace(m.spec, services=services), revision)).result(timeout=5)


def mtls_get(ip: str, port: int, files: dict[str, Path]) -> int | str:
    """GET / straight to a sidecar's inbound listener over mTLS with ``files``' certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # SPIFFE: identity is the URI SAN, not a host name
    context.load_verify_locations(str(files["bundle"]))
    context.load_cert_chain(str(files["chain"]), str(files["key"]))
    connection = http.client.HTTPSConnection(ip, port, timeout=5, context=context)
    try:
        connection.request("GET", "/cart?x=1", headers={"host": "web"})
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
        backends(("web-app", "127.0.0.1", app_port)),
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
