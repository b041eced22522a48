"""MigrationTimeline and fill_stages: the stages of one move from the Watch events, relative to its
decision, and the whole chain."""

from __future__ import annotations

import pytest

from mininet_topos.timeline import (
    CONTROL_PLANE,
    ENDED,
    START_UP,
    USERS,
    Event,
    MigrationTimeline,
    fill_stages,
    whose_totals,
    xds_milestones,
    xds_stream_opened,
)


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


def moved(**stages: float | None) -> MigrationTimeline:
    """A move whose every milestone is known, changed by ``stages``."""
    milestones: dict[str, float | None] = {
        "app_started_at": 100.020,
        "app_listening_at": 100.105,
        "envoy_started_at": 100.106,
        "xds_stream_at": 100.150,
        "xds_connected_at": 100.156,
        "sidecar_serving_at": 100.180,
        "callers_acked_at": 100.200,
        "sidecars_at": 100.230,
        "first_request_sent_at": 100.250,
        "first_request_at": 100.290,
        "routes_at": 100.030,
    }
    milestones.update(stages)
    return timeline(**milestones)


def test_the_split_puts_each_stage_of_the_chain_with_whose_time_it_is() -> None:
    split = moved().split()
    seconds = {name: s for name, _, s in split}
    assert seconds == pytest.approx(
        {
            "placement -> the node agent starts the app": 0.020,
            "app start-up (until it listens)": 0.085,
            "the agent starts Envoy": 0.001,
            "Envoy boot (until the xDS server handles its first request)": 0.044,
            "the xDS server's first answer": 0.006,
            "xDS to the new sidecar (until it serves)": 0.024,
            "new sidecar serving -> every caller ACKed": 0.020,
            "wait for the next user request": 0.050,
            "the first request (new mTLS connections)": 0.040,
        }
    )
    # Back to back: they add up to decision -> first answered request.
    assert sum(s for _, _, s in split if s is not None) == pytest.approx(0.290)
    assert whose_totals(split) == pytest.approx({CONTROL_PLANE: 0.071, START_UP: 0.129, USERS: 0.090})


def test_a_request_on_its_way_before_the_last_ack_waited_for_nothing() -> None:
    split = {name: s for name, _, s in moved(first_request_sent_at=100.190, first_request_at=100.230).split()}
    assert split["wait for the next user request"] == 0.0
    assert split["the first request (new mTLS connections)"] == pytest.approx(0.030)


def test_a_missing_milestone_leaves_its_stages_and_its_owners_total_open() -> None:
    split = moved(xds_connected_at=None).split()
    seconds = {name: s for name, _, s in split}
    assert seconds["Envoy boot (until the xDS server handles its first request)"] == pytest.approx(0.044)
    assert seconds["the xDS server's first answer"] is None
    assert seconds["xDS to the new sidecar (until it serves)"] is None
    assert seconds["new sidecar serving -> every caller ACKed"] == pytest.approx(0.020)
    totals = whose_totals(split)
    assert totals[START_UP] == pytest.approx(0.129)
    assert totals[CONTROL_PLANE] is None and totals[USERS] == pytest.approx(0.090)


def test_side_by_side_the_chain_follows_envoy_and_counts_what_is_left_of_the_app_start() -> None:
    """The agent started Envoy 2 ms after the app; the app listened 10 ms after the sidecar served."""
    beside = moved(
        envoy_started_at=100.022, xds_stream_at=100.070, xds_connected_at=100.072, sidecar_serving_at=100.095
    )
    beside.app_listening_at = 100.105
    assert beside.started_beside and beside.instance_ready_at == pytest.approx(100.105)
    split = beside.split()
    assert {name: s for name, _, s in split} == pytest.approx(
        {
            "placement -> the node agent starts the app": 0.020,
            "the agent starts Envoy beside the app": 0.002,
            "Envoy boot (until the xDS server handles its first request)": 0.048,
            "the xDS server's first answer": 0.002,
            "xDS to the new sidecar (until it serves)": 0.023,
            "app start-up left once the sidecar serves": 0.010,
            "new sidecar serving -> every caller ACKed": 0.095,
            "wait for the next user request": 0.050,
            "the first request (new mTLS connections)": 0.040,
        }
    )
    assert sum(s for _, _, s in split if s is not None) == pytest.approx(0.290)
    assert beside.start_ups() == pytest.approx((0.085, 0.048))
    # An app that listened before its sidecar served left nothing to wait for.
    early = moved(envoy_started_at=100.022, xds_stream_at=100.140, xds_connected_at=100.150, sidecar_serving_at=100.170)
    assert {name: s for name, _, s in early.split()}["app start-up left once the sidecar serves"] == 0.0
    assert not moved().started_beside  # Envoy started once the app listened


