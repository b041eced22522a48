"""netmodel: measured link load (``LinkLoadMeasured``) in ``LinkAttrs``, and that it weighs nowhere."""

from __future__ import annotations

import dataclasses
import math

import pytest
from netmodel_helpers import EA1, M1, M2, example_state, snapshot

from netmodel import events as ev
from netmodel.graph import link_matrix, usable_latency
from netmodel.ids import PortNo, SwitchId
from netmodel.state import EventRejected, FabricState
from netmodel.types import LinkId

# The example's cables, with the ports the fabric file assigns: ea1-m1 is 100 Mbit/s, m1-m2 200.
EA1_M1 = LinkId(SwitchId(EA1), PortNo(1), SwitchId(M1), PortNo(1))
M1_M2 = LinkId(SwitchId(M1), PortNo(3), SwitchId(M2), PortNo(3))


def loaded(state: FabricState, *loads: tuple[LinkId, float | None], at: float = 5.0) -> FabricState:
    return state.apply(ev.LinkLoadMeasured(tuple(loads), at))


def test_a_load_is_kept_per_direction_with_its_time_and_its_ratio_to_the_declared_capacity() -> None:
    state = example_state()
    before = snapshot(state)
    new = loaded(state, (EA1_M1, 25e6), (M1_M2, 0.0))
    assert new.generation == state.generation + 1
    assert snapshot(state) == before  # the old state is untouched
    attrs = new.topology.links[EA1_M1]
    assert attrs.measured_load_bps == 25e6 and attrs.load_measured_at == 5.0
    assert attrs.utilization == pytest.approx(0.25)  # 25 of 100 Mbit/s
    assert new.topology.links[M1_M2].utilization == 0.0
    back = new.topology.links[EA1_M1.reversed()]
    assert back.measured_load_bps is None and back.utilization is None  # per direction; not measured
    assert state.topology.links[EA1_M1].utilization is None


def test_the_same_loads_again_change_nothing_and_the_last_of_a_link_named_twice_wins() -> None:
    state = loaded(example_state(), (EA1_M1, 1e6), (EA1_M1, 2e6))
    assert state.topology.links[EA1_M1].measured_load_bps == 2e6
    assert loaded(state, (EA1_M1, 2e6), at=9.0) is state
    assert loaded(state) is state


def test_a_load_no_longer_measured_is_cleared_with_its_time() -> None:
    state = loaded(example_state(), (EA1_M1, 1e6))
    cleared = loaded(state, (EA1_M1, None), at=6.0)
    assert cleared.topology.links[EA1_M1] == example_state().topology.links[EA1_M1]
    assert loaded(cleared, (EA1_M1, None)) is cleared


@pytest.mark.parametrize(
    ("load", "match"), [(-1.0, "not a finite rate"), (math.nan, "not a finite rate"), (math.inf, "not a finite")]
)
def test_a_batch_with_a_bad_load_is_rejected_whole(load: float, match: str) -> None:
    state = example_state()
    before = snapshot(state)
    with pytest.raises(EventRejected, match=match):
        loaded(state, (EA1_M1, 1e6), (M1_M2, load))
    assert snapshot(state) == before


def test_a_batch_naming_an_unknown_link_is_rejected_whole() -> None:
    state = example_state()
    bogus = LinkId(SwitchId(EA1), PortNo(7), SwitchId(M1), PortNo(7))
    with pytest.raises(EventRejected, match="unknown link"):
        loaded(state, (EA1_M1, 1e6), (bogus, 1e6))


def test_link_attrs_stay_immutable() -> None:
    attrs = loaded(example_state(), (EA1_M1, 1e6)).topology.links[EA1_M1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        attrs.measured_load_bps = 2e6  # type: ignore[misc]


def test_a_load_changes_nothing_routing_or_placement_weighs() -> None:
    state = example_state()
    new = loaded(state, (EA1_M1, 90e6), (M1_M2, 150e6))
    assert new.topology.graph is state.topology.graph
    assert new.topology.same_but_load(state.topology) and state.topology.same_but_load(new.topology)
    for topology in (state.topology, new.topology):
        assert topology.latency_weight()(EA1, M1, topology.graph[EA1][M1]) == 2000
    old_matrix, old_index = link_matrix(state.topology, usable_latency())
    new_matrix, new_index = link_matrix(new.topology, usable_latency())
    assert old_index == new_index and (old_matrix != new_matrix).nnz == 0


def test_same_but_load_sees_every_other_change() -> None:
    state = loaded(example_state(), (EA1_M1, 1e6))
    slower = state.apply(ev.LinkLatencyMeasured(((EA1_M1, 2600),), 6.0))
    down = state.apply(ev.LinkWentDown(EA1_M1))
    for other in (slower, down):
        assert not state.topology.same_but_load(other.topology)
        assert not loaded(other, (EA1_M1, 5e6)).topology.same_but_load(state.topology)
