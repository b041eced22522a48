"""Which placed workloads can be endpoints at all: the one rule shared by the snapshot builder (EDS)
and the readiness gate's questions (``MeshServer.not_ready``, ``converged_for``). Pure."""

from __future__ import annotations

from netmodel.state import FabricState
from netmodel.types import ComputeNode, Workload


def serving_node(state: FabricState, workload: Workload) -> ComputeNode | None:
    """The node ``workload`` can serve from: placed on a node that is up and has an address (None:
    unplaced, or its node is down or has no address, so no traffic can reach it)."""
    node = state.nodes.get(workload.node) if workload.node is not None else None
    return node if node is not None and node.up and node.ip else None


def can_serve(state: FabricState, workload: Workload) -> bool:
    """``workload`` can be an endpoint (whether it is one also depends on its health and readiness)."""
    return serving_node(state, workload) is not None
