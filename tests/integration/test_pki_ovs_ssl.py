"""OpenFlow over TLS: real OVS (``ssl:`` controller target) and real os-ken, certificates from edgectl's CA.

The listener is os-ken started the way ``sdnctl/runtime.py`` starts it, in a subprocess (this module run
as a script), with os-ken's own TLS options set (``ctl_privkey``, ``ctl_cert``, ``ca_certs``,
``ofp_ssl_listen_port``): what ``start_openflow(..., tls=TlsFiles)`` will do once wired.

Set ``PKI_TEST_LOG=DEBUG`` to see os-ken's handshake with each switch in a failure's output.

``ovs-vsctl set-ssl`` is global to the OVS instance: each test saves what was there and restores it (or
``del-ssl``) in a ``finally``. Every bridge and process started here is removed by its name or PID.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("ovs-vsctl") is None, reason="needs Open vSwitch (ovs-vsctl)"),
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


@contextlib.contextmanager
def ssl_bridge(dpid: int, port: int) -> Iterator[str]:
    """A userspace bridge with a unique name whose controller is ``ssl:127.0.0.1:<port>``; always deleted."""
    name = f"pkis{uuid.uuid4().hex[:8]}"
    try:
        ovs(
            "add-br",
            name,
            "--",
            "set",
            "bridge",
            name,
            "datapath_type=netdev",
            "protocols=OpenFlow13",
            f"other-config:datapath-id={dpid:016x}",
            "fail-mode=secure",
            "--",
            "set-controller",
            name,
            f"ssl:127.0.0.1:{port}",
        )
        ovs("set", "controller", name, "max_backoff=1000")  # retry within a second, not 8
        yield name
    finally:
        subprocess.run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", name], check=False)


def controller_status(bridge: str) -> dict[str, str]:
    """is_connected and status (last_error, state) of the bridge's controller, as OVS reports them."""
    raw = ovs("--format=list", "--columns=is_connected,status", "list", "controller", bridge)
    out: dict[str, str] = {}
    for line in raw.splitlines():
        name, _, value = line.partition(":")
        out[name.strip()] = value.strip()
    return out


# -- the TLS OpenFlow listener (os-ken in a subprocess) ---------------------------------------------


@dataclass
class Listener:
    process: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        for line in self.seen:
            if line.startswith(prefix):
                return line
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} line from the listener in {timeout}s; got:\n" + "\n".join(self.seen))

    def drain(self) -> list[str]:
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return self.seen


@contextlib.contextmanager
def tls_openflow_listener(port: int, key: Path, cert: Path, ca_certs: Path) -> Iterator[Listener]:
    cmd = [
        sys.executable,
        "-u",
        "-m",
        "tests.integration.test_pki_ovs_ssl",
        str(port),
        str(key),
        str(cert),
        str(ca_certs),
    ]
    process = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ}
    )
    listener = Listener(process)

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            listener.lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, name="listener-output", daemon=True).start()
    try:
        listener.wait_for("listening", 20)
        yield listener
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- tests -----------------------------------------------------------------------------------------


@pytest.fixture
def pki_material(tmp_path: Path) -> dict[str, object]:
    from pki.ca import CertificateAuthority
    from pki.tls import openflow_controller_tls, switch_tls

    now = time.time()
    ca = CertificateAuthority.init(tmp_path / "ca", "edge.test")
    # A foreign CA for the same trust domain name: the most convincing impostor.
    foreign, _root_key = CertificateAuthority.create("edge.test", now=now)
    return {
        "ca": ca,
        "controller": openflow_controller_tls(ca, tmp_path / "controller", now),
        "switch": switch_tls(ca, tmp_path / "switch", 0xC0FFEE, now),
        "foreign_switch": switch_tls(foreign, tmp_path / "foreign", 0xC0FFEE, now),
        "foreign_bundle": (tmp_path / "foreign" / "ca.pem"),
    }


def test_ovs_connects_over_tls_with_a_switch_cert_from_this_ca(pki_material: dict[str, object]) -> None:
    from pki.tls import TlsFiles

    controller, switch = pki_material["controller"], pki_material["switch"]
    assert isinstance(controller, TlsFiles) and isinstance(switch, TlsFiles)
    port = free_port()
    with (
        tls_openflow_listener(port, controller.private_key, controller.certificate, controller.ca_certs) as listener,
        ovs_ssl(switch.private_key, switch.certificate, switch.ca_certs),
        ssl_bridge(0xC0FFEE, port) as bridge,
    ):
        line = listener.wait_for("connected 0000000000c0ffee", 30)
        assert line
        peer = listener.wait_for("peer ", 5)
        assert "spiffe://edge.test/switch/0000000000c0ffee" in peer, peer
        deadline = time.monotonic() + 10
        while controller_status(bridge).get("is_connected") != "true" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert controller_status(bridge)["is_connected"] == "true"


