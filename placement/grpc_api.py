"""The placement gRPC API (``edgectl.placement.v1.Placement``): the only network adapter of placement.

    server = start_placement_api(bus, "127.0.0.1", 50051, convergence_probes=[...])
    server.port            # the bound port (pass 0 for a free one)
    server.add_convergence_probe(probe)
    server.stop()

Each handler checks every field (``placement.requests``) before anything is published, turns the
request into a call on the ``PlacementOrchestrator`` (which publishes through the bus and waits on the
futures: one writer), and turns a ``PlacementRefused`` into its status code with the reason as the
message. Request bytes are decoded by a parser that never raises (an undecodable message is
INVALID_ARGUMENT, not grpcio's INTERNAL), and fields this server does not know are refused rather
than silently ignored (a newer client's constraint must not be dropped on the floor). gRPC health
(``grpc.health.v1``) and reflection are served beside it.

A follower replica of a replicated controller decides no writes: ``server.forward_writes_to(leader)``
makes Place, Migrate and Evict go to the leader's placement API as they came (bytes), and its answer
(status code and details) come back as they are; Get, List and Watch are still served here.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from netmodel.bandwidth import bandwidth_of
from netmodel.bus import ModelBus
from netmodel.ids import NodeId, ServiceName, SiteId, WorkloadId
from netmodel.logsafe import log_safe
from netmodel.state import FabricState
from netmodel.types import Tier, Workload
from netmodel.wire import Undecodable, field_problems, safe_parser
from pki.grpc_tls import ServerTls
from placement._pb import placement_pb2 as pb
from placement.convergence import ConvergenceProbe, GenerationCheck, Progress
from placement.errors import PlacementRefused, Refusal, never_reached_a_server
from placement.latency import SwitchLatencies
from placement.naming import DEFAULT_TRUST_DOMAIN
from placement.orchestrator import FailoverLoop, MigrationResult, MigrationTarget, PlacementOrchestrator
from placement.requests import PlaceInput, build_place_request, check_name, check_workload_id, invalid, shown
from placement.scheduler import DEFAULT_PROFILE, Profile
from placement.snapshot import ClusterSnapshot
from placement.types import AffinityTerm, Constraints, Scope
from placement.unschedulable import rejecting_filter
from placement.watch import PlacementEvents, PlacementStep, StepKind

LOG = logging.getLogger("edgectl.placement.api")

CallerCheck = Callable[[str], str | None]
"""``(client certificate PEM) -> None`` (allowed) or why not (``PkiService.authorize_operator``)."""

DurableCheck = Callable[[int], str | None]
"""``(generation) -> None`` once every change up to it is on disk, or why it is not
(``StateStore.check_durable``). Place, Migrate and Evict answer OK only after it."""


ApiTls = ServerTls[CallerCheck]
"""mTLS for the placement API; ``authorize`` is asked per call about the verified client."""


def _caller_refusal(context: grpc.ServicerContext, authorize: CallerCheck | None) -> str | None:
    if authorize is None:
        return None
    certificates = context.auth_context().get("x509_pem_cert") or []
    if not certificates:
        return "no client certificate"
    first = certificates[0]
    return authorize(first.decode() if isinstance(first, bytes) else str(first))


SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Placement"].full_name
MAX_MIGRATION_TIMEOUT_S = 300.0
DEADLINE_MARGIN_S = 0.2
"""A migration stops waiting this long before the caller's deadline, so its answer still arrives."""

TIER_TO_PB = {Tier.EDGE: pb.TIER_EDGE, Tier.METRO: pb.TIER_METRO, Tier.CLOUD: pb.TIER_CLOUD}
TIER_FROM_PB: dict[int, Tier] = {value: tier for tier, value in TIER_TO_PB.items()}  # keyed by the wire's int
SCOPE_FROM_PB = {pb.SCOPE_UNSPECIFIED: Scope.NODE, pb.SCOPE_NODE: Scope.NODE, pb.SCOPE_SITE: Scope.SITE}
SCOPE_TO_PB = {Scope.NODE: pb.SCOPE_NODE, Scope.SITE: pb.SCOPE_SITE}
KIND_TO_PB = {kind: pb.PlacementEvent.Kind.Value(f"KIND_{kind.name}") for kind in StepKind}


