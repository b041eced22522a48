"""``migrate --to best`` moves an instance only when the best other node is better than where it is."""

from __future__ import annotations

import math

import pytest

from netmodel.events import NodeWentDown
from netmodel.ids import NodeId, SiteId
from placement.errors import PlacementRefused, Refusal
from placement.improvement import improves
from placement.orchestrator import MigrationTarget, PlacementOrchestrator
from tests.unit.placement.helpers import request, running_bus


def test_improves_only_when_strictly_better() -> None:
    assert improves(0.5, 0.6)
    assert not improves(0.5, 0.5)  # a tie gains nothing
    assert not improves(0.5, 0.5 + 1e-9)  # nor does rounding noise
    assert not improves(0.6, 0.5)
    assert improves(-math.inf, -3.0)  # it cannot stay where it is: anywhere feasible is better


def test_best_refuses_a_move_off_the_best_node_unless_forced() -> None:
    with running_bus() as bus:
        o = PlacementOrchestrator(bus)
        (web,) = o.place(request(near=("u1",), slo=5)).workloads
        assert web.node == "m-n1"  # 3 ms from u1; the best other node (eb-n1) is at 5 ms
        with pytest.raises(PlacementRefused) as refused:
            o.migrate(web.id, MigrationTarget(best=True))
        assert refused.value.kind is Refusal.FAILED_PRECONDITION
        assert refused.value.reason.startswith(f"{web.id} is already on the best node m-n1 (score ")
        assert "3.00 ms from its users" in refused.value.reason and "--force" in refused.value.reason
        assert set(bus.state.workloads) == {web.id}
        forced = o.migrate(web.id, MigrationTarget(best=True), force=True)
        assert forced.new.node != "m-n1"
        assert set(bus.state.workloads) == {forced.new.id}


def test_best_moves_back_from_a_worse_node_and_off_a_node_that_is_down() -> None:
    with running_bus() as bus:
        o = PlacementOrchestrator(bus)
        (web,) = o.place(request(near=("u1",), slo=5)).workloads
        away = o.migrate(web.id, MigrationTarget(site=SiteId("edge-b")))  # an explicit target is never refused
        back = o.migrate(away.new.id, MigrationTarget(best=True))
        assert back.new.node == "m-n1"
        bus.publish(NodeWentDown(NodeId("m-n1"))).result(timeout=5)
        off = o.migrate(back.new.id, MigrationTarget(best=True))
        assert off.new.node != "m-n1"
