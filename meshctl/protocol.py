"""The xDS conversation of one ADS stream, without gRPC: requests in, responses out. Pure.

``SotwStream`` (state of the world) and ``DeltaStream`` (incremental) read their node's snapshot from
the cache; the gRPC adapter feeds them requests and cache wake-ups and writes what they return.

Rules both variants follow (each one is tested):

- ACK and NACK are matched by nonce. At most one response per type is outstanding: a change that
  arrives meanwhile waits for the client's answer (natural back-pressure, no pile-up on slow clients).
- A NACK is recorded (error, version, time) and the rejected content is not sent again; the client
  keeps running its last good config. The next change of that type is pushed as usual.
- Pushes go in ``PUSH_ORDER`` (secrets, clusters, endpoints, listeners, routes). When an earlier type
  has a change waiting for an ACK, later types wait too, so the order holds. Removals go last, after
  every update, in reverse order (listeners before the clusters they name): SotW first sends
  clusters/listeners with the removed ones kept, then the exact set.
- A cluster that is rebuilt (changed) makes Envoy warm it until it gets a *new* endpoints response,
  even an unchanged one: endpoints are resent after every changed EDS cluster, and a SotW request
  that repeats an already-ACKed nonce (Envoy re-asking) is answered.
- Malformed requests (no node, unknown type, a nonce this stream never sent) raise ``ProtocolError``;
  the adapter ends the stream with INVALID_ARGUMENT and the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from envoy.service.discovery.v3 import discovery_pb2

from meshctl.cache import SnapshotCache
from meshctl.snapshot import MeshSnapshot, Resource, digest_of, version_digest, version_string
from meshctl.xds_types import CLUSTER, ENDPOINTS, PUSH_ORDER, REMOVAL_ORDER, WILDCARD_TYPES, short_name

MAX_NAMES = 10_000
MAX_NAME_LENGTH = 1024


class ProtocolError(ValueError):
    """The client broke the xDS protocol; the message says how (it becomes the gRPC status detail)."""


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


class _Stream:
    """What both variants share: the node, the nonces, the cache and the observer."""

    mode = ""

    def __init__(
        self,
        cache: SnapshotCache,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache = cache
        self._observer: Observer = observer or NullObserver()
        self._clock = clock
        self.node_id: str | None = None
        self._nonces_sent = 0
        self._synced_generation: int | None = None
        self._current: dict[str, bool] = {}

    def close(self) -> None:
        if self.node_id is not None:
            self._cache.stream_closed(self.node_id)

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

    @staticmethod
    def _check_type(type_url: str) -> None:
        if type_url not in PUSH_ORDER:
            served = ", ".join(short_name(t) for t in PUSH_ORDER)
            raise ProtocolError(f"unknown type_url {type_url[:200]!r}: this server serves {served}")

    @staticmethod
    def _check_names(names: Iterable[str]) -> None:
        count = 0
        for name in names:
            count += 1
            if len(name) > MAX_NAME_LENGTH:
                raise ProtocolError(f"resource name longer than {MAX_NAME_LENGTH} characters")
        if count > MAX_NAMES:
            raise ProtocolError(f"more than {MAX_NAMES} resource names in one request")

    def _next_nonce(self) -> str:
        self._nonces_sent += 1
        return str(self._nonces_sent)

    def _issued(self, nonce: str) -> bool:
        """Whether this stream ever sent ``nonce`` (nonces are the decimal count of responses)."""
        return nonce.isascii() and nonce.isdigit() and 0 < int(nonce[:20]) <= self._nonces_sent

    def _unknown_nonce(self, nonce: str) -> ProtocolError:
        return ProtocolError(f"response_nonce {nonce[:64]!r} was never sent on this stream")

    def _record_progress(self, snapshot: MeshSnapshot, behind: set[str]) -> None:
        """Tell the cache which types are current (nothing to send, nothing unanswered, nothing
        rejected) and, once all are, that the node runs this snapshot's generation."""
        assert self.node_id is not None
        for type_url in self._subscribed_types():
            current = type_url not in behind
            if self._current.get(type_url) != current:
                self._current[type_url] = current
                self._cache.record_current(self.node_id, type_url, current)
        synced = None if behind else snapshot.generation
        if synced != self._synced_generation:
            self._synced_generation = synced
            self._cache.record_synced(self.node_id, synced)

    def _subscribed_types(self) -> list[str]:
        raise NotImplementedError


