"""Serialize once: discovery responses built from bytes encoded once per resource version and shared
by every stream. Pure (no gRPC, no I/O).

A resource shared by many nodes (same type, name and content) is the same ``Resource`` object in
their snapshots; its ``google.protobuf.Any`` is encoded here once per content and those bytes are
reused for every stream, SotW and delta alike. A SotW response's body (version, resources, type) is
encoded once per (type, version, content digest): every stream that gets the same content gets the
same bytes, followed by its own nonce (protobuf fields may come in any order, and a parser reads a
concatenation of fields as one message). A delta response joins the cached entry of each resource
(name, version, Any) with its removals and nonce.

Keys carry the content digest (and the version, for a SotW body), so a changed resource is encoded
anew and stale bytes are never served: an old entry only waits to be evicted (oldest first, beyond
``max_bytes``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from meshctl.snapshot import Resource
from meshctl.wire_format import element as _element
from meshctl.wire_format import field as _field
from meshctl.wire_format import text as _text

# Field numbers (envoy/service/discovery/v3/discovery.proto); the unit tests check them against the
# messages' own serialization.
_SOTW_VERSION, _SOTW_RESOURCES, _SOTW_TYPE_URL, _NONCE = 1, 2, 4, 5
_DELTA_SYSTEM_VERSION, _DELTA_RESOURCES, _DELTA_TYPE_URL, _DELTA_REMOVED = 1, 2, 4, 6
_RESOURCE_VERSION, _RESOURCE_ANY, _RESOURCE_NAME = 1, 2, 3

DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class EncodedResponse:
    """A discovery response as the bytes gRPC sends (``data``). ``type_url`` and ``nonce`` are at
    hand; any other field is read from the decoded message (``message()``, decoded on first use: for
    tests and logs, never on the serving path)."""

    __slots__ = ("_decoded", "_parse", "data", "nonce", "type_url")

    def __init__(self, data: bytes, type_url: str, nonce: str, parse: Callable[[bytes], Any]) -> None:
        self.data = data
        self.type_url = type_url
        self.nonce = nonce
        self._parse = parse
        self._decoded: Any = None

    def message(self) -> Any:
        if self._decoded is None:
            self._decoded = self._parse(self.data)
        return self._decoded

    def __getattr__(self, name: str) -> Any:  # only for names that are not slots: the message's fields
        return getattr(self.message(), name)

    def __repr__(self) -> str:
        return f"EncodedResponse({self.type_url!r}, nonce={self.nonce!r}, {len(self.data)} bytes)"


def serialize(response: Any) -> bytes:
    """gRPC's response serializer for the ADS methods: encoded responses are sent as they are."""
    if isinstance(response, EncodedResponse):
        return response.data
    data: bytes = response.SerializeToString()
    return data


class ResponseEncoder:
    """The bytes cache of one xDS server (its streams run on one event loop: no lock). ``encodes``
    counts the encodings kept, ``hits`` the times cached bytes were reused; ``max_bytes`` 0 caches
    nothing."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._max_bytes = max_bytes
        self._entries: dict[tuple[str, ...], bytes] = {}
        self._bytes = 0
        self.encodes = 0
        self.hits = 0

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def sotw(
        self, type_url: str, version: str, digest: str, resources: Sequence[Resource], nonce: str
    ) -> EncodedResponse:
        """A ``DiscoveryResponse`` of ``resources`` (in the order given) whose content digest is
        ``digest`` (``snapshot.digest_of`` of them)."""
        body = self._cached(
            ("sotw", type_url, version, digest),
            lambda: (
                _text(_SOTW_VERSION, version)
                + b"".join(_field(_SOTW_RESOURCES, self._any(type_url, r)) for r in resources)
                + _text(_SOTW_TYPE_URL, type_url)
            ),
        )
        return EncodedResponse(body + _text(_NONCE, nonce), type_url, nonce, discovery_pb2.DiscoveryResponse.FromString)

    def delta(
        self, type_url: str, system_version: str, resources: Iterable[Resource], removed: Iterable[str], nonce: str
    ) -> EncodedResponse:
        """A ``DeltaDiscoveryResponse``: each resource with its digest as its version, then the removals."""
        data = b"".join(
            [
                _text(_DELTA_SYSTEM_VERSION, system_version),
                *(self._delta_entry(type_url, r) for r in resources),
                _text(_DELTA_TYPE_URL, type_url),
                *(_element(_DELTA_REMOVED, name) for name in removed),
                _text(_NONCE, nonce),
            ]
        )
        return EncodedResponse(data, type_url, nonce, discovery_pb2.DeltaDiscoveryResponse.FromString)

    def _any(self, type_url: str, resource: Resource) -> bytes:
        return self._cached(("any", type_url, resource.name, resource.digest), resource.packed.SerializeToString)

    def _delta_entry(self, type_url: str, resource: Resource) -> bytes:
        return self._cached(
            ("delta", type_url, resource.name, resource.digest),
            lambda: _field(
                _DELTA_RESOURCES,
                _text(_RESOURCE_VERSION, resource.digest)
                + _field(_RESOURCE_ANY, self._any(type_url, resource))
                + _text(_RESOURCE_NAME, resource.name),
            ),
        )

    def _cached(self, key: tuple[str, ...], encode: Callable[[], bytes]) -> bytes:
        if self._max_bytes <= 0:
            return encode()  # caching nothing: every response encoded for its stream (a benchmark's baseline)
        data = self._entries.get(key)
        if data is not None:
            self.hits += 1
            return data
        data = encode()
        self.encodes += 1
        self._entries[key] = data
        self._bytes += len(data)
        while self._bytes > self._max_bytes and len(self._entries) > 1:
            oldest = next(iter(self._entries))
            self._bytes -= len(self._entries.pop(oldest))
        return data
