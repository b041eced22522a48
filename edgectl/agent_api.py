"""The node agent API (``edgectl.agent.v1.NodeAgent``) of ``edgectl run --pki-dir`` (adapter: grpc).

- ``Attest(node, join_token, csr_pem)``: the one call without a client certificate. The token must be
  unused, unexpired and for ``node`` (``pki.join_tokens``; checked before the CA parses or signs
  anything, used once the certificate is made); then the node SVID
  ``spiffe://<td>/node/<node>`` is issued from the CSR (the key stays on the node) with the run's SVID
  lifetime, with the trust bundle.
- every other call needs a node SVID of this trust domain as its client certificate (TLS:
  ``edgectl.agent_tls``), checked at every call (a connection outlives its handshake): unexpired
  (UNAUTHENTICATED otherwise), not revoked (``PkiService.revoke_node``), for a node still in the model;
  an open watch checks again on every model change, every ``REAUTHORIZE_S`` and when a node identity
  is revoked (``recheck_watches``), and ends with the refusal. The node it names is the caller's node,
  and the only node the call may concern: ``RenewNodeSvid`` issues the caller's node SVID again,
  ``WatchNode`` streams the caller's node's workloads (a SNAPSHOT, then PLACED / REMOVED:
  ``edgectl.agent_view``), ``ReportHealth`` reports one of its instances (``WorkloadHealthChanged``,
  as ``POST /api/v1/workloads/health``; or ``WorkloadStarting``: its app starts beside its sidecar).

Every refusal is PERMISSION_DENIED (INVALID_ARGUMENT for a malformed request) with the reason, and a
WARNING line with the client's text escaped (at most one per source, call and kind of refusal per 10 s,
with the count of the others: ``RefusalLog``). A watch that falls ``MAX_PENDING`` model changes behind
is ended with RESOURCE_EXHAUSTED (the agent watches again and gets a fresh SNAPSHOT): the model writer
never waits on an agent. A node has at most ``MAX_WATCHES_PER_NODE`` watches (a newer one ends its
oldest); a watch whose client stopped reading is cancelled after ``SEND_TIMEOUT_S``, freeing its thread.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from edgectl.agent_view import WorkloadView, node_changes, node_workloads, workloads_by_node
from netmodel.bus import ModelBus
from netmodel.events import Event, WorkloadHealthChanged, WorkloadStarting
from netmodel.ids import NodeId, WorkloadId
from netmodel.logsafe import log_safe
from netmodel.state import EventRejected, FabricState
from netmodel.types import Workload
from netmodel.wire import Undecodable, safe_parser
from nodeagent._pb import agent_pb2 as pb
from pki.errors import PkiError
from pki.join_token_store import TokenStore
from pki.policy import Svid, node_spiffe_id
from sdnctl.admission import Throttle

LOG = logging.getLogger("edgectl.agent_api")

SERVICE_NAME = "edgectl.agent.v1.NodeAgent"
DEFAULT_AGENT_PORT = 50052
MAX_PENDING = 1024
MAX_WORKERS = 64
"""Threads for the unary calls, beyond one per open watch."""
MAX_WATCHES = 4096
"""Open WatchNode streams in all (each holds a thread while open): every node of a 2,048-node fabric can
have its ``MAX_WATCHES_PER_NODE``."""
MAX_WATCHES_PER_NODE = 2
"""A node's agent watches once; two let a restarted agent's new watch overlap its predecessor's. A
further watch of the same node ends the oldest (ABORTED): one node cannot take every slot."""
SEND_TIMEOUT_S = 30.0
"""A watch whose message could not be sent for this long (its client stopped reading) is cancelled, so
its thread is freed (``end_stuck_watches``, every ``HOUSEKEEPING_S``)."""
HOUSEKEEPING_S = 5.0
MAX_REASON_CHARS = 500
MAX_CSR_BYTES = 16 * 1024
PUBLISH_TIMEOUT_S = 5.0
HOLD_TIMEOUT_S = 0.5
"""How long a watch waits for the model to hold its new placements as starting before it sends them
(``AgentServicer._hold_starting``)."""
REAUTHORIZE_S = 5.0
"""A watch checks its caller's certificate again (revoked?) at least this often, and on every model change."""


