"""sdnctl against what goes wrong: a fabric file that lies about latency, and garbage on the
OpenFlow port."""

from __future__ import annotations

import contextlib
import socket
import struct

import pytest

from tests.integration.harness import (
    REPO,
    edgectl_run,
    free_port,
    http_get,
    mininet_testbed,
    ping_summary,
    port_tx_packets,
    wait_until,
)

pytestmark = pytest.mark.integration

FABRICS = REPO / "tests" / "data" / "fabrics"


def test_routes_follow_measured_latency_when_the_file_lies() -> None:
    """The controller is told s1-s2-s4 is the 20 ms path; the testbed has it as the 2 ms path."""
    openflow_port = free_port()
    with contextlib.ExitStack() as stack:
        controller = stack.enter_context(edgectl_run(FABRICS / "diamond-lying.yaml", openflow_port=openflow_port))
        net = stack.enter_context(mininet_testbed(FABRICS / "diamond.yaml", openflow_port))
        controller.wait_fabric_ready("h1", "h2")
        wait_until(
            lambda: controller.route("h1", "h2")["path"] == ["s1", "s2", "s4"], 30, what="route by measured latency"
        )
        h1 = net.get("h1")
        before = port_tx_packets("s1")
        sent, received = ping_summary(h1.cmd("ping -c 100 -i 0.01 -W 1 -q 10.0.0.2"))
        after = port_tx_packets("s1")
        assert sent == received == 100
        assert after[1] - before[1] >= 100 and after[2] - before[2] < 20  # port 1: to s2, port 2: to s3


GARBAGE = [
    b"\x00" * 64,  # version 0, length 0: a header that says nothing
    b"\x04\x00\x00",  # a truncated header, then silence
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # the wrong protocol
    struct.pack("!BBHI", 4, 0, 0xFFFF, 1) + b"\xab" * 100,  # claims 64 KiB, sends 100 bytes and closes
    struct.pack("!BBHI", 4, 99, 8, 7),  # OpenFlow 1.3, unknown message type
    struct.pack("!BBHI", 0x7F, 0, 8, 1),  # an unknown version's hello
    struct.pack("!BBHI", 4, 0, 8, 1) + struct.pack("!BBHI", 4, 5, 8, 2) + struct.pack("!BBHI", 4, 6, 9, 3) + b"\xff",
    bytes(range(256)) * 8,  # noise
]


def test_garbage_on_the_openflow_port_does_not_disturb_connected_switches() -> None:
    openflow_port = free_port()
    with contextlib.ExitStack() as stack:
        controller = stack.enter_context(edgectl_run(FABRICS / "diamond.yaml", openflow_port=openflow_port))
        net = stack.enter_context(mininet_testbed(FABRICS / "diamond.yaml", openflow_port, real_delay=False))
        controller.wait_fabric_ready("h1", "h2")
        h1 = net.get("h1")
        wait_until(lambda: ping_summary(h1.cmd("ping -c 1 -W 1 10.0.0.2"))[1] == 1, 20, what="first ping")
        stream = h1.popen("ping -i 0.02 -c 300 -W 1 10.0.0.2")
        for payload in GARBAGE * 3:
            with (
                socket.create_connection(("127.0.0.1", openflow_port), timeout=2) as sock,
                contextlib.suppress(OSError),
            ):
                sock.sendall(payload)
                sock.settimeout(0.2)
                sock.recv(4096)  # the controller's hello, or nothing
        out, _ = stream.communicate(timeout=30)
        sent, received = ping_summary(out.decode())
        assert received == sent == 300, f"lost {sent - received} pings while garbage arrived"
        assert controller.process.poll() is None, "the controller died"
        switches = controller.get_json("/api/v1/topology")["switches"]
        assert all(s["connected"] for s in switches) and len(switches) == 4
        assert http_get(controller.http + "/healthz")[0] == 200
        # Each bad peer is one log line, not a hidden failure and not a traceback.
        log = controller.log()
        assert "MalformedOpenFlow" in log and "OFPUnknownVersion" in log
        assert "Traceback" not in log, log[-3000:]
