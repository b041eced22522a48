"""The event hub on a real EventBus, without HTTP: bursts coalesced into one delta, slow subscribers dropped,
resume from its history or a snapshot."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from edgectl.bus import EventBus
from edgectl.live_events import EventHub
from netmodel import events as ev
from netmodel.fabric import build_state
from tests.unit.edgectl.fixtures import example_spec
from tests.unit.edgectl.test_http_hardening import wait_for


@contextmanager
def hub_on_bus(**options: float) -> Iterator[tuple[EventBus, EventHub]]:
    bus = EventBus(build_state(example_spec()))
    hub = EventHub(lambda: bus.state, **options)  # type: ignore[arg-type]
    bus.subscribe(hub)
    bus.start()
    hub.start()
    try:
        yield bus, hub
    finally:
        hub.stop()
        bus.stop()


def publish(bus: EventBus, hub: EventHub, *events: ev.Event) -> int:
    generation = 0
    for event in events:
        generation = bus.publish(event).result(timeout=10).generation
    wait_for(lambda: hub.generation >= generation, "the hub to catch up")
    return generation


def parse(frame: bytes) -> tuple[str, int, dict[str, object]]:
    fields = dict(line.split(": ", 1) for line in frame.decode().strip().split("\n"))
    return fields["event"], int(fields["id"].rpartition(".")[2]), json.loads(fields["data"])


def test_a_burst_of_events_is_one_delta() -> None:
    with hub_on_bus(min_interval_s=2.0) as (bus, hub):
        link = sorted(bus.state.topology.links)[0]
        client = hub.subscribe()
        publish(bus, hub, ev.LinkWentDown(link))  # the first change goes at once; the next wait 2 s
        sent = hub.deltas_sent
        burst = [ev.LinkCameUp(link) if i % 2 == 0 else ev.LinkWentDown(link) for i in range(50)]
        last = publish(bus, hub, *burst)
        assert hub.deltas_sent == sent + 1
        frames = [parse(f) for f in client.next(1) or []]
        assert [kind for kind, _, _ in frames] == ["snapshot", "delta", "delta"]
        _, generation, body = frames[-1]
        assert generation == last and len(body["events"]) == 50  # type: ignore[arg-type]


def test_a_subscriber_that_takes_nothing_is_dropped_and_told() -> None:
    with hub_on_bus(min_interval_s=0.0, client_buffer=3) as (bus, hub):
        link = sorted(bus.state.topology.links)[0]
        hung_up: list[bool] = []
        slow = hub.subscribe(on_drop=lambda: hung_up.append(True))
        reader = hub.subscribe()
        received = 0
        for i in range(6):
            publish(bus, hub, ev.LinkCameUp(link) if i % 2 else ev.LinkWentDown(link))
            received += len(reader.next(1) or [])
        assert hung_up == [True] and slow.dropped and slow.next(0) is None
        assert hub.clients == 1 and hub.clients_dropped == 1
        assert received == 7  # the snapshot and the six deltas


def test_resume_from_the_history_or_else_a_snapshot() -> None:
    with hub_on_bus(min_interval_s=0.0, history=2) as (bus, hub):
        link = sorted(bus.state.topology.links)[0]
        hub.subscribe()  # a dashboard watching (ids to resume from are only ever sent to one)
        start = hub.generation
        generations = [publish(bus, hub, ev.LinkWentDown(link)), publish(bus, hub, ev.LinkCameUp(link))]
        resumed = [parse(f)[:2] for f in hub.subscribe(start).next(0) or []]
        assert resumed == [("delta", generations[0]), ("delta", generations[1])]
        assert hub.subscribe(generations[1]).next(0) == []
        third = publish(bus, hub, ev.LinkWentDown(link))  # the history keeps two: the first is gone
        assert [parse(f)[:2] for f in hub.subscribe(start).next(0) or []] == [("snapshot", third)]
        assert [parse(f)[:2] for f in hub.subscribe(generations[0]).next(0) or []] == [
            ("delta", generations[1]),
            ("delta", third),
        ]


def test_every_change_keeps_its_timeline_entry_when_the_bus_is_already_further() -> None:
    """The bus swaps in a new state before it tells its subscribers: the hub must show the state it was
    handed with the entries, not the bus's newer one (whose entry it has not got yet, and would then drop)."""
    state = build_state(example_spec())
    link = sorted(state.topology.links)[0]
    first = state.apply(ev.LinkWentDown(link))
    second = first.apply(ev.LinkCameUp(link))
    bus_state = [state]
    hub = EventHub(lambda: bus_state[0])
    hub.start()
    try:
        reader = hub.subscribe()
        bus_state[0] = second  # the bus: already at the second change when it tells the hub of the first
        hub.on_model_change(ev.LinkWentDown(link), first)
        hub.publish_pending()
        hub.on_model_change(ev.LinkCameUp(link), second)
        hub.publish_pending()
        frames = [parse(f) for f in reader.next(0) or []]
        kinds = [e["kind"] for _, _, body in frames if body.get("events") for e in body["events"]]  # type: ignore[union-attr]
        assert [f[:2] for f in frames][1:] == [("delta", first.generation), ("delta", second.generation)]
        assert kinds[-2:] == ["LinkWentDown", "LinkCameUp"]
    finally:
        hub.stop()


