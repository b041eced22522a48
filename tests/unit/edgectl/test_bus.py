from __future__ import annotations

import threading

import pytest

from edgectl.bus import EventBus
from netmodel import events as ev
from netmodel.fabric import build_state
from netmodel.ids import NodeId, SwitchId
from netmodel.state import EventRejected
from tests.unit.edgectl.fixtures import example_spec


@pytest.fixture
def bus():
    observed: list[tuple[str, str]] = []
    bus = EventBus(
        build_state(example_spec()), observer=lambda e, outcome: observed.append((type(e).__name__, outcome))
    )
    bus.observed = observed  # type: ignore[attr-defined]
    bus.start()
    yield bus
    bus.stop()


def test_events_apply_in_order_and_subscribers_see_each_new_state(bus) -> None:
    seen = []

    class Recorder:
        def on_model_change(self, event, state) -> None:
            seen.append((type(event).__name__, state.generation))

    bus.subscribe(Recorder())
    f1 = bus.publish(ev.NodeWentDown(NodeId("ea-n1")))
    f2 = bus.publish(ev.NodeCameUp(NodeId("ea-n1")))
    assert f1.result(2).generation == 1
    assert f2.result(2).generation == 2
    assert seen == [("NodeWentDown", 1), ("NodeCameUp", 2)]
    assert bus.state.generation == 2


def test_rejected_event_fails_its_future_and_changes_nothing(bus) -> None:
    before = bus.state
    future = bus.publish(ev.SwitchDisconnected(SwitchId(0xDEAD), 0.0))
    assert future.result(2) is before  # unknown and not connected: a no-op, not an error
    with pytest.raises(EventRejected):
        bus.publish(ev.NodeWentDown(NodeId("nope"))).result(2)
    assert bus.state is before
    assert ("NodeWentDown", "rejected") in bus.observed


def test_a_failing_subscriber_does_not_stop_the_writer(bus) -> None:
    class Broken:
        def on_model_change(self, event, state) -> None:
            raise RuntimeError("boom")

    bus.subscribe(Broken())
    assert bus.publish(ev.NodeWentDown(NodeId("ea-n1"))).result(2).generation == 1
    assert bus.publish(ev.NodeCameUp(NodeId("ea-n1"))).result(2).generation == 2


def test_a_subscriber_without_on_model_change_is_refused_at_once(bus) -> None:
    with pytest.raises(TypeError, match="on_model_change"):
        bus.subscribe(lambda event, state: None)


def test_wait_for_returns_when_a_state_matches(bus) -> None:
    threading.Timer(0.05, lambda: bus.publish(ev.NodeWentDown(NodeId("ea-n1")))).start()
    state = bus.wait_for(lambda s: not s.nodes[NodeId("ea-n1")].up, timeout=2)
    assert state is not None and state.generation == 1
    assert bus.wait_for(lambda s: s.generation == 99, timeout=0.05) is None


def test_many_publishers_one_writer(bus) -> None:
    def flap() -> None:
        for _ in range(50):
            bus.publish(ev.NodeWentDown(NodeId("ea-n1")))
            bus.publish(ev.NodeCameUp(NodeId("ea-n1")))

    threads = [threading.Thread(target=flap) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = bus.publish(ev.NodeCameUp(NodeId("ea-n1"))).result(5)
    assert final.nodes[NodeId("ea-n1")].up
    assert 1 <= final.generation <= 400
