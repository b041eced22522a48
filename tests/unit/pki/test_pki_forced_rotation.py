"""Forced rotation (``POST /api/v1/pki/rotate``) is bounded and local: an identity is force-rotated at
most once per interval, so a flood of calls cannot grow the revocation list; and the unauthenticated HTTP
command is served only when the HTTP API listens on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from edgectl.http_access import is_loopback
from edgectl.pki_http import rotate_route
from netmodel.state import FabricState
from pki.errors import RotationTooSoon
from pki.policy import forced_rotation_wait, host_spiffe_id
from pki.service import PkiService
from tests.unit.pki.pki_helpers import NOW, TD, FakeIssuer

U1 = host_spiffe_id(TD, "u1")


@pytest.fixture
def clock() -> list[float]:
    return [NOW]


@pytest.fixture
def service(clock: list[float]) -> Iterator[PkiService]:
    pki = PkiService(FakeIssuer(), lambda: FabricState(), hosts=lambda _s: ["u1", "u2"], clock=lambda: clock[0])
    pki.start()
    try:
        yield pki
    finally:
        pki.stop()


def test_forced_rotation_wait_is_pure() -> None:
    assert forced_rotation_wait(None, NOW, 30) == 0.0
    assert forced_rotation_wait(NOW, NOW + 10, 30) == 20.0
    assert forced_rotation_wait(NOW, NOW + 30, 30) == 0.0


def test_an_identity_is_rotated_at_most_once_per_interval(service: PkiService, clock: list[float]) -> None:
    first = service.rotate(U1)
    assert [subject for subject, _id, _why in first.issued] == ["u1"]
    clock[0] += 10
    with pytest.raises(RotationTooSoon, match="retry in 20 s") as refused:
        service.rotate(U1)
    assert refused.value.retry_after_s == 20.0
    service.rotate(host_spiffe_id(TD, "u2"))  # another identity is not held back
    clock[0] += 20
    assert service.rotate(U1).issued


def test_a_thousand_calls_do_not_grow_the_revocation_list(service: PkiService, clock: list[float]) -> None:
    ttl = service.manager.policy.ttl_s
    for _ in range(1000):
        with contextlib.suppress(RotationTooSoon):
            service.rotate(U1)
    assert len(service.snapshot.revocations.serials) == 1  # was 1,000 (one per call)
    for _ in range(1000):  # one call every 10 s for 10,000 s: longer than an SVID lives
        clock[0] += 10
        with contextlib.suppress(RotationTooSoon):
            service.rotate(U1)
    # Revoked serials are kept only until they expire: at most one per interval of an SVID's life.
    assert len(service.snapshot.revocations.serials) <= ttl // 30 + 1


def test_http_rotate_answers_429_with_retry_after(service: PkiService) -> None:
    route = rotate_route(service, http_host="127.0.0.1")
    code, body = route(FabricState(), {"spiffe_id": U1})
    assert code == 200 and body["rotated"] == ["u1"]
    code, body = route(FabricState(), {"spiffe_id": U1})
    assert code == 429 and body["retry_after_s"] == 30.0 and "at most once every 30 s" in body["error"]
    assert route(FabricState(), {})[0] == 400
    code, body = route(FabricState(), {"spiffe_id": host_spiffe_id(TD, "nobody")})
    assert code == 400 and "nothing to rotate" in body["error"]


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "::", "edge-controller.example"])
def test_http_rotate_is_refused_unless_the_api_listens_on_loopback(service: PkiService, host: str) -> None:
    code, body = rotate_route(service, http_host=host)(FabricState(), {"spiffe_id": U1})
    assert code == 403 and "loopback" in body["error"] and "pki rotate --dir" in body["error"]
    assert not service.snapshot.revocations.serials  # nothing rotated


def test_loopback_hosts() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.1", "example.org"))
