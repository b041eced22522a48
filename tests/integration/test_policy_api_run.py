"""The authorization policy of a real `edgectl run` (the example fabric, no switches connected): GET /api/v1/policy,
/api/v1/policy/check, `edgectl policy check | show` as a process, and the policy metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.integration.harness import REPO, edgectl_run, http_get, wait_until

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "edge-cloud.yaml"


def policy_cli(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "edgectl.cli", "policy", *args, "--http", address]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, check=False)


def test_the_policy_of_a_running_controller_is_visible_and_explained() -> None:
    with edgectl_run(EXAMPLE) as controller:

        def placed_everywhere() -> dict:
            status, body = http_get(controller.http + "/api/v1/policy")
            view = json.loads(body)
            assert status == 200 and all(s["instances"] for s in view["services"])
            return dict(view)

        view = wait_until(placed_everywhere, timeout=60, what="every declared service placed")
        assert (view["default"], view["trust_domain"]) == ("deny", "edgectl.local")
        services = {s["service"]: s for s in view["services"]}
        web_nodes = {i["address"] for i in services["web"]["instances"]}
        assert set(services["api"]["rules"][0]["source_ips"]) == web_nodes
        assert view["denied_recent"] == [] and view["denied_totals"] == []

        status, body = http_get(controller.http + "/api/v1/policy/check?from=web&to=api")
        result = json.loads(body)
        assert status == 200 and result["allowed"], result
        status, body = http_get(controller.http + "/api/v1/policy/check?from=web&to=nope")
        assert status == 400 and "unknown service 'nope'" in json.loads(body)["error"]

        address = controller.http.removeprefix("http://")
        allowed = policy_cli(address, "check", "--from", "api", "--to", "db")
        assert allowed.returncode == 0 and allowed.stdout.startswith("ALLOWED: service:api -> db"), allowed
        denied = policy_cli(address, "check", "--from", "u1", "--to", "db", "--method", "GET")
        assert denied.returncode == 1 and "DENIED: host:u1 -> db (GET)" in denied.stdout, denied
        assert "not among the addresses allowed to reach db" in denied.stdout
        shown = policy_cli(address, "show")
        assert shown.returncode == 0 and "authorization: default deny (trust domain edgectl.local)" in shown.stdout

        metrics = http_get(controller.http + "/metrics")[1].decode()
        assert 'edgectl_policy_rules{service="web"} 3.0' in metrics
