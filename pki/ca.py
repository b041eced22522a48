"""The certificate authority: a root, an issuing intermediate, and SVIDs built -> signed -> validated.

Adapter (``cryptography``; files through ``pki/store.py``). Every certificate it returns has passed
``verify_svid`` at the issuing time -- RFC 5280 path validation plus the SPIFFE leaf rules -- so a bug in
building or signing fails loudly here instead of in a TLS handshake later (SPIRE does the same). The
path is anchored at the intermediate that signed it; the intermediate's own path to the root is
validated once, when the CA is created or loaded. That halves the cost of the check (one signature
verification per SVID instead of two; see benchmarks/pki_issue.py) without skipping any rule on the leaf.

CSRs: the SPIFFE id is the caller's decision (the control plane knows which identity a workload is
entitled to), never the CSR's. The CSR's subject is ignored. Its URI SANs are *checked*: a CSR may
name the identity being issued, but one that asks for another identity -- or another trust domain --
is refused, because a requester that is confused about who it is should hear so, not receive a
certificate for someone else. DNS/IP SANs a CSR asks for are not copied.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from netmodel.ids import SpiffeId
from pki import certs, store
from pki.errors import CaCorrupt, CaKeyLocked, CsrRejected, IssuanceFailed, PkiError, SvidRejected
from pki.policy import (
    IssuancePolicy,
    RevocationList,
    Svid,
    parse_spiffe_id,
    template_for,
    trust_domain_id,
    validate_trust_domain,
)
from pki.verify import TrustBundle, verify_svid

ROOT_TTL_S = 10 * 365 * 86400
INTERMEDIATE_TTL_S = 365 * 86400
CA_BACKDATE_S = 3600
"""CA certificates start an hour early: leaves are backdated too, and must not predate their issuer."""


CSR_SIGNATURE_HASHES = frozenset({"sha256", "sha384", "sha512"})
"""What a CSR may be signed with (its key is ECDSA or RSA: ``certs.key_refusal``); SHA-1 is not."""


class CertificateAuthority:
    """Issues X.509-SVIDs for one trust domain from an intermediate; holds no root key at run time."""

    def __init__(
        self,
        *,
        root: x509.Certificate,
        intermediate: x509.Certificate,
        intermediate_key: certs.PrivateKey,
        policy: IssuancePolicy,
        directory: Path | None = None,
        root_crl_pem: str = "",
    ) -> None:
        self.policy = policy
        self.root_crl_pem = root_crl_pem
        """An empty CRL signed by the root (no intermediate revoked), made with the root key at creation;
        "" for a CA directory made before it existed."""
        self.trust_domain = policy.trust_domain
        self.root = root
        self.intermediate = intermediate
        self.directory = directory
        self.bundle = TrustBundle((root,), policy.trust_domain)
        self.bundle_pem = self.bundle.pem
        self.intermediates_pem = certs.cert_pem(intermediate)
        """What follows the leaf in every chain this CA hands out."""
        self.not_before = certs.to_epoch(intermediate.not_valid_before_utc)
        self.not_after = certs.to_epoch(intermediate.not_valid_after_utc)
        self._key = intermediate_key
        self._signer = certs.LeafSigner(intermediate, intermediate_key)
        self._check_intermediate()
        self._issuer_anchor = TrustBundle((intermediate,), policy.trust_domain)
        """What each new leaf is validated against (see the module doc)."""

    def _check_intermediate(self) -> None:
        try:
            self.intermediate.verify_directly_issued_by(self.root)
        except Exception:
            raise CaCorrupt("the intermediate certificate is not signed by the root") from None
        basic = self.intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = self.intermediate.extensions.get_extension_for_class(x509.KeyUsage).value
        if not (basic.ca and usage.key_cert_sign):
            raise CaCorrupt("the intermediate certificate is not a signing (CA) certificate")
        public = self._key.public_key().public_numbers()
        if public != self.intermediate.public_key().public_numbers():  # type: ignore[union-attr]
            raise CaCorrupt("the intermediate key does not belong to the intermediate certificate")

    # -- creating and loading ------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        trust_domain: str,
        *,
        now: float | None = None,
        root_ttl_s: int = ROOT_TTL_S,
        intermediate_ttl_s: int = INTERMEDIATE_TTL_S,
        policy: IssuancePolicy | None = None,
    ) -> tuple[CertificateAuthority, certs.PrivateKey]:
        """A new CA in memory; returns it and the root key (which ``init`` stores and tests may drop)."""
        validate_trust_domain(trust_domain)
        if policy is not None and policy.trust_domain != trust_domain:
            raise PkiError(f"policy is for trust domain {policy.trust_domain!r}, not {trust_domain!r}")
        start = int(time.time() if now is None else now) - CA_BACKDATE_S
        td_id = trust_domain_id(trust_domain)
        root_key = certs.new_private_key()
        root = certs.build_ca_certificate(
            common_name=f"{trust_domain} root CA",
            trust_domain_id=td_id,
            public_key=root_key.public_key(),
            signing_key=root_key,
            issuer=None,
            not_before=start,
            not_after=start + root_ttl_s,
            path_length=1,
        )
        intermediate_key = certs.new_private_key()
        intermediate = certs.build_ca_certificate(
            common_name=f"{trust_domain} issuing CA",
            trust_domain_id=td_id,
            public_key=intermediate_key.public_key(),
            signing_key=root_key,
            issuer=root,
            not_before=start,
            not_after=min(start + intermediate_ttl_s, start + root_ttl_s),
            path_length=0,
        )
        root_crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(root.subject)
            .last_update(certs.to_datetime(start))
            .next_update(intermediate.not_valid_after_utc)
            .add_extension(x509.CRLNumber(start), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
            .sign(root_key, certs.SIGNATURE_HASH)
        )
        ca = cls(
            root=root,
            intermediate=intermediate,
            intermediate_key=intermediate_key,
            policy=policy or IssuancePolicy(trust_domain),
            root_crl_pem=root_crl.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        )
        return ca, root_key

    @classmethod
    def init(
        cls,
        directory: str | os.PathLike[str],
        trust_domain: str,
        passphrase: bytes | None = None,
        *,
        now: float | None = None,
        root_ttl_s: int = ROOT_TTL_S,
        intermediate_ttl_s: int = INTERMEDIATE_TTL_S,
    ) -> CertificateAuthority:
        """Create a CA in ``directory`` (see ``pki/store.py`` for the layout). Refuses to overwrite one.

        With a passphrase both private keys are encrypted (PKCS#8, the best encryption the library
        offers); without, they are plain but 0600. The root key is only needed to sign a new
        intermediate: it may be moved offline.
        """
        if passphrase is not None and not passphrase:
            raise CaKeyLocked("the passphrase is empty")
        ca, root_key = cls.create(trust_domain, now=now, root_ttl_s=root_ttl_s, intermediate_ttl_s=intermediate_ttl_s)
        files = {
            "root.crt": certs.cert_pem(ca.root).encode(),
            "root.key": certs.private_key_pem(root_key, passphrase),
            "intermediate.crt": ca.intermediates_pem.encode(),
            "intermediate.key": certs.private_key_pem(ca._key, passphrase),
            "bundle.pem": ca.bundle_pem.encode(),
            "root-crl.pem": ca.root_crl_pem.encode(),
        }
        meta = {"trust_domain": trust_domain, "keys_encrypted": passphrase is not None}
        layout = store.write_new_ca(directory, meta, files)
        ca.directory = layout.directory
        return ca

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        passphrase: bytes | None = None,
        *,
        policy: IssuancePolicy | None = None,
        ttl_s: int | None = None,
    ) -> CertificateAuthority:
        """Load the issuing half of a CA directory (certificates and the intermediate key; not the root
        key). ``ttl_s`` sets the default SVID lifetime when no ``policy`` is given."""
        layout, meta = store.read_ca(directory)
        trust_domain = meta["trust_domain"]
        root = _load_certificate(store.read_bytes(layout.root_cert, "root certificate"), layout.root_cert)
        intermediate = _load_certificate(
            store.read_bytes(layout.intermediate_cert, "intermediate certificate"), layout.intermediate_cert
        )
        key = load_private_key(store.read_bytes(layout.intermediate_key, "intermediate key"), passphrase, layout)
        if policy is None:
            policy = IssuancePolicy(trust_domain) if ttl_s is None else IssuancePolicy(trust_domain, ttl_s=ttl_s)
        elif policy.trust_domain != trust_domain:
            raise PkiError(f"policy is for trust domain {policy.trust_domain!r}, the CA for {trust_domain!r}")
        root_crl = layout.root_crl.read_text() if layout.root_crl.exists() else ""
        try:
            return cls(
                root=root,
                intermediate=intermediate,
                intermediate_key=key,
                policy=policy,
                directory=layout.directory,
                root_crl_pem=root_crl,
            )
        except CaCorrupt as exc:
            raise CaCorrupt(f"{layout.directory}: {exc}") from None

    # -- issuing -------------------------------------------------------------------------------------

    def issue_with_new_key(
        self,
        spiffe_id: str,
        now: float,
        *,
        ttl_s: int | None = None,
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str] = (),
    ) -> Svid:
        """Make a key here (for a sidecar that gets it over SDS) and an SVID for it."""
        key = certs.new_private_key()
        svid = self._issue(key.public_key(), spiffe_id, now, ttl_s, dns_names, ip_addresses)
        key_pem = certs.private_key_pem(key).decode("ascii")
        return Svid(svid.spiffe_id, svid.cert_chain_pem, svid.info, key_pem)

    def issue_from_csr(self, csr_pem: bytes | str, spiffe_id: str, now: float, *, ttl_s: int | None = None) -> Svid:
        """An SVID for the key in a CSR; the key never leaves its owner. See the module doc for the rules."""
        csr = parse_csr(csr_pem)
        try:
            key = csr.public_key()
            digest = csr.signature_hash_algorithm
            signed = csr.is_signature_valid
        except (UnsupportedAlgorithm, ValueError) as exc:  # an unknown signature algorithm or key type
            raise CsrRejected(f"the CSR uses an algorithm this CA does not support: {exc}") from None
        refusal = certs.key_refusal(key)
        if refusal is not None or not isinstance(key, certs.PublicKey):
            raise CsrRejected(f"the CSR's {refusal}")
        if digest is None or digest.name not in CSR_SIGNATURE_HASHES:
            name = "no hash" if digest is None else digest.name.upper()
            raise CsrRejected(f"the CSR is signed with {name}; only SHA-256, SHA-384 and SHA-512 are accepted")
        if not signed:
            raise CsrRejected("the CSR's signature does not verify: it was not signed by the key it carries")
        self._check_csr_names(csr, spiffe_id)
        return self._issue(key, spiffe_id, now, ttl_s, (), ())

    def _check_csr_names(self, csr: x509.CertificateSigningRequest, spiffe_id: str) -> None:
        try:
            extension = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return
        except ValueError as exc:
            raise CsrRejected(f"the CSR's extensions do not parse: {exc}") from None
        uris = extension.value.get_values_for_type(x509.UniformResourceIdentifier)
        if len(uris) > 1:
            raise CsrRejected(f"the CSR asks for {len(uris)} URI SANs; an SVID has exactly one")
        for uri in uris:
            if uri == spiffe_id:
                continue
            try:
                asked = parse_spiffe_id(uri)
            except PkiError as exc:
                raise CsrRejected(f"the CSR's URI SAN {uri!r} is not a SPIFFE id: {exc}") from None
            if asked.trust_domain != self.trust_domain:
                raise CsrRejected(
                    f"the CSR asks for {uri}, in trust domain {asked.trust_domain!r}; "
                    f"this CA issues for {self.trust_domain!r}"
                )
            raise CsrRejected(f"the CSR asks for {uri}, but the identity being issued is {spiffe_id}")

    def _issue(
        self,
        public_key: certs.PublicKey,
        spiffe_id: str,
        now: float,
        ttl_s: int | None,
        dns_names: Iterable[str],
        ip_addresses: Iterable[str],
    ) -> Svid:
        template = template_for(
            spiffe_id,
            self.policy,
            now,
            self.not_after,
            issuer_not_before=self.not_before,
            ttl_s=ttl_s,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
        )
        cert = self._signer.sign(template, public_key)
        # Validate before anyone sees it: the checks a peer makes, at the moment of issue.
        try:
            verified = verify_svid([cert], self._issuer_anchor, now)
        except SvidRejected as exc:
            raise IssuanceFailed(f"the certificate built for {spiffe_id} failed validation: {exc}") from exc
        if verified != template.spiffe_id:
            raise IssuanceFailed(f"the certificate built for {spiffe_id} names {verified}")
        info = certs.cert_info(cert, template.spiffe_id)
        if (info.not_before, info.not_after) != (template.not_before, template.not_after):
            raise IssuanceFailed(f"the certificate built for {spiffe_id} has another validity than its template")
        return Svid(SpiffeId(template.spiffe_id), certs.cert_pem(cert) + self.intermediates_pem, info)

    # -- verifying and revoking ----------------------------------------------------------------------

    def verify(self, chain_pem: bytes | str, now: float, revocations: RevocationList | None = None) -> SpiffeId:
        """``verify_svid`` against this CA's bundle and trust domain."""
        return verify_svid(chain_pem, self.bundle, now, revocations=revocations, trust_domain=self.trust_domain)

    def crl_pem(self, revocations: RevocationList, now: float, next_update_s: int = 3600) -> str:
        """A CRL of the revoked serials, signed by the intermediate (for Envoy's ``crl`` with
        ``only_verify_leaf_cert_crl``). Revoked *identities* are not expressible in a CRL: listeners
        drop them from their SAN matchers instead."""
        moment = certs.to_datetime(int(now))
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.intermediate.subject)
            .last_update(moment)
            .next_update(certs.to_datetime(int(now) + next_update_s))
            .add_extension(x509.CRLNumber(int(now)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        for serial in sorted(revocations.pruned(now).serials):
            entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(moment).build()
            builder = builder.add_revoked_certificate(entry)
        crl = builder.sign(self._key, certs.SIGNATURE_HASH)
        return crl.public_bytes(serialization.Encoding.PEM).decode("ascii")


def parse_csr(data: bytes | str) -> x509.CertificateSigningRequest:
    try:
        raw = data.encode() if isinstance(data, str) else data
        if b"-----BEGIN" in raw:
            return x509.load_pem_x509_csr(raw)
        return x509.load_der_x509_csr(raw)
    except (ValueError, UnsupportedAlgorithm):  # UnicodeEncodeError is a ValueError
        raise CsrRejected("malformed CSR: not a PEM or DER PKCS#10 certificate signing request") from None


def load_private_key(data: bytes, passphrase: bytes | None, layout: store.CaFiles | None = None) -> certs.PrivateKey:
    where = str(layout.intermediate_key) if layout else "the key"
    encrypted = b"ENCRYPTED" in data.split(b"\n", 1)[0]
    if encrypted and not passphrase:
        raise CaKeyLocked(f"{where} is encrypted: give the passphrase (--passphrase-file or --passphrase-env)")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase if encrypted else None)
    except (ValueError, TypeError) as exc:
        if encrypted:
            raise CaKeyLocked(f"cannot decrypt {where}: wrong passphrase") from None
        raise CaCorrupt(f"{where} is not a PEM private key: {exc}") from None
    if not isinstance(key, certs.PrivateKey):
        raise CaCorrupt(f"{where} holds a {type(key).__name__}, not an ECDSA or RSA key")
    return key


def _load_certificate(data: bytes, path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise CaCorrupt(f"{path} is not a PEM certificate: {exc}") from None
