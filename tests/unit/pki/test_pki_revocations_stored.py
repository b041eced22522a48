"""The revocation list outlives the controller and is shared with ``pki rotate --dir``: a real CA
directory, the real CA signing certificates and CRLs, the controller's ``PkiService`` stopped and
started again on it. Each writer keeps the other's revocations (``merge_revocations``, a
compare-and-set on the file)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509

from netmodel.events import NodeWentDown
from netmodel.ids import NodeId
from netmodel.state import FabricState
from pki.cli import PkiRunOptions
from pki.errors import CaCorrupt
from pki.identities import IdentitySnapshot
from pki.policy import CertInfo, RevocationList, host_spiffe_id, merge_revocations, node_spiffe_id
from pki.revocation_store import FileRevocationStore
from pki.service import PkiService
from tests.unit.pki.pki_helpers import NOW
from tests.unit.pki.test_pki_cli import edgectl

TD = "example.org"
U1, U2 = host_spiffe_id(TD, "u1"), host_spiffe_id(TD, "u2")
ALICE = f"spiffe://{TD}/operator/alice"


def cert(serial: int, spiffe_id: str = U1, not_after: float = NOW + 3600) -> CertInfo:
    return CertInfo(spiffe_id, serial, int(NOW), int(not_after))  # type: ignore[arg-type]


# -- the merge (pure) ------------------------------------------------------------------------------


def test_a_serial_revoked_on_either_side_stays_revoked() -> None:
    base = RevocationList().revoke_certificate(cert(1))
    ours, theirs = base.revoke_certificate(cert(2)), base.revoke_certificate(cert(3))
    assert set(merge_revocations(base, ours, theirs).serials) == {1, 2, 3}
    assert merge_revocations(base, ours, base) is ours  # nothing new on their side: ours, as it is
    assert merge_revocations(base, base, theirs) == theirs
    assert merge_revocations(base, ours, ours.revoke_certificate(cert(1))) is ours  # a subset adds nothing


def test_identities_follow_the_side_that_changed_them() -> None:
    node_a, node_b, node_c = (node_spiffe_id(TD, n) for n in ("a", "b", "c"))
    base = RevocationList().revoke_identity(node_a).revoke_identity(node_b)
    ours = base.restore_identity(node_a).revoke_identity(node_c)  # restored a, revoked c here
    theirs = base.restore_identity(node_b)  # restored b there
    assert merge_revocations(base, ours, theirs).identities == {node_c}
    # Their revocation of an identity we never touched is kept; our restore of one they left is too.
    assert merge_revocations(base, ours, base.revoke_identity(U1)).identities == {node_b, node_c, U1}
    # An identity taken in keeps our serials map (the same map: the same CRL, no new bundle to every sidecar).
    listed = base.revoke_certificate(cert(1))
    parsed = RevocationList.from_dict(listed.revoke_identity(U1).as_dict())
    assert merge_revocations(listed, listed, parsed).serials is listed.serials


# -- the CA directory ------------------------------------------------------------------------------


@pytest.fixture
def ca_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert edgectl("pki", "init", "--trust-domain", TD, "--dir", str(tmp_path / "ca")) == 0
    capsys.readouterr()
    return tmp_path / "ca"


@pytest.fixture
def start_pki(ca_dir: Path) -> Iterator[Callable[..., PkiService]]:
    """``PkiService.from_options`` as ``edgectl run --pki-dir`` makes it (hosts u1 and u2 hold SVIDs)."""
    started: list[PkiService] = []

    def start(hosts: Callable[[FabricState], list[str]] = lambda _s: ["u1", "u2"]) -> PkiService:
        options = PkiRunOptions(str(ca_dir), None, 600, False)
        service = PkiService.from_options(options, FabricState, hosts=hosts).start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def stored(ca_dir: Path) -> dict[str, object]:
    return json.loads((ca_dir / "revoked.json").read_text())


def stored_serials(ca_dir: Path) -> set[int]:
    path = ca_dir / "revoked.json"
    return set(RevocationList.from_dict(stored(ca_dir)).serials) if path.exists() else set()


def crl_serials(pem: str) -> set[int]:
    return {entry.serial_number for entry in x509.load_pem_x509_crl(pem.encode())}


def held_serial(service: PkiService, subject: str) -> int:
    return service.snapshot.identities[subject].info.serial


def test_a_forced_rotation_is_stored_and_still_refused_after_a_restart(
    start_pki: Callable[..., PkiService], ca_dir: Path
) -> None:
    first = start_pki()
    old = held_serial(first, "u1")
    first.rotate(U1)
    # Stored before the rotation is answered, with a CRL for verifiers outside the mesh.
    assert old in stored_serials(ca_dir)
    assert old in crl_serials((ca_dir / "crl.pem").read_text())
    first.stop()

    again = start_pki()
    assert old in again.snapshot.revocations.serials
    assert old in crl_serials(again.crl_pem())  # the CRL every sidecar gets lists it again


def test_a_node_revocation_outlives_a_restart_and_so_does_its_restore(
    start_pki: Callable[..., PkiService], ca_dir: Path
) -> None:
    first = start_pki()
    crl_before = first.crl_pem()
    first.revoke_node("ea-n1")
    assert first.crl_pem() == crl_before  # an identity is not in a CRL: no new bundle for every sidecar
    assert stored(ca_dir)["identities"] == [node_spiffe_id(TD, "ea-n1")]
    first.stop()
    second = start_pki()
    assert second.node_revoked("ea-n1")
    second.restore_node("ea-n1")
    second.stop()
    assert not start_pki().node_revoked("ea-n1")


def test_what_pki_rotate_dir_revokes_is_refused_by_a_running_controller(
    start_pki: Callable[..., PkiService], ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = tmp_path / "alice"
    assert edgectl("pki", "issue", "--dir", str(ca_dir), "--spiffe-id", ALICE, "--out", str(alice)) == 0
    service = start_pki()
    alice_pem = (alice.with_suffix(".crt")).read_text()
    assert service.authorize_operator(alice_pem) is None
    service.rotate(U1)  # the controller's own revocation, in the file before the command runs
    ours = held_serial(service, "u1")

    assert edgectl("pki", "rotate", "--dir", str(ca_dir), "--spiffe-id", ALICE) == 0
    capsys.readouterr()
    service.sync_revocations()  # (the thread's poll, now)
    refusal = service.authorize_operator(alice_pem)
    assert refusal is not None and "revoked" in refusal, refusal
    alice_serial = x509.load_pem_x509_certificate(alice_pem.encode()).serial_number
    assert alice_serial in crl_serials(service.crl_pem())  # and every sidecar's CRL refuses it
    # Neither writer lost the other's revocations.
    assert alice_serial in stored_serials(ca_dir) and len(stored_serials(ca_dir)) == 2
    assert held_serial(service, "u1") == ours  # nothing of ours was revoked by it


def test_a_certificate_held_here_and_revoked_elsewhere_is_replaced(
    start_pki: Callable[..., PkiService], ca_dir: Path
) -> None:
    service = start_pki()
    heard: list[IdentitySnapshot] = []
    service.subscribe(heard.append)
    held = service.snapshot.identities["u2"].info
    store = FileRevocationStore(ca_dir)  # another writer: a replica sharing the directory
    current, version = store.read()
    assert store.write(current.revoke_certificate(held), version) is not None
    service.sync_revocations()
    assert held_serial(service, "u2") != held.serial
    assert heard and heard[-1].identities["u2"].info.serial != held.serial  # the mesh is handed the new SVID
    assert held.serial in heard[-1].revocations.serials


def test_a_dropped_certificate_is_stored_by_the_thread(start_pki: Callable[..., PkiService], ca_dir: Path) -> None:
    hosts = ["u1", "u2"]
    service = start_pki(hosts=lambda _s: list(hosts))
    dropped = held_serial(service, "u2")
    hosts.remove("u2")
    service.on_model_change(NodeWentDown(NodeId("n")), FabricState())  # any event: a full reconcile
    assert dropped in service.snapshot.revocations.serials
    deadline = time.monotonic() + 10
    while dropped not in stored_serials(ca_dir):
        assert time.monotonic() < deadline, "the dropped certificate's revocation was not stored"
        time.sleep(0.05)


def test_a_write_over_another_writers_change_is_refused(ca_dir: Path) -> None:
    store = FileRevocationStore(ca_dir)
    empty, version = store.read()
    assert version is None and empty == RevocationList()
    first = store.write(empty.revoke_certificate(cert(1)), version)
    assert first is not None
    assert store.write(empty.revoke_certificate(cert(2)), version) is None  # stale: read again
    assert set(store.read()[0].serials) == {1}
    assert store.write(store.read()[0].revoke_certificate(cert(2)), first) is not None


@pytest.mark.parametrize(
    "text",
    ["{not json", "[]", '{"serials": {"1": null}}', '{"serials": {"zz": 1}}', '{"identities": ["not-an-id"]}'],
)
def test_an_unreadable_list_stops_the_start_naming_the_file(
    start_pki: Callable[..., PkiService], ca_dir: Path, text: str
) -> None:
    (ca_dir / "revoked.json").write_text(text)
    with pytest.raises(CaCorrupt, match=r"revoked\.json is unreadable"):
        start_pki()


class FlakyStore:
    """A store in memory that fails while ``failing`` (a full disk, etcd away)."""

    def __init__(self) -> None:
        self.revocations, self.revision, self.failing = RevocationList(), 0, False

    def version(self) -> object:
        return self.revision or None

    def read(self) -> tuple[RevocationList, object]:
        return self.revocations, self.version()

    def write(self, revocations: RevocationList, expected: object) -> object | None:
        if self.failing:
            raise OSError(28, "No space left on device")
        if expected != self.version():
            return None
        self.revocations, self.revision = revocations, self.revision + 1
        return self.revision

    def refresh(self, now: float) -> None:
        pass


def test_a_store_that_fails_loses_nothing_and_is_caught_up(caplog: pytest.LogCaptureFixture) -> None:
    from pki.identities import IdentityManager
    from pki.revocation_sync import RevocationSync
    from tests.unit.pki.pki_helpers import FakeIssuer

    store, manager = FlakyStore(), IdentityManager(FakeIssuer())
    sync = RevocationSync(store, manager, lambda _c: None, clock=lambda: NOW, poll_s=0.01, min_interval_s=0.01)
    sync.load()
    manager.reconcile({"u1": U1}, NOW)
    store.failing = True
    sync.start()
    try:
        manager.rotate(U1, NOW)  # in force here at once, whatever the store does
        revoked = set(manager.snapshot.revocations.serials)
        sync.kick()
        deadline = time.monotonic() + 5
        while "No space left" not in caplog.text:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)  # ~20 more failed polls: logged once
        assert caplog.text.count("revocation list not stored") == 1, caplog.text
        store.failing = False
        while set(store.revocations.serials) != revoked:
            assert time.monotonic() < deadline, "the list was not stored once the store came back"
            time.sleep(0.01)
    finally:
        sync.stop()


class RacingStore(FlakyStore):
    """Another writer commits between this writer's read and its write, once."""

    def __init__(self, theirs: RevocationList) -> None:
        super().__init__()
        self.theirs: RevocationList | None = theirs

    def write(self, revocations: RevocationList, expected: object) -> object | None:
        if self.theirs is not None:
            self.revocations, self.revision, self.theirs = self.theirs, self.revision + 1, None
        return super().write(revocations, expected)


