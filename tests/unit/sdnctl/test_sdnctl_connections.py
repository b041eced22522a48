"""sdnctl.connections with os-ken's own Datapath machinery, in-process, over loopback TCP: each
connection's threads end with it, each ended connection is one log line, the handshake is bounded.
(The same through a real `edgectl run` process: tests/integration/test_openflow_connections.py.)"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sdnctl.admission import ConnectionLimits

HELLO = struct.pack("!BBHI", 4, 0, 8, 1)


@pytest.fixture
def osken_conf() -> Iterator[Callable[..., None]]:
    """os-ken's configuration, with overrides for one test, cleared after it."""
    os.environ.setdefault("OSKEN_HUB_TYPE", "native")
    from os_ken.base import app_manager  # noqa: F401, I001 - must come first (os-ken circular import)
    from os_ken import cfg
    from os_ken.controller import controller  # noqa: F401 - registers the options

    cfg.CONF(args=[], project="os_ken", default_config_files=[])
    overridden: list[str] = []

    def override(**options: Any) -> None:
        for name, value in options.items():
            cfg.CONF.set_override(name, value)
            overridden.append(name)

    yield override
    for name in overridden:
        cfg.CONF.clear_override(name)


@contextlib.contextmanager
def served(guard: Any, count: int) -> Iterator[list[socket.socket]]:
    """``count`` loopback TCP peers, each served by ``guard`` in its own thread, as os-ken's listener does."""
    peers = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        for index in range(count):
            peer = socket.create_connection(server.getsockname(), timeout=5)
            conn, _ = server.accept()
            threading.Thread(target=guard, args=(conn, ("peer", index)), daemon=True).start()
            peers.append(peer)
    try:
        yield peers
    finally:
        for peer in peers:
            peer.close()


