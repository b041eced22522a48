"""OpenFlow over TLS: real OVS (``ssl:`` controller target) and a real ``edgectl run --pki-dir DIR
--openflow-tls``, every certificate from edgectl's CA.

``ovs-vsctl set-ssl`` is global to the OVS instance: each test saves what was there and restores it (or
``del-ssl``) in a ``finally``. Every bridge and process started here is removed by its name or PID.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import REPO, edgectl_run, free_port, ovs_bridge, wait_until

pytestmark = [
    pytest.mark.integration,
]


# -- OVS -------------------------------------------------------------------------------------------


def ovs(*args: str) -> str:
    return subprocess.run(["ovs-vsctl", "--timeout=10", *args], check=True, capture_output=True, text=True).stdout


def _current_ssl() -> tuple[str, str, str, bool] | None:
    """OVS's global SSL settings (key, cert, CA cert, bootstrap), or None when unset."""
    fields: dict[str, str] = {}
    for line in ovs("get-ssl").splitlines():
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    if not fields.get("Private key"):
        return None
    return fields["Private key"], fields["Certificate"], fields["CA Certificate"], fields.get("Bootstrap") == "true"


@contextlib.contextmanager
def ovs_ssl(key: Path, cert: Path, ca_cert: Path) -> Iterator[None]:
    """Set OVS's (global) SSL files for the block; put back what was there before, whatever happens."""
    before = _current_ssl()
    try:
        ovs("set-ssl", str(key), str(cert), str(ca_cert))
        yield
    finally:
        if before is None:
            subprocess.run(["ovs-vsctl", "--timeout=10", "del-ssl"], check=False)
        else:
            old_key, old_cert, old_ca, bootstrap = before
            extra = ["--bootstrap"] if bootstrap else []
            subprocess.run(["ovs-vsctl", "--timeout=10", "set-ssl", *extra, old_key, old_cert, old_ca], check=False)


def ssl_bridge(dpid: int, port: int) -> contextlib.AbstractContextManager[str]:
    """A bridge with a unique name whose controller is ``ssl:127.0.0.1:<port>``; always deleted."""
    return ovs_bridge(f"pkis{uuid.uuid4().hex[:8]}", dpid, port, scheme="ssl")


def controller_status(bridge: str) -> dict[str, str]:
    """is_connected and status (last_error, state) of the bridge's controller, as OVS reports them."""
    raw = ovs("--format=list", "--columns=is_connected,status", "list", "controller", bridge)
    out: dict[str, str] = {}
    for line in raw.splitlines():
        name, _, value = line.partition(":")
        out[name.strip()] = value.strip()
    return out


# -- tests -----------------------------------------------------------------------------------------

FABRIC = REPO / "examples" / "edge-cloud.yaml"
DPID = 0xA1  # ea1 in the example fabric


@pytest.fixture
def pki_material(tmp_path: Path) -> dict[str, Any]:
    from pki.ca import CertificateAuthority
    from pki.tls import switch_tls

    now = time.time()
    ca = CertificateAuthority.init(tmp_path / "ca", "edge.test")
    # A foreign CA for the same trust domain name: the most convincing impostor.
    foreign, _root_key = CertificateAuthority.create("edge.test", now=now)
    return {
        "ca_dir": tmp_path / "ca",
        "switch": switch_tls(ca, tmp_path / "switch", DPID, now),
        "foreign_switch": switch_tls(foreign, tmp_path / "foreign", DPID, now),
        "foreign_bundle": tmp_path / "foreign" / "ca.pem",
    }


def tls_controller(material: dict[str, Any], port: int) -> Any:
    return edgectl_run(FABRIC, "--pki-dir", str(material["ca_dir"]), "--openflow-tls", openflow_port=port)


def test_ovs_connects_over_tls_with_a_switch_cert_from_this_ca(pki_material: dict[str, Any]) -> None:
    switch = pki_material["switch"]
    port = free_port()
    with (
        tls_controller(pki_material, port) as controller,
        ovs_ssl(switch.private_key, switch.certificate, switch.ca_certs),
        ssl_bridge(DPID, port) as bridge,
    ):
        wait_until(lambda: controller_status(bridge).get("is_connected") == "true", 30, what="OVS connected over TLS")

        def ea1() -> dict[str, Any]:
            return {s["dpid"]: s for s in controller.get_json("/api/v1/topology")["switches"]}[f"{DPID:016x}"]

        wait_until(lambda: ea1()["connected"], 15, what="ea1 connected in the API")
        assert ea1()["id"] == "ea1"


def test_switch_with_a_foreign_ca_cert_is_refused(pki_material: dict[str, Any]) -> None:
    foreign, ours = pki_material["foreign_switch"], pki_material["switch"]
    port = free_port()
    # The switch trusts our CA (so it would accept the controller) but shows a foreign certificate.
    with (
        tls_controller(pki_material, port) as controller,
        ovs_ssl(foreign.private_key, foreign.certificate, ours.ca_certs),
        ssl_bridge(DPID, port) as bridge,
    ):
        time.sleep(4)  # several connection attempts (max_backoff 1 s)
        assert controller_status(bridge).get("is_connected") == "false"
        log = controller.log()
        assert "switch 00000000000000a1 connected" not in log
        refusals = [line for line in log.splitlines() if "TLS handshake with" in line and "refused" in line]
        # Every attempt is refused; the reason is the certificate (under load an attempt can also time out
        # in the handshake, which is a refusal too).
        assert any("CERTIFICATE_VERIFY_FAILED" in line for line in refusals), log[-3000:]


def test_switch_refuses_a_controller_it_cannot_verify(pki_material: dict[str, Any]) -> None:
    switch, foreign_bundle = pki_material["switch"], pki_material["foreign_bundle"]
    port = free_port()
    # A genuine switch certificate, but the switch trusts only a foreign CA: it must not talk to us.
    with (
        tls_controller(pki_material, port) as controller,
        ovs_ssl(switch.private_key, switch.certificate, foreign_bundle),
        ssl_bridge(DPID, port) as bridge,
    ):
        time.sleep(4)
        assert controller_status(bridge).get("is_connected") == "false"
        log = controller.log()
        assert "switch 00000000000000a1 connected" not in log
        # The switch aborts the handshake with an "unknown CA" alert, which the controller logs.
        assert any("TLS handshake with" in line and "UNKNOWN_CA" in line.upper() for line in log.splitlines()), log[
            -3000:
        ]
