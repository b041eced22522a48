"""Agents' views of their nodes: one pass over the model per change for every watching agent."""

from __future__ import annotations

import pytest

from edgectl import agent_api
from edgectl.agent_api import PlacedByNode
from edgectl.agent_view import node_workloads, workloads_by_node
from netmodel import events as ev
from netmodel.fabric import build_state
from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.types import Resources, Workload
from tests.unit.edgectl.fixtures import example_spec


def placed_state() -> object:
    state = build_state(example_spec())
    service = sorted(state.services)[0]
    for k, node in enumerate(sorted(state.nodes) * 3, start=1):
        wid = WorkloadId(f"{service}-{k}")
        state = state.apply(ev.WorkloadPlaced(Workload(wid, ServiceName(service), SpiffeId(""), Resources(1, 1), node)))
    return state


def test_every_node_view_from_one_index_per_state(monkeypatch: pytest.MonkeyPatch) -> None:
    state = placed_state()
    passes: list[int] = []
    real = workloads_by_node

    def counted(s: object) -> dict[str, list[Workload]]:
        passes.append(1)
        return real(s)  # type: ignore[arg-type]

    monkeypatch.setattr(agent_api, "workloads_by_node", counted)
    index = PlacedByNode()
    for node in sorted(state.nodes):  # type: ignore[attr-defined]
        views = node_workloads(state, node, "127.0.0.1", index.on(state, node))  # type: ignore[arg-type]
        assert views == node_workloads(state, node, "127.0.0.1")  # type: ignore[arg-type]
        assert len(views) == 3
    assert len(passes) == 1
    newer = state.apply(ev.WorkloadRemoved(WorkloadId(next(iter(state.workloads)))))  # type: ignore[attr-defined]
    index.on(newer, "x")
    index.on(state, "x")  # a watch one change behind: still kept
    assert len(passes) == 2
    assert index.on(newer, str(NodeId("nowhere"))) == []
