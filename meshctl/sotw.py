"""State-of-the-world ADS (``StreamAggregatedResources``) for one stream. Pure; rules in ``protocol``.

In SotW a response carries every resource of its type the client asked for (for clusters and
listeners: everything the node gets; a name left out is deleted). Versions are per type: the
client's ``version_info`` says what it runs, the nonce says which response it answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from meshctl.protocol import Stream, TypeState
from meshctl.snapshot import MeshSnapshot, Resource, digest_of, version_digest, version_string
from meshctl.xds_types import CLUSTER, ENDPOINTS, PUSH_ORDER, WILDCARD_TYPES


@dataclass(slots=True)
class _SotwType(TypeState):
    client_version: str = ""
    """version_info of the first request: the label a reconnecting client gives what it runs."""
    sent_digest: str | None = None
    nacked_digest: str | None = None
    force: bool = False
    """Answer even if nothing changed (Envoy re-asked, or endpoints of a rebuilt cluster)."""
    grew: bool = False
    """The subscription gained names: they must be sent even if unchanged."""
    digested: tuple[tuple[Resource, ...], str] = ((), "")
    """The resources last digested and their digest: a pass that finds the very same objects (most
    passes: an ACK, a change of another type) does not hash them again."""

    def digest_of(self, resources: dict[str, Resource]) -> str:
        last, digest = self.digested
        if (
            len(last) == len(resources)
            and digest
            and all(a is b for a, b in zip(last, resources.values(), strict=True))
        ):
            return digest
        digest = digest_of(resources.values())
        self.digested = (tuple(resources.values()), digest)
        return digest


class SotwStream(Stream):
    mode = "sotw"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._types: dict[str, _SotwType] = {}

    def on_request(self, request: Any) -> list[Any]:
        self._check_request(request, [request.resource_names])
        type_url = request.type_url
        state = self._types.get(type_url)
        first = state is None
        if state is None:
            state = _SotwType(client_version=request.version_info)
            self._types[type_url] = self._states[type_url] = state
        self._touch(type_url)
        nonce = request.response_nonce
        if nonce and not first:  # a nonce on a type's first request is from an earlier stream: ignore it
            if nonce == state.nonce:
                if request.HasField("error_detail"):
                    state.nacked_digest = state.sent_digest
                    self._record_nack(type_url, state, request.error_detail)
                elif state.outstanding:
                    self._ack(type_url, state, request.version_info)
                else:
                    # The client repeats a nonce it already ACKed: it wants the resources again
                    # (Envoy does this for the endpoints of a cluster it rebuilt). Answer it.
                    state.force = True
            elif not self._issued(nonce):
                raise self._unknown_nonce(nonce)
            elif state.nonce:
                return []  # stale: a newer response is on its way; its answer will say everything
            # else a nonce of another type while none of this type was sent: nothing is newer
        self._subscribe(type_url, state, request.resource_names)
        return self._pass()

    def _ack(self, type_url: str, state: _SotwType, version: str) -> None:
        if state.wildcard:
            state.confirmed = dict(state.inflight)  # a wildcard response is the whole set
        else:
            state.confirmed.update(state.inflight)
        state.inflight = {}
        state.nacked_digest = None  # it accepted something since: a once-rejected content may be retried
        self._record_ack(type_url, state, version or state.sent_version)

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
        named = set(names - {"*"})
        if (wildcard and not state.wildcard) or (named - state.names):
            state.grew = True
        state.names, state.wildcard = named, wildcard
        if not wildcard:  # the client dropped what it no longer names
            state.confirmed = {n: r for n, r in state.confirmed.items() if n in named}

    def _pass(self) -> list[Any]:
        snapshot = self._serving()
        if snapshot is None:
            return []  # a node of the model whose snapshot is not built yet: answer when it appears
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
            update, held = self._update_for(type_url, state, snapshot)
            if held or (state.nacked_digest is not None and state.nacked_digest == state.sent_digest):
                behind.add(type_url)
            if update is None:
                self._mark_idle(state, type_url, serving, snapshot, epochs, type_url in behind)
                continue
            behind.add(type_url)
            if state.outstanding:
                self._mark_idle(state, type_url, serving, snapshot, epochs, True)
                continue  # sent when the client answers the outstanding response
            responses.append(self._respond(type_url, state, update, snapshot))
            endpoints = self._types.get(ENDPOINTS)
            if type_url == CLUSTER and endpoints is not None and self._rebuilt_endpoints(update):
                endpoints.force = True
                self._touch(ENDPOINTS)
        self._record_progress(snapshot, behind)
        return responses

    def _update_for(
        self, type_url: str, state: _SotwType, snapshot: MeshSnapshot
    ) -> tuple[dict[str, Resource] | None, bool]:
        """What to send now (None: nothing), and whether something is held back for now."""
        serving = snapshot.of_type(type_url)
        if state.wildcard:
            excluded = snapshot.wildcard_excluded
            wanted = {n: r for n, r in serving.items() if n not in excluded or n in state.names}
        else:
            wanted = {n: serving[n] for n in state.names if n in serving}
        update: dict[str, Resource] = {}
        held = False
        for name, resource in wanted.items():
            if self._may_send(type_url, resource):
                update[name] = resource
                continue
            held = True  # it names a cluster the client does not run yet: it keeps its version
            running = state.confirmed.get(name)
            if running is not None:
                update[name] = running
        if state.wildcard:  # leaving a name out deletes it: keep what something still names
            for name, running in state.confirmed.items():
                if name not in wanted and running is not None and self._still_named(type_url, name):
                    update[name] = running
                    held = True
        if not state.wildcard and not update and state.sent_digest is None:
            return None, held  # nothing exists of what the client named: SotW has no way to say so
        if state.sent_digest is None:
            # Nothing sent on this stream yet: send it all, even to a reconnecting client that reports
            # this very version. After a NACK, Envoy's version_info names its last accepted response,
            # but it applied the valid part of the rejected one too, so the version does not say what
            # it runs. Resending unchanged resources costs Envoy nothing (it compares them), and
            # ``_respond`` keeps the client's version label when the content is the same.
            return update, held
        digest = state.digest_of(update)
        if state.force or state.grew:
            return update, held
        if digest in (state.sent_digest, state.nacked_digest):
            return None, held  # unchanged, or exactly what the client rejected
        return update, held

    def _respond(self, type_url: str, state: _SotwType, resources: dict[str, Resource], snapshot: MeshSnapshot) -> Any:
        digest = state.digest_of(resources)
        if state.sent_digest is None and version_digest(state.client_version) == digest:
            version = state.client_version  # the same content the client already labels: keep its label
        elif digest == snapshot.digest(type_url):
            version = snapshot.version(type_url)
        else:  # a subset or a make-before-break mix of the snapshot's content
            version = version_string(int(snapshot.version(type_url).partition("-")[0] or 0), digest)
        nonce = self._next_nonce()
        ordered = [resources[name] for name in sorted(resources)]
        response = self._encoder.sotw(type_url, version, digest, ordered, nonce)
        state.inflight, state.sent_digest = dict(resources), digest
        state.inflight_is_full = state.wildcard
        state.force = state.grew = False
        self._record_push(type_url, state, version, nonce)
        return response
