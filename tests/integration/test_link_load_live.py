"""Measured link load in the model of `edgectl run` driving a real Mininet fabric: the link rows of
`/api/v1/topology` carry `load_bps` and `utilization` from the switches' port counters, and a burst of
pings between two hosts shows on the links it crosses."""

from __future__ import annotations

import contextlib
import subprocess
from typing import Any

import pytest

from tests.integration.harness import REPO, edgectl_run, free_port, mininet_testbed, wait_until

pytestmark = pytest.mark.integration

DIAMOND = REPO / "tests" / "data" / "fabrics" / "diamond.yaml"
BURST_BPS = 200_000.0
"""Well above the controller's own probes (under 10 kbit/s a link) and well below what the pings send
(about 1.2 Mbit/s): the burst, and nothing else, crosses it."""


def links(controller: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(row["src"], row["dst"]): row for row in controller.get_json("/api/v1/topology")["links"]}


def test_a_burst_between_two_hosts_shows_as_load_on_the_links_it_crosses() -> None:
    openflow_port = free_port()
    with contextlib.ExitStack() as stack:
        controller = stack.enter_context(
            edgectl_run(DIAMOND, "--port-stats-interval", "1", openflow_port=openflow_port)
        )
        net = stack.enter_context(mininet_testbed(DIAMOND, openflow_port, real_delay=False))
        controller.wait_fabric_ready("h1", "h2")
        wait_until(
            lambda: all(row["load_bps"] is not None for row in links(controller).values()),
            30,
            interval=0.5,
            what="a measured load on every link direction",
        )
        idle = links(controller)
        assert all(row["load_bps"] < BURST_BPS for row in idle.values()), idle
        h1, h2 = net.get("h1"), net.get("h2")
        # About 100 pings of 1.4 KB a second for 6 s: h1 -> h2 over s1, then s2 or s3 (without real delay
        # both paths are about as short), and the replies back.
        ping = h1.popen(["ping", "-q", "-c", "600", "-i", "0.01", "-s", "1400", h2.IP()], stdout=subprocess.PIPE)
        stack.callback(ping.wait, 30)
        stack.callback(lambda: ping.poll() is None and ping.kill())

        def loaded_out_of_s1() -> dict[str, Any] | None:
            rows = links(controller)
            return next(
                (rows[("s1", via)] for via in ("s2", "s3") if (rows[("s1", via)]["load_bps"] or 0) > BURST_BPS), None
            )

        row = wait_until(loaded_out_of_s1, 20, interval=0.3, what="the burst in the load of s1's links")
        assert row["utilization"] == pytest.approx(row["load_bps"] / (row["capacity_mbps"] * 1e6))
        assert row["load_measured_at"] is not None
        output, _ = ping.communicate(timeout=30)
        assert ping.returncode == 0, output