# -- decoding -----------------------------------------------------------------------------------------------


def _checked(request: Any) -> Any:
    if isinstance(request, Undecodable):
        raise invalid(request.reason)
    unknown = field_problems(request).unknown
    if unknown:
        raise invalid(
            f"request has fields this server does not know (field numbers {', '.join(unknown)}): "
            "refusing rather than ignoring them"
        )
    return request


def _tiers(values: Iterable[int]) -> tuple[Tier, ...]:
    out = []
    for k, value in enumerate(values):
        tier = TIER_FROM_PB.get(value)
        if tier is None:
            what = "TIER_UNSPECIFIED is not a tier" if value == pb.TIER_UNSPECIFIED else f"unknown tier {value}"
            raise invalid(f"constraints.tiers[{k}]: {what} (TIER_EDGE, TIER_METRO or TIER_CLOUD)")
        out.append(tier)
    return tuple(out)


def _terms(field: str, terms: Iterable[pb.AffinityTerm]) -> tuple[tuple[str, Scope], ...]:
    out = []
    for k, term in enumerate(terms):
        scope = SCOPE_FROM_PB.get(term.scope)
        if scope is None:
            raise invalid(f"constraints.{field}[{k}].scope: unknown scope {term.scope} (SCOPE_NODE or SCOPE_SITE)")
        out.append((term.service, scope))
    return tuple(out)


def place_input(request: pb.PlaceRequest) -> PlaceInput:
    c = request.constraints
    return PlaceInput(
        service=request.service,
        cpu_millis=request.cpu_millis if request.HasField("cpu_millis") else None,
        memory_mib=request.memory_mib if request.HasField("memory_mib") else None,
        max_latency_ms=c.max_latency_ms if c.HasField("max_latency_ms") else None,
        near=tuple(c.near),
        tiers=_tiers(c.tiers),
        affinity=_terms("affinity", c.affinity),
        anti_affinity=_terms("anti_affinity", c.anti_affinity),
        replicas=request.replicas,
        profile=request.profile,
        bandwidth_mbps=request.bandwidth_mbps if request.HasField("bandwidth_mbps") else None,
    )


def migration_target(request: pb.MigrateRequest, state: FabricState) -> MigrationTarget:
    which = request.WhichOneof("target")
    if which is None:
        raise invalid("target is required: node, site or best")
    if which == "node":
        return MigrationTarget(node=NodeId(check_name("node", request.node)))
    if which == "site":
        return MigrationTarget(site=SiteId(check_name("site", request.site)))
    if which == "node_or_site":
        name = check_name("node_or_site", request.node_or_site)
        if name in state.nodes:
            return MigrationTarget(node=NodeId(name))
        if name in state.sites:
            return MigrationTarget(site=SiteId(name))
        raise invalid(f"no node or site is called {shown(name)}")
    if not request.best:
        raise invalid("best must be true when given (or name a node or a site)")
    return MigrationTarget(best=True)


# -- encoding ----------------------------------------------------------------------------------------------------


def constraints_message(constraints: Constraints) -> pb.Constraints:
    message = pb.Constraints(
        tiers=[TIER_TO_PB[t] for t in sorted(constraints.tiers, key=list(Tier).index)],
        near=list(constraints.near),
        affinity=[_term_message(t) for t in constraints.affinity],
        anti_affinity=[_term_message(t) for t in constraints.anti_affinity],
    )
    if constraints.max_latency_ms is not None:
        message.max_latency_ms = constraints.max_latency_ms
    return message


def _term_message(term: AffinityTerm) -> pb.AffinityTerm:
    return pb.AffinityTerm(service=term.service, scope=SCOPE_TO_PB[term.scope])


