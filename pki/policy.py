"""PKI policy: SPIFFE names, certificate lifetimes, when to rotate, what is revoked. Pure.

No cryptography, no I/O, no clock: time comes in as ``now`` (seconds since the epoch) and randomness
as a value in [0, 1). The adapters (``pki/ca.py``, ``pki/verify.py``) turn these values into signed
certificates and back.

SPIFFE ids follow the SPIFFE-ID spec: ``spiffe://<trust-domain>[/<segment>...]`` where the trust
domain is lowercase letters, digits, ``.``, ``-`` and ``_`` (at most 255 bytes), with no userinfo,
port, query, fragment or percent-encoding; each path segment is non-empty, not ``.`` or ``..``, and
uses letters, digits, ``.``, ``-`` and ``_``; the whole id is at most 2048 bytes. An X.509-SVID leaf
needs a non-empty path.

Names edgectl gives (one identity per workload instance, so one compromised key is revoked alone):

=====================  ===========================================================
workload               ``spiffe://<td>/svc/<service>/w/<workload-id>``
client sidecar (host)  ``spiffe://<td>/host/<host-id>``    (what meshctl expects)
switch                 ``spiffe://<td>/switch/<dpid as 16 hex digits>``
controller             ``spiffe://<td>/controller/<name>``
compute node (agent)   ``spiffe://<td>/node/<node-id>``    (attested with a join token)
=====================  ===========================================================

Authorising "any instance of service S" is a prefix match on ``spiffe://<td>/svc/<S>/`` (see
``service_spiffe_prefix``): listeners need not change when a service scales.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from netmodel.ids import SpiffeId
from netmodel.types import frozen_map, map_with
from pki.errors import InvalidLifetime, InvalidSpiffeId, InvalidSubjectName, IssuerExpired, WrongTrustDomain

SCHEME = "spiffe://"
MAX_SPIFFE_ID_BYTES = 2048
MAX_TRUST_DOMAIN_BYTES = 255

DEFAULT_TTL_S = 3600
"""SVID lifetime unless asked otherwise: short, so a leaked key is worth little for long."""

MAX_TTL_S = 30 * 86400
"""Longest lifetime one may ask for (the OpenFlow listener's certificate, which os-ken loads once)."""

DEFAULT_BACKDATE_S = 10
"""not_before is set this far in the past so a peer whose clock is a little behind accepts the cert."""

DEFAULT_JITTER_FRACTION = 0.1
MAX_JITTER_FRACTION = 0.5

_TRUST_DOMAIN_CHARS = re.compile(r"[a-z0-9._-]+")
_SEGMENT_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_FIRST_BAD_TD_CHAR = re.compile(r"[^a-z0-9._-]")
_FIRST_BAD_SEGMENT_CHAR = re.compile(r"[^A-Za-z0-9._-]")


# -- SPIFFE ids ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpiffeIdParts:
    """A parsed, valid SPIFFE id. ``path`` is "" (the trust domain's own id) or starts with "/"."""

    trust_domain: str
    path: str

    @property
    def uri(self) -> SpiffeId:
        return SpiffeId(f"{SCHEME}{self.trust_domain}{self.path}")

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path[1:].split("/")) if self.path else ()

    def __str__(self) -> str:
        return self.uri


def validate_trust_domain(name: str) -> str:
    """Return ``name`` if it is a valid trust domain name, else raise ``InvalidSpiffeId``."""
    if not name:
        raise InvalidSpiffeId("trust domain is empty")
    if len(name.encode()) > MAX_TRUST_DOMAIN_BYTES:
        raise InvalidSpiffeId(f"trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes")
    if "@" in name:
        raise InvalidSpiffeId(f"trust domain {name!r} has userinfo ('@'): not allowed")
    if ":" in name:
        raise InvalidSpiffeId(f"trust domain {name!r} has a port (':'): not allowed")
    if not _TRUST_DOMAIN_CHARS.fullmatch(name):
        bad = _first_bad(_FIRST_BAD_TD_CHAR, name)
        raise InvalidSpiffeId(
            f"trust domain {name!r} has invalid character {bad!r} (lowercase letters, digits, '.', '-', '_' only)"
        )
    return name


