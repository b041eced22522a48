"""Latency from a user host to a compute node over the route the SDN would use. Pure.

The route engine (``sdnctl/pathing.py``) forwards on latency-shortest paths, so the latency a user
sees from a node is the shortest-path latency between their switches. Placement differs from routing
in one respect, on purpose: a link counts until it is known down (declared links before any switch
connects, so placement works on a cold fabric), where routing waits for discovery. The latency of a
link is ``LinkAttrs.latency_us``: the measured value when there is one, else the declared prior.
Access links (host to switch, node to switch) are ignored: latency(host, node) is
dist(host's switch, node's switch).

All pairs come from scipy's C Dijkstra on a CSR matrix, once per topology.

Cache: ``compute_switch_latencies`` remembers its last few results keyed by the *identity* of the
``Topology`` (topologies are immutable, and every change to links or switches makes a new object,
so identity is exact). Each entry holds a reference to its topology, so the id cannot be reused by
another object while cached. The cache is a tuple rebound in one assignment: threads may race and
compute the same matrix twice, never read a torn one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from netmodel.ids import HostId, NodeId, SwitchId
from netmodel.state import FabricState
from netmodel.topology import Topology

CACHE_SIZE = 4
_ZERO_WEIGHT_US = 1e-6
"""A 0 µs link weighs this instead: scipy drops explicit zeros from sparse graphs (no edge at all)."""


@dataclass(frozen=True, eq=False)
class SwitchLatencies:
    """Shortest one-way latency between every pair of switches, in microseconds (inf: unreachable)."""

    switches: tuple[SwitchId, ...]
    index: Mapping[SwitchId, int]
    distance_us: npt.NDArray[np.float64]

    def between_us(self, src: SwitchId, dst: SwitchId) -> float:
        i, j = self.index.get(src), self.index.get(dst)
        if i is None or j is None:
            return float("inf")
        return float(self.distance_us[i, j])


_recent: tuple[tuple[Topology, SwitchLatencies], ...] = ()


def compute_switch_latencies(topology: Topology) -> SwitchLatencies:
    """All-pairs shortest latency over usable links (cached per topology object, see module doc)."""
    global _recent
    for cached_topology, cached in _recent:
        if cached_topology is topology:
            return cached
    result = _all_pairs(topology)
    _recent = ((topology, result), *_recent[: CACHE_SIZE - 1])
    return result


def _all_pairs(topology: Topology) -> SwitchLatencies:
    switches = tuple(sorted(topology.switches))
    index = {dpid: i for i, dpid in enumerate(switches)}
    # Parallel links: the lowest latency among the usable ones (what the route engine would pick).
    best: dict[tuple[int, int], float] = {}
    for link, attrs in topology.links.items():
        if not attrs.up:
            continue
        i, j = index.get(link.src), index.get(link.dst)
        if i is None or j is None:
            continue
        weight = max(float(attrs.latency_us), _ZERO_WEIGHT_US)
        if weight < best.get((i, j), float("inf")):
            best[(i, j)] = weight
    n = len(switches)
    if not best:
        distance = np.full((n, n), np.inf)
        np.fill_diagonal(distance, 0.0)
    else:
        rows = np.fromiter((i for i, _ in best), dtype=np.int64, count=len(best))
        cols = np.fromiter((j for _, j in best), dtype=np.int64, count=len(best))
        weights = np.fromiter(best.values(), dtype=np.float64, count=len(best))
        graph = csr_matrix((weights, (rows, cols)), shape=(n, n))
        distance = np.asarray(dijkstra(graph, directed=True), dtype=np.float64)
    # Undo the zero-weight stand-in: sub-microsecond residue is not a latency.
    distance = np.where(np.isfinite(distance), np.round(distance), distance)
    distance.setflags(write=False)
    return SwitchLatencies(switches, index, distance)


def latency_ms(state: FabricState, host: HostId, node: NodeId) -> float:
    """One host-to-node latency in ms over the route (inf when unreachable or location unknown)."""
    attachment = state.hosts[host].attachment
    if attachment is None:
        return float("inf")
    latencies = compute_switch_latencies(state.topology)
    return latencies.between_us(attachment.switch, state.nodes[node].attachment.switch) / 1000.0