def workload_message(
    workload: Workload,
    state: FabricState,
    constraints: Constraints,
    status: tuple[str, tuple[str, ...]],
    latencies: SwitchLatencies,
) -> pb.Workload:
    """``latencies`` are those of ``state.topology``."""
    message = pb.Workload(
        id=workload.id,
        service=workload.service,
        spiffe_id=workload.spiffe_id,
        node=workload.node or "",
        cpu_millis=workload.resources.cpu_millis,
        memory_mib=workload.resources.memory_mib,
        port=workload.port,
        constraints=constraints_message(constraints),
        status=status[0],
        reasons=list(status[1]),
    )
    reserved = bandwidth_of(state, workload)
    if reserved > 0:
        message.bandwidth_mbps = reserved
    node = state.nodes.get(workload.node) if workload.node is not None else None
    if node is not None:
        message.site = node.site
        site = state.sites.get(node.site)
        if site is not None:
            message.tier = TIER_TO_PB[site.tier]
        for host_id in constraints.near:
            host = state.hosts.get(host_id)
            if host is not None and host.attachment is not None:
                us = latencies.between_us(host.attachment.switch, node.attachment.switch)
                if math.isfinite(us):
                    message.latency_ms[host_id] = us / 1000.0
    return message


# -- the service ----------------------------------------------------------------------------------------------


