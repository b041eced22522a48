"""``edgectl run --pki-dir``: the placement API and the xDS TCP listener speak mTLS only; the placement
CLI gets in with an operator certificate (``--tls-cert/--tls-key/--tls-ca``) and not without one;
``edgectl pki rotate --controller`` (``POST /api/v1/pki/rotate``) rotates a served SVID at once and
revokes the old certificate. Revocations outlive the controller (``revoked.json`` in the CA directory),
and what ``edgectl pki rotate --dir`` revokes while it runs is refused by it. One controller process at
a time, stopped by PID."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509

from tests.integration.harness import REPO, edgectl_run, free_port, wait_until

pytestmark = pytest.mark.integration

FABRIC = REPO / "examples" / "edge-cloud.yaml"
TD = "edge.test"


def edgectl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgectl.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


def post(url: str, body: bytes) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_controller_with_pki_mtls_apis_and_forced_rotation(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    assert edgectl("pki", "init", "--trust-domain", TD, "--dir", str(ca_dir)).returncode == 0
    operator = tmp_path / "alice"
    issued = edgectl(
        "pki", "issue", "--dir", str(ca_dir), "--spiffe-id", f"spiffe://{TD}/operator/alice", "--out", str(operator)
    )
    assert issued.returncode == 0, issued.stderr
    alice_serial = format(x509.load_pem_x509_certificate(Path(f"{operator}.crt").read_bytes()).serial_number, "x")
    api, xds = free_port(), free_port()
    ports = ["--api-port", str(api), "--xds-port", str(xds)]
    with edgectl_run(FABRIC, "--pki-dir", str(ca_dir), "--svid-ttl", "600", *ports) as controller:
        tls = ["--tls-cert", f"{operator}.crt", "--tls-key", f"{operator}.key", "--tls-ca", f"{operator}.bundle.pem"]
        # /healthz answers before the gRPC servers are up: wait for the API.
        listed = wait_until(
            lambda: (
                (r := edgectl("workloads", "--api", f"127.0.0.1:{api}", "--output", "json", *tls)).returncode == 0 and r
            ),
            30,
            what="edgectl workloads over mTLS",
        )
        assert isinstance(json.loads(listed.stdout), dict)
        refused = edgectl("workloads", "--api", f"127.0.0.1:{api}", "--rpc-timeout", "3")
        assert refused.returncode == 1 and "cannot reach" in refused.stderr, refused.stderr

        before = controller.get_json("/api/v1/identities")
        row = before["identities"][0]
        rotated = edgectl(
            "pki", "rotate", "--controller", f"127.0.0.1:{controller.http_port}", "--spiffe-id", row["spiffe_id"]
        )
        assert rotated.returncode == 0, rotated.stderr
        assert row["subject"] in rotated.stdout
        after = controller.get_json("/api/v1/identities")
        new_row = next(r for r in after["identities"] if r["subject"] == row["subject"])
        assert new_row["serial"] != row["serial"]
        assert row["serial"] in after["revoked_serials"]
        # At once again: refused (each forced rotation adds revoked serials), with when to retry.
        code, body = post(f"{controller.http}/api/v1/pki/rotate", json.dumps({"spiffe_id": row["spiffe_id"]}).encode())
        assert code == 429 and float(str(body["retry_after_s"])) > 0, body

        # Bad requests get a reason, not a traceback.
        url = f"{controller.http}/api/v1/pki/rotate"
        assert post(url, b"not json")[0] == 400
        assert post(url, b"{}")[0] == 400
        code, body = post(url, json.dumps({"spiffe_id": f"spiffe://{TD}/host/nobody"}).encode())
        assert code == 400 and "nothing to rotate" in str(body["error"])
        unknown = edgectl(
            "pki",
            "rotate",
            "--controller",
            f"127.0.0.1:{controller.http_port}",
            "--spiffe-id",
            f"spiffe://{TD}/host/nobody",
        )
        assert unknown.returncode == 1 and "refused" in unknown.stderr

        # The CA directory's own command (`pki rotate --dir`) revokes the operator's certificate while the
        # controller runs: the controller takes it in from revoked.json, and the placement API refuses it.
        offline = edgectl("pki", "rotate", "--dir", str(ca_dir), "--spiffe-id", f"spiffe://{TD}/operator/alice")
        assert offline.returncode == 0, offline.stderr
        workloads = ["workloads", "--api", f"127.0.0.1:{api}", "--rpc-timeout", "3", *tls]
        denied = wait_until(
            lambda: (r := edgectl(*workloads)).returncode == 1 and r, 15, what="the revoked operator refused"
        )
        assert "revoked" in denied.stderr, denied.stderr
        revoked = controller.get_json("/api/v1/identities")["revoked_serials"]
        assert {row["serial"], alice_serial} <= set(revoked)
        # Both revocations are in the CA directory (each writer kept the other's).
        on_disk = json.loads((ca_dir / "revoked.json").read_text())["serials"]
        assert {row["serial"], alice_serial} <= set(on_disk)

    # A restarted controller still refuses both: the forced rotation's old certificate, and the operator's.
    with edgectl_run(FABRIC, "--pki-dir", str(ca_dir), "--svid-ttl", "600", *ports) as again:
        revoked = again.get_json("/api/v1/identities")["revoked_serials"]
        assert {row["serial"], alice_serial} <= set(revoked)
        denied = wait_until(
            lambda: (r := edgectl(*workloads)).returncode == 1 and "revoked" in r.stderr and r,
            30,
            what="the revoked operator refused after a restart",
        )
