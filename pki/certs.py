"""X.509 building and reading with ``cryptography``: templates in, signed certificates and PEM out.

Adapter. ``LeafSigner`` builds the parts every leaf from one issuer shares (issuer name, authority key
id, the SVID extensions) once, so issuing is keygen (optional) + one signature; the benchmark measures
what that buys.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from netmodel.ids import SpiffeId
from pki.errors import MalformedCertificate
from pki.policy import CertInfo, CertTemplate

CURVE = ec.SECP256R1()
SIGNATURE_HASH = hashes.SHA256()

_NAME_OIDS = {
    "C": NameOID.COUNTRY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
}

# SPIFFE X.509-SVID, section 4: a leaf is no CA, signs (digitalSignature only: keyEncipherment is an
# RSA key-transport use that ECDSA keys never have), and may act as TLS server and client.
LEAF_BASIC_CONSTRAINTS = x509.BasicConstraints(ca=False, path_length=None)
LEAF_KEY_USAGE = x509.KeyUsage(
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
LEAF_EXTENDED_KEY_USAGE = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def to_datetime(epoch_s: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC)


def to_epoch(moment: dt.datetime) -> int:
    return int(moment.timestamp())


def format_time(epoch_s: float) -> str:
    return to_datetime(int(epoch_s)).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(CURVE)


def private_key_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def load_pem_chain(data: bytes | str, what: str = "certificate chain") -> list[x509.Certificate]:
    """Every certificate in a PEM text, leaf first; ``MalformedCertificate`` if there is none or one is bad."""
    raw = data.encode() if isinstance(data, str) else data
    if b"-----BEGIN CERTIFICATE-----" not in raw:
        raise MalformedCertificate(f"the {what} holds no PEM certificate ('-----BEGIN CERTIFICATE-----')")
    try:
        return x509.load_pem_x509_certificates(raw)
    except ValueError as exc:
        raise MalformedCertificate(f"the {what} is not valid PEM X.509: {exc}") from None


def uri_sans(cert: x509.Certificate) -> list[str]:
    """The URI SANs of a certificate; ``MalformedCertificate`` if its SAN extension does not parse."""
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    except ValueError as exc:
        raise MalformedCertificate(f"the certificate's extensions do not parse: {exc}") from None
    return list(extension.value.get_values_for_type(x509.UniformResourceIdentifier))


def cert_info(cert: x509.Certificate, spiffe_id: str) -> CertInfo:
    return CertInfo(
        spiffe_id=SpiffeId(spiffe_id),
        serial=cert.serial_number,
        not_before=to_epoch(cert.not_valid_before_utc),
        not_after=to_epoch(cert.not_valid_after_utc),
    )


def describe_name(name: x509.Name) -> str:
    return name.rfc4514_string() or "<empty name>"


def build_name(pairs: Sequence[tuple[str, str]]) -> x509.Name:
    return x509.Name([x509.NameAttribute(_NAME_OIDS[attribute], value) for attribute, value in pairs])


def build_ca_certificate(
    *,
    common_name: str,
    trust_domain_id: str,
    public_key: PublicKey,
    signing_key: PrivateKey,
    issuer: x509.Certificate | None,
    not_before: int,
    not_after: int,
    path_length: int | None,
    organization: str = "edgectl",
) -> x509.Certificate:
    """A signing certificate: self-signed when ``issuer`` is None. Carries the trust domain's SPIFFE id
    (no path), as X.509-SVID section 3.2 recommends for signing certificates."""
    subject = build_name([("O", organization), ("CN", common_name)])
    issuer_key = issuer.public_key() if issuer is not None else public_key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(to_datetime(not_before))
        .not_valid_after(to_datetime(not_after))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(trust_domain_id)]), critical=False)
    )
    return builder.sign(signing_key, SIGNATURE_HASH)


class LeafSigner:
    """Signs leaf templates for one issuer. Not thread-bound: the precomputed parts are immutable."""

    def __init__(self, issuer: x509.Certificate, issuer_key: PrivateKey) -> None:
        self.issuer = issuer
        self._issuer_key = issuer_key
        self._issuer_name = issuer.subject
        self._authority_key_id = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
        self._names: dict[tuple[tuple[str, str], ...], x509.Name] = {}

    def sign(self, template: CertTemplate, public_key: Any, serial: int | None = None) -> x509.Certificate:
        subject = self._names.get(template.subject)
        if subject is None:
            subject = build_name(template.subject)
            if len(self._names) < 4096:  # few distinct subjects in practice; bound it anyway
                self._names[template.subject] = subject
        san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(template.spiffe_id)]
        san += [x509.DNSName(name) for name in template.dns_names]
        san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in template.ip_addresses]
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._issuer_name)
            .public_key(public_key)
            .serial_number(serial if serial is not None else x509.random_serial_number())
            .not_valid_before(to_datetime(template.not_before))
            .not_valid_after(to_datetime(template.not_after))
            .add_extension(LEAF_BASIC_CONSTRAINTS, critical=True)
            .add_extension(LEAF_KEY_USAGE, critical=True)
            .add_extension(LEAF_EXTENDED_KEY_USAGE, critical=False)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self._authority_key_id, critical=False)
        )
        return builder.sign(self._issuer_key, SIGNATURE_HASH)


def describe_public_key(key: Any) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    return type(key).__name__.removeprefix("_").replace("PublicKey", "") or "unknown"


ACCEPTED_CURVES = ("secp256r1", "secp384r1")
MIN_RSA_BITS = 2048


def key_refusal(key: Any) -> str | None:
    """Why a subject public key is not accepted for an SVID, or None. Envoy (BoringSSL) and OVS (OpenSSL)
    both handle ECDSA P-256/P-384 and RSA; short RSA keys are not worth a signature."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name in ACCEPTED_CURVES:
            return None
        return f"the key is ECDSA on {key.curve.name}; only P-256 and P-384 are accepted"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size >= MIN_RSA_BITS:
            return None
        return f"the key is RSA-{key.key_size}; at least {MIN_RSA_BITS} bits are required"
    return f"the key is {describe_public_key(key)}; only ECDSA P-256/P-384 and RSA >= {MIN_RSA_BITS} are accepted"
