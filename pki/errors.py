"""Why the PKI refused something: one exception family, each with a one-line reason as its message.

Pure (no I/O, no cryptography): the policy raises these as well as the adapters. ``str(exc)`` is what a
user sees (the CLI prints it after the command name); ``code`` is a stable short name for tests, logs
and metrics.
"""

from __future__ import annotations


class PkiError(Exception):
    """Base of every refusal. The message is one line that says what was wrong."""

    code = "pki-error"


class InvalidSpiffeId(PkiError, ValueError):
    code = "invalid-spiffe-id"


class InvalidSubjectName(PkiError, ValueError):
    """A DNS name or IP address asked for as an extra SAN is not one."""

    code = "invalid-subject-name"


class WrongTrustDomain(PkiError):
    """A SPIFFE id (in a request, a CSR or a certificate) belongs to another trust domain."""

    code = "wrong-trust-domain"


class InvalidLifetime(PkiError, ValueError):
    code = "invalid-lifetime"


class IssuerExpired(PkiError):
    """The signing certificate has expired: nothing it signs would verify."""

    code = "issuer-expired"


class CsrRejected(PkiError):
    code = "csr-rejected"


class IssuanceFailed(PkiError):
    """A certificate the CA built did not pass its own validation (a bug, never bad input)."""

    code = "issuance-failed"


class CaExists(PkiError):
    code = "ca-exists"


class CaNotFound(PkiError):
    code = "ca-not-found"


class CaKeyLocked(PkiError):
    """The CA key is encrypted and no (or the wrong) passphrase was given."""

    code = "ca-key-locked"


class CaCorrupt(PkiError):
    code = "ca-corrupt"


class RevocationsUnavailable(PkiError):
    """The stored revocation list cannot be reached (a replicated controller's etcd)."""

    code = "revocations-unavailable"


class SvidRejected(PkiError):
    """A certificate (chain) is not an acceptable X.509-SVID; subclasses say which rule it broke."""

    code = "svid-rejected"


class MalformedCertificate(SvidRejected):
    code = "malformed"


class NotAnSvid(SvidRejected):
    """No, or more than one, URI SAN; or the URI SAN is not a leaf SPIFFE id."""

    code = "not-an-svid"


class LeafIsCa(SvidRejected):
    code = "leaf-is-ca"


class BadKeyUsage(SvidRejected):
    code = "bad-key-usage"


class CertificateExpired(SvidRejected):
    code = "expired"


class CertificateNotYetValid(SvidRejected):
    code = "not-yet-valid"


class ForeignTrustDomain(SvidRejected):
    code = "wrong-trust-domain"


class UntrustedChain(SvidRejected):
    """The chain does not lead to a root in the trust bundle (a foreign CA, or a forged signature)."""

    code = "untrusted-chain"


class Revoked(SvidRejected):
    code = "revoked"


class RotationTooSoon(PkiError):
    """A forced rotation of an identity that was force-rotated moments ago (each one adds revoked serials)."""

    code = "rotation-too-soon"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
