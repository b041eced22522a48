"""Real Envoys started from `edgectl mesh bootstrap` output: all five types ACKed (SotW and delta),
a request through a client sidecar and a server sidecar over mTLS, /config_dump as served, callers
restricted by SPIFFE id."""

from __future__ import annotations

import socket
import ssl
import tempfile
from pathlib import Path

import pytest

from meshctl.snapshot import MeshConfig, TlsIdentity
from tests.integration.harness import free_port
from tests.integration.test_xds_harness import (
    NODE_IPS,
    backends,
    get,
    make_pki,
    make_workload,
    mesh,
    port_open,
    wait_until,
)

pytestmark = pytest.mark.integration

ALL_TYPES = {"sds", "cds", "eds", "lds", "rds"}


def tls_request(pki, name: str, ip: str, port: int) -> str:
    """An HTTP request over mTLS with ``name``'s certificate; what came back ("" if refused)."""
    cert, key = pki.leaves[name]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=pki.ca_pem)
    with tempfile.TemporaryDirectory(prefix="edgectl-tls-") as directory:
        workdir = Path(directory)
        (workdir / "cert.pem").write_text(cert)
        (workdir / "key.pem").write_text(key)
        context.load_cert_chain(workdir / "cert.pem", workdir / "key.pem")
    try:
        with socket.create_connection((ip, port), timeout=3) as raw, context.wrap_socket(raw) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
            chunks = []
            while chunk := conn.recv(4096):
                chunks.append(chunk)
            return b"".join(chunks).decode(errors="replace")
    except (ssl.SSLError, ConnectionError, OSError):
        return ""


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_sidecars_ack_all_five_types_and_carry_a_request_over_mtls(delta: bool) -> None:
    pki = make_pki(
        {
            "u1": "spiffe://edgectl.local/host/u1",
            "web-1": "spiffe://edgectl.local/svc/web",
            "intruder": "spiffe://edgectl.local/svc/intruder",
        }
    )
    identities = {name: TlsIdentity(*pki.leaves[name]) for name in ("u1", "web-1")}
    config = MeshConfig(mtls=True, trust_bundle_pem=pki.ca_pem, identities=identities)
    app_port = free_port()
    with mesh(config) as m, backends(("web-app", "127.0.0.1", app_port)) as [app]:
        m.place(make_workload("web-1", "web", "n1", app_port))
        server_side = m.envoy("web-1", "web", delta)
        client_side = m.envoy("u1", "users", delta)
        wait_until(lambda: m.acked_types("u1") == ALL_TYPES, 10, "u1 to ACK all five types")
        wait_until(lambda: {"sds", "cds", "lds"} <= m.acked_types("web-1"), 10, "web-1 to ACK its types")
        wait_until(lambda: port_open(NODE_IPS["n1"], app_port), 10, "the inbound listener")

        # u1's app -> u1's sidecar (out/<port>) -> mTLS -> web-1's sidecar (in/web-1) -> the app.
        _status, body = wait_until(lambda: (r := get(m.web_port))[0] == 200 and r, 10, "a request through both")
        assert body == "web-app"
        assert "URI=spiffe://edgectl.local/host/u1" in app.identities[-1]  # the app learns its caller

        # /config_dump holds exactly what the server sent, at the versions it reports as ACKed.
        view = m.node_view("u1")
        assert view["in_sync"] and view["mode"] == ("delta" if delta else "sotw")
        versions = client_side.dynamic_versions()
        out = f"out/{m.web_port}"
        # Users call the entry services: web and hello (nobody else calls them).
        assert set(versions["clusters"]) == {"svc/web", "svc/hello"}
        assert set(versions["listeners"]) == {out, f"out/{m.hello_port}"}
        assert set(versions["routes"]) == {out, f"out/{m.hello_port}"}
        assert set(versions["secrets"]) == {"identity", "trust-bundle"}
        if not delta:  # delta carries versions per resource; SotW per type
            assert versions["clusters"]["svc/web"] == view["types"]["cds"]["acked"]
            assert versions["routes"][out] == view["types"]["rds"]["acked"]
        dump = client_side.admin("/config_dump?include_eds")
        assert f'"address": "{NODE_IPS["n1"]}"' in dump and f'"port_value": {app_port}' in dump
        assert "spiffe://edgectl.local/svc/web" in dump  # the server identity the cluster checks
        server_versions = server_side.dynamic_versions()
        assert set(server_versions["listeners"]) == {"in/web-1"}
        assert set(server_versions["clusters"]) == {"local/web-1"}

        # The inbound listener admits only callers with an allowed SPIFFE id.
        assert "200 OK" in tls_request(pki, "u1", NODE_IPS["n1"], app_port)
        assert "200 OK" not in tls_request(pki, "intruder", NODE_IPS["n1"], app_port)
        hits = app.hits
        with pytest.raises(OSError):  # plaintext is refused too
            get(app_port, host=NODE_IPS["n1"], timeout=1)
        assert app.hits == hits


@pytest.mark.parametrize(
    "argv",
    [
        ["--node-id", "web-1", "--service", "web"],
        ["--node-id", "u1", "--service", "users", "--delta", "--xds-address", "unix:/run/edgectl/xds.sock"],
        ["--node-id", "u2", "--service", "users", "--format", "json", "--xds-address", "controller:18000"],
    ],
    ids=["sotw-tcp", "delta-unix", "json-dns"],
)
def test_edgectl_mesh_bootstrap_output_is_valid_for_envoy(argv: list[str], tmp_path: Path) -> None:
    import contextlib
    import io
    import subprocess

    from meshctl.bootstrap import main_bootstrap
    from meshctl.sidecar import find_envoy

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main_bootstrap(argv) == 0
    config = tmp_path / ("bootstrap.json" if "json" in argv else "bootstrap.yaml")
    config.write_text(out.getvalue())
    checked = subprocess.run(
        [find_envoy(), "--mode", "validate", "-c", str(config), "--disable-hot-restart", "-l", "error"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
