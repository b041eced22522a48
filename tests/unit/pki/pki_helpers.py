"""Shared by the pki unit tests: a fixed clock, a fake issuer (no cryptography), and a forger of bad
certificates signed by a real CA (to prove the verifier refuses each broken rule with its reason)."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from netmodel.ids import SpiffeId
from pki.errors import IssuerExpired
from pki.policy import CertInfo, IssuancePolicy, Svid, template_for

NOW = 1_800_000_000.0
"""A fixed 'now' (2027-01-15): tests never read the wall clock unless they say so."""

TD = "example.org"


@dataclass
class FakeIssuer:
    """Issues ``Svid`` values from the pure template, with sequential serials: no keys, no signatures."""

    policy: IssuancePolicy = field(default_factory=lambda: IssuancePolicy(TD))
    not_after: int = int(NOW) + 365 * 86400
    bundle_pem: str = "BUNDLE"
    serials: Any = field(default_factory=lambda: itertools.count(1000))
    issued: list[tuple[str, float]] = field(default_factory=list)
    fail_for: set[str] = field(default_factory=set)

    def issue_with_new_key(self, spiffe_id: str, now: float) -> Svid:
        if spiffe_id in self.fail_for:
            raise IssuerExpired("the issuing CA expired (fake)")
        template = template_for(spiffe_id, self.policy, now, self.not_after)
        serial = next(self.serials)
        self.issued.append((spiffe_id, now))
        info = CertInfo(SpiffeId(template.spiffe_id), serial, template.not_before, template.not_after)
        return Svid(info.spiffe_id, f"CHAIN {serial}", info, f"KEY {serial}")


def utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(epoch), dt.UTC)


LEAF_USAGE = dict(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)

_DEFAULT = object()


def forge_leaf(
    issuer_cert: x509.Certificate,
    issuer_key: Any,
    *,
    uris: Sequence[str] = ("spiffe://example.org/svc/web/w/web-1",),
    ca: bool = False,
    key_usage: dict[str, bool] | object | None = _DEFAULT,
    eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    not_before: float = NOW - 60,
    not_after: float = NOW + 3600,
    serial: int | None = None,
) -> x509.Certificate:
    """A leaf signed by ``issuer_key``, breaking whichever SVID rule the arguments say."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")]))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(utc(not_before))
        .not_valid_after(utc(not_after))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    usage = LEAF_USAGE if key_usage is _DEFAULT else key_usage
    if usage is not None:
        builder = builder.add_extension(x509.KeyUsage(**usage), critical=True)  # type: ignore[arg-type]
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def make_csr(uris: Sequence[str] = (), key: Any = None, common_name: str = "whoever") -> tuple[bytes, Any]:
    """A PKCS#10 request (PEM) for ``key`` (a new P-256 key by default) asking for ``uris``."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=False
        )
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM), key
