from __future__ import annotations

import json
import urllib.request

import pytest

from edgectl.http_api import HttpApi
from edgectl.metrics import ControllerMetrics
from edgectl.views import topology_view
from netmodel.fabric import build_state
from tests.unit.edgectl.fixtures import example_spec


@pytest.fixture
def api():
    state = build_state(example_spec())

    def broken(_state):
        raise RuntimeError("view bug")

    api = HttpApi(
        "127.0.0.1",
        0,
        lambda: state,
        ControllerMetrics(),
        {"/api/v1/topology": topology_view, "/api/v1/broken": broken},
    )
    api.start()
    yield "http://{}:{}".format(*api.address)
    api.stop()


def get(url: str, method: str = "GET") -> tuple[int, bytes, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read(), r.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


def test_healthz_metrics_and_topology(api) -> None:
    status, body, _ = get(api + "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, body, content_type = get(api + "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert b"edgectl_model_generation 0.0" in body and b"process_cpu_seconds_total" in body
    status, body, _ = get(api + "/api/v1/topology/")
    assert status == 200 and len(json.loads(body)["switches"]) == 8


def test_errors_are_json_and_the_server_survives(api) -> None:
    assert get(api + "/api/v1/broken")[0] == 500
    assert get(api + "/missing")[0] == 404
    assert get(api + "/healthz", method="POST")[0] == 405
    assert get(api + "/healthz")[0] == 200