class NodeCaller(Protocol):
    def __call__(self, certificate_pem: str) -> tuple[str, str | None]:
        """(the node a verified client certificate names, None) or ("", why not): ``PkiService.authorize_node``."""
        ...


def certificate_not_after(certificate_pem: str) -> float | None:
    """When the leaf of a PEM chain expires (epoch seconds); None if it does not parse (then
    ``authorize_node`` refuses it anyway)."""
    from pki import certs
    from pki.errors import PkiError

    try:
        return float(certs.load_pem_chain(certificate_pem, "peer certificate")[0].not_valid_after_utc.timestamp())
    except (PkiError, ValueError):
        return None


class Issuer(Protocol):
    bundle_pem: str

    def issue_from_csr(self, csr_pem: bytes | str, spiffe_id: str, now: float, *, ttl_s: int | None = None) -> Svid: ...


@dataclass
class AttestedNode:
    spiffe_id: str
    attested_at: float
    renewed_at: float
    expires_at: float
    serial: str
    watching: int = 0


class Refused(Exception):
    """A refused call: its status, the reason the client is told, and ``kind`` (one of a few fixed
    words, never the client's text: what the refusal log throttles by; the status code's name if not set)."""

    def __init__(self, code: grpc.StatusCode, reason: str, kind: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.kind = kind or code.name


class _Watch:
    """One WatchNode stream's queue of model states (bounded; the writer only offers)."""

    def __init__(self, max_pending: int, node: str = "", cancel: Callable[[], object] = lambda: None) -> None:
        self.states: queue.Queue[FabricState | None] = queue.Queue(max_pending)
        self.node = node
        self.overflowed = False
        self.closed = False
        self.recheck = False
        self.replaced = False
        self.stuck = False
        self.sending_since: float | None = None
        """Set while gRPC sends a message of this stream: the generator is not running until it is sent."""
        self._cancel = cancel

    def offer(self, state: FabricState) -> None:
        if self.closed:
            return
        try:
            self.states.put_nowait(state)
        except queue.Full:
            self.overflowed = True
            self.close()
            if self.sending_since is not None:  # far behind and stuck in a send: the loop cannot notice
                self.cancel()

    def cancel(self) -> None:
        """End the RPC from outside (its thread may be blocked sending to a client that stopped reading)."""
        with contextlib.suppress(Exception):
            self._cancel()

    def wake(self, state: FabricState) -> None:
        """Have the stream check its caller again now (an identity was revoked)."""
        self.recheck = True
        self.offer(state)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(queue.Full):  # full: the reader is not blocked, it sees `closed`
            self.states.put_nowait(None)


class PlacedByNode:
    """The workloads of each node, per model state, computed once for every watching agent (each one's
    view otherwise costs a pass over every workload of the model, per agent, per change)."""

    KEPT = 2  # the newest state and the one before: a watch a change behind does not make it recompute

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._index: dict[int, tuple[FabricState, dict[str, list[Workload]]]] = {}

    def on(self, state: FabricState, node: str) -> list[Workload]:
        with self._lock:
            kept = self._index.get(id(state))
            if kept is None or kept[0] is not state:
                kept = (state, workloads_by_node(state))
                self._index[id(state)] = kept
                while len(self._index) > self.KEPT:
                    del self._index[next(iter(self._index))]  # the oldest
            return kept[1].get(node, [])


class AgentServicer:
    def __init__(
        self,
        bus: ModelBus,
        tokens: TokenStore,
        issuer: Issuer,
        trust_domain: str,
        authorize_node: NodeCaller,
        caller_certificate: Callable[[grpc.ServicerContext], str | None],
        *,
        app_host: str = "127.0.0.1",
        clock: Callable[[], float] = time.time,
        max_pending: int = MAX_PENDING,
        max_watches: int = MAX_WATCHES,
        max_watches_per_node: int = MAX_WATCHES_PER_NODE,
        send_timeout_s: float = SEND_TIMEOUT_S,
        certificate_expiry: Callable[[str], float | None] = certificate_not_after,
        node_revoked: Callable[[str], bool] = lambda _node: False,
    ) -> None:
        self.bus = bus
        self.tokens = tokens
        self.issuer = issuer
        self.trust_domain = trust_domain
        self._authorize_node = authorize_node
        self._caller_certificate = caller_certificate
        self.app_host = app_host
        self._placed = PlacedByNode()
        self._clock = clock
        self._max_pending = max_pending
        self._max_watches = max_watches
        self._max_watches_per_node = max_watches_per_node
        self._send_timeout_s = send_timeout_s
        self._certificate_expiry = certificate_expiry
        self._node_revoked = node_revoked
        self._lock = threading.Lock()
        self._watches: list[_Watch] = []
        self.attested: dict[str, AttestedNode] = {}

    # -- the bus -----------------------------------------------------------------------------------

    def on_model_change(self, _event: Event, state: FabricState) -> None:
        """Bus subscriber (the model writer): only enqueues."""
        with self._lock:
            watches = list(self._watches)
        for watch in watches:
            watch.offer(state)

    # -- who calls ---------------------------------------------------------------------------------

    def _caller_node(self, context: grpc.ServicerContext) -> str:
        return self._caller(context)[0]

    def _caller(self, context: grpc.ServicerContext) -> tuple[str, str, float | None]:
        """(the caller's node, its certificate, when that expires) or ``Refused``."""
        certificate = self._caller_certificate(context)
        if certificate is None:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, "this call needs the node SVID as client certificate")
        expires_at = self._certificate_expiry(certificate)
        return self._check_caller(certificate, expires_at, self.bus.state), certificate, expires_at

    def _check_caller(self, certificate: str, expires_at: float | None, state: FabricState) -> str:
        """The caller's node, checked now: its certificate unexpired (TLS checked it only at the handshake),
        a node SVID not revoked (``authorize_node``), for a node still in the model."""
        if expires_at is not None and self._clock() >= expires_at:
            raise Refused(
                grpc.StatusCode.UNAUTHENTICATED,
                f"node SVID expired at {_utc(expires_at)}; renew it before it expires, or attest again with a new "
                "join token",
            )
        node, refusal = self._authorize_node(certificate)
        if refusal is not None:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, refusal)
        if NodeId(node) not in state.nodes:
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"node {node} is not in the fabric (removed): its node SVID is no longer accepted",
            )
        return node

    # -- the calls ---------------------------------------------------------------------------------

    def attest(self, request: pb.AttestRequest, _context: grpc.ServicerContext) -> pb.NodeSvid:
        node = request.node
        if not node or NodeId(node) not in self.bus.state.nodes:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"unknown node {log_safe(node, 80)!r}: not in the fabric")
        if len(request.csr_pem) > MAX_CSR_BYTES:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"csr_pem is longer than {MAX_CSR_BYTES} bytes")
        if self._node_revoked(node):
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED, f"node {node}'s identity is revoked: restore it before it attests"
            )
        # The token is checked before the CA does any work for an unauthenticated caller, but used only
        # after the certificate is made: a CSR the CA refuses must not cost the agent its one-use token.
        refusal = self.tokens.check(request.join_token, node)
        if refusal is not None:
            if refusal.kind == "other-node":  # burned (pki.join_tokens): on disk before the answer
                self.tokens.redeem(request.join_token, node)
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, f"node {node}: {refusal.reason}", f"token {refusal.kind}")
        svid = self._issue(request.csr_pem, node)
        refusal = self.tokens.redeem(request.join_token, node)  # durable before the SVID is returned
        if refusal is not None:  # used by a concurrent Attest meanwhile: the certificate is dropped unseen
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, f"node {node}: {refusal.reason}", f"token {refusal.kind}")
        now = self._clock()
        with self._lock:
            watching = self.attested[node].watching if node in self.attested else 0
            self.attested[node] = AttestedNode(
                str(svid.spiffe_id), now, now, svid.info.not_after, format(svid.info.serial, "x"), watching
            )
        LOG.info("node %s attested with a join token: %s until %d", node, svid.spiffe_id, svid.info.not_after)
        return self._svid_message(svid)

    def renew_node_svid(self, request: pb.RenewRequest, context: grpc.ServicerContext) -> pb.NodeSvid:
        node = self._caller_node(context)
        if len(request.csr_pem) > MAX_CSR_BYTES:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"csr_pem is longer than {MAX_CSR_BYTES} bytes")
        svid = self._issue(request.csr_pem, node)
        with self._lock:
            record = self.attested.get(node)
            if record is not None:
                record.renewed_at, record.expires_at = self._clock(), svid.info.not_after
                record.serial = format(svid.info.serial, "x")
        return self._svid_message(svid)

    def watch_node(self, request: pb.WatchNodeRequest, context: grpc.ServicerContext) -> Iterator[pb.NodeEvent]:
        node, certificate, expires_at = self._caller(context)
        if request.node != node:
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"node {node} may watch only its own workloads, not node {log_safe(request.node, 80)!r}'s",
            )
        watch = _Watch(self._max_pending, node, getattr(context, "cancel", lambda: None))
        with self._lock:
            own = [other for other in self._watches if other.node == node and not other.replaced]
            replaced = own[: max(0, len(own) - self._max_watches_per_node + 1)]  # the oldest first
            if len(self._watches) - len(replaced) >= self._max_watches:
                raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, f"too many watches (at most {self._max_watches})")
            for old in replaced:
                old.replaced = True
            self._watches.append(watch)  # before the snapshot is read: no change falls in between
            if node in self.attested:
                self.attested[node].watching += 1
        for old in replaced:
            old.close()  # its loop ends it with ABORTED; stuck in a send, it is cancelled
            if old.sending_since is not None:
                old.cancel()
        context.add_callback(watch.close)
        try:
            state = self.bus.state
            views = node_workloads(state, node, self.app_host, self._placed.on(state, node))
            watch.sending_since = self._clock()
            yield pb.NodeEvent(
                kind=pb.NodeEvent.SNAPSHOT,
                workloads=[_workload_message(v) for _, v in sorted(views.items())],
                generation=state.generation,
            )
            watch.sending_since = None
            checked_at = self._clock()
            while context.is_active():
                now = self._clock()
                if watch.recheck or now - checked_at >= REAUTHORIZE_S or (expires_at is not None and now >= expires_at):
                    watch.recheck = False
                    self._check_caller(certificate, expires_at, self.bus.state)  # raises Refused: the watch ends
                    checked_at = now
                if watch.replaced:
                    raise Refused(
                        grpc.StatusCode.ABORTED,
                        f"replaced by a newer watch of node {node} (at most {self._max_watches_per_node} per node)",
                    )
                if watch.overflowed:
                    raise Refused(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"this watch fell {self._max_pending} model changes behind and was ended: watch again",
                    )
                try:
                    item = watch.states.get(timeout=0.5)
                except queue.Empty:
                    if watch.closed:
                        return
                    continue
                if item is None:
                    continue  # closed: the loop's checks say how it ends
                item = _newest(watch.states, item)  # a backlog is one change to the newest model
                if item is None or item.generation <= state.generation:
                    continue
                state = item
                self._check_caller(certificate, expires_at, state)  # removed from the model, revoked meanwhile
                after = node_workloads(state, node, self.app_host, self._placed.on(state, node))
                placed, removed = node_changes(views, after)
                new = [v.id for v in placed if v.id not in views] if request.starts_beside else []
                views = after
                if removed:
                    watch.sending_since = self._clock()
                    yield pb.NodeEvent(
                        kind=pb.NodeEvent.REMOVED,
                        workloads=[pb.NodeWorkload(id=wid) for wid in removed],
                        generation=state.generation,
                    )
                    watch.sending_since = None
                if placed:
                    held = self._hold_starting(new)
                    watch.sending_since = self._clock()
                    yield pb.NodeEvent(
                        kind=pb.NodeEvent.PLACED,
                        workloads=[_workload_message(v) for v in placed],
                        generation=state.generation,
                        starting=held,
                    )
                    watch.sending_since = None
        finally:
            watch.close()
            with self._lock:
                if watch in self._watches:
                    self._watches.remove(watch)
                if node in self.attested:
                    self.attested[node].watching -= 1

    def _hold_starting(self, workloads: list[str]) -> list[str]:
        """Hold new placements as starting (``WorkloadStarting``) before their agent hears of them: the
        agent then starts each sidecar beside its app without reporting the start itself (a round trip
        less before Envoy's boot begins). Those the model applied within ``HOLD_TIMEOUT_S``; the others the
        agent reports itself (a late apply is harmless: the agent's report of the start and of the app
        listening come after it in the same writer's order)."""
        now = self._clock()
        futures = []
        for workload in workloads:
            with contextlib.suppress(Exception):  # not held: the agent reports the start itself
                futures.append((workload, self.bus.publish(WorkloadStarting(WorkloadId(workload), now))))
        deadline = time.monotonic() + HOLD_TIMEOUT_S
        held = []
        for workload, future in futures:
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # rejected (removed meanwhile), not applied in time: the agent says it itself
                continue
            held.append(workload)
        return held

    def report_health(self, request: pb.HealthReport, context: grpc.ServicerContext) -> pb.HealthReply:
        node = self._caller_node(context)
        workload = self.bus.state.workloads.get(WorkloadId(request.workload_id))
        if workload is None or workload.node != node:
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"node {node} may report only its own workloads; {log_safe(request.workload_id, 80)!r} is not "
                "placed on it",
            )
        now = self._clock()
        event: WorkloadHealthChanged | WorkloadStarting
        if request.starting:
            event = WorkloadStarting(workload.id, now)
        else:
            event = WorkloadHealthChanged(workload.id, request.healthy, request.reason[:MAX_REASON_CHARS], now)
        try:
            self.bus.publish(event).result(timeout=PUBLISH_TIMEOUT_S)
        except EventRejected as exc:  # removed meanwhile
            raise Refused(grpc.StatusCode.NOT_FOUND, str(exc)) from None
        except FutureTimeout:
            raise Refused(grpc.StatusCode.UNAVAILABLE, "the model writer did not apply the report in time") from None
        return pb.HealthReply()

    # -- helpers -----------------------------------------------------------------------------------

    def _issue(self, csr_pem: str, node: str) -> Svid:
        try:
            return self.issuer.issue_from_csr(csr_pem, node_spiffe_id(self.trust_domain, node), self._clock())
        except PkiError as exc:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"no node SVID for {node}: {exc}") from None

    def _svid_message(self, svid: Svid) -> pb.NodeSvid:
        return pb.NodeSvid(
            spiffe_id=str(svid.spiffe_id),
            cert_chain_pem=svid.cert_chain_pem,
            trust_bundle_pem=self.issuer.bundle_pem,
            expires_at=float(svid.info.not_after),
        )

    def attested_view(self, _state: FabricState) -> dict[str, Any]:
        """``GET /api/v1/agents``: the nodes attested since the controller started."""
        with self._lock:
            rows = [
                {
                    "node": node,
                    "spiffe_id": r.spiffe_id,
                    "attested_at": r.attested_at,
                    "renewed_at": r.renewed_at,
                    "expires_at": r.expires_at,
                    "serial": r.serial,
                    "watching": r.watching,
                }
                for node, r in sorted(self.attested.items())
            ]
        return {"agents": rows}

    def recheck_watches(self) -> None:
        """Every watch checks its caller again at once (``edgectl.pki_http``: a node identity was revoked)."""
        state = self.bus.state
        with self._lock:
            watches = list(self._watches)
        for watch in watches:
            watch.wake(state)

    def end_stuck_watches(self) -> int:
        """Cancel every watch stuck sending one message for ``send_timeout_s`` (its client stopped
        reading): gRPC's send waits for flow control without a deadline, holding the stream's thread.
        Returns how many were ended."""
        now = self._clock()
        with self._lock:
            stuck = [
                w
                for w in self._watches
                if not w.stuck and w.sending_since is not None and now - w.sending_since >= self._send_timeout_s
            ]
            for watch in stuck:
                watch.stuck = True
        for watch in stuck:
            LOG.warning(
                "agent API: ending node %s's watch: its client has read nothing for %.0f s",
                watch.node,
                self._send_timeout_s,
            )
            watch.close()
            watch.cancel()
        return len(stuck)

    def close_watches(self) -> None:
        with self._lock:
            watches = list(self._watches)
        for watch in watches:
            watch.close()


