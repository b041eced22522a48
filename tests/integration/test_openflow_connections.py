"""OpenFlow connections that never become switches end with every thread they took, each with one log
line; those still in their handshake are bounded; a header that says nothing ends its connection.

Only loopback: real controller processes (`edgectl run`, or os-ken with the edgectl app as
``start_openflow`` starts it), raw TCP peers, and the process's threads as /proc shows them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.harness import REPO, ControllerProcess, edgectl_run, free_port, wait_until
from tests.integration.resources import process_resources

pytestmark = pytest.mark.integration

DIAMOND = REPO / "tests" / "data" / "fabrics" / "diamond.yaml"
HELLO = struct.pack("!BBHI", 4, 0, 8, 1)  # OpenFlow 1.3 HELLO: 04 00 00 08 00 00 00 01


def threads_of(pid: int) -> int:
    return process_resources(pid).threads


def connect_and_hello(port: int, count: int) -> list[socket.socket]:
    peers = []
    for _ in range(count):
        peer = socket.create_connection(("127.0.0.1", port), timeout=5)
        peer.sendall(HELLO)
        peers.append(peer)
    return peers


def closed_by_controller(peer: socket.socket, wait_s: float = 0.2) -> bool:
    """True once the controller has closed (or half-closed) this connection; reads and drops its messages."""
    peer.settimeout(wait_s)
    try:
        while True:
            if not peer.recv(65536):
                return True
    except TimeoutError:
        return False
    except OSError:  # reset: closed as well
        return True


def wait_openflow_listening(controller: ControllerProcess) -> None:
    """/healthz answers before the OpenFlow listener is up; a probe connection would be logged."""
    wait_until(lambda: "OpenFlow 1.3 listening" in controller.log(), 30, what="the OpenFlow listener")


def expect_hello(peer: socket.socket) -> None:
    """The controller serves this peer: its HELLO arrives."""
    peer.settimeout(10)
    header = b""
    while len(header) < 8:
        chunk = peer.recv(8 - len(header))
        assert chunk, "closed instead of served"
        header += chunk
    assert header[1] == 0, f"expected a HELLO, got {header.hex()}"


def stable_baseline(pid: int) -> int:
    """The thread count once start-up threads have settled (the same value twice, 0.5 s apart)."""
    import time

    last = threads_of(pid)
    for _ in range(20):
        time.sleep(0.5)
        now = threads_of(pid)
        if now == last:
            return now
        last = now
    return last


def test_connections_dropped_by_echo_timeout_leave_no_thread_behind() -> None:
    """40 peers say HELLO then nothing: each is dropped after the echo timeout (about 8 s with
    `edgectl run`'s 2 s echo interval) with one log line, and the controller's threads return to
    where they were."""
    with edgectl_run(DIAMOND) as controller, contextlib.ExitStack() as peers_stack:
        wait_openflow_listening(controller)
        pid = controller.process.pid
        baseline = stable_baseline(pid)
        peers = connect_and_hello(controller.openflow_port, 40)
        for peer in peers:
            peers_stack.callback(peer.close)
        wait_until(lambda: threads_of(pid) >= baseline + 40, 15, what="threads serving the 40 peers")
        for peer in peers:  # each half-closed by the controller once its echo requests went unanswered
            wait_until(lambda peer=peer: closed_by_controller(peer), 60, what="the controller to drop a silent peer")
        local_ports = [peer.getsockname()[1] for peer in peers]
        peers_stack.close()  # the peers hang up too
        wait_until(
            lambda: threads_of(pid) <= baseline + 2,
            30,
            what=f"threads back to {baseline} (now {threads_of(pid)})",
        )

        def lines_of(local_port: int) -> list[str]:
            return [line for line in controller.log().splitlines() if f"from 127.0.0.1:{local_port} " in line]

        wait_until(lambda: all(lines_of(port) for port in local_ports), 10, what="a log line per peer")
        for local_port in local_ports:
            lines = lines_of(local_port)
            assert len(lines) == 1 and "dropped: echo timeout" in lines[0], lines
        log = controller.log()
        assert "Traceback" not in log, log[-3000:]


def test_a_header_of_length_zero_is_malformed_not_a_hello() -> None:
    with edgectl_run(DIAMOND) as controller:
        wait_openflow_listening(controller)
        with socket.create_connection(("127.0.0.1", controller.openflow_port), timeout=5) as peer:
            peer.sendall(struct.pack("!BBHI", 4, 0, 0, 1))  # a HELLO's type, length 0
            local_port = peer.getsockname()[1]
            wait_until(lambda: closed_by_controller(peer), 20, what="the controller to close the connection")
        expected = f"from 127.0.0.1:{local_port} (switch unknown) dropped: malformed: MalformedOpenFlow: "
        expected += "header declares length 0"
        wait_until(lambda: expected in controller.log(), 10, what="the log line")
        log = controller.log()
        assert sum(f"127.0.0.1:{local_port} " in line for line in log.splitlines()) == 1
        assert "Traceback" not in log, log[-3000:]
        assert controller.process.poll() is None


@dataclass
class Listener:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def openflow_listener(*args: str) -> Iterator[Listener]:
    """os-ken with the edgectl app in its own process, with the limits given; always stopped by PID."""
    port = free_port()
    with tempfile.NamedTemporaryFile(prefix="openflow-listener-", suffix=".log") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.openflow_listener", "--port", str(port), *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        listener = Listener(process, port, Path(log_file.name))
        try:
            wait_until(
                lambda: "OpenFlow 1.3 listening" in listener.log() or process.poll() is not None,
                30,
                what="the OpenFlow listener",
            )
            assert process.poll() is None, listener.log()
            yield listener
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)


def test_connections_in_their_handshake_are_bounded_in_number_and_time() -> None:
    """With at most 8 in their handshake: the 9th to 12th peers are refused (one log line for the
    burst); a peer that never finishes the handshake is dropped at its deadline, and its slot is free."""
    # Echo every 30 s: only the handshake deadline (6 s) can end these silent peers.
    limits = ("--max-handshaking", "8", "--handshake-timeout", "6", "--echo-interval", "30")
    with openflow_listener(*limits) as listener, contextlib.ExitStack() as peers_stack:
        # The listener's own start-up probe held a slot until its line is logged.
        wait_until(lambda: listener.log().count(") closed") >= 1, 10, what="the start-up probe's line")
        baseline = stable_baseline(listener.process.pid)
        admitted = connect_and_hello(listener.port, 8)
        for peer in admitted:
            peers_stack.callback(peer.close)
            expect_hello(peer)  # admitted, before the next peers come
        refused = connect_and_hello(listener.port, 4)
        for peer in refused:
            peers_stack.callback(peer.close)
        for peer in refused:
            wait_until(lambda peer=peer: closed_by_controller(peer), 10, what="a refusal")
        assert not any(closed_by_controller(peer, 0.01) for peer in admitted)
        log = listener.log()
        assert log.count("refused OpenFlow connection") == 1, log[-3000:]
        assert "8 connections are still in their handshake" in log
        for peer in admitted:
            wait_until(lambda peer=peer: closed_by_controller(peer), 30, what="the handshake deadline")
        for peer in admitted:
            line = f"127.0.0.1:{peer.getsockname()[1]} (switch unknown) dropped: handshake timeout"
            wait_until(lambda line=line: line in listener.log(), 10, what=line)
        # Their slots are free again: a new peer is served (its connection stays open), not refused.
        with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as late:
            late.sendall(HELLO)
            assert not closed_by_controller(late, 1.0)
        assert listener.log().count("refused OpenFlow connection") == 1
        peers_stack.close()
        wait_until(lambda: threads_of(listener.process.pid) <= baseline + 2, 20, what=f"threads back to {baseline}")
        assert "Traceback" not in listener.log()


STOP_IN_PROCESS = """
import json, socket, sys, threading, time
from tests.integration.harness import free_port
from edgectl.config import RunConfig, load_fabric
from edgectl.controller import Controller

before = set(threading.enumerate())
config = RunConfig(fabric_file=sys.argv[1], openflow_port=free_port(), http_port=free_port(),
                   xds_port=free_port(), api_port=free_port())
controller = Controller(config, load_fabric(config.fabric_file))
controller.start()
peer = socket.create_connection(("127.0.0.1", config.openflow_port))
peer.sendall(bytes.fromhex("0400000800000001"))
peer.settimeout(10)
peer.recv(8)  # served: the controller's HELLO
controller.stop()
deadline = time.monotonic() + 10
while [t for t in threading.enumerate() if t not in before] and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps([t.name for t in threading.enumerate() if t not in before]))
"""


def test_controller_stop_ends_openflow_and_every_thread_it_started() -> None:
    """`Controller.stop()` stops the listener, drops connected peers and ends os-ken's threads (in-process)."""
    result = subprocess.run(
        [sys.executable, "-c", STOP_IN_PROCESS, str(DIAMOND)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [], result.stderr[-3000:]
    assert "dropped: controller stopping" in result.stderr


def test_a_tls_peer_silent_in_its_tls_handshake_is_dropped_at_the_deadline(tmp_path: Path) -> None:
    """With OpenFlow over TLS the TLS handshake comes first, on a socket with no timeout: a peer that
    never sends its ClientHello held a thread forever. It is now dropped at the 10 s handshake deadline."""
    from pki.ca import CertificateAuthority

    CertificateAuthority.init(tmp_path / "ca", "edge.test")
    fabric = REPO / "examples" / "edge-cloud.yaml"
    with (
        edgectl_run(fabric, "--pki-dir", str(tmp_path / "ca"), "--openflow-tls") as controller,
        contextlib.ExitStack() as peers_stack,
    ):
        wait_openflow_listening(controller)
        pid = controller.process.pid
        baseline = stable_baseline(pid)
        peers = [socket.create_connection(("127.0.0.1", controller.openflow_port), timeout=5) for _ in range(10)]
        for peer in peers:
            peers_stack.callback(peer.close)
        wait_until(lambda: threads_of(pid) >= baseline + 10, 15, what="threads serving the 10 peers")
        for peer in peers:
            wait_until(lambda peer=peer: closed_by_controller(peer), 40, what="the TLS handshake deadline")
        for peer in peers:
            line = f"from 127.0.0.1:{peer.getsockname()[1]} (switch unknown) dropped: TLS handshake timeout"
            wait_until(lambda line=line: line in controller.log(), 10, what=line)
        peers_stack.close()
        wait_until(lambda: threads_of(pid) <= baseline + 2, 30, what=f"threads back to {baseline}")
        assert "Traceback" not in controller.log()
