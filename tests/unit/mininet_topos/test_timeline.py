"""MigrationTimeline and fill_stages: the stages of one move from the Watch events, relative to its
decision, and the whole chain."""

from __future__ import annotations

import pytest

from mininet_topos.timeline import ENDED, Event, MigrationTimeline, fill_stages


def timeline(**stages: float | None) -> MigrationTimeline:
    t = MigrationTimeline("mig-1", "api-1", "api-2", "ea-n1", "c-n1", requested_at=99.0, decided_at=100.0)
    for name, value in stages.items():
        setattr(t, name, value)
    return t


def test_the_chain_ends_when_routes_sidecars_and_a_first_request_are_all_done() -> None:
    t = timeline(routes_at=100.005, sidecars_at=100.120, first_request_at=100.300, completed_at=100.125)
    assert t.chain_s == pytest.approx(0.300)
    stages = dict(t.stages())
    assert stages["placement decided"] == 0.0
    assert stages["flows barrier-confirmed"] == pytest.approx(0.005)
    assert stages["old instance withdrawn"] == pytest.approx(0.125)
    # A first request can come before the last ACK is counted: the chain still waits for both.
    assert timeline(routes_at=100.005, sidecars_at=100.4, first_request_at=100.3).chain_s == pytest.approx(0.4)


def test_a_stage_that_never_came_leaves_the_chain_open() -> None:
    t = timeline(routes_at=100.005, sidecars_at=100.120)
    assert t.chain_s is None
    assert dict(t.stages())["first mTLS request"] is None
    assert timeline(decided_at=None).chain_s is None


def event(kind: str, at: float, migration: str = "mig-1", **fields: object) -> Event:
    values: dict[str, object] = {
        "generation": 7,
        "workload_id": "api-2",
        "node": "c-n1",
        "service": "api",
        "from_workload_id": "api-1",
        "message": "",
    }
    values.update(fields)
    return Event(kind, at, migration_id=migration, **values)  # type: ignore[arg-type]


def test_stages_come_from_the_migration_events() -> None:
    t = MigrationTimeline("mig-1", "api-1", "", "ea-n1", "", requested_at=99.0)
    fill_stages(
        t,
        [
            event("MIGRATION_STARTED", 100.0, workload_id="api-1", node="ea-n1"),
            event("PLACED", 100.002, migration=""),
            event("CONVERGENCE_WAITING", 100.003),
            event("CONVERGED", 100.150, converged_after=(("routes", 0.004), ("sidecars", 0.147))),
            event("MIGRATION_COMPLETED", 100.152),
            event("MIGRATION_STARTED", 100.5, migration="mig-2"),  # another move: not this one's
        ],
    )
    assert (t.new, t.to_node, t.placed_generation) == ("api-2", "c-n1", 7)
    assert t.decided_at == 100.0 and t.completed_at == 100.152
    assert t.routes_at == pytest.approx(100.007) and t.sidecars_at == pytest.approx(100.150)
    assert t.error == ""


def test_a_failover_move_shares_the_one_wait_and_says_when_it_had_none() -> None:
    shared_wait = [
        event("MIGRATION_STARTED", 100.0, migration="mig-3"),
        event("MIGRATION_STARTED", 100.0, migration="mig-4", workload_id="web-1"),
        event("CONVERGENCE_WAITING", 100.01, migration="mig-3"),
        event("CONVERGED", 100.2, migration="mig-3", converged_after=(("routes", 0.01), ("sidecars", 0.19))),
        event("MIGRATION_COMPLETED", 100.21, migration="mig-3"),
        event("MIGRATION_COMPLETED", 100.21, migration="mig-4", workload_id="web-3", node="m-n1"),
    ]
    second = MigrationTimeline("mig-4", "web-1", "", "ea-n1", "", requested_at=99.9)
    fill_stages(second, shared_wait)
    assert (second.new, second.to_node) == ("web-3", "m-n1")
    assert second.sidecars_at == pytest.approx(100.2)
    timed_out = MigrationTimeline("mig-5", "db-1", "", "c-n1", "", requested_at=99.9)
    fill_stages(
        timed_out, [event("MIGRATION_STARTED", 100.0, migration="mig-5"), event(ENDED[0], 110.0, migration="mig-5")]
    )
    assert timed_out.sidecars_at is None and "failover timeout" in timed_out.error


def test_the_reason_placement_gave_is_kept() -> None:
    t = MigrationTimeline("mig-1", "api-1", "", "ea-n1", "", requested_at=99.0)
    why = "users' mean request time 26.0 -> 5.0 ms with db-1 to m-n1 (its calls go there; alone 28.0 ms)"
    fill_stages(t, [event("MIGRATION_STARTED", 100.0, workload_id="api-1", node="ea-n1", reasons=(why,))])
    assert t.reason == why
