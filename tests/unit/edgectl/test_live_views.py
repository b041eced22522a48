"""The live views of the event stream on the example fabric: keys, deltas that rebuild the new snapshot from the
old one (also over random event sequences), and the timeline's entries."""

from __future__ import annotations

import contextlib
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgectl.live_views import (
    DIFFED_LISTS,
    apply_delta,
    diff_views,
    live_views,
    same_views,
    timeline_entry,
)
from netmodel import events as ev
from netmodel.fabric import build_state
from netmodel.ids import NodeId, WorkloadId
from netmodel.state import EventRejected, FabricState
from netmodel.types import Resources, ServiceName, SpiffeId, Workload
from tests.unit.edgectl.fixtures import example_spec

NODES = ("ea-n1", "eb-n1", "ec-n1", "m-n1", "c-n1", "c-n2")


def example() -> FabricState:
    return build_state(example_spec())


def placed(workload_id: str, service: str, node: str) -> ev.WorkloadPlaced:
    return ev.WorkloadPlaced(
        Workload(WorkloadId(workload_id), ServiceName(service), SpiffeId(""), Resources(100, 64), NodeId(node))
    )


def test_every_row_of_a_diffed_list_has_its_key() -> None:
    views = live_views(example().apply(placed("web-1", "web", "ea-n1")))
    for view, lists in DIFFED_LISTS.items():
        for field in lists:
            rows = views[view][field]
            assert rows, (view, field)
            keys = [row["key"] for row in rows]
            assert all(isinstance(k, str) for k in keys) and len(set(keys)) == len(keys), (view, field)
    assert {row["key"] for row in views["topology"]["switches"]} >= {"ea1", "m1", "c2"}
    assert {"c1:1>m1:5", "c1:2>c2:2"} <= {row["key"] for row in views["topology"]["links"]}  # src:port>dst:port
    assert [row["key"] for row in views["workloads"]["workloads"]] == ["web-1"]
    json.dumps(views)  # JSON-ready


def test_a_link_going_down_is_an_upsert_of_its_two_directions_only() -> None:
    before = example()
    link = sorted(before.topology.links)[0]
    after = before.apply(ev.LinkWentDown(link))
    old, new = live_views(before), live_views(after)
    delta = diff_views(old, new)
    upserted = delta["views"]["topology"]["links"]["upsert"]
    assert len(upserted) == 2 and all(row["up"] is False for row in upserted)
    assert set(delta["views"]) == {"topology"} and set(delta["views"]["topology"]) == {"links"}
    assert same_views(apply_delta(old, delta, after.generation), new)


def test_a_load_change_is_an_upsert_of_the_measured_directions_with_their_utilization() -> None:
    before = example()
    link = next(x for x, attrs in sorted(before.topology.links.items()) if attrs.capacity_mbps == 100)
    event = ev.LinkLoadMeasured(((link, 30e6),), at=7.0)
    after = before.apply(event)
    old, new = live_views(before), live_views(after)
    delta = diff_views(old, new)
    assert set(delta["views"]) == {"topology"} and "replace" not in delta  # the service paths do not move
    (row,) = delta["views"]["topology"]["links"]["upsert"]
    assert row["load_bps"] == 30e6 and row["utilization"] == 0.3 and row["load_measured_at"] == 7.0
    assert same_views(apply_delta(old, delta, after.generation), new)
    entry = timeline_entry(event, after, at=7.5)
    assert entry["kind"] == "LinkLoadMeasured" and entry["text"] == "load changed on 1 link directions"


def test_placing_and_removing_a_workload() -> None:
    before = example()
    after = before.apply(placed("web-1", "web", "ea-n1"))
    delta = diff_views(live_views(before), live_views(after))
    assert [row["key"] for row in delta["views"]["workloads"]["workloads"]["upsert"]] == ["web-1"]
    assert "service_paths" in delta["replace"]  # users' request times changed with the new instance
    gone = after.apply(ev.WorkloadRemoved(WorkloadId("web-1")))
    delta = diff_views(live_views(after), live_views(gone))
    assert delta["views"]["workloads"] == {"workloads": {"remove": ["web-1"]}}
    assert same_views(apply_delta(live_views(after), delta, gone.generation), live_views(gone))


def test_no_change_is_an_empty_delta() -> None:
    state = example()
    assert diff_views(live_views(state), live_views(state)) == {}


def test_the_timeline_names_the_event_and_says_what_happened() -> None:
    state = example()
    link = sorted(state.topology.links)[0]
    down = state.apply(ev.LinkWentDown(link))
    entry = timeline_entry(ev.LinkWentDown(link), down, at=12.5)
    assert entry["kind"] == "LinkWentDown" and entry["generation"] == down.generation and entry["at"] == 12.5
    assert "went down" in entry["text"] and ">" in entry["text"]
    web = down.apply(placed("web-1", "web", "ea-n1"))
    entry = timeline_entry(placed("web-1", "web", "ea-n1"), web, at=13.0)
    assert entry["kind"] == "WorkloadPlaced" and entry["text"] == "web-1 (web) placed on ea-n1"


def random_event(state: FabricState, data: st.DataObject) -> ev.Event:
    links = sorted(state.topology.links)
    kind = data.draw(st.sampled_from(["down", "up", "latency", "load", "place", "remove", "node_down", "node_up"]))
    if kind == "down":
        return ev.LinkWentDown(data.draw(st.sampled_from(links)))
    if kind == "up":
        return ev.LinkCameUp(data.draw(st.sampled_from(links)))
    if kind == "latency":
        link = data.draw(st.sampled_from(links))
        return ev.LinkLatencyMeasured(((link, data.draw(st.integers(1, 20_000))),), at=1.0)
    if kind == "load":
        link = data.draw(st.sampled_from(links))
        return ev.LinkLoadMeasured(((link, data.draw(st.none() | st.floats(0, 1e9))),), at=1.0)
    if kind == "node_down":
        return ev.NodeWentDown(NodeId(data.draw(st.sampled_from(NODES))))
    if kind == "node_up":
        return ev.NodeCameUp(NodeId(data.draw(st.sampled_from(NODES))))
    number = data.draw(st.integers(1, 6))
    if kind == "remove":
        return ev.WorkloadRemoved(WorkloadId(f"web-{number}"))
    return placed(f"web-{number}", "web", data.draw(st.sampled_from(NODES)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_deltas_applied_in_turn_rebuild_every_snapshot(data: st.DataObject) -> None:
    """Over a random run of events, coalesced at random points as the hub does: each delta applied to what the
    client holds gives the server's new snapshot."""
    state = example()
    sent = held = live_views(state)
    for _ in range(data.draw(st.integers(1, 12))):
        for _ in range(data.draw(st.integers(1, 4))):  # a burst, one delta for all of it
            with contextlib.suppress(EventRejected):
                state = state.apply(random_event(state, data))
        now = live_views(state)
        held = apply_delta(held, json.loads(json.dumps(diff_views(sent, now))), state.generation)
        assert same_views(held, now)
        sent = now
