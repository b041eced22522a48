"""Which filter left a refused request without a node: a bounded label for metrics (pure).

The scheduler's reasons are for a person ("Insufficient cpu on 2 nodes ..."); a metric needs a name
from a fixed set. This runs the profile's filters in order over the request's candidate nodes, as the
scheduler does for its first replica, and names the filter after which none was left.
"""

from __future__ import annotations

from placement.plugins import BandwidthFits, make_context
from placement.scheduler import Profile, candidate_mask
from placement.snapshot import ClusterSnapshot
from placement.types import PlacementRequest

NO_CANDIDATES = "no_candidates"
"""The request's candidate nodes (a migration's target) are none of the model's."""
OTHER = "other"
"""A node passes every filter for one replica: not every replica fits together, or no port is free."""
BANDWIDTH = BandwidthFits().name
"""The bandwidth admission refused it: the filter's, or (a profile without the filter) the orchestrator's
check before it publishes (``PlacementOrchestrator``), which every profile passes."""


def rejecting_filter(snapshot: ClusterSnapshot, request: PlacementRequest, profile: Profile) -> str:
    """The name of the filter that rejected the last candidate node, ``NO_CANDIDATES`` or ``OTHER``."""
    remaining = candidate_mask(snapshot, request)
    if not remaining.any():
        return NO_CANDIDATES
    ctx = make_context(snapshot, request)
    for plugin in profile.filters:
        ctx.considered = remaining
        remaining = remaining & plugin.passes(ctx)
        if not remaining.any():
            return plugin.name
    return OTHER


def refusal_labels(profile: Profile) -> tuple[str, ...]:
    """Every value a refused Place can be labelled with under ``profile``: ``rejecting_filter``'s and
    ``BANDWIDTH`` (the admission every profile passes)."""
    names = tuple(plugin.name for plugin in profile.filters)
    return (*names, *(() if BANDWIDTH in names else (BANDWIDTH,)), NO_CANDIDATES, OTHER)
