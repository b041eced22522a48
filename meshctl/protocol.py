"""What both ADS variants share: one stream's node, nonces, what its client runs, and the rules that
keep a client's config whole. Pure: requests in, responses out, no gRPC.

``meshctl.sotw.SotwStream`` (state of the world) and ``meshctl.delta.DeltaStream`` (incremental) read
their node's snapshot from the cache; the gRPC adapter feeds them requests and cache wake-ups and
writes what they return. The rules (each one is tested, and both variants follow them):

- ACK and NACK are matched by nonce. At most one response per type is outstanding: a change that
  arrives meanwhile waits for the client's answer (back-pressure; no pile-up on a slow client).
- What the client *runs* is what it ACKed ("confirmed"), never merely what was sent. A NACK is
  recorded (error, version, time) and the rejected content is not sent again until it changes; the
  client keeps its last good config.
- Make-before-break, by dependency rather than by hope: Envoy warms clusters (until endpoints come)
  and listeners (until routes come), but not routes and TCP proxies. So a route or listener that
  names a cluster is sent only once the client has ACKed that cluster, and a resource is removed only
  when nothing the client runs, or is being sent, still names it. Until then the client keeps its
  current version. Within one pass, types go in ``PUSH_ORDER`` (secrets, clusters, endpoints,
  listeners, routes).
- A rebuilt (changed) cluster stays warming until Envoy gets a *new* endpoints response, even an
  unchanged one: endpoints are resent after every changed EDS cluster, and a SotW request repeating
  an already-ACKed nonce (Envoy re-asking) is answered.
- Malformed requests (no node, unknown type, a nonce this stream never sent) raise ``ProtocolError``;
  the adapter ends the stream with INVALID_ARGUMENT and the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Protocol

from meshctl.encoding import ResponseEncoder
from meshctl.snapshot import MeshSnapshot, Resource
from meshctl.xds_types import CLUSTER, ENDPOINTS, LISTENER, PUSH_ORDER, ROUTES, SECRET, short_name

MAX_NAMES = 10_000
MAX_NAME_LENGTH = 1024

NOT_WARMED = frozenset({(ROUTES, CLUSTER), (LISTENER, CLUSTER)})
"""(type, type it names) where Envoy does not wait: a route or TCP proxy naming a cluster the client
does not have fails requests at once. Every other reference is warmed (Envoy waits for it)."""

CAN_NAME: Mapping[str, frozenset[str]] = {
    LISTENER: frozenset({ROUTES, CLUSTER, SECRET}),
    ROUTES: frozenset({CLUSTER}),
    CLUSTER: frozenset({ENDPOINTS, SECRET}),
    ENDPOINTS: frozenset(),
    SECRET: frozenset(),
}

READS: Mapping[str, tuple[str, ...]] = {
    kind: (
        kind,
        *sorted(
            {named for (sent, named) in NOT_WARMED if sent == kind}  # what may be sent (``_may_send``)
            | {other for other, names in CAN_NAME.items() if kind in names}
        ),  # what may go (``_still_named``)
    )
    for kind in PUSH_ORDER
}
"""The types whose stream state a pass over one type reads: its own, and the others' it checks."""

READ_BY: Mapping[str, tuple[str, ...]] = {kind: tuple(t for t in PUSH_ORDER if kind in READS[t]) for kind in PUSH_ORDER}


class ProtocolError(ValueError):
    """The client broke the xDS protocol; the message says how (it becomes the gRPC status detail)."""


class StreamCache(Protocol):
    """What a stream asks of the cache (``meshctl.cache.SnapshotCache`` is one): its node's snapshot,
    and where to record what the client was sent and runs."""

    def snapshot(self, node: str) -> MeshSnapshot | None: ...

    def stream_opened(self, node: str, mode: str) -> None: ...

    def stream_closed(self, node: str) -> None: ...

    def record_push(self, node: str, type_url: str, version: str, nonce: str) -> None: ...

    def record_ack(self, node: str, type_url: str, version: str) -> None: ...

    def record_nack(self, node: str, type_url: str, rejected_version: str, error: str, code: int) -> None: ...

    def record_current(self, node: str, type_url: str, current: bool) -> None: ...

    def record_synced(self, node: str, applied: MeshSnapshot | None) -> None: ...


