"""POST /api/v1/workloads/health through the real HTTP endpoint and the real model writer."""

from __future__ import annotations

import json
import urllib.request

from edgectl.bus import EventBus
from edgectl.health_api import HEALTH_PATH, health_report_route, parse_health_report, unhealthy_view
from edgectl.http_api import HttpApi
from edgectl.metrics import ControllerMetrics
from netmodel.events import WorkloadHealthChanged, WorkloadPlaced, WorkloadStarting
from netmodel.fabric import build_state
from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.types import Resources, Workload
from tests.unit.edgectl.fixtures import example_spec
from tests.unit.edgectl.test_http_api import post


def test_parse_health_report_says_what_is_wrong() -> None:
    assert parse_health_report({"workload": "web-1", "healthy": False, "reason": "x"}, 3.0) == WorkloadHealthChanged(
        WorkloadId("web-1"), False, "x", 3.0
    )
    assert isinstance(parse_health_report([], 0), str)
    assert "workload" in str(parse_health_report({"healthy": False}, 0))
    assert "healthy" in str(parse_health_report({"workload": "w", "healthy": "no"}, 0))
    assert "reason" in str(parse_health_report({"workload": "w", "healthy": False, "reason": 3}, 0))
    long = parse_health_report({"workload": "w", "healthy": False, "reason": "x" * 10_000}, 0)
    assert isinstance(long, WorkloadHealthChanged) and len(long.reason) == 500


def test_a_report_marks_the_instance_unhealthy_once_and_unknown_ones_are_404() -> None:
    state = build_state(example_spec())
    service = next(iter(state.services))
    node = next(iter(state.nodes))
    web = Workload(WorkloadId("web-1"), ServiceName(service), SpiffeId(""), Resources(1, 1), NodeId(node))
    bus = EventBus(state.apply(WorkloadPlaced(web)))
    bus.start()
    api = HttpApi("127.0.0.1", 0, lambda: bus.state, ControllerMetrics(), {})
    api.add_route(HEALTH_PATH, health_report_route(bus.publish), method="POST")
    api.add_route(HEALTH_PATH, unhealthy_view)
    api.start()
    base = "http://{}:{}".format(*api.address) + HEALTH_PATH
    try:
        report = json.dumps({"workload": "web-1", "healthy": False, "reason": "app exited (-9)"}).encode()
        code, body = post(base, report)
        assert code == 200 and body["healthy"] is False
        generation = body["generation"]
        assert post(base, report) == (200, {"workload": "web-1", "healthy": False, "generation": generation})
        with urllib.request.urlopen(base, timeout=5) as response:
            listed = json.load(response)
        assert listed["unhealthy"] == [{"workload": "web-1", "node": node, "reason": "app exited (-9)"}]
        assert listed["starting"] == []
        bus.publish(WorkloadStarting(WorkloadId("web-1"), 7.0)).result(timeout=5)
        with urllib.request.urlopen(base, timeout=5) as response:
            assert json.load(response)["starting"] == [{"workload": "web-1", "node": node, "since": 7.0}]
        assert post(base, b'{"workload": "web-9", "healthy": false}')[0] == 404
        assert post(base, b'{"workload": "web-1"}')[0] == 400
        assert bus.state.unhealthy == {WorkloadId("web-1"): "app exited (-9)"}
    finally:
        api.stop()
        bus.stop()


def test_a_report_is_refused_unless_the_http_api_listens_on_loopback() -> None:
    """Reports re-place instances and the HTTP API has no authentication: only local agents may send one."""
    from concurrent.futures import Future

    from edgectl.http_access import loopback_only

    published: list[object] = []

    def publish(event: object) -> Future[object]:
        published.append(event)
        raise AssertionError("a refused report must not reach the model")

    state = build_state(example_spec())
    for host in ("0.0.0.0", "10.0.0.1", "::"):
        route = loopback_only(health_report_route(publish), http_host=host, what="a report", instead="use loopback")
        code, body = route(state, {"workload": "web-1", "healthy": False})
        assert code == 403 and "loopback" in body["error"]
    assert not published
    local = loopback_only(health_report_route(publish), http_host="127.0.0.1", what="a report", instead="-")
    assert local(state, {"workload": "nope", "healthy": False})[0] == 404  # served (unknown workload)
