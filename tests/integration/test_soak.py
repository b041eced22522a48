"""Soak: clients that open and abandon connections in every way they can (HTTP connections closed early, cut
off, reset or never finished; placement gRPC channels dropped mid-call and mid-Watch; xDS streams dropped
before and after their first answer; OpenFlow peers that leave before, during and after their HELLO, send a
malformed header, or fall silent until the controller's echo timeout drops them) leave `edgectl run` with the
threads, file descriptors and memory it had before, and no traceback in its log. Real clients (sockets, grpcio)
against a real controller process; loopback only. Bounded: about 30 s."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from meshctl.xds_grpc import SERVICE as ADS_SERVICE
from placement._pb import placement_pb2 as pb
from placement._pb import placement_pb2_grpc as pb_grpc
from tests.integration.harness import REPO, ControllerProcess, edgectl_run, free_port, http_get, wait_until
from tests.integration.resources import process_resources

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "edge-cloud.yaml"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUNDS = 3
THREAD_MARGIN = 4  # grpc's own helper threads come and go
FD_MARGIN = 4
RSS_MARGIN_KIB = 30 * 1024


def usage(pid: int) -> tuple[int, int, int]:
    """(threads, open file descriptors, resident KiB) of a process, from /proc."""
    return tuple(process_resources(pid))  # type: ignore[return-value]


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


def wait_connected(channel: grpc.Channel, timeout: float) -> None:
    """The channel READY, and gRPC's connectivity poller behind ``channel_ready_future`` gone: it watches in
    0.2 s steps, and a channel closed under a watch makes it raise in its thread (a warning in the run)."""
    grpc.channel_ready_future(channel).result(timeout=timeout)
    time.sleep(0.25)


def abandon_placement(port: int) -> None:
    """Channels closed after a call, and with a Watch in flight (its server-side worker must come back)."""
    for _ in range(10):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            pb_grpc.PlacementStub(channel).List(pb.ListRequest(), timeout=10)
    for _ in range(6):
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        watch = pb_grpc.PlacementStub(channel).Watch(pb.WatchRequest(include_existing=True), timeout=30)
        wait_connected(channel, 10)
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
        wait_connected(channel, 10)
        channel.close()
        stop.set()


OPENFLOW_HELLO = struct.pack("!BBHI", 4, 0, 8, 1)


def abandon_openflow(port: int) -> list[socket.socket]:
    """Peers that leave before, right after and mid-handshake, or send a header of length 0; returns peers that
    said HELLO and then fall silent: the controller must drop them itself (echo timeout) with their threads."""
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # connects, says nothing, leaves
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(OPENFLOW_HELLO)  # leaves right after its HELLO
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(struct.pack("!BBHI", 4, 0, 0, 2))  # length 0: malformed, dropped by the controller
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(OPENFLOW_HELLO)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset mid-handshake
    silent = []
    for _ in range(10):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(OPENFLOW_HELLO)
        silent.append(sock)
    return silent


def dropped_by_controller(sock: socket.socket) -> bool:
    """True once the controller closed this connection (reads and discards what it sent before)."""
    sock.settimeout(0.05)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except OSError:
        return True


def soak_round(controller: ControllerProcess, api_port: int, xds_port: int) -> list[socket.socket]:
    silent = abandon_openflow(controller.openflow_port)
    abandon_http(controller.http_port)
    abandon_placement(api_port)
    abandon_xds(xds_port)
    return silent


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
                wait_connected(channel, 20)
        wait_until(lambda: "OpenFlow 1.3 listening" in controller.log(), 30, what="the OpenFlow listener")
        warm_up = soak_round(controller, api_port, xds_port)  # pools and caches grow to their working size
        wait_until(lambda: all(dropped_by_controller(s) for s in warm_up), 30, what="silent OpenFlow peers dropped")
        for sock in warm_up:
            sock.close()
        time.sleep(1)
        baseline = usage(pid)
        silent: list[socket.socket] = []
        for _ in range(ROUNDS):
            silent += soak_round(controller, api_port, xds_port)
        during = usage(pid)
        last: list[tuple[int, int, int]] = []

        def back_to_baseline() -> bool:
            ok, now = settled(pid, baseline)
            last[:] = [now]
            return ok

        try:
            # The silent OpenFlow peers stay open on our side: the controller must end them itself (about
            # 4 echo intervals of 2 s after their HELLO), and with them their threads and sockets.
            wait_until(back_to_baseline, timeout=30, interval=0.5, what="threads, fds and RSS back to baseline")
        except AssertionError:
            pytest.fail(f"baseline (threads, fds, RSS KiB) {baseline}; after the rounds {during}; now {last}")
        finally:
            for sock in silent:
                sock.close()
        print(f"soak: (threads, fds, RSS KiB) baseline {baseline}, after {ROUNDS} rounds {during}, settled {last}")
        started = time.monotonic()
        assert http_get(controller.http + "/healthz", 5)[0] == 200
        assert time.monotonic() - started < 2
        log = controller.log()
        assert "Traceback" not in log, log[-3000:]
        assert controller.process.poll() is None
