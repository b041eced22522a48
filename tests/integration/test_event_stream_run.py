"""``GET /api/v1/events`` of a real ``edgectl run`` on the example fabric: a workload placed through the real
placement gRPC API arrives on the stream as a delta."""

from __future__ import annotations

import time

import pytest

from placement._pb import placement_pb2 as pb
from tests.integration.harness import edgectl_run, free_port
from tests.integration.test_placement_api import placement_stub, placing_nothing
from tests.unit.edgectl.test_event_stream import SseClient

pytestmark = pytest.mark.integration


def test_a_placed_workload_arrives_as_a_delta(tmp_path) -> None:
    port, fabric = free_port(), placing_nothing(tmp_path)
    with edgectl_run(fabric, "--api-port", str(port)) as controller, placement_stub(port) as stub:
        client = SseClient(("127.0.0.1", controller.http_port))
        try:
            kind, generation, snapshot = client.message()
            assert kind == "snapshot" and snapshot["views"]["workloads"]["workloads"] == []
            assert {row["key"] for row in snapshot["views"]["topology"]["switches"]} >= {"ea1", "m1", "c1"}
            (web,) = stub.Place(pb.PlaceRequest(service="web"), timeout=10).workloads
            deadline = time.monotonic() + 20
            while True:
                assert time.monotonic() < deadline, f"{web.id} never arrived on the stream"
                kind, later, delta = client.message()
                assert kind == "delta" and later > generation
                upserts = delta.get("views", {}).get("workloads", {}).get("workloads", {}).get("upsert", [])
                if any(row["key"] == web.id and row["node"] == web.node for row in upserts):
                    break
            assert any(e["kind"] == "WorkloadPlaced" and web.id in e["text"] for e in delta["events"])
        finally:
            client.close()
