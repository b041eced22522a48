"""The identity manager: the pure plan, and the shell with a fake issuer and a fixed clock; then once with
the real CA and a model state."""

from __future__ import annotations

import random
import threading
import time

import pytest

from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Resources, Workload, frozen_map
from pki.errors import PkiError
from pki.identities import (
    DUE,
    EXPIRED,
    ID_CHANGED,
    NEW,
    REVOKED_CERT,
    IdentityManager,
    desired_identities,
    plan_identities,
)
from pki.policy import PRUNE_DELAY_S, CertInfo, IssuancePolicy, RevocationList, rotation_time
from pki.rotation import RotationTimer
from tests.unit.pki.pki_helpers import NOW, TD, FakeIssuer

A = "spiffe://example.org/svc/web/w/web-1"
B = "spiffe://example.org/svc/api/w/api-1"
POLICY = IssuancePolicy(TD, jitter_fraction=0.0)


def held(spiffe_id: str, not_before: float = NOW, lifetime: int = 3600, serial: int = 1) -> CertInfo:
    return CertInfo(SpiffeId(spiffe_id), serial, int(not_before), int(not_before) + lifetime)


# -- the plan --------------------------------------------------------------------------------------


def test_plan_issues_new_and_changed_and_drops_the_unwanted() -> None:
    plan = plan_identities(
        {"web-1": A, "api-1": B},
        {"api-1": held(A), "old": held(A)},
        RevocationList(),
        POLICY,
        NOW,
    )
    assert plan.issue == (("api-1", B, ID_CHANGED), ("web-1", A, NEW))
    assert plan.drop == (("old", "no longer wanted"),)
    assert plan.refused == ()


def test_plan_rotates_at_half_life_and_replaces_expired() -> None:
    current = {"web-1": held(A, NOW - 1799), "api-1": held(B, NOW - 3600)}
    assert plan_identities({"web-1": A, "api-1": B}, current, RevocationList(), POLICY, NOW).issue == (
        ("api-1", B, EXPIRED),
    )
    later = plan_identities({"web-1": A, "api-1": B}, current, RevocationList(), POLICY, NOW + 1)
    assert ("web-1", A, DUE) in later.issue


def test_model_change_path_does_not_rotate_but_still_replaces_expired() -> None:
    current = {"web-1": held(A, NOW - 3000), "api-1": held(B, NOW - 3600)}
    plan = plan_identities({"web-1": A, "api-1": B}, current, RevocationList(), POLICY, NOW, rotate_due=False)
    assert plan.issue == (("api-1", B, EXPIRED),)


def test_plan_uses_the_injected_jitter() -> None:
    policy = IssuancePolicy(TD, jitter_fraction=0.5)
    current = {"web-1": held(A, NOW - 1000)}  # half-life at +1800; with full jitter at +900
    assert plan_identities({"web-1": A}, current, RevocationList(), policy, NOW, jitter=lambda _i: 0.0).empty
    due = plan_identities({"web-1": A}, current, RevocationList(), policy, NOW, jitter=lambda _i: 0.99)
    assert due.issue == (("web-1", A, DUE),)


def test_plan_refuses_bad_foreign_and_revoked_identities() -> None:
    revocations = RevocationList().revoke_identity(B)
    plan = plan_identities(
        {"a": "not-an-id", "b": "spiffe://other.org/x", "c": B, "d": A},
        {"c": held(B)},
        revocations,
        POLICY,
        NOW,
    )
    assert plan.issue == (("d", A, NEW),)
    assert plan.drop == (("c", "identity revoked"),)
    reasons = dict(plan.refused)
    assert "does not start with 'spiffe://'" in reasons["a"]
    assert "trust domain 'other.org', not 'example.org'" in reasons["b"]
    assert reasons["c"] == f"identity {B} is revoked"


def test_plan_reissues_a_revoked_certificate() -> None:
    cert = held(A, serial=77)
    plan = plan_identities({"web-1": A}, {"web-1": cert}, RevocationList().revoke_certificate(cert), POLICY, NOW)
    assert plan.issue == (("web-1", A, REVOKED_CERT),)


