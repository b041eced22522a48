"""``POST /api/v1/pki/rotate``: a forced rotation (compromised key), and ``POST /api/v1/pki/join-tokens``:
a one-time join token for a node agent, on the controller's HTTP API.

The HTTP API has no authentication of its own, so the command is served only when that API listens on
loopback (``--http-bind``'s default): then only local users reach it. Bound anywhere else, the route
answers 403 and says why; ``edgectl pki rotate --dir`` works on the CA directory regardless. Each
identity is force-rotated at most once per ``PkiService`` interval (429 with ``retry_after_s``
otherwise), so repeated calls cannot grow the revocation list without bound.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from edgectl.http_access import loopback_only
from netmodel.ids import NodeId
from pki.errors import PkiError, RevocationsUnavailable, RotationTooSoon

if TYPE_CHECKING:  # the HTTP server and the CA are imported only when a controller runs
    from edgectl.http_api import PostRoute
    from netmodel.state import FabricState
    from pki.join_token_store import TokenStore
    from pki.service import PkiService

LOG = logging.getLogger("edgectl.pki")


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
        # "stored": false: in force here, but a restart before the store comes back would forget it.
        reply = {"spiffe_id": spiffe_id, "rotated": rotated, "version": pki.snapshot.version}
        return 200, reply | {"stored": bool(changes.stored)}

    return loopback_only(
        rotate, http_host=http_host, what="forced rotation", instead="use edgectl pki rotate --dir on the CA"
    )


JOIN_TOKENS_PATH = "/api/v1/pki/join-tokens"


def join_token_route(tokens: TokenStore, trust_domain: str, *, http_host: str) -> PostRoute:
    """``POST /api/v1/pki/join-tokens`` {"node": N, "ttl_s": 600}: a one-time join token for compute node N
    (201 {"token", "node", "expires_at", "spiffe_id"}); 400 with the reason for an unknown node or a bad
    TTL. Loopback only, like a forced rotation: a token lets a machine become node N."""
    from pki.join_tokens import DEFAULT_TTL_S, JoinTokenError, check_ttl
    from pki.policy import node_spiffe_id

    def mint(state: FabricState, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("node"), str) or not body["node"]:
            return 400, {"error": 'expected a JSON body {"node": "<compute node>", "ttl_s": 600}'}
        node = body["node"]
        if NodeId(node) not in state.nodes:
            known = ", ".join(sorted(state.nodes)[:20]) or "none"
            return 400, {"error": f"unknown node {node!r}: not a compute node of the fabric (known: {known})"}
        try:
            ttl = check_ttl(body.get("ttl_s", DEFAULT_TTL_S))
            spiffe_id = node_spiffe_id(trust_domain, node)
            token, expires_at = tokens.mint(node, ttl)
        except (JoinTokenError, PkiError) as exc:
            return 400, {"error": str(exc)}
        LOG.info("join token minted for node %s (one use, %d s); only its hash is kept", node, ttl)
        return 201, {"token": token, "node": node, "expires_at": expires_at, "spiffe_id": spiffe_id}

    return loopback_only(
        mint,
        http_host=http_host,
        what="minting a join token",
        instead="run edgectl pki token on the controller's machine",
    )


NODE_REVOCATIONS_PATH = "/api/v1/pki/node-revocations"


def node_revocation_route(pki: PkiService, *, http_host: str) -> PostRoute:
    """``POST /api/v1/pki/node-revocations`` {"node": N}: revoke compute node N's identity now (a stolen
    or retired node): every node SVID of N is refused on every agent API call, renewal included, and the
    PKI's listeners end N's open watches. {"node": N, "restore": true} accepts N again (its agent attests
    with a new join token). 200 {"node", "spiffe_id", "revoked", "stored"} ("stored": false: in force, but not
    yet in the stored revocation list); 503 for a restore that cannot be stored (it stays revoked). Loopback
    only, like a forced rotation."""
    from pki.policy import node_spiffe_id

    def revoke(state: FabricState, body: Any) -> tuple[int, Any]:
        node = body.get("node") if isinstance(body, dict) else None
        restore = body.get("restore", False) if isinstance(body, dict) else False
        if not isinstance(node, str) or not node or not isinstance(restore, bool):
            return 400, {"error": 'expected a JSON body {"node": "<compute node>"} (and "restore": true to undo)'}
        try:
            spiffe_id = node_spiffe_id(pki.trust_domain, node)
        except PkiError as exc:
            return 400, {"error": str(exc)}
        if restore:
            try:
                changes = pki.restore_node(node)
            except RevocationsUnavailable as exc:  # a restore is in force only once it is stored
                return 503, {"error": str(exc)}
            LOG.warning("node identity %s restored: the node may attest again", spiffe_id)
        else:
            changes = pki.revoke_node(node)  # its listeners (the agent API) end the node's open watches
            known = "" if NodeId(node) in state.nodes else " (not a node of the fabric)"
            LOG.warning("node identity %s revoked%s: its agent is refused from now on", spiffe_id, known)
        reply = {"node": node, "spiffe_id": spiffe_id, "revoked": pki.node_revoked(node)}
        # A restore of a node not revoked changed nothing: there was nothing to store.
        return 200, reply | {"stored": changes.stored is not False}

    return loopback_only(
        revoke, http_host=http_host, what="revoking a node identity", instead="run it on the controller's machine"
    )