def validate_path_segment(segment: str, what: str = "path segment") -> str:
    if not segment:
        raise InvalidSpiffeId(f"empty {what} (a '//' or a trailing '/')")
    if segment in (".", ".."):
        raise InvalidSpiffeId(f"{what} {segment!r} is a dot segment: not allowed")
    if not _SEGMENT_CHARS.fullmatch(segment):
        bad = _first_bad(_FIRST_BAD_SEGMENT_CHAR, segment)
        raise InvalidSpiffeId(f"{what} {segment!r} has invalid character {bad!r} (letters, digits, '.', '-', '_' only)")
    return segment


def parse_spiffe_id(text: str) -> SpiffeIdParts:
    """Parse and validate a SPIFFE id; raise ``InvalidSpiffeId`` naming the first rule it breaks."""
    if not isinstance(text, str):
        raise InvalidSpiffeId(f"a SPIFFE id is a string, not {type(text).__name__}")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SPIFFE_ID_BYTES:
        raise InvalidSpiffeId(f"SPIFFE id is longer than {MAX_SPIFFE_ID_BYTES} bytes")
    if not text.startswith(SCHEME):
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise InvalidSpiffeId(f"{shown!r} does not start with {SCHEME!r} (the scheme is lowercase 'spiffe')")
    if "?" in text:
        raise InvalidSpiffeId("a SPIFFE id has no query ('?')")
    if "#" in text:
        raise InvalidSpiffeId("a SPIFFE id has no fragment ('#')")
    if "%" in text:
        raise InvalidSpiffeId("a SPIFFE id has no percent-encoding ('%')")
    rest = text[len(SCHEME) :]
    slash = rest.find("/")
    trust_domain, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    if not trust_domain:
        raise InvalidSpiffeId("SPIFFE id has no trust domain")
    validate_trust_domain(trust_domain)
    if path:
        for segment in path[1:].split("/"):
            validate_path_segment(segment)
    return SpiffeIdParts(trust_domain, path)


def parse_leaf_spiffe_id(text: str, trust_domain: str | None = None) -> SpiffeIdParts:
    """A SPIFFE id fit for an X.509-SVID leaf: valid, with a path, and (if given) in ``trust_domain``."""
    parts = parse_spiffe_id(text)
    if not parts.path:
        raise InvalidSpiffeId(f"{text} names a trust domain, not a workload (an SVID needs a path)")
    if trust_domain is not None and parts.trust_domain != trust_domain:
        raise WrongTrustDomain(f"{text} is in trust domain {parts.trust_domain!r}, not {trust_domain!r}")
    return parts


def trust_domain_id(trust_domain: str) -> SpiffeId:
    """The id of the trust domain itself (what a signing certificate carries: no path)."""
    return SpiffeId(SCHEME + validate_trust_domain(trust_domain))


def _named(trust_domain: str, *segments: tuple[str, str]) -> SpiffeId:
    validate_trust_domain(trust_domain)
    path = "".join("/" + validate_path_segment(value, what) for value, what in segments)
    return SpiffeId(f"{SCHEME}{trust_domain}{path}")


def workload_spiffe_id(trust_domain: str, service: str, workload: str) -> SpiffeId:
    return _named(trust_domain, ("svc", "kind"), (service, "service name"), ("w", "kind"), (workload, "workload id"))


def service_spiffe_prefix(trust_domain: str, service: str) -> str:
    """Every workload id of ``service`` starts with this (for prefix SAN matchers)."""
    return _named(trust_domain, ("svc", "kind"), (service, "service name")) + "/"


def service_of(spiffe_id: str) -> str | None:
    """The service a workload SPIFFE id names, or None if it is not a workload id."""
    try:
        segments = parse_spiffe_id(spiffe_id).segments
    except InvalidSpiffeId:
        return None
    if len(segments) == 4 and segments[0] == "svc" and segments[2] == "w":
        return segments[1]
    return None


def host_spiffe_id(trust_domain: str, host: str) -> SpiffeId:
    return _named(trust_domain, ("host", "kind"), (host, "host id"))


def switch_spiffe_id(trust_domain: str, dpid: int) -> SpiffeId:
    if not 0 <= dpid < 1 << 64:
        raise InvalidSpiffeId(f"datapath id {dpid} is not a 64-bit unsigned integer")
    return _named(trust_domain, ("switch", "kind"), (f"{dpid:016x}", "datapath id"))


def node_spiffe_id(trust_domain: str, node: str) -> SpiffeId:
    """A compute node's identity: what its node agent holds once attested with a join token."""
    return _named(trust_domain, ("node", "kind"), (node, "node id"))


