"""Join tokens shared by the replicas: one etcd key (``<root>/join-tokens``) instead of a file (adapter).

A node agent may attest at any replica with a token another one minted, and a token used at one replica
is used at all. The records (hashes, never tokens) are ``pki.join_tokens.JoinTokens``; every change is a
read, the pure change, and a transaction that writes only if the key is still at the revision read (two
replicas redeeming one token at once: one succeeds, the other re-reads and finds it used). Same interface
as ``pki.join_token_store.JoinTokenStore``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

from cluster.etcd import Compare, EtcdClient, EtcdError, Op
from pki.errors import CaCorrupt
from pki.join_tokens import JoinTokens, Refusal, token_digest

ATTEMPTS = 16


class EtcdJoinTokenStore:
    def __init__(self, client: EtcdClient, root: bytes, clock: Callable[[], float]) -> None:
        self._client = client
        self._key = root.rstrip(b"/") + b"/join-tokens"
        self._clock = clock

    def _read(self) -> tuple[JoinTokens, int]:
        """The records and the key's mod revision (0: no key yet)."""
        kv = self._client.get(self._key)
        if kv is None:
            return JoinTokens(), 0
        try:
            return JoinTokens.from_dict(json.loads(kv.value)), kv.mod_revision
        except ValueError as exc:
            raise CaCorrupt(f"the cluster's join tokens in etcd are unreadable: {exc}") from None

    def _write(self, tokens: JoinTokens, revision: int) -> bool:
        unchanged = (
            Compare.mod_revision(self._key, "=", revision) if revision else Compare.create_revision(self._key, "=", 0)
        )
        value = json.dumps(tokens.as_dict(), indent=1).encode()
        return self._client.txn([unchanged], [Op.put(self._key, value)]).succeeded

    def mint(self, node: str, ttl_s: int) -> tuple[str, float]:
        """A new token for ``node``; (token, expires_at). Raises EtcdError when etcd cannot take it."""
        secret = secrets.token_bytes(32)
        for _ in range(ATTEMPTS):
            current, revision = self._read()
            token, tokens = current.mint(node, ttl_s, self._clock(), secret)
            if self._write(tokens, revision):
                return token, tokens.records[token_digest(token)].expires_at
        raise EtcdError("the cluster's join tokens kept changing under this replica: try again")

    def check(self, token: str, node: str) -> Refusal | None:
        current, _ = self._read()
        return current.check(token, node, self._clock())

    def redeem(self, token: str, node: str) -> Refusal | None:
        for _ in range(ATTEMPTS):
            current, revision = self._read()
            now = self._clock()
            tokens, refusal = current.redeem(token, node, now)
            if tokens is current or self._write(tokens.pruned(now), revision):
                return refusal  # used or burned: in etcd before anyone hears of it
        raise EtcdError("the cluster's join tokens kept changing under this replica: try again")

    @property
    def tokens(self) -> JoinTokens:
        return self._read()[0]