def test_desired_identities_from_the_model() -> None:
    def workload(wid: str, node: str | None) -> Workload:
        return Workload(
            WorkloadId(wid),
            ServiceName("web"),
            SpiffeId(f"spiffe://example.org/svc/web/w/{wid}"),
            Resources(1, 1),
            NodeId(node) if node else None,
        )

    state = FabricState(
        workloads=frozen_map({WorkloadId(w.id): w for w in (workload("w1", "n1"), workload("w2", None))})
    )
    assert desired_identities(state, TD, hosts=["u1"]) == {
        "w1": "spiffe://example.org/svc/web/w/w1",
        "u1": "spiffe://example.org/host/u1",
    }


# -- the shell -------------------------------------------------------------------------------------


def test_reconcile_issues_once_and_publishes_a_new_snapshot_only_on_change() -> None:
    issuer = FakeIssuer(policy=POLICY)
    manager = IdentityManager(issuer)
    assert manager.snapshot.version == 0 and manager.snapshot.bundle_pem == "BUNDLE"
    changes = manager.reconcile({"web-1": A, "api-1": B}, NOW)
    assert {(s, why) for s, _id, why in changes.issued} == {("web-1", NEW), ("api-1", NEW)}
    first = manager.snapshot
    assert first.version == 1 and set(first.identities) == {"web-1", "api-1"}
    assert first.identities["web-1"].private_key_pem.startswith("KEY")
    assert first.by_spiffe_id() == {A: ["web-1"], B: ["api-1"]}
    again = manager.reconcile({"web-1": A, "api-1": B}, NOW + 60)
    assert not again.changed and manager.snapshot is first
    assert len(issuer.issued) == 2


def test_tick_rotates_against_the_last_desired_set() -> None:
    issuer = FakeIssuer(policy=POLICY)
    manager = IdentityManager(issuer)
    manager.reconcile({"web-1": A}, NOW)
    assert manager.next_rotation_at() == pytest.approx(NOW - 10 + 1805)  # backdated 10 s: half of 3610 s
    assert not manager.tick(NOW + 1700).changed
    changes = manager.tick(NOW + 1800)
    assert changes.issued == (("web-1", A, DUE),)
    assert manager.snapshot.identities["web-1"].info.not_before == int(NOW + 1800) - 10


def test_removed_subjects_are_dropped() -> None:
    manager = IdentityManager(FakeIssuer(policy=POLICY))
    manager.reconcile({"web-1": A, "api-1": B}, NOW)
    changes = manager.reconcile({"web-1": A}, NOW)
    assert changes.dropped == (("api-1", "no longer wanted"),)
    assert set(manager.snapshot.identities) == {"web-1"}


def test_a_removed_subjects_certificate_is_revoked_not_left_to_expire() -> None:
    manager = IdentityManager(FakeIssuer(policy=POLICY))
    manager.reconcile({"web-1": A, "api-1": B}, NOW)
    gone = manager.snapshot.identities["api-1"].info
    kept = manager.snapshot.identities["web-1"].info
    manager.reconcile({"web-1": A}, NOW + 1)
    revocations = manager.snapshot.revocations
    assert revocations.reason_revoked(gone.serial, B) is not None
    assert revocations.reason_revoked(kept.serial, A) is None
    assert B not in revocations.identities  # the identity may be issued again (a new certificate)
    manager.reconcile({"web-1": A, "api-1": B}, NOW + 2)
    again = manager.snapshot.identities["api-1"].info
    assert again.serial != gone.serial and manager.snapshot.revocations.reason_revoked(again.serial, B) is None


def test_forced_rotation_replaces_and_revokes_the_old_certificate() -> None:
    manager = IdentityManager(FakeIssuer(policy=POLICY))
    manager.reconcile({"web-1": A, "web-1b": A, "api-1": B}, NOW)
    old = {s: svid.info for s, svid in manager.snapshot.identities.items()}
    changes = manager.rotate(A, NOW + 5)
    assert sorted(s for s, _id, _why in changes.issued) == ["web-1", "web-1b"]
    snapshot = manager.snapshot
    assert snapshot.identities["api-1"].info == old["api-1"]  # untouched
    for subject in ("web-1", "web-1b"):
        assert snapshot.identities[subject].info.serial != old[subject].serial
        assert snapshot.revocations.reason_revoked(old[subject].serial, A) is not None
    with pytest.raises(PkiError, match="nothing to rotate"):
        manager.rotate("spiffe://example.org/svc/none/w/x", NOW)


