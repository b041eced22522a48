"""One rule for which placed workloads can be endpoints: the snapshot builder's EDS and the readiness
gate's questions (``MeshServer.not_ready``) follow ``meshctl.serving.can_serve``."""

from __future__ import annotations

from meshctl.serving import can_serve, serving_node
from meshctl.snapshot import MeshConfig, build_snapshots
from meshctl.xds_types import ENDPOINTS, service_cluster_name
from netmodel import events as ev
from netmodel.ids import NodeId, WorkloadId
from netmodel.state import FabricState
from tests.unit.meshctl.mesh_helpers import place, placed_state, unpack, workload


def _endpoint_count(state: FabricState, service: str) -> int:
    snapshot = build_snapshots(state, MeshConfig())["web-1"]
    cluster = service_cluster_name(service)
    packed = snapshot.of_type(ENDPOINTS)[cluster].packed
    return sum(len(group.lb_endpoints) for group in unpack(ENDPOINTS, packed).endpoints)


def test_a_workload_on_an_up_node_can_serve_one_on_a_down_node_or_unplaced_cannot() -> None:
    state = place(placed_state(), workload("api-3", "api", None))
    assert can_serve(state, state.workloads[WorkloadId("api-1")])
    assert serving_node(state, state.workloads[WorkloadId("api-1")]) == state.nodes[NodeId("ea-n2")]
    assert not can_serve(state, state.workloads[WorkloadId("api-3")])
    down = state.apply(ev.NodeWentDown(NodeId("ea-n2")))
    assert not can_serve(down, down.workloads[WorkloadId("api-1")])


def test_the_snapshot_builder_makes_endpoints_of_exactly_the_workloads_that_can_serve() -> None:
    state = placed_state()
    down = state.apply(ev.NodeWentDown(NodeId("ea-n2")))
    for model in (state, down):
        serving = [w for w in model.workloads.values() if w.service == "api" and can_serve(model, w)]
        assert _endpoint_count(model, "api") == len(serving)
    assert _endpoint_count(down, "api") == 1
