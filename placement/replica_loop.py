"""The replica reconciler: keeps every service at the replicas the desired state declares. Adapter.

    loop = ReplicaLoop(orchestrator, durable=store.check_durable)
    bus.subscribe(loop)
    loop.start()
    loop.status_view(bus.state)      # GET /api/v1/replicas
    loop.stop()

Level-triggered, like ``FailoverLoop``: the bus subscriber only sets a flag; the loop's own thread then
plans on the newest model (``placement.replicas.plan_replicas``) and acts through the
``PlacementOrchestrator`` (so Watch, ids, SPIFFE ids, identities, xDS and the state store see the
instances as they see a Place call's): the missing instances are placed and the extras drained under the
orchestrator's decision lock (the one failover and the API decide under, so the two loops never place
two instances for one missing replica), and instances that break a re-declared SLO move
make-before-break (``migrate``). A burst of model changes costs one pass.

What cannot be done now (nothing fits, a move refused) is said once per change of reason (a log line,
a Watch ``UNSCHEDULABLE`` event, ``status_view``) and retried on a later model change, with a backoff
(1 s doubling to 30 s) while passes make no progress: never a hot loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from netmodel.events import DesiredStateApplied, Event, WorkloadPlaced, WorkloadRemoved
from netmodel.ids import ServiceName
from netmodel.state import FabricState
from placement.errors import PlacementRefused
from placement.orchestrator import MigrationTarget, PlacementOrchestrator, ReplicaPass
from placement.replicas import declared_instances
from placement.watch import StepKind

LOG = logging.getLogger("edgectl.placement.replicas")

MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0

DurableCheck = Callable[[int], str | None]
"""``(generation) -> None`` once it is on disk, or why not (``StateStore.check_durable``)."""


class ReplicaLoop:
    def __init__(
        self,
        orchestrator: PlacementOrchestrator,
        *,
        durable: DurableCheck | None = None,
        min_backoff_s: float = MIN_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._orchestrator = orchestrator
        self._durable = durable
        self._min_backoff_s = min_backoff_s
        self._max_backoff_s = max_backoff_s
        self._clock = clock
        self._wake = threading.Condition()
        self._dirty = True  # reconcile once at start: the document's replicas, or a restart's saved ones
        self._stopping = False
        self._retry_at = 0.0
        self._backoff_s = min_backoff_s
        self._pass_lock = threading.Lock()  # one pass at a time (the thread, or a caller of reconcile())
        self._baseline: FabricState | None = None
        """The model before the latest declaration change that still has SLO breakers to move."""
        self._pending: dict[ServiceName, str] = {}
        self._progress = False  # whether the last pass placed, drained or moved anything
        self._thread = threading.Thread(target=self._run, name="placement-replicas", daemon=True)

    # -- the bus ------------------------------------------------------------------------------------------------
    def on_model_change(self, event: Event, state: FabricState) -> None:
        if not self._pending and not _may_change_counts(event):
            return  # all met: only a new declaration or a placement change can unmeet it (a Place burst costs nothing)
        with self._wake:
            self._dirty = True
            self._wake.notify()

    def wake(self) -> None:
        """Plan again now (a replica that starts to lead: the declared replicas are its to keep)."""
        with self._wake:
            self._dirty = True
            self._wake.notify()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- reading ------------------------------------------------------------------------------------------------
    def status_view(self, state: FabricState) -> dict[str, Any]:
        """Per service: the replicas declared, the declared instances placed, and why the rest are not."""
        instances = declared_instances(state)
        pending = dict(self._pending)
        return {
            "generation": state.generation,
            "services": {
                name: {
                    "replicas": service.replicas,
                    "placed": len(instances.get(name, [])),
                    "instances": [w.id for w in instances.get(name, [])],
                    "pending": pending.get(name),
                }
                for name, service in sorted(state.services.items())
            },
        }

    # -- one pass -----------------------------------------------------------------------------------------------
    def reconcile(self) -> ReplicaPass:
        """One pass now, on the calling thread (the loop's own, or a test's). Returns what it did."""
        with self._pass_lock:
            done = self._orchestrator.reconcile_replicas(self._baseline)
            problems: dict[ServiceName, str] = {}
            for placement in done.plan.unplaceable:
                problems.setdefault(placement.service, placement.reason)
            moves_left = False
            moved = 0
            for move in done.plan.moved:
                if move.to_node is None:
                    problems.setdefault(move.service, move.reason)
                    moves_left = True
                    continue
                LOG.info("%s", move.reason)
                try:
                    self._orchestrator.migrate(move.workload, MigrationTarget(best=True))
                    moved += 1
                except PlacementRefused as exc:
                    problems.setdefault(move.service, f"{move.workload} must move: {exc.reason}")
                    moves_left = True
            for workload in done.placed:
                LOG.info("placed %s on %s (declared replicas of %s)", workload.id, workload.node, workload.service)
            for workload in done.evicted:
                LOG.info("drained %s from %s (more than %s declares)", workload.id, workload.node, workload.service)
            if not moves_left and not done.skipped:
                self._baseline = done.state  # every declaration up to this one is met
            elif self._baseline is None:
                self._baseline = done.state
            self._report(done.state, problems)
            self._progress = bool(done.placed or done.evicted or moved)
            if self._durable is not None and (done.placed or done.evicted):
                reason = self._durable(self._orchestrator.bus.state.generation)
                if reason is not None:
                    LOG.warning("declared replicas applied but not saved: %s", reason)
            return done

    def _report(self, state: FabricState, problems: dict[ServiceName, str]) -> None:
        for service in [s for s in self._pending if s not in problems]:
            del self._pending[service]
            LOG.info("%s: declared replicas placed", service)
        for service, reason in problems.items():
            if self._pending.get(service) == reason:
                continue  # said already: retried quietly until something changes
            self._pending[service] = reason
            LOG.warning("%s", reason)
            self._orchestrator.events.emit(
                StepKind.UNSCHEDULABLE, generation=state.generation, state=state, message=reason
            )

    # -- the thread ---------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopping:
                    if self._dirty:
                        delay = self._retry_at - self._clock()
                        if delay <= 0:
                            break
                        self._wake.wait(delay)  # backing off: changes meanwhile are folded into one pass
                    else:
                        self._wake.wait()
                if self._stopping:
                    return
                self._dirty = False
            if self._orchestrator.standby() is not None:
                continue  # not this replica's to do: the leader keeps the counts (wake() when that changes)
            try:
                self.reconcile()
            except Exception:  # a bug or a refused publish must not end the reconciler for good
                LOG.exception("declared replicas: pass failed")
                self._back_off()
                continue
            if self._pending and not self._progress:
                self._back_off()
            elif not self._pending:
                self._backoff_s = self._min_backoff_s
                self._retry_at = 0.0

    def _back_off(self) -> None:
        self._retry_at = self._clock() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, self._max_backoff_s)


def _may_change_counts(event: Event) -> bool:
    """Whether ``event`` may leave a service short of or above its declared replicas, or re-declare an SLO.
    (A node or an instance failing is failover's: it replaces the instance, the count stays.)"""
    if isinstance(event, WorkloadPlaced):
        return event.workload.declared
    return isinstance(event, (WorkloadRemoved, DesiredStateApplied))
