"""/metrics of `edgectl run` driving a real Mininet fabric: every link direction's latency, bytes sent
and utilization from the switches' port counters, flows and groups per switch, OpenFlow messages; and
`promtool check metrics` accepts the real output."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import REPO, edgectl_run, free_port, http_get, mininet_testbed, wait_until

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "edge-cloud.yaml"
DIAMOND = REPO / "tests" / "data" / "fabrics" / "diamond.yaml"
SAMPLE = re.compile(r"^(\w+)(?:\{([^}]*)\})? (\S+)$", re.MULTILINE)
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(controller) -> tuple[str, dict[str, dict[str, float]]]:
    """The /metrics text, and per metric name: its series (its labels as text, sorted by name) -> value."""
    status, body = http_get(controller.http + "/metrics")
    assert status == 200
    text = body.decode()
    series: dict[str, dict[str, float]] = {}
    for name, labels, value in SAMPLE.findall(text):
        key = ",".join(f'{label}="{text}"' for label, text in sorted(LABEL.findall(labels)))
        series.setdefault(name, {})[key] = float(value)
    return text, series


def check_with_promtool(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/setup.sh installs Debian's prometheus package)")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60, check=False
    )
    complaints = (result.stdout + result.stderr).decode()
    assert result.returncode == 0 and not complaints.strip(), complaints


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
        last_seq = max((c["seq"] for c in controller.get_json("/api/v1/routes/changes")), default=0)
        output = h1.cmd(f"ping -c 20 -i 0.05 -s 1400 {h2.IP()}")  # about 28 KB from h1 through s1
        if " 0% packet loss" not in output:  # say what the fabric did meanwhile: routes sent, the log
            changes = [c for c in controller.get_json("/api/v1/routes/changes") if c["seq"] > last_seq]
            raise AssertionError(f"{output}\nroute changes meanwhile: {changes}\nlog: {controller.log()[-3000:]}")
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

        check_with_promtool(text)


def edgectl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgectl.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


def test_placement_migration_and_certificate_metrics_of_a_controller_with_a_pki(tmp_path: Path) -> None:
    """No switches: placement runs on the declared fabric, a migration converges at once (no switch and
    no sidecar to wait for). The declared replicas and the users' hosts get SVIDs."""
    td = "edge.test"
    ca_dir = tmp_path / "ca"
    assert edgectl("pki", "init", "--trust-domain", td, "--dir", str(ca_dir)).returncode == 0
    operator = tmp_path / "alice"
    issued = edgectl(
        "pki", "issue", "--dir", str(ca_dir), "--spiffe-id", f"spiffe://{td}/operator/alice", "--out", str(operator)
    )
    assert issued.returncode == 0, issued.stderr
    api = free_port()
    with edgectl_run(EXAMPLE, "--pki-dir", str(ca_dir), "--api-port", str(api), "--xds-port", str(free_port())) as (
        controller
    ):
        client = ["--api", f"127.0.0.1:{api}", "--tls-cert", f"{operator}.crt", "--tls-key", f"{operator}.key"]
        client += ["--tls-ca", f"{operator}.bundle.pem"]
        wait_until(lambda: edgectl("workloads", *client).returncode == 0, 30, what="the placement API over mTLS")
        wait_until(
            lambda: len(controller.get_json("/api/v1/workloads")["workloads"]) == 5, 30, what="the declared replicas"
        )
        refused = edgectl("place", "--service", "db", "--cpu-millis", "9000000", "--memory-mib", "1", *client)
        assert refused.returncode != 0, refused.stdout
        api_1 = next(w for w in controller.get_json("/api/v1/workloads")["workloads"] if w["service"] == "api")
        migrated = edgectl("migrate", api_1["id"], "--to", "cloud", "--force", *client)
        assert migrated.returncode == 0, migrated.stderr

        def placement_counted() -> dict[str, dict[str, float]]:
            _, series = scrape(controller)
            done = series.get("edgectl_migrations_total", {}).get('outcome="completed"', 0) >= 1
            return series if done else {}

        series = wait_until(placement_counted, 20, interval=0.5, what="the migration in /metrics")
        requests = series["edgectl_placement_requests_total"]
        assert requests['operation="place",outcome="RESOURCE_EXHAUSTED"'] == 1
        assert requests['operation="migrate",outcome="ok"'] == 1
        assert series["edgectl_placement_unschedulable_total"]['filter="ResourcesFit"'] == 1
        assert series["edgectl_placement_steps_total"]['kind="placed"'] >= 6  # 5 declared + the migration's
        # One Migrate call: the move, and any instance it calls that moved with it (a chain, listed by the CLI).
        moved = 1 + migrated.stdout.count("with it:")
        assert series["edgectl_migrations_total"]['outcome="completed"'] == moved
        for stage in ("place", "converge", "withdraw", "total"):
            assert series["edgectl_migration_stage_seconds_count"][f'stage="{stage}"'] == moved

        identities = controller.get_json("/api/v1/identities")["identities"]
        expiry = series["edgectl_certificate_expiry_timestamp_seconds"]
        assert len(expiry) == len(identities) >= 5
        for row in identities:
            labels = f'spiffe_id="{row["spiffe_id"]}",subject="{row["subject"]}"'
            assert expiry.get(labels) == row["not_after"], (labels, sorted(expiry))
        earliest = series["edgectl_certificate_earliest_expiry_timestamp_seconds"][""]
        assert earliest == min(row["not_after"] for row in identities)
        assert series["edgectl_svids_issued_total"][""] >= len(identities)
        assert series["edgectl_config_last_applied_timestamp_seconds"][""] > 0
        assert series["edgectl_config_documents_total"] == {'outcome="applied"': 0, 'outcome="rejected"': 0}

        text, _ = scrape(controller)
        check_with_promtool(text)
