"""End to end: examples/online-boutique.yaml on the testbed (`edgectl run --endpoint-order nearest` with its CA,
OVS under Mininet with real link delay, every declared instance an app behind its own Envoy). A user on u1
calls frontend through their own sidecar; the answer shows the weighted calls the fixture declares, each
made over mTLS through the callers' and callees' sidecars."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mininet_topos.controller_process import wait_until
from mininet_topos.lab import NOT_YET, Lab

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


def test_a_user_request_through_frontend_makes_the_declared_weighted_calls(tmp_path: Path) -> None:
    with Lab(FABRIC, tmp_path / "lab", extra_args=("--endpoint-order", "nearest")) as lab:
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