class PlacementServicer:
    def __init__(
        self,
        orchestrator: PlacementOrchestrator,
        max_watchers: int,
        max_migrations: int = 4,
        durable: DurableCheck | None = None,
        attribute_refusals: bool = False,
    ) -> None:
        self.orchestrator = orchestrator
        self.attribute_refusals = attribute_refusals
        """Name the filter behind each Place the scheduler refuses (one more filter pass: for metrics)."""
        self.max_watchers = max_watchers
        self.max_migrations = max_migrations
        self._migration_slots = threading.BoundedSemaphore(max_migrations)
        self.durable = durable

    def _saved(self, generation: int, what: str) -> None:
        """Answer OK only once the change is on disk (with ``--state-dir``). Waits outside the
        orchestrator's lock, so concurrent calls share one commit (group commit)."""
        if self.durable is None:
            return
        reason = self.durable(generation)
        if reason is not None:
            raise PlacementRefused(Refusal.UNAVAILABLE, f"{what} is applied but not saved: {reason}")

    def _workload(self, workload: Workload, state: FabricState) -> pb.Workload:
        o = self.orchestrator
        latencies = o.latency_cache.of(state.topology)
        return workload_message(workload, state, o.constraints_of(workload), o.status_of(workload.id), latencies)

    def place(self, request: pb.PlaceRequest, context: grpc.ServicerContext) -> pb.PlaceResponse:
        request = _checked(request)
        state = self.orchestrator.bus.state
        placement, profile = build_place_request(state, place_input(request))
        try:
            result = self.orchestrator.place(placement, profile, dry_run=request.dry_run)
        except PlacementRefused as exc:
            if exc.kind is Refusal.RESOURCE_EXHAUSTED and self.attribute_refusals and not exc.rejected_by:
                snapshot = ClusterSnapshot(state, self.orchestrator.latency_cache)
                exc.rejected_by = rejecting_filter(snapshot, placement, profile)
            raise
        if not request.dry_run:
            self._saved(result.generation, "the placement of " + ", ".join(w.id for w in result.workloads))
        return pb.PlaceResponse(
            workloads=[self._workload(w, result.state) for w in result.workloads], generation=result.generation
        )

    def migrate(self, request: pb.MigrateRequest, context: grpc.ServicerContext) -> pb.MigrateResponse:
        request = _checked(request)
        workload_id = check_workload_id(request.workload_id)
        target = migration_target(request, self.orchestrator.bus.state)
        timeout = request.timeout_s
        if math.isnan(timeout) or not 0 <= timeout <= MAX_MIGRATION_TIMEOUT_S:
            raise invalid(f"timeout_s must be between 0 and {MAX_MIGRATION_TIMEOUT_S:g}, got {timeout!r}")
        timeout = timeout or self.orchestrator.convergence_timeout_s
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = max(0.0, min(timeout, remaining - DEADLINE_MARGIN_S))
        # A migration holds its worker thread while it waits for convergence: a bounded number of
        # them, so slow ones never take the workers that serve List, Get, Watch and health.
        if not self._migration_slots.acquire(blocking=False):
            raise PlacementRefused(
                Refusal.RESOURCE_EXHAUSTED,
                f"{self.max_migrations} migrations are already in progress (the most at once): try again later",
            )
        try:
            result = self.orchestrator.migrate(workload_id, target, timeout, force=request.force)
        finally:
            self._migration_slots.release()
        last = max([result.removed_generation, *(c.removed_generation for c in result.companions)])
        self._saved(last, f"migration {result.migration_id} ({result.old.id} -> {result.new.id})")
        return self._migrate_response(result, companions=True)

    def _migrate_response(self, result: MigrationResult, *, companions: bool = False) -> pb.MigrateResponse:
        return pb.MigrateResponse(
            migration_id=result.migration_id,
            from_workload_id=result.old.id,
            workload=self._workload(result.new, result.state),
            placed_generation=result.placed_generation,
            removed_generation=result.removed_generation,
            companions=[self._migrate_response(c) for c in result.companions] if companions else [],
        )

    def evict(self, request: pb.EvictRequest, context: grpc.ServicerContext) -> pb.EvictResponse:
        request = _checked(request)
        workload, state = self.orchestrator.evict(check_workload_id(request.workload_id))
        self._saved(state.generation, f"the eviction of {workload.id}")
        return pb.EvictResponse(workload=self._workload(workload, state), generation=state.generation)

    def get(self, request: pb.GetRequest, context: grpc.ServicerContext) -> pb.Workload:
        request = _checked(request)
        workload_id = check_workload_id(request.workload_id)
        state = self.orchestrator.bus.state
        workload = state.workloads.get(WorkloadId(workload_id))
        if workload is None:
            raise PlacementRefused(Refusal.NOT_FOUND, f"no workload {workload_id!r}")
        return self._workload(workload, state)

    def list(self, request: pb.ListRequest, context: grpc.ServicerContext) -> pb.ListResponse:
        request = _checked(request)
        for field in ("service", "node"):
            value = getattr(request, field)
            if value:
                check_name(field, value)
        state = self.orchestrator.bus.state
        workloads = [
            self._workload(w, state)
            for w in sorted(state.workloads.values(), key=lambda w: w.id)
            if (not request.service or w.service == request.service) and (not request.node or w.node == request.node)
        ]
        return pb.ListResponse(workloads=workloads, generation=state.generation)

    def watch(self, request: pb.WatchRequest, context: grpc.ServicerContext) -> Iterator[pb.PlacementEvent]:
        request = _checked(request)
        events = self.orchestrator.events
        if events.watchers >= self.max_watchers:
            raise PlacementRefused(Refusal.RESOURCE_EXHAUSTED, f"too many watchers (at most {self.max_watchers})")
        subscription = events.subscribe()
        context.add_callback(subscription.close)  # the client went away: free the queue, end the loop
        try:
            known_generation = -1
            if request.include_existing:
                state = self.orchestrator.bus.state
                known_generation = state.generation
                for workload in sorted(state.workloads.values(), key=lambda w: w.id):
                    yield pb.PlacementEvent(
                        kind=pb.PlacementEvent.KIND_PLACED,
                        generation=state.generation,
                        workload=self._workload(workload, state),
                        message="already placed",
                    )
            while context.is_active():
                step = subscription.get(timeout=0.25)
                if step is None:
                    if subscription.overflowed:
                        raise PlacementRefused(
                            Refusal.RESOURCE_EXHAUSTED, "this watch fell too far behind and was cut off: watch again"
                        )
                    if subscription.closed:
                        return
                    continue
                if step.kind in (StepKind.PLACED, StepKind.REMOVED) and step.generation <= known_generation:
                    continue  # already sent as existing
                yield self._event(step)
        finally:
            subscription.close()

    def _event(self, step: PlacementStep) -> pb.PlacementEvent:
        message = pb.PlacementEvent(
            sequence=step.sequence,
            kind=KIND_TO_PB[step.kind],
            generation=step.generation,
            migration_id=step.migration_id,
            from_workload_id=step.from_workload or "",
            message=step.message,
            reasons=list(step.reasons),
            at=step.at,
            converged_after=[pb.ProbeTime(probe=name, seconds=seconds) for name, seconds in step.converged_after],
        )
        if step.workload is not None:
            message.workload.CopyFrom(self._workload(step.workload, step.state or self.orchestrator.bus.state))
        return message


