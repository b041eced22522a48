"""benchmarks/route_hysteresis.py: the same seeded corrections for both sides, and counts that add up."""

from __future__ import annotations

from benchmarks.route_hysteresis import corrections, live_fabric, run
from sdnctl.pathing import STICKY


def test_both_sides_see_the_same_corrections_and_count_what_they_changed() -> None:
    state = live_fabric(20, 10)
    series = corrections(state, 12, seed=3)
    assert series == corrections(state, 12, seed=3)
    assert all(150 <= abs(delta) <= 800 for _, delta in series)
    baseline, ours = run(state, series, None), run(state, series, STICKY)
    for figures in (baseline, ours):
        # (an entry towards a switch with no endpoint behind it changes no table)
        assert 0 <= figures["primaries_moved"] <= figures["entries_changed"] and figures["table_changes"] >= 0
    assert baseline["primaries_moved"] > 0  # the series moves routes at all
