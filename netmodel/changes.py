"""Which workloads changed between two model states, as the events that led from one to the other
say. Pure.

A reader that keeps its own derived view of the workloads (the xDS snapshots, the state store's
journal) would otherwise compare every workload of the two states to find the few that changed: a
pass over 10,000 entries per model change. The bus calls its subscribers with every event in order;
``WorkloadChanges.note`` keeps the ids those events name (``netmodel.events.workloads_touched``). The
answer is only given when it is exact: every event since ``base`` said which workloads it touched,
and the two states asked about are the very ones the notes start and end at (by identity: the model's
maps are immutable, a changed map is a new object). Else None, and the reader compares.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from netmodel.events import Event, workloads_touched
from netmodel.ids import WorkloadId
from netmodel.state import FabricState

Maps = tuple[Mapping[Any, Any], Mapping[Any, Any] | None]
"""A state's (workloads, unhealthy): what a workload change changes (unhealthy None: not followed)."""


def maps_of(state: FabricState, with_health: bool = True) -> Maps:
    return (state.workloads, state.unhealthy if with_health else None)


class WorkloadChanges:
    """The workloads that the events since ``base`` touched (not thread-safe: its owner's lock).
    ``with_health``: a health change counts (the xDS endpoints follow it; the saved placements do not)."""

    __slots__ = ("base", "exact", "ids", "last", "with_health")

    def __init__(self, state: FabricState, with_health: bool = True) -> None:
        self.with_health = with_health
        self.base: Maps = maps_of(state, with_health)
        self.last: Maps = self.base
        self.ids: set[WorkloadId] = set()
        self.exact = True

    def maps(self, state: FabricState) -> Maps:
        """What ``between`` compares of ``state``."""
        return maps_of(state, self.with_health)

    def note(self, event: Event, state: FabricState) -> None:
        """``event`` made ``state`` (called for every event, in order)."""
        if _same(self.maps(state), self.last):
            return  # it touched no workload
        touched = workloads_touched(event)
        if touched is None:
            self.exact = False
        else:
            self.ids |= touched
        self.last = self.maps(state)

    def between(self, before: Maps, after: Maps) -> set[WorkloadId] | None:
        """The ids touched from ``before`` to ``after`` if these notes span exactly those; else None."""
        if not self.exact or not _same(self.base, before) or not _same(self.last, after):
            return None
        return set(self.ids)


def _same(one: Maps, other: Maps) -> bool:
    return one[0] is other[0] and one[1] is other[1]
