"""The pure authorisation rules of the control connections (pki/authz.py)."""

from __future__ import annotations

import pytest

from pki.authz import check_operator, check_xds_node
from pki.errors import InvalidSpiffeId
from pki.policy import controller_spiffe_id, host_spiffe_id, operator_spiffe_id, workload_spiffe_id

TD = "example.org"
WEB1 = workload_spiffe_id(TD, "web", "web-1")
U1 = host_spiffe_id(TD, "u1")
IDENTITIES = {"web-1": WEB1, "web-2": workload_spiffe_id(TD, "web", "web-2"), "u1": U1}


def test_a_node_is_served_to_the_holder_of_its_own_identity() -> None:
    assert check_xds_node("web-1", WEB1, IDENTITIES) is None
    assert check_xds_node("u1", U1, IDENTITIES) is None


@pytest.mark.parametrize(
    ("node", "peer"),
    [
        ("u1", WEB1),  # A's certificate asking for B's node
        ("web-2", WEB1),  # another instance of the same service: its own key, not web-1's
        ("web-1", U1),
        ("web-1", operator_spiffe_id(TD, "alice")),
        ("web-1", workload_spiffe_id("other.org", "web", "web-1")),  # same path, other trust domain
    ],
)
def test_any_other_identity_is_refused_naming_both(node: str, peer: str) -> None:
    reason = check_xds_node(node, peer, IDENTITIES)
    assert reason is not None and peer in reason and IDENTITIES[node] in reason


def test_a_node_without_an_identity_is_refused() -> None:
    reason = check_xds_node("web-9", workload_spiffe_id(TD, "web", "web-9"), IDENTITIES)
    assert reason is not None and "no identity" in reason


def test_operators_and_controllers_may_use_the_placement_api() -> None:
    assert check_operator(operator_spiffe_id(TD, "alice"), TD) is None
    assert check_operator(controller_spiffe_id(TD), TD) is None


@pytest.mark.parametrize(
    ("peer", "why"),
    [
        (WEB1, "not an operator"),
        (U1, "not an operator"),
        (f"spiffe://{TD}/operator/alice/extra", "not an operator"),
        (f"spiffe://{TD}/operator", "not an operator"),
        (operator_spiffe_id("other.org", "alice"), "not in trust domain"),
        ("https://example.org/operator/alice", "not a SPIFFE id"),
    ],
)
def test_other_identities_may_not(peer: str, why: str) -> None:
    reason = check_operator(peer, TD)
    assert reason is not None and why in reason


def test_operator_names_are_checked() -> None:
    with pytest.raises(InvalidSpiffeId):
        operator_spiffe_id(TD, "a/b")
