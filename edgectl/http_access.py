"""Who may use a state-changing HTTP route.

The HTTP API has no authentication of its own, so routes that change the fabric on a caller's word
(a forced certificate rotation, a node agent's instance-health report) are served only while the API
listens on loopback (``--http-bind``'s default): then only local users and processes reach them.
Bound anywhere else, such a route answers 403 and says why and what to use instead.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgectl.http_api import PostRoute


def is_loopback(host: str) -> bool:
    """True if listening on ``host`` accepts connections from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_only(route: PostRoute, *, http_host: str, what: str, instead: str) -> PostRoute:
    """``route`` when the HTTP API listens on loopback, else a route that refuses with 403."""
    if is_loopback(http_host):
        return route

    def refused(_state: Any, _body: Any) -> tuple[int, Any]:
        return 403, {
            "error": f"{what} is served only when the HTTP API listens on loopback (it has no "
            f"authentication; this one listens on {http_host}): {instead}"
        }

    return refused
