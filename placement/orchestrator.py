"""The placement service's logic around the scheduler: decide, publish, wait, withdraw. Adapter.

It never changes the model itself: it publishes events through the bus (the one writer) and waits on
the returned futures. One lock serialises decisions (decide + publish + applied), so two concurrent
requests never both take the last free cpu of a node; waiting for convergence happens outside the
lock (a slow sidecar must not stall other requests; meanwhile both instances count against their
nodes, which is what make-before-break costs).

    orchestrator = PlacementOrchestrator(bus, probes=[routes_applied, sidecars_acked])
    orchestrator.place(request)                      # -> PlaceResult
    orchestrator.migrate(WorkloadId("web-1"), MigrationTarget(best=True))
    orchestrator.evict(WorkloadId("web-2"))
    orchestrator.fail_over()                         # what FailoverLoop calls on every model change
    orchestrator.reconcile_replicas(previous)        # what ReplicaLoop calls: declared replicas kept at their count
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace

from netmodel.bandwidth import ReservationPlan, admission, plan_reservations, reserves_anything
from netmodel.bus import BusUnavailable, ModelBus
from netmodel.events import (
    Event,
    LinkLatencyMeasured,
    LinkLoadMeasured,
    WorkloadHealthChanged,
    WorkloadPlaced,
    WorkloadRemoved,
    WorkloadStarting,
)
from netmodel.ids import NodeId, ServiceName, SiteId, WorkloadId
from netmodel.state import EventRejected, FabricState
from netmodel.types import Workload
from placement.chains import plan_move
from placement.convergence import (
    ConvergenceProbe,
    GenerationCheck,
    Progress,
    as_probe,
    probe_name,
    timed_convergence,
)
from placement.decision_model import DecisionModel, ports_in_use
from placement.errors import PlacementRefused, Refusal
from placement.failover import FailoverPlan, plan_failover
from placement.improvement import improves, no_gain_message, where_it_is
from placement.latency import LatencyCache
from placement.naming import (
    DEFAULT_TRUST_DOMAIN,
    check_trust_domain,
    next_workload_ids,
    workload_number,
    workload_spiffe_id,
)
from placement.replicas import ReplicaPlan, plan_replicas, replica_request
from placement.scheduler import DEFAULT_PROFILE, Profile, schedule_on
from placement.snapshot import ClusterSnapshot
from placement.types import Assignment, Constraints, PlacementRequest, Unschedulable, declared_constraints
from placement.unschedulable import BANDWIDTH
from placement.watch import PlacementEvents, StepKind

LOG = logging.getLogger("edgectl.placement")

DEFAULT_CONVERGENCE_TIMEOUT_S = 10.0
PUBLISH_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class MigrationTarget:
    """Exactly one of: a node, a site (its best node), or the best node anywhere but the current one."""

    node: NodeId | None = None
    site: SiteId | None = None
    best: bool = False

    def __str__(self) -> str:
        return self.node or (f"site {self.site}" if self.site else "the best node")


@dataclass(frozen=True, slots=True)
class PlaceResult:
    workloads: tuple[Workload, ...]
    generation: int
    state: FabricState


@dataclass(frozen=True, slots=True)
class MigrationResult:
    migration_id: str
    old: Workload
    new: Workload
    placed_generation: int
    removed_generation: int
    state: FabricState
    companions: tuple[MigrationResult, ...] = ()
    """Instances it calls that moved with it (a chain), each its own migration, after it."""


@dataclass(frozen=True, slots=True)
class ReplicaPass:
    """What ``reconcile_replicas`` planned on ``state`` and did: instances placed and drained; the moves
    are left to the caller; ``skipped``: services left alone because an instance is in a migration."""

    plan: ReplicaPlan
    state: FabricState
    placed: tuple[Workload, ...]
    evicted: tuple[Workload, ...]
    skipped: frozenset[ServiceName]


@dataclass(frozen=True, slots=True)
class _Move:
    migration_id: str
    old: Workload
    new: Workload
    placed_generation: int


class PlacementOrchestrator:
    def __init__(
        self,
        bus: ModelBus,
        probes: Iterable[ConvergenceProbe | GenerationCheck] = (),
        *,
        events: PlacementEvents | None = None,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        id_floors: Mapping[ServiceName, int] | None = None,
        profile: Profile = DEFAULT_PROFILE,
        convergence_timeout_s: float = DEFAULT_CONVERGENCE_TIMEOUT_S,
        publish_timeout_s: float = PUBLISH_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        progress: Progress | None = None,
    ) -> None:
        self.bus = bus
        self.events = events or PlacementEvents()
        self.trust_domain = check_trust_domain(trust_domain)
        self.profile = profile
        self.convergence_timeout_s = convergence_timeout_s
        self.publish_timeout_s = publish_timeout_s
        self._probes: list[ConvergenceProbe] = [as_probe(p) for p in probes]
        self._clock = clock
        self._sleep = sleep
        self._progress = progress  # rung by the probes' subsystems: a convergence wait looks again at once
        self._lock = threading.RLock()
        self.latency_cache = LatencyCache()  # snapshots and answers of one topology share its all-pairs latencies
        # Until netmodel.Workload carries its constraints (docs/placement.md): kept here, by workload.
        self._constraints: dict[WorkloadId, Constraints] = {}
        self._moving: dict[WorkloadId, str] = {}  # workload -> the migration it is part of
        self._stranded: dict[WorkloadId, tuple[str, ...]] = {}
        # Per service, the highest workload number given (``id_floors``: given before a restart).
        self._highest: dict[ServiceName, int] = dict(id_floors or {})
        self._migration_numbers = itertools.count(1)
        self._plan: tuple[FabricState, ReservationPlan] | None = None  # the last admission check's model and plan
        self._model: DecisionModel | None = None  # what the last Place decided on, advanced by what it placed
        # Placements a failover pass need not look at: instance -> the generation its WorkloadPlaced makes
        # (the one right after the model it was decided on: its node was fit then). Popped on the writer thread.
        self._fit_when_placed: dict[WorkloadId, int] = {}
        self._failover_clean = False  # the last failover pass found nothing displaced and nothing stranded
        self.standby: Callable[[], str | None] = lambda: None
        """Why this controller may not change placements now (a replica that does not lead: its failover pass
        and declared replicas do nothing, and a change it would publish is refused UNAVAILABLE); None: it may."""

    # -- reading ----------------------------------------------------------------------------------------
    def add_probe(self, probe: ConvergenceProbe | GenerationCheck) -> None:
        """Register a convergence probe (a subsystem started after the placement API)."""
        with self._lock:
            self._probes = [*self._probes, as_probe(probe)]

    @property
    def probes(self) -> Sequence[ConvergenceProbe]:
        return self._probes

    def constraints_of(self, workload: Workload) -> Constraints:
        if workload.constraints is not None:  # what it was placed with, also after a restart
            return workload.constraints
        known = self._constraints.get(workload.id)
        if known is not None:
            return known
        service = self.bus.state.services.get(workload.service)
        return declared_constraints(service) if service is not None else Constraints()

    def status_of(self, workload: WorkloadId) -> tuple[str, tuple[str, ...]]:
        """("running" | "migrating" | "stranded", reasons)."""
        if workload in self._moving:
            return "migrating", ()
        reasons = self._stranded.get(workload)
        if reasons is not None:
            return "stranded", reasons
        return "running", ()

    # -- commands -------------------------------------------------------------------------------------------
    def place(self, request: PlacementRequest, profile: Profile | None = None, *, dry_run: bool = False) -> PlaceResult:
        with self._lock:
            state = self.bus.state
            model = self._decision_model(state)
            self._model = None  # given back below only if it still matches the model after this Place
            outcome = schedule_on(model.snapshot, request, profile or self.profile)
            if isinstance(outcome, Unschedulable):
                self._model = model  # schedule_on assumed nothing: still the snapshot of ``state``
                raise PlacementRefused(Refusal.RESOURCE_EXHAUSTED, outcome.message)
            # A dry run shows the ids a real Place would give now, and uses none of them up.
            workloads = self._new_workloads(
                state, request.service, request, outcome.assignments, reserve=not dry_run, model=model
            )
            if dry_run:
                return PlaceResult(tuple(workloads), 0, state)
            for workload in workloads:
                self._constraints[workload.id] = request.constraints
            placed: list[Workload] = []
            for k, workload in enumerate(workloads, start=1):
                self._fit_when_placed[workload.id] = state.generation + k
            reserves = model.reserves
            try:
                for workload in workloads:
                    state = self._publish_placed(workload, known=(state, reserves))
                    reserves = reserves or bool(workload.bandwidth_mbps)
                    placed.append(workload)
            except PlacementRefused:
                for workload in placed:  # all or none
                    self._publish_quietly(WorkloadRemoved(workload.id))
                for workload in workloads:
                    self._constraints.pop(workload.id, None)
                raise
            finally:
                for workload in workloads:
                    self._fit_when_placed.pop(workload.id, None)
            if model.settle(state, workloads):  # nothing but these placements since: the next Place reuses it
                self._model = model
            return PlaceResult(tuple(workloads), state.generation, state)

    def _decision_model(self, state: FabricState) -> DecisionModel:
        """The decision model of ``state``: the one kept from the last Place if it is of this very state
        (no other change since), else built anew (one pass over every instance)."""
        kept = self._model
        if kept is not None and kept.state is state:
            return kept
        reserves = reserves_anything(state)
        plan = self._reservations(state) if reserves else None
        return DecisionModel(state, self.latency_cache, plan, reserves=reserves)

    def evict(self, workload_id: WorkloadId) -> tuple[Workload, FabricState]:
        with self._lock:
            workload = self._require(workload_id)
            self._require_still(workload_id)
            state = self._publish(WorkloadRemoved(workload_id))
            self._constraints.pop(workload_id, None)
            self._stranded.pop(workload_id, None)
            return workload, state

    def migrate(
        self, workload_id: WorkloadId, target: MigrationTarget, timeout_s: float | None = None, *, force: bool = False
    ) -> MigrationResult:
        """Make-before-break: place the new instance, wait for every probe to apply that generation,
        then remove the old one. If they do not in time, the new instance is removed instead and
        DEADLINE_EXCEEDED is raised: the old one kept serving throughout. A move to the best node that
        would not improve on the current one is refused (FAILED_PRECONDITION) unless ``force``.

        For a service in a call graph the move is weighed by the users' request time end to end
        (``placement.chains``) and the reason says what the users gain. Moving to the best node or a site, the
        instances it calls may move with it (``MigrationResult.companions``): all the new instances are placed,
        the probes waited for once, then all the old ones withdrawn (a time-out rolls all of them back). An
        explicit node moves that instance only."""
        timeout = self.convergence_timeout_s if timeout_s is None else timeout_s
        with self._lock:
            state = self.bus.state
            old = self._require(workload_id)
            self._require_still(workload_id)
            request = self._migration_request(state, old, target)
            snapshot = ClusterSnapshot(state, self.latency_cache)
            i = snapshot.index.get(old.node) if old.node is not None else None
            if i is not None:  # it is leaving: its replacement must not avoid it as a neighbour
                snapshot.forget(old.service, old.resources, i)
            here = where_it_is(snapshot, request, i, self.profile) if target.best and i is not None else None
            # Companions: only instances no other migration holds (decided under this lock, so none can start).
            free = [w for w in state.workloads.values() if w.id not in self._moving and w.id != old.id]
            candidates = free if target.node is None else []
            plan = plan_move(snapshot, request, i, candidates, self._request_for, self.profile)
            if isinstance(plan, Unschedulable):
                raise PlacementRefused(Refusal.RESOURCE_EXHAUSTED, f"cannot move {old.id} to {target}: {plan.message}")
            best = plan.assignment
            if here is not None and not force:
                chained = plan.request_ms_after is not None
                if not (plan.gains if chained else improves(here.score, best.score)):
                    message = no_gain_message(old.id, here, best)
                    if chained:
                        message += f"; {plan.reason()}"
                    raise PlacementRefused(Refusal.FAILED_PRECONDITION, message)
            (new,) = self._new_workloads(state, old.service, request, (best,), port=old.port, declared=old.declared)
            reason = plan.reason()
            why = f"to {target}" + (f": {reason}" if reason else "")
            moves = [self._start_move(state, old, new, request.constraints, why, (reason,) if reason else ())]
            try:
                for companion in plan.companions:
                    moves.append(self._start_companion(companion.workload, companion.assignment, new))
            except PlacementRefused:
                self._undo_started(moves)
                raise
        results = self._finish_moves(moves, timeout)
        return replace(results[0], companions=tuple(results[1:]))

    def _start_companion(self, old: Workload, assignment: Assignment, caller: Workload) -> _Move:
        """Place the new instance of a companion (decided with the chain, on the same model)."""
        state = self.bus.state  # the newest: the instances of the chain placed so far hold their ports
        request = PlacementRequest(
            old.service, old.resources, self.constraints_of(old), bandwidth_mbps=old.bandwidth_mbps
        )
        (new,) = self._new_workloads(state, old.service, request, (assignment,), port=old.port, declared=old.declared)
        why = f"with {caller.id}, which calls it, to {assignment.node}"
        return self._start_move(state, old, new, request.constraints, why)

    def _undo_started(self, moves: Sequence[_Move]) -> None:
        """Remove the new instances of moves started but not to be finished (their old ones stay)."""
        for move in moves:
            self._publish_quietly(WorkloadRemoved(move.new.id))
            self._constraints.pop(move.new.id, None)
            self._moving.pop(move.old.id, None)
            self._moving.pop(move.new.id, None)

    def _request_for(self, workload: Workload) -> PlacementRequest:
        return PlacementRequest(
            workload.service, workload.resources, self.constraints_of(workload), bandwidth_mbps=workload.bandwidth_mbps
        )

    def failover_needed(self, event: Event, state: FabricState) -> bool:
        """Whether a failover pass could find anything after ``event`` (applied, making ``state``): never
        after a measured link load; not when the last pass found nothing displaced or stranded and the event
        is a withdrawal (it frees room, which nobody waits for), a measured latency, an instance starting
        or found healthy (each start brings both: a pass over every instance apiece), or a Place this
        orchestrator decided on the model right before it (its node was fit). Called on the model writer
        thread, so a Place burst, and the measurements of a busy fabric, cost no pass over every instance."""
        if isinstance(event, LinkLoadMeasured):
            return False  # a measured load displaces nothing and frees no room (reservations are declared)
        if not self._failover_clean:
            return True  # (a latency measured may bring a stranded instance within its SLO)
        if isinstance(event, WorkloadRemoved | LinkLatencyMeasured | WorkloadStarting):
            # Latency moves no node out of reach (a link down or a node down does); a start is no failure.
            return False
        if isinstance(event, WorkloadHealthChanged) and event.healthy:
            return False  # an instance found healthy (its app listens, say) displaces nothing, frees no room
        if isinstance(event, WorkloadPlaced):
            return self._fit_when_placed.pop(event.workload.id, None) != state.generation
        return True

    def fail_over(self) -> FailoverPlan:
        """Re-place every displaced instance at once (or report it stranded, with reasons, until a later
        call finds room). Old instances are withdrawn after convergence, or after the timeout anyway:
        their node is gone, keeping them in the model would only keep traffic going to it."""
        with self._lock:
            self._failover_clean = False  # until this pass says otherwise: changes meanwhile wake another
            if self.standby() is not None:
                return FailoverPlan()
            state = self.bus.state
            plan = plan_failover(
                state, self.constraints_of, self.profile, exclude=set(self._moving), latency_cache=self.latency_cache
            )
            self._failover_clean = not plan.moves and not plan.stranded
            self._note_stranded(state, plan)
            if not plan.moves:
                return plan
            self.events.emit(
                StepKind.FAILOVER_STARTED,
                generation=state.generation,
                state=state,
                message="; ".join(f"{m.old.id}: {m.why}" for m in plan.moves),
            )
            moves = []
            for move in plan.moves:
                request = PlacementRequest(
                    move.old.service,
                    move.old.resources,
                    self.constraints_of(move.old),
                    bandwidth_mbps=move.old.bandwidth_mbps,
                )
                # The newest model: the moves placed so far in this pass hold ids and ports now.
                (new,) = self._new_workloads(
                    self.bus.state,
                    move.old.service,
                    request,
                    (move.to,),
                    port=move.old.port,
                    declared=move.old.declared,
                )
                try:
                    moves.append(self._start_move(state, move.old, new, request.constraints, f"({move.why})"))
                except PlacementRefused as exc:
                    LOG.warning("failover of %s: %s", move.old.id, exc.reason)
        if moves:
            generation = max(m.placed_generation for m in moves)
            missing = self._wait(moves, generation, self.convergence_timeout_s)
            if missing:
                LOG.warning("failover: %s did not apply generation %d in time; withdrawing anyway", missing, generation)
            for started in moves:
                self._complete(started)
        return plan

    def reconcile_replicas(self, previous: FabricState | None = None) -> ReplicaPass:
        """One pass of the declared replicas, decided and applied under the decision lock on the newest model
        (so it never races a Place, an Evict or a failover pass): the extras are drained and the missing
        instances placed (``declared=True``) now; SLO breakers are only planned (``plan.moved``), the caller
        migrates them (each waits for convergence, outside the lock). Services with an instance in a
        migration or failover are left for a later pass (``skipped``)."""
        with self._lock:
            state = self.bus.state
            busy = frozenset(self._moving)
            plan = plan_replicas(
                state, previous=previous, profile=self.profile, latency_cache=self.latency_cache, busy=busy
            )
            evicted: list[Workload] = []
            for eviction in plan.evicted:
                self._publish(WorkloadRemoved(eviction.workload))
                self._constraints.pop(eviction.workload, None)
                self._stranded.pop(eviction.workload, None)
                evicted.append(state.workloads[eviction.workload])
            placed: list[Workload] = []
            for service in sorted({p.service for p in plan.placed if p.node is not None}):
                declared = state.services[service]
                nodes = [p.node for p in plan.placed if p.service == service and p.node is not None]
                request = replica_request(declared, len(nodes))
                # The newest model: instances placed so far in this pass hold ids and ports now.
                for workload in self._new_workloads(self.bus.state, service, request, nodes, declared=True):
                    try:
                        self._publish_placed(workload)
                    except PlacementRefused as exc:
                        if exc.rejected_by != BANDWIDTH:
                            raise
                        LOG.warning("replicas of %s: %s", service, exc.reason)  # a later pass may find room
                        break
                    placed.append(workload)
            skipped = frozenset(state.workloads[w].service for w in busy if w in state.workloads)
            return ReplicaPass(plan, state, tuple(placed), tuple(evicted), skipped)

    # -- steps --------------------------------------------------------------------------------------------------
    def _migration_request(self, state: FabricState, old: Workload, target: MigrationTarget) -> PlacementRequest:
        constraints = self.constraints_of(old)
        here = frozenset({old.node}) if old.node is not None else frozenset()
        if target.node is not None:
            if target.node not in state.nodes:
                raise PlacementRefused(Refusal.INVALID_ARGUMENT, f"unknown node {target.node!r}")
            if target.node == old.node:
                raise PlacementRefused(Refusal.FAILED_PRECONDITION, f"{old.id} is already on {old.node}")
            candidates: frozenset[NodeId] | None = frozenset({target.node})
        elif target.site is not None:
            if target.site not in state.sites:
                raise PlacementRefused(Refusal.INVALID_ARGUMENT, f"unknown site {target.site!r}")
            candidates = frozenset(n.id for n in state.nodes.values() if n.site == target.site) - here
            if not candidates:
                raise PlacementRefused(
                    Refusal.FAILED_PRECONDITION, f"site {target.site} has no node other than the one {old.id} is on"
                )
        else:
            candidates = None
        return PlacementRequest(
            old.service,
            old.resources,
            constraints,
            candidates=candidates,
            avoid=here,
            bandwidth_mbps=old.bandwidth_mbps,
        )

    def _start_move(
        self,
        state: FabricState,
        old: Workload,
        new: Workload,
        constraints: Constraints,
        why: str,
        reasons: tuple[str, ...] = (),
    ) -> _Move:
        migration_id = f"mig-{next(self._migration_numbers)}"
        if not new.declared:  # a declared instance follows its service's declaration, not a copy of it
            self._constraints[new.id] = constraints
        self._moving[old.id] = self._moving[new.id] = migration_id
        self._stranded.pop(old.id, None)
        self.events.emit(
            StepKind.MIGRATION_STARTED,
            generation=state.generation,
            workload=old,
            state=state,
            migration_id=migration_id,
            from_workload=old.id,
            message=f"{old.id} on {old.node} -> {new.id} on {new.node} {why}",
            reasons=reasons,
        )
        try:
            placed = self._publish_placed(new)
        except PlacementRefused:
            self._constraints.pop(new.id, None)
            self._moving.pop(old.id, None)
            self._moving.pop(new.id, None)
            raise
        return _Move(migration_id, old, new, placed.generation)

    def _wait(self, moves: Sequence[_Move], generation: int, timeout_s: float) -> list[str]:
        """Wait once until every probe applied ``generation`` for all the new instances of ``moves`` (one
        migration, a chain, or a failover pass); each move's Watch steps say so."""
        probes = self._probes
        names = ", ".join(probe_name(p) for p in probes) or "nothing (no probes registered)"
        for move in moves:
            self.events.emit(
                StepKind.CONVERGENCE_WAITING,
                generation=generation,
                workload=move.new,
                state=self.bus.state,
                migration_id=move.migration_id,
                from_workload=move.old.id,
                message=f"waiting for {names} to apply generation {generation}",
            )
        workloads = frozenset(str(move.new.id) for move in moves)
        missing, took = timed_convergence(
            probes,
            generation,
            timeout_s,
            clock=self._clock,
            sleep=self._sleep,
            workloads=workloads,
            progress=self._progress,
        )
        if not missing:
            after = ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in took)
            for move in moves:
                self.events.emit(
                    StepKind.CONVERGED,
                    generation=generation,
                    workload=move.new,
                    state=self.bus.state,
                    migration_id=move.migration_id,
                    from_workload=move.old.id,
                    message=f"generation {generation} applied" + (f" ({after})" if after else ""),
                    converged_after=took,
                )
        return missing

    def _finish_moves(self, moves: Sequence[_Move], timeout_s: float) -> list[MigrationResult]:
        """Wait once for every new instance of ``moves`` (one chain), then withdraw every old one; if the
        probes do not apply it in time, remove every new instance instead (the old ones served throughout)."""
        first = moves[0]
        try:
            generation = max(m.placed_generation for m in moves)
            missing = self._wait(moves, generation, timeout_s)
            if missing:
                with self._lock:
                    for move in moves:
                        state = self._publish(WorkloadRemoved(move.new.id))
                        self._constraints.pop(move.new.id, None)
                news = ", ".join(f"{m.new.id} on {m.new.node}" for m in moves)
                olds = ", ".join(f"{m.old.id} on {m.old.node}" for m in moves)
                reason = (
                    f"migration {first.migration_id} of {first.old.id} to {first.new.node} did not converge within "
                    f"{timeout_s:g} s (waiting for: {', '.join(missing)}); rolled back: {news} removed, "
                    f"{olds} kept"
                )
                for move in moves:
                    self.events.emit(
                        StepKind.MIGRATION_ROLLED_BACK,
                        generation=state.generation,
                        workload=move.new,
                        state=state,
                        migration_id=move.migration_id,
                        from_workload=move.old.id,
                        message=reason,
                    )
                raise PlacementRefused(Refusal.DEADLINE_EXCEEDED, reason)
            return [self._complete(move) for move in moves]
        finally:
            for move in moves:
                self._moving.pop(move.old.id, None)
                self._moving.pop(move.new.id, None)

    def _complete(self, move: _Move) -> MigrationResult:
        try:
            with self._lock:
                state = self._publish(WorkloadRemoved(move.old.id))
                self._constraints.pop(move.old.id, None)
            self.events.emit(
                StepKind.MIGRATION_COMPLETED,
                generation=state.generation,
                workload=state.workloads.get(move.new.id, move.new),
                state=state,
                migration_id=move.migration_id,
                from_workload=move.old.id,
                message=f"{move.old.id} replaced by {move.new.id} on {move.new.node}",
            )
            return MigrationResult(
                move.migration_id, move.old, move.new, move.placed_generation, state.generation, state
            )
        finally:
            self._moving.pop(move.old.id, None)
            self._moving.pop(move.new.id, None)

    def _note_stranded(self, state: FabricState, plan: FailoverPlan) -> None:
        now = {s.workload.id: s for s in plan.stranded}
        for workload_id in [w for w in self._stranded if w not in now]:
            del self._stranded[workload_id]
        for workload_id, stranded in now.items():
            reasons = (stranded.why, *stranded.reasons)
            if self._stranded.get(workload_id) == reasons:
                continue  # said already: retried quietly on every change until something moves
            self._stranded[workload_id] = reasons
            self.events.emit(
                StepKind.UNSCHEDULABLE,
                generation=state.generation,
                workload=stranded.workload,
                state=state,
                message=f"{workload_id} must leave ({stranded.why}) but cannot go anywhere yet",
                reasons=reasons,
            )

    # -- helpers -----------------------------------------------------------------------------------------------
    def _require(self, workload_id: WorkloadId) -> Workload:
        workload = self.bus.state.workloads.get(workload_id)
        if workload is None:
            raise PlacementRefused(Refusal.NOT_FOUND, f"no workload {workload_id!r}")
        return workload

    def _require_still(self, workload_id: WorkloadId) -> None:
        migration = self._moving.get(workload_id)
        if migration is not None:
            raise PlacementRefused(
                Refusal.FAILED_PRECONDITION, f"{workload_id} is part of migration {migration}, still in progress"
            )

    def _new_workloads(
        self,
        state: FabricState,
        service: ServiceName,
        request: PlacementRequest,
        assignments: Sequence[Assignment | NodeId],
        port: int | None = None,
        *,
        reserve: bool = True,
        declared: bool = False,
        model: DecisionModel | None = None,
    ) -> list[Workload]:
        """New instances on ``assignments``; ``reserve``: their ids are used up (never given again).
        ``declared``: for the service's declared replicas; such an instance carries no constraints of its
        own, it follows what its service declares (also after the declaration changes). ``model``: the
        decision model of ``state`` (its ports and numbers, without a pass over every instance)."""
        if model is not None and model.state is state:
            floor = max(self._highest.get(service, 0), model.highest(service))
            ids = next_workload_ids(service, (), len(assignments), floor)
            in_use = model.ports()
            nodes = {a.node if isinstance(a, Assignment) else a for a in assignments}
            taken = {node: set(in_use.get(node, ())) for node in nodes}
        else:
            ids = next_workload_ids(service, state.workloads, len(assignments), self._highest.get(service, 0))
            taken = ports_in_use(state)
        if reserve and ids:
            self._highest[service] = max(self._highest.get(service, 0), workload_number(service, ids[-1]) or 0)
        service_spec = state.services.get(service)
        wanted = port if port else (service_spec.port if service_spec else 0)
        workloads = []
        for workload_id, assignment in zip(ids, assignments, strict=True):
            node = assignment.node if isinstance(assignment, Assignment) else assignment
            on_node = taken.setdefault(node, set())
            chosen = first_free_port(wanted, on_node)
            on_node.add(chosen)
            workloads.append(
                Workload(
                    id=workload_id,
                    service=service,
                    spiffe_id=workload_spiffe_id(self.trust_domain, service, workload_id),
                    resources=request.resources,
                    node=node,
                    port=chosen,
                    constraints=None if declared else request.constraints,
                    declared=declared,
                    bandwidth_mbps=request.bandwidth_mbps,
                )
            )
        return workloads

    def _publish_placed(self, workload: Workload, known: tuple[FabricState, bool] | None = None) -> FabricState:
        """Publish a new instance if the network admits its bandwidth reservations now (every Place, replica,
        failover and migration passes here, under the decision lock, on the newest model: what the scheduler
        decided on an older one, or a profile without ``BandwidthFits``, can never over-commit a link).
        ``known``: a model and whether anything in it reserves bandwidth (saves a pass when it is the newest)."""
        state = self.bus.state
        reserves = known[1] if known is not None and known[0] is state else reserves_anything(state)
        if reserves or workload.bandwidth_mbps:
            before = self._reservations(state)
            try:
                hypothetical = state.apply(WorkloadPlaced(workload))
            except EventRejected as exc:  # its node or service went away since the decision
                raise PlacementRefused(Refusal.FAILED_PRECONDITION, f"the model refused it: {exc}") from None
            after = plan_reservations(hypothetical, before)
            refusal = admission(before, after)
            if refusal is not None:
                refused = PlacementRefused(
                    Refusal.RESOURCE_EXHAUSTED, f"{workload.id} on {workload.node}: {refusal.message}"
                )
                refused.rejected_by = BANDWIDTH
                raise refused
        return self._publish(WorkloadPlaced(workload))

    def _reservations(self, state: FabricState) -> ReservationPlan:
        """The reservation plan of ``state``, kept for the next check (routed incrementally from the last)."""
        last = self._plan
        if last is not None and last[0] is state:
            return last[1]
        plan = plan_reservations(state, last[1] if last is not None else None)
        self._plan = (state, plan)
        return plan

    def _publish(self, event: Event) -> FabricState:
        reason = self.standby()
        if reason is not None:
            raise PlacementRefused(Refusal.UNAVAILABLE, reason)
        try:
            return self.bus.publish_and_wait(event, timeout=self.publish_timeout_s)
        except BusUnavailable as exc:
            raise PlacementRefused(Refusal.UNAVAILABLE, str(exc)) from None
        except EventRejected as exc:
            raise PlacementRefused(Refusal.FAILED_PRECONDITION, f"the model refused it: {exc}") from None
        except FutureTimeout:
            raise PlacementRefused(
                Refusal.UNAVAILABLE,
                f"the model writer did not apply {type(event).__name__} within {self.publish_timeout_s:g} s",
            ) from None

    def _publish_quietly(self, event: Event) -> None:
        try:
            self._publish(event)
        except PlacementRefused as exc:
            LOG.error("could not undo with %s: %s", type(event).__name__, exc.reason)


