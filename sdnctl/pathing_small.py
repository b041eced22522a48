"""The incremental route update of ``pathing.py`` in plain Python, for small fabrics. Pure.

On a few dozen switches the numpy path's fixed cost (a hundred-odd array calls of a few
microseconds each) outweighs the work itself, and networkx, all Python, is faster than it. This
module does the same steps with lists and dicts, touching only the pairs a change can affect, and
must choose exactly what the numpy path chooses (same ties: the first link in out-link order).
``pathing.compute_routes`` picks it below a measured size; the property tests hold both equal to a
full recompute.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

INF = float("inf")
NO_LINK = -1


@dataclass(frozen=True, slots=True)
class Graph:
    """Link endpoints and each switch's out-links (in next-hop tie order) and in-links."""

    src: Sequence[int]
    dst: Sequence[int]
    out_links: Sequence[Sequence[int]]
    in_links: Sequence[Sequence[int]]


@dataclass(slots=True)
class Update:
    """What changed: routing distances (``moved``) and next hops, per (switch, destination)."""

    moved: dict[tuple[int, int], float]
    next_hops: dict[tuple[int, int], tuple[int, int]]  # (primary, backup) link indexes, NO_LINK if none


def update(
    graph: Graph,
    routing: list[list[float]],
    next_hops: tuple[list[list[int]], list[list[int]]],
    old_weight: Sequence[float],
    weight: Sequence[float],
    changed: Sequence[int],
    keep: tuple[float, float] | None = None,
) -> Update:
    """Apply the link weight changes ``changed`` (old_weight -> weight) to ``routing`` in place, and
    recompute the next hops (``next_hops``: the previous primaries and backups) of every entry that
    reads a changed distance or a changed link. With ``keep`` (the hysteresis: its least slack in
    routing units and its fraction of the shortest), an entry keeps its previous primary where it may."""
    n = len(routing)
    moved: dict[tuple[int, int], float] = {}
    worse = [link for link in changed if weight[link] > old_weight[link]]
    only_worse = len(worse) == len(changed)
    primary, backup = next_hops
    if worse:
        affected = _pairs_using(graph, routing, old_weight, worse)
        for (u, d), value in _repair(graph, routing, weight, affected).items():
            if value != routing[u][d]:
                moved[(u, d)] = value
        for (u, d), value in moved.items():
            routing[u][d] = value
    for link in changed:
        w = weight[link]
        if w >= old_weight[link]:
            continue
        # One better link x->y: d(u, d) = min(d(u, d), d(u, x) + w + d(y, d)), exactly.
        x, y = graph.src[link], graph.dst[link]
        from_y = routing[y]
        for u in range(n):
            row = routing[u]
            to_y = row[x] + w
            if to_y == INF:
                continue
            for d in range(n):
                via = to_y + from_y[d]
                if via < row[d]:
                    row[d] = via
                    moved[(u, d)] = via
    entries: set[tuple[int, int]] = set(moved)
    whole_rows: set[int] = set()
    if only_worse:
        # A link that only got worse changes the entries of its source that chose it, no other.
        for link in changed:
            s = graph.src[link]
            chose = primary[s], backup[s]
            entries.update((s, d) for d in range(n) if chose[0][d] == link or chose[1][d] == link)
    else:
        whole_rows.update(graph.src[link] for link in changed)  # may now be anyone's next hop
    dst = graph.dst
    for v, d in moved:
        for link in graph.in_links[v]:
            s = graph.src[link]
            if d == s:
                whole_rows.add(s)  # d(v, s) moved for a neighbour v of s: every LFA test of s reads it
            elif only_worse:
                # Every moved distance grew: (s, d) can change only where v is its primary's or
                # backup's neighbour (else v stays unchosen), as in the numpy path.
                first, second = primary[s][d], backup[s][d]
                if (first != NO_LINK and dst[first] == v) or (second != NO_LINK and dst[second] == v):
                    entries.add((s, d))
            else:
                entries.add((s, d))
    for s in whole_rows:
        entries.update((s, d) for d in range(n))
    if keep is None:
        chosen = {(s, d): _next_hop(graph, routing, weight, s, d) for s, d in entries}
    else:
        chosen = {(s, d): _next_hop(graph, routing, weight, s, d, primary[s][d], keep) for s, d in entries}
    return Update(moved, chosen)