def test_revoked_identity_is_withdrawn_until_restored() -> None:
    manager = IdentityManager(FakeIssuer(policy=POLICY))
    manager.reconcile({"web-1": A, "api-1": B}, NOW)
    serial = manager.snapshot.identities["web-1"].info.serial
    changes = manager.revoke_identity(A, NOW)
    assert changes.dropped == (("web-1", "identity revoked"),)
    assert changes.refused == (("web-1", f"identity {A} is revoked"),)
    assert "web-1" not in manager.snapshot.identities
    assert manager.snapshot.revocations.reason_revoked(serial, A) is not None
    assert not manager.tick(NOW + 10).issued
    restored = manager.restore_identity(A, NOW + 20)
    assert restored.issued == (("web-1", A, NEW),)


def test_issuer_failure_keeps_the_old_certificate_and_reports() -> None:
    issuer = FakeIssuer(policy=POLICY)
    manager = IdentityManager(issuer)
    manager.reconcile({"web-1": A}, NOW)
    before = manager.snapshot.identities["web-1"]
    issuer.fail_for.add(A)
    changes = manager.tick(NOW + 1800)
    assert changes.failed == (("web-1", "the issuing CA expired (fake)"),) and not changes.changed
    assert manager.snapshot.identities["web-1"] is before


def test_revocations_are_pruned_as_certificates_expire() -> None:
    """An expired certificate leaves the list with its next change, or PRUNE_DELAY_S after it expired:
    a new list is a new CRL for every sidecar, not worth making for an expiry alone."""
    manager = IdentityManager(FakeIssuer(policy=POLICY))
    manager.reconcile({"web-1": A}, NOW)
    manager.rotate(A, NOW)
    revoked = manager.snapshot.revocations
    (expiry,) = revoked.serials.values()
    manager.tick(expiry + 1)  # expired, not long enough ago
    assert manager.snapshot.revocations is revoked
    manager.tick(expiry + PRUNE_DELAY_S)
    assert not manager.snapshot.revocations.serials


def test_a_change_of_the_revocation_list_prunes_the_expired_at_once() -> None:
    manager = IdentityManager(FakeIssuer(policy=POLICY))
    manager.reconcile({"web-1": A, "api-1": B}, NOW)
    manager.rotate(A, NOW)
    (expiry,) = manager.snapshot.revocations.serials.values()
    manager.tick(expiry + 1)  # (renews both certificates: they are due)
    manager.rotate(B, expiry + 2)
    serials = manager.snapshot.revocations.serials
    assert len(serials) == 1 and min(serials.values()) > expiry + 2  # B's, A's expired one gone with it


def test_with_the_real_ca_every_snapshot_svid_verifies() -> None:
    from pki.ca import CertificateAuthority

    ca = CertificateAuthority.create(TD, now=NOW)[0]
    manager = IdentityManager(ca)
    manager.reconcile({"web-1": A, "api-1": B}, NOW)
    snapshot = manager.snapshot
    assert snapshot.bundle_pem == ca.bundle_pem
    for subject, svid in snapshot.identities.items():
        assert ca.verify(svid.cert_chain_pem, NOW, snapshot.revocations) == svid.spiffe_id, subject
    old = snapshot.identities["web-1"]
    manager.rotate(A, NOW + 1)
    from pki.errors import Revoked

    with pytest.raises(Revoked):
        ca.verify(old.cert_chain_pem, NOW + 1, manager.snapshot.revocations)


# -- the timer (real threads, a short real lifetime) -----------------------------------------------


def test_rotation_timer_rotates_before_expiry_and_reports() -> None:
    issuer = FakeIssuer(policy=IssuancePolicy(TD, ttl_s=2, jitter_fraction=0.0))
    manager = IdentityManager(issuer)
    manager.reconcile({"web-1": A}, time.time())
    rotated = threading.Event()
    seen = []

    def on_change(changes):  # type: ignore[no-untyped-def]
        seen.append(changes)
        rotated.set()

    timer = RotationTimer(manager, on_change, max_sleep_s=5.0).start()
    try:
        assert rotated.wait(3.0), "no rotation within 3 s of a 2 s certificate"
    finally:
        timer.stop()
    assert seen[0].issued[0][2] == DUE
    assert manager.snapshot.version >= 2