def test_event_ids_carry_the_process_and_frames_are_strict_json() -> None:
    from edgectl.live_events import parse_event_id, sse_frame

    frame = sse_frame(7, "delta", {"x": float("inf"), "y": [float("nan"), 1.5]}, "beef")
    assert frame.startswith(b"id: beef.7\nevent: delta\n")
    assert json.loads(frame.decode().split("data: ", 1)[1]) == {"x": None, "y": [None, 1.5]}  # no Infinity/NaN
    assert parse_event_id("beef.7", "beef") == 7
    for other in ("cafe.7", "7", "beef.", "beef.-1", "beef.x", None, ""):
        assert parse_event_id(other, "beef") is None, other


def events_of(frames: list[bytes]) -> list[dict[str, object]]:
    return [e for _, _, body in map(parse, frames) for e in body.get("events", [])]  # type: ignore[attr-defined]


def test_a_note_without_a_model_change_goes_out_alone_at_the_generation_shown() -> None:
    with hub_on_bus(min_interval_s=0.0) as (_bus, hub):
        reader = hub.subscribe()
        reader.next(0)  # the snapshot
        generation = hub.generation
        threading.Thread(target=hub.note, args=("XdsNack", "node-1 rejected CDS"), daemon=True).start()
        frames: list[bytes] = []
        wait_for(lambda: bool(frames.extend(reader.next(0.1) or []) or frames), "the note's delta")
        kind, frame_generation, body = parse(frames[0])
        assert (kind, frame_generation) == ("delta", generation)
        assert set(body) == {"generation", "events"}
        (entry,) = body["events"]  # type: ignore[misc]
        assert entry["kind"] == "XdsNack" and entry["text"] == "node-1 rejected CDS"
        assert entry["generation"] == generation and isinstance(entry["at"], float)
        # it stays in the timeline: a new client's snapshot has it
        _, _, snapshot = parse((hub.subscribe().next(0) or [])[0])
        assert [e["kind"] for e in snapshot["views"]["events"]][-1:] == ["XdsNack"]  # type: ignore[index]
        # a client resuming at that id is current; the note is not replayed to it (its id is not new)
        assert hub.subscribe(generation).next(0) == []


def test_a_note_rides_with_the_next_model_change() -> None:
    with hub_on_bus(min_interval_s=2.0) as (bus, hub):
        link = sorted(bus.state.topology.links)[0]
        reader = hub.subscribe()
        publish(bus, hub, ev.LinkWentDown(link))  # the first change goes at once; the next wait 2 s
        reader.next(0)
        hub.note("MigrationStarted", "migration mig-1; reason: faster", service="web")
        generation = publish(bus, hub, ev.LinkCameUp(link))
        frames = reader.next(1) or []
        assert [parse(f)[:2] for f in frames] == [("delta", generation)]
        entries = events_of(frames)
        assert [e["kind"] for e in entries] == ["MigrationStarted", "LinkCameUp"]  # in the order they came
        assert entries[0]["service"] == "web" and entries[0]["generation"] == generation


def test_nobody_watching_costs_no_views_and_the_next_client_gets_a_current_snapshot(monkeypatch: object) -> None:
    from edgectl import live_events
    from edgectl.live_views import live_views as real

    computed: list[int] = []

    def counted(state: object) -> object:
        computed.append(1)
        return real(state)  # type: ignore[arg-type]

    monkeypatch.setattr(live_events, "live_views", counted)  # type: ignore[attr-defined]
    with hub_on_bus(min_interval_s=0.0) as (bus, hub):
        link = sorted(bus.state.topology.links)[0]
        at_start = len(computed)
        last = publish(bus, hub, ev.LinkWentDown(link), ev.LinkCameUp(link), ev.LinkWentDown(link))
        assert len(computed) == at_start  # no client ever: no views, no deltas
        assert hub.deltas_sent == 0
        kind, generation, body = parse((hub.subscribe().next(0) or [b""])[0])
        assert (kind, generation) == ("snapshot", last)
        views = body["views"]
        assert isinstance(views, dict)
        assert [e["generation"] for e in views["events"]][-3:] == [last - 2, last - 1, last]
        current = json.loads(json.dumps(real(bus.state)))
        assert {k: v for k, v in views.items() if k != "events"} == current


def test_deltas_go_on_a_while_after_the_last_client_left_so_it_can_resume() -> None:
    now = [1000.0]
    with hub_on_bus(min_interval_s=0.0, resume_window_s=60.0, clock=lambda: now[0]) as (bus, hub):  # type: ignore[arg-type]
        link = sorted(bus.state.topology.links)[0]
        client = hub.subscribe()
        hub.unsubscribe(client)
        seen = hub.generation
        now[0] += 30  # within the window: kept for a resume
        down = publish(bus, hub, ev.LinkWentDown(link))
        assert [parse(f)[:2] for f in hub.subscribe(seen).next(0) or []] == [("delta", down)]
