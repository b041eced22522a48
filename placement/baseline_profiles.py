"""Baseline placement profiles: what two well-known Kubernetes schedulers would decide here. Pure.

They exist to be measured against (``benchmarks/service_paths.py``); each is a ``Profile`` of this
package's filters and scores, so ``Place`` (its ``profile`` field) and ``edgectl run --placement-profile``
take them by name (``all_profiles``).

**kube-default-like**: kube-scheduler's default scoring, which knows nothing of the network. Filters:
node health (NodeUnschedulable, taints of unreachable nodes), tiers and service affinity (NodeAffinity,
InterPodAffinity) and resources (NodeResourcesFit); no latency SLO. Scores, in kube's points (100 per
plugin at most, times its default weight): NodeResourcesFit LeastAllocated and
NodeResourcesBalancedAllocation (weight 1 each: ``BalanceScore`` is both, 0..2, times 100) and
PodTopologySpread's default constraints over nodes and zones (weight 2: ``NodeSpread`` and ``SiteSpread``,
100 each). Kept out: every latency score and the tier cost. Unlike kube, the spread counts a node (site)
as taken only until the service has its declared replicas (``plugins._spread``), and scores are not
rescaled per cycle.

**diktyo-like**: the network-aware scheduling of scheduler-plugins (Diktyo, IEEE TNSM 2023), as its
NetworkOverhead README configures it: NetworkOverhead (weight 5) and BalancedAllocation (weight 1), the
NodeResourcesFit score disabled (its filter kept), PodTopologySpread left on (weight 2). The AppGroup's
dependencies are the services' declared ``calls``. ``NetworkOverhead`` scores a node by minus the
accumulated network cost to every instance already placed of a dependency: 0 on the same node, 1 in the
same zone (here: site), else the zone pair's cost from a static NetworkTopology, normalised per cycle so
the cheapest node gets 100 and the dearest 0 (nodes score alike while no dependency has an instance). The
NetworkTopology here is the fabric's *declared* link latencies (shortest path over the priors between the
two sites' nodes, in ms; 100 where none), never a measurement: static, as the CRD is.

What was left out of Diktyo, and why:
- the **TopologicalSort** queue order (an AppGroup's pods scheduled in dependency order): the controller's
  replica pass decides the order of services, and profiles only score. To keep the outcome from resting on
  that order, a dependency here is any service the placed one calls *or* that calls it; upstream counts the
  pod's own dependencies only (what it calls), which the queue order places first.
- the NetworkOverhead **filter** (a node is refused when more dependencies exceed their ``maxNetworkCost``
  than meet it): services declare no per-dependency cost bound.
- ``minBandwidth`` and the region level of costs (a site is both zone and region here).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from netmodel.graph import link_matrix, shortest_distances
from netmodel.ids import ServiceName
from netmodel.types import LinkAttrs, LinkId
from placement.plugins import (
    BalanceScore,
    CycleContext,
    NodeHealthy,
    NodeSpread,
    ResourcesFit,
    ServiceAffinity,
    SiteSpread,
    TierAllowed,
)
from placement.scheduler import PROFILES, Profile
from placement.snapshot import ClusterSnapshot, Floats

KUBE_POINTS = 100.0
"""kube-scheduler's MaxNodeScore: what one plugin gives its best node, before the plugin's weight."""
SAME_NODE_COST = 0.0
SAME_ZONE_COST = 1.0
MAX_COST = 100.0
"""NetworkOverhead's costs: same node, same zone, and a zone pair the NetworkTopology has no cost for."""

BASELINE_FILTERS = (NodeHealthy(), TierAllowed(), ServiceAffinity(), ResourcesFit())
"""Health, placement rules and resources; no latency SLO (neither scheduler has one)."""


def dependencies_of(snapshot: ClusterSnapshot, service: ServiceName) -> tuple[ServiceName, ...]:
    """The services ``service`` calls and those that call it (the AppGroup's dependencies, both ways)."""
    services = snapshot.state.services
    callees = services[service].calls if service in services else ()
    callers = tuple(name for name, other in services.items() if service in other.calls)
    return tuple(sorted({*callees, *callers} - {service}))


