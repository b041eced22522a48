"""End to end: examples/online-boutique.yaml on the testbed (`edgectl run` with its CA, `--endpoint-order`
nearest or round-robin; OVS under Mininet with real link delay; every declared instance an app behind its
own Envoy). A user on u1 calls frontend through their own sidecar; the answer shows the weighted calls the
fixture declares, each made over mTLS through the callers' and callees' sidecars."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mininet_topos.controller_process import edgectl_run, wait_until
from mininet_topos.lab import NOT_YET, Lab
from netmodel.fabric import build_state
from netmodel.fabric_file import parse_fabric
from placement.baseline_profiles import all_profiles
from placement.replicas import plan_replicas

pytestmark = pytest.mark.integration

FABRIC = Path(__file__).resolve().parents[2] / "examples" / "online-boutique.yaml"
GET_FRONTEND = (
    "import http.client, json\n"
    "c = http.client.HTTPConnection('127.0.0.1', 8080, timeout=10)\n"
    "c.request('GET', '/', headers={'Host': 'frontend'})\n"
    "r = c.getresponse()\n"
    "print(json.dumps({'status': r.status, 'body': json.loads(r.read())}))\n"
)


def get_frontend(lab: Lab, host: str) -> dict[str, Any] | None:
    """One user request from ``host`` through its sidecar: the status and the app's JSON, or None (not yet)."""
    process = lab.net.get(host).popen(
        [sys.executable, "-c", GET_FRONTEND], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    out, _ = process.communicate(timeout=30)
    if process.returncode != 0:
        return None
    answer: dict[str, Any] = json.loads(out)
    return answer if answer["status"] == 200 else None


def called(body: dict[str, Any]) -> Counter[str]:
    return Counter(call["service"] for call in body["calls"])


def frontend_priorities(lab: Lab, host: str) -> dict[str, int]:
    """Instance address -> the priority the user's Envoy has it at (admin /clusters; 0 is left out of the JSON)."""
    status = json.loads(lab.mesh.clients[host].admin("/clusters?format=json"))
    (cluster,) = [c for c in status["cluster_statuses"] if c["name"] == "svc/frontend"]
    return {
        f"{h['address']['socket_address']['address']}:{h['address']['socket_address']['port_value']}": h.get(
            "priority", 0
        )
        for h in cluster.get("host_statuses", [])
    }


@pytest.mark.parametrize("endpoint_order", ["nearest", "round-robin"])
def test_a_user_request_through_frontend_makes_the_declared_weighted_calls(tmp_path: Path, endpoint_order: str) -> None:
    flags = ("--placement-profile", "kube-default-like", "--endpoint-order", endpoint_order)
    with Lab(FABRIC, tmp_path / "lab", extra_args=flags) as lab:
        placed = lab.wait_declared_services(timeout=120)
        assert len(placed) == 16
        wait_until(lambda: get_frontend(lab, "u1"), 30, 0.2, "a request from u1 through frontend", NOT_YET)
        bodies = [answer["body"] for answer in (get_frontend(lab, "u1") for _ in range(6)) if answer]
        assert len(bodies) == 6
        for body in bodies:
            assert body["service"] == "frontend" and body["caller"] == "spiffe://edgectl.local/host/u1"
            calls = called(body)
            # Whole weights are made on every request, in the declared order, one after another.
            assert (calls["currencyservice"], calls["productcatalogservice"], calls["cartservice"]) == (4, 3, 1)
            assert calls["recommendationservice"] <= 1 and calls["adservice"] <= 1
            assert [c["service"] for c in body["calls"][:4]] == ["currencyservice"] * 4
            for call in body["calls"]:
                assert "pad" not in call  # the bytes moved; the answer nests no padding
                assert call["caller"].startswith("spiffe://edgectl.local/")  # mTLS, callee saw the frontend
                if call["service"] == "recommendationservice":
                    assert called(call) == Counter({"productcatalogservice": 1})
        # Fractional weights: every other request of each frontend instance calls recommendation and ad.
        assert sum(called(b)["recommendationservice"] for b in bodies) >= 2
        assert sum(called(b)["adservice"] for b in bodies) >= 2
        # kube-default-like puts the frontends on m-n1, eb-n1 and c-n1: 3, 5 and 12 ms from u1. Nearest-first
        # gives u1 one priority each, round-robin all three alike.
        priorities = frontend_priorities(lab, "u1")
        assert len(priorities) == 3
        if endpoint_order == "nearest":
            assert sorted(priorities.values()) == [0, 1, 2], priorities
        else:
            assert set(priorities.values()) == {0}, priorities


@pytest.mark.parametrize("profile", ["kube-default-like", "diktyo-like", "latency-first"])
def test_the_controller_places_the_declared_replicas_with_the_profile_it_runs_with(profile: str) -> None:
    # Placement needs no switch: declared links count as up until the controller learns otherwise.
    expected_plan = plan_replicas(
        build_state(parse_fabric(FABRIC.read_bytes(), str(FABRIC))), profile=all_profiles()[profile]
    )
    expected = sorted((str(p.service), str(p.node)) for p in expected_plan.placed)
    with edgectl_run(FABRIC, "--placement-profile", profile, "--endpoint-order", "round-robin") as controller:

        def placed() -> list[tuple[str, str]] | None:
            workloads = controller.get_json("/api/v1/workloads")["workloads"]
            return sorted((w["service"], w["node"]) for w in workloads) if len(workloads) == 16 else None

        assert wait_until(placed, 30, 0.1, "the declared replicas placed") == expected
