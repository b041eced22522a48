"""Declared replicas: what placement must do so each service runs the instances the desired state asks for.

Pure. ``plan_replicas`` is used twice: by ``edgectl diff`` on a hypothetical state (nothing applied)
and by the replica reconciler on the live model (which then places, drains and moves through the
orchestrator, make-before-break). Only ``declared`` workloads count: instances placed by a Place call
are the operator's own and are never drained to meet a count.
"""

from __future__ import annotations

from dataclasses import dataclass

from netmodel.ids import NodeId, ServiceName, WorkloadId
from netmodel.state import FabricState


@dataclass(frozen=True, slots=True)
class PlannedPlacement:
    """A new declared instance of ``service`` would go to ``node`` (None: it fits nowhere; ``reason`` says why)."""

    service: ServiceName
    node: NodeId | None
    reason: str


@dataclass(frozen=True, slots=True)
class PlannedEviction:
    workload: WorkloadId
    service: ServiceName
    node: NodeId | None
    reason: str


@dataclass(frozen=True, slots=True)
class PlannedMove:
    """A placed instance would move (make-before-break) from ``from_node`` to ``to_node`` (None: nowhere fits)."""

    workload: WorkloadId
    service: ServiceName
    from_node: NodeId | None
    to_node: NodeId | None
    reason: str


@dataclass(frozen=True, slots=True)
class ReplicaPlan:
    placed: tuple[PlannedPlacement, ...] = ()
    evicted: tuple[PlannedEviction, ...] = ()
    moved: tuple[PlannedMove, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.placed or self.evicted or self.moved)


def plan_replicas(state: FabricState, *, previous: FabricState | None = None) -> ReplicaPlan:
    """What placement would do on ``state`` so every service has its declared replicas.

    ``previous`` is the state before a desired-state change: an instance that met its service's SLO
    there and breaks a tightened one in ``state`` is moved (measurement noise alone never moves one).
    """
    raise NotImplementedError  # built with the replica reconciler
