from __future__ import annotations

import threading
import time

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


def test_publish_and_wait_on_an_idle_bus_applies_on_the_callers_thread(bus) -> None:
    threads: list[str] = []

    class Recorder:
        def on_model_change(self, event, state) -> None:
            threads.append(threading.current_thread().name)

    bus.subscribe(Recorder())
    state = bus.publish_and_wait(ev.NodeWentDown(NodeId("ea-n1")), timeout=2)
    assert state.generation == 1 and bus.state is state
    assert threads == [threading.current_thread().name]  # no hand-off to the writer and back
    assert ("NodeWentDown", "applied") in bus.observed
    with pytest.raises(EventRejected):
        bus.publish_and_wait(ev.NodeWentDown(NodeId("nope")), timeout=2)
    assert bus.state is state


def test_publish_and_wait_behind_queued_events_waits_for_them_in_order(bus) -> None:
    """While the writer is busy with events published before, the caller's event goes behind them."""
    seen: list[tuple[str, int, str]] = []
    release = threading.Event()

    class Slow:
        def on_model_change(self, event, state) -> None:
            seen.append((type(event).__name__, state.generation, threading.current_thread().name))
            if state.generation == 1:
                release.wait(5)  # the writer is held inside the first event

    bus.subscribe(Slow())
    first = bus.publish(ev.NodeWentDown(NodeId("ea-n1")))
    second = bus.publish(ev.NodeCameUp(NodeId("ea-n1")))
    threading.Timer(0.2, release.set).start()
    state = bus.publish_and_wait(ev.NodeWentDown(NodeId("eb-n1")), timeout=5)
    assert first.result(5).generation == 1 and second.result(5).generation == 2
    assert state.generation == 3
    assert [(name, generation) for name, generation, _ in seen] == [
        ("NodeWentDown", 1),
        ("NodeCameUp", 2),
        ("NodeWentDown", 3),
    ]
    assert {thread for *_, thread in seen} == {"model-writer"}


def test_publish_and_wait_from_many_threads_with_publishers_keeps_one_writer_at_a_time(bus) -> None:
    inside = [0]
    overlaps = [0]
    lock = threading.Lock()

    class Exclusive:
        def on_model_change(self, event, state) -> None:
            with lock:
                inside[0] += 1
                overlaps[0] += inside[0] > 1
            time.sleep(0.0005)  # (lets the other threads run: two writers at once would show here)
            with lock:
                inside[0] -= 1

    bus.subscribe(Exclusive())
    generations: list[int] = []

    def waiter(node: str) -> None:  # (each its own node: every event changes the model)
        for _ in range(50):
            generations.append(bus.publish_and_wait(ev.NodeWentDown(NodeId(node)), timeout=5).generation)
            generations.append(bus.publish_and_wait(ev.NodeCameUp(NodeId(node)), timeout=5).generation)

    def publisher() -> None:
        for _ in range(50):
            bus.publish(ev.NodeWentDown(NodeId("eb-n1")))
            bus.publish(ev.NodeCameUp(NodeId("eb-n1")))

    waiters = [threading.Thread(target=waiter, args=(node,)) for node in ("ea-n1", "c-n1", "c-n2")]
    threads = [*waiters, threading.Thread(target=publisher)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = bus.publish(ev.NodeCameUp(NodeId("eb-n1"))).result(5)
    assert overlaps[0] == 0
    assert len(set(generations)) == len(generations)  # each waiter got the state after its own event
    assert final.generation == 400


def test_publish_and_wait_never_applies_ahead_of_events_already_queued() -> None:
    """Events queued and not yet taken by the writer (here: it has not started taking any) come first:
    the caller's event is not applied on its thread ahead of them."""
    order: list[str] = []

    class Recorder:
        def on_model_change(self, event, state) -> None:
            order.append(f"{type(event).__name__} {event.node}")

    bus = EventBus(build_state(example_spec()))
    bus.subscribe(Recorder())
    bus._thread = threading.Thread(target=lambda: None)  # started as far as callers can tell; nobody writes yet
    first = bus.publish(ev.NodeWentDown(NodeId("ea-n1")))
    second = bus.publish(ev.NodeCameUp(NodeId("ea-n1")))
    got: list[object] = []
    caller = threading.Thread(target=lambda: got.append(bus.publish_and_wait(ev.NodeWentDown(NodeId("eb-n1")), 5)))
    caller.start()
    try:
        time.sleep(0.2)
        assert bus.state.generation == 0 and not got  # waiting behind the two, not applied ahead of them
    finally:
        bus._thread = None
        bus.start()
        caller.join(5)
        bus.stop()
    assert first.result(1).generation == 1 and second.result(1).generation == 2
    assert [s.generation for s in got] == [3]  # type: ignore[attr-defined]
    assert order == ["NodeWentDown ea-n1", "NodeCameUp ea-n1", "NodeWentDown eb-n1"]
