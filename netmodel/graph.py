"""The one way the project turns a ``Topology`` into a weighted graph for shortest paths. Pure.

Callers (routing in ``sdnctl/pathing.py``, placement in ``placement/latency.py``) differ only in their
*weight rule*: a ``LinkWeight`` that gives each link direction a weight, or None for "no edge" (a
down link, an undiscovered one...). Everything else is decided here, once:

- Parallel links (several link directions u->v): the edge u->v weighs the **lowest** weight among
  them; links whose weight is None (or inf, or NaN) do not count.
- Zero weights are edges. scipy's csgraph treats an *absent* entry as "no edge" and a dense 0 as
  "no edge" too, but keeps an explicit 0 stored in a sparse matrix as a 0-weight edge. The matrix is
  therefore built from (row, col, weight) triplets with duplicates removed first, so every kept
  entry is stored explicitly and never summed or dropped; distances stay exact (no epsilon).
- Negative weights are refused (Dijkstra would be wrong).

``networkx_weight`` is the same rule as a networkx weight callable (for ``nx.shortest_path`` and
friends on ``Topology.graph``); ``link_matrix`` and ``arc_matrix`` give the scipy CSR form, ``arcs_into``
a sparse form of arcs already grouped by their head (parallel arcs kept, no sort).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy.sparse import csc_matrix, csr_matrix
from scipy.sparse.csgraph import dijkstra

from netmodel.ids import SwitchId
from netmodel.types import LinkAttrs, LinkId

if TYPE_CHECKING:
    from netmodel.topology import Topology

LinkWeight = Callable[[LinkId, LinkAttrs], float | None]
"""A weight rule: the weight of one link direction, or None when it is no edge."""

WeightFn = Callable[[SwitchId, SwitchId, Mapping[Any, Any]], float | None]
"""A networkx weight callable over ``Topology.graph`` (a MultiDiGraph keyed by ``LinkId``)."""


def usable_latency(*, require_discovered: bool = False) -> LinkWeight:
    """Latency (us) of a link that is up (and, with ``require_discovered``, seen by the controller)."""

    def weight(link: LinkId, attrs: LinkAttrs) -> float | None:
        if not attrs.up or (require_discovered and not attrs.discovered):
            return None
        return float(attrs.latency_us)

    return weight


def networkx_weight(topology: Topology, weight: LinkWeight) -> WeightFn:
    """``weight`` as a networkx callable: the lowest weight among the parallel links u->v, else None."""
    links = topology.links

    def edge_weight(u: SwitchId, v: SwitchId, keyed: Mapping[Any, Any]) -> float | None:
        best: float | None = None
        for link in keyed:
            w = weight(link, links[link])
            if w is None or not w < np.inf:  # inf and NaN are "no edge", as in the matrix
                continue
            if best is None or w < best:
                best = w
        return best

    return edge_weight


def arc_matrix(
    n: int, src: npt.NDArray[np.int64], dst: npt.NDArray[np.int64], weight: npt.NDArray[np.float64]
) -> csr_matrix:
    """An n x n CSR graph of arcs src[i] -> dst[i] weighing weight[i], under the module's rules.

    For callers that keep per-link weight arrays anyway (routing recomputes incrementally from them).
    """
    usable = np.isfinite(weight)
    src, dst, weight = src[usable], dst[usable], weight[usable]
    if len(weight) and float(weight.min()) < 0:
        raise ValueError(f"negative link weight {float(weight.min())!r}: shortest paths need weights >= 0")
    # Parallel links: sort by (src, dst, weight) and keep the first of each (src, dst) run.
    order = np.lexsort((weight, dst, src))
    first = np.ones(len(order), dtype=bool)
    if len(order) > 1:
        first[1:] = (src[order][1:] != src[order][:-1]) | (dst[order][1:] != dst[order][:-1])
    keep = order[first]
    # No duplicates are left, so the COO -> CSR conversion neither sums entries nor drops explicit zeros.
    return csr_matrix((weight[keep], (src[keep], dst[keep])), shape=(n, n))


def arcs_into(
    n: int, in_count: npt.NDArray[np.int64], src: npt.NDArray[np.int64], weight: npt.NDArray[np.float64]
) -> csc_matrix:
    """An n x n graph from arcs already grouped by the node they lead to: the first in_count[0] arcs
    lead to node 0, the next in_count[1] to node 1, ...; arc i leaves src[i] and weighs weight[i].

    For graphs built arc by arc in that order (no sort needed). Parallel arcs may stay: the matrix
    keeps every entry (nothing summed, explicit zeros kept), so Dijkstra relaxes each and the lowest
    weight counts, the module's rule. Weights must be finite and >= 0.
    """
    if len(weight) and not (float(weight.min()) >= 0 and np.isfinite(weight).all()):
        raise ValueError("arc weights must be finite and >= 0")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(in_count, out=indptr[1:])
    return csc_matrix((weight, src, indptr), shape=(n, n))


def link_matrix(
    topology: Topology, weight: LinkWeight, switches: Sequence[SwitchId] | None = None
) -> tuple[csr_matrix, Mapping[SwitchId, int]]:
    """The CSR graph of ``topology`` under ``weight``, and the row/column of each switch.

    ``switches`` picks the nodes and their order (default: every switch, sorted); links with an end
    outside them are no edge.
    """
    nodes = tuple(sorted(topology.switches)) if switches is None else tuple(switches)
    index = {dpid: i for i, dpid in enumerate(nodes)}
    src: list[int] = []
    dst: list[int] = []
    weights: list[float] = []
    for link, attrs in topology.links.items():
        i, j = index.get(link.src), index.get(link.dst)
        if i is None or j is None:
            continue
        w = weight(link, attrs)
        if w is None:
            continue
        src.append(i)
        dst.append(j)
        weights.append(w)
    matrix = arc_matrix(
        len(nodes),
        np.array(src, dtype=np.int64),
        np.array(dst, dtype=np.int64),
        np.array(weights, dtype=np.float64),
    )
    return matrix, index


def shortest_distances(
    matrix: csr_matrix | csc_matrix, indices: npt.ArrayLike | None = None
) -> npt.NDArray[np.float64]:
    """Directed Dijkstra distances from every row (or from ``indices``); inf when unreachable."""
    if indices is None:
        return np.asarray(dijkstra(matrix, directed=True), dtype=np.float64)
    return np.asarray(dijkstra(matrix, directed=True, indices=indices), dtype=np.float64)