def test_a_write_that_lost_the_race_is_merged_with_the_winner_and_both_are_kept() -> None:
    from pki.identities import IdentityManager
    from pki.revocation_sync import RevocationSync
    from tests.unit.pki.pki_helpers import FakeIssuer

    theirs = RevocationList().revoke_certificate(cert(5, ALICE)).revoke_identity(node_spiffe_id(TD, "n9"))
    store, manager = RacingStore(theirs), IdentityManager(FakeIssuer())
    heard: list[object] = []
    sync = RevocationSync(store, manager, heard.append, clock=lambda: NOW)
    sync.load()
    manager.reconcile({"u1": U1}, NOW)
    ours = manager.snapshot.identities["u1"].info.serial
    manager.rotate(U1, NOW)
    sync.flush()
    assert set(store.revocations.serials) == {5, ours} and store.revocations.identities == theirs.identities
    assert set(manager.snapshot.revocations.serials) == {5, ours}  # theirs taken in, and listeners told
    assert heard and manager.snapshot.revocations.identities == theirs.identities


def test_a_restore_that_cannot_be_stored_is_undone_and_a_revocation_stays_in_force() -> None:
    from pki.errors import RevocationsUnavailable
    from tests.unit.pki.pki_helpers import FakeIssuer

    store = FlakyStore()
    service = PkiService(FakeIssuer(), FabricState, clock=lambda: NOW, revocation_stores=[store]).start()
    try:
        assert service.revoke_node("ea-n1").stored and node_spiffe_id(TD, "ea-n1") in store.revocations.identities
        store.failing = True
        with pytest.raises(RevocationsUnavailable, match="stays revoked"):
            service.restore_node("ea-n1")
        assert service.node_revoked("ea-n1")  # a restore only this process knew of could be merged away later
        revoked = service.revoke_node("ea-n2")
        assert service.node_revoked("ea-n2") and revoked.stored is False  # in force, said not stored
        store.failing = False
        assert service.restore_node("ea-n1").stored and not service.node_revoked("ea-n1")
        assert store.revocations.identities == {node_spiffe_id(TD, "ea-n2")}
        assert service.restore_node("ea-n3").stored is None  # never revoked: nothing to store
    finally:
        service.stop()


