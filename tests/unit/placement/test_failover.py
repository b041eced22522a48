"""Failover planning: displaced instances, spill from edge to cloud, stranded with reasons."""

from __future__ import annotations

from netmodel.events import LinkWentDown, NodeWentDown, SwitchConnected, SwitchDisconnected, WorkloadPlaced
from netmodel.ids import HostId, NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Resources, Workload
from placement.failover import plan_failover
from placement.types import Constraints
from tests.unit.placement.helpers import apply, dpid, example_state, link


def placed(wid: str, node: str, cpu: int = 500, memory: int = 256, service: str = "web") -> WorkloadPlaced:
    return WorkloadPlaced(
        Workload(WorkloadId(wid), ServiceName(service), SpiffeId(""), Resources(cpu, memory), NodeId(node))
    )


def constraints_table(table: dict[str, Constraints]) -> object:
    return lambda w: table.get(w.id, Constraints())


def slo(ms: float, *hosts: str) -> Constraints:
    return Constraints(max_latency_ms=ms, near=tuple(HostId(h) for h in hosts))


def moves(state: FabricState, table: dict[str, Constraints]) -> dict[str, str]:
    plan = plan_failover(state, constraints_table(table))  # type: ignore[arg-type]
    return {m.old.id: m.to.node for m in plan.moves}


def test_nothing_to_do_on_a_healthy_fabric() -> None:
    state = apply(example_state(), placed("web-1", "ea-n1"))
    plan = plan_failover(state, lambda w: Constraints())
    assert plan.moves == () and plan.stranded == ()


def test_a_down_edge_node_spills_to_cloud_when_the_slo_allows() -> None:
    state = apply(
        example_state(),
        placed("web-1", "ea-n1"),
        placed("web-2", "ea-n1"),
        NodeWentDown(NodeId("ea-n1")),
    )
    table = {"web-1": slo(12, "u1"), "web-2": slo(5, "u1")}
    # web-1: cloud c-n1 is 12 ms from u1 (c-n2 12.5 is not allowed); web-2: 5 ms only reaches metro/edge.
    assert moves(state, table) == {"web-1": "c-n1", "web-2": "m-n1"}


def test_the_tightest_slo_gets_the_scarce_node_first() -> None:
    # m-n1 has room for one 4000m instance: the one that cannot go anywhere else must get it.
    state = apply(
        example_state(),
        placed("api-1", "ea-n1", cpu=2000, service="api"),
        placed("api-2", "ea-n1", cpu=0, service="api"),
        NodeWentDown(NodeId("ea-n1")),
    )
    state = apply(state, placed("big-a", "eb-n1", cpu=2000), placed("big-c", "ec-n1", cpu=1000))
    table = {"api-1": slo(3, "u1"), "api-2": slo(12, "u1")}
    assert moves(state, table) == {"api-1": "m-n1", "api-2": "c-n1"}


def test_a_disconnected_switch_displaces_its_nodes() -> None:
    state = apply(
        example_state(),
        placed("web-1", "c-n1"),
        SwitchConnected(dpid("c1"), (), at=1.0),
        SwitchDisconnected(dpid("c1"), at=2.0),
    )
    plan = plan_failover(state, lambda w: Constraints())
    assert [(m.old.id, m.to.node, m.why) for m in plan.moves] == [
        ("web-1", "c-n2", "node c-n1 is behind a switch that is down")
    ]


def test_a_site_cut_off_from_its_users_is_left() -> None:
    state = apply(example_state(), placed("web-1", "c-n1"), placed("web-2", "c-n2"))
    for a, b in (("m1", "c1"), ("m3", "c2")):  # both ways into the cloud
        state = apply(state, LinkWentDown(link(state, a, b)))
    plan = plan_failover(state, lambda w: slo(50, "u1"))
    assert {m.old.id: m.why for m in plan.moves} == {
        "web-1": "node c-n1 is unreachable from every host",
        "web-2": "node c-n2 is unreachable from every host",
    }
    assert {m.to.tier.value for m in plan.moves} == {"metro", "edge"}


def test_stranded_with_reasons_when_nothing_meets_the_slo() -> None:
    state = apply(example_state(), placed("web-1", "ea-n1", cpu=1500), NodeWentDown(NodeId("ea-n1")))
    plan = plan_failover(state, lambda w: slo(1, "u1"))
    assert plan.moves == ()
    (stranded,) = plan.stranded
    assert stranded.workload.id == "web-1"
    assert stranded.why == "node ea-n1 is down"
    assert "no node satisfies max_latency_ms=1 from host u1: best is 3 ms at m-n1" in "; ".join(stranded.reasons)


def test_excluded_instances_are_left_alone() -> None:
    state = apply(example_state(), placed("web-1", "ea-n1"), NodeWentDown(NodeId("ea-n1")))
    assert plan_failover(state, lambda w: Constraints(), exclude={WorkloadId("web-1")}).moves == ()


def test_an_instance_on_a_node_the_fabric_no_longer_has() -> None:
    state = apply(example_state(), placed("web-1", "ea-n1"))
    gone = FabricState(
        topology=state.topology,
        sites=state.sites,
        hosts=state.hosts,
        nodes={k: v for k, v in state.nodes.items() if k != "ea-n1"},
        services=state.services,
        workloads=state.workloads,
    )
    plan = plan_failover(gone, lambda w: Constraints())
    assert [(m.old.id, m.why) for m in plan.moves] == [("web-1", "node ea-n1 is not in the fabric")]


def test_an_unhealthy_instance_is_displaced_and_may_stay_on_its_node() -> None:
    from netmodel.events import WorkloadHealthChanged

    state = apply(example_state(), placed("web-1", "ea-n1"), placed("web-2", "ea-n1"))
    sick = apply(state, WorkloadHealthChanged(WorkloadId("web-1"), healthy=False, reason="app exited (-9)"))
    plan = plan_failover(sick, lambda w: Constraints(max_latency_ms=1, near=(HostId("u1"),)))
    (move,) = plan.moves
    assert move.old.id == "web-1" and "unhealthy" in move.why and "app exited (-9)" in move.why
    # Only the instance failed, not its node: the node closest to u1 is still the best one for it.
    assert move.to.node == "ea-n1"
    assert plan.stranded == ()
    # A node that is down as well: it must leave that node.
    both = apply(sick, NodeWentDown(NodeId("ea-n1")))
    assert {m.old.id: m.to.node != "ea-n1" for m in plan_failover(both, lambda w: Constraints()).moves} == {
        "web-1": True,
        "web-2": True,
    }
