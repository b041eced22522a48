"""Who may do what on the control connections (pure: no I/O, no cryptography).

The TLS stack (gRPC with ``require_client_auth``) has already proved the peer holds a key certified by
this CA; these functions decide what that SPIFFE id may ask for:

- **xDS** (``check_xds_node``): a stream may only be for the node whose identity the peer holds. The
  mapping is the PKI's own: each subject (Envoy node id) in ``IdentitySnapshot.identities`` has one
  SPIFFE id, so a workload's node id (its workload id) maps to ``spiffe://<td>/svc/<service>/w/<id>`` and
  a host's client sidecar (its host id) to ``spiffe://<td>/host/<id>``. A node the PKI has no identity for
  is refused: it has no secrets to be served anyway. A node agent's node SVID
  (``spiffe://<td>/node/<N>``) may open a stream for any workload placed on node N -- the agent runs
  those sidecars -- and for nothing else.
- **the placement API** (``check_operator``): operators (``spiffe://<td>/operator/<name>``) and
  controllers (``spiffe://<td>/controller/<name>``); a workload or switch identity may not move workloads.
"""

from __future__ import annotations

from collections.abc import Mapping

from pki.errors import InvalidSpiffeId
from pki.policy import node_of, parse_spiffe_id

OPERATOR_KINDS = ("operator", "controller")


def check_xds_node(
    node_id: str,
    peer_id: str,
    node_identities: Mapping[str, str],
    *,
    trust_domain: str = "",
    placed_on: Mapping[str, str | None] | None = None,
) -> str | None:
    """None if the peer holding ``peer_id`` may open an xDS stream for ``node_id``; else why not.
    ``node_identities``: node id -> the SPIFFE id the PKI issued it (``IdentitySnapshot.identities``);
    ``placed_on``: workload id -> the compute node it is placed on (for node SVIDs of ``trust_domain``)."""
    agent_node = node_of(peer_id, trust_domain) if trust_domain else None
    if agent_node is not None:
        where = (placed_on or {}).get(node_id)
        if where == agent_node:
            return None
        if where is None:
            return f"{peer_id} (node {agent_node}) asked for {node_id!r}, which is no workload placed on a node"
        return f"{peer_id} (node {agent_node}) asked for workload {node_id!r}, which is placed on node {where}"
    expected = node_identities.get(node_id)
    if expected is None:
        return f"{peer_id} asked for node {node_id!r}, which has no identity from this CA"
    if expected != peer_id:
        return f"{peer_id} asked for node {node_id!r}, whose identity is {expected}"
    return None


def check_node_caller(peer_id: str, trust_domain: str) -> tuple[str, str | None]:
    """The node agent API's check: (the caller's node, None) for a node SVID of ``trust_domain``, else
    ("", why not)."""
    node = node_of(peer_id, trust_domain)
    if node is None:
        return "", f"{peer_id} is not a node identity (spiffe://{trust_domain}/node/<node>)"
    return node, None


def check_operator(peer_id: str, trust_domain: str) -> str | None:
    """None if ``peer_id`` may use the placement API (an operator or a controller of ``trust_domain``)."""
    try:
        parts = parse_spiffe_id(peer_id)
    except InvalidSpiffeId as exc:
        return f"{peer_id!r} is not a SPIFFE id: {exc}"
    if parts.trust_domain != trust_domain:
        return f"{peer_id} is not in trust domain {trust_domain!r}"
    if len(parts.segments) != 2 or parts.segments[0] not in OPERATOR_KINDS:
        return f"{peer_id} is not an operator (spiffe://{trust_domain}/operator/<name>) or controller identity"
    return None
