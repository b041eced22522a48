"""The readiness gate: a workload is an endpoint only once its own sidecar serves (meshctl.readiness)."""

from __future__ import annotations

from meshctl.cache import SnapshotCache
from meshctl.readiness import SidecarReadiness
from meshctl.snapshot import MeshConfig, TlsIdentity, build_snapshots
from meshctl.sotw import SotwStream
from meshctl.xds_types import ENDPOINTS, SECRET
from netmodel import events as ev
from netmodel.ids import NodeId, WorkloadId
from tests.unit.meshctl.mesh_helpers import SotwClient, converse, placed_state, workload

PLAIN = MeshConfig()
EVERYONE = frozenset({"web-1", "web-2", "admin-1", "api-1", "api-2", "db-1"})


def endpoint_ports(snapshots: dict, node: str, service: str) -> list[int]:
    cla = snapshots[node].of_type(ENDPOINTS)[f"svc/{service}"].message
    return sorted(lb.endpoint.address.socket_address.port_value for g in cla.endpoints for lb in g.lb_endpoints)


def test_only_ready_workloads_are_endpoints() -> None:
    state = placed_state()
    assert endpoint_ports(build_snapshots(state, PLAIN), "u1", "web") == [8080, 18080]
    gated = build_snapshots(state, PLAIN, frozenset({"web-2"}))
    assert endpoint_ports(gated, "u1", "web") == [18080]
    assert endpoint_ports(build_snapshots(state, PLAIN, frozenset()), "u1", "web") == []
    # The not-ready workload still gets its own snapshot: its sidecar needs it to become ready.
    assert "in/web-1" in gated["web-1"].of_type("type.googleapis.com/envoy.config.listener.v3.Listener")


class Gate:
    def __init__(self, config: MeshConfig = PLAIN) -> None:
        self.state = placed_state()
        self.config = config
        self.cache = SnapshotCache(clock=lambda: 1000.0)
        self.changes = 0
        self.readiness = SidecarReadiness(self.cache, on_change=self._changed)
        self.cache.add_sync_listener(self.readiness.on_synced)
        self.rebuild()

    def _changed(self) -> None:
        self.changes += 1

    def rebuild(self) -> None:
        ready = self.readiness.ready_in(self.state)
        self.cache.set_snapshots(build_snapshots(self.state, self.config, ready))

    def connect(self, node: str) -> tuple[SotwStream, SotwClient]:
        stream = SotwStream(self.cache)
        client = SotwClient(node)
        self.cache.stream_opened(node, "sotw")
        converse(stream, client, client.start())
        return stream, client


def test_a_workload_turns_ready_when_its_sidecar_has_applied_its_inbound_listener() -> None:
    gate = Gate()
    assert not gate.readiness.is_ready("web-1")
    gate.connect("u1")  # a host's client sidecar is nobody's endpoint
    assert gate.changes == 0 and not gate.readiness.ready_in(gate.state)
    gate.connect("web-1")
    assert gate.readiness.is_ready("web-1") and gate.changes == 1
    gate.rebuild()
    assert endpoint_ports({"u1": gate.cache.snapshot("u1")}, "u1", "web") == [8080]


def test_a_content_change_without_a_new_generation_is_not_synced_until_applied() -> None:
    gate = Gate()
    stream, client = gate.connect("u1")
    assert gate.cache.is_synced("u1")
    gate.connect("web-1")
    gate.rebuild()  # web-1 is an endpoint now: u1's endpoints change, the generation does not
    assert not gate.cache.is_synced("u1")
    converse(stream, client, [])
    for response in stream.on_change():
        converse(stream, client, client.receive(response))
    assert gate.cache.is_synced("u1")


def test_readiness_is_sticky_until_the_workload_leaves_the_model() -> None:
    gate = Gate()
    gate.connect("web-1")
    gate.cache.stream_closed("web-1")
    assert gate.readiness.ready_in(gate.state) == {"web-1"}
    gate.state = gate.state.apply(ev.WorkloadRemoved(WorkloadId("web-1")))
    assert gate.readiness.ready_in(gate.state) == frozenset()
    gate.state = gate.state.apply(ev.WorkloadPlaced(workload("web-1", "web", "c-n1")))
    assert not gate.readiness.is_ready("web-1")  # a new instance under an old name starts over


def test_seeded_workloads_are_ready_from_the_start() -> None:
    gate = Gate()
    gate.readiness.seed(EVERYONE)
    assert gate.readiness.ready_in(gate.state) == EVERYONE


