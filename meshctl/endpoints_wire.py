"""Endpoints (``ClusterLoadAssignment``) as bytes assembled from pieces encoded once. Pure.

A service's endpoints are one resource per priority order of its instances (each caller switch sees
its nearest first: ``meshctl.paths``), so one service with hundreds of instances is encoded for every
distinct order, and again whenever one instance comes or goes. Built as protobuf messages that costs
a few microseconds per endpoint per order. Here each endpoint is encoded once, and each locality
group (its endpoints at one priority) once but for its priority, appended to its bytes: a group that
only moved to another priority is not encoded again. An order is the join of its groups' bytes: the
same bytes ``envoy_config.load_assignment`` serializes to (the unit tests compare them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from meshctl.envoy_config import LocalityEndpoints
from meshctl.wire_format import message_field, set_uint_field, text, uint_field

# Field numbers (envoy/config/endpoint/v3, envoy/config/core/v3); the unit tests hold them to the
# messages' own serialization.
_ASSIGNMENT_NAME, _ASSIGNMENT_ENDPOINTS = 1, 2
_GROUP_LOCALITY, _GROUP_LB_ENDPOINTS, _GROUP_WEIGHT, _GROUP_PRIORITY = 1, 2, 3, 5
_REGION, _ZONE, _SUB_ZONE = 1, 2, 3
_LB_ENDPOINT, _LB_WEIGHT = 1, 4
_ENDPOINT_ADDRESS, _ADDRESS_SOCKET, _SOCKET_IP, _SOCKET_PORT = 1, 1, 2, 3
_WRAPPED = 1

Endpoint = tuple[str, int, int]
EncodedGroup = tuple[bytes, bytes]
"""A locality group's field and its hash."""


class LoadAssignmentEncoder:
    """Remembers each endpoint's bytes (at most ``max_entries``; then it starts over, so instances long gone
    do not stay) and each locality group's bytes but its priority (at most ``max_body_bytes`` of them, kept
    across updates: when a caller's levels split or merge, every group after that level changes priority,
    not content)."""

    def __init__(self, max_entries: int = 100_000, max_body_bytes: int = 16 << 20) -> None:
        self._max_entries = max_entries
        self._max_body_bytes = max_body_bytes
        self._endpoints: dict[Endpoint, bytes] = {}
        self._bodies: dict[tuple[str, str, str, tuple[Endpoint, ...]], bytes] = {}
        self._body_bytes = 0

    def group_field(self, group: LocalityEndpoints) -> EncodedGroup:
        """One locality group as the ``endpoints`` field of a ``ClusterLoadAssignment`` (tag and length
        included; ``join_groups`` of such fields, in order, is the whole message), with its hash
        (``assignment_digest`` of the hashes is the message's)."""
        key = (group.region, group.zone, group.sub_zone, group.endpoints)
        body = self._bodies.get(key)
        if body is None:
            locality = text(_REGION, group.region) + text(_ZONE, group.zone) + text(_SUB_ZONE, group.sub_zone)
            body = (
                message_field(_GROUP_LOCALITY, locality)
                + b"".join([self._endpoint_field(e) for e in group.endpoints])
                + message_field(_GROUP_WEIGHT, uint_field(_WRAPPED, sum(weight for _, _, weight in group.endpoints)))
            )
            if self._body_bytes + len(body) > self._max_body_bytes:  # (a locality grown endpoint by endpoint)
                self._bodies.clear()
                self._body_bytes = 0
            self._bodies[key] = body
            self._body_bytes += len(body)
        field = message_field(_ASSIGNMENT_ENDPOINTS, body + uint_field(_GROUP_PRIORITY, group.priority))
        return field, hashlib.sha256(field).digest()[:12]

    def _endpoint_field(self, endpoint: Endpoint) -> bytes:
        """One endpoint as a locality group's ``lb_endpoints`` field (tag and length included)."""
        known = self._endpoints.get(endpoint)
        if known is not None:
            return known
        ip, port, weight = endpoint
        socket = text(_SOCKET_IP, ip) + set_uint_field(_SOCKET_PORT, port)  # port_value is in a oneof
        address = message_field(_ADDRESS_SOCKET, socket)
        data = message_field(_LB_ENDPOINT, message_field(_ENDPOINT_ADDRESS, address)) + message_field(
            _LB_WEIGHT, uint_field(_WRAPPED, weight)
        )
        if len(self._endpoints) >= self._max_entries:
            self._endpoints.clear()
        self._endpoints[endpoint] = field = message_field(_GROUP_LB_ENDPOINTS, data)
        return field


def join_groups(name: str, group_fields: Iterable[bytes]) -> bytes:
    """A ``ClusterLoadAssignment`` named ``name`` with these locality groups (``group_field``), in order."""
    return text(_ASSIGNMENT_NAME, name) + b"".join(group_fields)


def assignment_digest(name: str, group_digests: Iterable[bytes]) -> str:
    """The content hash of a ``ClusterLoadAssignment``: of its name and its groups' hashes, in order (a
    hash of hashes: hashing the whole message again costs more than encoding the group that changed)."""
    return hashlib.sha256(name.encode() + b"".join(group_digests)).hexdigest()[:16]
