"""`edgectl run` against real OVS bridges: handshake, the topology API, metrics, clean shutdown."""

from __future__ import annotations

import time

import pytest

from tests.integration.harness import (
    REPO,
    bridge_connected,
    edgectl_run,
    free_port,
    http_get,
    ovs_bridge,
    wait_until,
)

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "edge-cloud.yaml"


def test_healthz_and_metrics_within_3s_of_start() -> None:
    started = time.monotonic()
    with edgectl_run(EXAMPLE) as controller:
        assert time.monotonic() - started < 3.0, "healthz took more than 3 s"
        status, body = http_get(controller.http + "/metrics")
        assert status == 200
        text = body.decode()
        assert "edgectl_model_generation" in text
        assert 'edgectl_switches{state="disconnected"} 8.0' in text
        assert http_get(controller.http + "/nope")[0] == 404


def test_apps_on_the_outbound_listeners_address_are_warned_of() -> None:
    """--mesh-app-host 127.0.0.1 is where users' client sidecars take their outbound listeners, and
    127.1.0.0/16 where workloads' sidecars take theirs: said at start, once; the default says nothing."""
    warning = "cannot bind both (--mesh-app-host 127.0.0.2 keeps them apart)"
    with edgectl_run(EXAMPLE, "--mesh-app-host", "127.0.0.1") as controller:
        wait_until(lambda: warning in controller.log(), 10, what="the warning")
        assert controller.log().count(warning) == 1
    with edgectl_run(EXAMPLE, "--mesh-app-host", "127.1.0.5") as controller:
        wait_until(lambda: warning in controller.log(), 10, what="the warning")
        assert "in 127.1.0.0/16 where workloads' sidecars take their outbound listeners" in controller.log()
    with edgectl_run(EXAMPLE) as controller:
        wait_until(lambda: "edgectl running" in controller.log(), 10, what="the start's log")
        assert warning not in controller.log()


def test_ovs_bridges_connect_and_show_in_topology() -> None:
    with edgectl_run(EXAMPLE) as controller:
        # ea1 is declared (dpid 0xa1); 0xe0e0 is not in the file.
        with (
            ovs_bridge("etst-ea1", 0xA1, controller.openflow_port),
            ovs_bridge("etst-x", 0xE0E0, controller.openflow_port),
        ):
            wait_until(lambda: bridge_connected("etst-ea1") and bridge_connected("etst-x"), 20, what="is_connected")

            def switches() -> dict[str, dict]:
                return {s["dpid"]: s for s in controller.get_json("/api/v1/topology")["switches"]}

            wait_until(lambda: switches()["00000000000000a1"]["connected"], 10, what="ea1 connected in API")
            wait_until(lambda: "000000000000e0e0" in switches(), 10, what="undeclared switch in API")
            view = switches()
            assert view["00000000000000a1"]["id"] == "ea1" and view["00000000000000a1"]["declared"]
            undeclared = view["000000000000e0e0"]
            assert undeclared["connected"] and not undeclared["declared"]
            links = controller.get_json("/api/v1/topology")["links"]
            assert len(links) == 24
            assert all({"latency_us", "capacity_mbps", "up"} <= set(link) for link in links)
        # Bridges deleted: the controller sees the switches go.
        wait_until(lambda: not switches()["00000000000000a1"]["connected"], 15, what="ea1 disconnected")
        assert controller.stop() == 0, controller.log()


def test_bad_port_flag_is_a_clear_error() -> None:
    port = free_port()
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        import subprocess
        import sys

        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "edgectl.cli",
                "run",
                "--config",
                str(EXAMPLE),
                "--http-port",
                str(port),
                "--openflow-port",
                str(free_port()),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=REPO,
        )
    assert result.returncode == 1
    assert "cannot start" in result.stderr and "Traceback" not in result.stderr
