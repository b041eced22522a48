"""Join tokens on disk: ``join-tokens.json`` in the CA directory (adapter: files only).

The records (hashes, never tokens) are rewritten whole on every change: a temporary file in the same
directory, mode 0600 from its first byte, fsync'd, renamed over the old one, and the directory fsync'd,
so a controller killed at any moment leaves the old records or the new ones. A token minted or used
is on disk before the caller hears of it: it survives a restart, and a used one stays used.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from pki.errors import CaCorrupt
from pki.join_tokens import JoinTokens, Refusal
from pki.store import SECRET_MODE, replace_file

FILE_NAME = "join-tokens.json"


def load(path: str | os.PathLike[str]) -> JoinTokens:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return JoinTokens()
    except OSError as exc:
        raise CaCorrupt(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return JoinTokens.from_dict(json.loads(text))
    except ValueError as exc:
        raise CaCorrupt(f"{path} is unreadable: {exc}") from None


def save(path: str | os.PathLike[str], tokens: JoinTokens) -> None:
    target = Path(path)
    replace_file(target, (json.dumps(tokens.as_dict(), indent=1) + "\n").encode(), SECRET_MODE)
    fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)  # the rename itself is durable
    finally:
        os.close(fd)


class TokenStore(Protocol):
    """Where join tokens are kept: this file store, or etcd for a replicated controller
    (``cluster.join_tokens.EtcdJoinTokenStore``)."""

    def mint(self, node: str, ttl_s: int) -> tuple[str, float]: ...
    def check(self, token: str, node: str) -> Refusal | None: ...
    def redeem(self, token: str, node: str) -> Refusal | None: ...
    @property
    def tokens(self) -> JoinTokens: ...


class JoinTokenStore:
    """The controller's join tokens: one lock, every change saved before it is answered."""

    def __init__(self, ca_directory: str | os.PathLike[str], clock: Callable[[], float]) -> None:
        self.path = Path(ca_directory) / FILE_NAME
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = load(self.path)

    def mint(self, node: str, ttl_s: int) -> tuple[str, float]:
        """A new token for ``node`` (checked by the caller to be a compute node); (token, expires_at)."""
        import secrets

        with self._lock:
            now = self._clock()
            token, tokens = self._tokens.mint(node, ttl_s, now, secrets.token_bytes(32))
            save(self.path, tokens)
            self._tokens = tokens
            return token, tokens.records[_digest(token)].expires_at

    def check(self, token: str, node: str) -> Refusal | None:
        """``JoinTokens.check`` now: would ``redeem`` accept it? Changes nothing."""
        with self._lock:
            return self._tokens.check(token, node, self._clock())

    def redeem(self, token: str, node: str) -> Refusal | None:
        with self._lock:
            now = self._clock()
            tokens, refusal = self._tokens.redeem(token, node, now)
            if tokens is not self._tokens:  # used or burned: on disk before anyone hears of it
                tokens = tokens.pruned(now)
                save(self.path, tokens)
                self._tokens = tokens
            return refusal

    @property
    def tokens(self) -> JoinTokens:
        return self._tokens


def _digest(token: str) -> str:
    from pki.join_tokens import token_digest

    return token_digest(token)
