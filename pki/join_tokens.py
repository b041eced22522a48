"""One-time join tokens for node attestation (pure: time comes in as ``now``, randomness as bytes).

An operator mints a token for one compute node (``edgectl pki token --node N``); the node agent presents
it once, with a CSR, to get the node SVID ``spiffe://<td>/node/<N>`` (SPIRE's join-token attestor, with
the same rules): a token works once, for its node only, before it expires.

Only the token's SHA-256 is kept (``JoinTokens.records``, keyed by the hex digest), so a copy of the
records (the file under the CA directory) cannot be turned back into a usable token. Comparing digests
by dictionary lookup needs no constant-time comparison: an attacker timing the lookup learns about the
*hash* of their guess, which tells them nothing about a token's text (a preimage is still 2^256 work),
and the token itself has 128+ random bits.

A used token is remembered until it would have expired, so a replay is refused as "already used (at
T)" rather than "unknown" -- the operator learns that someone else presented it. A token presented for
another node than its own is burned (marked used): SPIRE binds a token to one id, so presenting it for
another is an attack or a mistake, and either way the token must not be tried again.

Whether ``node`` is a compute node of the model is the caller's check (``mint`` does not know the model).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from netmodel.types import frozen_map

MIN_TTL_S = 10
MAX_TTL_S = 24 * 3600
DEFAULT_TTL_S = 600
MIN_SECRET_BYTES = 16
"""128 bits: the token cannot be guessed within its lifetime, whatever the attempt rate."""
MAX_TOKEN_CHARS = 512
"""A presented token longer than this is not one of ours: refused before hashing."""


class JoinTokenError(ValueError):
    """A token cannot be minted as asked (a bad TTL, too little randomness)."""


@dataclass(frozen=True, slots=True)
class TokenRecord:
    node: str
    expires_at: float
    used_at: float | None = None
    minted_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a token was refused: ``kind`` is one of unknown, used, expired, other-node; ``reason`` says so
    for a person (and is what the agent is told)."""

    kind: str
    reason: str


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_ttl(ttl_s: object) -> int:
    """``ttl_s`` as whole seconds within [MIN_TTL_S, MAX_TTL_S]; ``JoinTokenError`` otherwise."""
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or ttl_s != ttl_s:
        raise JoinTokenError(f"ttl_s must be a number of seconds, not {ttl_s!r}")
    if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
        raise JoinTokenError(f"ttl_s must be between {MIN_TTL_S} s and {MAX_TTL_S} s (24 h), not {ttl_s:g}")
    return int(ttl_s)


@dataclass(frozen=True, slots=True)
class JoinTokens:
    """Every live token's record, keyed by the SHA-256 (hex) of its text. An immutable value."""

    records: Mapping[str, TokenRecord] = field(default_factory=frozen_map)

    def mint(self, node: str, ttl_s: int, now: float, secret_bytes: bytes) -> tuple[str, JoinTokens]:
        """A new token for ``node`` (a compute node of the model: the caller checked) valid ``ttl_s``
        seconds from ``now``, made of ``secret_bytes`` (at least 16 random bytes, e.g.
        ``secrets.token_bytes(32)``); returns the token text (URL-safe) and the records holding it."""
        ttl = check_ttl(ttl_s)
        if len(secret_bytes) < MIN_SECRET_BYTES:
            raise JoinTokenError(f"a join token needs at least {MIN_SECRET_BYTES} random bytes")
        if not node:
            raise JoinTokenError("a join token is for one node: the node is empty")
        token = base64.urlsafe_b64encode(secret_bytes).rstrip(b"=").decode("ascii")
        digest = token_digest(token)
        if digest in self.records:  # only with repeated "random" bytes: never hand out a token twice
            raise JoinTokenError("these random bytes made a token that exists already")
        record = TokenRecord(node, now + ttl, None, now)
        return token, JoinTokens(frozen_map({**self.pruned(now).records, digest: record}))

    def check(self, token: str, node: str, now: float) -> Refusal | None:
        """What ``redeem`` would answer, without using the token: None if ``token`` is known, unused,
        unexpired and for ``node`` (the controller checks this before it does any work for the caller)."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return Refusal("unknown", "unknown join token")
        record = self.records.get(token_digest(token))
        if record is None:
            return Refusal("unknown", "unknown join token (never issued, or expired and forgotten)")
        if record.used_at is not None:
            return Refusal("used", f"join token already used (at {_when(record.used_at)})")
        if now >= record.expires_at:
            return Refusal("expired", f"join token expired (at {_when(record.expires_at)})")
        if record.node != node:
            return Refusal(
                "other-node", f"join token is for another node than {node!r}: refused, and the token is now burned"
            )
        return None

    def redeem(self, token: str, node: str, now: float) -> tuple[JoinTokens, Refusal | None]:
        """Present ``token`` for ``node`` at ``now``: (the records with it used, None) if it is accepted,
        else (records, why not). A token for another node is burned (see the module doc); a refused
        unknown, used or expired token changes nothing."""
        refusal = self.check(token, node, now)
        if refusal is not None and refusal.kind != "other-node":
            return self, refusal
        digest = token_digest(token)
        burned = JoinTokens(frozen_map({**self.records, digest: replace(self.records[digest], used_at=now)}))
        return burned, refusal

    def pruned(self, now: float) -> JoinTokens:
        """Without records past their expiry (used or not): a replay of one is then just "unknown"."""
        live = {digest: record for digest, record in self.records.items() if record.expires_at > now}
        return self if len(live) == len(self.records) else JoinTokens(frozen_map(live))

    def as_dict(self) -> dict[str, object]:
        return {
            "tokens": {
                digest: {"node": r.node, "expires_at": r.expires_at, "used_at": r.used_at, "minted_at": r.minted_at}
                for digest, r in sorted(self.records.items())
            }
        }

    @classmethod
    def from_dict(cls, data: object) -> JoinTokens:
        """The inverse of ``as_dict``; ``ValueError`` naming what is wrong."""
        if not isinstance(data, Mapping) or not isinstance(data.get("tokens"), Mapping):
            raise ValueError('join tokens: expected {"tokens": {sha256: record}}')
        records = {}
        for digest, raw in data["tokens"].items():
            if not isinstance(digest, str) or len(digest) != 64 or not isinstance(raw, Mapping):
                raise ValueError(f"join tokens: bad record {str(digest)[:70]!r}")
            used_at = raw.get("used_at")
            try:
                records[digest] = TokenRecord(
                    str(raw["node"]),
                    float(raw["expires_at"]),
                    None if used_at is None else float(used_at),
                    float(raw.get("minted_at", 0.0)),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"join tokens: bad record {digest[:12]}...: {exc!r}") from None
        return cls(frozen_map(records))


def _when(epoch_s: float) -> str:
    import datetime  # pure: formatting a given time, no clock

    return datetime.datetime.fromtimestamp(int(epoch_s), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
