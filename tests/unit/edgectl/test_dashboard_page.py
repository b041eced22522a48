"""The dashboard's page in headless Chromium against an HTTP API on a model the test changes (no OpenFlow,
no Mininet): fed by the live stream it applies the snapshot, then deltas (rows upserted and removed by key,
timeline entries appended); where the stream is not served it polls the JSON routes each second and sees
the same changes. Skipped where chromium and chromium-driver are not installed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from edgectl.http_api import HttpApi
from edgectl.live_events import EventHub
from edgectl.metrics import ControllerMetrics
from edgectl.views import service_paths_view, services_view, topology_view, workloads_view
from netmodel import events as ev
from netmodel.fabric import build_state
from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Resources, Workload
from tests.browser import attribute_of, attribute_values, headless_chromium, page_errors, poll
from tests.unit.edgectl.fixtures import example_spec


def workload(wid: str, service: str, node: str) -> Workload:
    return Workload(
        WorkloadId(wid), ServiceName(service), SpiffeId(f"spiffe://t/{wid}"), Resources(500, 256), NodeId(node)
    )


class Model:
    """The state the API serves; ``apply`` changes it and tells the hub, as the bus would."""

    def __init__(self) -> None:
        state = build_state(example_spec())
        for placed in (workload("web-1", "web", "m-n1"), workload("api-1", "api", "c-n1")):
            state = state.apply(ev.WorkloadPlaced(placed))
        self.state = state
        self.hub: EventHub | None = None
        self._lock = threading.Lock()

    def apply(self, event: Any) -> None:
        with self._lock:
            self.state = self.state.apply(event)
            if self.hub is not None:
                self.hub.on_model_change(event, self.state)

    def cable(self, a: str, b: str) -> ev.LinkWentDown:
        names = {dpid: s.name for dpid, s in self.state.topology.switches.items()}
        link = next(k for k in self.state.topology.links if {names[k.src], names[k.dst]} == {a, b})
        return ev.LinkWentDown(link)


@contextmanager
def serve(model: Model, stream: bool) -> Iterator[str]:
    routes: dict[str, Callable[[FabricState], Any]] = {
        "/api/v1/topology": topology_view,
        "/api/v1/workloads": workloads_view,
        "/api/v1/service-paths": service_paths_view,
        "/api/v1/services": services_view,
    }
    api = HttpApi("127.0.0.1", 0, lambda: model.state, ControllerMetrics(), routes)
    if stream:
        model.hub = EventHub(lambda: model.state)
        model.hub.start()
        api.add_event_stream("/api/v1/events", model.hub)
    api.start()
    try:
        yield "http://{}:{}/".format(*api.address)
    finally:
        api.stop()
        if model.hub is not None:
            model.hub.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with headless_chromium() as driver:
        yield driver


def follows_the_model(browser: Any, url: str, model: Model, mode: str, within: float) -> None:
    browser.get(url)
    poll(lambda: attribute_of(browser, "#conn", "data-mode") == mode, 10, what=f"the page in mode {mode}")
    switches = {s.name for s in model.state.topology.switches.values()}
    poll(lambda: attribute_values(browser, "g.switch", "data-switch") == switches, 10, what="every switch drawn")
    assert attribute_values(browser, "g.workload", "data-workload") == {"web-1", "api-1"}
    assert attribute_values(browser, "path.link", "data-state") == {"up"}
    assert attribute_values(browser, "#services-table tr[data-service]", "data-service") == {"web", "api", "db"}
    # web's instance: its latency from its users and the margin to its SLO (max_latency_ms, from /api/v1/services)
    poll(
        lambda: bool(attribute_values(browser, '#services-table tr[data-service="web"] [data-margin]', "data-margin")),
        10,
        what="web's SLO margin",
    )
    (margin,) = attribute_values(browser, '#services-table tr[data-service="web"] [data-margin]', "data-margin")
    assert float(margin) <= 5.0  # the SLO is 5 ms; the margin is what the route leaves of it

    model.apply(model.cable("ea1", "m1"))
    poll(
        lambda: attribute_of(browser, 'path.link[data-link="ea1-m1"]', "data-state") == "down",
        within,
        what="the cable down in the page",
    )
    assert attribute_values(browser, 'path.link[data-state="down"]', "data-link") == {"ea1-m1"}

    model.apply(ev.WorkloadPlaced(workload("api-2", "api", "eb-n1")))
    model.apply(ev.WorkloadRemoved(WorkloadId("web-1")))
    poll(
        lambda: attribute_values(browser, "g.workload", "data-workload") == {"api-1", "api-2"},
        within,
        what="api-2 placed and web-1 removed in the page",
    )
    assert attribute_of(browser, 'g.workload[data-workload="api-2"]', "data-node") == "eb-n1"
    assert float(attribute_of(browser, 'g.node[data-node="eb-n1"]', "data-load") or 0) > 0
    kinds = attribute_values(browser, "#timeline-list li", "data-kind")
    assert {"LinkWentDown", "WorkloadPlaced", "WorkloadRemoved"} <= kinds, kinds
    assert not page_errors(browser)


def test_the_page_applies_the_stream_snapshot_then_deltas(browser: Any) -> None:
    model = Model()
    with serve(model, stream=True) as url:
        follows_the_model(browser, url, model, "live", within=5)
        # the page's own copy of the views equals the server's after the deltas (no row left behind)
        page_workloads = browser.execute_script("return window.edgectlModel.views.workloads.workloads.map(w => w.id)")
        assert sorted(page_workloads) == ["api-1", "api-2"]


def test_without_the_stream_the_page_polls_the_json_routes(browser: Any) -> None:
    model = Model()
    with serve(model, stream=False) as url:
        follows_the_model(browser, url, model, "polling", within=5)


def test_placement_nack_and_certificate_entries_reach_the_timeline_services_and_security(browser: Any) -> None:
    model = Model()
    with serve(model, stream=True) as url:
        browser.get(url)
        poll(lambda: attribute_of(browser, "#conn", "data-mode") == "live", 10, what="the page live")
        assert model.hub is not None
        reason = "users' mean request time 36.8 -> 26.9 ms"
        model.hub.note("MigrationStarted", f"migration mig-1; api-1 on c-n1 -> api-2 on ea-n1: {reason}", service="api")
        model.hub.note("XdsNack", "web-1 rejected cds version v3: connect_timeout: value must be greater than 0")

        def text_of(selector: str) -> str:
            return str(browser.execute_script(f"return document.querySelector('{selector}')?.textContent || ''"))

        poll(lambda: reason in text_of('#timeline-list li[data-kind="MigrationStarted"]'), 5, what="the step shown")
        assert "XdsNack" in attribute_values(browser, "#timeline-list li", "data-kind")
        assert reason in text_of('#services-table tr[data-service="api"] td.reason')
        assert "connect_timeout" in text_of('#security-events li[data-kind="XdsNack"]')
        # the kind filter: placement shows only the placement step
        browser.execute_script(
            "const s = document.getElementById('timeline-kind'); s.value = 'placement';"
            "s.dispatchEvent(new Event('change'));"
        )
        poll(
            lambda: attribute_values(browser, "#timeline-list li", "data-kind") == {"MigrationStarted"},
            5,
            what="only placement entries",
        )
        assert not page_errors(browser)
