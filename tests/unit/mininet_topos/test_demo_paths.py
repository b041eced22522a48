"""The demo's service-path lines: which instances users' requests went through, most common first."""

from __future__ import annotations

from mininet_topos.demo import request_paths
from mininet_topos.loadgen import Record


def record(*served_by: str, status: int = 200) -> Record:
    return Record(0.0, 1.0, status, served_by[0] if served_by else None, None, None, served_by)


def test_paths_are_counted_most_common_first_and_failures_left_out() -> None:
    records = [
        record("web-1", "api-1", "db-1"),
        record("web-1", "api-1", "db-1"),
        record("web-2", "api-1", "db-1"),
        record("web-2", "api-1", "db-1", status=502),
        record(),
    ]
    assert request_paths(records) == [(("web-1", "api-1", "db-1"), 2), (("web-2", "api-1", "db-1"), 1)]
