"""meshctl with edgectl's own PKI: SVIDs from the CA (per-instance SPIFFE ids), handed over with
``MeshServer.use_identities`` as a PkiService listener would, served by SDS to real Envoys (SotW and
delta); a certificate rotation is pushed and traffic keeps flowing."""

from __future__ import annotations

import dataclasses
import time

import pytest

from meshctl.sidecar import EnvoySidecar
from meshctl.snapshot import MeshConfig
from tests.integration.harness import free_port
from tests.integration.test_xds_harness import (
    NODE_IPS,
    backends,
    get,
    make_workload,
    mesh,
    port_open,
    wait_until,
)

pytestmark = pytest.mark.integration

TD = "edgectl.local"


def tls_versions(sidecar: EnvoySidecar, kind: str) -> set[str]:
    """The TLS versions an Envoy's clusters (its connections out) or listeners (in) negotiated so far."""
    versions = set()
    for line in sidecar.admin(f"/stats?filter=^{kind}[.].*[.]ssl[.]versions[.]").splitlines():
        stat, _, count = line.partition(": ")
        if count.strip().isdigit() and int(count) > 0:
            versions.add(stat.rsplit(".versions.", 1)[1])
    return versions


def test_pki_svids_by_sds_with_service_prefix_matching() -> None:
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
    with mesh(MeshConfig()) as m, backends(("web-app", "127.0.0.1", app_port)):
        m.place(server)
        m.server.use_identities(IdentitySnapshot(version=1, identities=svids, bundle_pem=ca.bundle_pem), mtls=True)
        server_envoy = m.envoy("web-1", "web")
        client = m.envoy("u1", "users", delta=True)
        wait_until(lambda: m.node_view("u1").get("in_sync") and m.node_view("web-1").get("in_sync"), 10, "in sync")
        wait_until(lambda: port_open(NODE_IPS["n1"], app_port), 10, "the inbound listener")
        assert wait_until(lambda: get(m.web_port)[0] == 200, 10, "a request over mTLS")
        assert "identity" in client.dynamic_versions()["secrets"]
        # Sidecar to sidecar is TLS 1.3 on both sides (Envoy's client side stops at 1.2 unless told).
        assert tls_versions(client, "cluster") == {"TLSv1.3"}
        assert tls_versions(server_envoy, "listener") == {"TLSv1.3"}

        # A certificate rotation is a new IdentitySnapshot: pushed by SDS, traffic keeps flowing.
        rotated = dict(svids, u1=ca.issue_with_new_key(f"spiffe://{TD}/host/u1", now + 1))
        m.server.use_identities(IdentitySnapshot(version=2, identities=rotated, bundle_pem=ca.bundle_pem))
        wait_until(
            lambda: m.node_view("u1")["types"]["sds"]["pushes"] >= 2 and m.node_view("u1")["in_sync"], 5, "rotation"
        )
        for _ in range(10):
            assert get(m.web_port)[0] == 200
