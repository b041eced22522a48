"""Which open xDS streams a change makes the server authorize again (``meshctl.rechecks``), and
``MeshServer.use_identities`` keeping an unchanged identity the same object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from meshctl.mesh_builder import IdentityNotes
from meshctl.rechecks import EVERY_STREAM, identity_changes, model_rechecks, placement_of
from meshctl.xds_grpc import MeshServer
from meshctl.xds_types import PUSH_ORDER, SECRET
from netmodel import events as ev
from netmodel.ids import NodeId, WorkloadId
from netmodel.types import frozen_map
from tests.unit.meshctl.mesh_helpers import placed_state, workload


def test_a_placement_rechecks_its_own_workloads_streams_only() -> None:
    state = placed_state()
    event = ev.WorkloadPlaced(workload("api-3", "api", "ea-n1"))
    after = state.apply(event)
    assert model_rechecks(event, placement_of(state), placement_of(after)) == ("api-3",)
    removed = ev.WorkloadRemoved(WorkloadId("web-1"))
    assert model_rechecks(removed, placement_of(after), placement_of(after.apply(removed))) == ("web-1",)


def test_a_change_that_moves_no_workload_rechecks_nothing_and_one_that_may_move_any_rechecks_all() -> None:
    state = placed_state()
    link = next(iter(state.topology.links))
    latency = ev.LinkLatencyMeasured(((link, 1500),), 0.0)
    assert model_rechecks(latency, placement_of(state), placement_of(state.apply(latency))) == ()
    workloads, hosts = placement_of(state)
    moved = frozen_map({**workloads})  # another map: some placement changed
    down = ev.NodeWentDown(NodeId("ea-n1"))  # an event that names no workload
    assert model_rechecks(down, (workloads, hosts), (moved, hosts)) is EVERY_STREAM
    assert model_rechecks(latency, (workloads, hosts), (workloads, frozen_map({**hosts}))) is EVERY_STREAM
    assert model_rechecks(latency, None, placement_of(state)) is EVERY_STREAM  # the first change seen


def test_identity_changes_reuse_what_an_unchanged_svid_made() -> None:
    made: list[str] = []

    def make(svid: str) -> str | None:
        made.append(svid)
        return None if svid.startswith("csr") else svid.upper()

    svids, tls, changed = identity_changes({}, {}, {"a": "cert-a", "b": "cert-b", "c": "csr-c"}, make)
    assert svids == {"a": "cert-a", "b": "cert-b", "c": "csr-c"} and tls == {"a": "CERT-A", "b": "CERT-B"}
    assert changed == ["a", "b", "c"]
    made.clear()
    svids2, tls2, changed = identity_changes(svids, tls, {"a": svids["a"], "b": "cert-b2", "d": "cert-d"}, make)
    assert tls2["a"] is tls["a"] and made == ["cert-b2", "cert-d"]
    assert sorted(changed) == ["b", "c", "d"] and tls2 == {"a": "CERT-A", "b": "CERT-B2", "d": "CERT-D"}
    assert svids2 == {"a": "cert-a", "b": "cert-b2", "d": "cert-d"}


def test_identity_changes_look_only_at_the_nodes_the_pki_names() -> None:
    svids, tls, _ = identity_changes({}, {}, {"a": "cert-a", "b": "cert-b"}, str.upper)
    # The PKI says only b changed (and c is new): a is not looked at, even were its entry another object.
    newer = {"a": "cert-a (not looked at)", "b": "cert-b2", "c": "cert-c"}
    svids2, tls2, changed = identity_changes(svids, tls, newer, str.upper, only=["b", "c"])
    assert changed == ["b", "c"] and svids2["a"] == "cert-a" and tls2["b"] == "CERT-B2" and tls2["c"] == "CERT-C"
    _, tls3, changed = identity_changes(svids2, tls2, {"a": "cert-a"}, str.upper, only=["b", "c"])
    assert changed == ["b", "c"] and tls3 == {"a": "CERT-A"}


def test_identity_notes_span_exactly_the_maps_they_were_taken_between() -> None:
    base, last = frozen_map({"a": 1}), frozen_map({"a": 2})
    notes = IdentityNotes(base, last, frozenset({"a"}))
    assert notes.between(base, last) == {"a"}
    assert notes.between(frozen_map({"a": 1}), last) is None  # another map, even if equal
    assert IdentityNotes(base, last, frozenset({"a"}), exact=False).between(base, last) is None


@dataclass(frozen=True)
class _Svid:
    cert_chain_pem: str
    private_key_pem: str = ""


@dataclass(frozen=True)
class _Snapshot:
    identities: Any
    bundle_pem: str = "bundle"
    revocations: Any = field(default_factory=object)


def test_use_identities_keeps_an_unchanged_nodes_identity_the_same_object() -> None:
    """The snapshot builder finds changed identities by identity first: a PKI snapshot that changed one
    SVID out of 10,000 must not hand it 10,000 new objects to compare by value."""
    state = placed_state()
    server = MeshServer(lambda: state)  # not started: no sockets
    try:
        a, b = _Svid("A", "key-a"), _Svid("B", "key-b")
        revocations = object()
        server.use_identities(_Snapshot(frozen_map({"web-1": a, "web-2": b}), revocations=revocations), mtls=True)
        before = server.publisher.config.identities
        assert set(before) == {"web-1", "web-2"}
        server.use_identities(
            _Snapshot(
                frozen_map({"web-1": a, "web-2": _Svid("B2", "key-b2"), "csr-1": _Svid("C")}), revocations=revocations
            )
        )
        after = server.publisher.config.identities
        assert after["web-1"] is before["web-1"]
        assert after["web-2"].cert_chain_pem == "B2"
        assert "csr-1" not in after  # issued from a CSR: no key of ours to serve
    finally:
        server.metrics.unregister()


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each compare of two maps the snapshot builder makes (True: by value, as it compares identities)."""
    from meshctl import mesh_builder

    calls: list[bool] = []
    changed_keys = mesh_builder._changed_keys

    def recording(before: Any, after: Any, by_equality: bool = False) -> set[str]:
        calls.append(by_equality)
        return changed_keys(before, after, by_equality)

    monkeypatch.setattr(mesh_builder, "_changed_keys", recording)
    return calls