def test_switch_with_a_foreign_ca_cert_is_refused(pki_material: dict[str, object]) -> None:
    from pki.tls import TlsFiles

    controller, foreign = pki_material["controller"], pki_material["foreign_switch"]
    assert isinstance(controller, TlsFiles) and isinstance(foreign, TlsFiles)
    port = free_port()
    # The switch trusts our CA (so it would accept the controller) but shows a foreign certificate.
    with (
        tls_openflow_listener(port, controller.private_key, controller.certificate, controller.ca_certs) as listener,
        ovs_ssl(foreign.private_key, foreign.certificate, controller.ca_certs),
        ssl_bridge(0xC0FFEE, port) as bridge,
    ):
        time.sleep(4)  # several connection attempts (max_backoff 1 s)
        lines = listener.drain()
        assert not [line for line in lines if line.startswith("connected")], lines
        assert controller_status(bridge).get("is_connected") == "false"
        refusals = [line for line in lines if "TLS handshake with" in line and "refused" in line]
        assert refusals and all("CERTIFICATE_VERIFY_FAILED" in line for line in refusals), lines


def test_switch_refuses_a_controller_it_cannot_verify(pki_material: dict[str, object]) -> None:
    from pki.tls import TlsFiles

    controller, switch = pki_material["controller"], pki_material["switch"]
    foreign_bundle = pki_material["foreign_bundle"]
    assert isinstance(controller, TlsFiles) and isinstance(switch, TlsFiles) and isinstance(foreign_bundle, Path)
    port = free_port()
    # A genuine switch certificate, but the switch trusts only a foreign CA: it must not talk to us.
    with (
        tls_openflow_listener(port, controller.private_key, controller.certificate, controller.ca_certs) as listener,
        ovs_ssl(switch.private_key, switch.certificate, foreign_bundle),
        ssl_bridge(0xC0FFEE, port) as bridge,
    ):
        time.sleep(4)
        lines = listener.drain()
        assert not [line for line in lines if line.startswith("connected")], lines
        assert controller_status(bridge).get("is_connected") == "false"
        # The switch aborts the handshake with an "unknown CA" alert, which the listener logs.
        assert any("TLS handshake with" in line and "UNKNOWN_CA" in line.upper() for line in lines), lines


# -- the listener process ----------------------------------------------------------------------------


def log_tls_handshake_failures(controller_module: Any) -> None:
    """One log line per refused TLS handshake (the wiring proposed for sdnctl/runtime.py).

    os-ken runs ``ctx.wrap_socket`` (the handshake) in a per-connection hub thread, and the native hub
    swallows every exception there (its ``TaskExit`` is ``Exception``): a switch refused for a foreign
    certificate would leave no trace. The listener looks ``StreamServer`` up in the controller module
    when it starts, so a subclass placed there wraps each connection's handler.
    """
    import logging

    log = logging.getLogger("edgectl.sdnctl.runtime")

    class HandshakeLoggingServer(controller_module.StreamServer):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            handle = self.handle

            def logged(sock: Any, address: Any) -> None:
                try:
                    handle(sock, address)
                except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError) as exc:  # a probe; a hang-up
                    log.debug("TLS connection from %s ended in the handshake: %s", address, exc)
                    sock.close()
                except (ssl.SSLError, OSError) as exc:
                    log.warning("TLS handshake with %s refused: %s", address, exc)
                    sock.close()

            self.handle = logged

    controller_module.StreamServer = HandshakeLoggingServer


def serve(port: int, key: str, cert: str, ca_certs: str) -> None:
    """os-ken as sdnctl/runtime.py starts it, plus its TLS options; prints what a test waits for."""
    import logging

    logging.basicConfig(
        level=getattr(logging, os.environ.get("PKI_TEST_LOG", "INFO")),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    os.environ["OSKEN_HUB_TYPE"] = "native"
    from os_ken.base import app_manager  # noqa: F401, I001 - must come first (os-ken circular import)
    from os_ken import cfg
    from os_ken.controller import controller

    from edgectl.bus import EventBus
    from netmodel.state import FabricState
    from pki.tls import peer_uri_sans
    from sdnctl.runtime import start_openflow

    # These overrides survive start_openflow's cfg.CONF(args=[]) call. With ctl_privkey and ctl_cert
    # set, os-ken listens with TLS only, on ofp_ssl_listen_port.
    for name, value in (("ctl_privkey", key), ("ctl_cert", cert), ("ca_certs", ca_certs)):
        cfg.CONF.set_override(name, value)
    cfg.CONF.set_override("ofp_ssl_listen_port", port)

    # Report the SPIFFE id in each switch's (verified) certificate. Wrapping __init__, not subclassing:
    # os-ken's Datapath calls super(Datapath, self), which a replaced module global would break.
    original_init = controller.Datapath.__init__

    def identified_init(self: object, sock: ssl.SSLSocket, address: object) -> None:
        print(f"peer {address} {' '.join(peer_uri_sans(sock.getpeercert()))}", flush=True)
        original_init(self, sock, address)

    controller.Datapath.__init__ = identified_init
    log_tls_handshake_failures(controller)
    bus = EventBus(FabricState())
    bus.start()
    runtime = start_openflow("127.0.0.1", port, bus.publish, lambda: bus.state)
    print("listening", flush=True)
    known: set[int] = set()
    while True:
        # Not runtime.connected_switches(): it takes app._lock and then app.datapaths takes it again
        # (a non-reentrant lock), which deadlocks and then stalls the app's handlers.
        now_connected = set(runtime.app.datapaths)
        for dpid in sorted(now_connected - known):
            print(f"connected {dpid:016x}", flush=True)
        known = now_connected
        time.sleep(0.05)


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
