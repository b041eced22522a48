"""``POST /api/v1/pki/rotate``: a forced rotation (compromised key) on the controller's HTTP API.

The HTTP API has no authentication of its own, so the command is served only when that API listens on
loopback (``--http-bind``'s default): then only local users reach it. Bound anywhere else, the route
answers 403 and says why; ``edgectl pki rotate --dir`` works on the CA directory regardless. Each
identity is force-rotated at most once per ``PkiService`` interval (429 with ``retry_after_s``
otherwise), so repeated calls cannot grow the revocation list without bound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgectl.http_access import loopback_only
from pki.errors import PkiError, RotationTooSoon

if TYPE_CHECKING:  # the HTTP server and the CA are imported only when a controller runs
    from edgectl.http_api import PostRoute
    from pki.service import PkiService


def rotate_route(pki: PkiService, *, http_host: str) -> PostRoute:
    """The handler for ``POST /api/v1/pki/rotate`` {"spiffe_id": ID} of a controller whose HTTP API
    listens on ``http_host``; ``pki``: the ``PkiService``."""

    def rotate(_state: Any, body: Any) -> tuple[int, Any]:
        spiffe_id = body.get("spiffe_id") if isinstance(body, dict) else None
        if not isinstance(spiffe_id, str) or not spiffe_id:
            return 400, {"error": 'expected a JSON body {"spiffe_id": "spiffe://..."}'}
        try:
            changes = pki.rotate(spiffe_id)
        except RotationTooSoon as exc:
            return 429, {"error": str(exc), "retry_after_s": round(exc.retry_after_s, 1)}
        except PkiError as exc:
            return 400, {"error": str(exc)}
        rotated = sorted(subject for subject, _spiffe_id, _why in changes.issued)
        return 200, {"spiffe_id": spiffe_id, "rotated": rotated, "version": pki.snapshot.version}

    return loopback_only(
        rotate, http_host=http_host, what="forced rotation", instead="use edgectl pki rotate --dir on the CA"
    )