def _pairs_using(
    graph: Graph, routing: list[list[float]], old_weight: Sequence[float], worse: Sequence[int]
) -> set[tuple[int, int]]:
    """(u, d) with a shortest path over one of the ``worse`` links (old weights, old distances)."""
    n = len(routing)
    affected: set[tuple[int, int]] = set()
    for link in worse:
        w = old_weight[link]
        if w == INF:
            continue
        x, y = graph.src[link], graph.dst[link]
        from_x, from_y = routing[x], routing[y]
        cols = [d for d in range(n) if from_y[d] != INF and w + from_y[d] == from_x[d]]
        for u in range(n):
            row = routing[u]
            to_y = row[x] + w
            if to_y == INF or to_y != row[y]:
                continue
            affected.update((u, d) for d in cols if to_y + from_y[d] == row[d])
    return affected


def _repair(
    graph: Graph, routing: list[list[float]], weight: Sequence[float], affected: set[tuple[int, int]]
) -> dict[tuple[int, int], float]:
    """New distances of the affected pairs: per destination, Dijkstra over its affected sources,
    seeded from the neighbours whose distance stands."""
    by_dst: dict[int, set[int]] = {}
    for u, d in affected:
        by_dst.setdefault(d, set()).add(u)
    out: dict[tuple[int, int], float] = {}
    for d, sources in by_dst.items():
        best: dict[int, float] = {}
        for u in sources:
            value = INF
            for link in graph.out_links[u]:
                v = graph.dst[link]
                if v not in sources:
                    value = min(value, weight[link] + routing[v][d])
            best[u] = value
        heap = [(value, u) for u, value in best.items() if value < INF]
        heapq.heapify(heap)
        done: set[int] = set()
        while heap:
            value, v = heapq.heappop(heap)
            if v in done:
                continue
            done.add(v)
            for link in graph.in_links[v]:
                u = graph.src[link]
                if u in sources and u not in done:
                    candidate = value + weight[link]
                    if candidate < best[u]:
                        best[u] = candidate
                        heapq.heappush(heap, (candidate, u))
        for u, value in best.items():
            out[(u, d)] = value
    return out


def _next_hop(
    graph: Graph,
    routing: list[list[float]],
    weight: Sequence[float],
    s: int,
    d: int,
    previous: int = NO_LINK,
    keep: tuple[float, float] | None = None,
) -> tuple[int, int]:
    """(primary, backup) of switch s towards d: the numpy path's choice, tie for tie; with ``keep``, the
    ``previous`` primary while its neighbour is closer to d than s and its cost within the slack."""
    links = graph.out_links[s]
    if not links or s == d:
        return NO_LINK, NO_LINK
    dst = graph.dst
    costs = [weight[link] + routing[dst[link]][d] for link in links]
    lowest = min(costs)
    if lowest == INF:
        return NO_LINK, NO_LINK
    best = costs.index(lowest)  # the first of equal minima, as argmin
    if keep is not None and previous != links[best] and previous != NO_LINK and previous in links:
        kept = links.index(previous)
        if routing[dst[previous]][d] < routing[s][d] and costs[kept] <= lowest + max(keep[0], keep[1] * lowest):
            best = kept
    if len(links) == 1:
        return links[best], NO_LINK
    # Loop-free alternate: neighbour v with d(v, d) < d(v, s) + d(s, d), or the primary's neighbour;
    # the cheapest such, the first of equal ones.
    best_neighbour = dst[links[best]]
    to_d = routing[s][d]
    second, second_cost = NO_LINK, INF
    for j, link in enumerate(links):
        cost = costs[j]
        if j == best or cost >= second_cost:
            continue
        v = dst[link]
        if v == best_neighbour or routing[v][d] < routing[v][s] + to_d:
            second, second_cost = link, cost
    return links[best], second
