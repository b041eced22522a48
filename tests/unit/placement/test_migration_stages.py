"""Migration stage durations from the placement steps (pure), and the hub's listeners that feed them."""

from __future__ import annotations

import pytest

from placement.migration_stages import MigrationStages
from placement.watch import PlacementEvents, StepKind


def test_a_completed_move_times_each_stage_its_probes_and_the_total() -> None:
    stages = MigrationStages()
    assert stages.on_step("MIGRATION_STARTED", "mig-1", 100.0).stages == ()
    assert stages.on_step("CONVERGENCE_WAITING", "mig-1", 100.5).stages == (("place", pytest.approx(0.5)),)
    converged = stages.on_step("CONVERGED", "mig-1", 102.0, (("routes", 0.4), ("sidecars", 1.5)))
    assert converged.stages == (("converge", pytest.approx(1.5)),)
    assert converged.probes == (("routes", 0.4), ("sidecars", 1.5))
    done = stages.on_step("MIGRATION_COMPLETED", "mig-1", 102.25)
    assert done.stages == (("withdraw", pytest.approx(0.25)), ("total", pytest.approx(2.25)))
    assert done.outcome == "completed"
    assert stages.open == 0


def test_a_rolled_back_move_has_a_total_and_no_withdraw_stage() -> None:
    stages = MigrationStages()
    stages.on_step("MIGRATION_STARTED", "mig-2", 0.0)
    stages.on_step("CONVERGENCE_WAITING", "mig-2", 0.1)
    done = stages.on_step("MIGRATION_ROLLED_BACK", "mig-2", 10.1)
    assert done.stages == (("total", pytest.approx(10.1)),) and done.outcome == "rolled_back"


def test_a_failover_that_withdraws_without_converging_has_no_withdraw_stage() -> None:
    stages = MigrationStages()
    stages.on_step("MIGRATION_STARTED", "mig-3", 0.0)
    stages.on_step("CONVERGENCE_WAITING", "mig-3", 0.1)
    done = stages.on_step("MIGRATION_COMPLETED", "mig-3", 10.0)
    assert [name for name, _ in done.stages] == ["total"] and done.outcome == "completed"


def test_steps_of_unknown_moves_other_steps_and_repeats_time_nothing() -> None:
    stages = MigrationStages()
    assert stages.on_step("CONVERGED", "mig-9", 1.0) == stages.on_step("PLACED", "", 1.0)
    stages.on_step("MIGRATION_STARTED", "mig-1", 0.0)
    assert stages.on_step("CONVERGENCE_WAITING", "mig-1", 1.0).stages
    assert stages.on_step("CONVERGENCE_WAITING", "mig-1", 2.0).stages == ()
    assert stages.on_step("CONVERGED", "mig-1", 0.5).stages == (("converge", 0.0),)  # a clock step back


def test_moves_that_never_end_are_forgotten_oldest_first() -> None:
    stages = MigrationStages(max_open=2)
    for n in range(3):
        stages.on_step("MIGRATION_STARTED", f"mig-{n}", float(n))
    assert stages.open == 2
    assert stages.on_step("MIGRATION_COMPLETED", "mig-0", 9.0).outcome is None
    assert stages.on_step("MIGRATION_COMPLETED", "mig-2", 9.0).outcome == "completed"


def test_hub_listeners_see_every_step_in_order_and_a_failing_one_breaks_nothing() -> None:
    hub = PlacementEvents(clock=lambda: 5.0)
    seen: list[tuple[int, StepKind]] = []

    def broken(_step: object) -> None:
        raise RuntimeError("observer bug")

    hub.add_listener(broken)
    hub.add_listener(lambda step: seen.append((step.sequence, step.kind)))
    watcher = hub.subscribe()
    hub.emit(StepKind.MIGRATION_STARTED, migration_id="mig-1")
    hub.emit(StepKind.CONVERGED, migration_id="mig-1")
    assert seen == [(1, StepKind.MIGRATION_STARTED), (2, StepKind.CONVERGED)]
    first = watcher.get(timeout=1)
    assert first is not None and first.kind is StepKind.MIGRATION_STARTED
