"""Helpers for integration tests: a real `edgectl run` process and real OVS bridges.

Everything started here is stopped here, by PID or by the exact name it was created with.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(predicate: Any, timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # keep polling; report the last failure on timeout
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f": {last_error}" if last_error else ""))


@dataclass
class ControllerProcess:
    process: subprocess.Popen[bytes]
    openflow_port: int
    http_port: int
    log_path: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def get_json(self, path: str) -> Any:
        status, body = http_get(self.http + path)
        assert status == 200, f"GET {path}: {status} {body[:200]!r}"
        return json.loads(body)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def route(self, src: str, dst: str) -> dict[str, Any] | None:
        """The controller's route from endpoint src to dst in /api/v1/routes, if it has one."""
        routes = self.get_json("/api/v1/routes")["routes"]
        return next((r for r in routes if r["src"] == src and r["dst"] == dst), None)

    def wait_fabric_ready(self, src: str, dst: str, timeout: float = 40) -> None:
        """Every switch connected, every link discovered, and a route from src to dst."""

        def topology() -> Any:
            return self.get_json("/api/v1/topology")

        wait_until(lambda: all(s["connected"] for s in topology()["switches"]), timeout, what="switches connected")
        wait_until(lambda: all(x["discovered"] for x in topology()["links"]), timeout, what="links discovered")
        wait_until(lambda: self.route(src, dst), timeout, what=f"route {src} -> {dst}")

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return int(self.process.returncode)


@contextlib.contextmanager
def edgectl_run(
    fabric_file: str | Path, *extra: str, openflow_port: int | None = None, http_port: int | None = None
) -> Iterator[ControllerProcess]:
    """Start `edgectl run` on free ports; wait for /healthz; always stop it by PID."""
    openflow_port = openflow_port or free_port()
    http_port = http_port or free_port()
    log_file = tempfile.NamedTemporaryFile(prefix="edgectl-run-", suffix=".log", delete=False)  # noqa: SIM115 - outlives the block
    cmd = [
        sys.executable,
        "-m",
        "edgectl.cli",
        "run",
        "--config",
        str(fabric_file),
        "--openflow-port",
        str(openflow_port),
        "--http-port",
        str(http_port),
        *extra,
    ]
    # Every server on a free port unless the test chose one: the defaults (18000, 50051) clash between runs.
    for flag in ("--xds-port", "--api-port"):
        if flag not in extra:
            cmd += [flag, str(free_port())]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    controller = ControllerProcess(process, openflow_port, http_port, Path(log_file.name))
    try:
        wait_until(
            lambda: http_get(controller.http + "/healthz", 0.5)[0] == 200 or process.poll() is not None,
            timeout=15,
            what="edgectl /healthz",
        )
        assert process.poll() is None, f"edgectl run exited early:\n{controller.log()}"
        yield controller
    finally:
        controller.stop()
        log_file.close()


def ovs(*args: str) -> str:
    return subprocess.run(["ovs-vsctl", "--timeout=10", *args], check=True, capture_output=True, text=True).stdout


@contextlib.contextmanager
def ovs_bridge(name: str, dpid: int, controller_port: int, scheme: str = "tcp") -> Iterator[str]:
    """A userspace-datapath OVS bridge speaking OpenFlow 1.3 to ``<scheme>:127.0.0.1:<port>``
    (``ssl`` for TLS); always deleted, by its name."""
    try:
        ovs(
            "--may-exist", "add-br", name,
            "--", "set", "bridge", name, "datapath_type=netdev", "protocols=OpenFlow13",
            f"other-config:datapath-id={dpid:016x}", "fail-mode=secure",
            "--", "set-controller", name, f"{scheme}:127.0.0.1:{controller_port}",
        )  # fmt: skip
        # Retry quickly: OVS backs off up to 8 s between connection attempts by default.
        ovs("set", "controller", name, "max_backoff=1000")
        yield name
    finally:
        subprocess.run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", name], check=False)


def bridge_connected(name: str) -> bool:
    return ovs("get", "controller", name, "is_connected").strip() == "true"


# -- Mininet testbeds ---------------------------------------------------------------------------


@contextlib.contextmanager
def mininet_testbed(fabric_file: str | Path, openflow_port: int, **build_args: Any) -> Iterator[Any]:
    """A started Mininet testbed from a fabric file; always stopped (net.stop removes what it made)."""
    from mininet.log import setLogLevel

    import mininet_topos

    setLogLevel("warning")
    net = mininet_topos.build(str(fabric_file), controller=("127.0.0.1", openflow_port), **build_args)
    try:
        net.start()
        yield net
    finally:
        net.stop()


def ofctl(*args: str) -> str:
    return subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", *args], check=True, capture_output=True, text=True).stdout


def port_tx_packets(bridge: str) -> dict[int, int]:
    """tx_packets per OpenFlow port, as the switch counts them."""
    out: dict[int, int] = {}
    port = None
    for line in ofctl("dump-ports", bridge).splitlines():
        line = line.strip()
        if line.startswith("port"):
            head = line.split(":")[0].split()[-1]
            port = int(head) if head.isdigit() else None
        elif line.startswith("tx pkts=") and port is not None:
            out[port] = int(line.split("=")[1].split(",")[0])
    return out


def flow_durations(bridge: str) -> dict[str, float]:
    """Duration of each flow edgectl owns, keyed by cookie+match (to see that nothing was flushed)."""
    out = {}
    for line in ofctl("dump-flows", bridge).splitlines():
        line = line.strip()
        if not line.startswith("cookie=0xec"):
            continue
        fields = dict(part.split("=", 1) for part in line.split(", ") if "=" in part and " " not in part.split("=")[0])
        duration = float(fields["duration"].rstrip("s"))
        match = line.split("priority=")[1].split(" actions")[0]
        out[fields["cookie"] + " " + match] = duration
    return out


def ping_summary(output: str) -> tuple[int, int]:
    """(transmitted, received) from ping's summary line."""
    for line in output.splitlines():
        if "packets transmitted" in line:
            parts = line.split(",")
            return int(parts[0].split()[0]), int(parts[1].split()[0])
    raise AssertionError(f"no ping summary in {output!r}")
