from __future__ import annotations

import dataclasses
import json
import time

from edgectl.state_store import StateStore, workloads_from_json, workloads_to_json
from edgectl.views import topology_view, workloads_view
from netmodel import events as ev
from netmodel.fabric import build_state
from netmodel.ids import HostId, NodeId, PortNo, ServiceName, SpiffeId, SwitchId, WorkloadId
from netmodel.types import Port, Resources, Workload
from tests.unit.edgectl.fixtures import example_spec

WEB = Workload(
    WorkloadId("web-1"), ServiceName("web"), SpiffeId("spiffe://x/web"), Resources(500, 256), NodeId("ea-n1"), 8080
)


def test_topology_view_is_json_and_flags_undeclared_switches() -> None:
    state = build_state(example_spec())
    state = state.apply(ev.SwitchConnected(SwitchId(0xA1), (Port(PortNo(1), "ea1-eth1"),), 1.0))
    state = state.apply(ev.SwitchConnected(SwitchId(0xBEEF), (), 2.0))
    view = json.loads(json.dumps(topology_view(state)))
    by_dpid = {s["dpid"]: s for s in view["switches"]}
    assert by_dpid["00000000000000a1"]["connected"] and by_dpid["00000000000000a1"]["declared"]
    assert by_dpid["000000000000beef"]["declared"] is False
    assert by_dpid["000000000000beef"]["id"] == "dpid:000000000000beef"
    link = next(x for x in view["links"] if x["src"] == "ea1" and x["dst"] == "m1")
    assert link["latency_us"] == 2000 and link["declared_latency_us"] == 2000
    assert link["measured_latency_us"] is None and link["up"] and not link["discovered"]
    assert len(view["links"]) == 24
    assert link["load_bps"] is None and link["utilization"] is None and link["load_measured_at"] is None


def test_topology_view_shows_a_links_measured_load_and_its_share_of_the_capacity() -> None:
    state = build_state(example_spec())
    ea1_m1 = next(x for x in state.topology.links if x.src == 0xA1 and x.dst == 0x101)
    state = state.apply(ev.LinkLoadMeasured(((ea1_m1, 12.5e6),), at=3.0))
    view = json.loads(json.dumps(topology_view(state)))
    link = next(x for x in view["links"] if x["src"] == "ea1" and x["dst"] == "m1")
    assert link["load_bps"] == 12.5e6 and link["utilization"] == 0.125 and link["load_measured_at"] == 3.0
    back = next(x for x in view["links"] if x["src"] == "m1" and x["dst"] == "ea1")
    assert back["load_bps"] is None and back["utilization"] is None


def test_workloads_round_trip_through_json() -> None:
    state = build_state(example_spec()).apply(ev.WorkloadPlaced(WEB))
    doc = json.loads(json.dumps(workloads_to_json(state.workloads)))
    assert workloads_from_json(doc) == [WEB]
    assert workloads_view(state)["workloads"][0]["node"] == "ea-n1"


def test_state_store_writes_atomically_and_restores(tmp_path) -> None:
    store = StateStore(str(tmp_path))
    store.start()
    state = build_state(example_spec()).apply(ev.WorkloadPlaced(WEB))
    store.on_model_change(ev.WorkloadPlaced(WEB), state)
    store.stop()
    assert not list(tmp_path.glob("*.tmp"))
    assert StateStore(str(tmp_path)).load_events() == [ev.WorkloadPlaced(WEB)]


def test_unreadable_state_file_is_ignored_with_a_log(tmp_path, caplog) -> None:
    (tmp_path / "workloads.json").write_text("{not json")
    assert StateStore(str(tmp_path)).load_events() == []
    assert "unreadable" in caplog.text


def test_state_store_coalesces_bursts(tmp_path) -> None:
    store = StateStore(str(tmp_path))
    store.start()
    state = build_state(example_spec())
    for i in range(100):
        w = Workload(WorkloadId(f"w{i}"), ServiceName("web"), SpiffeId("spiffe://x/w"), Resources(1, 1), None)
        state = state.apply(ev.WorkloadPlaced(w))
        store.on_model_change(ev.WorkloadPlaced(w), state)
    store.stop()
    time.sleep(0.01)
    saved = json.loads((tmp_path / "workloads.json").read_text())
    assert len(saved["workloads"]) == 100