def node_of(spiffe_id: str, trust_domain: str) -> str | None:
    """The compute node a node SVID of ``trust_domain`` names, or None if ``spiffe_id`` is not one."""
    try:
        parts = parse_spiffe_id(spiffe_id)
    except InvalidSpiffeId:
        return None
    segments = parts.segments
    if parts.trust_domain != trust_domain or len(segments) != 2 or segments[0] != "node":
        return None
    return segments[1]


def controller_spiffe_id(trust_domain: str, name: str = "edgectl") -> SpiffeId:
    return _named(trust_domain, ("controller", "kind"), (name, "controller name"))


def operator_spiffe_id(trust_domain: str, name: str) -> SpiffeId:
    """A person or tool using the controller's APIs (``edgectl place --tls-*``)."""
    return _named(trust_domain, ("operator", "kind"), (name, "operator name"))


# -- issuance --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuancePolicy:
    """How this CA issues: for which trust domain, for how long, how far to backdate, how to jitter."""

    trust_domain: str
    ttl_s: int = DEFAULT_TTL_S
    max_ttl_s: int = MAX_TTL_S
    backdate_s: int = DEFAULT_BACKDATE_S
    jitter_fraction: float = DEFAULT_JITTER_FRACTION
    organization: str = "edgectl"

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        if self.max_ttl_s <= 0:
            raise InvalidLifetime(f"max_ttl_s must be positive, not {self.max_ttl_s}")
        check_ttl(self.ttl_s, self.max_ttl_s)
        if self.backdate_s < 0:
            raise InvalidLifetime(f"backdate_s must not be negative, not {self.backdate_s}")
        if not 0.0 <= self.jitter_fraction <= MAX_JITTER_FRACTION:
            raise InvalidLifetime(f"jitter_fraction must be in [0, {MAX_JITTER_FRACTION}], not {self.jitter_fraction}")


def check_ttl(ttl_s: int, max_ttl_s: int = MAX_TTL_S) -> int:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int):
        raise InvalidLifetime(f"a TTL is a whole number of seconds, not {ttl_s!r}")
    if ttl_s <= 0:
        raise InvalidLifetime(f"TTL must be positive, not {ttl_s} s")
    if ttl_s > max_ttl_s:
        raise InvalidLifetime(f"TTL {ttl_s} s is longer than the allowed {max_ttl_s} s")
    return ttl_s


@dataclass(frozen=True, slots=True)
class CertTemplate:
    """Everything a leaf certificate says, before a key and a signature make it one."""

    spiffe_id: SpiffeId
    subject: tuple[tuple[str, str], ...]
    """(attribute, value) pairs with OpenSSL's short names ("O", "CN"), in order."""
    not_before: int
    not_after: int
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()

    @property
    def lifetime_s(self) -> int:
        return self.not_after - self.not_before


MAX_COMMON_NAME = 64  # RFC 5280 upper bound (ub-common-name)