def first_free_port(wanted: int, taken: set[int]) -> int:
    """``wanted`` if free on the node, else the next free one above it: two instances on one node (when
    nothing else fits) must not both listen on one address."""
    if not wanted:
        return 0
    port = wanted
    for _ in range(65536):
        if port not in taken:
            return port
        port = port + 1 if port < 65535 else 1024
    raise PlacementRefused(Refusal.RESOURCE_EXHAUSTED, "no free port on the node")


STRANDED_PASS_SHARE = 0.25
"""At most this share of the time goes to failover passes that moved nothing and left instances stranded:
such a pass is followed by a pause three times its length. While a large fabric comes up, every switch
connected and link found wakes the loop, and each pass over 10,000 stranded instances took ~1 s with the
GIL held, slowing the very handshakes that would give them room (500 switches: 56 connected after 4 min).
A pass that moves something is followed by the next at once."""


class FailoverLoop:
    """Runs ``orchestrator.fail_over()`` on its own thread after every model change (coalesced: a burst
    of events costs one pass on the newest state; see ``STRANDED_PASS_SHARE``). Subscribe it to the
    EventBus."""

    def __init__(self, orchestrator: PlacementOrchestrator) -> None:
        self._orchestrator = orchestrator
        self._wake = threading.Condition()
        self._dirty = True  # plan once at start: a restart may find instances on nodes now gone
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="placement-failover", daemon=True)

    def on_model_change(self, event: Event, state: FabricState) -> None:
        if not self._orchestrator.failover_needed(event, state):
            return  # nothing it could move (a Place burst costs no pass)
        with self._wake:
            self._dirty = True
            self._wake.notify()

    def wake(self) -> None:
        """Plan a pass now (a replica that starts to lead: displaced instances are its to move)."""
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

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._dirty or self._stopping)
                if self._stopping:
                    return
                self._dirty = False
            started = time.monotonic()
            try:
                plan = self._orchestrator.fail_over()
            except Exception:  # a bug here must not end failover for good
                LOG.exception("failover pass failed")
                continue
            if plan.stranded and not plan.moves:
                pause = (time.monotonic() - started) * (1 / STRANDED_PASS_SHARE - 1)
                with self._wake:
                    self._wake.wait_for(lambda: self._stopping, timeout=pause)
