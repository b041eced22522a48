"""/metrics of `edgectl run` driving a real Mininet fabric: every link direction's latency, bytes sent
and utilization from the switches' port counters, flows and groups per switch, OpenFlow messages; and
`promtool check metrics` accepts the real output."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess

import pytest

from tests.integration.harness import REPO, edgectl_run, free_port, http_get, mininet_testbed, wait_until

pytestmark = pytest.mark.integration

DIAMOND = REPO / "tests" / "data" / "fabrics" / "diamond.yaml"
SAMPLE = re.compile(r"^(\w+)(?:\{([^}]*)\})? (\S+)$", re.MULTILINE)


def scrape(controller) -> tuple[str, dict[str, dict[str, float]]]:
    """The /metrics text, and per metric name: its series (the label text) -> value."""
    status, body = http_get(controller.http + "/metrics")
    assert status == 200
    text = body.decode()
    series: dict[str, dict[str, float]] = {}
    for name, labels, value in SAMPLE.findall(text):
        series.setdefault(name, {})[labels] = float(value)
    return text, series


def link_series(series: dict[str, dict[str, float]], name: str, src: str, dst: str) -> float | None:
    for labels, value in series.get(name, {}).items():
        if f'src="{src}"' in labels and f'dst="{dst}"' in labels:
            return value
    return None


def test_link_switch_and_openflow_metrics_of_a_live_fabric_pass_promtool() -> None:
    openflow_port = free_port()
    with contextlib.ExitStack() as stack:
        controller = stack.enter_context(
            edgectl_run(DIAMOND, "--port-stats-interval", "1", openflow_port=openflow_port)
        )
        net = stack.enter_context(mininet_testbed(DIAMOND, openflow_port, real_delay=False))
        controller.wait_fabric_ready("h1", "h2")
        directions = [(a, b) for a, b in (("s1", "s2"), ("s2", "s4"), ("s1", "s3"), ("s3", "s4"))]
        directions += [(b, a) for a, b in directions]

        def every_link_measured_and_loaded() -> bool:
            _, series = scrape(controller)
            return all(
                link_series(series, name, a, b) is not None
                for a, b in directions
                for name in (
                    "edgectl_link_latency_seconds",
                    "edgectl_link_transmit_bytes_total",
                    "edgectl_link_utilization_ratio",
                )
            )

        wait_until(every_link_measured_and_loaded, 40, interval=0.5, what="latency and load of every link direction")
        h1, h2 = net.get("h1"), net.get("h2")

        def sent_by_s1() -> float:
            """Bytes s1 sent towards s4, over either path (without real delay both are about as short)."""
            _, series = scrape(controller)
            out = [link_series(series, "edgectl_link_transmit_bytes_total", "s1", dst) for dst in ("s2", "s3")]
            return sum(value or 0.0 for value in out)

        before = sent_by_s1()
        output = h1.cmd(f"ping -c 20 -i 0.05 -s 1400 {h2.IP()}")  # about 28 KB from h1 through s1
        assert " 0% packet loss" in output, output
        wait_until(lambda: sent_by_s1() - before >= 20 * 1400, 20, interval=0.5, what="the pings in s1's links' bytes")

        text, series = scrape(controller)
        for switch in ("s1", "s2", "s3", "s4"):
            assert series["edgectl_switch_flows"][f'switch="{switch}"'] >= 4
        assert series["edgectl_switch_groups"]['switch="s1"'] >= 1  # s1 has a backup path: a fast-failover group
        sent = series["edgectl_openflow_messages_sent_total"]
        assert sent['type="OFPFlowMod"'] >= 1 and sent['type="OFPPortStatsRequest"'] >= 1
        received = series["edgectl_openflow_messages_received_total"]
        assert received['type="OFPPortStatsReply"'] >= 1 and received['type="OFPBarrierReply"'] >= 1
        assert series["edgectl_route_compute_seconds_count"][""] >= 1

        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.skip("promtool is not installed (scripts/setup.sh installs Debian's prometheus package)")
        result = subprocess.run(
            [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60, check=False
        )
        complaints = (result.stdout + result.stderr).decode()
        assert result.returncode == 0 and not complaints.strip(), complaints