def template_for(
    spiffe_id: str,
    policy: IssuancePolicy,
    now: float,
    issuer_not_after: int,
    *,
    issuer_not_before: int | None = None,
    ttl_s: int | None = None,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str] = (),
) -> CertTemplate:
    """The leaf certificate for ``spiffe_id`` issued at ``now``.

    Lifetime: ``ttl_s`` (default: the policy's), never past the issuer's own ``not_after`` (a leaf that
    outlives its issuer stops verifying when the issuer expires, so it would only pretend to live
    longer). Backdated by the policy's ``backdate_s`` but at most a tenth of the TTL, so short test TTLs
    still rotate at about half of their real life; never before the issuer's ``not_before``.
    """
    parts = parse_leaf_spiffe_id(spiffe_id, policy.trust_domain)
    ttl = check_ttl(policy.ttl_s if ttl_s is None else ttl_s, policy.max_ttl_s)
    now_s = int(now)
    if issuer_not_after <= now_s:
        raise IssuerExpired(f"the issuing CA expired at {_utc(issuer_not_after)} (now {_utc(now_s)}): renew the CA")
    not_before = now_s - min(policy.backdate_s, ttl // 10)
    if issuer_not_before is not None:
        not_before = max(not_before, issuer_not_before)
    not_after = min(now_s + ttl, issuer_not_after)
    ips = tuple(_valid_ip(ip) for ip in ip_addresses)
    dns = tuple(_valid_dns_name(name) for name in dns_names)
    common_name = parts.segments[-1][:MAX_COMMON_NAME]
    return CertTemplate(
        spiffe_id=parts.uri,
        subject=(("O", policy.organization), ("CN", common_name)),
        not_before=not_before,
        not_after=not_after,
        dns_names=dns,
        ip_addresses=ips,
    )


def _valid_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidSubjectName(f"{text!r} is not an IP address") from None


_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _valid_dns_name(name: str) -> str:
    labels = name.rstrip(".").split(".")
    if not name or len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise InvalidSubjectName(f"{name!r} is not a DNS name")
    return name


# -- rotation --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What the policy needs to know of an issued certificate."""

    spiffe_id: SpiffeId
    serial: int
    not_before: int
    not_after: int

    @property
    def lifetime_s(self) -> int:
        return self.not_after - self.not_before


def rotation_time(info: CertInfo, jitter_fraction: float, rng_value: float) -> float:
    """When to replace ``info``: at half-life, brought forward by up to ``jitter_fraction`` of half a life.

    Never later than half-life, so a certificate always has at least half its life left when its
    successor is made; the jitter spreads rotations of certificates issued together (after a restart or a
    scale-out) so they do not all come due in the same second. ``rng_value`` in [0, 1) picks the point
    in that window; pass the same value for the same certificate (see ``serial_jitter``) so the answer
    does not move between checks.
    """
    if not 0.0 <= jitter_fraction <= MAX_JITTER_FRACTION:
        raise InvalidLifetime(f"jitter_fraction must be in [0, {MAX_JITTER_FRACTION}], not {jitter_fraction}")
    if not 0.0 <= rng_value < 1.0:
        raise ValueError(f"rng_value must be in [0, 1), not {rng_value}")
    half = info.lifetime_s / 2
    return info.not_before + half - jitter_fraction * half * rng_value


def due_for_rotation(info: CertInfo, now: float, jitter_fraction: float, rng_value: float) -> bool:
    return now >= rotation_time(info, jitter_fraction, rng_value)


def serial_jitter(info: CertInfo) -> float:
    """A value in [0, 1) fixed for one certificate: its (random, 159-bit) serial number, folded.

    Drawing a fresh random number at every check would re-roll the rotation time on each tick and pull
    rotations towards the start of the jitter window; a per-certificate value keeps the window uniform.
    """
    return (info.serial % 1_000_003) / 1_000_003


def expired(info: CertInfo, now: float) -> bool:
    return now >= info.not_after


FORCED_ROTATION_INTERVAL_S = 30.0
"""An identity is force-rotated (compromised key) at most this often: each forced rotation revokes
certificates that have not expired yet, so with it the revocation list holds at most about
``svid TTL / interval + 1`` serials per identity, however often a rotation is asked for."""


def forced_rotation_wait(last_forced_at: float | None, now: float, min_interval_s: float) -> float:
    """Seconds until an identity last force-rotated at ``last_forced_at`` may be again (0.0: now)."""
    if last_forced_at is None:
        return 0.0
    return max(0.0, last_forced_at + min_interval_s - now)


# -- revocation ------------------------------------------------------------------------------------


PRUNE_DELAY_S = 300.0
"""An expired certificate leaves the revocation list with its next change, or once it has been expired
this long (``RevocationList.prune_due``): a new list is a new CRL, which every sidecar is sent with its
trust bundle, so expiries are not each a push to the whole fleet (nor a walk of the list per change)."""


@dataclass(frozen=True, slots=True)
class RevocationList:
    """Revoked certificates (serial -> its not_after) and revoked identities. An immutable value.

    A revoked certificate is listed only until it expires (after that every verifier refuses it anyway),
    so ``pruned(now)`` keeps the list short. A revoked identity is refused whatever certificate it shows,
    and no new certificate is issued for it until it is restored.
    """

    serials: Mapping[int, int] = field(default_factory=frozen_map)
    identities: frozenset[str] = frozenset()
    _earliest: float | None = field(default=None, init=False, compare=False, repr=False)
    """The earliest not_after of ``serials`` (inf: none), once ``prune_due`` has asked."""

    def revoke_certificate(self, info: CertInfo) -> RevocationList:
        if self.serials.get(info.serial) == info.not_after:
            return self
        return RevocationList(map_with(self.serials, info.serial, info.not_after), self.identities)

    def revoke_certificates(self, infos: Iterable[CertInfo]) -> RevocationList:
        result = self
        for info in infos:
            result = result.revoke_certificate(info)
        return result

    def revoke_identity(self, spiffe_id: str) -> RevocationList:
        parse_spiffe_id(spiffe_id)
        if spiffe_id in self.identities:
            return self
        return RevocationList(self.serials, self.identities | {spiffe_id})

    def restore_identity(self, spiffe_id: str) -> RevocationList:
        if spiffe_id not in self.identities:
            return self
        return RevocationList(self.serials, self.identities - {spiffe_id})

    def reason_revoked(self, serial: int, spiffe_id: str) -> str | None:
        """Why a certificate with this serial and id is refused, or None if it is not revoked."""
        if spiffe_id in self.identities:
            return f"identity {spiffe_id} is revoked"
        if serial in self.serials:
            return f"certificate serial {serial:x} of {spiffe_id} is revoked"
        return None

    def prune_due(self, now: float, delay_s: float = PRUNE_DELAY_S) -> bool:
        """A listed certificate expired ``delay_s`` ago or more (O(1) after the first call on this list)."""
        if self._earliest is None:
            object.__setattr__(self, "_earliest", min(self.serials.values(), default=float("inf")))
        return self._earliest + delay_s <= now  # type: ignore[operator]

    def pruned(self, now: float) -> RevocationList:
        live = {serial: not_after for serial, not_after in self.serials.items() if not_after > now}
        if len(live) == len(self.serials):
            return self
        return RevocationList(frozen_map(live), self.identities)

    def as_dict(self) -> dict[str, object]:
        return {
            "serials": {format(serial, "x"): not_after for serial, not_after in sorted(self.serials.items())},
            "identities": sorted(self.identities),
        }

    @classmethod
    def from_dict(cls, data: object) -> RevocationList:
        """From ``as_dict``'s shape; raises ``ValueError`` saying what is wrong with any other."""
        if not isinstance(data, Mapping):
            raise ValueError(f"revocation list: expected an object, not {type(data).__name__}")
        raw_serials = data.get("serials", {})
        raw_identities = data.get("identities", [])
        if not isinstance(raw_serials, Mapping) or not isinstance(raw_identities, list):
            raise ValueError("revocation list: 'serials' must be an object and 'identities' a list")
        serials: dict[int, int] = {}
        for serial, not_after in raw_serials.items():
            if not isinstance(not_after, int) or isinstance(not_after, bool):
                raise ValueError(f"revocation list: serial {serial!r}: its expiry is not an integer: {not_after!r}")
            try:
                serials[int(str(serial), 16)] = not_after
            except ValueError:
                raise ValueError(f"revocation list: {serial!r} is not a hexadecimal serial") from None
        identities = frozenset(str(parse_spiffe_id(str(spiffe_id))) for spiffe_id in raw_identities)
        return cls(frozen_map(serials), identities)


def merge_revocations(base: RevocationList, ours: RevocationList, theirs: RevocationList) -> RevocationList:
    """Two revocation lists that each changed since ``base`` (a controller's, and the one kept in the CA
    directory or etcd that another writer changed: ``pki rotate --dir``, another replica), as one.

    A serial revoked on either side stays revoked (nothing un-revokes a certificate; expiry prunes it).
    An identity is as ``theirs`` has it, except where ``ours`` revoked or restored it since ``base``."""
    if theirs is base or theirs == base:
        return ours
    # Our map whenever theirs adds nothing to it: the CRL is signed anew only when its serials change.
    serials: Mapping[int, int] = ours.serials
    if not theirs.serials.keys() <= ours.serials.keys():
        serials = frozen_map({**theirs.serials, **ours.serials})
    identities = (theirs.identities - (base.identities - ours.identities)) | (ours.identities - base.identities)
    if serials is ours.serials and identities == ours.identities:
        return ours
    return RevocationList(serials, identities)


# -- issued identities -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Svid:
    """An issued X.509-SVID as PEM text: the leaf and its intermediates, and (when the CA made the key)
    the private key. ``private_key_pem`` is "" when the SVID was issued from a CSR: the key stayed with
    its owner."""

    spiffe_id: SpiffeId
    cert_chain_pem: str
    info: CertInfo
    private_key_pem: str = field(default="", repr=False)


def _utc(epoch_s: int) -> str:
    return datetime.datetime.fromtimestamp(epoch_s, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _first_bad(pattern: re.Pattern[str], text: str) -> str:
    match = pattern.search(text)
    return match.group(0) if match else "?"
