"""The example edge-cloud fabric as a Mininet testbed (real OVS, real link delay) under `edgectl run`:
every switch completes the OpenFlow handshake, every declared link is discovered on the ports the
file assigns, and a fabric full of loops pings everything without a broadcast storm."""

from __future__ import annotations

import contextlib
import time

import pytest

from tests.integration.harness import (
    REPO,
    edgectl_run,
    free_port,
    mininet_testbed,
    ovs,
    port_tx_packets,
    wait_until,
)

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "edge-cloud.yaml"


@pytest.fixture(scope="module")
def edge_cloud():
    openflow_port = free_port()
    with contextlib.ExitStack() as stack:
        controller = stack.enter_context(edgectl_run(EXAMPLE, openflow_port=openflow_port))
        net = stack.enter_context(mininet_testbed(EXAMPLE, openflow_port))
        yield controller, net


def test_every_switch_completes_the_handshake(edge_cloud) -> None:
    controller, net = edge_cloud

    def connected() -> list[str]:
        return [s["id"] for s in controller.get_json("/api/v1/topology")["switches"] if s["connected"]]

    wait_until(lambda: len(connected()) == 8, 30, what="8 switches connected in /api/v1/topology")
    assert sorted(connected()) == sorted(sw.name for sw in net.switches)
    for switch in net.switches:
        assert ovs("get", "controller", switch.name, "is_connected").strip() == "true", switch.name
    switches = controller.get_json("/api/v1/topology")["switches"]
    assert all(s["declared"] for s in switches)


def test_every_declared_link_is_discovered_on_its_ports(edge_cloud) -> None:
    controller, _ = edge_cloud
    wait_until(
        lambda: all(x["discovered"] and x["up"] for x in controller.get_json("/api/v1/topology")["links"]),
        30,
        what="all declared links discovered",
    )
    links = controller.get_json("/api/v1/topology")["links"]
    assert len(links) == 24 and all(x["declared"] for x in links), "a discovered link is not the declared one"


def test_pingall_over_loops_without_a_storm(edge_cloud) -> None:
    controller, net = edge_cloud
    wait_until(lambda: controller.get_json("/api/v1/routes")["routes"], 30, what="routes")
    wait_until(lambda: net.pingAll(timeout=1) == 0.0, 45, interval=0.5, what="pingall without loss")
    # No storm: ARP is routed, never flooded, so an idle fabric carries only the probes.
    before = {sw.name: sum(port_tx_packets(sw.name).values()) for sw in net.switches}
    time.sleep(2)
    after = {sw.name: sum(port_tx_packets(sw.name).values()) for sw in net.switches}
    rate = {name: (after[name] - before[name]) / 2 for name in before}
    assert max(rate.values()) < 50, f"packets per second per switch on an idle fabric: {rate}"