def test_constraints_survive_the_state_file_and_version_1_files_still_load() -> None:
    from netmodel.types import AffinityScope, AffinityTerm, PlacementConstraints, Tier

    constraints = PlacementConstraints(
        tiers=frozenset({Tier.EDGE, Tier.METRO}),
        max_latency_ms=4.5,
        near=(HostId("u1"),),
        affinity=(AffinityTerm(ServiceName("api"), AffinityScope.SITE),),
        anti_affinity=(AffinityTerm(ServiceName("web")),),
    )
    web = Workload(
        WorkloadId("web-1"), ServiceName("web"), SpiffeId("spiffe://x/web"), Resources(1, 1), None, 0, constraints
    )
    state = build_state(example_spec()).apply(ev.WorkloadPlaced(web))
    doc = json.loads(json.dumps(workloads_to_json(state.workloads)))
    assert doc["version"] == 2
    assert workloads_from_json(doc) == [web]
    old = {"version": 1, "workloads": [{**doc["workloads"][0]}]}
    del old["workloads"][0]["constraints"]
    assert workloads_from_json(old)[0].constraints is None


def test_the_services_view_gives_each_instance_its_latency_margin() -> None:
    from edgectl.views import services_view
    from netmodel.events import WorkloadPlaced
    from netmodel.fabric import build_state
    from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId
    from netmodel.types import Resources, Workload
    from tests.unit.edgectl.fixtures import example_spec

    state = build_state(example_spec())
    for wid, service, node in (("web-1", "web", "ea-n1"), ("web-2", "web", "m-n1"), ("api-1", "api", "c-n1")):
        placed = Workload(WorkloadId(wid), ServiceName(service), SpiffeId(""), Resources(1, 1), NodeId(node))
        state = state.apply(WorkloadPlaced(placed))
    rows = {s["name"]: s["instances"] for s in services_view(state)["services"]}
    # web: max_latency_ms 5 from u1 (ea1) and u2 (eb1): on ea-n1 the worst is u2, 5 ms away; on m-n1, u1 at 3 ms
    assert rows["web"] == [
        {"workload": "web-1", "node": "ea-n1", "worst_latency_ms": 5.0, "margin_ms": 0.0},
        {"workload": "web-2", "node": "m-n1", "worst_latency_ms": 3.0, "margin_ms": 2.0},
    ]
    assert rows["api"] == [{"workload": "api-1", "node": "c-n1", "worst_latency_ms": None, "margin_ms": None}]  # no SLO
    assert rows["db"] == []


def test_the_services_view_says_who_may_call_each_service() -> None:
    from edgectl.views import services_view

    services = {s["name"]: s for s in services_view(build_state(example_spec()))["services"]}
    assert services["api"]["allow_from"] == [{"who": "service:web", "paths": [], "methods": []}]
    assert [rule["who"] for rule in services["web"]["allow_from"]] == ["host:u1", "host:u2", "host:u3"]
    assert services["db"]["protocol"] == "http"


def test_an_instance_bandwidth_reservation_survives_a_restart() -> None:
    web = dataclasses.replace(WEB, bandwidth_mbps=12.5)
    state = build_state(example_spec()).apply(ev.WorkloadPlaced(web))
    doc = json.loads(json.dumps(workloads_to_json(state.workloads)))
    assert workloads_from_json(doc) == [web]
    del doc["workloads"][0]["bandwidth_mbps"]  # a file written before reservations existed
    assert workloads_from_json(doc)[0].bandwidth_mbps is None


def test_the_state_file_keeps_placement_order_which_reservations_are_granted_in() -> None:
    state = build_state(example_spec())
    for wid in ("web-9", "web-10", "web-2"):
        state = state.apply(ev.WorkloadPlaced(dataclasses.replace(WEB, id=WorkloadId(wid))))
    doc = json.loads(json.dumps(workloads_to_json(state.workloads)))
    assert [w.id for w in workloads_from_json(doc)] == ["web-9", "web-10", "web-2"]
