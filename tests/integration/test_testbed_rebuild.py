"""A testbed rebuilt under a running controller: its hosts come back with new MACs and stay the hosts
the fabric file declares (no second, MAC-named host at the same address and port).

Real `edgectl run`, OVS and Mininet. The fabric gives its hosts no MAC, so Mininet picks new ones on
each build. Names are unusual (rb*) so nothing here collides with another test's network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import edgectl_run, free_port, mininet_testbed, ping_summary, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FABRIC = """
name: rebuild
subnet: 10.79.0.0/24
sites: [{id: lab, tier: edge, region: here}]
switches:
  - {id: rbs1, dpid: 0x7c01, site: lab}
  - {id: rbs2, dpid: 0x7c02, site: lab}
links:
  - {a: rbs1, b: rbs2, latency_ms: 0, bandwidth_mbps: 100}
hosts:
  - {id: rbh1, switch: rbs1, ip: 10.79.0.1}
  - {id: rbh2, switch: rbs2, ip: 10.79.0.2}
"""


def hosts(controller: Any) -> dict[str, dict[str, Any]]:
    return {h["id"]: h for h in controller.get_json("/api/v1/topology")["hosts"]}


def ping_both_ways(controller: Any, net: Any) -> None:
    def topology() -> Any:
        return controller.get_json("/api/v1/topology")

    # No route before the hosts are learned (the file gives no MACs): connected and discovered, then ping.
    wait_until(lambda: all(s["connected"] for s in topology()["switches"]), 60, what="switches connected")
    wait_until(lambda: all(x["discovered"] for x in topology()["links"]), 60, what="links discovered")
    h1, h2 = net.get("rbh1"), net.get("rbh2")
    for src, dst in ((h1, h2), (h2, h1)):
        wait_until(
            lambda s=src, d=dst: ping_summary(s.cmd(f"ping -c 1 -W 1 {d.IP()}"))[1] == 1,
            60,
            what=f"ping {src.name} -> {dst.name}",
        )


def wait_learned(controller: Any, net: Any) -> dict[str, str]:
    """Wait until the controller has seen both hosts' MACs of this build (under whatever host id)."""
    macs = {name: net.get(name).MAC() for name in ("rbh1", "rbh2")}
    wait_until(
        lambda: set(macs.values()) <= {h["mac"] for h in hosts(controller).values()},
        30,
        what=f"the controller to learn {macs}",
    )
    return macs


def test_rebuilt_hosts_keep_their_declared_identity(tmp_path: Path) -> None:
    fabric = tmp_path / "rebuild.yaml"
    fabric.write_text(FABRIC)
    openflow_port = free_port()
    with edgectl_run(fabric, openflow_port=openflow_port) as controller:
        with mininet_testbed(fabric, openflow_port, real_delay=False) as net:
            ping_both_ways(controller, net)
            first = wait_learned(controller, net)
            assert {k: h["mac"] for k, h in hosts(controller).items()} == first
        with mininet_testbed(fabric, openflow_port, real_delay=False) as net:
            ping_both_ways(controller, net)
            second = wait_learned(controller, net)
            assert set(second.values()).isdisjoint(first.values()), "the same MACs again: the test proves nothing"
            seen = hosts(controller)
            assert {k: h["mac"] for k, h in seen.items()} == second, seen  # no second, MAC-named host
            assert all(h["declared"] for h in seen.values()), seen
            routes = controller.get_json("/api/v1/routes")["routes"]
            assert {r["src"] for r in routes} | {r["dst"] for r in routes} <= {"rbh1", "rbh2"}, routes
