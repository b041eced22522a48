"""Which SVIDs should exist, and keeping them so: issue for new subjects, rotate before expiry, forget
removed ones (their certificates are revoked: the key was handed out, so it is not left to expire),
force a rotation when a key is compromised.

Pure core, thin shell: ``plan_identities`` decides (a pure function of the wanted identities, the
current certificates, the revocations and ``now``); ``IdentityManager`` applies a plan with an injected
``Issuer`` (``CertificateAuthority`` is one) and publishes an immutable ``IdentitySnapshot``. No
cryptography, grpc or I/O here: the controller calls ``reconcile`` on model changes and on a timer,
and hands the snapshot to meshctl's SDS.

A *subject* is whoever holds one key: a workload's sidecar (keyed by workload id, which is also its
Envoy node id) or a host's client sidecar (keyed by host id). Two subjects may share a SPIFFE id;
each still gets its own key.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from netmodel.ids import SpiffeId
from netmodel.state import FabricState
from netmodel.types import dict_copy, frozen_map
from pki.errors import PkiError
from pki.policy import (
    CertInfo,
    IssuancePolicy,
    RevocationList,
    Svid,
    due_for_rotation,
    expired,
    host_spiffe_id,
    merge_revocations,
    parse_leaf_spiffe_id,
    rotation_time,
    serial_jitter,
)


class Issuer(Protocol):
    """What the manager needs of a CA."""

    @property
    def policy(self) -> IssuancePolicy: ...

    @property
    def bundle_pem(self) -> str: ...

    def issue_with_new_key(self, spiffe_id: str, now: float) -> Svid: ...


def desired_identities(state: FabricState, trust_domain: str, hosts: Iterable[str] = ()) -> dict[str, SpiffeId]:
    """Subject -> SPIFFE id the model asks for: every placed workload (its own ``spiffe_id``), and a
    client identity for each of ``hosts`` (meshctl's ``spiffe://<td>/host/<host>``).

    Unplaced workloads get nothing yet: no sidecar runs for them. Issuing happens in the same model
    handler that places them, so the SVID exists before meshctl publishes an endpoint for it.
    """
    wanted: dict[str, SpiffeId] = {
        str(workload.id): workload.spiffe_id for workload in state.workloads.values() if workload.node is not None
    }
    for host in hosts:
        wanted[str(host)] = host_spiffe_id(trust_domain, str(host))
    return wanted


# -- the plan (pure) -------------------------------------------------------------------------------

NEW = "new"
ID_CHANGED = "spiffe id changed"
DUE = "due for rotation"
EXPIRED = "expired"
REVOKED_CERT = "certificate revoked"


@dataclass(frozen=True, slots=True)
class IdentityPlan:
    issue: tuple[tuple[str, SpiffeId, str], ...] = ()
    """(subject, SPIFFE id, why) to issue now."""
    drop: tuple[tuple[str, str], ...] = ()
    """(subject, why) whose certificate is withdrawn and not replaced."""
    refused: tuple[tuple[str, str], ...] = ()
    """(subject, why) the model wants but that cannot be issued (bad id, foreign trust domain, revoked)."""

    @property
    def empty(self) -> bool:
        return not (self.issue or self.drop)


def plan_identities(
    desired: Mapping[str, str],
    current: Mapping[str, CertInfo],
    revocations: RevocationList,
    policy: IssuancePolicy,
    now: float,
    *,
    rotate_due: bool = True,
    jitter: Callable[[CertInfo], float] = serial_jitter,
) -> IdentityPlan:
    """Compare what should exist with what does. ``rotate_due=False`` skips rotation (the model-change
    path only issues what is missing; the timer rotates)."""
    issue: list[tuple[str, SpiffeId, str]] = []
    drop: list[tuple[str, str]] = []
    refused: list[tuple[str, str]] = []
    for subject in sorted(desired):
        spiffe_id = desired[subject]
        try:
            parts = parse_leaf_spiffe_id(spiffe_id, policy.trust_domain)
        except PkiError as exc:
            refused.append((subject, str(exc)))
            if subject in current:
                drop.append((subject, f"no valid identity: {exc}"))
            continue
        if spiffe_id in revocations.identities:
            refused.append((subject, f"identity {spiffe_id} is revoked"))
            if subject in current:
                drop.append((subject, "identity revoked"))
            continue
        held = current.get(subject)
        reason = _reissue_reason(held, parts.uri, revocations, policy, now, rotate_due, jitter)
        if reason is not None:
            issue.append((subject, parts.uri, reason))
    for subject in sorted(set(current) - set(desired)):
        drop.append((subject, "no longer wanted"))
    return IdentityPlan(tuple(issue), tuple(drop), tuple(refused))


def _reissue_reason(
    held: CertInfo | None,
    spiffe_id: SpiffeId,
    revocations: RevocationList,
    policy: IssuancePolicy,
    now: float,
    rotate_due: bool,
    jitter: Callable[[CertInfo], float],
) -> str | None:
    if held is None:
        return NEW
    if held.spiffe_id != spiffe_id:
        return ID_CHANGED
    if held.serial in revocations.serials:
        return REVOKED_CERT
    if expired(held, now):
        return EXPIRED  # even off the timer path: an expired certificate is useless
    if rotate_due and due_for_rotation(held, now, policy.jitter_fraction, jitter(held)):
        return DUE
    return None


# -- the shell -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdentitySnapshot:
    """Everything meshctl's SDS serves, as one immutable value: swap it in, never mutate it."""

    version: int = 0
    identities: Mapping[str, Svid] = field(default_factory=frozen_map)
    """Subject (Envoy node id) -> its SVID with the private key."""
    bundle_pem: str = field(default="", repr=False)
    revocations: RevocationList = field(default_factory=RevocationList)
    changed_from: tuple[int, frozenset[str]] | None = None
    """(the version this snapshot was made from, the subjects whose SVID is not the same as in that one):
    a listener that holds that version updates what it made of it by those subjects alone. None: not
    known."""

    def by_spiffe_id(self) -> dict[SpiffeId, list[str]]:
        out: dict[SpiffeId, list[str]] = {}
        for subject, svid in sorted(self.identities.items()):
            out.setdefault(svid.spiffe_id, []).append(subject)
        return out


def subjects_changed_since(snapshot: IdentitySnapshot, version: int | None) -> frozenset[str] | None:
    """The subjects whose SVID differs between the snapshot of ``version`` and ``snapshot``, when
    ``snapshot`` was made from that one (``changed_from``); None: not known (compare the identities)."""
    made_from = snapshot.changed_from
    if made_from is None or version is None or made_from[0] != version:
        return None
    return made_from[1]


@dataclass(frozen=True, slots=True)
class IdentityChanges:
    issued: tuple[tuple[str, SpiffeId, str], ...] = ()
    dropped: tuple[tuple[str, str], ...] = ()
    refused: tuple[tuple[str, str], ...] = ()
    """(subject, why) the policy will not issue for (an invalid or foreign SPIFFE id, a revoked identity)."""
    failed: tuple[tuple[str, str], ...] = ()
    """(subject, why) the issuer failed on (an expired CA): retried on the next tick."""
    snapshot: IdentitySnapshot = field(default_factory=IdentitySnapshot)
    revocations_changed: bool = False
    """The revocation list changed (an identity revoked or restored, another writer's revocations taken
    in) though no certificate may have: listeners still hear of it (peers are checked again)."""
    stored: bool | None = None
    """For an operator's revocation (``PkiService.rotate``, ``revoke_node``): whether the revocation list was
    stored everywhere before the call returned (False: in force here, retried; None: not asked)."""

    @property
    def changed(self) -> bool:
        return bool(self.issued or self.dropped or self.revocations_changed)


class IdentityManager:
    """Holds the current SVIDs and applies plans. Thread-safe: the model writer (new workloads) and the
    rotation timer both call it; one lock serialises them (issuing is ~0.5 ms per SVID)."""

    def __init__(
        self,
        issuer: Issuer,
        *,
        revocations: RevocationList | None = None,
        jitter: Callable[[CertInfo], float] = serial_jitter,
    ) -> None:
        self._issuer = issuer
        self._jitter = jitter
        self._lock = threading.Lock()
        self._snapshot = IdentitySnapshot(
            bundle_pem=issuer.bundle_pem, revocations=revocations if revocations is not None else RevocationList()
        )
        self._desired: dict[str, SpiffeId] = {}
        self._failed_subjects: set[str] = set()  # the issuer failed on them last time (an expired CA)
        self._due: list[tuple[float, str, int]] = []
        """(rotation time, subject, serial) of each certificate issued, a heap: the timer looks at what is
        due, not at every certificate (10,000 at scale, ~30 ms a tick, every 50 ms while a rotation wave
        lasts). An entry of a certificate replaced or dropped since is skipped when it comes up."""

    @property
    def snapshot(self) -> IdentitySnapshot:
        return self._snapshot  # one reference read: readers never see a half-applied change

    @property
    def policy(self) -> IssuancePolicy:
        return self._issuer.policy

    def reconcile(
        self, desired: Mapping[str, str], now: float, *, rotate_due: bool = True, changed_only: bool = False
    ) -> IdentityChanges:
        """Make the SVIDs match ``desired`` (subject -> SPIFFE id) at ``now``; remember it for ``tick``.
        ``changed_only`` (the model-change path): look only at the subjects whose SPIFFE id is new, changed
        or gone since the last ``desired`` (one Place: one subject, not every certificate held); the others
        are the timer's (``tick``: rotation, expiry, a failed issuance retried)."""
        with self._lock:
            wanted = {subject: SpiffeId(spiffe_id) for subject, spiffe_id in desired.items()}
            subjects = None
            if changed_only:
                before = self._desired
                subjects = {s for s, spiffe_id in wanted.items() if before.get(s) != spiffe_id} | (
                    before.keys() - wanted.keys()
                )
                subjects |= self._failed_subjects  # an issuance that failed is tried again at every change
            self._desired = wanted
            return self._apply(now, rotate_due=rotate_due, subjects=subjects)

    def reconcile_subjects(self, wanted: Mapping[str, str | None], now: float) -> IdentityChanges:
        """The model-change path when the caller knows which subjects a change touched: ``wanted`` maps each
        to its SPIFFE id now (None: no longer wanted); every other desired subject stays as it was. A
        placement costs its own subject, not a pass over every desired one (10,000 at scale)."""
        with self._lock:
            subjects = set(self._failed_subjects)  # an issuance that failed is tried again at every change
            for subject, spiffe_id in wanted.items():
                if spiffe_id is None:
                    if self._desired.pop(subject, None) is not None:
                        subjects.add(subject)
                elif self._desired.get(subject) != spiffe_id:
                    self._desired[subject] = SpiffeId(spiffe_id)
                    subjects.add(subject)
            if not subjects:
                return IdentityChanges(snapshot=self._snapshot)
            return self._apply(now, rotate_due=False, subjects=subjects)

    def tick(self, now: float) -> IdentityChanges:
        """The timer path: rotate what is due against the last desired set (the certificates come up in
        the order they come due; an issuance that failed is tried again)."""
        with self._lock:
            heap = self._due
            came_due: list[tuple[float, str, int]] = []
            while heap and heap[0][0] <= now:
                entry = heapq.heappop(heap)
                if self._holds(entry[1], entry[2]):
                    came_due.append(entry)
            changes = self._apply(now, rotate_due=True, subjects={e[1] for e in came_due} | self._failed_subjects)
            for entry in came_due:  # not replaced (the issuer failed): still due, and the next tick's
                if self._holds(entry[1], entry[2]):
                    heapq.heappush(heap, entry)
            return changes

    def next_rotation_at(self) -> float | None:
        """When the earliest current certificate comes due (for the timer), or None if there are none."""
        with self._lock:
            heap = self._due
            while heap and not self._holds(heap[0][1], heap[0][2]):
                heapq.heappop(heap)
            return heap[0][0] if heap else None

    def _holds(self, subject: str, serial: int) -> bool:
        svid = self._snapshot.identities.get(subject)
        return svid is not None and svid.info.serial == serial

    def _schedule(self, subject: str, info: CertInfo) -> None:
        heap = self._due
        if len(heap) > 2 * len(self._snapshot.identities) + 64:  # mostly entries of replaced certificates
            heap[:] = [entry for entry in heap if self._holds(entry[1], entry[2])]
            heapq.heapify(heap)
        heapq.heappush(
            heap, (rotation_time(info, self.policy.jitter_fraction, self._jitter(info)), subject, info.serial)
        )

    def rotate(self, spiffe_id: str, now: float) -> IdentityChanges:
        """Force new keys for every subject holding ``spiffe_id`` and revoke their current certificates
        (a compromised key): listeners that load the new revocation list refuse the old certificate."""
        with self._lock:
            held = [svid.info for svid in self._snapshot.identities.values() if svid.spiffe_id == spiffe_id]
            if not held:
                raise PkiError(f"no current certificate for {spiffe_id}: nothing to rotate")
            self._set_revocations(self._snapshot.revocations.revoke_certificates(held).pruned(now))
            return self._apply(now, rotate_due=False)

    def revoke_identity(self, spiffe_id: str, now: float) -> IdentityChanges:
        """Refuse ``spiffe_id`` from now on: its certificates are revoked and no new one is issued."""
        with self._lock:
            held = [svid.info for svid in self._snapshot.identities.values() if svid.spiffe_id == spiffe_id]
            revocations = self._snapshot.revocations.revoke_identity(spiffe_id).revoke_certificates(held)
            return self._with_revocations(revocations.pruned(now), now)

    def restore_identity(self, spiffe_id: str, now: float) -> IdentityChanges:
        with self._lock:
            return self._with_revocations(self._snapshot.revocations.restore_identity(spiffe_id), now)

    def merge_revocations(self, base: RevocationList, theirs: RevocationList, now: float) -> IdentityChanges:
        """Take in what another writer of the stored list changed since ``base`` (``pki rotate --dir``,
        another replica; ``pki.policy.merge_revocations``): a certificate held here that is now revoked is
        replaced, an identity now revoked is dropped."""
        with self._lock:
            return self._with_revocations(merge_revocations(base, self._snapshot.revocations, theirs), now)

    def _with_revocations(self, revocations: RevocationList, now: float) -> IdentityChanges:
        if revocations == self._snapshot.revocations:
            return IdentityChanges(snapshot=self._snapshot)
        self._set_revocations(revocations)
        changes = self._apply(now, rotate_due=False)
        return replace(changes, revocations_changed=True)

    def _set_revocations(self, revocations: RevocationList) -> None:
        old = self._snapshot
        self._snapshot = IdentitySnapshot(
            old.version + 1, old.identities, old.bundle_pem, revocations, (old.version, frozenset())
        )

    def _apply(self, now: float, *, rotate_due: bool, subjects: set[str] | None = None) -> IdentityChanges:
        """``subjects``: plan for these only (None: every subject wanted or held)."""
        old = self._snapshot
        desired: Mapping[str, SpiffeId] = self._desired
        if subjects is None:
            current = {subject: svid.info for subject, svid in old.identities.items()}
        else:
            desired = {s: self._desired[s] for s in subjects if s in self._desired}
            current = {s: old.identities[s].info for s in subjects if s in old.identities}
        plan = plan_identities(
            desired, current, old.revocations, self.policy, now, rotate_due=rotate_due, jitter=self._jitter
        )
        identities = dict_copy(old.identities)  # (one C-level copy: dict() of a frozen map walked it entry by entry)
        issued: list[tuple[str, SpiffeId, str]] = []
        failed: list[tuple[str, str]] = []
        for subject, spiffe_id, why in plan.issue:
            try:
                identities[subject] = self._issuer.issue_with_new_key(spiffe_id, now)
            except PkiError as exc:
                failed.append((subject, str(exc)))  # keep the old certificate (if any) while it lasts
                continue
            issued.append((subject, spiffe_id, why))
        # A dropped subject's certificate is revoked, not left to expire: its key was served to a
        # sidecar (and the node agent that ran it), and whoever still holds it must not be trusted.
        dropped = [old.identities[subject].info for subject, _why in plan.drop if subject in old.identities]
        for subject, _why in plan.drop:
            identities.pop(subject, None)
        revocations = old.revocations.revoke_certificates(dropped)
        if revocations is not old.revocations or revocations.prune_due(now):
            revocations = revocations.pruned(now)  # (alone, an expiry is not worth a CRL to every sidecar)
        if issued or plan.drop or revocations is not old.revocations:
            changed = frozenset(subject for subject, _, _ in issued) | {
                subject for subject, _why in plan.drop if subject in old.identities
            }
            self._snapshot = IdentitySnapshot(
                old.version + 1, frozen_map(identities), old.bundle_pem, revocations, (old.version, changed)
            )
            for subject, _spiffe_id, _why in issued:
                self._schedule(subject, identities[subject].info)
        if subjects is None:
            self._failed_subjects = {subject for subject, _ in failed}
        else:
            self._failed_subjects = (self._failed_subjects - subjects) | {subject for subject, _ in failed}
        return IdentityChanges(tuple(issued), plan.drop, plan.refused, tuple(failed), self._snapshot)


def identities_view(snapshot: IdentitySnapshot, policy: IssuancePolicy, now: float) -> dict[str, object]:
    """JSON for ``GET /api/v1/identities``: who holds which SPIFFE id until when. Never a key."""
    rows = []
    for subject, svid in sorted(snapshot.identities.items()):
        info = svid.info
        rows.append(
            {
                "subject": subject,
                "spiffe_id": svid.spiffe_id,
                "serial": format(info.serial, "x"),
                "not_before": info.not_before,
                "not_after": info.not_after,
                "rotates_at": round(rotation_time(info, policy.jitter_fraction, serial_jitter(info)), 3),
                "expires_in_s": round(info.not_after - now, 3),
            }
        )
    return {
        "version": snapshot.version,
        "trust_domain": policy.trust_domain,
        "identities": rows,
        "revoked_serials": sorted(format(serial, "x") for serial in snapshot.revocations.serials),
        "revoked_identities": sorted(snapshot.revocations.identities),
    }