def declared_node_costs(snapshot: ClusterSnapshot) -> Floats:
    """Node x node NetworkOverhead cost: 0 on one node, 1 within a site, else the two sites' cost (the
    shortest declared latency between any node of one and any node of the other, ms; ``MAX_COST`` when the
    declared links do not connect them)."""
    state = snapshot.state
    switches = [state.nodes[node].attachment.switch for node in snapshot.node_ids]

    def declared(_link: LinkId, attrs: LinkAttrs) -> float | None:
        return None if attrs.declared_latency_us is None else float(attrs.declared_latency_us)

    matrix, index = link_matrix(state.topology, declared)
    rows = np.array([index.get(switch, -1) for switch in switches], dtype=np.int64)
    known = rows >= 0
    node_ms = np.full((len(switches), len(switches)), np.inf)
    if known.any():
        sources = np.unique(rows[known])
        distances = shortest_distances(matrix, sources) / 1000.0
        node_ms[np.ix_(known, known)] = distances[np.searchsorted(sources, rows[known])][:, rows[known]]
    sites = snapshot.site_of
    site_ms = np.full((len(snapshot.site_ids), len(snapshot.site_ids)), np.inf)
    np.minimum.at(site_ms, (sites[:, None].repeat(len(sites), 1), sites[None, :].repeat(len(sites), 0)), node_ms)
    costs = site_ms[sites[:, None], sites[None, :]]
    costs = np.where(np.isfinite(costs), costs, MAX_COST)
    costs[sites[:, None] == sites[None, :]] = SAME_ZONE_COST
    np.fill_diagonal(costs, SAME_NODE_COST)
    return np.asarray(costs, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class NetworkOverhead:
    """Diktyo's NetworkOverhead score (see the module doc): 0..100, the node with the lowest accumulated
    static cost to the placed instances of the service's dependencies highest."""

    name: str = "NetworkOverhead"

    def score(self, ctx: CycleContext) -> Floats:
        snapshot = ctx.snapshot
        counts = np.zeros(len(snapshot))
        for dependency in dependencies_of(snapshot, ctx.request.service):
            counts += snapshot.instances_of(dependency)
        if not counts.any():
            return np.zeros(len(snapshot))  # nothing to be near yet: every node alike
        cost = declared_node_costs(snapshot) @ counts
        candidates = snapshot.healthy if snapshot.healthy.any() else snapshot.all_nodes
        low, high = float(cost[candidates].min()), float(cost[candidates].max())
        if high == low:
            return np.full(len(snapshot), KUBE_POINTS)
        result: Floats = KUBE_POINTS * (1.0 - (cost - low) / (high - low))
        return result


@dataclass(frozen=True, slots=True)
class BalancedAllocation:
    """kube's NodeResourcesBalancedAllocation alone: cpu and memory used in proportion after placing,
    0..1 (minus half the difference of the two utilisations, the standard deviation of two values)."""

    name: str = "BalancedAllocation"

    def score(self, ctx: CycleContext) -> Floats:
        s, need = ctx.snapshot, ctx.request.resources
        cpu = _utilisation(s.used_cpu + need.cpu_millis, s.capacity_cpu)
        memory = _utilisation(s.used_memory + need.memory_mib, s.capacity_memory)
        result: Floats = 1.0 - np.abs(cpu - memory) / 2.0
        return result


def _utilisation(used: npt.NDArray[np.int64], capacity: npt.NDArray[np.int64]) -> Floats:
    """used / capacity, at most 1 (a node without capacity counts as full)."""
    out = np.ones(len(capacity))
    np.divide(used, capacity, out=out, where=capacity > 0)
    return np.minimum(out, 1.0)


KUBE_DEFAULT_LIKE_PROFILE = Profile(
    "kube-default-like",
    BASELINE_FILTERS,
    ((BalanceScore(), KUBE_POINTS), (NodeSpread(), KUBE_POINTS), (SiteSpread(), KUBE_POINTS)),
)
"""kube-scheduler's default scores: least allocated and balanced resources, spread over nodes and zones."""

DIKTYO_LIKE_PROFILE = Profile(
    "diktyo-like",
    BASELINE_FILTERS,
    (
        (NetworkOverhead(), 5.0),
        (BalancedAllocation(), KUBE_POINTS),
        (NodeSpread(), KUBE_POINTS),
        (SiteSpread(), KUBE_POINTS),
    ),
)
"""Diktyo's network-aware scoring: near the placed instances of callers and callees by static zone costs."""

BASELINE_PROFILES: Mapping[str, Profile] = {p.name: p for p in (KUBE_DEFAULT_LIKE_PROFILE, DIKTYO_LIKE_PROFILE)}


def all_profiles() -> Mapping[str, Profile]:
    """Every profile a name may choose: the scheduler's own (``scheduler.PROFILES``) and the baselines."""
    return {**PROFILES, **BASELINE_PROFILES}
