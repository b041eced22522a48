"""Values of the placement core: what is asked (requests, constraints) and what is decided. Pure.

A workload's ``Constraints`` (netmodel's ``PlacementConstraints``) travel on the workload itself; a
workload without them follows what its service declares in the fabric file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netmodel.ids import NodeId, ServiceName, SiteId
from netmodel.types import AffinityScope, PlacementConstraints, Resources, Service, Tier
from netmodel.types import AffinityTerm as AffinityTerm  # re-exported: placement's vocabulary

# Constraints live on netmodel.Workload (so they survive a restart); these names are placement's.
Scope = AffinityScope
Constraints = PlacementConstraints


def declared_constraints(service: Service) -> Constraints:
    """What the fabric file says about a service (its SLO and its users)."""
    return Constraints(max_latency_ms=service.max_latency_ms, near=service.near)


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """Place ``replicas`` new instances of ``service``, each needing ``resources``.

    ``candidates`` limits the nodes considered (a migration to a node or a site); ``avoid`` removes
    some (a migration never lands where the instance already is). ``bandwidth_mbps`` overrides what
    the service reserves per instance (``netmodel.bandwidth``).
    """

    service: ServiceName
    resources: Resources
    constraints: Constraints = field(default_factory=Constraints)
    replicas: int = 1
    candidates: frozenset[NodeId] | None = None
    avoid: frozenset[NodeId] = frozenset()
    bandwidth_mbps: float | None = None
    """Each instance's bandwidth reservation (``Workload.bandwidth_mbps``); None: its service's."""


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
