"""Placement events for Watch streams: a fan-out hub, fed by the model writer and the orchestrator.

``PLACED`` and ``REMOVED`` come from the bus (``on_model_change``, subscribed to the EventBus), so
they show every change to workloads whoever made it (a restore from --state-dir too). The steps of
migrations and failovers come from the orchestrator (``emit``). One lock numbers the events, so every
watcher sees them in one order. The hub only enqueues: the writer thread never waits on a watcher.
A watcher that falls ``max_pending`` events behind is cut off (its stream ends with an error) rather
than holding memory without bound.
"""

from __future__ import annotations

import contextlib
import enum
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from netmodel.events import Event, WorkloadPlaced, WorkloadRemoved
from netmodel.ids import WorkloadId
from netmodel.state import FabricState
from netmodel.types import Workload


class StepKind(enum.Enum):
    PLACED = 1
    REMOVED = 2
    MIGRATION_STARTED = 3
    CONVERGENCE_WAITING = 4
    CONVERGED = 5
    MIGRATION_COMPLETED = 6
    MIGRATION_ROLLED_BACK = 7
    UNSCHEDULABLE = 8
    FAILOVER_STARTED = 9


@dataclass(frozen=True, slots=True)
class PlacementStep:
    sequence: int
    kind: StepKind
    generation: int
    workload: Workload | None
    state: FabricState | None
    """The model the step refers to (for latencies and sites when shown); None when not known."""
    migration_id: str = ""
    from_workload: WorkloadId | None = None
    message: str = ""
    reasons: tuple[str, ...] = ()
    at: float = 0.0
    converged_after: tuple[tuple[str, float], ...] = ()
    """CONVERGED: each probe and the seconds it took to accept the generation."""


class Subscription:
    def __init__(self, hub: PlacementEvents, max_pending: int) -> None:
        self._hub = hub
        self._queue: queue.Queue[PlacementStep | None] = queue.Queue(max_pending)
        self.overflowed = False
        self.closed = False

    def offer(self, step: PlacementStep) -> None:
        if self.closed:
            return
        try:
            self._queue.put_nowait(step)
        except queue.Full:
            self.overflowed = True
            self.close()

    def get(self, timeout: float) -> PlacementStep | None:
        """The next step, or None after ``timeout`` or once closed."""
        if self.closed and self._queue.empty():
            return None
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._hub.unsubscribe(self)
            with contextlib.suppress(queue.Full):  # full: the reader is not blocked, nothing to wake
                self._queue.put_nowait(None)  # wake a reader blocked in get()


class PlacementEvents:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._subscriptions: list[Subscription] = []
        self._sequence = 0
        self._clock = clock
        self._last_workloads: dict[WorkloadId, Workload] = {}
        self._listeners: tuple[Callable[[PlacementStep], None], ...] = ()

    def add_listener(self, listener: Callable[[PlacementStep], None]) -> None:
        """Call ``listener(step)`` with every step as it is emitted, under the hub's lock (in sequence
        order): it must be quick and must not emit (metrics count steps and time migrations)."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def subscribe(self, max_pending: int = 10_000) -> Subscription:
        subscription = Subscription(self, max_pending)
        with self._lock:
            self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    @property
    def watchers(self) -> int:
        with self._lock:
            return len(self._subscriptions)

    def emit(
        self,
        kind: StepKind,
        *,
        generation: int = 0,
        workload: Workload | None = None,
        state: FabricState | None = None,
        migration_id: str = "",
        from_workload: WorkloadId | None = None,
        message: str = "",
        reasons: tuple[str, ...] = (),
        converged_after: tuple[tuple[str, float], ...] = (),
    ) -> PlacementStep:
        with self._lock:
            self._sequence += 1
            step = PlacementStep(
                self._sequence,
                kind,
                generation,
                workload,
                state,
                migration_id,
                from_workload,
                message,
                reasons,
                self._clock(),
                converged_after,
            )
            for subscription in list(self._subscriptions):
                subscription.offer(step)
            for listener in self._listeners:
                with contextlib.suppress(Exception):  # an observer's bug never fails a placement
                    listener(step)
        return step

    def on_model_change(self, event: Event, state: FabricState) -> None:
        """EventBus subscriber (runs on the model writer: only enqueues)."""
        if isinstance(event, WorkloadPlaced):
            workload = state.workloads.get(event.workload.id)
            if workload is not None:
                self._last_workloads[workload.id] = workload
                self.emit(StepKind.PLACED, generation=state.generation, workload=workload, state=state)
        elif isinstance(event, WorkloadRemoved):
            gone = self._last_workloads.pop(event.workload, None)
            self.emit(
                StepKind.REMOVED,
                generation=state.generation,
                workload=gone,
                state=state,
                from_workload=event.workload,
                message=f"{event.workload} removed",
            )

    def close_all(self) -> None:
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.close()