def node(streams: int = 1, **types: tuple[float | None, float | None]) -> dict[str, object]:
    """One node of /api/v1/xds/clients: per type (sent_at, acked_at)."""
    return {"streams": streams, "types": {t: {"sent_at": s, "acked_at": a} for t, (s, a) in types.items()}}


def test_xds_milestones_come_from_the_ack_times_the_xds_server_keeps() -> None:
    before = {"web-1": node(eds=(90.0, 90.01)), "web-2": node(eds=(90.0, 90.02))}
    booting = {**before, "api-3": node(sds=(100.150, None), lds=(100.151, None))}
    serving = {**before, "api-3": node(sds=(100.150, 100.170), lds=(100.151, 100.180), eds=(100.15, 100.16))}
    one_acked = {**serving, "web-1": node(eds=(100.185, 100.192))}
    both_acked = {**one_acked, "web-2": node(eds=(100.185, 100.200))}
    withdrawn = {**both_acked, "web-1": node(eds=(100.240, 100.250))}  # the old one's withdrawal, later
    samples = [before, booting, serving, one_acked, both_acked, withdrawn]
    assert xds_milestones(samples, "api-3", ["web-1", "web-2"], converged_at=100.230) == pytest.approx(
        (100.150, 100.180, 100.200)
    )


def test_a_callers_ack_seen_only_after_the_withdrawal_is_not_the_new_endpoints() -> None:
    serving = {"api-3": node(sds=(100.15, 100.17), lds=(100.15, 100.18)), "web-1": node(eds=(90.0, 90.01))}
    withdrawn = {**serving, "web-1": node(eds=(100.240, 100.250))}  # the add's ACK was overwritten unseen
    assert xds_milestones([serving, withdrawn], "api-3", ["web-1"], converged_at=100.230) == (
        pytest.approx(100.15),
        pytest.approx(100.18),
        None,
    )
    assert xds_milestones([], "api-3", ["web-1"], converged_at=None) == (None, None, None)


def test_a_callers_ack_overwritten_by_the_withdrawal_is_found_as_the_ack_before() -> None:
    """The server keeps the ACK before the last: a sample that comes after the withdrawal's ACK (a few ms
    after the add's) still has the add's."""
    serving = {"api-3": node(sds=(100.15, 100.17), lds=(100.15, 100.18)), "web-1": node(eds=(90.0, 90.01))}
    withdrawn = {**serving, "web-1": node(eds=(100.200, 100.204))}
    withdrawn["web-1"]["types"]["eds"]["previous_acked"] = {"version": "8-a", "at": 100.196}  # type: ignore[index]
    assert xds_milestones([serving, withdrawn], "api-3", ["web-1"], converged_at=100.230)[2] == pytest.approx(100.196)
    # An ACK before the new sidecar served is not the add's: the withdrawal's is the first after it.
    withdrawn["web-1"]["types"]["eds"]["previous_acked"] = {"version": "7-a", "at": 100.100}  # type: ignore[index]
    assert xds_milestones([serving, withdrawn], "api-3", ["web-1"], converged_at=100.230)[2] == pytest.approx(100.204)


def test_callers_acks_count_from_when_the_app_beside_the_serving_sidecar_listened() -> None:
    serving = {"api-3": node(sds=(100.15, 100.17), lds=(100.15, 100.18)), "web-1": node(eds=(90.0, 90.01))}
    unrelated = {**serving, "web-1": node(eds=(100.185, 100.190))}  # before the app listened: not the add
    added = {**serving, "web-1": node(eds=(100.205, 100.210))}
    samples = [serving, unrelated, added]
    assert xds_milestones(samples, "api-3", ["web-1"], converged_at=100.230, listening_at=100.200)[2] == (
        pytest.approx(100.210)
    )
    assert xds_milestones(samples, "api-3", ["web-1"], converged_at=100.230)[2] == pytest.approx(100.190)


def test_the_new_sidecars_stream_opened_when_the_xds_server_first_shows_it() -> None:
    before = {"api-3": {"streams": 0, "connected_at": None, "types": {}}}
    opened = {"api-3": {"streams": 1, "connected_at": 100.061, "types": {}}}
    later = {"api-3": {"streams": 1, "connected_at": 100.500, "types": {}}}  # a reconnect: not the first
    assert xds_stream_opened([before, opened, later], "api-3") == pytest.approx(100.061)
    assert xds_stream_opened([before, {}], "api-3") is None
