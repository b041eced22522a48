"""Timeline entries from outside the model (docs/dashboard.md): placement steps, xDS NACKs, certificates.

Each function turns what a component reports into ``(kind, text)`` pairs for ``EventHub.note``; the
``*_notes`` classes are the listeners the controller hands those components. They only describe: no I/O.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pki.identities import IdentitySnapshot
    from pki.policy import Svid
    from placement.watch import PlacementStep

Note = Callable[..., None]
"""``EventHub.note``: (kind, text, service=...)."""

TEXT_MAX = 500
"""Characters of an entry's text: the rest is cut."""
CERTIFICATES_LISTED = 5
"""More certificates issued at once than this (the first issuance at start): one summary entry."""

LOG = logging.getLogger("edgectl.events")


def placement_entry(step: PlacementStep) -> tuple[str, str, str | None] | None:
    """The timeline entry of a migration or failover step, an unschedulable Place; None for the others
    (PLACED and REMOVED: the model's own entries show them). The third item is the workload's service,
    so the dashboard can show each service's last placement reason."""
    from placement.watch import StepKind

    kinds = {
        StepKind.MIGRATION_STARTED: "MigrationStarted",
        StepKind.CONVERGED: "MigrationConverged",
        StepKind.MIGRATION_COMPLETED: "MigrationCompleted",
        StepKind.MIGRATION_ROLLED_BACK: "MigrationRolledBack",
        StepKind.FAILOVER_STARTED: "FailoverStarted",
        StepKind.UNSCHEDULABLE: "Unschedulable",
    }
    kind = kinds.get(step.kind)
    if kind is None:
        return None
    parts = [f"migration {step.migration_id}"] if step.migration_id else []
    if step.message:
        parts.append(step.message)
    elif step.workload is not None:
        parts.append(f"{step.workload.id} ({step.workload.service}) on {step.workload.node}")
    reasons = [reason for reason in step.reasons if reason not in step.message]  # a migration's message says why
    if reasons:
        parts.append("reason: " + ", ".join(reasons))
    if step.converged_after and not step.message:  # the orchestrator's CONVERGED message has the times
        took = ", ".join(f"{probe} {seconds * 1000:.0f} ms" for probe, seconds in step.converged_after)
        parts.append(f"probes {took}")
    service = str(step.workload.service) if step.workload is not None else None
    return kind, "; ".join(parts)[:TEXT_MAX], service


def placement_notes(note: Note) -> Callable[[PlacementStep], None]:
    """A ``PlacementEvents`` listener: runs under the placement hub's lock, so it only hands over."""

    def listener(step: PlacementStep) -> None:
        entry = placement_entry(step)
        if entry is not None:
            kind, text, service = entry
            note(kind, text, service=service)

    return listener


NACK_ERROR_MAX = 300
"""Characters of a NACK's error message on the timeline (the full one is in /api/v1/xds/clients)."""


def xds_nack_notes(note: Note) -> Callable[[str, str, str, str], None]:
    """A ``SnapshotCache`` NACK listener: a sidecar refused a response."""
    from meshctl.xds_types import short_name

    def listener(node: str, type_url: str, rejected_version: str, error: str) -> None:
        try:  # on an xDS stream's thread: a bug here must never fail the stream
            message = " ".join(error.split())  # Envoy's messages span lines
            if len(message) > NACK_ERROR_MAX:
                message = message[: NACK_ERROR_MAX - 1] + "…"
            note("XdsNack", f"{node} rejected {short_name(type_url)} version {rejected_version}: {message}")
        except Exception:
            LOG.exception("noting a NACK failed")

    return listener


def _utc(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


class CertificateNotes:
    """A PKI snapshot listener: each certificate not in the previous snapshot is issued (its identity's
    first) or rotated (a new one for an identity that had one); each serial newly on the revocation list
    is revoked. Many at once become one summary entry, so the timeline is not flooded at start."""

    def __init__(self, note: Note, listed: int = CERTIFICATES_LISTED) -> None:
        self._note = note
        self._listed = listed
        self._svids: Mapping[str, Svid] = {}  # subject -> its certificate, as last seen
        self._version: int | None = None  # of the snapshot seen last
        self._revoked: frozenset[int] = frozenset()
        self._revoked_identities: frozenset[str] = frozenset()

    def __call__(self, snapshot: IdentitySnapshot) -> None:
        # Per snapshot (one per Place with the PKI on): a pass that compares references, and sorts and
        # formats only what changed (at 10,000 identities a full sort and three dicts cost ~10 ms).
        from pki.identities import subjects_changed_since

        before, identities = self._svids, snapshot.identities
        named = subjects_changed_since(snapshot, self._version)  # one Place: its own subject
        if named is None:
            changed = [
                (subject, svid, before.get(subject))
                for subject, svid in identities.items()
                if before.get(subject) is not svid
            ]
        else:
            changed = [
                (subject, svid, before.get(subject))
                for subject in named
                if (svid := identities.get(subject)) is not None and before.get(subject) is not svid
            ]
        self._version = snapshot.version
        issued: list[tuple[str, str]] = []
        for subject, svid, previous in sorted(changed, key=lambda change: change[0]):
            if previous is not None and previous.info.serial == svid.info.serial:
                continue
            kind = "CertificateIssued" if previous is None else "CertificateRotated"
            issued.append((kind, f"{svid.spiffe_id} for {subject}, valid until {_utc(svid.info.not_after)}"))
        self._svids = snapshot.identities
        if len(issued) > self._listed:
            rotated = sum(1 for kind, _ in issued if kind == "CertificateRotated")
            self._note("CertificateIssued", f"{len(issued)} certificates issued ({rotated} of them rotations)")
        else:
            for kind, text in issued:
                self._note(kind, text)
        revocations = snapshot.revocations
        serials = frozenset(revocations.serials)
        newly = sorted(serials - self._revoked)
        new_identities = sorted(revocations.identities - self._revoked_identities)
        self._revoked, self._revoked_identities = serials, revocations.identities
        if len(newly) + len(new_identities) > self._listed:  # a stored list loaded at start, a mass revocation
            self._note(
                "CertificateRevoked",
                f"{len(newly)} certificates and {len(new_identities)} identities on the revocation list",
            )
            return
        if newly:  # whose they were: the certificates of the last snapshot or of this one
            known = {svid.info.serial: str(svid.spiffe_id) for svid in before.values()}
            known.update({svid.info.serial: str(svid.spiffe_id) for svid in snapshot.identities.values()})
        for serial in newly:
            whose = known.get(serial, "a certificate")
            until = _utc(revocations.serials[serial])
            self._note("CertificateRevoked", f"{whose}: serial {serial:x} revoked (it expires {until})")
        for identity in new_identities:
            self._note("CertificateRevoked", f"identity {identity} revoked: none of its certificates is accepted")