class Observer(Protocol):
    def pushed(self, type_url: str) -> None: ...

    def acked(self, type_url: str, seconds: float) -> None: ...

    def nacked(self, type_url: str) -> None: ...


class NullObserver:
    def pushed(self, type_url: str) -> None:
        pass

    def acked(self, type_url: str, seconds: float) -> None:
        pass

    def nacked(self, type_url: str) -> None:
        pass


@dataclass(slots=True)
class TypeState:
    """One resource type on one stream: the subscription and what the client runs."""

    names: set[str] = field(default_factory=set)
    wildcard: bool = False
    explicit: bool = False
    """The client has named resources at some point: the legacy empty-means-wildcard rule is over."""
    confirmed: dict[str, Resource | None] = field(default_factory=dict)
    """What the client runs (ACKed); None: a version it reported that we cannot place (delta reconnect)."""
    inflight: dict[str, Resource] = field(default_factory=dict)
    """What the outstanding response carries."""
    inflight_removed: frozenset[str] = frozenset()
    nonce: str = ""
    """Nonce of the latest response of this type."""
    outstanding: bool = False
    """That response is not answered yet."""
    sent_at: float = 0.0
    sent_version: str = ""

    inflight_is_full: bool = False
    """The outstanding response replaces the whole set (SotW wildcard): what it leaves out goes."""
    idle: tuple[Any, ...] | None = None
    """(serving resources, wildcard exclusions, version, ``Stream._epochs_read_by``, behind) of this type's
    last pass that sent nothing: while all are the same, a pass would find the same (``Stream._look``)."""

    def covers(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def keeps(self, name: str) -> bool:
        """The client runs ``name`` now and still will once it applies the outstanding response."""
        if name not in self.confirmed:
            return False
        if not self.outstanding:
            return True
        return name in self.inflight if self.inflight_is_full else name not in self.inflight_removed


class Stream:
    """What both variants share: the node, the nonces, the cache, the observer, the dependency rules."""

    mode = ""

    def __init__(
        self,
        cache: StreamCache,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
        stand_in: Callable[[str], MeshSnapshot | None] | None = None,
        encoder: ResponseEncoder | None = None,
    ) -> None:
        self._cache = cache
        self._encoder = encoder if encoder is not None else ResponseEncoder()
        """Where responses are encoded: the server's streams share one, so shared content is encoded once."""
        self._stand_in = stand_in
        """What to serve a node the cache has no snapshot of (None: nothing, wait until it has one)."""
        self._observer: Observer = observer or NullObserver()
        self._clock = clock
        self.node_id: str | None = None
        self._nonces_sent = 0
        self._synced: MeshSnapshot | None = None
        """The snapshot this node was last recorded as running (None: behind)."""
        self._current: dict[str, bool] = {}
        self._states: dict[str, TypeState] = {}
        self._reconnecting = False
        """The client said it already runs some config (delta initial_resource_versions)."""
        self._epochs: dict[str, int] = {}
        """Per type, how many times a stream state its pass reads (``READS``) changed (``_touch``): a type
        that sent nothing last time and whose serving resources and read states are the same is skipped
        (a change of one type, or the ACK of it, then costs a pass over that type, not over all five)."""

    def _touch(self, type_url: str) -> None:
        """The stream's state of ``type_url`` changed (a request of that type, a response, forced resends)."""
        for reader in READ_BY[type_url]:
            self._epochs[reader] = self._epochs.get(reader, 0) + 1

    def _epochs_read_by(self, type_url: str) -> int | None:
        """How many times what a pass over ``type_url`` reads has changed (None: never skip it: a
        reconnecting client's unheard config may name anything)."""
        if self._reconnecting:
            return None
        return self._epochs.get(type_url, 0)

    def _look(
        self, type_url: str, state: TypeState, snapshot: MeshSnapshot, behind: set[str]
    ) -> tuple[Any, int | None] | None:
        """(``type_url``'s serving resources, ``_epochs_read_by`` it) for a pass over it; None: its last
        pass sent nothing and nothing it read has changed since (the type's resources, exclusions and
        version, the stream states it reads): that pass's behind flag is added to ``behind``."""
        serving = snapshot.of_type(type_url)
        epochs = self._epochs_read_by(type_url)
        idle = state.idle
        if (
            epochs is not None
            and idle is not None
            and idle[0] is serving
            and idle[1] is snapshot.wildcard_excluded
            and idle[3] == epochs
            and idle[2] == snapshot.version(type_url)
        ):
            if idle[4]:
                behind.add(type_url)
            return None
        state.idle = None
        return serving, epochs

    @staticmethod
    def _mark_idle(
        state: TypeState, type_url: str, serving: Any, snapshot: MeshSnapshot, epochs: int | None, behind: bool
    ) -> None:
        """This pass over ``type_url`` sent nothing (``_look``)."""
        state.idle = (serving, snapshot.wildcard_excluded, snapshot.version(type_url), epochs, behind)

    def close(self) -> None:
        if self.node_id is not None:
            self._cache.stream_closed(self.node_id)

    def on_change(self) -> list[Any]:
        """The node's snapshot changed: what to send now."""
        return self._pass() if self.node_id is not None else []

    def _pass(self) -> list[Any]:
        raise NotImplementedError

    def _serving(self) -> MeshSnapshot | None:
        """The node's snapshot; for a node the cache has none of, the stand-in's (if any)."""
        assert self.node_id is not None
        snapshot = self._cache.snapshot(self.node_id)
        if snapshot is None and self._stand_in is not None:
            snapshot = self._stand_in(self.node_id)
        return snapshot

    # -- checks on requests -------------------------------------------------------------------------

    def _check_request(self, request: Any, names: Iterable[Iterable[str]]) -> str:
        node = self._check_node(request)
        if request.type_url not in PUSH_ORDER:
            served = ", ".join(short_name(t) for t in PUSH_ORDER)
            raise ProtocolError(f"unknown type_url {request.type_url[:200]!r}: this server serves {served}")
        for group in names:
            _check_names(group)
        return node

    def _check_node(self, request: Any) -> str:
        given = request.node.id if request.HasField("node") else ""
        if self.node_id is None:
            if not given:
                raise ProtocolError("the first request on a stream must carry node.id")
            if len(given) > MAX_NAME_LENGTH:
                raise ProtocolError(f"node.id is longer than {MAX_NAME_LENGTH} characters")
            self.node_id = given
            self._cache.stream_opened(given, self.mode)
        elif given and given != self.node_id:
            raise ProtocolError(f"node.id changed on the stream from {self.node_id!r} to {given!r}")
        return self.node_id

    def _next_nonce(self) -> str:
        self._nonces_sent += 1
        return str(self._nonces_sent)

    def _issued(self, nonce: str) -> bool:
        """Whether this stream ever sent ``nonce`` (nonces are the decimal count of responses)."""
        return nonce.isascii() and nonce.isdigit() and 0 < int(nonce[:20]) <= self._nonces_sent

    @staticmethod
    def _unknown_nonce(nonce: str) -> ProtocolError:
        return ProtocolError(f"response_nonce {nonce[:64]!r} was never sent on this stream")

    # -- what the client runs, and what may be sent -------------------------------------------------

    def _may_send(self, type_url: str, resource: Resource) -> bool:
        """Every cluster this route/listener names is one the client runs and keeps running (if it
        subscribes to it: a gRPC client learns its clusters from the routes, so routes come first)."""
        for ref_type, ref_name in resource.refs:
            if (type_url, ref_type) not in NOT_WARMED:
                continue
            target = self._states.get(ref_type)
            if target is not None and target.covers(ref_name) and not target.keeps(ref_name):
                return False
        return True

    def _still_named(self, type_url: str, name: str) -> bool:
        """Something the client runs or is being sent names ``name``: removing it now would break it."""
        for other_type, state in self._states.items():
            if type_url not in CAN_NAME[other_type]:
                continue
            for resource in chain(state.confirmed.values(), state.inflight.values()):
                if resource is None or (type_url, name) in resource.refs:
                    return True  # a version we cannot place might name it: keep it
        return self._unheard_may_name(type_url)

    def _unheard_may_name(self, type_url: str) -> bool:
        """A reconnecting client runs config this stream has not heard about yet: until it asked for
        the types that could name ``type_url``, assume they do (every client asks for listeners;
        routes, if a listener it runs names some)."""
        if not self._reconnecting:
            return False
        for other_type, names in CAN_NAME.items():
            if type_url not in names or other_type in self._states:
                continue
            if other_type == LISTENER:
                return True
            for parent_type, parent in self._states.items():
                if other_type not in CAN_NAME[parent_type]:
                    continue
                for resource in chain(parent.confirmed.values(), parent.inflight.values()):
                    if resource is None or any(ref_type == other_type for ref_type, _ in resource.refs):
                        return True
        return False

    def _rebuilt_endpoints(self, sent: Mapping[str, Resource]) -> set[str]:
        """Endpoints names of the EDS clusters in ``sent`` that the client runs in another version:
        Envoy rebuilds such a cluster and keeps it warming until endpoints arrive again."""
        confirmed = self._states[CLUSTER].confirmed
        rebuilt: set[str] = set()
        for name, cluster in sent.items():
            if name not in confirmed:
                continue  # new to the client: it subscribes to its endpoints itself
            running = confirmed[name]
            if running is None or running.digest != cluster.digest:
                rebuilt.update(ref_name for ref_type, ref_name in cluster.refs if ref_type == ENDPOINTS)
        return rebuilt

    def _record_push(self, type_url: str, state: TypeState, version: str, nonce: str) -> None:
        assert self.node_id is not None
        self._touch(type_url)
        state.nonce, state.outstanding, state.sent_at, state.sent_version = nonce, True, self._clock(), version
        self._cache.record_push(self.node_id, type_url, version, nonce)
        self._observer.pushed(type_url)

    def _record_ack(self, type_url: str, state: TypeState, version: str) -> None:
        assert self.node_id is not None
        state.outstanding = False
        self._cache.record_ack(self.node_id, type_url, version)
        self._observer.acked(type_url, self._clock() - state.sent_at)

    def _record_nack(self, type_url: str, state: TypeState, error: Any) -> None:
        assert self.node_id is not None
        state.outstanding = False
        state.inflight, state.inflight_removed = {}, frozenset()
        self._cache.record_nack(self.node_id, type_url, state.sent_version, error.message[:4096], error.code)
        self._observer.nacked(type_url)

    def _record_progress(self, snapshot: MeshSnapshot, behind: set[str]) -> None:
        """Tell the cache which types are current (nothing to send, unanswered, held back or
        rejected) and, once all are, that the node runs this snapshot's generation."""
        assert self.node_id is not None
        behind = behind | {t for t, s in self._states.items() if s.outstanding}
        for type_url in self._states:
            current = type_url not in behind
            if self._current.get(type_url) != current:
                self._current[type_url] = current
                self._cache.record_current(self.node_id, type_url, current)
        # By snapshot, not generation: a config change (new certificates, a sidecar turning ready)
        # changes a snapshot without a new generation, and the cache then waits to hear it is applied.
        synced = None if behind else snapshot
        if synced is not self._synced:
            self._synced = synced
            self._cache.record_synced(self.node_id, synced)


def _check_names(names: Iterable[str]) -> None:
    count = 0
    for name in names:
        count += 1
        if len(name) > MAX_NAME_LENGTH:
            raise ProtocolError(f"resource name longer than {MAX_NAME_LENGTH} characters")
    if count > MAX_NAMES:
        raise ProtocolError(f"more than {MAX_NAMES} resource names in one request")