def eventually(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def threads_started_since(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before]


def closed_by_controller(peer: socket.socket, wait_s: float = 0.1) -> bool:
    peer.settimeout(wait_s)
    try:
        while peer.recv(65536):
            pass
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def test_echo_timeout_ends_all_three_threads_of_each_connection(osken_conf: Any, caplog: Any) -> None:
    from sdnctl.connections import ConnectionGuard

    osken_conf(echo_request_interval=0.05, maximum_unreplied_echo_requests=2)
    guard = ConnectionGuard(ConnectionLimits(max_handshaking=10, handshake_timeout_s=None))
    before = set(threading.enumerate())
    with caplog.at_level(logging.INFO, "edgectl.sdnctl.connections"), served(guard, 5) as peers:
        for peer in peers:
            peer.sendall(HELLO)
        eventually(lambda: len(threads_started_since(before)) >= 15)  # handler, sender, echo loop each
        for peer in peers:
            eventually(lambda peer=peer: closed_by_controller(peer))
        eventually(lambda: not threads_started_since(before))
    lines = [r.getMessage() for r in caplog.records]
    for index in range(5):
        mine = [line for line in lines if f"from peer:{index} " in line]
        assert mine == [f"OpenFlow connection from peer:{index} (switch unknown) dropped: echo timeout "
                        "(more than 2 echo requests unanswered)"]  # fmt: skip
    assert guard.handshaking == 0


def test_a_peer_that_hangs_up_ends_every_thread_even_with_echo_off(osken_conf: Any, caplog: Any) -> None:
    """With echo off os-ken had nothing at all to wake its sender: three threads per connection stayed."""
    from sdnctl.connections import ConnectionGuard

    osken_conf(maximum_unreplied_echo_requests=0)
    guard = ConnectionGuard(ConnectionLimits(max_handshaking=10, handshake_timeout_s=None))
    before = set(threading.enumerate())
    with caplog.at_level(logging.INFO, "edgectl.sdnctl.connections"):
        with served(guard, 3) as peers:
            eventually(lambda: len(threads_started_since(before)) >= 6)
            for peer in peers:
                peer.recv(8)  # the controller's HELLO
        eventually(lambda: not threads_started_since(before))
        eventually(lambda: sum(") closed" in r.getMessage() for r in caplog.records) == 3)


def test_connections_beyond_the_limit_are_refused_with_rate_limited_lines(osken_conf: Any, caplog: Any) -> None:
    from sdnctl.connections import ConnectionGuard

    osken_conf(echo_request_interval=30.0, maximum_unreplied_echo_requests=3)
    limits = ConnectionLimits(max_handshaking=2, handshake_timeout_s=None, refusal_log_interval_s=0.5)
    guard = ConnectionGuard(limits)
    before = set(threading.enumerate())
    with caplog.at_level(logging.INFO, "edgectl.sdnctl.connections"):
        with served(guard, 2) as admitted:
            eventually(lambda: guard.handshaking == 2)
            with served(guard, 3) as refused:
                for peer in refused:
                    eventually(lambda peer=peer: closed_by_controller(peer))
            assert not any(closed_by_controller(peer) for peer in admitted)
        eventually(lambda: not threads_started_since(before))
    # The first refusal is logged; the two the throttle swallowed are counted once the interval passed.
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 2, refusals
    assert refusals[0].endswith(": 2 connections are still in their handshake (the limit)")
    assert refusals[1] == "2 more OpenFlow connections were refused (handshake limit)"
    assert guard.handshaking == 0


def test_a_handshake_past_its_deadline_is_dropped(osken_conf: Any, caplog: Any) -> None:
    from sdnctl.connections import ConnectionGuard

    osken_conf(echo_request_interval=30.0, maximum_unreplied_echo_requests=3)
    guard = ConnectionGuard(ConnectionLimits(max_handshaking=2, handshake_timeout_s=0.3))
    before = set(threading.enumerate())
    with caplog.at_level(logging.INFO, "edgectl.sdnctl.connections"), served(guard, 1) as (peer,):
        peer.sendall(HELLO)
        eventually(lambda: closed_by_controller(peer))
        eventually(lambda: not threads_started_since(before))
    assert [r.getMessage() for r in caplog.records] == [
        "OpenFlow connection from peer:0 (switch unknown) dropped: handshake timeout (not done in 0.3 s)"
    ]


def test_a_connection_dropped_mid_handshake_never_becomes_its_switch(osken_conf: Any) -> None:
    """The handshake's last reply can still wait in the app's queue when the deadline drops the
    connection; its handler then asks for MAIN. Dead stays dead: no MAIN event reaches the app, which
    would register the closed connection as the switch (shadowing the switch's new connection)."""
    from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER

    from sdnctl.admission import HANDSHAKE_TIMEOUT
    from sdnctl.connections import GuardedDatapath

    events: list[Any] = []

    class Observers:
        def send_event_to_observers(self, event: Any, state: Any) -> None:
            events.append(state)
            # The deadline no longer applies once the app hears of MAIN (the echo loop reads this flag).
            assert state != MAIN_DISPATCHER or event.datapath.handshake_done

    with socket.create_server(("127.0.0.1", 0)) as server:
        theirs = socket.create_connection(server.getsockname(), timeout=5)
        ours, _ = server.accept()
    with ours, theirs:
        datapath = GuardedDatapath(ours, ("peer", 0), handshake_timeout_s=10.0, on_handshake_done=lambda: None)
        datapath.ofp_brick = Observers()
        datapath.drop(HANDSHAKE_TIMEOUT)
        datapath.set_state(MAIN_DISPATCHER)  # the queued handshake reply, handled after the drop
        datapath.close()  # the receive loop's end
        assert datapath.state == DEAD_DISPATCHER
        assert events == [DEAD_DISPATCHER]
        assert not datapath.handshake_done

        events.clear()
        alive = GuardedDatapath(ours, ("peer", 1), handshake_timeout_s=10.0, on_handshake_done=lambda: None)
        alive.ofp_brick = Observers()
        alive.set_state(MAIN_DISPATCHER)
        alive.close()
        assert events == [MAIN_DISPATCHER, DEAD_DISPATCHER]


@pytest.mark.parametrize("length", [0, 4])
def test_a_header_shorter_than_itself_ends_the_connection_as_malformed(
    osken_conf: Any, caplog: Any, length: int
) -> None:
    from os_ken.controller import controller

    from sdnctl.runtime import _guard_connections

    osken_conf(echo_request_interval=30.0, maximum_unreplied_echo_requests=3)
    _guard_connections(controller, ConnectionLimits())
    guard = controller.datapath_connection_factory
    before = set(threading.enumerate())
    with caplog.at_level(logging.INFO, "edgectl.sdnctl.connections"), served(guard, 1) as (peer,):
        peer.sendall(struct.pack("!BBHI", 4, 0, length, 1))  # a HELLO's version and type
        eventually(lambda: closed_by_controller(peer))
        eventually(lambda: not threads_started_since(before))
    assert [r.getMessage() for r in caplog.records] == [
        f"OpenFlow connection from peer:0 (switch unknown) dropped: malformed: MalformedOpenFlow: header declares "
        f"length {length}, below the 8-byte header itself"
    ]


def test_an_echo_reply_counts_as_answered_and_is_timed_when_read_not_when_handled(osken_conf: Any) -> None:
    """A busy controller handles events late: the echo it asked for must not count as unanswered meanwhile
    (three unanswered ones drop the switch)."""
    from os_ken.controller import controller
    from os_ken.ofproto import ofproto_parser

    from sdnctl.runtime import _guard_connections

    osken_conf(echo_request_interval=30.0, maximum_unreplied_echo_requests=3)
    _guard_connections(controller, ConnectionLimits())

    class Asking:
        """The part of os-ken's Datapath its echo loop keeps: the echoes sent and not yet answered."""

        def __init__(self) -> None:
            self.unreplied_echo_requests = [41, 42]

        def acknowledge_echo_reply(self, xid: int) -> None:
            self.unreplied_echo_requests.remove(xid)

    datapath = Asking()
    reply = struct.pack("!BBHI", 4, 3, 8, 42)  # OFPT_ECHO_REPLY, xid 42
    before = time.monotonic()
    msg = ofproto_parser.msg(datapath, 4, 3, 8, 42, bytearray(reply))
    assert type(msg).__name__ == "OFPEchoReply" and msg.xid == 42
    assert datapath.unreplied_echo_requests == [41]
    # Stamped when read: the latency measurements take this, not when the app's handler gets to it.
    assert before <= msg.edgectl_read_at <= time.monotonic()


def test_unread_bytes_are_what_the_peer_sent_and_nobody_read() -> None:
    from sdnctl.connections import unread_bytes

    left, right = socket.socketpair()
    try:
        assert unread_bytes(right) == 0
        left.sendall(b"x" * 10)
        eventually(lambda: unread_bytes(right) == 10)
        right.recv(4)
        assert unread_bytes(right) == 6
    finally:
        left.close()
        right.close()
    assert unread_bytes(right) == 0, "closed: nothing to say"
