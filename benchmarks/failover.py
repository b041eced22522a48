"""Failover time: from a link going down in Mininet to the first packet on the backup path.

Diamond fabric (tests/data/fabrics/diamond.yaml) under `edgectl run`, h1 pinging h2 every
2 milliseconds over the 2 ms path s1-s2-s4. The s1-s2 link is taken down (`link s1 s2 down`); a raw
socket on s1's port towards s3 timestamps the first ICMP packet that takes the backup path. The
switch does that on its own with the fast-failover group; for comparison, the same run measures when
the controller's recomputed route (the baseline: reroute by the controller, as without groups)
shows up in /api/v1/routes. Prints a table and a JSON line of figures (last line).

Run as root: .venv/bin/python benchmarks/failover.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mininet_topos.controller_process import ControllerProcess, edgectl_run, free_port, mininet_testbed, wait_until  # noqa: E402

DIAMOND = REPO / "tests" / "data" / "fabrics" / "diamond.yaml"
ETH_P_ALL = 0x0003


def route_path(controller: ControllerProcess) -> list[str] | None:
    route = controller.route("h1", "h2")
    return route["path"] if route else None


def first_icmp_after(sock: socket.socket, since: float, timeout: float) -> float | None:
    """Timestamp of the first IPv4 ICMP frame sent out of the socket's interface after ``since``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            frame, address = sock.recvfrom(2048)
        except TimeoutError:
            return None
        now = time.monotonic()
        outgoing = address[2] == socket.PACKET_OUTGOING
        if outgoing and len(frame) > 23 and frame[12:14] == b"\x08\x00" and frame[23] == 1 and now >= since:
            return now
    return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    openflow_port = free_port()
    switch_ms: list[float] = []
    controller_ms: list[float] = []
    lost: list[int] = []
    with (
        edgectl_run(DIAMOND, openflow_port=openflow_port) as controller,
        mininet_testbed(DIAMOND, openflow_port) as net,
    ):
        wait_until(lambda: route_path(controller) == ["s1", "s2", "s4"], 40, what="route on the 2 ms path")
        h1 = net.get("h1")
        wait_until(lambda: "1 received" in h1.cmd("ping -c1 -W1 10.0.0.2"), 20, what="first ping")
        for _ in range(args.rounds):
            wait_until(lambda: route_path(controller) == ["s1", "s2", "s4"], 30, what="back on the 2 ms path")
            time.sleep(1)
            sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            sniffer.bind(("s1-eth2", 0))  # s1's port 2: towards s3, the backup path
            stream = h1.popen("ping -i 0.002 -c 2000 -w 10 -W 1 -q 10.0.0.2")  # 4 s, bounded by -w
            time.sleep(0.5)
            down_at = time.monotonic()
            net.configLinkStatus("s1", "s2", "down")
            first = first_icmp_after(sniffer, down_at, 5.0)
            wait_until(lambda: route_path(controller) == ["s1", "s3", "s4"], 10, interval=0.005, what="reroute")
            rerouted_at = time.monotonic()
            out, _ = stream.communicate(timeout=30)
            sniffer.close()
            summary = next(line for line in out.decode().splitlines() if "transmitted" in line)
            sent, received = (int(x.split()[0]) for x in summary.split(",")[:2])
            lost.append(sent - received)
            if first is not None:
                switch_ms.append((first - down_at) * 1000)
            controller_ms.append((rerouted_at - down_at) * 1000)
            net.configLinkStatus("s1", "s2", "up")
    figures = {
        "benchmark": "failover",
        "rounds": args.rounds,
        "fast_failover_ms_p50": round(statistics.median(switch_ms), 2) if switch_ms else None,
        "fast_failover_ms_max": round(max(switch_ms), 2) if switch_ms else None,
        "controller_reroute_ms_p50": round(statistics.median(controller_ms), 1),
        "controller_reroute_ms_max": round(max(controller_ms), 1),
        "pings_lost_at_2ms_p50": statistics.median(lost),
        "pings_lost_at_2ms_max": max(lost),
        "goal_ms": 50,
    }
    print(f"{'round':>5} {'first packet on backup (ms)':>28} {'controller reroute (ms)':>24} {'lost pings':>10}")
    for i, (s, c, n) in enumerate(zip(switch_ms, controller_ms, lost, strict=False)):
        print(f"{i:>5} {s:>28.2f} {c:>24.1f} {n:>10}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