def _eds_names_of_rebuilt_clusters(sent: Mapping[str, Resource], before: Mapping[str, str]) -> set[str]:
    """Endpoints names of the clusters in ``sent`` that the client had in another version (``before``:
    name -> digest). Envoy rebuilds such a cluster and keeps it warming until endpoints arrive again."""
    return {
        ref_name
        for name, cluster in sent.items()
        if before.get(name) not in (None, cluster.digest)
        for ref_type, ref_name in cluster.refs
        if ref_type == ENDPOINTS
    }


# -- state of the world ------------------------------------------------------------------------------


@dataclass(slots=True)
class _SotwType:
    names: frozenset[str] = frozenset()
    wildcard: bool = False
    explicit: bool = False
    """The client has named resources at some point: the legacy empty-means-wildcard rule is over."""
    client_version: str = ""
    """version_info of the first request: what a reconnecting client already has."""
    nonce: str = ""
    in_flight: bool = False
    sent: Mapping[str, Resource] = field(default_factory=dict)
    sent_digest: str | None = None
    sent_version: str = ""
    sent_at: float = 0.0
    nacked_digest: str | None = None
    force: bool = False
    grew: bool = False


class SotwStream(_Stream):
    mode = "sotw"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._types: dict[str, _SotwType] = {}

    def on_request(self, request: Any) -> list[Any]:
        node = self._check_node(request)
        type_url = request.type_url
        self._check_type(type_url)
        self._check_names(request.resource_names)
        state = self._types.get(type_url)
        first = state is None
        if state is None:
            state = self._types[type_url] = _SotwType(client_version=request.version_info)
        nonce = request.response_nonce
        if nonce and not first:  # a nonce on a type's first request is from an earlier stream: ignore it
            if nonce == state.nonce:
                if request.HasField("error_detail"):
                    self._nack(node, type_url, state, request.error_detail)
                elif state.in_flight:
                    self._ack(node, type_url, state, request.version_info)
                else:
                    # The client repeats a nonce it already ACKed: it wants the resources again
                    # (Envoy does this for the endpoints of a cluster it rebuilt). Answer it.
                    state.force = True
            elif self._issued(nonce) and state.nonce:
                return []  # stale: a newer response is on its way and its ACK will say everything
            elif not self._issued(nonce):
                raise self._unknown_nonce(nonce)
            # else a nonce of another type while none of this type was sent: nothing can be newer
        self._subscribe(type_url, state, request.resource_names)
        return self._pass()

    def on_change(self) -> list[Any]:
        return self._pass() if self.node_id is not None else []

    def _subscribed_types(self) -> list[str]:
        return list(self._types)

    def _ack(self, node: str, type_url: str, state: _SotwType, version: str) -> None:
        state.in_flight = False
        state.nacked_digest = None  # accepted something else since: a rejected content may be retried
        self._cache.record_ack(node, type_url, version or state.sent_version)
        self._observer.acked(type_url, self._clock() - state.sent_at)

    def _nack(self, node: str, type_url: str, state: _SotwType, error: Any) -> None:
        state.in_flight = False
        state.nacked_digest = state.sent_digest
        self._cache.record_nack(node, type_url, state.sent_version, error.message[:4096], error.code)
        self._observer.nacked(type_url)

    @staticmethod
    def _subscribe(type_url: str, state: _SotwType, resource_names: Sequence[str]) -> None:
        names = frozenset(resource_names)
        if "*" in names:
            wildcard = True
        elif names:
            wildcard = False
        else:  # an empty list is "everything" only until the client has named something
            wildcard = type_url in WILDCARD_TYPES and not state.explicit
        state.explicit = state.explicit or bool(names)
        named = names - {"*"}
        if (wildcard and not state.wildcard) or (named - state.names):
            state.grew = True  # newly requested resources must be sent even if unchanged
        state.names, state.wildcard = named, wildcard

    def _wanted(self, type_url: str, state: _SotwType, snapshot: MeshSnapshot) -> dict[str, Resource]:
        serving = snapshot.of_type(type_url)
        if state.wildcard:
            excluded = snapshot.wildcard_excluded
            return {n: r for n, r in serving.items() if n not in excluded or n in state.names}
        return {n: serving[n] for n in state.names if n in serving}

    def _pass(self) -> list[Any]:
        assert self.node_id is not None
        snapshot = self._cache.snapshot(self.node_id)
        if snapshot is None:
            return []  # a node we know nothing of (yet): keep the stream, answer when it appears
        responses: list[Any] = []
        blocked = False
        behind: set[str] = set()
        removals: list[tuple[str, _SotwType, dict[str, Resource]]] = []
        for type_url in PUSH_ORDER:
            state = self._types.get(type_url)
            if state is None:
                continue
            wanted = self._wanted(type_url, state, snapshot)
            update = self._update_for(type_url, state, wanted)
            if update is None:
                if state.wildcard and set(state.sent) - set(wanted):
                    removals.append((type_url, state, wanted))
                    behind.add(type_url)
                if state.nacked_digest is not None and state.nacked_digest == state.sent_digest:
                    behind.add(type_url)  # the client runs an older config than the one it rejected
                continue
            behind.add(type_url)
            if state.in_flight or blocked:
                blocked = True  # this type waits for its ACK; later types wait behind it
                continue
            before = {name: resource.digest for name, resource in state.sent.items()}
            responses.append(self._respond(type_url, state, update, snapshot))
            if type_url == CLUSTER and _eds_names_of_rebuilt_clusters(update, before):
                endpoints = self._types.get(ENDPOINTS)
                if endpoints is not None:
                    endpoints.force = True
        if not blocked:
            # Removals in REMOVAL_ORDER (listeners, routes, then clusters): nothing may still name
            # a cluster when it goes. One still unanswered holds back those after it.
            for type_url, state, wanted in sorted(removals, key=lambda r: REMOVAL_ORDER.index(r[0])):
                if state.in_flight:
                    break
                responses.append(self._respond(type_url, state, wanted, snapshot))
        behind.update(t for t, s in self._types.items() if s.in_flight)
        self._record_progress(snapshot, behind)
        return responses

    def _update_for(self, type_url: str, state: _SotwType, wanted: dict[str, Resource]) -> dict[str, Resource] | None:
        """What to send now (None: nothing), keeping resources that are going away for a later response."""
        if not state.wildcard and not wanted and not state.sent:
            return None  # nothing exists of what the client named: SotW has no way to say so
        update = wanted
        if state.wildcard:
            kept = {n: r for n, r in state.sent.items() if n not in wanted}
            update = {**kept, **wanted}
        digest = digest_of(update.values())
        if state.sent_digest is None:
            # Nothing sent on this stream yet. A reconnecting client that reports exactly this
            # content already has it: adopt its version instead of resending.
            if state.client_version and version_digest(state.client_version) == digest and not state.force:
                self._adopt(type_url, state, update, digest)
                return None
            return update
        if state.force or state.grew:
            return update
        if digest in (state.sent_digest, state.nacked_digest):
            return None  # unchanged, or exactly what the client rejected
        return update

    def _adopt(self, type_url: str, state: _SotwType, resources: dict[str, Resource], digest: str) -> None:
        assert self.node_id is not None
        state.sent, state.sent_digest, state.sent_version = resources, digest, state.client_version
        state.grew = False
        self._cache.record_adopted(self.node_id, type_url, state.client_version)

    def _respond(self, type_url: str, state: _SotwType, resources: dict[str, Resource], snapshot: MeshSnapshot) -> Any:
        assert self.node_id is not None
        digest = digest_of(resources.values())
        if state.sent_digest is None and version_digest(state.client_version) == digest:
            version = state.client_version  # same content the client already labels: keep its label
        elif digest == snapshot.digest(type_url):
            version = snapshot.version(type_url)
        else:  # a subset or a make-before-break superset of the snapshot's content
            version = version_string(int(snapshot.version(type_url).partition("-")[0] or 0), digest)
        nonce = self._next_nonce()
        response = discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=nonce)
        response.resources.extend(resources[name].packed for name in sorted(resources))
        state.sent, state.sent_digest, state.sent_version = resources, digest, version
        state.nonce, state.in_flight, state.sent_at = nonce, True, self._clock()
        state.force = state.grew = False
        self._cache.record_push(self.node_id, type_url, version, nonce)
        self._observer.pushed(type_url)
        return response