def _utc(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def _newest(states: queue.Queue[FabricState | None], first: FabricState) -> FabricState | None:
    """The newest state queued after ``first`` (``first`` if none); None if the watch was closed."""
    newest = first
    while True:
        try:
            item = states.get_nowait()
        except queue.Empty:
            return newest
        if item is None:
            return None
        newest = item


def _workload_message(view: WorkloadView) -> pb.NodeWorkload:
    return pb.NodeWorkload(
        id=view.id,
        service=view.service,
        port=view.port,
        address=view.address,
        app_host=view.app_host,
        run=list(view.run),
        env=dict(view.env),
        spiffe_id=view.spiffe_id,
        calls=[
            pb.Call(
                service=c.service,
                port=c.port,
                per_request=c.per_request,
                bytes_per_call=c.bytes_per_call,
                protocol=c.protocol,
            )
            for c in view.calls
        ],
        protocol=view.protocol,
        outbound_host=view.outbound_host,
    )


PeerLabel = Callable[[grpc.ServicerContext], str]
"""Who a call comes from, for log lines (the TLS front knows the real address)."""

REFUSAL_LOG_INTERVAL_S = 10.0
MAX_THROTTLED_SOURCES = 4096


class RefusalLog:
    """One WARNING line per source address, call and kind of refusal (``Refused.kind``: a few fixed words)
    per ``interval_s``, with the count of those not logged since (as ``sdnctl.connections`` does for
    refused OpenFlow connections): a client that retries in a loop cannot flood the log, and a different
    refusal from the same source is still seen. Thread-safe; remembers at most ``max_sources`` keys."""

    def __init__(
        self,
        interval_s: float = REFUSAL_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        max_sources: int = MAX_THROTTLED_SOURCES,
    ) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._max_sources = max_sources
        self._lock = threading.Lock()
        self._by_source: dict[tuple[str, str, str], tuple[Throttle, float]] = {}  # -> (throttle, last refused at)

    def refused(self, peer: str, method: str, reason: str, kind: str = "") -> None:
        source = peer.rsplit(":", 1)[0] if not peer.startswith("unix:") and ":" in peer else peer
        key = (source, method, kind)
        with self._lock:
            now = self._clock()
            throttle = self._by_source[key][0] if key in self._by_source else Throttle(self._interval_s)
            if key not in self._by_source and len(self._by_source) >= self._max_sources:
                self._forget_quiet(now)
            self._by_source[key] = (throttle, now)
            count = throttle.note(now)
        if count is None:
            return
        more = f" ({count - 1} more like it from {log_safe(source)} since the last such line)" if count > 1 else ""
        LOG.warning("agent API: refusing %s from %s: %s%s", method, log_safe(peer), log_safe(reason), more)

    def _forget_quiet(self, now: float) -> None:
        """Sources quiet for an interval (their next line comes at once anyway), else the older half."""
        quiet = [key for key, (_, at) in self._by_source.items() if now - at >= self._interval_s]
        for key in quiet or sorted(self._by_source, key=lambda k: self._by_source[k][1])[: self._max_sources // 2]:
            del self._by_source[key]


def _guarded(
    name: str,
    method: Callable[[Any, grpc.ServicerContext], Any],
    streaming: bool = False,
    peer: PeerLabel = lambda context: str(context.peer()),
    refusals: RefusalLog | None = None,
) -> Any:
    """The handler around ``method``: undecodable requests, refusals (logged, at most one line per
    source per ``REFUSAL_LOG_INTERVAL_S``), internal errors."""
    log = refusals if refusals is not None else RefusalLog()

    def refuse(context: grpc.ServicerContext, exc: Refused) -> None:
        if exc.code is not grpc.StatusCode.RESOURCE_EXHAUSTED or "behind" not in exc.reason:
            log.refused(peer(context), name, exc.reason, exc.kind)
        context.abort(exc.code, exc.reason)

    def check(request: Any) -> Any:
        if isinstance(request, Undecodable):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        return request

    if streaming:

        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from method(check(request), context)
            except Refused as exc:
                refuse(context, exc)
            except Exception as exc:
                LOG.exception("agent API: %s failed", name)
                context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")

        return stream

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(check(request), context)
        except Refused as exc:
            refuse(context, exc)
        except Exception as exc:
            LOG.exception("agent API: %s failed", name)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")

    return unary


def handlers(
    servicer: AgentServicer,
    peer: PeerLabel = lambda context: str(context.peer()),
    refusals: RefusalLog | None = None,
) -> grpc.GenericRpcHandler:
    log = refusals if refusals is not None else RefusalLog()

    def unary(name: str, method: Any, request: Any, response: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            _guarded(name, method, peer=peer, refusals=log),
            request_deserializer=safe_parser(request),
            response_serializer=response.SerializeToString,
        )

    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "Attest": unary("Attest", servicer.attest, pb.AttestRequest, pb.NodeSvid),
            "RenewNodeSvid": unary("RenewNodeSvid", servicer.renew_node_svid, pb.RenewRequest, pb.NodeSvid),
            "WatchNode": grpc.unary_stream_rpc_method_handler(
                _guarded("WatchNode", servicer.watch_node, streaming=True, peer=peer, refusals=log),
                request_deserializer=safe_parser(pb.WatchNodeRequest),
                response_serializer=pb.NodeEvent.SerializeToString,
            ),
            "ReportHealth": unary("ReportHealth", servicer.report_health, pb.HealthReport, pb.HealthReply),
        },
    )


