"""Every bad input is refused with a clear, one-line reason: malformed or lying CSRs, expired or
foreign-CA certificates, wrong SANs, CA leaves, revoked certificates."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from pki.ca import CertificateAuthority
from pki.errors import (
    BadKeyUsage,
    CertificateExpired,
    CertificateNotYetValid,
    CsrRejected,
    ForeignTrustDomain,
    LeafIsCa,
    MalformedCertificate,
    NotAnSvid,
    PkiError,
    Revoked,
    SvidRejected,
    UntrustedChain,
)
from pki.policy import RevocationList
from pki.verify import TrustBundle, verify_svid
from tests.unit.pki.pki_helpers import LEAF_USAGE, NOW, TD, forge_leaf, make_csr, pem

WEB1 = "spiffe://example.org/svc/web/w/web-1"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(TD, now=NOW)[0]


@pytest.fixture(scope="module")
def impostor() -> CertificateAuthority:
    """Another CA with the very same names and trust domain: only its keys differ."""
    return CertificateAuthority.create(TD, now=NOW)[0]


def one_line(exc: pytest.ExceptionInfo[PkiError]) -> str:
    message = str(exc.value)
    assert message and "\n" not in message and "Traceback" not in message
    return message


# -- CSRs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",
        b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64 at all\n-----END CERTIFICATE REQUEST-----\n",
        "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
        b"\x30\x82\x01\x00garbage",
    ],
)
def test_malformed_csr(ca: CertificateAuthority, data: bytes | str) -> None:
    with pytest.raises(CsrRejected) as caught:
        ca.issue_from_csr(data, WEB1, NOW)
    assert "malformed CSR" in one_line(caught)


def test_csr_with_a_broken_signature(ca: CertificateAuthority) -> None:
    csr_pem, _ = make_csr(uris=[WEB1])
    der = bytearray(x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the ECDSA signature's s value: still DER, no longer a valid signature
    with pytest.raises(CsrRejected) as caught:
        ca.issue_from_csr(bytes(der), WEB1, NOW)
    assert one_line(caught) == "the CSR's signature does not verify: it was not signed by the key it carries"


def test_csr_for_another_trust_domain(ca: CertificateAuthority) -> None:
    csr_pem, _ = make_csr(uris=["spiffe://evil.org/svc/web/w/web-1"])
    with pytest.raises(CsrRejected) as caught:
        ca.issue_from_csr(csr_pem, WEB1, NOW)
    assert one_line(caught) == (
        "the CSR asks for spiffe://evil.org/svc/web/w/web-1, in trust domain 'evil.org'; "
        "this CA issues for 'example.org'"
    )


def test_csr_for_another_identity_in_this_trust_domain(ca: CertificateAuthority) -> None:
    csr_pem, _ = make_csr(uris=["spiffe://example.org/svc/db/w/db-1"])
    with pytest.raises(CsrRejected) as caught:
        ca.issue_from_csr(csr_pem, WEB1, NOW)
    assert "asks for spiffe://example.org/svc/db/w/db-1, but the identity being issued is" in one_line(caught)


@pytest.mark.parametrize(
    ("uris", "reason"),
    [
        ([WEB1, "spiffe://example.org/svc/web/w/web-2"], "asks for 2 URI SANs"),
        (["https://example.org/x"], "is not a SPIFFE id"),
    ],
)
def test_csr_with_wrong_sans(ca: CertificateAuthority, uris: list[str], reason: str) -> None:
    csr_pem, _ = make_csr(uris=uris)
    with pytest.raises(CsrRejected) as caught:
        ca.issue_from_csr(csr_pem, WEB1, NOW)
    assert reason in one_line(caught)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024), "RSA-1024; at least 2048 bits"),
        (lambda: ec.generate_private_key(ec.SECP521R1()), "secp521r1; only P-256 and P-384"),
        (lambda: ed25519.Ed25519PrivateKey.generate(), "only ECDSA P-256/P-384 and RSA"),
    ],
)
def test_csr_with_an_unacceptable_key(ca: CertificateAuthority, key, reason: str) -> None:  # type: ignore[no-untyped-def]
    private = key()
    if isinstance(private, ed25519.Ed25519PrivateKey):
        builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
        csr_pem = builder.sign(private, None).public_bytes(serialization.Encoding.PEM)
    else:
        csr_pem, _ = make_csr(key=private)
    with pytest.raises(CsrRejected) as caught:
        ca.issue_from_csr(csr_pem, WEB1, NOW)
    assert reason in one_line(caught)


def test_csr_with_a_bad_requested_identity(ca: CertificateAuthority) -> None:
    csr_pem, _ = make_csr()
    with pytest.raises(PkiError, match="does not start with 'spiffe://'"):
        ca.issue_from_csr(csr_pem, "web-1", NOW)


# -- verifying -------------------------------------------------------------------------------------


def verify(ca: CertificateAuthority, *certs: x509.Certificate, now: float = NOW, **kwargs: object) -> str:
    return verify_svid(pem(*certs), ca.bundle, now, **kwargs)  # type: ignore[arg-type]


def refusal(kind: type[SvidRejected], ca: CertificateAuthority, *certs: x509.Certificate, **kwargs: object) -> str:
    with pytest.raises(kind) as caught:
        verify(ca, *certs, **kwargs)
    return one_line(caught)  # type: ignore[arg-type]


def test_a_good_forged_leaf_passes(ca: CertificateAuthority) -> None:
    """The forger itself is sound: with no rule broken, the verifier accepts its certificate."""
    leaf = forge_leaf(ca.intermediate, ca._key)
    assert verify(ca, leaf, ca.intermediate) == WEB1


def test_expired_certificate(ca: CertificateAuthority) -> None:
    leaf = forge_leaf(ca.intermediate, ca._key, not_before=NOW - 7200, not_after=NOW - 3600)
    message = refusal(CertificateExpired, ca, leaf, ca.intermediate)
    assert message == f"the certificate of {WEB1} expired at 2027-01-15T07:00:00Z (now 2027-01-15T08:00:00Z)"


def test_expired_issued_svid(ca: CertificateAuthority) -> None:
    svid = ca.issue_with_new_key(WEB1, NOW)
    with pytest.raises(CertificateExpired, match="expired at"):
        ca.verify(svid.cert_chain_pem, NOW + 3600)
    assert ca.verify(svid.cert_chain_pem, NOW + 3599) == WEB1


def test_not_yet_valid_certificate(ca: CertificateAuthority) -> None:
    leaf = forge_leaf(ca.intermediate, ca._key, not_before=NOW + 600, not_after=NOW + 3600)
    assert "is not valid before" in refusal(CertificateNotYetValid, ca, leaf, ca.intermediate)


def test_foreign_ca_with_the_same_names(ca: CertificateAuthority, impostor: CertificateAuthority) -> None:
    svid = impostor.issue_with_new_key(WEB1, NOW)
    with pytest.raises(UntrustedChain) as caught:
        ca.verify(svid.cert_chain_pem, NOW)
    assert one_line(caught) == (  # type: ignore[arg-type]
        "the signature on CA certificate 'CN=example.org issuing CA,O=edgectl' does not verify against the "
        "trusted root 'CN=example.org root CA,O=edgectl' (a foreign CA using the same name?)"
    )


def test_foreign_ca_of_another_trust_domain() -> None:
    ours = CertificateAuthority.create(TD, now=NOW)[0]
    theirs = CertificateAuthority.create("evil.org", now=NOW)[0]
    svid = theirs.issue_with_new_key("spiffe://evil.org/svc/web/w/web-1", NOW)
    with pytest.raises(ForeignTrustDomain) as caught:
        ours.verify(svid.cert_chain_pem, NOW)
    assert one_line(caught) == "spiffe://evil.org/svc/web/w/web-1 is in trust domain 'evil.org', not 'example.org'"  # type: ignore[arg-type]
    # With no trust domain to hold it to, the chain is still foreign.
    with pytest.raises(UntrustedChain, match="foreign CA"):
        verify_svid(svid.cert_chain_pem, TrustBundle(ours.bundle.roots), NOW)


def test_leaf_signed_directly_by_a_stranger(ca: CertificateAuthority, impostor: CertificateAuthority) -> None:
    # Signed by the impostor's intermediate, but presented without any intermediate.
    leaf = forge_leaf(impostor.intermediate, impostor._key)
    assert "is issued by 'CN=example.org issuing CA,O=edgectl', which is neither in the presented chain nor" in (
        refusal(UntrustedChain, ca, leaf)
    )


def test_missing_intermediate(ca: CertificateAuthority) -> None:
    svid = ca.issue_with_new_key(WEB1, NOW)
    leaf = x509.load_pem_x509_certificates(svid.cert_chain_pem.encode())[0]
    assert "neither in the presented chain nor in the trust bundle of example.org" in refusal(UntrustedChain, ca, leaf)


def test_no_uri_san(ca: CertificateAuthority) -> None:
    leaf = forge_leaf(ca.intermediate, ca._key, uris=())
    assert refusal(NotAnSvid, ca, leaf, ca.intermediate) == "the certificate has no URI SAN: it is not an X.509-SVID"


def test_two_uri_sans(ca: CertificateAuthority) -> None:
    leaf = forge_leaf(ca.intermediate, ca._key, uris=(WEB1, "spiffe://example.org/svc/db/w/db-1"))
    assert "has 2 URI SANs" in refusal(NotAnSvid, ca, leaf, ca.intermediate)


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("https://example.org/web", "does not start with 'spiffe://'"),
        ("spiffe://example.org", "names a trust domain, not a workload"),
        ("spiffe://example.org/a/../b", "dot segment"),
    ],
)
def test_wrong_san(ca: CertificateAuthority, uri: str, reason: str) -> None:
    leaf = forge_leaf(ca.intermediate, ca._key, uris=(uri,))
    message = refusal(NotAnSvid, ca, leaf, ca.intermediate)
    assert message.startswith("the URI SAN is not a workload SPIFFE id") and reason in message


def test_san_of_another_trust_domain_signed_by_our_ca(ca: CertificateAuthority) -> None:
    leaf = forge_leaf(ca.intermediate, ca._key, uris=("spiffe://evil.org/svc/web/w/web-1",))
    assert "in trust domain 'evil.org', not 'example.org'" in refusal(ForeignTrustDomain, ca, leaf, ca.intermediate)


def test_ca_true_leaf(ca: CertificateAuthority) -> None:
    leaf = forge_leaf(ca.intermediate, ca._key, ca=True)
    assert "is a CA certificate (CA:true)" in refusal(LeafIsCa, ca, leaf, ca.intermediate)


@pytest.mark.parametrize(
    ("usage", "eku", "reason"),
    [
        (None, (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH), "has no key usage extension"),
        ({**LEAF_USAGE, "digital_signature": False, "key_agreement": True}, None, "lacks key usage digitalSignature"),
        ({**LEAF_USAGE, "key_cert_sign": True}, None, "may sign certificates or CRLs"),
        ({**LEAF_USAGE, "crl_sign": True}, None, "may sign certificates or CRLs"),
        (LEAF_USAGE, (ExtendedKeyUsageOID.SERVER_AUTH,), "lacks extended key usage clientAuth"),
        (LEAF_USAGE, (ExtendedKeyUsageOID.CODE_SIGNING,), "lacks extended key usage clientAuth, serverAuth"),
    ],
)
def test_wrong_key_usage(ca: CertificateAuthority, usage: dict[str, bool] | None, eku: tuple, reason: str) -> None:  # type: ignore[type-arg]
    leaf = forge_leaf(ca.intermediate, ca._key, key_usage=usage, eku=eku)
    assert reason in refusal(BadKeyUsage, ca, leaf, ca.intermediate)


def test_revoked_certificate_and_identity(ca: CertificateAuthority) -> None:
    svid = ca.issue_with_new_key(WEB1, NOW)
    by_serial = RevocationList().revoke_certificate(svid.info)
    with pytest.raises(Revoked, match=f"serial {svid.info.serial:x} of {WEB1} is revoked"):
        ca.verify(svid.cert_chain_pem, NOW, by_serial)
    with pytest.raises(Revoked, match=f"identity {WEB1} is revoked"):
        ca.verify(svid.cert_chain_pem, NOW, RevocationList().revoke_identity(WEB1))
    fresh = ca.issue_with_new_key(WEB1, NOW)
    assert ca.verify(fresh.cert_chain_pem, NOW, by_serial) == WEB1  # the rotated one is fine


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("", "holds no PEM certificate"),
        ("garbage", "holds no PEM certificate"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not valid PEM X.509"),
    ],
)
def test_malformed_chains(ca: CertificateAuthority, data: str, reason: str) -> None:
    with pytest.raises(MalformedCertificate) as caught:
        ca.verify(data, NOW)
    assert reason in one_line(caught)  # type: ignore[arg-type]


def test_empty_certificate_list(ca: CertificateAuthority) -> None:
    with pytest.raises(MalformedCertificate, match="empty"):
        verify_svid([], ca.bundle, NOW)


def test_expired_intermediate_is_named(ca: CertificateAuthority) -> None:
    late = ca.not_after + 10
    leaf = forge_leaf(ca.intermediate, ca._key, not_before=late - 100, not_after=late + 100)
    message = refusal(CertificateExpired, ca, leaf, ca.intermediate, now=late)
    assert message.startswith("CA certificate 'CN=example.org issuing CA,O=edgectl' expired at")


def test_every_refusal_is_a_pki_error_with_a_code(ca: CertificateAuthority) -> None:
    leaf = forge_leaf(ca.intermediate, ca._key, ca=True)
    with pytest.raises(PkiError) as caught:
        verify(ca, leaf, ca.intermediate)
    assert caught.value.code == "leaf-is-ca"


def test_peer_spiffe_id_from_a_verified_peer_certificate(ca: CertificateAuthority) -> None:
    from pki.verify import peer_spiffe_id

    svid = ca.issue_with_new_key(WEB1, NOW)
    assert peer_spiffe_id(svid.cert_chain_pem) == WEB1
    assert peer_spiffe_id(pem(forge_leaf(ca.intermediate, ca._key)).encode()) == WEB1
    with pytest.raises(NotAnSvid, match="2 URI SANs"):
        peer_spiffe_id(pem(forge_leaf(ca.intermediate, ca._key, uris=(WEB1, WEB1 + "x"))))


# A P-256 CSR signed with SHA-1 (made once with ``openssl req -new -sha1``: cryptography refuses to sign one).
SHA1_CSR = """-----BEGIN CERTIFICATE REQUEST-----
MIHGMG4CAQAwDDEKMAgGA1UEAwwBbjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IA
BAC6PXLGvQ1VZGUC0qJOeF5SdnT5XlAm0Fz69+yX3G3IqFvq6p9pa7dAdqjF9TT1
ACXgf2rFkhHCxlGgyMd1XqagADAJBgcqhkjOPQQBA0kAMEYCIQD7QVnwSJVwTuDb
fdTwthu7+QLMTy3QP6Vn7mix7m+fPQIhAPkDZ+kkA4uGwlfA+U7275JBlisnjg4V
6ulPFYL3lZn5
-----END CERTIFICATE REQUEST-----
"""


def test_csr_signed_with_sha1_or_an_unknown_algorithm_is_refused_with_the_reason(ca: CertificateAuthority) -> None:
    with pytest.raises(CsrRejected) as caught:
        ca.issue_from_csr(SHA1_CSR, WEB1, NOW)
    assert "signed with SHA1" in one_line(caught)
    der = x509.load_pem_x509_csr(SHA1_CSR.encode()).public_bytes(serialization.Encoding.DER)
    ecdsa_with_sha1 = bytes.fromhex("06072A8648CE3D0401")  # OID 1.2.840.10045.4.1
    unknown = der.replace(ecdsa_with_sha1, bytes.fromhex("06072A8648CE3D0409"))
    with pytest.raises(CsrRejected) as caught:
        ca.issue_from_csr(unknown, WEB1, NOW)
    assert "does not support" in one_line(caught) and "1.2.840.10045.4.9" in one_line(caught)
    with pytest.raises(CsrRejected) as caught:
        ca.issue_from_csr("\udcff not encodable", WEB1, NOW)
    assert "malformed CSR" in one_line(caught)
