"""Latency from a user host to a compute node over the route the SDN would use. Pure.

The route engine (``sdnctl/pathing.py``) forwards on latency-shortest paths, so the latency a user
sees from a node is the shortest-path latency between their switches. Placement differs from routing
in one respect, on purpose: a link counts until it is known down (declared links before any switch
connects, so placement works on a cold fabric), where routing waits for discovery. The latency of a
link is ``LinkAttrs.latency_us``: the measured value when there is one, else the declared prior.
Access links (host to switch, node to switch) are ignored: latency(host, node) is
dist(host's switch, node's switch).

All pairs come from scipy's C Dijkstra on the CSR matrix of ``netmodel.graph.link_matrix`` (which
decides parallel links and 0 us links for routing and placement alike); this module keeps only its
weight rule, ``usable_latency()``.

Nothing here caches. A caller that asks for the same topology often holds a ``LatencyCache``
(the orchestrator does, for its snapshots and its gRPC answers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from netmodel.graph import link_matrix, shortest_distances, usable_latency
from netmodel.ids import HostId, NodeId, SwitchId
from netmodel.state import FabricState
from netmodel.topology import Topology

CACHE_SIZE = 4


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


def compute_switch_latencies(topology: Topology) -> SwitchLatencies:
    """All-pairs shortest latency over usable links (declared ones count until known down)."""
    matrix, index = link_matrix(topology, usable_latency())
    distance = shortest_distances(matrix)
    distance.setflags(write=False)
    return SwitchLatencies(tuple(index), index, distance)


class LatencyCache:
    """The latencies of the last few topologies, keyed by the *identity* of the ``Topology``.

    Topologies are immutable and every change to links or switches makes a new object, so identity
    is exact; each entry holds its topology, so the id cannot be reused by another object while
    cached. The entries are a tuple rebound in one assignment: threads may race and compute the same
    matrix twice, never read a torn one.
    """

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._recent: tuple[tuple[Topology, SwitchLatencies], ...] = ()

    def of(self, topology: Topology) -> SwitchLatencies:
        for cached_topology, cached in self._recent:
            if cached_topology is topology:
                return cached
        result = compute_switch_latencies(topology)
        self._recent = ((topology, result), *self._recent[: self._size - 1])
        return result


def latency_ms(state: FabricState, host: HostId, node: NodeId, cache: LatencyCache | None = None) -> float:
    """One host-to-node latency in ms over the route (inf when unreachable or location unknown)."""
    attachment = state.hosts[host].attachment
    if attachment is None:
        return float("inf")
    latencies = cache.of(state.topology) if cache is not None else compute_switch_latencies(state.topology)
    return latencies.between_us(attachment.switch, state.nodes[node].attachment.switch) / 1000.0
