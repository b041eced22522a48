"""Verifying X.509-SVIDs: the SPIFFE leaf rules, the validity window, the chain, revocation.

Adapter (``cryptography``). ``verify_svid`` checks in an order chosen so that the reason given is the
one a person needs ("expired", "foreign CA", "wrong trust domain") rather than a generic "path
validation failed"; the final word on the chain is cryptography's RFC 5280 verifier.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from netmodel.ids import SpiffeId
from pki import certs
from pki.errors import (
    BadKeyUsage,
    CertificateExpired,
    CertificateNotYetValid,
    ForeignTrustDomain,
    InvalidSpiffeId,
    LeafIsCa,
    MalformedCertificate,
    NotAnSvid,
    Revoked,
    UntrustedChain,
)
from pki.policy import RevocationList, SpiffeIdParts, parse_leaf_spiffe_id, parse_spiffe_id

MAX_CHAIN_DEPTH = 4
_PURPOSE_NAMES = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}


@dataclass(frozen=True)
class TrustBundle:
    """The roots a verifier trusts, and the trust domain they speak for (None: take the leaf's)."""

    roots: tuple[x509.Certificate, ...]
    trust_domain: str | None = None

    @classmethod
    def from_pem(cls, pem: bytes | str, trust_domain: str | None = None) -> TrustBundle:
        """Read a PEM bundle. The trust domain, unless given, is the SPIFFE id the roots carry."""
        roots = tuple(certs.load_pem_chain(pem, "trust bundle"))
        if trust_domain is None:
            domains = {_trust_domain_of(root) for root in roots} - {None}
            if len(domains) == 1:
                trust_domain = domains.pop()
        return cls(roots, trust_domain)

    @property
    def pem(self) -> str:
        return "".join(certs.cert_pem(root) for root in self.roots)

    def store(self) -> verification.Store:
        return verification.Store(list(self.roots))


def _trust_domain_of(cert: x509.Certificate) -> str | None:
    try:
        sans = certs.uri_sans(cert)
    except MalformedCertificate:
        return None
    for uri in sans:
        try:
            return parse_spiffe_id(uri).trust_domain
        except InvalidSpiffeId:
            continue
    return None


def check_leaf_profile(leaf: x509.Certificate) -> SpiffeIdParts:
    """The X.509-SVID leaf rules (sections 2, 3.1, 4, 5.2); return the SPIFFE id or raise why not."""
    uris = certs.uri_sans(leaf)
    if not uris:
        raise NotAnSvid("the certificate has no URI SAN: it is not an X.509-SVID")
    if len(uris) > 1:
        raise NotAnSvid(f"the certificate has {len(uris)} URI SANs ({', '.join(uris)}); an SVID has exactly one")
    try:
        parts = parse_leaf_spiffe_id(uris[0])
    except InvalidSpiffeId as exc:
        raise NotAnSvid(f"the URI SAN is not a workload SPIFFE id: {exc}") from None
    extensions = _extensions(leaf)
    try:
        basic = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        basic = None
    if basic is not None and basic.ca:
        raise LeafIsCa(f"the certificate of {parts.uri} is a CA certificate (CA:true); a leaf SVID must not be")
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        raise BadKeyUsage(f"the certificate of {parts.uri} has no key usage extension (an SVID must)") from None
    if not usage.value.digital_signature:
        raise BadKeyUsage(f"the certificate of {parts.uri} lacks key usage digitalSignature")
    if usage.value.key_cert_sign or usage.value.crl_sign:
        raise BadKeyUsage(f"the certificate of {parts.uri} may sign certificates or CRLs; a leaf SVID must not")
    try:
        purposes = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        purposes = None
    if purposes is not None:
        missing = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} - set(purposes)
        if missing:
            names = ", ".join(sorted(_PURPOSE_NAMES[oid] for oid in missing))
            raise BadKeyUsage(f"the certificate of {parts.uri} lacks extended key usage {names}")
    return parts


def peer_spiffe_id(cert_pem: bytes | str) -> SpiffeId:
    """The SPIFFE id of a peer certificate a TLS stack has already verified (e.g. gRPC's
    ``context.auth_context()["x509_pem_cert"][0]``): the leaf rules only, no chain. Raises
    ``SvidRejected`` (e.g. ``NotAnSvid``) with the reason."""
    return check_leaf_profile(certs.load_pem_chain(cert_pem, "peer certificate")[0]).uri


def _extensions(cert: x509.Certificate) -> x509.Extensions:
    try:
        return cert.extensions
    except ValueError as exc:
        raise MalformedCertificate(f"the certificate's extensions do not parse: {exc}") from None


