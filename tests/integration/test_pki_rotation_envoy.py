"""Rotation end to end with real Envoys: a client sidecar (host u1) calls a server sidecar (web-1) over
mTLS with SVIDs from edgectl's CA delivered by SDS; ``PkiService`` with a 10 s TTL rotates both every
~5 s; a request loop sees zero failures across at least two rotations of each. Loopback only; Envoys
stopped by PID (the harness). Then a forced rotation (``PkiService.rotate``, a compromised key): the
push that carries the new SVID also carries the CRLs in the trust bundle, and the server sidecar's
listener refuses the old certificate at once while the new one and the request loop keep working."""

from __future__ import annotations

import dataclasses
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from meshctl.snapshot import MeshConfig
from tests.integration.harness import free_port
from tests.integration.test_xds_harness import NODE_IPS, backends, get, make_workload, mesh, port_open, wait_until

pytestmark = pytest.mark.integration

TD = "edgectl.local"
WEB = f"spiffe://{TD}/svc/web/w/web-1"


def tls_call(ip: str, port: int, svid: object, bundle_pem: str, tmp: Path) -> str:
    """One HTTP request straight to a sidecar's inbound mTLS listener with ``svid``: the status line or why not."""
    (tmp / "c.pem").write_text(svid.cert_chain_pem)  # type: ignore[attr-defined]
    (tmp / "k.pem").write_text(svid.private_key_pem)  # type: ignore[attr-defined]
    context = ssl.create_default_context(cadata=bundle_pem)
    context.check_hostname = False  # the sidecar's SVID has a URI SAN only
    context.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
    try:
        with socket.create_connection((ip, port), timeout=3) as raw, context.wrap_socket(raw) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
            return tls.recv(64).split(b"\r\n", 1)[0].decode()
    except (OSError, ssl.SSLError) as exc:
        return repr(exc)


def test_requests_keep_succeeding_across_svid_rotations(tmp_path: Path) -> None:
    from pki.ca import CertificateAuthority
    from pki.policy import IssuancePolicy
    from pki.service import PkiService

    ca, _root_key = CertificateAuthority.create(TD, policy=IssuancePolicy(TD, ttl_s=10))
    app_port = free_port()
    with mesh(MeshConfig(trust_domain=TD)) as m, backends(("web-app", "127.0.0.1", app_port)):
        m.place(dataclasses.replace(make_workload("web-1", "web", "n1", app_port), spiffe_id=WEB))
        pki = PkiService(ca, lambda: m.bus.state, hosts=lambda _s: ["u1"], max_sleep_s=1.0)
        serials: dict[str, set[int]] = {"web-1": set(), "u1": set()}

        def served(snapshot: object) -> None:
            m.server.use_identities(snapshot, mtls=True, crl_pem=pki.trust_crls_pem())  # type: ignore[arg-type]
            for subject, svid in snapshot.identities.items():  # type: ignore[attr-defined]
                serials.setdefault(subject, set()).add(svid.info.serial)

        pki.subscribe(served)
        pki.start()
        served(pki.snapshot)
        try:
            m.envoy("web-1", "web")
            m.envoy("u1", "users", delta=True)
            wait_until(lambda: m.node_view("u1").get("in_sync") and m.node_view("web-1").get("in_sync"), 10, "sync")
            wait_until(lambda: port_open(NODE_IPS["n1"], app_port), 10, "the inbound listener")
            assert wait_until(lambda: get(m.web_port)[0] == 200, 10, "a request over mTLS")
            assert pki.snapshot.identities["u1"].info.not_after - pki.snapshot.identities["u1"].info.not_before <= 11

            results: list[int | str] = []
            stop = threading.Event()

            def loop() -> None:
                while not stop.is_set():
                    try:
                        results.append(get(m.web_port, timeout=2)[0])
                    except Exception as exc:  # a refused or reset connection is a failure too
                        results.append(repr(exc))
                    time.sleep(0.02)

            caller = threading.Thread(target=loop, daemon=True)
            caller.start()
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and min(len(serials["u1"]), len(serials["web-1"])) < 4:
                time.sleep(0.2)
            time.sleep(1.0)  # requests after the last rotation too
            stop.set()
            caller.join(5)
            rotations = {subject: len(found) - 1 for subject, found in serials.items()}
            assert rotations["u1"] >= 2 and rotations["web-1"] >= 2, rotations
            failures = [r for r in results if r != 200]
            assert len(results) > 100 and not failures, (len(results), failures[:5])

            # A compromised key: forced rotation revokes the old certificate; refused within one push.
            ip = NODE_IPS["n1"]
            old = pki.snapshot.identities["u1"]
            assert tls_call(ip, app_port, old, ca.bundle_pem, tmp_path).endswith("200 OK")
            pushes = m.node_view("web-1")["types"]["sds"]["pushes"]
            pki.rotate(f"spiffe://{TD}/host/u1")
            wait_until(
                lambda: m.node_view("web-1")["types"]["sds"]["pushes"] > pushes and m.node_view("web-1")["in_sync"],
                5,
                "the push with the CRL",
            )
            refused = wait_until(
                lambda: "REVOKED" in (r := tls_call(ip, app_port, old, ca.bundle_pem, tmp_path)) and r, 2, "refusal"
            )
            assert "CERTIFICATE_REVOKED" in refused, refused
            new = pki.snapshot.identities["u1"]
            assert new.info.serial != old.info.serial
            assert tls_call(ip, app_port, new, ca.bundle_pem, tmp_path).endswith("200 OK")
            assert wait_until(lambda: get(m.web_port)[0] == 200, 5, "the client sidecar with its new SVID")
        finally:
            pki.stop()
