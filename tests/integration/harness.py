"""Helpers for integration tests: a real `edgectl run` process and real OVS bridges.

Everything started here is stopped here, by PID or by the exact name it was created with. Starting
`edgectl run` (and a Mininet testbed on it) is shared with the lab and the benchmarks:
``mininet_topos.controller_process``; re-exported here for the tests.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from mininet_topos.controller_process import (
    REPO,
    ControllerProcess,
    edgectl_run,
    free_port,
    http_get,
    mininet_testbed,
    wait_until,
)

__all__ = [
    "REPO",
    "ControllerProcess",
    "bridge_connected",
    "declaring_replicas",
    "edgectl_run",
    "explained_on_failure",
    "flow_durations",
    "free_port",
    "http_get",
    "mininet_testbed",
    "ofctl",
    "ovs",
    "ovs_bridge",
    "ping_summary",
    "port_tx_packets",
    "wait_until",
]


@contextlib.contextmanager
def explained_on_failure(
    controller: Callable[[], ControllerProcess], bridges: tuple[str, ...], log_lines: int = 150
) -> Iterator[None]:
    """On a failure inside, print the end of the log of the controller running then (``controller()``:
    a test may restart it) and each bridge's groups and flows (pytest shows a failed test's output),
    then let the failure go on: a fault seen once under load says what the controller saw and did."""
    try:
        yield
    except BaseException:
        print(f"--- controller log (last {log_lines} lines)")
        try:
            print("\n".join(controller().log().splitlines()[-log_lines:]))
        except OSError as exc:  # (its log gone with it): the failure itself must still show
            print(f"no log: {exc}")
        for bridge in bridges:
            for what in ("dump-groups", "dump-flows"):
                try:
                    print(f"--- {what} {bridge}\n{ofctl(what, bridge)}")
                except subprocess.CalledProcessError as exc:
                    print(f"--- {what} {bridge} failed: {exc.stderr}")
        raise


def declaring_replicas(fabric: Path, directory: Path, replicas: int = 0) -> Path:
    """A copy of ``fabric`` in ``directory`` whose services each declare ``replicas`` (0: the controller
    places none of its own, for tests that place every instance themselves through the API)."""
    text = fabric.read_text()
    changed, count = re.subn(r"\breplicas: *\d+", f"replicas: {replicas}", text)
    assert count, f"{fabric} declares no replicas"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{fabric.stem}-replicas-{replicas}{fabric.suffix}"
    path.write_text(changed)
    return path


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