# -- writes forwarded to the leader ---------------------------------------------------------------------------

WRITE_METHODS = ("Place", "Migrate", "Evict")
DECIDED_KEY = "edgectl-placement-decided"
"""Trailing metadata of every write a placement API answered itself (or relayed): an UNAVAILABLE without it
came from the transport (the leader is not there), not from the leader's reasoning."""
FORWARDED_KEY = "edgectl-placement-forwarded-by"
"""Request metadata of a forwarded write: the forwarding replica's peer view. A replica never forwards such
a write again (two replicas each believing the other leads would bounce it forever)."""
FORWARD_TIMEOUT_S = MAX_MIGRATION_TIMEOUT_S + 30.0
"""The deadline of a forwarded write whose caller gave none: a leader that never answers is not waited on forever."""
_NOT_FORWARDED = frozenset({"user-agent", "content-type", "te", "grpc-accept-encoding", "grpc-encoding"})


class _Route:
    """One channel to one leader, and how many forwarded calls still use it (closed once none does)."""

    def __init__(self, target: str, credentials: grpc.ChannelCredentials | None) -> None:
        self.target = target
        self.channel = (
            grpc.secure_channel(target, credentials) if credentials is not None else grpc.insecure_channel(target)
        )
        # No (de)serializers: the request's bytes go out and the reply's bytes come back untouched.
        self.methods = {name: self.channel.unary_unary(f"/{SERVICE_NAME}/{name}") for name in WRITE_METHODS}
        self.in_flight = 0
        self.retired = False


