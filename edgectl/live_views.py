"""The live views of ``GET /api/v1/events``: snapshots with a ``key`` on every row that is diffed, the delta
between two snapshots, and the timeline of model events. Pure: ``edgectl/live_events.py`` runs it.

A snapshot is ``{"topology": ..., "workloads": ..., "service_paths": ...}``: the API's views
(``edgectl.views``) with a string ``key`` added to each row of the lists in ``DIFFED_LISTS``. A delta holds,
per diffed view, per list that changed, the rows added or changed (``upsert``, whole rows) and the keys
removed (``remove``); the views in ``REPLACED_VIEWS`` are sent whole under ``replace`` when they changed.
``apply_delta(old, delta) == new``: the rule a client follows (docs/dashboard.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from edgectl.views import service_paths_view, topology_view, workloads_view
from netmodel import events as ev
from netmodel.ids import format_dpid
from netmodel.state import FabricState
from netmodel.types import LinkId

Row = dict[str, Any]
View = dict[str, Any]
Views = dict[str, View]

TIMELINE_MAX = 200
"""Timeline entries a snapshot carries (the most recent)."""


def _link_key(row: Row) -> str:
    return f"{row['src']}:{row['src_port']}>{row['dst']}:{row['dst_port']}"


DIFFED_LISTS: dict[str, dict[str, Callable[[Row], str]]] = {
    "topology": {
        "sites": lambda row: str(row["id"]),
        "switches": lambda row: str(row["id"]),
        "links": _link_key,
        "hosts": lambda row: str(row["id"]),
        "nodes": lambda row: str(row["id"]),
    },
    "workloads": {"workloads": lambda row: str(row["id"])},
}
"""Per view diffed row by row: each list's name and the function giving a row's ``key``."""
REPLACED_VIEWS = ("service_paths",)
"""Views sent whole when they change (computed across every row: one change moves many numbers)."""


def live_views(state: FabricState) -> Views:
    """The views of ``state`` the stream sends, keyed."""
    return keyed_views(
        {
            "topology": topology_view(state),
            "workloads": workloads_view(state),
            "service_paths": service_paths_view(state),
        }
    )


def keyed_views(views: Mapping[str, View]) -> Views:
    """The views with a ``key`` on every row of every diffed list (copies; the inputs are left alone)."""
    keyed: Views = {}
    for name, view in views.items():
        lists = DIFFED_LISTS.get(name, {})
        keyed[name] = {
            field: [{**row, "key": lists[field](row)} for row in value] if field in lists else value
            for field, value in view.items()
        }
    return keyed


def diff_views(old: Mapping[str, View], new: Mapping[str, View]) -> dict[str, Any]:
    """What changed from ``old`` to ``new`` (both from ``keyed_views``): ``{"views": {view: {list: {"upsert":
    [...], "remove": [...]}}}, "replace": {view: whole view}}``, each key present only when something changed
    there. A view's ``generation`` is not compared nor sent: it follows the message's."""
    views: dict[str, dict[str, Any]] = {}
    replace: dict[str, View] = {}
    for name, view in new.items():
        before = old.get(name)
        lists = DIFFED_LISTS.get(name)
        if lists is None or before is None:
            if before is None or _without_generation(before) != _without_generation(view):
                replace[name] = view
            continue
        changed = {}
        for field in lists:
            change = _diff_rows(before.get(field, []), view.get(field, []))
            if change:
                changed[field] = change
        if changed:
            views[name] = changed
    delta: dict[str, Any] = {}
    if views:
        delta["views"] = views
    if replace:
        delta["replace"] = replace
    return delta


def _without_generation(view: View) -> View:
    return {k: v for k, v in view.items() if k != "generation"}


def _diff_rows(old: list[Row], new: list[Row]) -> dict[str, list[Any]]:
    before = {row["key"]: row for row in old}
    after = {row["key"]: row for row in new}
    upsert = [row for key, row in after.items() if before.get(key) != row]
    remove = [key for key in before if key not in after]
    change: dict[str, list[Any]] = {}
    if upsert:
        change["upsert"] = upsert
    if remove:
        change["remove"] = remove
    return change


def apply_delta(views: Mapping[str, Any], delta: Mapping[str, Any], generation: int) -> dict[str, Any]:
    """``views`` (a snapshot's, the timeline ``events`` included or not) after ``delta`` (the message of
    ``generation``): what a client does with each delta. A row upserted keeps its place when it was there and is
    appended when new; rows are then in the server's order only up to that (a client that cares sorts them)."""
    result: dict[str, Any] = {name: dict(v) if isinstance(v, dict) else list(v) for name, v in views.items()}
    if "events" in result:
        result["events"] = [*result["events"], *delta.get("events", [])][-TIMELINE_MAX:]
    for name, whole in delta.get("replace", {}).items():
        result[name] = whole
    for name, lists in delta.get("views", {}).items():
        view = result.setdefault(name, {})
        for field, change in lists.items():
            rows = {row["key"]: row for row in view.get(field, [])}
            for key in change.get("remove", []):
                rows.pop(key, None)
            for row in change.get("upsert", []):
                rows[row["key"]] = row
            view[field] = list(rows.values())
    for view in result.values():
        if isinstance(view, dict) and "generation" in view:  # the message's, also when nothing in it changed
            view["generation"] = generation
    return result