def verify_svid(
    chain: bytes | str | Sequence[x509.Certificate],
    bundle: TrustBundle,
    now: float,
    *,
    revocations: RevocationList | None = None,
    trust_domain: str | None = None,
) -> SpiffeId:
    """Verify an X.509-SVID chain (leaf first, then intermediates) against ``bundle`` at ``now``.

    Returns the SPIFFE id; raises an ``SvidRejected`` subclass whose message says why not: malformed,
    not an SVID (URI SAN count, CA:true, key usage), not yet valid / expired (leaf or intermediate),
    wrong trust domain, a chain that does not lead to the bundle (foreign CA, bad signature), revoked.
    """
    presented = certs.load_pem_chain(chain) if isinstance(chain, bytes | str) else list(chain)
    if not presented:
        raise MalformedCertificate("the certificate chain is empty")
    leaf, intermediates = presented[0], presented[1:]
    parts = check_leaf_profile(leaf)
    for position, cert in enumerate(presented):
        _check_validity(cert, now, parts.uri if position == 0 else None)
    expected = trust_domain or bundle.trust_domain
    if expected is not None and parts.trust_domain != expected:
        raise ForeignTrustDomain(f"{parts.uri} is in trust domain {parts.trust_domain!r}, not {expected!r}")
    moment = dt.datetime.fromtimestamp(int(now), dt.UTC)
    verifier = (
        verification.PolicyBuilder()
        .store(bundle.store())
        .time(moment)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, intermediates)
    except verification.VerificationError as exc:
        # The verifier's message ("candidates exhausted") rarely says which link broke: find it.
        _explain_broken_chain(presented, bundle)
        raise UntrustedChain(f"the chain of {parts.uri} fails RFC 5280 path validation: {exc}") from None
    if revocations is not None:
        reason = revocations.reason_revoked(leaf.serial_number, parts.uri)
        if reason is not None:
            raise Revoked(reason)
    return parts.uri


def _check_validity(cert: x509.Certificate, now: float, spiffe_id: str | None) -> None:
    what = f"the certificate of {spiffe_id}" if spiffe_id else f"CA certificate {certs.describe_name(cert.subject)!r}"
    not_before = certs.to_epoch(cert.not_valid_before_utc)
    not_after = certs.to_epoch(cert.not_valid_after_utc)
    if now < not_before:
        raise CertificateNotYetValid(
            f"{what} is not valid before {certs.format_time(not_before)} (now {certs.format_time(now)})"
        )
    if now >= not_after:
        raise CertificateExpired(f"{what} expired at {certs.format_time(not_after)} (now {certs.format_time(now)})")


def _explain_broken_chain(presented: Sequence[x509.Certificate], bundle: TrustBundle) -> None:
    """Follow issuer names from the leaf to a bundle root; raise ``UntrustedChain`` saying where it breaks.

    Runs only after the RFC 5280 verifier refused, to name the reason; returns if every link looks fine
    (then the verifier's own message is given). A name match whose signature
    does not verify is reported as such (a CA that copies a trusted CA's name is still foreign).
    """
    current = presented[0]
    candidates = list(presented[1:])
    for _ in range(MAX_CHAIN_DEPTH + 1):
        for root in bundle.roots:
            if root.subject == current.issuer and _signed_by(current, root):
                return
        issuer = next((c for c in candidates if c.subject == current.issuer and c is not current), None)
        name = certs.describe_name(current.issuer)
        label = _label(current, leaf=current is presented[0])
        if issuer is None:
            if any(root.subject == current.issuer for root in bundle.roots):
                raise UntrustedChain(
                    f"the signature on {label} does not verify against the trusted root {name!r} "
                    "(a foreign CA using the same name?)"
                )
            where = f"trust bundle of {bundle.trust_domain}" if bundle.trust_domain else "trust bundle"
            raise UntrustedChain(
                f"{label} is issued by {name!r}, which is neither in the presented chain nor in the "
                f"{where} (a foreign CA?)"
            )
        if not _signed_by(current, issuer):
            raise UntrustedChain(f"the signature on {label} does not verify against {name!r}")
        candidates.remove(issuer)
        current = issuer
    raise UntrustedChain(f"the chain is longer than {MAX_CHAIN_DEPTH} certificates")


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _label(cert: x509.Certificate, leaf: bool) -> str:
    if leaf:
        try:
            uris = certs.uri_sans(cert)
        except MalformedCertificate:
            uris = []
        if len(uris) == 1:
            return f"the certificate of {uris[0]}"
    return f"CA certificate {certs.describe_name(cert.subject)!r}"
