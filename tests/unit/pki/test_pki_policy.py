"""The pure policy with a fake clock: lifetimes, backdating, the issuer's expiry, rotation at half-life
with bounded jitter, revocation lists."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netmodel.ids import SpiffeId
from pki.errors import InvalidLifetime, InvalidSpiffeId, InvalidSubjectName, IssuerExpired, WrongTrustDomain
from pki.policy import (
    DEFAULT_TTL_S,
    CertInfo,
    IssuancePolicy,
    RevocationList,
    due_for_rotation,
    expired,
    rotation_time,
    serial_jitter,
    template_for,
)
from tests.unit.pki.pki_helpers import NOW, TD

WEB1 = "spiffe://example.org/svc/web/w/web-1"
YEAR = 365 * 86400
POLICY = IssuancePolicy(TD)


def info(not_before: float = NOW, lifetime: int = 3600, serial: int = 7) -> CertInfo:
    return CertInfo(SpiffeId(WEB1), serial, int(not_before), int(not_before) + lifetime)


# -- templates -------------------------------------------------------------------------------------


def test_default_template_lives_one_hour_backdated_ten_seconds() -> None:
    template = template_for(WEB1, POLICY, NOW, issuer_not_after=int(NOW) + YEAR)
    assert template.spiffe_id == WEB1
    assert template.not_after == int(NOW) + DEFAULT_TTL_S == int(NOW) + 3600
    assert template.not_before == int(NOW) - 10
    assert template.subject == (("O", "edgectl"), ("CN", "web-1"))
    assert (template.dns_names, template.ip_addresses) == ((), ())


def test_ttl_is_capped_by_the_issuers_expiry() -> None:
    issuer_not_after = int(NOW) + 600
    template = template_for(WEB1, POLICY, NOW, issuer_not_after)
    assert template.not_after == issuer_not_after
    # A shorter life rotates sooner: half-life comes from the capped lifetime.
    capped = CertInfo(SpiffeId(WEB1), 1, template.not_before, template.not_after)
    assert rotation_time(capped, 0.0, 0.0) == template.not_before + (template.not_after - template.not_before) / 2


def test_an_expired_issuer_issues_nothing() -> None:
    with pytest.raises(IssuerExpired, match="expired"):
        template_for(WEB1, POLICY, NOW, issuer_not_after=int(NOW))


def test_backdate_never_precedes_the_issuer_and_shrinks_for_short_ttls() -> None:
    template = template_for(WEB1, POLICY, NOW, int(NOW) + YEAR, issuer_not_before=int(NOW) - 3)
    assert template.not_before == int(NOW) - 3
    short = template_for(WEB1, POLICY, NOW, int(NOW) + YEAR, ttl_s=10)
    assert (short.not_before, short.not_after) == (int(NOW) - 1, int(NOW) + 10)  # backdate <= ttl/10


def test_fractional_now_is_floored_consistently() -> None:
    template = template_for(WEB1, POLICY, NOW + 0.99, int(NOW) + YEAR)
    assert template.not_after == int(NOW) + 3600


@pytest.mark.parametrize(
    ("ttl", "reason"),
    [(0, "must be positive"), (-5, "must be positive"), (31 * 86400, "longer than the allowed"), (1.5, "whole number")],
)
def test_ttl_out_of_bounds_is_refused(ttl: object, reason: str) -> None:
    with pytest.raises(InvalidLifetime, match=reason):
        template_for(WEB1, POLICY, NOW, int(NOW) + YEAR, ttl_s=ttl)  # type: ignore[arg-type]


def test_template_refuses_other_trust_domains_and_trust_domain_ids() -> None:
    with pytest.raises(WrongTrustDomain):
        template_for("spiffe://other.org/x", POLICY, NOW, int(NOW) + YEAR)
    with pytest.raises(InvalidSpiffeId, match="not a workload"):
        template_for("spiffe://example.org", POLICY, NOW, int(NOW) + YEAR)


def test_extra_sans_are_validated() -> None:
    template = template_for(
        WEB1, POLICY, NOW, int(NOW) + YEAR, ip_addresses=["127.0.0.1", "::1"], dns_names=["ctl.example.org"]
    )
    assert template.ip_addresses == ("127.0.0.1", "::1") and template.dns_names == ("ctl.example.org",)
    with pytest.raises(InvalidSubjectName, match="not an IP address"):
        template_for(WEB1, POLICY, NOW, int(NOW) + YEAR, ip_addresses=["localhost"])
    with pytest.raises(InvalidSubjectName, match="not a DNS name"):
        template_for(WEB1, POLICY, NOW, int(NOW) + YEAR, dns_names=["-bad-.org"])


def test_common_name_is_bounded() -> None:
    long_id = "spiffe://example.org/" + "x" * 100
    assert len(dict(template_for(long_id, POLICY, NOW, int(NOW) + YEAR).subject)["CN"]) == 64


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttl_s": 0},
        {"ttl_s": 100, "max_ttl_s": 50},
        {"max_ttl_s": 0},
        {"backdate_s": -1},
        {"jitter_fraction": 0.6},
        {"jitter_fraction": -0.1},
    ],
)
def test_policy_checks_itself(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidLifetime):
        IssuancePolicy(TD, **kwargs)  # type: ignore[arg-type]


def test_policy_needs_a_valid_trust_domain() -> None:
    with pytest.raises(InvalidSpiffeId):
        IssuancePolicy("Bad_Domain")


# -- rotation --------------------------------------------------------------------------------------


def test_rotation_without_jitter_is_at_half_life() -> None:
    cert = info(lifetime=3600)
    assert rotation_time(cert, 0.0, 0.99) == NOW + 1800
    assert not due_for_rotation(cert, NOW + 1799.9, 0.0, 0.5)
    assert due_for_rotation(cert, NOW + 1800, 0.0, 0.5)


def test_jitter_brings_rotation_forward_never_later() -> None:
    cert = info(lifetime=3600)
    assert rotation_time(cert, 0.1, 0.0) == NOW + 1800
    assert rotation_time(cert, 0.1, 0.5) == pytest.approx(NOW + 1800 - 90)


@settings(max_examples=300, deadline=None)
@given(
    lifetime=st.integers(min_value=1, max_value=30 * 86400),
    jitter=st.floats(min_value=0.0, max_value=0.5),
    rng=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_rotation_time_stays_in_the_jitter_window(lifetime: int, jitter: float, rng: float) -> None:
    cert = info(lifetime=lifetime)
    half = lifetime / 2
    at = rotation_time(cert, jitter, rng)
    assert NOW + half - jitter * half - 1e-6 <= at <= NOW + half + 1e-6
    assert at >= NOW + half / 2 - 1e-6  # at least half of the life is used (jitter <= 0.5)
    assert at == rotation_time(cert, jitter, rng)  # deterministic for one injected value
    assert cert.not_after - at >= half - 1e-6  # at least half the life remains for the successor's push


@pytest.mark.parametrize(("jitter", "rng"), [(0.6, 0.1), (-0.1, 0.1), (0.1, 1.0), (0.1, -0.01)])
def test_rotation_time_refuses_out_of_range_inputs(jitter: float, rng: float) -> None:
    with pytest.raises(ValueError):
        rotation_time(info(), jitter, rng)


def test_serial_jitter_is_fixed_per_certificate_and_in_range() -> None:
    values = [serial_jitter(info(serial=s)) for s in (0, 1, 999_999, 2**159 - 1, 123456789)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert serial_jitter(info(serial=42)) == serial_jitter(info(serial=42))
    assert len(set(values)) == len(values)


def test_expired_at_not_after() -> None:
    cert = info(lifetime=100)
    assert not expired(cert, NOW + 99.9)
    assert expired(cert, NOW + 100)


# -- revocation ------------------------------------------------------------------------------------


def test_revocation_by_serial_and_by_identity() -> None:
    cert = info(serial=0xABC)
    empty = RevocationList()
    assert empty.reason_revoked(cert.serial, cert.spiffe_id) is None
    revoked = empty.revoke_certificate(cert)
    assert revoked.reason_revoked(0xABC, WEB1) == f"certificate serial abc of {WEB1} is revoked"
    assert revoked.reason_revoked(0xABD, WEB1) is None
    assert empty.reason_revoked(0xABC, WEB1) is None  # values, not mutation
    by_identity = empty.revoke_identity(WEB1)
    assert by_identity.reason_revoked(1, WEB1) == f"identity {WEB1} is revoked"
    assert by_identity.restore_identity(WEB1).reason_revoked(1, WEB1) is None
    assert revoked.revoke_certificate(cert) is revoked and by_identity.revoke_identity(WEB1) is by_identity


def test_revoked_serials_are_pruned_once_expired() -> None:
    revocations = RevocationList().revoke_certificates([info(serial=1, lifetime=10), info(serial=2, lifetime=100)])
    assert set(revocations.pruned(NOW + 50).serials) == {2}
    assert revocations.pruned(NOW).serials == revocations.serials
    assert revocations.pruned(NOW) is revocations


def test_a_prune_is_due_once_a_listed_certificate_has_been_expired_for_the_delay() -> None:
    revocations = RevocationList().revoke_certificates([info(serial=1, lifetime=10), info(serial=2, lifetime=100)])
    expiry = min(revocations.serials.values())
    assert not revocations.prune_due(expiry + 29, delay_s=30)
    assert revocations.prune_due(expiry + 30, delay_s=30)
    assert not RevocationList().prune_due(NOW + 10**9)  # nothing listed: never
    assert revocations == RevocationList(revocations.serials)  # (the memo is no part of its value)


def test_revocation_list_round_trips_through_a_dict() -> None:
    revocations = RevocationList().revoke_certificate(info(serial=2**150 + 5)).revoke_identity(WEB1)
    assert RevocationList.from_dict(revocations.as_dict()) == revocations
    with pytest.raises(InvalidSpiffeId):
        RevocationList.from_dict({"serials": {}, "identities": ["not-an-id"]})
    with pytest.raises(ValueError):
        RevocationList.from_dict({"serials": [], "identities": []})