def test_a_placements_identity_reaches_the_snapshots_by_its_node_alone(compared: list[bool]) -> None:
    """Through a real PKI: the snapshot it makes for a placement says which subject changed, the mesh
    takes that subject's identity alone, and the next build compares no identity map (10,000 entries at
    scale); what it serves is what a full build of the same model and config serves."""
    from meshctl.snapshot import build_snapshots
    from pki.ca import CertificateAuthority
    from pki.service import PkiService

    model = {"state": placed_state()}
    ca, _root_key = CertificateAuthority.create("edgectl.local")
    pki = PkiService(ca, lambda: model["state"], hosts=lambda _state: ["u1"]).start()
    server = MeshServer(lambda: model["state"])  # not started: no sockets
    try:
        server.use_identities(pki.snapshot, mtls=True)
        pki.subscribe(lambda snapshot: server.use_identities(snapshot, mtls=True))
        server.publisher.build_now()
        before = pki.snapshot.version

        event = ev.WorkloadPlaced(workload("web-9", "web", "ea-n1"))
        model["state"] = model["state"].apply(event)
        pki.on_model_change(event, model["state"])  # as the bus calls it, before the mesh
        server.publisher.note(event, model["state"])
        assert pki.snapshot.changed_from == (before, frozenset({"web-9"}))
        compared.clear()
        server.publisher.build_now()
        assert True not in compared  # no identity map compared

        served = server.cache.snapshot("web-9")
        assert served is not None and served.of_type(SECRET)
        full = build_snapshots(model["state"], server.publisher.config)
        for node, snapshot in full.items():
            mine = server.cache.snapshot(node)
            assert mine is not None, node
            assert {t: mine.digest(t) for t in PUSH_ORDER} == {t: snapshot.digest(t) for t in PUSH_ORDER}, node
    finally:
        pki.stop()
        server.metrics.unregister()


