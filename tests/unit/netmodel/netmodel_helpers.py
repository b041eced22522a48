"""Shared helpers for the netmodel tests (imported by name; deliberately not a conftest.py)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from netmodel.fabric import FabricSpec, build_state
from netmodel.fabric_file import parse_fabric
from netmodel.state import FabricState
from netmodel.topology import Topology

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "edge-cloud.yaml"
BAD_FABRICS = REPO / "tests" / "data" / "bad-fabrics"

# dpids of the example fabric
EA1, EB1, EC1 = 0xA1, 0xB1, 0xC1
M1, M2, M3 = 0x101, 0x102, 0x103
C1, C2 = 0x201, 0x202
ALL_SWITCHES = (EA1, EB1, EC1, M1, M2, M3, C1, C2)


@functools.cache
def example_text() -> str:
    return EXAMPLE.read_text(encoding="utf-8")


@functools.cache
def example_spec() -> FabricSpec:
    return parse_fabric(example_text(), str(EXAMPLE))


@functools.cache
def example_state() -> FabricState:
    """Cached: FabricState is immutable, so sharing one instance between tests is safe (and tested)."""
    return build_state(example_spec())


def snapshot(value: Any) -> Any:
    """A deep, plain-data copy of a model value, for before/after comparisons.

    ``copy.deepcopy`` cannot copy ``mappingproxy``; this walks dataclasses, mappings, sequences and
    the topology's graph (nodes and keyed edges) and returns nested tuples/dicts of immutable leaves.
    """
    if isinstance(value, Topology):
        graph = value.graph
        return (
            "Topology",
            snapshot(value.switches),
            snapshot(value.links),
            tuple(sorted(graph.nodes)),
            tuple(sorted((u, v, k) for u, v, k in graph.edges(keys=True))),
            tuple(sorted((u, v, k, tuple(sorted(d.items()))) for u, v, k, d in graph.edges(keys=True, data=True))),
        )
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (
            type(value).__name__,
            tuple((f.name, snapshot(getattr(value, f.name))) for f in dataclasses.fields(value)),
        )
    if isinstance(value, Mapping):
        return ("map", tuple(sorted(((k, snapshot(v)) for k, v in value.items()), key=lambda kv: repr(kv[0]))))
    if isinstance(value, list | tuple):
        return tuple(snapshot(v) for v in value)
    return value
