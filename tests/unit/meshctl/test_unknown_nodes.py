"""Sidecars the model does not (or no longer) know: answered at once with an empty configuration, and
never waited for by a migration; a migration waits only for the sidecars its move concerns."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from meshctl.cache import SnapshotCache
from meshctl.delta import DeltaStream
from meshctl.sotw import SotwStream
from meshctl.xds_grpc import MeshServer, _AdsServicer
from meshctl.xds_types import CLUSTER, LISTENER
from netmodel import events as ev
from netmodel.ids import WorkloadId
from netmodel.state import FabricState
from tests.unit.meshctl.mesh_helpers import DeltaClient, SotwClient, converse, placed_state, workload


class Model:
    def __init__(self) -> None:
        self.state: FabricState = placed_state()


@pytest.fixture
def served() -> Iterator[tuple[Model, MeshServer]]:
    model = Model()
    server = MeshServer(lambda: model.state)  # not started: no sockets
    server.publisher.build_now()
    try:
        yield model, server
    finally:
        server.metrics.unregister()


def connect(server: MeshServer, node: str, ack: bool = True) -> SotwStream:
    """A sidecar of ``node`` on ``server``'s cache: it ACKs everything (``ack``), or it sends its first
    requests and then never answers."""
    stream = SotwStream(server.cache)
    client = SotwClient(node)
    if ack:
        converse(stream, client, client.start())
    else:
        for request in client.start():
            stream.on_request(request)
    return stream


def move_web(model: Model, server: MeshServer) -> int:
    model.state = model.state.apply(ev.WorkloadPlaced(workload("web-3", "web", "c-n1")))
    server.publisher.build_now()
    return model.state.generation


def test_a_connected_unknown_node_holds_no_migration(served: tuple[Model, MeshServer]) -> None:
    model, server = served
    connect(server, "ghost-1", ack=False)  # a node id that is neither a workload nor a host
    assert "ghost-1" in server.cache.connected_nodes()
    generation = move_web(model, server)
    assert server.converged_for(generation, frozenset({"web-3"}))
    assert server.converged(generation)


def test_a_sidecar_whose_workload_was_evicted_stops_counting(served: tuple[Model, MeshServer]) -> None:
    model, server = served
    connect(server, "api-1")
    model.state = model.state.apply(ev.WorkloadRemoved(WorkloadId("api-1")))
    server.publisher.build_now()
    assert "api-1" in server.cache.connected_nodes()  # its Envoy is still there, with its last config
    generation = move_web(model, server)
    assert server.converged_for(generation, frozenset({"web-3"}))
    assert server.converged(generation)


def test_a_migration_waits_for_the_callers_of_the_moved_service_only(served: tuple[Model, MeshServer]) -> None:
    model, server = served
    connect(server, "db-1", ack=False)  # db calls nobody and nobody routes to web through it
    caller = connect(server, "u1", ack=False)  # a host: it calls web, the service that moves
    generation = move_web(model, server)
    assert not server.converged_for(generation, frozenset({"web-3"}))  # u1 has not ACKed the new endpoints
    assert not server.converged(generation)  # unscoped: every sidecar of the model
    caller.close()  # a sidecar that is not connected cannot be waited for
    assert server.converged_for(generation, frozenset({"web-3"}))


def test_the_readiness_gate_adds_the_new_instances_own_sidecar() -> None:
    model = Model()
    server = MeshServer(lambda: model.state, wait_for_sidecars=True)
    try:
        server.publisher.build_now()
        connect(server, "u1")
        connect(server, "web-3", ack=False)
        move_web(model, server)
        assert server.affected({"web-3"}) == {"u1", "web-3"}
    finally:
        server.metrics.unregister()


@pytest.mark.parametrize("stream_class,client_class", [(SotwStream, SotwClient), (DeltaStream, DeltaClient)])
def test_an_unknown_node_is_answered_at_once_with_an_empty_config_and_one_log_line(
    stream_class: type, client_class: type, caplog: pytest.LogCaptureFixture
) -> None:
    servicer = _AdsServicer(SnapshotCache(), None, known=lambda node: node == "u1")  # type: ignore[arg-type]
    stream = stream_class(SnapshotCache(), stand_in=servicer._stand_in(stream_class.mode))
    client = client_class("ghost\nINFO forged line")
    with caplog.at_level(logging.WARNING, logger="edgectl.mesh"):
        sent = converse(stream, client, client.start())
        stream.on_change()
    assert sorted((r.type_url, len(r.resources)) for r in sent) == [(CLUSTER, 0), (LISTENER, 0)]
    (line,) = [r.getMessage() for r in caplog.records]
    assert "ghost\\nINFO forged line" in line and "\n" not in line


def test_a_node_of_the_model_whose_snapshot_is_not_built_yet_is_held_not_emptied() -> None:
    servicer = _AdsServicer(SnapshotCache(), None, known=lambda node: node == "web-9")  # type: ignore[arg-type]
    stream = SotwStream(SnapshotCache(), stand_in=servicer._stand_in("sotw"))
    client = SotwClient("web-9")
    assert converse(stream, client, client.start()) == []  # its snapshot follows in milliseconds
