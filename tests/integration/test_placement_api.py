"""Placement through the real gRPC API.

Two setups:
* in-process (runs now): the real ``start_placement_api`` on a real EventBus, a real channel;
* against a real ``edgectl run`` process (``--api-port``, ``--state-dir``): these need the placement
  server wired into ``edgectl run`` (docs/placement.md, "Wiring") and are skipped until
  edgectl/controller.py starts it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from netmodel.events import NodeCameUp, NodeWentDown
from netmodel.ids import NodeId
from placement._pb import placement_pb2 as pb
from placement._pb import placement_pb2_grpc as pb_grpc
from tests.integration.harness import REPO, declaring_replicas, edgectl_run, free_port, wait_until
from tests.unit.placement.helpers import served_api

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "edge-cloud.yaml"


def placing_nothing(tmp_path: Path) -> Path:
    """The example with no declared replicas: these tests place every instance themselves."""
    return declaring_replicas(EXAMPLE, tmp_path / "fabric")


class Watcher:
    """Reads a Watch stream on a thread; ``kinds()`` are the event kinds seen so far."""

    def __init__(self, stub: pb_grpc.PlacementStub, include_existing: bool = False) -> None:
        self.events: list[pb.PlacementEvent] = []
        self.call = stub.Watch(pb.WatchRequest(include_existing=include_existing))
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for event in self.call:
                self.events.append(event)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.CANCELLED, exc

    def kinds(self) -> list[str]:
        return [pb.PlacementEvent.Kind.Name(e.kind).removeprefix("KIND_") for e in self.events]

    def stop(self) -> None:
        self.call.cancel()
        self.thread.join(5)


def started_watch(server: object, stub: pb_grpc.PlacementStub) -> Watcher:
    watcher = Watcher(stub)
    wait_until(lambda: server.events.watchers > 0, timeout=5, what="the watch to start")  # type: ignore[attr-defined]
    return watcher


# -- in-process: the real server and bus ------------------------------------------------------------------


def test_place_migrate_evict_and_watch_each_step() -> None:
    converged = threading.Event()
    with served_api(convergence_probes=[lambda generation: converged.is_set()]) as (bus, server, stub):
        watcher = started_watch(server, stub)
        (web,) = stub.Place(pb.PlaceRequest(service="web"), timeout=10).workloads
        assert web.node == "m-n1" and dict(web.latency_ms) == {"u1": 3.0, "u2": 2.0}
        done: list[pb.MigrateResponse] = []
        mover = threading.Thread(
            target=lambda: done.append(stub.Migrate(pb.MigrateRequest(workload_id=web.id, node="eb-n1"), timeout=10))
        )
        mover.start()
        # make-before-break: while the probe has not converged both instances are in the model
        wait_until(lambda: "CONVERGENCE_WAITING" in watcher.kinds(), timeout=5, what="the convergence wait")
        assert len(bus.state.workloads) == 2
        assert stub.Get(pb.GetRequest(workload_id=web.id)).status == "migrating"
        converged.set()
        mover.join(10)
        (moved,) = done
        assert moved.workload.node == "eb-n1" and set(bus.state.workloads) == {moved.workload.id}
        stub.Evict(pb.EvictRequest(workload_id=moved.workload.id), timeout=10)
        wait_until(lambda: watcher.kinds().count("REMOVED") == 2, timeout=5, what="the eviction event")
        watcher.stop()
        assert watcher.kinds() == [
            "PLACED",
            "MIGRATION_STARTED",
            "PLACED",
            "CONVERGENCE_WAITING",
            "CONVERGED",
            "REMOVED",
            "MIGRATION_COMPLETED",
            "REMOVED",
        ]


def test_a_node_failure_re_places_its_workloads() -> None:
    with served_api() as (bus, server, stub):
        placed = stub.Place(pb.PlaceRequest(service="web", replicas=2), timeout=10).workloads
        assert [w.node for w in placed] == ["m-n1", "ea-n1"]
        watcher = started_watch(server, stub)
        bus.publish(NodeWentDown(NodeId("m-n1"))).result(5)
        wait_until(lambda: placed[0].id not in bus.state.workloads, timeout=10, what="web-1 re-placed")
        nodes = sorted(w.node for w in stub.List(pb.ListRequest(), timeout=10).workloads)
        assert len(nodes) == 2 and "m-n1" not in nodes
        assert nodes == ["ea-n1", "eb-n1"]  # within 5 ms of u1 and u2, not next to web-2
        wait_until(lambda: "MIGRATION_COMPLETED" in watcher.kinds(), timeout=5, what="the failover steps")
        watcher.stop()
        assert watcher.kinds()[0] == "FAILOVER_STARTED"


def test_a_stranded_workload_is_reported_and_placed_when_capacity_returns() -> None:
    with served_api() as (bus, server, stub):
        request = pb.PlaceRequest(service="web", cpu_millis=1500, constraints=pb.Constraints(max_latency_ms=0.5))
        request.constraints.near.append("u3")
        code = None
        try:
            stub.Place(request, timeout=10)
        except grpc.RpcError as exc:
            code = exc.code()
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # ec-n1 has 1000m
        request.cpu_millis = 800
        (w,) = stub.Place(request, timeout=10).workloads
        watcher = started_watch(server, stub)
        bus.publish(NodeWentDown(NodeId("ec-n1"))).result(5)
        wait_until(lambda: stub.Get(pb.GetRequest(workload_id=w.id)).status == "stranded", timeout=10, what="stranded")
        got = stub.Get(pb.GetRequest(workload_id=w.id))
        assert got.reasons[0] == "node ec-n1 is down"
        assert any("no node satisfies max_latency_ms=0.5 from host u3" in r for r in got.reasons)
        bus.publish(NodeCameUp(NodeId("ec-n1"))).result(5)
        wait_until(lambda: stub.Get(pb.GetRequest(workload_id=w.id)).status == "running", timeout=10, what="back")
        watcher.stop()
        assert "UNSCHEDULABLE" in watcher.kinds()


# -- against `edgectl run` ---------------------------------------------------------------------------------


@contextlib.contextmanager
def placement_stub(port: int) -> Iterator[pb_grpc.PlacementStub]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=15)
        yield pb_grpc.PlacementStub(channel)


def test_edgectl_run_serves_place_migrate_evict_watch(tmp_path) -> None:
    port, fabric = free_port(), placing_nothing(tmp_path)
    with edgectl_run(fabric, "--api-port", str(port)), placement_stub(port) as stub:
        watcher = Watcher(stub)
        time.sleep(0.3)
        (web,) = stub.Place(pb.PlaceRequest(service="web"), timeout=10).workloads
        moved = stub.Migrate(pb.MigrateRequest(workload_id=web.id, best=True, force=True, timeout_s=20), timeout=30)
        assert moved.workload.node != web.node
        stub.Evict(pb.EvictRequest(workload_id=moved.workload.id), timeout=10)
        assert not stub.List(pb.ListRequest(), timeout=10).workloads
        wait_until(lambda w=watcher: "MIGRATION_COMPLETED" in w.kinds(), timeout=10, what="watched steps")
        watcher.stop()


def test_restart_with_state_dir_keeps_placements(tmp_path) -> None:
    port, fabric = free_port(), placing_nothing(tmp_path)
    with edgectl_run(fabric, "--state-dir", str(tmp_path), "--api-port", str(port)), placement_stub(port) as stub:
        placed = stub.Place(pb.PlaceRequest(service="api", replicas=2), timeout=10).workloads
        before = sorted((w.id, w.node) for w in placed)
    wait_until(lambda: (tmp_path / "workloads.json").exists(), timeout=5, what="the saved placements")
    with edgectl_run(fabric, "--state-dir", str(tmp_path), "--api-port", str(port)), placement_stub(port) as stub:
        after = sorted((w.id, w.node) for w in stub.List(pb.ListRequest(), timeout=10).workloads)
        assert after == before
        # ids keep counting after a restart: the next instance is not a reused name
        (third,) = stub.Place(pb.PlaceRequest(service="api"), timeout=10).workloads
        assert third.id == "api-3"


def test_restart_keeps_each_workloads_own_constraints(tmp_path) -> None:
    """An instance placed with a 5 ms SLO from u1 (stricter than anything its service declares) keeps
    that SLO after a restart: moving it to the cloud (12 ms from u1) is still refused."""
    port, fabric = free_port(), placing_nothing(tmp_path)
    strict = pb.Constraints(max_latency_ms=5, near=["u1"])
    with edgectl_run(fabric, "--state-dir", str(tmp_path), "--api-port", str(port)), placement_stub(port) as stub:
        (placed,) = stub.Place(pb.PlaceRequest(service="api", constraints=strict), timeout=10).workloads
    with edgectl_run(fabric, "--state-dir", str(tmp_path), "--api-port", str(port)), placement_stub(port) as stub:
        with pytest.raises(grpc.RpcError) as refused:
            stub.Migrate(pb.MigrateRequest(workload_id=placed.id, site="cloud"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_latency_ms=5" in refused.value.details()
