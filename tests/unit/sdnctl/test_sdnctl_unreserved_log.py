"""The route engine says which demands lost their reservation (a failed link, a full one), and when they
find room again: the operator's first sign that reserved traffic runs as best effort."""

from __future__ import annotations

import logging

import pytest

from netmodel.bandwidth import plan_reservations
from netmodel.events import LinkCameUp, LinkWentDown
from sdnctl.engine import _log_unreserved
from tests.unit.netmodel.netmodel_helpers import EA1, M1, example_state
from tests.unit.netmodel.test_netmodel_bandwidth import place, uplink, with_services


def test_lost_and_regained_reservations_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    state = with_services(example_state(), web={"bandwidth_mbps": 60.0, "near": ("u1",)})
    state = place(place(state, "web-1", "m-n1", 8080), "web-2", "m-n1", 8081)
    whole = plan_reservations(state)
    down = state.apply(LinkWentDown(uplink(state, EA1, M1)))
    failed = plan_reservations(down, whole)
    with caplog.at_level(logging.INFO, logger="edgectl.sdnctl.engine"):
        _log_unreserved(whole, failed)
        _log_unreserved(failed, failed)  # nothing new: nothing said
        up = down.apply(LinkCameUp(uplink(state, EA1, M1)))
        _log_unreserved(failed, plan_reservations(up, failed))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # web-2's two directions
    assert all("web-2" in w and "60 Mbit/s" in w and "Mbit/s left" in w for w in warnings), warnings
    assert "ea1:2->m2:1 has 40 of 60 Mbit/s left" in warnings[0]  # the backup, once the primary failed
    assert any("2 demands have a reservation again" in r.getMessage() for r in caplog.records), caplog.text
