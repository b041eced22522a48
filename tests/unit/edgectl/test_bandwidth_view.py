"""What `GET /api/v1/links`, the reservations of `GET /api/v1/routes` and `edgectl links` show (pure views)."""

from __future__ import annotations

import dataclasses

from edgectl.bandwidth_view import links_text, links_view, reservations_view
from netmodel.bandwidth import plan_reservations
from tests.unit.edgectl.metrics_fixture import live_state, reserving


def test_links_show_capacity_reserved_residual_and_what_found_no_room() -> None:
    state = reserving(live_state())
    view = links_view(state, plan_reservations(state))
    rows = {row["link"]: row for row in view["links"]}
    primary, backup = rows["ea1:1->m1:1"], rows["ea1:2->m2:1"]
    assert (primary["capacity_mbps"], primary["reserved_mbps"], primary["residual_mbps"]) == (100.0, 60.0, 40.0)
    assert backup["reserved_mbps"] == 60.0
    assert rows["eb1:1->m2:2"]["reserved_mbps"] == 0.0
    assert {u["owners"][0] for u in view["unreserved"]} == {"web-3"}
    assert all(u["link"] == "ea1:1->m1:1" or u["link"] == "m1:1->ea1:1" for u in view["unreserved"])
    text = links_text(view)
    assert "ea1:1->m1:1" in text and "without a reservation (2)" in text and "has 40 of 60 Mbit/s left" in text


def test_reservations_show_path_match_and_meter() -> None:
    state = reserving(live_state())
    plan = plan_reservations(state)
    view = reservations_view(state, plan, meter_of=lambda switch, key: 7)
    first = view["reservations"][0]
    assert first["owners"] == ["web-1"] and first["mbps"] == 60.0
    assert first["match"] == {"ipv4_src": "10.0.1.1", "ipv4_dst": "10.0.4.10", "ip_proto": 6, "tcp_dst": 8081}
    assert first["path"] == ["ea1", "m1", "m2"] and first["meter"] == {"switch": "ea1", "id": 7}
    assert len(view["unreserved"]) == 2


def test_without_a_plan_the_views_are_empty_not_errors() -> None:
    state = live_state()
    assert reservations_view(state, None)["reservations"] == []
    view = links_view(state, None)
    assert all(row["reserved_mbps"] == 0.0 for row in view["links"]) and view["unreserved"] == []


def test_the_readers_share_the_engines_plan_of_the_same_model_and_compute_their_own_otherwise() -> None:
    from edgectl.reservations import ReservationCache

    state = reserving(live_state())
    cache = ReservationCache()
    own = cache.plan_for(state)
    assert cache.plan_for(state) is own  # once per model
    engine_plan = plan_reservations(state)
    cache.follow(lambda: engine_plan)
    assert cache.plan_for(state) is engine_plan
    newer = dataclasses.replace(state, generation=state.generation + 1)
    assert cache.plan_for(newer) is not engine_plan and cache.plan_for(newer).outcomes == engine_plan.outcomes