def test_the_thread_takes_in_what_another_writer_stored(ca_dir: Path) -> None:
    from pki.identities import IdentityManager
    from pki.revocation_sync import RevocationSync
    from tests.unit.pki.pki_helpers import FakeIssuer

    manager = IdentityManager(FakeIssuer())
    sync = RevocationSync(FileRevocationStore(ca_dir), manager, lambda _c: None, clock=lambda: NOW, poll_s=0.05)
    sync.load()
    sync.start()
    try:
        other = FileRevocationStore(ca_dir)  # `pki rotate --dir`, from another process
        current, version = other.read()
        assert other.write(current.revoke_certificate(cert(77, ALICE)), version) is not None
        deadline = time.monotonic() + 5
        while 77 not in manager.snapshot.revocations.serials:
            assert time.monotonic() < deadline, "the stored revocation was not taken in by the thread"
            time.sleep(0.02)
    finally:
        sync.stop()


def test_a_certificate_dropped_while_the_controller_stops_is_stored_too(
    start_pki: Callable[..., PkiService], ca_dir: Path
) -> None:
    hosts = ["u1", "u2"]
    service = start_pki(hosts=lambda _s: list(hosts))
    dropped = held_serial(service, "u2")
    service.stop()  # the controller stops its PKI before the model writer's last events
    hosts.remove("u2")
    service.on_model_change(NodeWentDown(NodeId("n")), FabricState())
    assert dropped in stored_serials(ca_dir)