class WriteForwarder:
    """Where this replica's writes go: nowhere (decided here) or the leader's placement API."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._route: _Route | None = None

    @property
    def target(self) -> str | None:
        with self._lock:
            return self._route.target if self._route is not None else None

    def set(self, target: str | None, credentials: grpc.ChannelCredentials | None = None) -> None:
        if target is not None and not target.strip():
            raise ValueError("the leader's placement API address is empty")
        new = _Route(target, credentials) if target is not None else None
        with self._lock:
            old, self._route = self._route, new
            close_old = old is not None and old.in_flight == 0
            if old is not None:
                old.retired = True  # calls still on it finish first: the last one closes it
        if old is not None and close_old:
            old.channel.close()
        if target is not None:
            LOG.info("placement API: writes go to the leader at %s", target)
        elif old is not None:
            LOG.info("placement API: writes are decided here")

    def _take(self) -> _Route | None:
        with self._lock:
            route = self._route
            if route is not None:
                route.in_flight += 1
            return route

    def _release(self, route: _Route) -> None:
        with self._lock:
            route.in_flight -= 1
            close = route.retired and route.in_flight == 0
        if close:
            route.channel.close()

    def close(self) -> None:
        self.set(None)

    def handle(self, name: str, raw: bytes, context: grpc.ServicerContext, local: Callable[..., bytes]) -> bytes:
        """Forward ``raw`` to the leader, or decide it with ``local`` when there is none."""
        route = self._take()
        if route is None:
            return local(raw, context)
        try:
            return self._forward(route, name, raw, context)
        finally:
            self._release(route)

    def _forward(self, route: _Route, name: str, raw: bytes, context: grpc.ServicerContext) -> bytes:
        incoming = tuple(context.invocation_metadata() or ())
        if any(key == FORWARDED_KEY for key, _ in incoming):
            context.set_trailing_metadata(((DECIDED_KEY, "forwarded"),))
            context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"this replica is not the leader either (it forwards writes to {route.target}); retry",
            )
        metadata = [
            (key, value)
            for key, value in incoming
            if not key.startswith((":", "grpc-")) and key not in _NOT_FORWARDED and key != DECIDED_KEY
        ]
        metadata.append((FORWARDED_KEY, context.peer() or "unknown"))
        remaining = context.time_remaining()
        timeout = FORWARD_TIMEOUT_S if remaining is None else max(0.0, remaining)
        future = route.methods[name].future(raw, timeout=timeout, metadata=metadata)
        if not context.add_callback(future.cancel):  # our caller went away: so does the leader's call
            future.cancel()  # it had gone already
        try:
            reply: bytes = future.result()
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            trailing = tuple(exc.trailing_metadata() or ())
            answered = any(key == DECIDED_KEY for key, _ in trailing)
            if code is grpc.StatusCode.UNAVAILABLE and not answered and never_reached_a_server(details):
                LOG.warning("placement API: the leader at %s is unreachable: %s", route.target, log_safe(details))
                context.set_trailing_metadata(((DECIDED_KEY, "forwarded"),))
                context.abort(grpc.StatusCode.UNAVAILABLE, f"the leader at {route.target} is unreachable; retry")
            if code is grpc.StatusCode.UNAVAILABLE and not answered:
                # It reached the leader, which went away while deciding: the change may be made.
                LOG.warning("placement API: the leader at %s went away mid-call: %s", route.target, log_safe(details))
                context.set_trailing_metadata(((DECIDED_KEY, "maybe"),))
                context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the leader at {route.target} went away while deciding: the change may have been made; "
                    "look (edgectl workloads) before you retry",
                )
            context.set_trailing_metadata(trailing)
            context.abort(code, details)
        except grpc.FutureCancelledError:
            context.abort(grpc.StatusCode.CANCELLED, "the caller cancelled the call")
        context.set_trailing_metadata(tuple(future.trailing_metadata() or ()))
        return reply


RequestObserver = Callable[[str, str, str], None]
"""Called with a command's name (place, migrate, evict), its outcome (ok, or the status code) and, for a
Place the scheduler refused, the filter that left no node ("" otherwise)."""


def _unary(
    method: Callable[[Any, grpc.ServicerContext], Any],
    authorize: CallerCheck | None = None,
    observe: RequestObserver | None = None,
) -> Callable[[Any, grpc.ServicerContext], Any]:
    name = getattr(method, "__name__", "call")

    def outcome(status: str, rejected_by: str = "") -> None:
        if observe is not None:
            observe(name, status, rejected_by)

    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        refusal = _caller_refusal(context, authorize)
        if refusal is not None:
            outcome("PERMISSION_DENIED")
            LOG.warning(
                "placement API: refusing %s from %s: %s",
                getattr(method, "__name__", "call"),
                log_safe(context.peer()),
                log_safe(refusal),
            )
            context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
        try:
            reply = method(request, context)
        except PlacementRefused as exc:
            outcome(exc.kind.value, exc.rejected_by)
            context.abort(grpc.StatusCode[exc.kind.value], exc.reason)
        except Exception as exc:
            outcome("INTERNAL")
            LOG.exception("placement API: %s failed", getattr(method, "__name__", "handler"))
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        outcome("ok")
        return reply

    return handle


def _streaming(
    method: Callable[[Any, grpc.ServicerContext], Iterator[Any]], authorize: CallerCheck | None = None
) -> Callable[..., Iterator[Any]]:
    def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        refusal = _caller_refusal(context, authorize)
        if refusal is not None:
            LOG.warning("placement API: refusing Watch from %s: %s", log_safe(context.peer()), log_safe(refusal))
            context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
        try:
            yield from method(request, context)
        except PlacementRefused as exc:
            context.abort(grpc.StatusCode[exc.kind.value], exc.reason)
        except Exception as exc:
            LOG.exception("placement API: Watch failed")
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")

    return handle


def _decided_here(method: Callable[[Any, grpc.ServicerContext], Any], request: Any) -> Callable[..., bytes]:
    """A write decided by this replica, from the request's bytes to the reply's (marked as answered)."""
    parse = safe_parser(request)

    def decide(raw: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_trailing_metadata(((DECIDED_KEY, "here"),))
        return bytes(method(parse(raw), context).SerializeToString())

    decide.__name__ = getattr(method, "__name__", "call")
    return decide


def _handlers(
    servicer: PlacementServicer,
    authorize: CallerCheck | None = None,
    observe: RequestObserver | None = None,
    forwarder: WriteForwarder | None = None,
) -> grpc.GenericRpcHandler:
    forwarder = forwarder or WriteForwarder()

    def unary(method: Callable[..., Any], request: Any, response: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            _unary(method, authorize),
            request_deserializer=safe_parser(request),
            response_serializer=response.SerializeToString,
        )

    def write(name: str, method: Callable[..., Any], request: Any) -> grpc.RpcMethodHandler:
        """Bytes in, bytes out: decided here (parsed, checked, observed) or forwarded to the leader untouched.
        A forwarded write is not observed here: the leader counts it, once."""
        local = _unary(_decided_here(method, request), authorize, observe)

        def handle(raw: bytes, context: grpc.ServicerContext) -> bytes:
            if forwarder.target is not None:  # the caller is checked here too, before anything leaves
                refusal = _caller_refusal(context, authorize)
                if refusal is not None:
                    LOG.warning(
                        "placement API: refusing %s from %s: %s", name, log_safe(context.peer()), log_safe(refusal)
                    )
                    context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
            return forwarder.handle(name, raw, context, local)

        return grpc.unary_unary_rpc_method_handler(handle)

    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "Place": write("Place", servicer.place, pb.PlaceRequest),
            "Migrate": write("Migrate", servicer.migrate, pb.MigrateRequest),
            "Evict": write("Evict", servicer.evict, pb.EvictRequest),
            "Get": unary(servicer.get, pb.GetRequest, pb.Workload),
            "List": unary(servicer.list, pb.ListRequest, pb.ListResponse),
            "Watch": grpc.unary_stream_rpc_method_handler(
                _streaming(servicer.watch, authorize),
                request_deserializer=safe_parser(pb.WatchRequest),
                response_serializer=pb.PlacementEvent.SerializeToString,
            ),
        },
    )


class PlacementServer:
    """A running placement API; ``stop()`` ends watches, the failover loop and the server."""

    def __init__(
        self,
        server: grpc.Server,
        port: int,
        host: str,
        orchestrator: PlacementOrchestrator,
        health_servicer: health.HealthServicer,
        failover: FailoverLoop | None,
        forwarder: WriteForwarder | None = None,
    ) -> None:
        self.server = server
        self.port = port
        self.host = host
        self.orchestrator = orchestrator
        self.events = orchestrator.events
        self._health = health_servicer
        self._failover = failover
        self._forwarder = forwarder or WriteForwarder()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def wake_failover(self) -> None:
        """A failover pass now (a replica that starts to lead: displaced instances became its to move)."""
        if self._failover is not None:
            self._failover.wake()

    def add_convergence_probe(self, probe: ConvergenceProbe | GenerationCheck) -> None:
        self.orchestrator.add_probe(probe)

    def forward_writes_to(self, target: str | None, credentials: grpc.ChannelCredentials | None = None) -> None:
        """``target``: the leader's placement API (this replica is a follower): Place, Migrate and Evict go
        there as raw bytes, the caller's deadline and metadata kept, the leader's status code and details
        passed back as they are; a leader that cannot be reached is UNAVAILABLE "the leader at X is
        unreachable; retry". ``credentials``: for that channel (None: plaintext). None: decide here (the
        default). Thread-safe; calls already forwarded finish on the old channel."""
        self._forwarder.set(target, credentials)

    @property
    def writes_forwarded_to(self) -> str | None:
        return self._forwarder.target

    def stop(self, grace: float = 1.0) -> None:
        self._health.enter_graceful_shutdown()
        if self._failover is not None:
            self._failover.stop()
        self.events.close_all()
        self.server.stop(grace).wait(grace + 5)
        self._forwarder.close()


def start_placement_api(
    bus: ModelBus,
    host: str = "127.0.0.1",
    port: int = 50051,
    convergence_probes: Sequence[ConvergenceProbe | GenerationCheck] = (),
    *,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    profile: Profile = DEFAULT_PROFILE,
    convergence_timeout_s: float = 10.0,
    failover: bool = True,
    max_workers: int = 16,
    max_migrations: int | None = None,
    tls: ApiTls | None = None,
    durable: DurableCheck | None = None,
    id_floors: Mapping[ServiceName, int] | None = None,
    observe: RequestObserver | None = None,
    convergence_progress: Progress | None = None,
) -> PlacementServer:
    """Serve the placement API on host:port (0: a free port); health and reflection too.

    It subscribes to the bus: model changes feed Watch and, with ``failover``, the loop that re-places
    instances whose node failed. ``tls``: accept only clients with a certificate from the PKI's CA (and
    that ``tls.authorize`` allows). ``trust_domain``: the CA's, for the SPIFFE ids of new instances.
    ``durable``: Place, Migrate and Evict answer only once their change is on disk (``--state-dir``);
    ``id_floors``: per service, the highest workload number given before (ids are never reused).
    ``observe``: called with each Place, Migrate and Evict's name and outcome (metrics).
    ``convergence_progress``: rung by the probes' subsystems, so a migration sees convergence at once.
    Raises OSError when the address cannot be bound.

    Worker threads (``max_workers``): Watches take at most half, Migrates at most ``max_migrations``
    (default a quarter; one more is refused with RESOURCE_EXHAUSTED), so at least a quarter always
    serves Place, Evict, Get, List and health, however slow migrations are.
    """
    watchers = max(1, max_workers // 2)
    migrations = max_migrations if max_migrations is not None else max(1, max_workers // 4)
    if max_workers - watchers - migrations < 1:
        raise ValueError(f"max_workers {max_workers} leaves no worker for reads beside {migrations} migrations")
    events = PlacementEvents()
    orchestrator = PlacementOrchestrator(
        bus,
        convergence_probes,
        events=events,
        trust_domain=trust_domain,
        id_floors=id_floors,
        profile=profile,
        convergence_timeout_s=convergence_timeout_s,
        progress=convergence_progress,
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="placement-api"),
        # grpcio sets SO_REUSEPORT by default: a second controller would share the port and take half the
        # calls, silently. Without it a port in use fails the start, as it should.
        options=(("grpc.so_reuseport", 0),),
    )
    # Watches and migrations hold a worker each: both are bounded, so some workers stay for the rest.
    authorize = tls.authorize if tls else None
    servicer = PlacementServicer(orchestrator, watchers, migrations, durable, attribute_refusals=observe is not None)
    forwarder = WriteForwarder()
    server.add_generic_rpc_handlers((_handlers(servicer, authorize, observe, forwarder),))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    try:
        address = f"{host}:{port}"
        bound = server.add_secure_port(address, tls.credentials()) if tls else server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"placement API: cannot listen on {host}:{port}: {exc}") from None
    if not bound:
        raise OSError(f"placement API: cannot listen on {host}:{port}")
    bus.subscribe(events)
    loop = None
    if failover:
        loop = FailoverLoop(orchestrator)
        bus.subscribe(loop)
        loop.start()
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    LOG.info("placement API on %s:%d%s", host, bound, " (mTLS)" if tls else "")
    return PlacementServer(server, bound, host, orchestrator, health_servicer, loop, forwarder)