def same_views(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal up to the order of the rows of diffed lists (which ``apply_delta`` does not keep)."""

    def normal(views: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, view in views.items():
            if not isinstance(view, dict):
                out[name] = view
                continue
            lists = DIFFED_LISTS.get(name, {})
            out[name] = {
                field: sorted(value, key=lambda row: row["key"]) if field in lists else value
                for field, value in view.items()
            }
        return out

    return normal(a) == normal(b)


def timeline_entry(event: ev.Event, state: FabricState, at: float) -> dict[str, Any]:
    """One line of the timeline: the event that made ``state`` (its generation), when it arrived, what it was."""
    return {"generation": state.generation, "at": at, "kind": type(event).__name__, "text": describe(event, state)}


def describe(event: ev.Event, state: FabricState) -> str:
    """A short sentence for a person."""

    def switch(dpid: int) -> str:
        found = state.topology.switches.get(dpid)  # type: ignore[call-overload]
        return str(found.name) if found is not None else f"dpid:{format_dpid(dpid)}"

    def link(link_id: LinkId) -> str:
        return f"{switch(link_id.src)}:{link_id.src_port}>{switch(link_id.dst)}:{link_id.dst_port}"

    match event:
        case ev.SwitchConnected():
            return f"switch {switch(event.switch)} connected ({len(event.ports)} ports)"
        case ev.SwitchDisconnected():
            return f"switch {switch(event.switch)} disconnected"
        case ev.PortStatusChanged():
            up = "up" if event.port.up else "down"
            return f"{switch(event.switch)} port {event.port.no} ({event.port.name}) {up}"
        case ev.PortDeleted():
            return f"{switch(event.switch)} port {event.port} deleted"
        case ev.LinkDiscovered():
            return f"link {link(event.link)} discovered"
        case ev.LinkWentDown():
            return f"link {link(event.link)} went down"
        case ev.LinkCameUp():
            return f"link {link(event.link)} came up"
        case ev.LinkLatencyMeasured():
            return f"latency measured on {len(event.latencies_us)} link directions"
        case ev.LinkLoadMeasured():
            return f"load changed on {len(event.loads_bps)} link directions"
        case ev.HostLearned():
            return f"host {event.ip} ({event.mac}) seen at {switch(event.attachment.switch)}:{event.attachment.port}"
        case ev.HostsExpired():
            return "learned hosts not seen for a while expired"
        case ev.NodeWentDown():
            return f"node {event.node} went down"
        case ev.NodeCameUp():
            return f"node {event.node} came up"
        case ev.WorkloadPlaced():
            w = event.workload
            return f"{w.id} ({w.service}) placed on {w.node}" if w.node is not None else f"{w.id} ({w.service}) added"
        case ev.WorkloadRemoved():
            return f"{event.workload} removed"
        case ev.WorkloadHealthChanged():
            if event.healthy:
                return f"{event.workload} healthy again"
            return f"{event.workload} unhealthy" + (f": {event.reason}" if event.reason else "")
        case ev.WorkloadStarting():
            return f"{event.workload} starting (no endpoint until its app listens)"
        case ev.DesiredStateApplied():
            return f"desired state {event.revision[:12] or '(no revision)'} applied"
    return type(event).__name__
