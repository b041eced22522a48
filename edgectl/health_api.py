"""Instance health from node agents, over the HTTP API (adapter, thin).

``POST /api/v1/workloads/health`` with ``{"workload": "web-1", "healthy": false, "reason": "app exited
(-9)"}``: a node agent saw the app or the sidecar of an instance it runs die (the node itself stays
up, so nothing else would notice). It becomes ``WorkloadHealthChanged``: the instance leaves every
caller's endpoints at once and failover re-places it. ``GET`` on the same path lists the instances
reported unhealthy. Reports are idempotent; an unknown workload is 404 (it may just have been removed).

    http.add_route(HEALTH_PATH, health_report_route(bus.publish), method="POST")
    http.add_route(HEALTH_PATH, unhealthy_view)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from netmodel.events import Event, WorkloadHealthChanged
from netmodel.ids import WorkloadId
from netmodel.state import EventRejected, FabricState

HEALTH_PATH = "/api/v1/workloads/health"
MAX_REASON_CHARS = 500
PUBLISH_TIMEOUT_S = 5.0


def parse_health_report(body: Any, now: float) -> WorkloadHealthChanged | str:
    """The event a report asks for, or what is wrong with it."""
    if not isinstance(body, dict):
        return 'expected a JSON object {"workload": ID, "healthy": BOOL, "reason": TEXT}'
    workload, healthy, reason = body.get("workload"), body.get("healthy"), body.get("reason", "")
    if not isinstance(workload, str) or not workload:
        return '"workload" must be a workload id'
    if not isinstance(healthy, bool):
        return '"healthy" must be true or false'
    if not isinstance(reason, str):
        return '"reason" must be a string'
    return WorkloadHealthChanged(WorkloadId(workload), healthy, reason[:MAX_REASON_CHARS], now)


def health_report_route(
    publish: Callable[[Event], Future[FabricState]],
    clock: Callable[[], float] = time.time,
    timeout_s: float = PUBLISH_TIMEOUT_S,
) -> Callable[[FabricState, Any], tuple[int, Any]]:
    def route(state: FabricState, body: Any) -> tuple[int, Any]:
        event = parse_health_report(body, clock())
        if isinstance(event, str):
            return 400, {"error": event}
        if event.workload not in state.workloads:
            return 404, {"error": f"no workload {event.workload!r}"}
        try:
            new = publish(event).result(timeout=timeout_s)
        except EventRejected as exc:  # removed meanwhile
            return 404, {"error": str(exc)}
        except FutureTimeout:
            return 503, {"error": f"the model writer did not apply the report within {timeout_s:g} s"}
        return 200, {
            "workload": event.workload,
            "healthy": event.workload not in new.unhealthy,
            "generation": new.generation,
        }

    return route


def unhealthy_view(state: FabricState) -> dict[str, Any]:
    """The instances reported unhealthy, and those whose app its node agent still starts beside a sidecar
    (no endpoints either, but no failure)."""

    def node_of(workload: WorkloadId) -> str | None:
        found = state.workloads.get(workload)
        return found.node if found is not None else None

    return {
        "generation": state.generation,
        "unhealthy": [{"workload": w, "node": node_of(w), "reason": why} for w, why in sorted(state.unhealthy.items())],
        "starting": [{"workload": w, "node": node_of(w), "since": at} for w, at in sorted(state.starting.items())],
    }
