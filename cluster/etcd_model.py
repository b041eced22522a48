"""The etcd client's plain values: endpoints parsed from URLs, keys, compares, operations and results (pure).

cluster/etcd.py turns these into etcd's protobuf messages; nothing here knows about gRPC, so the rules
(which URLs are accepted, which compare operators exist, what a prefix's range end is) are tested alone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_CLIENT_PORT = 2379
COMPARE_OPERATORS = ("=", "!=", "<", ">")


class EtcdError(Exception):
    """An etcd call failed; the message names the endpoints tried and why."""


class EtcdUnavailable(EtcdError):
    """No member answered in time (all down, no quorum, or the deadline passed)."""


class EtcdCompacted(EtcdError):
    """The revision asked for was compacted away; ``compact_revision`` is the oldest still kept (0: unknown)."""

    def __init__(self, compact_revision: int, message: str = "") -> None:
        self.compact_revision = compact_revision
        super().__init__(message or f"the revision asked for is compacted (oldest kept: {compact_revision})")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def parse_endpoint(text: str) -> Endpoint:
    """``http://host:port``, ``host:port`` or ``host`` (port 2379), IPv6 in brackets. TLS is not supported."""
    raw = text.strip()
    if not raw:
        raise ValueError("empty etcd endpoint")
    rest = raw
    if "://" in raw:
        scheme, rest = raw.split("://", 1)
        if scheme.lower() == "https":
            raise ValueError(f"etcd endpoint {raw!r}: https (TLS) is not supported; use http://")
        if scheme.lower() != "http":
            raise ValueError(f"etcd endpoint {raw!r}: unknown scheme {scheme!r}; use http://host:port")
    if rest.endswith("/"):
        rest = rest[:-1]
    if "/" in rest or "?" in rest or "#" in rest or "@" in rest:
        raise ValueError(f"etcd endpoint {raw!r}: only host:port is expected (no path, query or user)")
    if rest.startswith("["):
        host, sep, tail = rest[1:].partition("]")
        if not sep or not host:
            raise ValueError(f"etcd endpoint {raw!r}: unclosed '[' around an IPv6 address")
        port_text = tail[1:] if tail.startswith(":") else ""
        if tail and not tail.startswith(":"):
            raise ValueError(f"etcd endpoint {raw!r}: expected ':port' after ']'")
    elif rest.count(":") > 1:
        raise ValueError(f"etcd endpoint {raw!r}: write an IPv6 address in brackets, e.g. http://[::1]:2379")
    else:
        host, _, port_text = rest.partition(":")
        if not host:
            raise ValueError(f"etcd endpoint {raw!r}: no host")
    if port_text == "" and (rest.endswith(":")):
        raise ValueError(f"etcd endpoint {raw!r}: empty port")
    if port_text == "":
        port = DEFAULT_CLIENT_PORT
    else:
        if not port_text.isdigit():
            raise ValueError(f"etcd endpoint {raw!r}: port {port_text!r} is not a number")
        port = int(port_text)
        if not 0 < port < 65536:
            raise ValueError(f"etcd endpoint {raw!r}: port {port} is out of range 1-65535")
    return Endpoint(host, port)


def parse_endpoints(texts: Sequence[str]) -> tuple[Endpoint, ...]:
    if isinstance(texts, str):
        raise TypeError("endpoints must be a sequence of URLs, not one string (see EtcdClient.from_urls)")
    endpoints = tuple(parse_endpoint(t) for t in texts)
    if not endpoints:
        raise ValueError("no etcd endpoint given")
    if len(set(endpoints)) != len(endpoints):
        raise ValueError(f"etcd endpoints repeat: {', '.join(map(str, endpoints))}")
    return endpoints


