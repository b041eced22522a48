"""Incremental ADS (``DeltaAggregatedResources``) for one stream. Pure; rules in ``protocol``.

In delta a response carries only what changed, each resource with its own version (its content
hash, so versions survive a control-plane restart), plus the names to remove. Subscriptions change
by differences; on reconnect the client says what it has (``initial_resource_versions``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshctl.protocol import Stream, TypeState
from meshctl.snapshot import MeshSnapshot, Resource
from meshctl.xds_types import CLUSTER, ENDPOINTS, PUSH_ORDER, WILDCARD_TYPES


@dataclass(slots=True)
class _DeltaType(TypeState):
    known: dict[str, str] = field(default_factory=dict)
    """Name -> version the client has as far as we know: sent (even unanswered) or reported; "" when
    it may have the name in a version we do not know (after a NACK)."""
    reported: dict[str, str] = field(default_factory=dict)
    """initial_resource_versions of a reconnecting client."""
    absent_told: set[str] = field(default_factory=set)
    """Named subscriptions already answered with "does not exist"."""
    force: set[str] = field(default_factory=set)
    """Names to send even though the client has this version (endpoints of a rebuilt cluster)."""
    must_answer: set[str] = field(default_factory=set)
    """Names unsubscribed while the wildcard holds: the client needs them again, or removed."""
    forgotten: set[str] = field(default_factory=set)
    """What a NACKed response carried: not resent until the type changes again."""
    nacked_digest: str | None = None
    inflight_digest: str = ""


class DeltaStream(Stream):
    mode = "delta"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._types: dict[str, _DeltaType] = {}

    def on_request(self, request: Any) -> list[Any]:
        self._check_request(
            request,
            [request.resource_names_subscribe, request.resource_names_unsubscribe, request.initial_resource_versions],
        )
        type_url = request.type_url
        state = self._types.get(type_url)
        first = state is None
        if state is None:
            reported = dict(request.initial_resource_versions)
            state = _DeltaType(known=dict(reported), reported=reported, confirmed=dict.fromkeys(reported))
            self._reconnecting = self._reconnecting or bool(reported)
            self._types[type_url] = self._states[type_url] = state
        self._touch(type_url)
        nonce = request.response_nonce
        if nonce:
            if state.outstanding and nonce == state.nonce:
                if request.HasField("error_detail"):
                    self._nack(type_url, state, request.error_detail)
                else:
                    self._ack(type_url, state)
            elif not first and not self._issued(nonce):
                raise self._unknown_nonce(nonce)
            # else stale, or from an earlier stream: its subscription changes still count
        self._subscribe(type_url, state, request, first)
        return self._pass()

    def _ack(self, type_url: str, state: _DeltaType) -> None:
        state.confirmed.update(state.inflight)
        for name in state.inflight_removed:
            state.confirmed.pop(name, None)
        state.inflight, state.inflight_removed = {}, frozenset()
        self._record_ack(type_url, state, state.sent_version)

    def _nack(self, type_url: str, state: _DeltaType, error: Any) -> None:
        # Forget what the rejected response carried: which version the client runs of those names is
        # unknown now (Envoy may have applied some), so the next change of this type resends them all,
        # and a name that leaves the snapshot is still removed ("" never equals a content hash).
        for name in state.inflight:
            state.known[name] = ""
        for name in state.inflight_removed:  # it may not have dropped them either: say it again
            state.known[name] = ""
        state.forgotten.update(state.inflight)
        state.nacked_digest = state.inflight_digest
        self._record_nack(type_url, state, error)

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
            state.confirmed.pop(name, None)
            state.absent_told.discard(name)
            if state.wildcard:
                state.must_answer.add(name)

    def _pass(self) -> list[Any]:
        snapshot = self._serving()
        if snapshot is None:
            return []
        responses: list[Any] = []
        behind: set[str] = set()
        for type_url in PUSH_ORDER:
            state = self._types.get(type_url)
            if state is None:
                continue
            looked = self._look(type_url, state, snapshot, behind)
            if looked is None:
                continue
            serving, epochs = looked
            _place_reported(state, serving)
            if state.nacked_digest is not None and state.nacked_digest != snapshot.digest(type_url):
                state.forgotten, state.nacked_digest = set(), None  # changed since the NACK: resend all
            scope = _scope(state, serving, snapshot.wildcard_excluded)
            wanted = [
                name
                for name in sorted(scope)
                if (name in state.force or name in state.must_answer or state.known.get(name) != serving[name].digest)
                and name not in state.forgotten
            ]
            updates = [name for name in wanted if self._may_send(type_url, serving[name])]
            candidates = _removal_candidates(state, serving, scope)
            removed = [name for name in candidates if not self._still_named(type_url, name)]
            if len(updates) < len(wanted) or len(removed) < len(candidates) or state.forgotten:
                behind.add(type_url)  # held back, or we do not know what it runs
            if not updates and not removed and (wanted or not _unanswered_fresh_wildcard(state)):
                self._mark_idle(state, type_url, serving, snapshot, epochs, type_url in behind)
                continue
            behind.add(type_url)
            if state.outstanding:
                self._mark_idle(state, type_url, serving, snapshot, epochs, True)  # (until its answer)
                continue
            responses.append(self._respond(type_url, state, snapshot, updates, removed))
            endpoints = self._types.get(ENDPOINTS)
            if type_url == CLUSTER and endpoints is not None:
                rebuilt = self._rebuilt_endpoints({name: serving[name] for name in updates})
                if rebuilt:
                    endpoints.force |= rebuilt
                    self._touch(ENDPOINTS)
        self._record_progress(snapshot, behind)
        return responses

    def _respond(
        self, type_url: str, state: _DeltaType, snapshot: MeshSnapshot, names: list[str], removed: list[str]
    ) -> Any:
        serving = snapshot.of_type(type_url)
        nonce = self._next_nonce()
        version = snapshot.version(type_url)
        response = self._encoder.delta(type_url, version, [serving[name] for name in names], removed, nonce)
        for name in names:
            state.known[name] = serving[name].digest
            state.force.discard(name)
            state.must_answer.discard(name)
        for name in removed:
            state.known.pop(name, None)
            state.must_answer.discard(name)
            if name in state.names:
                state.absent_told.add(name)
        state.inflight = {name: serving[name] for name in names}
        state.inflight_removed = frozenset(removed)
        state.inflight_digest = snapshot.digest(type_url)
        self._record_push(type_url, state, version, nonce)
        return response


def _unanswered_fresh_wildcard(state: _DeltaType) -> bool:
    """A new wildcard subscription (the client reported having nothing) not answered yet: when there
    is nothing of its type to send (not merely held back), it is answered empty, since Envoy waits
    for that first answer (its initial fetch) before it finishes starting."""
    return state.wildcard and not state.nonce and not state.reported


def _place_reported(state: _DeltaType, serving: Mapping[str, Resource]) -> None:
    """A reconnecting client's reported versions that match ours: now we know what it runs."""
    for name, running in list(state.confirmed.items()):
        if running is None and name in serving and serving[name].digest == state.reported.get(name):
            state.confirmed[name] = serving[name]


def _scope(state: _DeltaType, serving: Mapping[str, Resource], excluded: frozenset[str]) -> set[str]:
    scope = {name for name in state.names if name in serving}
    if state.wildcard:
        scope.update(name for name in serving if name not in excluded)
    return scope


def _removal_candidates(state: _DeltaType, serving: Mapping[str, Resource], scope: set[str]) -> list[str]:
    gone = {name for name in state.known if name not in scope}
    absent = {name for name in state.names if name not in serving and name not in state.absent_told}
    unwanted = {name for name in state.must_answer if name not in scope}
    return sorted(gone | absent | unwanted)
