"""The node's identity on disk (adapter, cryptography): its key, its node SVID, the trust bundle, and the
SDS file through which every sidecar of the node presents that SVID on its xDS channel.

Files in the work directory (keys 0600, every file replaced atomically: a reader sees the old or the new):

    node.sds.json   the SVID's chain and key together (Envoy's file-based SDS; the agent reads it back
                    after a restart, so one rename switches both at once)
    node.crt        the chain alone, node.key the key alone (0600): for people and `edgectl pki inspect`
    bundle.pem      the CA certificates to trust (the controller's, and what Envoy verifies it with)

A new key is made for each attestation and each renewal; it never leaves the node (only a CSR does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshctl.bootstrap import xds_client_sds_document
from pki.store import replace_file

KEY_MODE = 0o600
PUBLIC_MODE = 0o644
RENEW_AT_FRACTION = 0.5
"""Renew at half-life: time enough to retry while the controller is away."""


@dataclass(frozen=True, slots=True)
class NodeSvid:
    spiffe_id: str
    cert_chain_pem: str
    private_key_pem: str
    not_before: float
    not_after: float

    def renew_at(self) -> float:
        return self.not_before + (self.not_after - self.not_before) * RENEW_AT_FRACTION

    def valid(self, now: float) -> bool:
        return self.not_before <= now < self.not_after


class IdentityError(Exception):
    """What the controller returned cannot be used (no certificate, not for our key)."""


def new_key_and_csr(node: str) -> tuple[str, str]:
    """A fresh ECDSA P-256 key (PEM, PKCS#8) and a CSR for it (PEM). No SAN: the controller names the node."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node[:64] or "node")]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    return key_pem, csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def svid_from(cert_chain_pem: str, private_key_pem: str) -> NodeSvid:
    """The SVID a chain and key make; ``IdentityError`` if the chain is empty or not for that key."""
    try:
        chain = x509.load_pem_x509_certificates(cert_chain_pem.encode())
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    except ValueError as exc:
        raise IdentityError(f"unreadable certificate or key: {exc}") from None
    leaf = chain[0]
    if leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise IdentityError("the certificate is not for this node's key")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    return NodeSvid(
        spiffe_id=uris[0] if uris else "",
        cert_chain_pem=cert_chain_pem,
        private_key_pem=private_key_pem,
        not_before=leaf.not_valid_before_utc.timestamp(),
        not_after=leaf.not_valid_after_utc.timestamp(),
    )


class NodeIdentityFiles:
    """The identity files of one work directory (see the module doc)."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.sds = work_dir / "node.sds.json"
        self.cert = work_dir / "node.crt"
        self.key = work_dir / "node.key"
        self.bundle = work_dir / "bundle.pem"

    def load(self) -> NodeSvid | None:
        """The SVID kept from an earlier run, or None (none kept, or unreadable: attest again)."""
        try:
            document = json.loads(self.sds.read_text())
            secret = document["resources"][0]["tls_certificate"]
            return svid_from(secret["certificate_chain"]["inline_string"], secret["private_key"]["inline_string"])
        except (OSError, ValueError, KeyError, IndexError, TypeError, IdentityError):
            return None

    def store(self, svid: NodeSvid, trust_bundle_pem: str) -> None:
        """Write the bundle, then the SDS file (the one Envoy watches), then the copies for people."""
        if trust_bundle_pem.strip():
            replace_file(self.bundle, trust_bundle_pem.encode(), PUBLIC_MODE)
        document = xds_client_sds_document(svid.cert_chain_pem, svid.private_key_pem)
        replace_file(self.sds, json.dumps(document, indent=2).encode(), KEY_MODE)
        replace_file(self.key, svid.private_key_pem.encode(), KEY_MODE)
        replace_file(self.cert, svid.cert_chain_pem.encode(), PUBLIC_MODE)

    def store_bundle(self, trust_bundle_pem: str) -> None:
        replace_file(self.bundle, trust_bundle_pem.encode(), PUBLIC_MODE)

    def bundle_pem(self) -> bytes:
        return self.bundle.read_bytes()
