"""What the parts need of the event bus, as protocols: the bus lives in edgectl, its users do not import it.

Every bus subscriber has one method, ``on_model_change``; it runs on the model writer thread, so it
must hand work off, not do it (``edgectl.bus.EventBus`` implements ``ModelBus``).
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Protocol

from netmodel.events import Event
from netmodel.state import FabricState


class BusUnavailable(RuntimeError):
    """The bus takes no change now (a replica that cannot reach etcd serves its last model read-only)."""


class ModelSubscriber(Protocol):
    def on_model_change(self, event: Event, state: FabricState) -> None:
        """Called with every event that changed the model and the state after it."""
        ...


class ModelBus(Protocol):
    @property
    def state(self) -> FabricState:
        """The latest model: an immutable snapshot."""
        ...

    def publish(self, event: Event) -> Future[FabricState]:
        """Enqueue ``event``; the future resolves to the state after it (or EventRejected)."""
        ...

    def publish_and_wait(self, event: Event, timeout: float) -> FabricState:
        """``publish(event).result(timeout)``; a bus may apply it on the calling thread when nothing is
        queued before it (same order, one writer at a time)."""
        ...

    def subscribe(self, subscriber: ModelSubscriber) -> None: ...
