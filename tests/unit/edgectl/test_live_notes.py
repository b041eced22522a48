"""Timeline entries from the placement engine and the PKI, from the real components (docs/dashboard.md)."""

from __future__ import annotations

from typing import Any

from edgectl.live_notes import placement_notes
from netmodel.ids import NodeId
from placement.orchestrator import MigrationTarget, PlacementOrchestrator
from tests.unit.placement.helpers import request, running_bus

Noted = list[tuple[str, str, dict[str, Any]]]


def recorder() -> tuple[Noted, Any]:
    noted: Noted = []
    return noted, lambda kind, text, **fields: noted.append((kind, text, fields))


def test_a_migration_notes_its_start_with_the_reason_convergence_and_completion() -> None:
    noted, note = recorder()
    with running_bus() as bus:
        orchestrator = PlacementOrchestrator(bus, [lambda _generation: True])
        orchestrator.events.add_listener(placement_notes(note))
        (old,) = orchestrator.place(request(near=("u1",), slo=5)).workloads
        result = orchestrator.migrate(old.id, MigrationTarget(node=NodeId("ea-n1")))
    kinds = [kind for kind, _, _ in noted]
    assert kinds == ["MigrationStarted", "MigrationConverged", "MigrationCompleted"]  # not PLACED/REMOVED
    started, converged, _ = noted
    assert started[1].startswith("migration ") and str(old.id) in started[1] and str(result.new.id) in started[1]
    assert "users' mean request time 5.0 -> 5.0 ms" in started[1]  # placement's reason
    assert started[1].count("users' mean request time") == 1
    assert started[2] == {"service": "web"}
    assert "probes " in converged[1] and " ms" in converged[1]
    migration_id = started[1].split(";")[0]
    assert all(text.startswith(migration_id) for _, text, _ in noted)
