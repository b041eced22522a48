"""Packet-in -> response throughput: edgectl against os-ken's simple_switch_13, same machine, same
load generator (benchmarks/ofp_loadgen.py, a fake switch in its own process keeping a window of
packet-ins outstanding).

edgectl answers ARP requests as a proxy (a packet-out per packet-in); simple_switch_13 learns MACs and
answers with a flow-mod plus a packet-out. Both run os-ken on native threads in their own process.
Prints a table and a JSON line of figures (last line).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mininet_topos.controller_process import edgectl_run, free_port  # noqa: E402

SECONDS, WINDOW = 5.0, 32
FABRIC = """
name: bench
sites: [{id: lab, tier: edge, region: lab}]
switches: [{id: s1, dpid: 1, site: lab}]
hosts:
  - {id: a, switch: s1, port: 1, ip: 10.0.0.1, mac: "02:00:00:00:00:01"}
  - {id: b, switch: s1, port: 2, ip: 10.0.0.2, mac: "02:00:00:00:00:02"}
"""


def load(port: int, mode: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "ofp_loadgen.py"), str(port), mode, str(SECONDS), str(WINDOW)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def run_baseline() -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "benchmarks" / "baselines" / "run_osken_app.py"),
            str(port),
            "benchmarks.baselines.simple_switch_13",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        time.sleep(1.5)
        return load(port, "l2")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_edgectl() -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(FABRIC)
    port = free_port()
    try:
        with edgectl_run(handle.name, openflow_port=port):
            return load(port, "arp")
    finally:
        os.unlink(handle.name)


def main() -> int:
    baseline = run_baseline()
    ours = run_edgectl()
    print(f"{'controller':<28} {'packet-ins/s answered':>22} {'flow-mods':>10}")
    print(f"{'os-ken simple_switch_13':<28} {baseline['per_second']:>22.0f} {baseline['flow_mods']:>10}")
    print(f"{'edgectl (proxy ARP)':<28} {ours['per_second']:>22.0f} {ours['flow_mods']:>10}")
    figures = {
        "benchmark": "packet_in",
        "window": WINDOW,
        "seconds": SECONDS,
        "edgectl_per_s": ours["per_second"],
        "simple_switch_13_per_s": baseline["per_second"],
        "ratio": round(ours["per_second"] / baseline["per_second"], 2) if baseline["per_second"] else None,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
