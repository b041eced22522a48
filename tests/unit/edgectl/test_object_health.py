"""Health per declared object, from the model and what the engines report."""

from __future__ import annotations

from edgectl.object_health import object_health
from netmodel import events as ev
from netmodel.fabric import build_state
from netmodel.ids import NodeId, PortNo, ServiceName, SpiffeId, WorkloadId
from netmodel.types import Port, Workload
from tests.unit.edgectl.fixtures import example_spec


def _running():
    state = build_state(example_spec())
    for dpid in list(state.topology.switches):
        state = state.apply(ev.SwitchConnected(dpid, tuple(Port(PortNo(n), f"p{n}") for n in range(1, 9)), at=1.0))
    for link in list(state.topology.links):
        state = state.apply(ev.LinkDiscovered(link, at=2.0))
    return state


def _health(state, **overrides):
    args = {
        "applied_generation": 3,
        "switch_generations": {dpid: 5 for dpid in state.topology.switches},
        "replicas": {
            ServiceName("web"): (2, 2, None),
            ServiceName("api"): (2, 2, None),
            ServiceName("db"): (1, 1, None),
        },
        "sidecars_behind": (),
    }
    args.update(overrides)
    return object_health(example_spec(), state, **args)


def test_a_running_fabric_is_healthy_object_by_object() -> None:
    view = _health(_running())
    assert set(view["counts"]) == {"healthy"}
    assert view["objects"]["switch/ea1"] == {"health": "healthy"}
    assert view["objects"]["link/ea1-m1"] == {"health": "healthy"}
    assert len(view["objects"]) == 5 + 8 + 12 + 3 + 6 + 3


def test_what_is_not_running_says_why() -> None:
    state = _running()
    link = next(iter(state.topology.links))
    state = state.apply(ev.LinkWentDown(link)).apply(ev.NodeWentDown(NodeId("ec-n1")))
    web = Workload(
        WorkloadId("web-1"),
        ServiceName("web"),
        SpiffeId("spiffe://x/w"),
        state.services["web"].resources,
        node=NodeId("ea-n1"),
        declared=True,
    )
    state = state.apply(ev.WorkloadPlaced(web))
    generations = {dpid: 5 for dpid in state.topology.switches}
    generations[0xA1] = 1
    view = _health(
        state,
        switch_generations=generations,
        replicas={
            ServiceName("web"): (2, 2, None),
            ServiceName("api"): (2, 1, "Insufficient cpu"),
            ServiceName("db"): (1, 1, None),
        },
        sidecars_behind={"web-1"},
    )
    objects = view["objects"]
    assert objects["switch/ea1"]["health"] == "progressing"
    assert [o for o in objects.values() if o["health"] == "degraded" and o["why"] == "down"]
    assert objects["node/ec-n1"] == {"health": "degraded", "why": "down"}
    assert objects["service/api"] == {"health": "degraded", "why": "1 of 2 declared replicas placed: Insufficient cpu"}
    assert objects["service/web"] == {"health": "progressing", "why": "sidecars not in sync yet: web-1"}
    unconnected = _health(build_state(example_spec()))["objects"]
    assert unconnected["switch/m1"] == {"health": "missing", "why": "not connected"}
    assert unconnected["link/m1-m2"] == {"health": "missing", "why": "not seen by discovery"}