# -- the service (what `edgectl run` composes) -------------------------------------------------------


def test_service_issues_on_model_changes_and_notifies_listeners() -> None:
    from netmodel.ids import HostId
    from netmodel.types import Host
    from pki.service import PkiService

    def placed(wid: str) -> Workload:
        return Workload(WorkloadId(wid), ServiceName("web"), SpiffeId(f"{A[:-6]}/{wid}"), Resources(1, 1), NodeId("n1"))

    hosts = {HostId("u1"): Host(HostId("u1"), None, "10.0.0.1"), HostId("02:aa"): Host(HostId("02:aa"), None, "")}
    state = FabricState(hosts=frozen_map(hosts), workloads=frozen_map({WorkloadId("w1"): placed("w1")}))
    clock = [NOW]
    service = PkiService(FakeIssuer(policy=POLICY), lambda: state, clock=lambda: clock[0], max_sleep_s=60)
    seen: list[int] = []
    service.subscribe(lambda snapshot: seen.append(snapshot.version))
    service.start()
    try:
        # "02:aa" (a MAC-like id) cannot be a SPIFFE path segment: skipped, not fatal.
        assert set(service.snapshot.identities) == {"w1", "u1"}
        assert service.snapshot.identities["u1"].spiffe_id == "spiffe://example.org/host/u1"
        assert seen == [1]
        bigger = FabricState(
            hosts=state.hosts,
            workloads=frozen_map({WorkloadId("w1"): placed("w1"), WorkloadId("w2"): placed("w2")}),
        )
        service.on_model_change(object(), bigger)
        assert set(service.snapshot.identities) == {"w1", "w2", "u1"} and seen == [1, 2]
        service.on_model_change(object(), bigger)  # nothing new: no notification
        assert seen == [1, 2]
        old_serial = service.snapshot.identities["w1"].info.serial
        service.rotate(str(service.snapshot.identities["w1"].spiffe_id))
        assert service.snapshot.identities["w1"].info.serial != old_serial and seen[-1] > 2
    finally:
        service.stop()


def test_service_crl_lists_the_revoked_serials() -> None:
    from cryptography import x509

    from pki.ca import CertificateAuthority
    from pki.service import PkiService

    ca = CertificateAuthority.create(TD, now=NOW)[0]
    workload = Workload(WorkloadId("w1"), ServiceName("web"), SpiffeId(A), Resources(1, 1), NodeId("n1"))
    state = FabricState(workloads=frozen_map({workload.id: workload}))
    service = PkiService(ca, lambda: state, clock=lambda: NOW, max_sleep_s=60).start()
    try:
        old = service.snapshot.identities["w1"].info.serial
        service.rotate(A)
        crl = x509.load_pem_x509_crl(service.crl_pem().encode())
        assert crl.get_revoked_certificate_by_serial_number(old) is not None
        assert crl.next_update_utc is not None and crl.next_update_utc.timestamp() == NOW + 86400
    finally:
        service.stop()


def test_identities_view_shows_no_keys() -> None:
    import json

    from pki.identities import identities_view

    manager = IdentityManager(FakeIssuer(policy=POLICY))
    manager.reconcile({"web-1": A}, NOW)
    manager.revoke_identity(B, NOW)
    view = identities_view(manager.snapshot, POLICY, NOW + 100)
    text = json.dumps(view)
    assert "KEY" not in text and "CHAIN" not in text
    row = view["identities"][0]  # type: ignore[index]
    assert row["subject"] == "web-1" and row["spiffe_id"] == A and row["expires_in_s"] == 3500
    assert row["rotates_at"] == NOW - 10 + 1805
    assert view["revoked_identities"] == [B] and view["trust_domain"] == TD


