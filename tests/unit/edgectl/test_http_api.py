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


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_post_routes_get_the_json_body_and_answer_with_their_status() -> None:
    state = build_state(example_spec())
    seen: list[object] = []

    def rotate(_state, body):
        seen.append(body)
        if body.get("fail"):
            raise RuntimeError("command bug")
        return (202, {"ok": True}) if body.get("spiffe_id") else (400, {"error": "no id"})

    api = HttpApi("127.0.0.1", 0, lambda: state, ControllerMetrics(), {})
    api.add_route("/api/v1/pki/rotate", rotate, method="POST")
    api.start()
    base = "http://{}:{}".format(*api.address)
    try:
        assert post(base + "/api/v1/pki/rotate", b'{"spiffe_id": "spiffe://x/y"}') == (202, {"ok": True})
        assert post(base + "/api/v1/pki/rotate", b"{}")[0] == 400
        assert post(base + "/api/v1/pki/rotate", b"not json")[0] == 400
        code, body = post(base + "/api/v1/pki/rotate", b'{"fail": true}')
        assert code == 500 and "command bug" in body["error"]
        assert seen == [{"spiffe_id": "spiffe://x/y"}, {}, {"fail": True}]
        assert get(base + "/api/v1/pki/rotate")[0] == 405  # POST only
        assert post(base + "/healthz", b"{}")[0] == 405
        assert post(base + "/api/v1/nothing", b"{}")[0] == 404
        with pytest.raises(ValueError):
            api.add_route("/x", rotate, method="DELETE")
    finally:
        api.stop()