# -- incremental (delta) -----------------------------------------------------------------------------


@dataclass(slots=True)
class _DeltaType:
    names: set[str] = field(default_factory=set)
    wildcard: bool = False
    explicit: bool = False
    known: dict[str, str] = field(default_factory=dict)
    """Name -> version the client has, as far as we know (sent, or told by initial_resource_versions)."""
    absent_told: set[str] = field(default_factory=set)
    """Named subscriptions we already answered with "does not exist"."""
    force: set[str] = field(default_factory=set)
    """Names to send even though the client has this version (endpoints of a rebuilt cluster)."""
    must_answer: set[str] = field(default_factory=set)
    """Names unsubscribed while the wildcard holds: the client needs them again or removed."""
    in_flight: str = ""
    in_flight_names: tuple[str, ...] = ()
    in_flight_version: str = ""
    in_flight_digest: str = ""
    sent_at: float = 0.0
    forgotten: set[str] = field(default_factory=set)
    nacked_digest: str | None = None


class DeltaStream(_Stream):
    mode = "delta"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._types: dict[str, _DeltaType] = {}

    def on_request(self, request: Any) -> list[Any]:
        node = self._check_node(request)
        type_url = request.type_url
        self._check_type(type_url)
        self._check_names(request.resource_names_subscribe)
        self._check_names(request.resource_names_unsubscribe)
        self._check_names(request.initial_resource_versions)
        state = self._types.get(type_url)
        first = state is None
        if state is None:
            state = self._types[type_url] = _DeltaType(known=dict(request.initial_resource_versions))
        nonce = request.response_nonce
        if nonce:
            if state.in_flight and nonce == state.in_flight:
                if request.HasField("error_detail"):
                    self._nack(node, type_url, state, request.error_detail)
                else:
                    self._ack(node, type_url, state)
            elif not first and not self._issued(nonce):
                raise self._unknown_nonce(nonce)
            # else stale, or from an earlier stream: the subscription changes in it still count
        self._subscribe(type_url, state, request, first)
        return self._pass()

    def on_change(self) -> list[Any]:
        return self._pass() if self.node_id is not None else []

    def _subscribed_types(self) -> list[str]:
        return list(self._types)

    def _ack(self, node: str, type_url: str, state: _DeltaType) -> None:
        state.in_flight = ""
        self._cache.record_ack(node, type_url, state.in_flight_version)
        self._observer.acked(type_url, self._clock() - state.sent_at)

    def _nack(self, node: str, type_url: str, state: _DeltaType, error: Any) -> None:
        # Forget what the rejected response carried: we no longer know which version the client
        # runs for those names, so the next change of this type sends them all again.
        for name in state.in_flight_names:
            state.known.pop(name, None)
        state.forgotten.update(state.in_flight_names)
        state.nacked_digest = state.in_flight_digest
        state.in_flight = ""
        self._cache.record_nack(node, type_url, state.in_flight_version, error.message[:4096], error.code)
        self._observer.nacked(type_url)

    @staticmethod
    def _subscribe(type_url: str, state: _DeltaType, request: Any, first: bool) -> None:
        subscribe = set(request.resource_names_subscribe)
        unsubscribe = set(request.resource_names_unsubscribe)
        if "*" in subscribe:
            state.wildcard = True
        if "*" in unsubscribe:
            state.wildcard = False
        elif not subscribe and not state.explicit and type_url in WILDCARD_TYPES:
            state.wildcard = True  # legacy: never named anything means everything
        state.explicit = state.explicit or bool(subscribe)
        for name in subscribe - {"*"}:
            state.names.add(name)
            state.absent_told.discard(name)
            if not first:  # the client may have dropped it while staying subscribed: send it again
                state.known.pop(name, None)
        for name in unsubscribe - {"*"}:
            state.names.discard(name)
            state.known.pop(name, None)
            state.absent_told.discard(name)
            if state.wildcard:
                state.must_answer.add(name)

    def _pass(self) -> list[Any]:
        assert self.node_id is not None
        snapshot = self._cache.snapshot(self.node_id)
        if snapshot is None:
            return []
        responses: list[Any] = []
        blocked = False
        behind: set[str] = set()
        removals: list[tuple[str, _DeltaType, list[str]]] = []
        for type_url in PUSH_ORDER:
            state = self._types.get(type_url)
            if state is None:
                continue
            serving = snapshot.of_type(type_url)
            unsure: set[str] = set()  # names we forgot on a NACK: the client may run any version
            if state.nacked_digest is not None and state.nacked_digest != snapshot.digest(type_url):
                unsure, state.forgotten = state.forgotten, set()  # changed since: resend them too
                state.nacked_digest = None
            scope = self._scope(state, serving, snapshot.wildcard_excluded)
            updates = [
                name
                for name in sorted(scope)
                if (name in state.force or name in state.must_answer or state.known.get(name) != serving[name].digest)
                and name not in state.forgotten
            ]
            removed = self._removed(state, serving, scope)
            if removed:
                removals.append((type_url, state, removed))
                behind.add(type_url)
            if state.forgotten:
                behind.add(type_url)  # we do not know what it runs of a rejected response
            if not updates:
                continue
            behind.add(type_url)
            if state.in_flight or blocked:
                blocked = True
                continue
            before = dict(state.known)
            responses.append(self._respond(type_url, state, snapshot, updates, []))
            endpoints = self._types.get(ENDPOINTS)
            if type_url == CLUSTER and endpoints is not None:
                before.update({n: "" for n in unsure})  # assume rebuilt: resending endpoints is cheap
                endpoints.force |= _eds_names_of_rebuilt_clusters({n: serving[n] for n in updates}, before)
        if not blocked:
            for type_url, state, removed in sorted(removals, key=lambda r: REMOVAL_ORDER.index(r[0])):
                if state.in_flight:  # as in SotW: dependents go first
                    break
                responses.append(self._respond(type_url, state, snapshot, [], removed))
        behind.update(t for t, s in self._types.items() if s.in_flight)
        self._record_progress(snapshot, behind)
        return responses

    @staticmethod
    def _scope(state: _DeltaType, serving: Mapping[str, Resource], excluded: frozenset[str]) -> set[str]:
        scope = {name for name in state.names if name in serving}
        if state.wildcard:
            scope.update(name for name in serving if name not in excluded)
        return scope

    @staticmethod
    def _removed(state: _DeltaType, serving: Mapping[str, Resource], scope: set[str]) -> list[str]:
        gone = {name for name in state.known if name not in scope}
        absent = {name for name in state.names if name not in serving and name not in state.absent_told}
        unwanted = {name for name in state.must_answer if name not in scope}
        return sorted(gone | absent | unwanted)

    def _respond(
        self, type_url: str, state: _DeltaType, snapshot: MeshSnapshot, names: list[str], removed: list[str]
    ) -> Any:
        assert self.node_id is not None
        serving = snapshot.of_type(type_url)
        nonce = self._next_nonce()
        version = snapshot.version(type_url)
        response = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=version, type_url=type_url, nonce=nonce, removed_resources=removed
        )
        for name in names:
            resource = serving[name]
            response.resources.add(name=name, version=resource.digest, resource=resource.packed)
            state.known[name] = resource.digest
            state.force.discard(name)
            state.must_answer.discard(name)
        for name in removed:
            state.known.pop(name, None)
            state.must_answer.discard(name)
            if name in state.names:
                state.absent_told.add(name)
        state.in_flight, state.in_flight_names = nonce, tuple(names)
        state.in_flight_version, state.in_flight_digest = version, snapshot.digest(type_url)
        state.sent_at = self._clock()
        self._cache.record_push(self.node_id, type_url, version, nonce)
        self._observer.pushed(type_url)
        return response