def test_the_directory_crl_is_signed_again_before_it_lapses(ca_dir: Path) -> None:
    """``crl.pem`` is valid 1 h: while the list stays the same, a running controller signs it again once
    half of that has passed (verifiers outside the mesh that honour next-update keep working)."""
    import os

    from pki.ca import CertificateAuthority

    ca = CertificateAuthority.load(ca_dir)
    store = FileRevocationStore(ca_dir, sign_crl=lambda listed: ca.crl_pem(listed, time.time()))
    store.refresh(time.time())
    assert not (ca_dir / "crl.pem").exists()  # no list stored: nothing to sign
    current, version = store.read()
    assert store.write(current.revoke_certificate(cert(9)), version) is not None
    crl = ca_dir / "crl.pem"
    signed = crl.read_bytes()
    store.refresh(time.time())
    assert crl.read_bytes() == signed  # fresh: left alone
    os.utime(crl, (time.time() - 1900, time.time() - 1900))  # more than half of its hour ago
    store.refresh(time.time())
    assert crl.read_bytes() != signed and crl_serials(crl.read_text()) == {9}
    next_update = x509.load_pem_x509_crl(crl.read_bytes()).next_update_utc
    assert next_update is not None and next_update.timestamp() > time.time() + 3000


def test_each_route_reply_says_whether_its_own_revocation_was_stored() -> None:
    from edgectl.pki_http import node_revocation_route
    from tests.unit.pki.pki_helpers import FakeIssuer

    store = FlakyStore()
    service = PkiService(FakeIssuer(), FabricState, clock=lambda: NOW, revocation_stores=[store]).start()
    route = node_revocation_route(service, http_host="127.0.0.1")
    try:
        store.failing = True
        failed = route(FabricState(), {"node": "ea-n1"})
        store.failing = False
        stored = route(FabricState(), {"node": "ea-n2"})
        assert failed == (200, failed[1]) and failed[1]["stored"] is False and failed[1]["revoked"] is True
        assert stored[1]["stored"] is True  # a later call's success is its own, not the earlier one's
        assert route(FabricState(), {"node": "ea-n3", "restore": True})[1]["stored"] is True  # nothing to store
    finally:
        service.stop()
