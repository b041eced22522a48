"""Which open xDS streams a change makes the server authorize again (``meshctl.rechecks``), and
``MeshServer.use_identities`` keeping an unchanged identity the same object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from meshctl.rechecks import EVERY_STREAM, identity_changes, model_rechecks, placement_of
from meshctl.xds_grpc import MeshServer
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

    def make(svid: str) -> str:
        made.append(svid)
        return svid.upper()

    first, changed = identity_changes({}, {"a": "cert-a", "b": "cert-b"}, make)
    assert first == {"a": ("cert-a", "CERT-A"), "b": ("cert-b", "CERT-B")} and changed == ["a", "b"]
    made.clear()
    second, changed = identity_changes(first, {"a": first["a"][0], "b": "cert-b2", "c": "cert-c"}, make)
    assert second["a"] is first["a"] and made == ["cert-b2", "cert-c"]
    assert changed == ["b", "c"]
    third, changed = identity_changes(second, {"a": second["a"][0]}, make)
    assert third == {"a": first["a"]} and sorted(changed) == ["b", "c"]


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
