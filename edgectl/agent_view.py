"""What a node agent is told about its node (pure): the workloads placed there, and what changed.

``node_workloads(state, node, app_host)`` is the agent's view of one node in one model; ``node_changes``
compares two such views: a workload that appeared, or whose view changed (its service's command, a
callee's port, the node's address), is PLACED again; one that left (evicted, moved to another node, its
node removed from the fabric) is REMOVED. The agent API sends the first view as a SNAPSHOT, then the
changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from meshctl.xds_types import workload_outbound_host
from netmodel.ids import NodeId
from netmodel.state import FabricState
from netmodel.types import Workload


@dataclass(frozen=True, slots=True)
class CallView:
    service: str
    port: int
    per_request: float
    bytes_per_call: int
    protocol: str = "http"
    """The callee's ("http" or "tcp"): the agent warms only HTTP callees' connections (``nodeagent.warmup``)."""


@dataclass(frozen=True, slots=True)
class WorkloadView:
    id: str
    service: str
    port: int
    address: str
    app_host: str
    run: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    spiffe_id: str
    calls: tuple[CallView, ...]
    protocol: str
    outbound_host: str
    """Where the app reaches what it calls: the workload's own address (``workload_outbound_host``)."""


def workloads_by_node(state: FabricState) -> dict[str, list[Workload]]:
    """Every placed workload of ``state``, per node, in the model's order: one pass for every agent watching."""
    by_node: dict[str, list[Workload]] = {}
    for workload in state.workloads.values():
        if workload.node is not None:
            by_node.setdefault(str(workload.node), []).append(workload)
    return by_node


def node_workloads(
    state: FabricState, node: str, app_host: str, placed: Sequence[Workload] | None = None
) -> dict[str, WorkloadView]:
    """Every workload placed on ``node`` in ``state`` (none if the node is not in the fabric), by id.
    ``placed``: those workloads, when the caller has them (``workloads_by_node``), else found here."""
    compute = state.nodes.get(NodeId(node))
    if compute is None:
        return {}
    views = {}
    for workload in state.workloads.values() if placed is None else placed:
        if workload.node != node:
            continue
        service = state.services.get(workload.service)
        if service is None:
            continue
        calls = tuple(
            CallView(
                str(callee),
                state.services[callee].port,
                weight.per_request,
                weight.bytes_per_call,
                str(state.services[callee].protocol),
            )
            for callee, weight in service.weighted_calls()
            if callee in state.services
        )
        port = workload.port or service.port
        views[str(workload.id)] = WorkloadView(
            id=str(workload.id),
            service=str(workload.service),
            port=port,
            address=compute.ip,
            app_host=app_host,
            run=service.run,
            env=service.env,
            spiffe_id=str(workload.spiffe_id),
            calls=calls,
            protocol=str(service.protocol),
            outbound_host=workload_outbound_host(port),
        )
    return views


def node_changes(
    before: Mapping[str, WorkloadView], after: Mapping[str, WorkloadView]
) -> tuple[list[WorkloadView], list[str]]:
    """(workloads new or changed in ``after``, ids of workloads gone from it), each sorted by id."""
    placed = [view for wid, view in sorted(after.items()) if before.get(wid) != view]
    removed = sorted(wid for wid in before if wid not in after)
    return placed, removed