def split_urls(text: str) -> list[str]:
    """``"http://a:1,http://b:2"`` -> the URLs; blanks around commas are ignored, empty items are an error."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise ValueError(
            f"etcd URLs {text!r}: expected a comma-separated list like http://10.0.0.1:2379,http://10.0.0.2:2379"
        )
    return parts


def prefix_end(prefix: bytes) -> bytes:
    """The range end that makes [prefix, end) every key starting with ``prefix`` (etcd's rule: last byte
    below 0xff incremented, trailing 0xff dropped; all-0xff or empty -> b"\\0", i.e. to the end of keys)."""
    trimmed = bytearray(prefix)
    while trimmed and trimmed[-1] == 0xFF:
        trimmed.pop()
    if not trimmed:
        return b"\0"
    trimmed[-1] += 1
    return bytes(trimmed)


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes):
        raise TypeError(f"etcd keys are bytes, got {type(key).__name__}")
    if not key:
        raise ValueError("etcd keys are not empty")


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "put" | "delete"
    kv: KeyValue


@dataclass(frozen=True)
class MemberStatus:
    endpoint: str
    member_id: int = 0
    leader_id: int = 0
    raft_term: int = 0
    db_size: int = 0
    version: str = ""
    error: str | None = None  # why this endpoint did not answer; None when it did


@dataclass(frozen=True)
class Compare:
    """One guard of a transaction: ``target`` of ``key`` compared with ``operand`` by ``op``
    (the field is not named ``value``: ``Compare.value(...)`` is a constructor)."""

    target: str  # "create_revision" | "mod_revision" | "value" | "version"
    key: bytes
    op: str
    operand: int | bytes

    def __post_init__(self) -> None:
        _check_key(self.key)
        if self.op not in COMPARE_OPERATORS:
            raise ValueError(f"compare operator {self.op!r} is not one of {', '.join(COMPARE_OPERATORS)}")
        if self.target == "value":
            if not isinstance(self.operand, bytes):
                raise TypeError(f"a value compare takes bytes, got {type(self.operand).__name__}")
        elif self.target in ("create_revision", "mod_revision", "version"):
            if not isinstance(self.operand, int) or isinstance(self.operand, bool):
                raise TypeError(f"a {self.target} compare takes an int, got {type(self.operand).__name__}")
        else:
            raise ValueError(f"unknown compare target {self.target!r}")

    @classmethod
    def create_revision(cls, key: bytes, op: str, value: int) -> Compare:
        """``Compare.create_revision(k, "=", 0)``: the key does not exist (create-only)."""
        return cls("create_revision", key, op, value)

    @classmethod
    def mod_revision(cls, key: bytes, op: str, value: int) -> Compare:
        return cls("mod_revision", key, op, value)

    @classmethod
    def value(cls, key: bytes, op: str, value: bytes) -> Compare:
        return cls("value", key, op, value)

    @classmethod
    def version(cls, key: bytes, op: str, value: int) -> Compare:
        return cls("version", key, op, value)


@dataclass(frozen=True)
class Op:
    """One operation of a transaction."""

    kind: str  # "put" | "delete" | "get"
    key: bytes
    value: bytes = b""
    lease: int = 0
    prefix: bool = False

    def __post_init__(self) -> None:
        _check_key(self.key)
        if self.kind not in ("put", "delete", "get"):
            raise ValueError(f"unknown operation {self.kind!r}")
        if not isinstance(self.value, bytes):
            raise TypeError(f"etcd values are bytes, got {type(self.value).__name__}")
        if self.lease < 0:
            raise ValueError(f"lease id {self.lease} is negative")

    @classmethod
    def put(cls, key: bytes, value: bytes, lease: int = 0) -> Op:
        return cls("put", key, value, lease)

    @classmethod
    def delete(cls, key: bytes, prefix: bool = False) -> Op:
        return cls("delete", key, prefix=prefix)

    @classmethod
    def get(cls, key: bytes, prefix: bool = False) -> Op:
        return cls("get", key, prefix=prefix)

    @property
    def range_end(self) -> bytes:
        return prefix_end(self.key) if self.prefix else b""


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    # One per operation of the branch taken: get -> list[KeyValue], put -> None, delete -> number deleted.
    responses: list[list[KeyValue] | int | None]


@dataclass(frozen=True)
class Member:
    member_id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False
