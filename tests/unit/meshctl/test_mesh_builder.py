"""The incremental builder against a full build: after every change of a random sequence, the cache
it feeds holds exactly what a full rebuild of that model would publish (names, contents, problems),
and its priority levels are the ones a full computation (with the same hysteresis) gives."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from meshctl.cache import SnapshotCache
from meshctl.envoy_config import TRUST_BUNDLE_SECRET
from meshctl.mesh_builder import MeshBuilder
from meshctl.paths import ServicePaths
from meshctl.snapshot import MeshConfig, MeshSnapshot, TlsIdentity, build_snapshots, service_paths
from meshctl.xds_types import CLUSTER, ENDPOINTS, LISTENER, PUSH_ORDER, ROUTES, SECRET
from netmodel import events as ev
from netmodel.changes import WorkloadChanges, maps_of
from netmodel.ids import NodeId, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import PolicyDefault, frozen_map
from tests.unit.meshctl.mesh_helpers import base_state, placed_state, workload

SERVICES = ("web", "admin", "api", "db")
NODES = ("ea-n1", "ea-n2", "c-n1")


def content(snapshot: MeshSnapshot) -> dict[str, Any]:
    return {
        "resources": {t: {n: r.digest for n, r in snapshot.of_type(t).items()} for t in PUSH_ORDER},
        "digests": {t: snapshot.digest(t) for t in PUSH_ORDER},
        "excluded": snapshot.wildcard_excluded,
        "problems": snapshot.problems,
    }


def identity(node: str, serial: int) -> TlsIdentity:
    return TlsIdentity(f"-----CERT {node} {serial}-----", f"-----KEY {node} {serial}-----")


class Fabric:
    """A model, a mesh config and the ready sidecars, changed at random."""

    def __init__(
        self, rng: random.Random, mtls: bool, gated: bool, allow: bool = False, trust_domain: str = "edgectl.local"
    ) -> None:
        self.rng = rng
        # With the policy's default allow, sidecars admit their service's callers by identity (no RBAC).
        self.state: FabricState = replace(
            placed_state(), default_policy=PolicyDefault.ALLOW if allow else PolicyDefault.DENY
        )
        self.identities: dict[str, TlsIdentity] = {}
        self.config = MeshConfig(
            mtls=mtls, trust_bundle_pem="-----BUNDLE-----" if mtls else "", trust_domain=trust_domain
        )
        self.ready: frozenset[str] | None = frozenset(self.state.workloads) if gated else None
        self.serial = 0
        self.applied: list[tuple[ev.Event, FabricState]] = []

    def apply(self, state: FabricState, event: ev.Event) -> FabricState:
        after = state.apply(event)
        self.applied.append((event, after))
        return after

    def change(self) -> str:
        rng, state = self.rng, self.state
        workloads = sorted(state.workloads)
        kind = rng.choice(
            [
                *("place", "place", "move", "move", "remove", "health", "ready"),
                *("cert", "cert", "bundle", "odd-id", "latency", "node"),
            ]
        )
        self.serial += 1
        if kind == "place" or not workloads:
            service = rng.choice(SERVICES)
            node = rng.choice((*NODES, None))
            self.state = self.apply(state, ev.WorkloadPlaced(workload(f"{service}-x{self.serial}", service, node)))
        elif kind == "move":
            moved = state.workloads[WorkloadId(rng.choice(workloads))]
            self.state = self.apply(state, ev.WorkloadPlaced(replace(moved, node=NodeId(rng.choice(NODES)))))
        elif kind == "remove":
            self.state = self.apply(state, ev.WorkloadRemoved(WorkloadId(rng.choice(workloads))))
        elif kind == "health":
            wid = WorkloadId(rng.choice(workloads))
            self.state = self.apply(state, ev.WorkloadHealthChanged(wid, wid in state.unhealthy, "test"))
        elif kind == "ready" and self.ready is not None:
            self.ready = self.ready ^ {rng.choice(workloads)}
        elif kind == "cert":
            node = rng.choice([*workloads, *state.hosts])
            if node in self.identities and rng.random() < 0.3:
                del self.identities[node]
            else:
                self.identities[node] = identity(node, self.serial)
            self.config = replace(self.config, identities=frozen_map(self.identities))
        elif kind == "bundle":  # the PKI's CRLs, appended to the bundle, change with every revocation
            self.config = replace(self.config, trust_bundle_pem=f"-----BUNDLE-----\n-----CRL {self.serial}-----\n")
        elif kind == "odd-id":  # an identity off the PKI's naming: the service's cluster names every one
            odd = state.workloads[WorkloadId(rng.choice(workloads))]
            self.state = self.apply(
                state, ev.WorkloadPlaced(replace(odd, spiffe_id=SpiffeId(f"spiffe://other/{self.serial}")))
            )
        elif kind == "latency":
            link = rng.choice(sorted(state.topology.links, key=lambda x: (x.src, x.src_port)))
            latency = rng.choice((500, 9000, 10000, 30000))
            self.state = self.apply(
                state, ev.LinkLatencyMeasured(((link, latency), (link.reversed(), latency)), at=1.0)
            )
        elif kind == "node":
            node = NodeId(rng.choice(NODES))
            down = not state.nodes[node].up
            self.state = self.apply(state, ev.NodeCameUp(node) if down else ev.NodeWentDown(node))
        if self.ready is not None:
            self.ready = self.ready & frozenset(self.state.workloads)
        return kind


def publish(cache: SnapshotCache, builder: MeshBuilder, fabric: Fabric, hint: WorkloadChanges | None = None) -> None:
    update = builder.update(fabric.state, fabric.config, fabric.ready, hint)
    if update is None:
        return
    if update.complete:
        cache.set_snapshots(update.snapshots)
    else:
        cache.update_snapshots(update.snapshots, update.removed)


@pytest.mark.parametrize("hinted", [False, True], ids=["compared", "hinted"])
@pytest.mark.parametrize("seed", range(8))
def test_every_incremental_build_equals_a_full_build(seed: int, hinted: bool) -> None:
    """``hinted``: the builds are told which workloads the events touched (``WorkloadChanges``), as the
    publisher tells them; else they compare the workloads."""
    rng = random.Random(seed)
    # Seed 7 in another trust domain: the workloads' SPIFFE ids are then off the PKI's naming for it, so
    # every cluster and inbound listener names each instance's id (what a placement must then rebuild).
    trust_domain = "example.org" if seed == 7 else "edgectl.local"
    fabric = Fabric(rng, mtls=seed % 2 == 1, gated=seed % 3 != 0, allow=seed >= 6, trust_domain=trust_domain)
    builder, cache = MeshBuilder(), SnapshotCache()
    publish(cache, builder, fabric)
    paths: ServicePaths | None = builder.paths
    for step in range(150):
        hint = WorkloadChanges(fabric.state)
        fabric.applied.clear()
        kinds = [fabric.change() for _ in range(rng.choice((1, 1, 1, 2, 3)))]  # sometimes a burst
        for event, after in fabric.applied:
            hint.note(event, after)
        kind = "+".join(kinds)
        publish(cache, builder, fabric, hint if hinted else None)
        paths = service_paths(fabric.state, fabric.config, fabric.ready, paths)
        assert builder.paths == paths, (step, kind)
        expected = build_snapshots(fabric.state, fabric.config, fabric.ready, paths)
        assert sorted(cache.nodes()) == sorted(expected), (step, kind)
        for node, snapshot in expected.items():
            held = cache.snapshot(node)
            assert held is not None and content(held) == content(snapshot), (step, kind, node)


def test_a_placement_rebuilds_its_sidecar_and_its_callers_only() -> None:
    state = placed_state()
    builder = MeshBuilder()
    first = builder.update(state, MeshConfig(), None)
    assert first is not None and first.complete
    state = state.apply(ev.WorkloadPlaced(workload("db-2", "db", "ea-n1")))
    update = builder.update(state, MeshConfig(), None)
    assert update is not None and not update.complete
    # db's callers are api's sidecars; db-2 is new. Nobody else calls db.
    assert set(update.snapshots) == {"db-2", "api-1", "api-2"}
    assert update.removed == frozenset()
    assert builder.update(state, MeshConfig(), None) is None  # nothing changed: nothing built


def test_a_removed_workload_is_said_removed() -> None:
    state = placed_state()
    builder = MeshBuilder()
    builder.update(state, MeshConfig(), None)
    update = builder.update(state.apply(ev.WorkloadRemoved(WorkloadId("db-1"))), MeshConfig(), None)
    assert update is not None and update.removed == frozenset({"db-1"})
    assert set(update.snapshots) == {"api-1", "api-2"}  # db's endpoints are gone from its callers


def test_a_certificate_rebuilds_its_node_only() -> None:
    state = placed_state()
    config = MeshConfig(mtls=True, trust_bundle_pem="-----BUNDLE-----")
    builder = MeshBuilder()
    builder.update(state, config, None)
    update = builder.update(state, replace(config, identities=frozen_map({"web-1": identity("web-1", 1)})), None)
    assert update is not None and set(update.snapshots) == {"web-1"}


def test_a_new_trust_bundle_replaces_every_nodes_secrets_and_nothing_else() -> None:
    state = placed_state()
    config = MeshConfig(mtls=True, trust_bundle_pem="-----BUNDLE-----")
    builder = MeshBuilder()
    first = builder.update(state, config, None)
    assert first is not None
    update = builder.update(state, replace(config, trust_bundle_pem="-----BUNDLE-----\n-----CRL-----"), None)
    assert update is not None and not update.complete
    assert set(update.snapshots) == set(first.snapshots)
    for node, snapshot in update.snapshots.items():
        before = first.snapshots[node]
        bundle, was = snapshot.of_type(SECRET)[TRUST_BUNDLE_SECRET], before.of_type(SECRET)[TRUST_BUNDLE_SECRET]
        assert bundle.digest != was.digest
        for type_url in (LISTENER, CLUSTER, ROUTES, ENDPOINTS):
            assert snapshot.of_type(type_url) is before.of_type(type_url), (node, type_url)
    bundles = {id(s.of_type(SECRET)[TRUST_BUNDLE_SECRET]) for s in update.snapshots.values()}
    assert len(bundles) == 1  # encoded once, shared by every node
    # Without mTLS no node is served the bundle: a new one changes nothing.
    plain = MeshBuilder()
    plain.update(state, MeshConfig(trust_bundle_pem="a"), None)
    assert plain.update(state, MeshConfig(trust_bundle_pem="b"), None) is None


def test_endpoints_assembled_as_bytes_decode_as_the_message() -> None:
    snapshots = build_snapshots(placed_state(), MeshConfig())
    endpoints = snapshots["u1"].of_type(ENDPOINTS)["svc/web"]
    assert endpoints.built is None  # assembled from bytes, decoded on first use
    decoded = endpoints.message
    assert decoded.cluster_name == "svc/web"
    assert sorted(e.endpoint.address.socket_address.port_value for g in decoded.endpoints for e in g.lb_endpoints) == [
        8080,
        18080,
    ]


def test_a_change_to_the_frame_is_a_full_build() -> None:
    state = base_state()
    builder = MeshBuilder()
    builder.update(state, MeshConfig(), None)
    update = builder.update(state.apply(ev.NodeWentDown(NodeId("c-n1"))), MeshConfig(), None)
    assert update is not None and update.complete
    update = builder.update(state, MeshConfig(request_timeout_ms=1), None)
    assert update is not None and update.complete


def test_a_hint_is_used_only_for_the_states_it_spans() -> None:
    state = placed_state()
    hint = WorkloadChanges(state)
    after = state.apply(ev.WorkloadPlaced(workload("db-2", "db", "ea-n1")))
    hint.note(ev.WorkloadPlaced(workload("db-2", "db", "ea-n1")), after)
    assert hint.between(maps_of(state), maps_of(after)) == {"db-2"}
    assert hint.between(maps_of(after), maps_of(after)) is None  # not its start
    moved_aside = replace(after, workloads=frozen_map(after.workloads))  # a state no event made
    assert hint.between(maps_of(state), maps_of(moved_aside)) is None
    unsaid = WorkloadChanges(state)
    unsaid.note(ev.NodeWentDown(NodeId("c-n1")), replace(after, generation=99))  # changed workloads, type silent
    assert unsaid.between(maps_of(state), maps_of(after)) is None


def test_an_event_that_touches_no_workload_adds_nothing_to_the_hint() -> None:
    state = placed_state()
    hint = WorkloadChanges(state)
    down = state.apply(ev.NodeWentDown(NodeId("c-n1")))
    hint.note(ev.NodeWentDown(NodeId("c-n1")), down)
    assert hint.between(maps_of(state), maps_of(down)) == set()
