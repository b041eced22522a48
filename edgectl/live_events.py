"""The event hub behind ``GET /api/v1/events``: model changes in, Server-Sent Events frames out (docs/dashboard.md).

The model writer only hands each change over (``on_model_change``: a timeline entry and a reference to the
state). The hub's own thread wakes at most every ``min_interval_s``, computes the views of the latest state
once (``edgectl.live_views``), diffs them against the previous ones and encodes ONE delta frame for every
client, however many events arrived meanwhile: a burst of 50 events costs one diff. It keeps the latest
snapshot and a bounded history of deltas, so a client reconnecting with ``Last-Event-ID`` gets what it
missed. Each client has a bounded buffer of frames: one that does not take them fast enough is dropped
(``on_drop`` closes its connection); the writer never waits for a client, nor a client for another.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from edgectl.live_views import TIMELINE_MAX, Views, diff_views, live_views, timeline_entry
from netmodel.events import Event
from netmodel.state import FabricState

LOG = logging.getLogger("edgectl.events")

DEFAULT_MIN_INTERVAL_S = 0.2
"""At most one delta per this: bursts of events are coalesced (views are computed once per delta)."""
DEFAULT_CLIENT_BUFFER = 64
"""Frames waiting for one client; one more and the client is dropped (it reconnects and resumes)."""
DEFAULT_HISTORY = 256
DEFAULT_HISTORY_BYTES = 8 << 20
"""Deltas kept for ``Last-Event-ID`` resumes: at most this many, and this many bytes of frames."""


DEFAULT_RESUME_WINDOW_S = 60.0
"""Deltas are computed while a client watches and this long after the last one left (it may resume with
``Last-Event-ID``); after that, not until the next client (who gets a snapshot)."""


def sse_frame(generation: int, kind: str, body: Any, boot: str = "") -> bytes:
    """One Server-Sent Event: ``id`` (``BOOT.GENERATION``: generations start over when the controller restarts,
    so an id from before a restart must not match one after it), ``event`` and the body as one line of JSON
    (strict JSON: a non-finite number, which browsers' JSON.parse refuses, goes out as null)."""
    try:
        data = json.dumps(body, separators=(",", ":"), allow_nan=False)
    except ValueError:
        LOG.warning("a live view held a non-finite number: sent as null")
        data = json.dumps(_finite(body), separators=(",", ":"), allow_nan=False)
    event_id = f"{boot}.{generation}" if boot else str(generation)
    return f"id: {event_id}\nevent: {kind}\ndata: {data}\n\n".encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def parse_event_id(text: str | None, boot: str) -> int | None:
    """The generation a reconnecting client saw last, if it saw it from this process (its ``boot``); None
    (a snapshot) for anything else: another boot, garbage, nothing."""
    if text is None:
        return None
    prefix, dot, number = text.strip().rpartition(".")
    if not dot or prefix != boot or not number.isdigit():
        return None
    return int(number)


class Subscription:
    """One client: the frames waiting for it. Read with ``next``; the hub drops it when its buffer is full."""

    def __init__(self, hub: EventHub, limit: int, on_drop: Callable[[], None]) -> None:
        self._hub = hub
        self._limit = limit
        self._on_drop = on_drop
        self._frames: deque[bytes] = deque()
        self._ready = threading.Condition(hub._lock)  # one per client: a change wakes each once, a hang-up one
        self.closed = False
        self.dropped = False

    def next(self, timeout: float) -> list[bytes] | None:
        """The frames waiting (after up to ``timeout`` s: ``[]`` if none came), or None once it is closed."""
        with self._ready:
            self._ready.wait_for(lambda: self._frames or self.closed, timeout)
            if self.closed:
                return None
            frames = list(self._frames)
            self._frames.clear()
            return frames

    def _push(self, frame: bytes) -> None:
        """Under the hub's lock."""
        if self.closed:
            return
        if len(self._frames) >= self._limit:
            self.dropped = True
            self._frames.clear()
            self._close()
            try:
                self._on_drop()  # wakes a thread stuck sending to it
            except Exception:
                LOG.exception("dropping a slow event client failed")
            return
        self._frames.append(frame)
        self._ready.notify()

    def _close(self) -> None:
        """Under the hub's lock."""
        self.closed = True
        self._ready.notify()


class EventHub:
    """A ``ModelSubscriber`` (subscribe it to the bus) and the source of every event stream."""

    def __init__(
        self,
        state: Callable[[], FabricState],
        *,
        min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
        client_buffer: int = DEFAULT_CLIENT_BUFFER,
        history: int = DEFAULT_HISTORY,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        clock: Callable[[], float] = time.time,
        resume_window_s: float = DEFAULT_RESUME_WINDOW_S,
    ) -> None:
        self._state = state
        self._resume_window_s = resume_window_s
        self._watched_at: float | None = None  # when a client was last seen subscribed (None: never)
        self.boot = secrets.token_hex(4)
        """This process's part of every event id (``sse_frame``)."""
        self._latest: FabricState | None = None
        self._min_interval_s = min_interval_s
        self._client_buffer = client_buffer
        self._history_bytes = history_bytes
        self._clock = clock
        self._wake = threading.Condition()  # the model writer -> the hub's thread
        self._pending: deque[dict[str, Any]] = deque(maxlen=TIMELINE_MAX)
        self._notes: deque[dict[str, Any]] = deque(maxlen=TIMELINE_MAX)  # entries not from the model (``note``)
        self._changed = False
        self._stopping = False
        self._lock = threading.Lock()  # guards everything below, and each client's frames
        self._views: Views = {}
        self._generation = -1
        self._timeline: deque[dict[str, Any]] = deque(maxlen=TIMELINE_MAX)
        self._history: deque[tuple[int, int, bytes]] = deque(maxlen=history)  # (from, to generation, frame)
        self._history_size = 0
        self._snapshot_frame: bytes | None = None
        self._idle_state: FabricState | None = None  # newer than the views, held while no client watches
        self._clients: list[Subscription] = []
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.deltas_sent = 0
        self.clients_dropped = 0

    # -- the model writer's side: hand over, never compute ---------------------------------------------
    def on_model_change(self, event: Event, state: FabricState) -> None:
        entry = timeline_entry(event, state, self._clock())
        with self._wake:
            self._pending.append(entry)
            self._latest = state  # the state these entries belong to (the bus may already hold a newer one)
            self._changed = True
            self._wake.notify()

    def note(self, kind: str, text: str, at: float | None = None, service: str | None = None) -> None:
        """A timeline entry from outside the model (a placement step, an xDS NACK, a certificate), from any
        thread, without waiting: it goes out with the next delta, or alone in a delta of only ``events``
        when the model did not change. Its generation is the one the hub shows when it goes out; ``service``,
        when given, names the service it concerns (a placement step)."""
        entry = {"at": self._clock() if at is None else at, "kind": kind, "text": text}
        if service is not None:
            entry["service"] = service
        with self._wake:
            self._notes.append(entry)
            self._changed = True
            self._wake.notify()

    # -- the hub's thread ----------------------------------------------------------------------------------
    def start(self) -> None:
        state = self._state()
        with self._lock:
            self._views = live_views(state)
            self._generation = state.generation
        self._thread = threading.Thread(target=self._run, name="event-hub", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._lock:
            self._stopped = True
            for client in self._clients:
                client._close()
            self._clients.clear()

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._changed or self._stopping)
                if self._stopping:
                    return
            try:
                self.publish_pending()
            except Exception:  # a bug in a view must not end the stream for good
                LOG.exception("computing the live views failed")
            with self._wake:  # coalesce: whatever arrives meanwhile goes into the next delta
                self._wake.wait_for(lambda: self._stopping, self._min_interval_s)

    def publish_pending(self) -> None:
        """One delta from the last views to the latest state's, to every client (the thread's step)."""
        with self._wake:
            entries = list(self._pending)
            self._pending.clear()
            notes = list(self._notes)
            self._notes.clear()
            self._changed = False
            latest = self._latest
        # The state handed over with the last entry, not the bus's: a newer one would be shown before its
        # timeline entry arrived, and that entry then dropped as already shown.
        state = latest if latest is not None else self._state()
        with self._lock:
            if self._idle():  # nobody watches: no views computed, no delta (the next client gets a snapshot)
                self._hold_while_idle(state, entries, notes)
                return
        if state.generation > self._generation:
            views = live_views(state)
            delta = diff_views(self._views, views)
            generation = state.generation
        elif notes:  # the model did not change: a delta of only the notes, at the generation shown
            views, delta, generation = self._views, {}, self._generation
        else:  # nothing new (or events the last views already showed)
            return
        fresh = [e for e in entries if e["generation"] > self._generation]
        fresh += [{"generation": generation, **note} for note in notes]
        fresh.sort(key=lambda entry: entry["at"])  # a note among model events: in the order they happened
        body = {"generation": generation, **delta, **({"events": fresh} if fresh else {})}
        frame = sse_frame(generation, "delta", body, self.boot)
        with self._lock:
            if generation > self._generation:  # a delta of only notes is not replayed: its id is not new
                self._remember(self._generation, generation, frame)
            self._views, self._generation = views, generation
            self._timeline.extend(fresh)
            self._snapshot_frame = None
            for client in self._clients:
                client._push(frame)
            dropped = [c for c in self._clients if c.dropped]
            if dropped:
                self._clients = [c for c in self._clients if not c.dropped]
                self.clients_dropped += len(dropped)
            self.deltas_sent += 1
        if dropped:
            LOG.info("dropped %d event client(s) too slow to take their messages", len(dropped))

    def _idle(self) -> bool:
        """Under the lock: no client now, nor within ``resume_window_s`` (one may come back and resume)."""
        if self._clients:
            self._watched_at = self._clock()
            return False
        return self._watched_at is None or self._clock() - self._watched_at > self._resume_window_s

    def _hold_while_idle(self, state: FabricState, entries: list[dict[str, Any]], notes: list[dict[str, Any]]) -> None:
        """Under the lock, with no client: keep the timeline, leave the views of ``state`` to the next
        ``subscribe`` (at 10,000 workloads they cost ~0.2 s of CPU, five times a second under a burst of
        Places). The deltas kept for resumes end here: a client from before gets a snapshot."""
        shown = self._idle_state.generation if self._idle_state is not None else self._generation
        generation = max(state.generation, shown)
        fresh = [e for e in entries if e["generation"] > self._generation]
        fresh += [{"generation": generation, **note} for note in notes]
        fresh.sort(key=lambda entry: entry["at"])
        self._timeline.extend(fresh)
        if state.generation > shown:
            self._idle_state = state
        self._history.clear()
        self._history_size = 0
        self._snapshot_frame = None

    def _catch_up(self) -> None:
        """Under the lock: the views of the state held while nobody watched (``_hold_while_idle``)."""
        if self._idle_state is not None:
            self._views, self._generation = live_views(self._idle_state), self._idle_state.generation
            self._idle_state = None
            self._snapshot_frame = None

    def _remember(self, since: int, generation: int, frame: bytes) -> None:
        if self._history.maxlen is not None and len(self._history) == self._history.maxlen:
            self._history_size -= len(self._history[0][2])
        self._history.append((since, generation, frame))
        self._history_size += len(frame)
        while self._history_size > self._history_bytes and self._history:
            self._history_size -= len(self._history.popleft()[2])

    # -- clients ---------------------------------------------------------------------------------------------
    def subscribe(self, last_event_id: int | None = None, on_drop: Callable[[], None] = lambda: None) -> Subscription:
        """A new client, its first frames queued: the deltas after ``last_event_id`` when the history still
        has all of them (none if it is current), else a snapshot."""
        client = Subscription(self, self._client_buffer, on_drop)
        with self._lock:
            if self._stopped:  # the controller is stopping: the stream ends at once
                client.closed = True
                return client
            self._catch_up()
            self._watched_at = self._clock()
            missed = self._since(last_event_id) if last_event_id is not None else None
            if missed is not None and len(missed) < self._client_buffer:
                client._frames.extend(missed)
            else:
                client._frames.append(self._snapshot())
            self._clients.append(client)
        return client

    def unsubscribe(self, client: Subscription) -> None:
        with self._lock:
            self._watched_at = self._clock()
            client._close()
            if client in self._clients:
                self._clients.remove(client)

    @property
    def clients(self) -> int:
        return len(self._clients)

    @property
    def generation(self) -> int:
        """The generation of the latest views sent (or held for the next client)."""
        with self._lock:
            return self._idle_state.generation if self._idle_state is not None else self._generation

    def _since(self, generation: int) -> list[bytes] | None:
        if generation == self._generation:
            return []
        for i, (since, _, _) in enumerate(self._history):
            if since == generation:
                return [frame for _, _, frame in list(self._history)[i:]]
        return None

    def _snapshot(self) -> bytes:
        """Under the lock; encoded once per generation, however many clients connect."""
        if self._snapshot_frame is None:
            body = {"generation": self._generation, "views": {**self._views, "events": list(self._timeline)}}
            self._snapshot_frame = sse_frame(self._generation, "snapshot", body, self.boot)
        return self._snapshot_frame
