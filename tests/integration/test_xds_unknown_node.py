"""Against a real ``edgectl run``: an xDS stream from a node id the model does not know is answered at
once and holds no migration back; and slow migrations leave the placement API's reads answering.

The xDS clients are real gRPC ADS streams (xds-protos' DiscoveryRequest) held open while the
placement API, a real gRPC client, moves workloads."""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from meshctl.xds_types import CLUSTER
from placement._pb import placement_pb2 as pb
from placement._pb import placement_pb2_grpc as pb_grpc
from tests.integration.harness import REPO, declaring_replicas, edgectl_run, free_port, wait_until
from tests.integration.test_xds_malformed import Conversation, sotw

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "edge-cloud.yaml"
MIGRATIONS = 16


@contextlib.contextmanager
def controller() -> Iterator[tuple[object, pb_grpc.PlacementStub, grpc.Channel]]:
    api_port, xds_port = free_port(), free_port()
    with (
        tempfile.TemporaryDirectory(prefix="xds-unknown-") as tmp,
        # These tests place every instance themselves: the controller places none of its own.
        edgectl_run(
            declaring_replicas(EXAMPLE, Path(tmp)), "--api-port", str(api_port), "--xds-port", str(xds_port)
        ) as run,
        grpc.insecure_channel(f"127.0.0.1:{api_port}") as api,
        grpc.insecure_channel(f"127.0.0.1:{xds_port}") as xds,
    ):
        grpc.channel_ready_future(api).result(timeout=10)
        yield run, pb_grpc.PlacementStub(api), xds


@contextlib.contextmanager
def held_stream(channel: grpc.Channel, node: str) -> Iterator[Conversation]:
    """An ADS stream of ``node`` that asks for clusters once and then never ACKs anything."""
    stream = Conversation(channel)
    try:
        stream.send(sotw(CLUSTER, node=node))
        yield stream
    finally:
        stream.close()


def test_an_unknown_node_is_answered_at_once_and_a_migration_does_not_wait_for_it() -> None:
    with controller() as (run, stub, xds), held_stream(xds, "ghost-1") as ghost:
        clients = "/api/v1/xds/clients"
        wait_until(
            lambda: run.get_json(clients)["nodes"].get("ghost-1", {}).get("streams") == 1,  # type: ignore[attr-defined]
            timeout=5,
            what="the unknown node's stream to count as connected",
        )
        (web,) = stub.Place(pb.PlaceRequest(service="web"), timeout=10).workloads
        started = time.monotonic()
        moved = stub.Migrate(pb.MigrateRequest(workload_id=web.id, best=True, force=True, timeout_s=20), timeout=30)
        took = time.monotonic() - started
        assert moved.workload.node != web.node
        assert took < 10, f"the migration took {took:.1f} s: it waited for the unknown node"
        answer = ghost.receive(timeout=5)  # answered at once, not left to Envoy's initial-fetch timeout
        assert answer.type_url == CLUSTER and not answer.resources
        lines = [line for line in run.log().splitlines() if "ghost-1" in line]  # type: ignore[attr-defined]
        assert len(lines) == 1 and "no workload or host" in lines[0], lines


def test_sixteen_slow_migrations_leave_list_answering() -> None:
    with controller() as (run, stub, xds):
        (web,) = stub.Place(pb.PlaceRequest(service="web"), timeout=10).workloads
        api = stub.Place(pb.PlaceRequest(service="api", cpu_millis=10, memory_mib=8, replicas=MIGRATIONS), timeout=10)
        assert len(api.workloads) == MIGRATIONS
        # web's sidecar calls api: while it never ACKs, every move of an api instance waits for it.
        with held_stream(xds, web.id) as caller:
            caller.receive(timeout=5)
            outcomes: list[grpc.StatusCode] = []

            def migrate(workload_id: str) -> None:
                request = pb.MigrateRequest(workload_id=workload_id, best=True, force=True, timeout_s=60)
                try:
                    stub.Migrate(request, timeout=90)
                    outcomes.append(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    outcomes.append(exc.code())

            movers = [threading.Thread(target=migrate, args=(w.id,), daemon=True) for w in api.workloads]
            for mover in movers:
                mover.start()
            first = {w.id for w in api.workloads} | {web.id}
            wait_until(
                lambda: (
                    len(outcomes)
                    + sum(1 for w in run.get_json("/api/v1/workloads")["workloads"] if w["id"] not in first)  # type: ignore[attr-defined]
                    >= MIGRATIONS
                ),
                timeout=30,
                what="every Migrate to wait or be refused",
            )
            started = time.monotonic()
            listed = stub.List(pb.ListRequest(), timeout=5)
            assert time.monotonic() - started < 5 and len(listed.workloads) > MIGRATIONS
            assert outcomes and set(outcomes) == {grpc.StatusCode.RESOURCE_EXHAUSTED}  # the ones beyond the bound
        # The caller's stream closed: nothing to wait for any more, the waiting ones complete.
        for mover in movers:
            mover.join(60)
        assert outcomes.count(grpc.StatusCode.OK) + outcomes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == MIGRATIONS
        assert outcomes.count(grpc.StatusCode.OK) >= 1
