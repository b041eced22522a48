"""A compute node's access port going down is a real failure: failover moves its workloads off it."""

from __future__ import annotations

from netmodel.events import PortStatusChanged, SwitchConnected, WorkloadPlaced
from netmodel.ids import NodeId, PortNo, ServiceName, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Port, Resources, Workload
from placement.failover import plan_failover
from placement.types import Constraints
from tests.unit.placement.helpers import apply, example_state

NODE = NodeId("ea-n1")


def with_web_on_the_node() -> FabricState:
    state = example_state()
    switch = state.nodes[NODE].attachment.switch
    web = Workload(WorkloadId("web-1"), ServiceName("web"), SpiffeId(""), Resources(500, 256), NODE)
    ports = tuple(Port(PortNo(n), f"p{n}") for n in range(1, 6))
    return apply(state, SwitchConnected(switch, ports, at=1.0), WorkloadPlaced(web))


def access_port(state: FabricState, *, up: bool) -> PortStatusChanged:
    attachment = state.nodes[NODE].attachment
    return PortStatusChanged(attachment.switch, Port(attachment.port, f"p{attachment.port}", up=up))


def test_failover_moves_the_workload_off_a_node_whose_access_port_went_down() -> None:
    state = with_web_on_the_node()
    assert plan_failover(state, lambda w: Constraints()).moves == ()

    state = apply(state, access_port(state, up=False))
    plan = plan_failover(state, lambda w: Constraints())

    assert plan.stranded == ()
    [move] = plan.moves
    assert move.old.id == "web-1"
    assert move.to.node != NODE
    assert move.why == f"node {NODE} is down"


def test_nothing_to_move_once_the_access_port_is_back_up() -> None:
    state = with_web_on_the_node()
    state = apply(state, access_port(state, up=False), access_port(state, up=True))
    plan = plan_failover(state, lambda w: Constraints())
    assert plan.moves == () and plan.stranded == ()
