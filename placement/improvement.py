"""Whether moving an instance elsewhere gains anything: ``migrate --to best`` refuses a move that does not. Pure.

The best *other* node always exists while any other node fits, so without this check a drain to "best" moves
an instance that already sits on the best node to a worse one (further from its users, nearer its SLO).
"""

from __future__ import annotations

from placement.plugins import make_context
from placement.scheduler import DEFAULT_PROFILE, IMPROVEMENT_EPSILON, Profile, _assignment, feasible_nodes, total_score
from placement.snapshot import ClusterSnapshot
from placement.types import Assignment, PlacementRequest


def improves(current_score: float, best_score: float) -> bool:
    """Is the best other node strictly better than where the instance is (``-inf``: it cannot stay)?"""
    return best_score > current_score + IMPROVEMENT_EPSILON


def where_it_is(
    snapshot: ClusterSnapshot, request: PlacementRequest, i: int, profile: Profile = DEFAULT_PROFILE
) -> Assignment:
    """The request's assignment to node ``i`` as the scheduler would score it; score ``-inf`` if node ``i`` no
    longer passes the filters (down, SLO broken). Call it with the instance already forgotten from the
    snapshot and before deciding its move, so both scores are of the same layout."""
    ctx = make_context(snapshot, request)
    feasible = feasible_nodes(ctx, profile, snapshot.all_nodes)
    score = float(total_score(ctx, profile)[i]) if feasible[i] else float("-inf")
    return _assignment(ctx, i, score)


def no_gain_message(workload: str, here: Assignment, best: Assignment) -> str:
    def latency(a: Assignment) -> str:
        return f", {a.worst_latency_ms:.2f} ms from its users" if a.worst_latency_ms is not None else ""

    return (
        f"{workload} is already on the best node {here.node} (score {here.score:.3f}{latency(here)}); the best "
        f"other node, {best.node}, is no better (score {best.score:.3f}{latency(best)}): the move would gain "
        "nothing (force it with --force)"
    )
