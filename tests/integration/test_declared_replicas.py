"""Against a real ``edgectl run``: the controller places the replicas its fabric file declares, on its own,
and keeps them placed. Real gRPC clients (List, Watch, Evict, Place) and the HTTP API; loopback only."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import grpc
import pytest

from placement._pb import placement_pb2 as pb
from placement._pb import placement_pb2_grpc as pb_grpc
from tests.integration.harness import REPO, edgectl_run, free_port, wait_until

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "edge-cloud.yaml"
DECLARED = {"web": 2, "api": 2, "db": 1}  # what examples/edge-cloud.yaml declares


class Watcher:
    def __init__(self, stub: pb_grpc.PlacementStub) -> None:
        self.events: list[pb.PlacementEvent] = []
        self.call = stub.Watch(pb.WatchRequest(include_existing=True))
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for event in self.call:
                self.events.append(event)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.CANCELLED, exc

    def placed(self) -> set[str]:
        return {e.workload.id for e in self.events if e.kind == pb.PlacementEvent.KIND_PLACED}

    def removed(self) -> set[str]:
        return {e.from_workload_id for e in self.events if e.kind == pb.PlacementEvent.KIND_REMOVED}

    def stop(self) -> None:
        self.call.cancel()
        self.thread.join(5)


def listed(stub: pb_grpc.PlacementStub) -> dict[str, pb.Workload]:
    return {w.id: w for w in stub.List(pb.ListRequest(), timeout=10).workloads}


def per_service(workloads: object) -> Counter[str]:
    return Counter(w.service for w in workloads)  # type: ignore[attr-defined]


def test_declared_replicas_appear_on_their_own_and_an_evicted_one_is_replaced(tmp_path: Path) -> None:
    port = free_port()
    with (
        edgectl_run(EXAMPLE, "--api-port", str(port), "--state-dir", str(tmp_path)) as controller,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        grpc.channel_ready_future(channel).result(timeout=15)
        stub = pb_grpc.PlacementStub(channel)
        watcher = Watcher(stub)
        # Nobody called Place: the declared replicas come on their own, and the Watch stream shows them.
        wait_until(lambda: per_service(listed(stub).values()) == DECLARED, 15, what="the declared replicas")
        wait_until(lambda: watcher.placed() >= set(listed(stub)), 10, what="their PLACED events")
        rows = {w["id"]: w for w in controller.get_json("/api/v1/workloads")["workloads"]}
        assert set(rows) == set(listed(stub)) and all(w["declared"] for w in rows.values())
        web = sorted(i for i, w in rows.items() if w["service"] == "web")
        assert len({rows[i]["node"] for i in web}) == 2  # spread, as a Place of two would
        assert rows[web[0]]["spiffe_id"] == f"spiffe://edgectl.local/svc/web/w/{web[0]}"
        # Users' requests over the call graph, as placement sees them: every declared user reaches web -> api -> db.
        paths = controller.get_json("/api/v1/service-paths")
        assert [(u["host"], u["request_ms"] is not None) for u in paths["users"]] == [("u1", True), ("u2", True)]
        assert {c["service"] for c in paths["calls"]} == {"web", "api", "db"}
        assert all(c["instances"] for c in paths["calls"])
        status = controller.get_json("/api/v1/replicas")["services"]
        assert {name: (s["replicas"], s["placed"], s["pending"]) for name, s in status.items()} == {
            name: (count, count, None) for name, count in DECLARED.items()
        }

        # An instance placed by a call is the operator's: not counted, never drained.
        (own,) = stub.Place(pb.PlaceRequest(service="web"), timeout=10).workloads
        # Evicting a declared instance through the API: the controller places a replacement (a Deployment).
        stub.Evict(pb.EvictRequest(workload_id=web[0]), timeout=10)

        def replaced() -> bool:
            now = controller.get_json("/api/v1/workloads")["workloads"]
            declared_web = {w["id"] for w in now if w["service"] == "web" and w["declared"]}
            return web[0] not in declared_web and len(declared_web) == 2

        wait_until(replaced, 15, what="a replacement for the evicted instance")
        now = listed(stub)
        (replacement,) = {i for i, w in now.items() if w.service == "web"} - {web[1], own.id}
        assert (
            own.id in now
            and not {w["id"]: w for w in controller.get_json("/api/v1/workloads")["workloads"]}[own.id]["declared"]
        )
        wait_until(lambda: replacement in watcher.placed() and web[0] in watcher.removed(), 10, what="watched")
        watcher.stop()
        assert per_service(now.values()) == {**DECLARED, "web": 3}
        before = {i: w.node for i, w in now.items()}

    # A restart restores the declared instances from --state-dir: none placed again, none lost.
    with (
        edgectl_run(EXAMPLE, "--api-port", str(port), "--state-dir", str(tmp_path)) as controller,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        grpc.channel_ready_future(channel).result(timeout=15)
        stub = pb_grpc.PlacementStub(channel)
        wait_until(lambda: controller.get_json("/api/v1/replicas")["services"]["web"]["placed"] == 2, 10, what="up")
        assert {i: w.node for i, w in listed(stub).items()} == before
