"""``edgectl run --pki-dir``: the placement API and the xDS TCP listener speak mTLS only; the placement
CLI gets in with an operator certificate (``--tls-cert/--tls-key/--tls-ca``) and not without one;
``edgectl pki rotate --controller`` (``POST /api/v1/pki/rotate``) rotates a served SVID at once and
revokes the old certificate. One controller process, stopped by PID."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

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
