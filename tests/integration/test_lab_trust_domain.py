"""The edge-cloud lab with a CA of another trust domain than the default: real Envoy sidecars in Mininet
hosts get SVIDs in that domain and a user's request reaches the service over mTLS, the service seeing
the user's SPIFFE id in it. Everything is stopped by the lab (by PID, net.stop()), also on failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from mininet_topos.lab import Lab

pytestmark = pytest.mark.integration

FABRIC = Path(__file__).resolve().parents[1] / "data" / "fabrics" / "two-edges.yaml"
TD = "example.org"


def test_sidecars_serve_over_mtls_with_identities_of_the_cas_trust_domain(tmp_path: Path) -> None:
    with Lab(FABRIC, tmp_path / "lab", trust_domain=TD) as lab:
        (web,) = lab.wait_declared_services()  # waits until the mesh serves: each sidecar has its SVID
        assert web["spiffe_id"] == f"spiffe://{TD}/svc/web/w/{web['id']}"
        lab.start_loads("web", rate=10.0)
        first = lab.first_served_by(web["id"], timeout=30)
        assert first is not None, lab.records()[-5:]
        assert first.caller == f"spiffe://{TD}/host/u1"  # mTLS: the app saw the user's SVID
