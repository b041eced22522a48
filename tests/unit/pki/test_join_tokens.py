"""Join tokens: one use, one node, before expiry; only hashes kept; the records survive a restart."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from pki import join_token_store
from pki.authz import check_node_caller, check_xds_node
from pki.errors import CaCorrupt
from pki.join_token_store import JoinTokenStore
from pki.join_tokens import JoinTokenError, JoinTokens, check_ttl, token_digest
from pki.policy import node_of, node_spiffe_id
from tests.unit.pki.pki_helpers import NOW, TD

SECRET = bytes(range(32))


def minted(node: str = "ea-n1", ttl_s: int = 600, secret: bytes = SECRET) -> tuple[str, JoinTokens]:
    return JoinTokens().mint(node, ttl_s, NOW, secret)


def test_a_token_is_random_urlsafe_text_and_only_its_hash_is_kept() -> None:
    token, tokens = minted()
    assert len(token) >= 22 and all(c.isalnum() or c in "-_" for c in token)
    assert list(tokens.records) == [token_digest(token)]
    assert token not in json.dumps(tokens.as_dict())
    record = tokens.records[token_digest(token)]
    assert (record.node, record.expires_at, record.used_at) == ("ea-n1", NOW + 600, None)


def test_a_token_works_once_then_says_when_it_was_used() -> None:
    token, tokens = minted()
    used, refusal = tokens.redeem(token, "ea-n1", NOW + 5)
    assert refusal is None
    again, replay = used.redeem(token, "ea-n1", NOW + 6)
    assert replay is not None and replay.kind == "used" and "already used (at " in replay.reason
    assert again is used  # a refused replay changes nothing


def test_an_expired_token_is_refused_as_expired_and_not_consumed() -> None:
    token, tokens = minted(ttl_s=10)
    after, refusal = tokens.redeem(token, "ea-n1", NOW + 10)
    assert refusal is not None and refusal.kind == "expired" and "expired (at " in refusal.reason
    assert after is tokens


def test_a_token_presented_for_another_node_is_refused_and_burned() -> None:
    token, tokens = minted(node="ea-n1")
    burned, refusal = tokens.redeem(token, "eb-n1", NOW + 1)
    assert refusal is not None and refusal.kind == "other-node" and "burned" in refusal.reason
    _, later = burned.redeem(token, "ea-n1", NOW + 2)  # its own node can no longer use it
    assert later is not None and later.kind == "used"


def test_unknown_and_oversized_tokens_are_unknown() -> None:
    _, tokens = minted()
    for presented in ("", "nope", "x" * 10_000):
        after, refusal = tokens.redeem(presented, "ea-n1", NOW)
        assert refusal is not None and refusal.kind == "unknown" and after is tokens


def test_prune_drops_records_past_expiry_used_or_not() -> None:
    first, tokens = minted(ttl_s=10)
    second, tokens = tokens.mint("eb-n1", 600, NOW, bytes(reversed(SECRET)))
    tokens, _ = tokens.redeem(first, "ea-n1", NOW + 1)
    assert set(tokens.pruned(NOW + 9).records) == {token_digest(first), token_digest(second)}
    assert set(tokens.pruned(NOW + 10).records) == {token_digest(second)}


@pytest.mark.parametrize("ttl", [9, 24 * 3600 + 1, -1, True, "600", float("nan")])
def test_a_ttl_outside_10_s_to_24_h_is_refused(ttl: object) -> None:
    with pytest.raises(JoinTokenError):
        check_ttl(ttl)
    with pytest.raises(JoinTokenError):
        JoinTokens().mint("ea-n1", ttl, NOW, SECRET)  # type: ignore[arg-type]


def test_too_little_randomness_or_no_node_is_refused() -> None:
    with pytest.raises(JoinTokenError, match="16 random bytes"):
        JoinTokens().mint("ea-n1", 600, NOW, b"short")
    with pytest.raises(JoinTokenError, match="node"):
        JoinTokens().mint("", 600, NOW, SECRET)


def test_the_store_keeps_tokens_across_a_restart_in_a_private_file(tmp_path: Path) -> None:
    clock = [NOW]
    store = JoinTokenStore(tmp_path, lambda: clock[0])
    token, expires_at = store.mint("ea-n1", 600)
    replayed, _ = store.mint("eb-n1", 600)
    assert expires_at == NOW + 600
    path = tmp_path / join_token_store.FILE_NAME
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert token not in path.read_text()
    assert store.redeem(replayed, "eb-n1") is None

    restarted = JoinTokenStore(tmp_path, lambda: clock[0])  # a new controller process
    assert restarted.tokens == store.tokens
    again = restarted.redeem(replayed, "eb-n1")
    assert again is not None and again.kind == "used"
    assert restarted.redeem(token, "ea-n1") is None


def test_a_corrupt_token_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / join_token_store.FILE_NAME).write_text("{not json")
    with pytest.raises(CaCorrupt, match=r"join-tokens\.json"):
        JoinTokenStore(tmp_path, lambda: NOW)
    (tmp_path / join_token_store.FILE_NAME).write_text('{"tokens": {"abc": {}}}')
    with pytest.raises(CaCorrupt, match="bad record"):
        JoinTokenStore(tmp_path, lambda: NOW)


# -- node identities ---------------------------------------------------------------------------------


def test_node_spiffe_ids() -> None:
    assert node_spiffe_id(TD, "ea-n1") == f"spiffe://{TD}/node/ea-n1"
    assert node_of(f"spiffe://{TD}/node/ea-n1", TD) == "ea-n1"
    for other in ("spiffe://other.org/node/ea-n1", f"spiffe://{TD}/host/ea-n1", f"spiffe://{TD}/node/a/b", "x"):
        assert node_of(other, TD) is None
    assert check_node_caller(f"spiffe://{TD}/node/ea-n1", TD) == ("ea-n1", None)
    node, refusal = check_node_caller(f"spiffe://{TD}/host/u1", TD)
    assert node == "" and refusal is not None and "not a node identity" in refusal


def test_a_node_svid_opens_xds_streams_for_the_workloads_placed_on_its_node_only() -> None:
    peer = f"spiffe://{TD}/node/ea-n1"
    identities = {"web-1": f"spiffe://{TD}/svc/web/w/web-1", "api-1": f"spiffe://{TD}/svc/api/w/api-1"}
    placed = {"web-1": "ea-n1", "api-1": "eb-n1", "u1": None}

    def check(node_id: str) -> str | None:
        return check_xds_node(node_id, peer, identities, trust_domain=TD, placed_on={node_id: placed.get(node_id)})

    assert check("web-1") is None
    refusal = check("api-1")
    assert refusal is not None and "placed on node eb-n1" in refusal
    refusal = check("u1")  # a host's client sidecar is not a node's workload
    assert refusal is not None and "no workload placed on a node" in refusal
    # Another trust domain's node SVID is not a node identity here: the workload rule applies (refused).
    assert check_xds_node("web-1", "spiffe://other.org/node/ea-n1", identities, trust_domain=TD) is not None
    # The rule that was: a workload SVID for exactly its own node id.
    assert check_xds_node("web-1", identities["web-1"], identities, trust_domain=TD) is None
    assert check_xds_node("api-1", identities["web-1"], identities, trust_domain=TD) is not None


@pytest.mark.parametrize(("text", "seconds"), [("600", 600), ("30s", 30), ("10m", 600), ("1h", 3600), ("1.5h", 5400)])
def test_token_ttls_read_like_durations(text: str, seconds: int) -> None:
    from pki.cli import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "10x", "0.5s"])
def test_a_ttl_that_is_no_duration_is_refused(text: str) -> None:
    from pki.cli import parse_duration

    with pytest.raises(ValueError, match="--ttl"):
        parse_duration(text)
