"""What a sidecar's denial access log entry says (pure): who was refused, by which service, what.

The inbound listeners' access logs (``envoy_config.denial_access_log``) reach the controller's
AccessLogService (``meshctl.access_log``) as Envoy's own entries; this turns one entry into a
``DeniedCall``, or None when the entry is not an RBAC denial (an app's own 403 passes Envoy's status
filter too: the response code details tell them apart).

    denied_http_call(entry, "cart", now)
    # DeniedCall(caller="spiffe://example.org/host/u2", service="cart", at=..., detail="GET /cart")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2

RBAC_DENIED_DETAILS = "rbac_access_denied"
"""How Envoy's RBAC filters begin the response code details (HTTP) and the connection termination
details (TCP) of what they refused: ``rbac_access_denied_matched_policy[none]``."""

MAX_CALLER = 256
MAX_DETAIL = 200
"""Bounds of what one entry adds to the controller's memory (a path can be long; a SAN is the peer's)."""


@dataclass(frozen=True, slots=True)
class DeniedCall:
    caller: str
    """The caller's SPIFFE id (the peer certificate's URI SAN), or its address when it showed none."""
    service: str
    at: float
    detail: str = ""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _entry_time(common: Any, now: float) -> float:
    if common.HasField("start_time"):
        seconds = common.start_time.seconds + common.start_time.nanos / 1e9
        if 0 < seconds <= now + 60:  # a sidecar's clock far ahead of ours is not believed
            return float(seconds)
    return now


def caller_of(common: Any) -> str:
    """The downstream peer certificate's first URI SAN, else the downstream remote address (no port:
    one caller, however many connections)."""
    for san in common.tls_properties.peer_certificate_properties.subject_alt_name:
        if san.uri:
            return _clip(san.uri, MAX_CALLER)
    address = common.downstream_remote_address
    if address.HasField("socket_address"):
        return _clip(address.socket_address.address, MAX_CALLER)
    if address.HasField("pipe"):
        return _clip(address.pipe.path or "unix", MAX_CALLER)
    return "unknown"


def denied_http_call(entry: Any, service: str, now: float) -> DeniedCall | None:
    """An ``HTTPAccessLogEntry`` refused by the RBAC filter, with ``METHOD path`` (no query string: it
    may carry secrets) as the detail; None for any other entry."""
    if not entry.response.response_code_details.startswith(RBAC_DENIED_DETAILS):
        return None
    common = entry.common_properties
    request = entry.request
    method = _method_name(request.request_method)
    path = request.path.partition("?")[0]
    detail = _clip(f"{method} {path}".strip(), MAX_DETAIL)
    return DeniedCall(caller_of(common), service, _entry_time(common, now), detail)


def denied_tcp_connection(entry: Any, service: str, now: float) -> DeniedCall | None:
    """A ``TCPAccessLogEntry`` of a connection the network RBAC filter closed; None for any other."""
    common = entry.common_properties
    if not common.connection_termination_details.startswith(RBAC_DENIED_DETAILS):
        return None
    return DeniedCall(caller_of(common), service, _entry_time(common, now), "connection")


def _method_name(value: int) -> str:
    name = base_pb2.RequestMethod.Name(value) if value in base_pb2.RequestMethod.values() else ""
    return "" if name == "METHOD_UNSPECIFIED" else name