class AgentServer:
    """The running agent API: the gRPC server on loopback and its TLS listener(s)."""

    def __init__(self, servicer: AgentServicer, server: grpc.Server, front: Any) -> None:
        self.servicer = servicer
        self.server = server
        self.front = front
        self._stopping = threading.Event()
        self._housekeeping = threading.Thread(target=self._keep_house, name="agent-api-watches", daemon=True)
        self._housekeeping.start()

    def _keep_house(self) -> None:
        while not self._stopping.wait(HOUSEKEEPING_S):
            try:
                self.servicer.end_stuck_watches()
            except Exception:
                LOG.exception("agent API: checking the watches failed")

    @property
    def port(self) -> int:
        return int(self.front.port)

    def stop(self, grace: float = 1.0) -> None:
        self._stopping.set()
        self.front.stop()
        self.servicer.close_watches()
        self.server.stop(grace).wait(grace + 5)


def start_agent_api(
    bus: ModelBus,
    tokens: TokenStore,
    issuer: Issuer,
    trust_domain: str,
    authorize_node: NodeCaller,
    certificate: Callable[[], tuple[int, str, str]],
    *,
    host: str | None = "127.0.0.1",
    port: int = DEFAULT_AGENT_PORT,
    unix_path: str | None = None,
    app_host: str = "127.0.0.1",
    node_revoked: Callable[[str], bool] = lambda _node: False,
) -> AgentServer:
    """Serve the agent API on ``host:port`` (None: no TCP listener) and/or ``unix_path``, with TLS:
    ``certificate() -> (serial, chain, key)`` the controller's newest; client certificates checked
    against ``issuer.bundle_pem``. Subscribes to the bus. Raises OSError when it cannot listen."""
    from edgectl.agent_tls import TlsFront

    front_box: list[TlsFront] = []

    def caller_certificate(context: grpc.ServicerContext) -> str | None:
        if not front_box:  # a call on the loopback port before the TLS front runs: no certificate
            return None
        known, pem = front_box[0].peer_certificate(context.peer())
        return pem if known else None

    def peer_label(context: grpc.ServicerContext) -> str:
        return front_box[0].client_address(context.peer()) if front_box else str(context.peer())

    servicer = AgentServicer(
        bus,
        tokens,
        issuer,
        trust_domain,
        authorize_node,
        caller_certificate,
        app_host=app_host,
        node_revoked=node_revoked,
    )
    server = grpc.server(
        # A thread per open watch (sync gRPC), and MAX_WORKERS more for the unary calls; started lazily.
        futures.ThreadPoolExecutor(max_workers=MAX_WATCHES + MAX_WORKERS, thread_name_prefix="agent-api"),
        options=(("grpc.so_reuseport", 0),),
    )
    server.add_generic_rpc_handlers((handlers(servicer, peer_label),))
    backend = server.add_insecure_port("127.0.0.1:0")
    if not backend:
        raise OSError("agent API: cannot bind its loopback port")
    server.start()
    try:
        front = TlsFront(certificate, issuer.bundle_pem, backend)
        front_box.append(front)
        from meshctl.listen import strip_unix_scheme

        front.start(host, port, strip_unix_scheme(unix_path) if unix_path else None)
    except BaseException:
        server.stop(0)
        raise
    bus.subscribe(servicer)
    where = ([f"{host}:{front.port}"] if host is not None else []) + ([f"unix:{unix_path}"] if unix_path else [])
    LOG.info("node agent API on %s (TLS; node SVIDs for every call but Attest)", " and ".join(where))
    return AgentServer(servicer, server, front)
