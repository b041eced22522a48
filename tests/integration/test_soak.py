"""Soak: clients that open and abandon connections in every way they can (HTTP connections closed early, cut
off, reset or never finished; placement gRPC channels dropped mid-call and mid-Watch; xDS streams dropped
before and after their first answer) leave `edgectl run` with the threads, file descriptors and memory it
had before, and no traceback in its log. Real clients (sockets, grpcio) against a real controller process;
loopback only. Bounded: about 30 s."""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from meshctl.xds_grpc import SERVICE as ADS_SERVICE
from placement._pb import placement_pb2 as pb
from placement._pb import placement_pb2_grpc as pb_grpc
from tests.integration.harness import REPO, ControllerProcess, edgectl_run, free_port, http_get, wait_until

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "edge-cloud.yaml"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUNDS = 3
THREAD_MARGIN = 4  # grpc's own helper threads come and go
FD_MARGIN = 4
RSS_MARGIN_KIB = 30 * 1024


def usage(pid: int) -> tuple[int, int, int]:
    """(threads, open file descriptors, resident KiB) of a process, from /proc."""
    threads = len(list(Path(f"/proc/{pid}/task").iterdir()))
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    found = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    assert found, "no VmRSS"
    return threads, fds, int(found.group(1))


# -- ways to abandon a connection ---------------------------------------------------------------------------


def abandon_http(port: int) -> None:
    """Each way a client leaves an HTTP connection, 20 of each, some while 100 others are open and idle."""
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(100)]
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # connects, says nothing
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /api/v1/topology HTTP/1.1\r\nHost: x\r\n")  # headers never end
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # asks, never reads the answer
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"POST /api/v1/pki/rotate HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")  # body cut off
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /api/v1/routes HTTP/1.1\r\nHo")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
    for sock in idle:
        sock.close()


def abandon_placement(port: int) -> None:
    """Channels closed after a call, and with a Watch in flight (its server-side worker must come back)."""
    for _ in range(10):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            pb_grpc.PlacementStub(channel).List(pb.ListRequest(), timeout=10)
    for _ in range(6):
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        watch = pb_grpc.PlacementStub(channel).Watch(pb.WatchRequest(include_existing=True), timeout=30)
        grpc.channel_ready_future(channel).result(timeout=10)
        time.sleep(0.05)
        channel.close()  # the stream is dropped, never cancelled politely
        del watch


def ads_stream(channel: grpc.Channel, node: str, stop: threading.Event) -> Iterator[Any]:
    call = channel.stream_stream(
        f"/{ADS_SERVICE}/StreamAggregatedResources",
        request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
        response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
    )

    def requests() -> Iterator[Any]:
        yield discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id=node, cluster="soak"), type_url=CLUSTER_TYPE)
        stop.wait(10)

    result: Iterator[Any] = call(requests(), timeout=20)
    return result


def abandon_xds(port: int) -> None:
    """ADS streams dropped after their first response, and dropped before any."""
    for i in range(10):
        stop = threading.Event()
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        responses = ads_stream(channel, f"u{1 + i % 3}", stop)
        assert next(responses).type_url == CLUSTER_TYPE
        channel.close()  # mid-stream
        stop.set()
    for i in range(10):
        stop = threading.Event()
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        ads_stream(channel, f"u{1 + i % 3}", stop)
        grpc.channel_ready_future(channel).result(timeout=10)
        channel.close()
        stop.set()


def soak_round(controller: ControllerProcess, api_port: int, xds_port: int) -> None:
    abandon_http(controller.http_port)
    abandon_placement(api_port)
    abandon_xds(xds_port)


# -- the test -----------------------------------------------------------------------------------------------


def settled(pid: int, baseline: tuple[int, int, int]) -> tuple[bool, tuple[int, int, int]]:
    now = usage(pid)
    threads, fds, rss = now
    ok = threads <= baseline[0] + THREAD_MARGIN and fds <= baseline[1] + FD_MARGIN
    return ok and rss <= baseline[2] + RSS_MARGIN_KIB, now


def test_abandoned_connections_leave_no_threads_fds_or_memory_behind() -> None:
    api_port, xds_port = free_port(), free_port()
    with edgectl_run(EXAMPLE, "--api-port", str(api_port), "--xds-port", str(xds_port)) as controller:
        pid = controller.process.pid
        for port in (api_port, xds_port):  # both start after /healthz answers
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                grpc.channel_ready_future(channel).result(timeout=20)
        soak_round(controller, api_port, xds_port)  # warm-up: pools and caches grow to their working size
        time.sleep(2)
        baseline = usage(pid)
        for _ in range(ROUNDS):
            soak_round(controller, api_port, xds_port)
        during = usage(pid)
        last: list[tuple[int, int, int]] = []

        def back_to_baseline() -> bool:
            ok, now = settled(pid, baseline)
            last[:] = [now]
            return ok

        try:
            wait_until(back_to_baseline, timeout=20, interval=0.5, what="threads, fds and RSS back to baseline")
        except AssertionError:
            pytest.fail(f"baseline (threads, fds, RSS KiB) {baseline}; after the rounds {during}; now {last}")
        print(f"soak: (threads, fds, RSS KiB) baseline {baseline}, after {ROUNDS} rounds {during}, settled {last}")
        started = time.monotonic()
        assert http_get(controller.http + "/healthz", 5)[0] == 200
        assert time.monotonic() - started < 2
        log = controller.log()
        assert "Traceback" not in log, log[-3000:]
        assert controller.process.poll() is None
