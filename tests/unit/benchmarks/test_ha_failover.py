"""The takeover benchmark's reading of the fake switches' logs, and its fabric."""

from __future__ import annotations

from benchmarks.ha_failover import first_assignment, line_fabric, percentile, refused, takeover_of
from mininet_topos.generate import to_yaml
from netmodel.fabric_file import parse_fabric

NEW, OLD = 1, 0


def test_mastered_is_the_first_master_reply_to_the_new_leader_and_reconciled_its_read_back() -> None:
    log = [
        (9.0, OLD, "role:master", 3),  # before t0: the old leader's
        (10.2, NEW, "role:slave", 3),
        (10.5, NEW, "role:master", 4),
        (10.5, OLD, "barrier", 0),  # the old leader's connection: not ours
        (10.6, NEW, "readback", 0),
        (10.9, NEW, "readback", 0),  # a later drift check
    ]
    takeover = takeover_of(log, NEW, since=10.0)
    assert (takeover.mastered_at, takeover.reconciled_at) == (10.5, 10.6)
    assert takeover.writes == {"flow_mod": 0, "group_mod": 0, "meter_mod": 0}


def test_writes_after_the_read_back_are_reconciled_by_the_barrier_after_the_last_one() -> None:
    log = [
        (10.5, NEW, "role:master", 4),
        (10.6, NEW, "readback", 0),
        (10.7, NEW, "flow_mod", 0),
        (10.7, NEW, "group_mod", 0),
        (10.75, NEW, "flow_mod", 0),
        (10.8, NEW, "barrier", 0),
    ]
    takeover = takeover_of(log, NEW, since=10.0)
    assert takeover.reconciled_at == 10.8
    assert takeover.writes == {"flow_mod": 2, "group_mod": 1, "meter_mod": 0}
    assert takeover_of(log[:-1], NEW, since=10.0).reconciled_at is None  # the barrier not answered yet


def test_no_master_reply_or_read_back_yet_is_not_taken_over() -> None:
    assert takeover_of([(10.1, NEW, "role:slave", 3)], NEW, 10.0).mastered_at is None
    pending = takeover_of([(10.1, NEW, "role:master", 4)], NEW, 10.0)
    assert pending.mastered_at == 10.1 and pending.reconciled_at is None


def test_first_assignment_runs_from_the_first_connection_to_the_last_master_reply() -> None:
    logs = {
        "a": [(1.0, 0, "connected", 0), (1.5, 0, "role:master", 1)],
        "b": [(1.2, 0, "connected", 0), (2.25, 0, "role:master", 1), (3.0, 0, "role:master", 2)],
    }
    assert first_assignment(logs, 0) == 1.25
    assert first_assignment({**logs, "c": [(1.1, 0, "connected", 0)]}, 0) is None


def test_percentile_is_nearest_rank() -> None:
    values = [0.3, 0.1, 0.2, 0.4]
    assert (percentile(values, 50), percentile(values, 99)) == (0.2, 0.4)


def test_the_line_fabric_is_a_valid_fabric_file_with_a_host_per_switch() -> None:
    spec = parse_fabric(to_yaml(line_fabric(100)).encode(), "line-100.yaml")
    assert len(spec.switches) == 100 and len(spec.cables) == 99 and len(spec.hosts) == 100
    assert len({h.ip for h in spec.hosts}) == 100


def test_what_the_old_leader_was_refused_is_counted_by_kind() -> None:
    logs = {
        "a": [(9.0, OLD, "stale", 3), (10.1, OLD, "stale", 3), (10.2, OLD, "is_slave", 13), (10.3, NEW, "stale", 1)],
        "b": [(10.4, OLD, "is_slave", 14), (10.5, OLD, "is_slave", 13), (10.6, OLD, "barrier", 0)],
    }
    assert refused(logs, OLD, since=10.0) == {"stale": 1, "PacketOut": 2, "FlowMod": 1}
