"""Timeline entries from the placement engine and the PKI, from the real components (docs/dashboard.md)."""

from __future__ import annotations

from typing import Any

from edgectl.live_notes import CertificateNotes, placement_notes, xds_nack_notes
from meshctl.protocol import NullObserver
from meshctl.snapshot import MeshConfig
from meshctl.sotw import SotwStream
from meshctl.xds_types import CLUSTER
from netmodel.ids import NodeId
from netmodel.state import FabricState
from pki.policy import host_spiffe_id
from pki.service import PkiService
from placement.orchestrator import MigrationTarget, PlacementOrchestrator
from tests.unit.meshctl.mesh_helpers import cache_for, placed_state, sotw_request
from tests.unit.pki.pki_helpers import NOW, TD, FakeIssuer
from tests.unit.placement.helpers import request, running_bus

Noted = list[tuple[str, str, dict[str, Any]]]


def recorder() -> tuple[Noted, Any]:
    noted: Noted = []
    return noted, lambda kind, text, **fields: noted.append((kind, text, fields))


def test_a_migration_notes_its_start_with_the_reason_convergence_and_completion() -> None:
    noted, note = recorder()
    with running_bus() as bus:
        orchestrator = PlacementOrchestrator(bus, [lambda _generation: True])
        orchestrator.events.add_listener(placement_notes(note))
        (old,) = orchestrator.place(request(near=("u1",), slo=5)).workloads
        result = orchestrator.migrate(old.id, MigrationTarget(node=NodeId("ea-n1")))
    kinds = [kind for kind, _, _ in noted]
    assert kinds == ["MigrationStarted", "MigrationConverged", "MigrationCompleted"]  # not PLACED/REMOVED
    started, converged, _ = noted
    assert started[1].startswith("migration ") and str(old.id) in started[1] and str(result.new.id) in started[1]
    assert "users' mean request time 5.0 -> 5.0 ms" in started[1]  # placement's reason
    assert started[1].count("users' mean request time") == 1
    assert started[2] == {"service": "web"}
    assert "applied" in converged[1] and converged[1].count(" ms") == 1  # the probe's time, once
    migration_id = started[1].split(";")[0]
    assert all(text.startswith(migration_id) for _, text, _ in noted)


def test_certificates_issued_rotated_and_revoked_from_the_pki_service() -> None:
    noted, note = recorder()
    pki = PkiService(FakeIssuer(), lambda: FabricState(), hosts=lambda _s: ["u1", "u2"], clock=lambda: NOW)
    pki.start()
    try:
        notes = CertificateNotes(note)
        notes(pki.snapshot)  # those issued as the PKI started, as the controller does
        pki.subscribe(notes)
        assert [(kind, text.split(" ")[0]) for kind, text, _ in noted] == [
            ("CertificateIssued", host_spiffe_id(TD, "u1")),
            ("CertificateIssued", host_spiffe_id(TD, "u2")),
        ]
        assert all("valid until 20" in text for _, text, _ in noted)
        noted.clear()
        old_serial = pki.snapshot.identities["u1"].info.serial
        pki.rotate(host_spiffe_id(TD, "u1"))  # a compromised key: a new certificate, the old one revoked
        kinds = sorted(kind for kind, _, _ in noted)
        assert kinds == ["CertificateRevoked", "CertificateRotated"]
        (revoked,) = [text for kind, text, _ in noted if kind == "CertificateRevoked"]
        assert revoked.startswith(f"{host_spiffe_id(TD, 'u1')}: serial {old_serial:x} revoked")
        noted.clear()
        notes(pki.snapshot)  # nothing new: nothing noted
        assert noted == []
    finally:
        pki.stop()


def test_many_certificates_at_once_are_one_summary_entry() -> None:
    noted, note = recorder()
    hosts = [f"u{i}" for i in range(40)]
    pki = PkiService(FakeIssuer(), lambda: FabricState(), hosts=lambda _s: hosts, clock=lambda: NOW)
    pki.start()
    try:
        CertificateNotes(note)(pki.snapshot)
    finally:
        pki.stop()
    assert noted == [("CertificateIssued", "40 certificates issued (0 of them rotations)", {})]


def test_a_long_revocation_list_loaded_at_start_is_one_summary_entry() -> None:
    from netmodel.ids import SpiffeId
    from pki.identities import IdentitySnapshot
    from pki.policy import CertInfo, RevocationList

    noted, note = recorder()
    u1 = SpiffeId(host_spiffe_id(TD, "u1"))
    revoked = RevocationList().revoke_certificates(CertInfo(u1, n, int(NOW), int(NOW) + 3600) for n in range(40))
    CertificateNotes(note)(IdentitySnapshot(revocations=revoked))
    assert noted == [("CertificateRevoked", "40 certificates and 0 identities on the revocation list", {})]


def test_an_xds_nack_seen_on_a_real_stream_is_noted_with_node_type_and_a_short_error() -> None:
    noted, note = recorder()
    cache = cache_for(placed_state(), MeshConfig(tcp_services=frozenset({"db"})))
    cache.add_nack_listener(xds_nack_notes(note))
    stream = SotwStream(cache, NullObserver())
    [response] = stream.on_request(sotw_request(CLUSTER, node_id="u1"))
    error = "connect_timeout:\n value must be greater than 0 " + "x" * 1000
    assert stream.on_request(sotw_request(CLUSTER, nonce=response.nonce, version="", error=error)) == []
    [(kind, text, _)] = noted
    assert kind == "XdsNack"
    assert text.startswith(f"u1 rejected cds version {response.version_info}: connect_timeout: value must be")
    assert len(text) < 400 and text.endswith("…")  # the whole message stays in /api/v1/xds/clients
    assert cache.clients_view()["nodes"]["u1"]["types"]["cds"]["last_nack"]["error"] == error[:4096]