def test_with_mtls_a_sidecar_is_ready_only_once_it_applied_its_certificate() -> None:
    identities = {"web-1": TlsIdentity("CERT-web-1", "KEY-web-1")}
    gate = Gate(MeshConfig(mtls=True, trust_bundle_pem="BUNDLE", identities=identities))
    stream, client = gate.connect("web-1")
    assert gate.cache.is_synced("web-1")  # everything it asked for, but not yet its secrets
    assert not gate.readiness.is_ready("web-1")
    converse(stream, client, [client._request(SECRET, ["identity", "trust-bundle"])])
    assert gate.readiness.is_ready("web-1")


def test_without_a_certificate_a_sidecar_never_turns_ready() -> None:
    gate = Gate(MeshConfig(mtls=True, trust_bundle_pem="BUNDLE"))
    stream, client = gate.connect("web-2")
    converse(stream, client, [client._request(SECRET, ["identity", "trust-bundle"])])
    assert not gate.readiness.is_ready("web-2")


def test_a_migration_waits_for_its_own_new_instance_only() -> None:
    from meshctl.xds_grpc import MeshServer

    state = placed_state()
    current = {"state": state}
    server = MeshServer(lambda: current["state"], wait_for_sidecars=True)  # not started: no sockets
    try:
        server.publisher.build_now()
        assert server.converged_for(state.generation, frozenset({"web-1"}))  # there at start: ready
        moved = state.apply(ev.WorkloadPlaced(workload("web-3", "web", "c-n1")))
        # An unrelated instance whose sidecar never comes up: it must not hold this migration back.
        current["state"] = moved.apply(ev.WorkloadPlaced(workload("api-9", "api", "ea-n2", port=19090)))
        server.publisher.build_now()
        generation = current["state"].generation
        assert not server.converged_for(generation, frozenset({"web-3"}))  # its sidecar does not serve yet
        server.readiness.seed({"web-3"})  # as if its sidecar had applied its inbound listener
        assert not server.converged_for(generation, frozenset({"web-3"}))  # not in a build yet
        server.publisher.build_now()
        assert server.converged_for(generation, frozenset({"web-3"}))
        assert server.not_ready() == {"api-9"}
        # Its node losing its access port while the migration waits: not served after all.
        current["state"] = current["state"].apply(ev.NodeWentDown(NodeId("c-n1")))
        server.publisher.build_now()
        assert not server.converged_for(current["state"].generation, frozenset({"web-3"}))
    finally:
        server.metrics.unregister()


def test_listeners_hear_of_a_sidecar_serving_here_even_when_it_was_counted_ready_at_start() -> None:
    """Replicated mode: a replica started after the placements counts them ready, but a replica started
    later still needs to hear that their sidecars serve (it shares what its listeners hear)."""
    gate = Gate()
    heard: list[str] = []
    gate.readiness.add_ready_listener(heard.append)
    gate.readiness.seed(EVERYONE)
    gate.connect("web-1")
    assert heard == ["web-1"] and gate.changes == 0  # told once; the gate itself did not change
    gate.connect("web-1")
    assert heard == ["web-1"]


def test_marked_ready_elsewhere_counts_here() -> None:
    gate = Gate()
    gate.readiness.mark_ready(["web-2"])
    assert gate.readiness.ready_in(gate.state) == {"web-2"} and gate.changes == 1
    gate.readiness.mark_ready(["web-2"])
    assert gate.changes == 1


def test_an_app_starting_beside_its_serving_sidecar_is_no_endpoint_until_reported_healthy() -> None:
    gate = Gate()
    gate.state = gate.state.apply(ev.WorkloadStarting(WorkloadId("web-1"), 5.0))
    gate.rebuild()
    gate.connect("web-1")  # its sidecar serves before its app listens
    assert gate.readiness.is_ready("web-1")
    assert gate.readiness.ready_in(gate.state) == frozenset()
    gate.rebuild()
    assert endpoint_ports({"u1": gate.cache.snapshot("u1")}, "u1", "web") == []
    listening = gate.state.apply(ev.WorkloadHealthChanged(WorkloadId("web-1"), True, "app listening"))
    assert gate.readiness.ready_in(listening) == {"web-1"}
    gate.state = listening
    gate.rebuild()
    assert endpoint_ports({"u1": gate.cache.snapshot("u1")}, "u1", "web") == [8080]


def test_the_ready_set_without_starting_apps_is_the_same_object_until_something_changes() -> None:
    gate = Gate()
    gate.connect("web-1")
    gate.connect("web-2")
    gate.state = gate.state.apply(ev.WorkloadStarting(WorkloadId("web-2"), 5.0))
    first = gate.readiness.ready_in(gate.state)
    assert first == {"web-1"} and gate.readiness.ready_in(gate.state) is first
    # A start the sidecar has not served yet leaves the ready set as it is.
    gate.state = gate.state.apply(ev.WorkloadStarting(WorkloadId("api-1"), 6.0))
    assert gate.readiness.ready_in(gate.state) == {"web-1"}
