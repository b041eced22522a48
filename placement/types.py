"""Values of the placement core: what is asked (requests, constraints) and what is decided. Pure.

``Constraints`` belongs on ``netmodel.Workload`` in the end (see docs/placement.md, "model change"):
until then the placement service keeps each workload's constraints beside the model and falls back
to the constraints its service declares in the fabric file.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from netmodel.ids import HostId, NodeId, ServiceName, SiteId
from netmodel.types import Resources, Service, Tier


class Scope(enum.StrEnum):
    """Where an affinity term looks for the other service: on the same node, or anywhere in the same site."""

    NODE = "node"
    SITE = "site"


@dataclass(frozen=True, slots=True)
class AffinityTerm:
    service: ServiceName
    scope: Scope = Scope.NODE

    def __str__(self) -> str:
        return f"{self.service} (same {self.scope.value})"


@dataclass(frozen=True, slots=True)
class Constraints:
    """Hard rules for where an instance may run.

    ``tiers``: allowed tiers (empty: any). ``max_latency_ms``: the SLO, one-way over the route, from
    every host in ``near``; with ``near`` and no SLO, the node must merely be reachable from them.
    ``affinity``: must share a node (or site) with an instance of each named service;
    ``anti_affinity``: must not.
    """

    tiers: frozenset[Tier] = frozenset()
    max_latency_ms: float | None = None
    near: tuple[HostId, ...] = ()
    affinity: tuple[AffinityTerm, ...] = ()
    anti_affinity: tuple[AffinityTerm, ...] = ()


def declared_constraints(service: Service) -> Constraints:
    """What the fabric file says about a service (its SLO and its users)."""
    return Constraints(max_latency_ms=service.max_latency_ms, near=service.near)


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """Place ``replicas`` new instances of ``service``, each needing ``resources``.

    ``candidates`` limits the nodes considered (a migration to a node or a site); ``avoid`` removes
    some (a migration never lands where the instance already is).
    """

    service: ServiceName
    resources: Resources
    constraints: Constraints = field(default_factory=Constraints)
    replicas: int = 1
    candidates: frozenset[NodeId] | None = None
    avoid: frozenset[NodeId] = frozenset()


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where one replica goes, and what it will see from there."""

    node: NodeId
    site: SiteId
    tier: Tier
    worst_latency_ms: float | None
    """The largest latency from the request's ``near`` hosts (None when it has none)."""
    score: float


@dataclass(frozen=True, slots=True)
class Decision:
    request: PlacementRequest
    assignments: tuple[Assignment, ...]


@dataclass(frozen=True, slots=True)
class Unschedulable:
    """No placement: ``reasons`` are for a person ("Insufficient cpu on 2 nodes ...")."""

    request: PlacementRequest
    reasons: tuple[str, ...]

    @property
    def message(self) -> str:
        """One line: "0/6 nodes are available: Insufficient cpu on 2 nodes (...); 4 nodes down: ..."."""
        text = ""
        for reason in self.reasons:
            separator = ": " if text.endswith("are available") else "; "
            text = f"{text}{separator}{reason}" if text else reason
        return text
