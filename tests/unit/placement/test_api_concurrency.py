"""Slow migrations never starve the read RPCs: Migrate holds a worker while it waits for convergence,
so at most ``max_migrations`` wait at once (one more: RESOURCE_EXHAUSTED at once) and List, Get and
health keep workers of their own."""

from __future__ import annotations

import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from placement._pb import placement_pb2 as pb
from tests.integration.harness import wait_until
from tests.unit.placement.helpers import served_api

MIGRATIONS = 16
WAITING = 4
"""The default: a quarter of the 16 workers."""


def test_sixteen_slow_migrations_leave_list_get_and_health_answering() -> None:
    converged = threading.Event()
    with served_api(convergence_probes=[lambda _generation: converged.is_set()], failover=False) as (bus, server, stub):
        placed = stub.Place(
            pb.PlaceRequest(service="api", cpu_millis=10, memory_mib=8, replicas=MIGRATIONS), timeout=10
        ).workloads
        assert len(placed) == MIGRATIONS
        outcomes: list[grpc.StatusCode] = []

        def migrate(workload_id: str) -> None:
            try:
                request = pb.MigrateRequest(workload_id=workload_id, best=True, force=True, timeout_s=60)
                stub.Migrate(request, timeout=90)
                outcomes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                outcomes.append(exc.code())

        movers = [threading.Thread(target=migrate, args=(w.id,), daemon=True) for w in placed]
        try:
            for mover in movers:
                mover.start()
            # Every migration is either waiting for convergence or already refused.
            first = {w.id for w in placed}
            wait_until(
                lambda: len(outcomes) + sum(1 for w in bus.state.workloads if w not in first) >= MIGRATIONS,
                timeout=20,
                what="every Migrate to wait or be refused",
            )
            started = time.monotonic()
            listed = stub.List(pb.ListRequest(), timeout=5)
            stub.Get(pb.GetRequest(workload_id=placed[0].id), timeout=5)
            channel = grpc.insecure_channel(server.address)  # type: ignore[attr-defined]
            with channel:
                health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            assert time.monotonic() - started < 5
            assert len(listed.workloads) >= MIGRATIONS
            assert outcomes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == MIGRATIONS - WAITING
        finally:
            converged.set()
            for mover in movers:
                mover.join(30)
        assert outcomes.count(grpc.StatusCode.OK) == WAITING  # the waiting ones completed once converged