def test_the_model_path_plans_only_the_subjects_that_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    """One more workload costs one subject's plan, not one per certificate held (the model writer runs it)."""
    import pki.identities as identities

    planned: list[set[str]] = []
    real = identities.plan_identities

    def recording(desired: dict[str, SpiffeId], current: dict[str, CertInfo], *args: object, **kw: object) -> object:
        planned.append(set(desired) | set(current))
        return real(desired, current, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(identities, "plan_identities", recording)
    issuer = FakeIssuer(policy=POLICY)
    manager = IdentityManager(issuer)
    many = {f"web-{k}": f"spiffe://example.org/svc/web/w/web-{k}" for k in range(1, 51)}
    manager.reconcile(many, NOW, rotate_due=False, changed_only=True)  # all new: all planned
    assert len(planned[-1]) == 50 and len(manager.snapshot.identities) == 50
    moved = {**many, "web-51": "spiffe://example.org/svc/web/w/web-51", "web-2": B}
    del moved["web-3"]
    changes = manager.reconcile(moved, NOW + 1, rotate_due=False, changed_only=True)
    assert planned[-1] == {"web-51", "web-2", "web-3"}
    assert {(s, why) for s, _, why in changes.issued} == {("web-51", NEW), ("web-2", ID_CHANGED)}
    assert changes.dropped == (("web-3", "no longer wanted"),)
    assert set(manager.snapshot.identities) == set(moved)
    # the same outcome as a plan over every subject: nothing left for it to do
    assert not manager.reconcile(moved, NOW + 2, rotate_due=False).changed


def test_the_model_path_retries_an_issuance_that_failed() -> None:
    issuer = FakeIssuer(policy=POLICY, fail_for={A})
    manager = IdentityManager(issuer)
    assert manager.reconcile({"web-1": A}, NOW, rotate_due=False, changed_only=True).failed
    issuer.fail_for.clear()
    changes = manager.reconcile({"web-1": A, "api-1": B}, NOW + 1, rotate_due=False, changed_only=True)
    assert {s for s, _, _ in changes.issued} == {"web-1", "api-1"}


@pytest.mark.parametrize("seed", range(6))
def test_the_timer_issues_and_drops_what_a_plan_over_every_subject_would(seed: int) -> None:
    """``tick`` looks only at the certificates that came due (in the order they do) and at the issuances
    that failed; over random placements, removals and forced rotations, each tick issues and drops what a
    plan over every subject at that moment says, and ``next_rotation_at`` is the earliest rotation."""
    rng = random.Random(seed)
    policy = IssuancePolicy(TD, jitter_fraction=0.5)

    def jitter(info: CertInfo) -> float:  # spread over the window (the fake's serials are sequential)
        return (info.serial * 7919 % 1000) / 1000

    issuer = FakeIssuer(policy=policy)
    manager = IdentityManager(issuer, jitter=jitter)
    desired: dict[str, str] = {}
    now = NOW
    for step in range(300):
        now += rng.choice((0.0, 1.0, 60.0, 300.0, 900.0))
        action = rng.random()
        if action < 0.25:
            subject = f"w-{rng.randrange(40)}"
            desired[subject] = f"spiffe://{TD}/svc/s/w/{subject}"
            manager.reconcile_subjects({subject: desired[subject]}, now)
        elif action < 0.35 and desired:
            subject = rng.choice(sorted(desired))
            del desired[subject]
            manager.reconcile_subjects({subject: None}, now)
        elif action < 0.4 and manager.snapshot.identities:
            manager.rotate(rng.choice(sorted(manager.snapshot.identities.values(), key=str)).spiffe_id, now)
        elif action < 0.45:
            issuer.fail_for = {desired[s] for s in rng.sample(sorted(desired), min(2, len(desired)))}
        else:
            issuer.fail_for = set() if rng.random() < 0.5 else issuer.fail_for
            held = manager.snapshot
            plan = plan_identities(
                desired,
                {subject: svid.info for subject, svid in held.identities.items()},
                held.revocations,
                policy,
                now,
                rotate_due=True,
                jitter=jitter,
            )
            changes = manager.tick(now)
            wanted = {s for s, _id, _why in plan.issue}
            assert {s for s, _id, _why in changes.issued} | {s for s, _why in changes.failed} == wanted, step
            assert {s for s, _why in changes.dropped} == {s for s, _why in plan.drop}, step
        times = [
            rotation_time(s.info, policy.jitter_fraction, jitter(s.info)) for s in manager.snapshot.identities.values()
        ]
        assert manager.next_rotation_at() == min(times, default=None), step
