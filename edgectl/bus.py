"""The event bus: one writer thread owns the model.

Anyone may ``publish`` an event from any thread (it only enqueues). The writer applies events in
order, swaps in the new immutable ``FabricState`` and calls each subscriber's ``on_model_change(event,
new_state)``. Readers call ``state`` and get a snapshot that never changes under them. Subscribers run
on the writer thread: they must hand work off, not do it (a slow subscriber delays every later event).

``publish_and_wait`` is for a caller that waits for its event anyway (a Place answers with the state
after it): when nothing is queued or being applied, the caller applies the event itself, in the
writer's place. One writer at a time still (a lock the writer thread holds while it applies), in order
(only when every event published before has been applied), and subscribers still run one at a time: it
saves the two hand-offs between threads, which cost a Place more than the apply when the GIL is busy.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

from netmodel.bus import ModelSubscriber
from netmodel.events import Event
from netmodel.state import EventRejected, FabricState

LOG = logging.getLogger("edgectl.bus")

Observer = Callable[[Event, str], None]  # (event, outcome) for metrics: applied | unchanged | rejected

_STOP = object()


class EventBus:
    """The one ``netmodel.bus.ModelBus``."""

    def __init__(self, initial: FabricState, observer: Observer | None = None) -> None:
        self._state = initial
        self._queue: queue.SimpleQueue[tuple[object, Future[FabricState] | None]] = queue.SimpleQueue()
        self._subscribers: list[ModelSubscriber] = []
        self._observer = observer
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()
        self._writing = threading.Lock()
        """Held while an event is applied: by the writer thread, or by a caller applying its own."""
        self._count = threading.Lock()
        self._pending = 0
        """Events enqueued and not yet applied (under ``_count``)."""

    @property
    def state(self) -> FabricState:
        return self._state  # one reference read: atomic, and the object is immutable

    def subscribe(self, subscriber: ModelSubscriber) -> None:
        # Checked here: on the writer thread a wrong subscriber would only fail in the log, at every event.
        if not callable(getattr(subscriber, "on_model_change", None)):
            raise TypeError(f"not a bus subscriber (no on_model_change): {subscriber!r}")
        self._subscribers.append(subscriber)

    def publish(self, event: Event) -> Future[FabricState]:
        """Enqueue ``event``; the future resolves to the state after it (or EventRejected)."""
        future: Future[FabricState] = Future()
        with self._count:
            self._pending += 1
        self._queue.put((event, future))
        return future

    def publish_and_wait(self, event: Event, timeout: float) -> FabricState:
        """Publish ``event`` and wait for the state after it (EventRejected, or TimeoutError after
        ``timeout``). Applied on this thread when the writer is idle and nothing is queued."""
        if self._thread is not None and self._writing.acquire(blocking=False):
            try:
                with self._count:
                    idle = self._pending == 0  # (every event published before is applied: order holds)
                if idle:
                    future: Future[FabricState] = Future()
                    self._apply(event, future)
                    return future.result()
            finally:
                self._writing.release()
        return self.publish(event).result(timeout)

    def wait_for(self, predicate: Callable[[FabricState], bool], timeout: float) -> FabricState | None:
        """Block until a state satisfies ``predicate`` (or time out and return None)."""
        with self._changed:
            if self._changed.wait_for(lambda: predicate(self._state), timeout):
                return self._state
        return None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        self._queue.put((_STOP, None))
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        while True:
            event, future = self._queue.get()
            if event is _STOP:
                return
            with self._writing:
                self._apply(event, future)  # type: ignore[arg-type]
            with self._count:
                self._pending -= 1

    def _apply(self, event: Event, future: Future[FabricState] | None) -> None:
        old = self._state
        try:
            new = old.apply(event)
        except EventRejected as exc:
            LOG.warning("rejected %s: %s", type(event).__name__, exc)
            self._observe(event, "rejected")
            if future is not None:
                future.set_exception(exc)
            return
        except Exception as exc:  # a bug in a transition must not kill the writer
            LOG.exception("applying %s failed", type(event).__name__)
            self._observe(event, "rejected")
            if future is not None:
                future.set_exception(exc)
            return
        if new is old:
            self._observe(event, "unchanged")
        else:
            with self._changed:
                self._state = new
                self._changed.notify_all()
            self._observe(event, "applied")
            for subscriber in self._subscribers:
                try:
                    subscriber.on_model_change(event, new)
                except Exception:
                    LOG.exception("subscriber %r failed on %s", subscriber, type(event).__name__)
        if future is not None:
            future.set_result(new)

    def _observe(self, event: Event, outcome: str) -> None:
        if self._observer is not None:
            self._observer(event, outcome)