def test_identity_changes_said_in_a_row_spare_the_compare_and_one_unsaid_does_not(compared: list[bool]) -> None:
    from dataclasses import replace

    from meshctl.cache import SnapshotCache
    from meshctl.metrics import XdsMetrics
    from meshctl.publisher import SnapshotPublisher
    from meshctl.snapshot import MeshConfig, TlsIdentity, build_snapshots

    state = placed_state()
    one, two = TlsIdentity("chain-1", "key-1"), TlsIdentity("chain-2", "key-2")
    first = MeshConfig(mtls=True, identities=frozen_map({"web-1": one}))
    cache = SnapshotCache()
    publisher = SnapshotPublisher(lambda: state, first, cache, XdsMetrics())
    publisher.build_now()
    second = replace(first, identities=frozen_map({"web-1": one, "web-2": two}))
    publisher.set_config(second, (first.identities, ["web-2"]))
    third = replace(second, identities=frozen_map({"web-2": two}))
    publisher.set_config(third, (second.identities, ["web-1"]))
    compared.clear()
    publisher.build_now()
    assert True not in compared
    full = build_snapshots(state, third)
    for node in ("web-1", "web-2"):
        mine = cache.snapshot(node)
        assert mine is not None and mine.digest(SECRET) == full[node].digest(SECRET), node

    fourth = replace(third, identities=frozen_map({"web-2": one}))
    publisher.set_config(fourth, (second.identities, ["web-2"]))  # said against a map it was not made from
    compared.clear()
    publisher.build_now()
    assert True in compared


def test_a_revocation_rechecks_the_streams_that_could_show_what_it_revokes() -> None:
    """An eviction or a forced rotation revokes its own node's old certificate: only streams of nodes
    issued that SPIFFE id could show it (two here: a shared id); anything else may be any stream's."""
    from meshctl.rechecks import revocation_rechecks
    from netmodel.ids import SpiffeId
    from pki.policy import CertInfo, RevocationList, Svid

    def svid(spiffe_id: str, serial: int) -> Svid:
        return Svid(SpiffeId(spiffe_id), "", CertInfo(SpiffeId(spiffe_id), serial, 0, 100))

    web1, web2, shared_a, shared_b = (f"spiffe://td/svc/{n}" for n in ("web/w/web-1", "web/w/web-2", "x", "x"))
    before = {"web-1": svid(web1, 1), "web-2": svid(web2, 2), "a": svid(shared_a, 3), "b": svid(shared_b, 4)}
    listed = RevocationList().revoke_certificate(CertInfo(SpiffeId(web2), 99, 0, 100))
    evicted = {k: v for k, v in before.items() if k != "web-1"}
    revoked_web1 = listed.revoke_certificate(before["web-1"].info)
    assert revocation_rechecks(listed, revoked_web1, before, evicted, ["web-1"]) == ("web-1",)
    rotated = {**before, "a": svid(shared_a, 5)}
    revoked_a = listed.revoke_certificate(before["a"].info)
    assert revocation_rechecks(listed, revoked_a, before, rotated, ["a"]) == ("a", "b")  # b holds the same id
    # A serial not served here (`pki issue`, another replica), a revoked identity, no list before: all.
    foreign = listed.revoke_certificate(CertInfo(SpiffeId(web1), 1234, 0, 100))
    assert revocation_rechecks(listed, foreign, before, before, []) is EVERY_STREAM
    node_cut_off = listed.revoke_identity("spiffe://td/node/n1")
    assert revocation_rechecks(listed, node_cut_off, before, before, []) is EVERY_STREAM
    assert revocation_rechecks(None, listed, before, before, []) is EVERY_STREAM
    # Nothing newly revoked (an identity restored, expired serials pruned): the changed nodes only.
    assert revocation_rechecks(node_cut_off, listed, before, before, ["b"]) == ("b",)
