"""The users' side of the service mesh inside a Mininet testbed (adapter): each user host's client
sidecar and the request loops that call services through it. The workloads themselves (apps and their
sidecars) are run by the product's node agent inside each compute node (``edgectl agent``, started by
``mininet_topos.lab``), not here.

Nothing here reaches into the root namespace by IP: a client sidecar's xDS stream goes to the controller's
Unix socket (``edgectl run --xds-unix``), over mTLS with the host's SVID when the controller runs with
``--pki-dir``; its admin API is a Unix socket in the run directory. Paths are shared across network
namespaces; addresses are not.

    mesh = MeshTestbed(net, xds_socket="/tmp/run/xds.sock", run_dir=Path("/tmp/run"))
    mesh.start_client("u1", tls=XdsClientTls("u1.crt", "u1.key", "u1.bundle.pem"))  # users call 127.0.0.1:<port>
    load = mesh.start_load("u1", "web")           # a request loop through u1's sidecar
    ...
    mesh.stop()                                   # every process it started, by PID
"""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshctl.bootstrap import XdsClientTls, render_bootstrap
from meshctl.sidecar import EnvoySidecar, stop_process, unix_admin
from mininet_topos.loadgen import Record, parse_record

CHECKOUT = str(Path(__file__).resolve().parents[1])
"""mininet_topos is the testbed, used from the checkout, not installed with the product (the wheel)."""


def checkout_env() -> dict[str, str]:
    """This environment with the checkout first on PYTHONPATH, so ``python -m mininet_topos.app`` (and
    ``.loadgen``) in a node's namespace runs this checkout's code, whatever directory the lab runs in."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (CHECKOUT, env.get("PYTHONPATH", "")) if p)
    return env


@dataclass(slots=True)
class UserLoad:
    """A request loop (``mininet_topos.loadgen``) on a user host; its records arrive as they happen."""

    host: str
    service: str
    process: subprocess.Popen[bytes]
    records: list[Record] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    reader: threading.Thread | None = None

    def snapshot(self, since: float = 0.0) -> list[Record]:
        with self.lock:
            return [r for r in self.records if r.t >= since]

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            record = parse_record(raw.decode(errors="replace"))
            if record is not None:
                with self.lock:
                    self.records.append(record)

    def stop(self, timeout: float = 5.0) -> None:
        stop_process(self.process, timeout)
        if self.reader is not None:
            self.reader.join(timeout)


class MeshTestbed:
    def __init__(
        self,
        net: Any,
        *,
        xds_socket: str | Sequence[str],
        run_dir: Path,
        envoy_log_level: str = "warning",
    ) -> None:
        self.net = net
        self.xds_socket = xds_socket
        """The controller's xDS Unix socket; a replicated controller: each replica's (the sidecars list them all)."""
        self.run_dir = run_dir
        self._envoy_log_level = envoy_log_level
        self.clients: dict[str, EnvoySidecar] = {}
        self.loads: list[UserLoad] = []
        services = getattr(getattr(net, "spec", None), "services", ())
        self._service_ports = {s.name: s.port for s in services}

    @property
    def xds_addresses(self) -> list[str]:
        sockets = [self.xds_socket] if isinstance(self.xds_socket, str) else list(self.xds_socket)
        return [f"unix:{path}" for path in sockets]

    # -- sidecars --------------------------------------------------------------------------------------

    def start_client(self, host_id: str, tls: XdsClientTls | None = None) -> EnvoySidecar:
        """The client sidecar of a user host: its users call services at 127.0.0.1:<service port>.
        ``tls``: its mTLS to the xDS socket (the host's SVID), needed when the controller runs with
        ``--pki-dir``."""
        workdir = self.run_dir / host_id
        workdir.mkdir(parents=True, exist_ok=True)
        admin = workdir / "admin.sock"
        with contextlib.suppress(FileNotFoundError):
            admin.unlink()
        bootstrap = render_bootstrap(host_id, "users", xds_address=self.xds_addresses, admin_socket=str(admin), tls=tls)
        sidecar = EnvoySidecar(
            bootstrap, log_level=self._envoy_log_level, popen=self.net.get(host_id).popen, workdir=workdir
        ).start()
        self.clients[host_id] = sidecar
        return sidecar

    # -- users -----------------------------------------------------------------------------------------

    def start_load(self, host_id: str, service: str, rate: float = 50.0, timeout_s: float = 2.0) -> UserLoad:
        port = self._service_ports[service]
        command = [
            sys.executable,
            "-m",
            "mininet_topos.loadgen",
            "--url",
            f"http://127.0.0.1:{port}/",
            "--host",
            service,
            "--rate",
            str(rate),
            "--timeout",
            str(timeout_s),
        ]
        process = self.net.get(host_id).popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=checkout_env()
        )
        load = UserLoad(host_id, service, process)
        load.reader = threading.Thread(target=load._read, name=f"load-{host_id}", daemon=True)
        load.reader.start()
        self.loads.append(load)
        return load

    # -- teardown --------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything this testbed started, by PID: loads, then client sidecars."""
        for load in self.loads:
            load.stop()
        for sidecar in self.clients.values():
            sidecar.stop()
        self.clients.clear()


def admin_get(socket_path: str | Path, path: str, timeout: float = 1.0) -> str | None:
    """GET ``path`` from the Envoy admin API on a Unix socket (a node agent's ``w/<id>/admin.sock``); None
    when it does not answer (the sidecar is gone or not up yet)."""
    try:
        return unix_admin(str(socket_path), path, timeout)
    except (OSError, http.client.HTTPException):
        return None
