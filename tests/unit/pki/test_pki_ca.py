"""The CA: init/load on disk (modes, refusal to overwrite, passphrases), issue -> verify round trips,
the X.509-SVID profile of what it issues, CRLs."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from pki.ca import CertificateAuthority
from pki.errors import CaCorrupt, CaExists, CaKeyLocked, CaNotFound, WrongTrustDomain
from pki.policy import IssuancePolicy, RevocationList
from pki.verify import TrustBundle, verify_svid
from tests.unit.pki.pki_helpers import NOW, TD, make_csr

WEB1 = "spiffe://example.org/svc/web/w/web-1"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    authority, _root_key = CertificateAuthority.create(TD, now=NOW)
    return authority


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- on disk ---------------------------------------------------------------------------------------


def test_init_writes_the_layout_with_private_keys_0600(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # even a careless umask must not widen a key file
    try:
        ca = CertificateAuthority.init(tmp_path / "ca", TD, now=NOW)
    finally:
        os.umask(old_umask)
    folder = tmp_path / "ca"
    assert ca.directory == folder
    assert mode(folder / "root.key") == 0o600 and mode(folder / "intermediate.key") == 0o600
    assert mode(folder / "root.crt") == 0o644 and mode(folder / "bundle.pem") == 0o644
    assert mode(folder) == 0o700
    assert json.loads((folder / "ca.json").read_text()) == {"trust_domain": TD, "keys_encrypted": False, "format": 1}
    assert (folder / "bundle.pem").read_text() == ca.bundle_pem == (folder / "root.crt").read_text()
    assert b"ENCRYPTED" not in (folder / "intermediate.key").read_bytes()


def test_init_refuses_to_overwrite_a_ca(tmp_path: Path) -> None:
    CertificateAuthority.init(tmp_path / "ca", TD, now=NOW)
    before = (tmp_path / "ca" / "intermediate.key").read_bytes()
    with pytest.raises(CaExists, match="refusing to overwrite"):
        CertificateAuthority.init(tmp_path / "ca", "other.org", now=NOW)
    assert (tmp_path / "ca" / "intermediate.key").read_bytes() == before


def test_init_refuses_a_half_made_ca_too(tmp_path: Path) -> None:
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca" / "root.key").write_text("left over")
    with pytest.raises(CaExists, match=r"root\.key"):
        CertificateAuthority.init(tmp_path / "ca", TD, now=NOW)


def test_init_into_an_existing_unrelated_directory_is_fine(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    CertificateAuthority.init(tmp_path, TD, now=NOW)
    assert (tmp_path / "ca.json").exists()


def test_load_round_trip_issues_what_the_bundle_verifies(tmp_path: Path) -> None:
    made = CertificateAuthority.init(tmp_path / "ca", TD, now=NOW)
    loaded = CertificateAuthority.load(tmp_path / "ca", ttl_s=600)
    assert loaded.bundle_pem == made.bundle_pem and loaded.trust_domain == TD
    svid = loaded.issue_with_new_key(WEB1, NOW)
    assert svid.info.not_after == int(NOW) + 600
    bundle = TrustBundle.from_pem((tmp_path / "ca" / "bundle.pem").read_bytes())
    assert bundle.trust_domain == TD  # read from the root's SPIFFE id
    assert verify_svid(svid.cert_chain_pem, bundle, NOW) == WEB1


def test_passphrase_encrypts_both_keys(tmp_path: Path) -> None:
    CertificateAuthority.init(tmp_path / "ca", TD, b"correct horse", now=NOW)
    for name in ("root.key", "intermediate.key"):
        data = (tmp_path / "ca" / name).read_bytes()
        assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        with pytest.raises(TypeError):
            serialization.load_pem_private_key(data, password=None)
    assert json.loads((tmp_path / "ca" / "ca.json").read_text())["keys_encrypted"] is True
    with pytest.raises(CaKeyLocked, match="is encrypted: give the passphrase"):
        CertificateAuthority.load(tmp_path / "ca")
    with pytest.raises(CaKeyLocked, match="wrong passphrase"):
        CertificateAuthority.load(tmp_path / "ca", b"wrong")
    loaded = CertificateAuthority.load(tmp_path / "ca", b"correct horse")
    assert loaded.verify(loaded.issue_with_new_key(WEB1, NOW).cert_chain_pem, NOW) == WEB1


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CaKeyLocked, match="empty"):
        CertificateAuthority.init(tmp_path / "ca", TD, b"", now=NOW)


def test_load_reports_missing_and_damaged_cas(tmp_path: Path) -> None:
    with pytest.raises(CaNotFound, match="not a directory"):
        CertificateAuthority.load(tmp_path / "nope")
    with pytest.raises(CaNotFound, match="holds no CA"):
        CertificateAuthority.load(tmp_path)
    CertificateAuthority.init(tmp_path / "a", TD, now=NOW)
    CertificateAuthority.init(tmp_path / "b", TD, now=NOW)
    # b's intermediate key next to a's certificates: refused, not silently used.
    (tmp_path / "a" / "intermediate.key").write_bytes((tmp_path / "b" / "intermediate.key").read_bytes())
    with pytest.raises(CaCorrupt, match="key does not belong to"):
        CertificateAuthority.load(tmp_path / "a")
    (tmp_path / "b" / "intermediate.crt").unlink()
    with pytest.raises(CaCorrupt, match="missing"):
        CertificateAuthority.load(tmp_path / "b")
    (tmp_path / "a" / "ca.json").write_text("{}")
    with pytest.raises(CaCorrupt, match="not an edgectl CA"):
        CertificateAuthority.load(tmp_path / "a")


def test_load_refuses_an_intermediate_another_root_signed(tmp_path: Path) -> None:
    CertificateAuthority.init(tmp_path / "a", TD, now=NOW)
    CertificateAuthority.init(tmp_path / "b", TD, now=NOW)
    (tmp_path / "a" / "root.crt").write_bytes((tmp_path / "b" / "root.crt").read_bytes())
    with pytest.raises(CaCorrupt, match="not signed by"):
        CertificateAuthority.load(tmp_path / "a")


# -- issuing ---------------------------------------------------------------------------------------


def test_issued_svid_follows_the_x509_svid_profile(ca: CertificateAuthority) -> None:
    svid = ca.issue_with_new_key(WEB1, NOW)
    chain = x509.load_pem_x509_certificates(svid.cert_chain_pem.encode())
    assert [c.subject for c in chain[1:]] == [ca.intermediate.subject]
    leaf = chain[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [WEB1]
    assert len(list(san)) == 1
    basic = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not (usage.value.key_cert_sign or usage.value.crl_sign or usage.value.key_encipherment)
    purposes = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert purposes == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert leaf.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert svid.info.serial == leaf.serial_number and svid.info.spiffe_id == WEB1
    assert (svid.info.not_before, svid.info.not_after) == (int(NOW) - 10, int(NOW) + 3600)
    key = serialization.load_pem_private_key(svid.private_key_pem.encode(), None)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()  # type: ignore[union-attr]
    assert "PRIVATE" not in repr(svid)  # the key never shows up in logs


def test_ca_certificates_are_spiffe_signing_certificates(ca: CertificateAuthority) -> None:
    for cert, path_length in ((ca.root, 1), (ca.intermediate, 0)):
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert basic.critical and basic.value.ca and basic.value.path_length == path_length
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert uris.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org"]  # no path
    assert ca.root.not_valid_after_utc > ca.intermediate.not_valid_after_utc


def test_svid_lifetime_is_capped_by_the_intermediate() -> None:
    # CA certificates start an hour early (CA_BACKDATE_S): this intermediate ends at NOW + 1.5 h.
    short, _ = CertificateAuthority.create(TD, now=NOW, intermediate_ttl_s=3600 + 5400)
    svid = short.issue_with_new_key(WEB1, NOW + 3000)  # 1 h TTL would outlive the intermediate
    assert svid.info.not_after == short.not_after
    assert short.verify(svid.cert_chain_pem, NOW + 3000) == WEB1


def test_issue_from_csr_keeps_the_key_with_its_owner(ca: CertificateAuthority) -> None:
    csr_pem, key = make_csr(uris=[WEB1])
    svid = ca.issue_from_csr(csr_pem, WEB1, NOW)
    assert svid.private_key_pem == ""
    leaf = x509.load_pem_x509_certificates(svid.cert_chain_pem.encode())[0]
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    assert ca.verify(svid.cert_chain_pem, NOW) == WEB1


def test_csr_subject_and_dns_sans_are_ignored(ca: CertificateAuthority) -> None:
    csr_pem, _key = make_csr(common_name="admin")
    svid = ca.issue_from_csr(csr_pem, WEB1, NOW)  # no SAN in the CSR: the caller's id is used
    leaf = x509.load_pem_x509_certificates(svid.cert_chain_pem.encode())[0]
    assert leaf.subject.rfc4514_string() == "CN=web-1,O=edgectl"


def test_csr_may_be_der(ca: CertificateAuthority) -> None:
    csr_pem, _key = make_csr()
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    assert ca.issue_from_csr(der, WEB1, NOW).spiffe_id == WEB1


def test_rsa_csrs_of_2048_bits_are_accepted(ca: CertificateAuthority) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    csr_pem, _ = make_csr(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert ca.verify(ca.issue_from_csr(csr_pem, WEB1, NOW).cert_chain_pem, NOW) == WEB1


def test_extra_sans_for_servers(ca: CertificateAuthority) -> None:
    svid = ca.issue_with_new_key(WEB1, NOW, ip_addresses=["127.0.0.1"], dns_names=["web.example.org"])
    leaf = x509.load_pem_x509_certificates(svid.cert_chain_pem.encode())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["web.example.org"]
    assert ca.verify(svid.cert_chain_pem, NOW) == WEB1  # still exactly one URI SAN


def test_issue_for_another_trust_domain_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(WrongTrustDomain, match=r"'other\.org', not 'example\.org'"):
        ca.issue_with_new_key("spiffe://other.org/svc/web/w/1", NOW)


def test_policy_for_another_trust_domain_is_refused() -> None:
    from pki.errors import PkiError

    with pytest.raises(PkiError, match="policy is for trust domain"):
        CertificateAuthority.create(TD, now=NOW, policy=IssuancePolicy("other.org"))


def test_crl_lists_revoked_serials_signed_by_the_intermediate(ca: CertificateAuthority) -> None:
    a, b = ca.issue_with_new_key(WEB1, NOW), ca.issue_with_new_key(WEB1, NOW)
    crl = x509.load_pem_x509_crl(ca.crl_pem(RevocationList().revoke_certificate(a.info), NOW).encode())
    assert crl.is_signature_valid(ca.intermediate.public_key())  # type: ignore[arg-type]
    assert crl.issuer == ca.intermediate.subject
    assert crl.get_revoked_certificate_by_serial_number(a.info.serial) is not None
    assert crl.get_revoked_certificate_by_serial_number(b.info.serial) is None
