"""A generated edge-cloud fabric runs end to end: the same generated file for `edgectl run` and
the testbed, every switch connects, and pingall succeeds."""

from __future__ import annotations

import contextlib

import pytest

from mininet_topos.generate import edge_cloud, to_yaml
from tests.integration.harness import edgectl_run, free_port, mininet_testbed, wait_until

pytestmark = pytest.mark.integration


def test_generated_edge_cloud_pings_everything(tmp_path) -> None:
    fabric = tmp_path / "generated.yaml"
    fabric.write_text(to_yaml(edge_cloud(edge_sites=2, switches_per_site=2, metro_switches=3, cloud_switches=2)))
    openflow_port = free_port()
    with contextlib.ExitStack() as stack:
        controller = stack.enter_context(edgectl_run(fabric, openflow_port=openflow_port))
        net = stack.enter_context(mininet_testbed(fabric, openflow_port, real_delay=False))
        controller.wait_fabric_ready("e1u1", "cn2")
        assert len(controller.get_json("/api/v1/topology")["switches"]) == 9
        wait_until(lambda: net.pingAll(timeout=1) == 0.0, 45, interval=0.5, what="pingall without loss")
