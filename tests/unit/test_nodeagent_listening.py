"""The node agent's check that the process listening on an app's address is the app it started
(``nodeagent.listening``): the netlink answer decoded, the addresses matched, and ``wait_listening``
against real processes on loopback (the app's own listener, one another process holds, an app behind a
wrapper)."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from nodeagent.listening import (
    NLMSG_DONE,
    NLMSG_ERROR,
    SOCK_DIAG_BY_FAMILY,
    Listener,
    decode_listeners,
    diag_request,
    listener_of,
    matching_inodes,
)
from nodeagent.supervisor import wait_listening


def _diag_message(family: int, address: str, port: int, inode: int) -> bytes:
    raw = ipaddress.ip_address(address).packed.ljust(16, b"\0")
    socket_id = struct.pack("!HH", port, 0) + raw + bytes(16) + struct.pack("=III", 0, 0, 0)
    body = struct.pack("=BBBB", family, 10, 0, 0) + socket_id + struct.pack("=IIIII", 0, 0, 0, 0, inode)
    return struct.pack("=IHHII", 16 + len(body), SOCK_DIAG_BY_FAMILY, 2, 1, 0) + body


def _done() -> bytes:
    return struct.pack("=IHHII", 20, NLMSG_DONE, 2, 1, 0) + bytes(4)


def test_a_dump_answer_is_decoded_to_address_port_and_inode() -> None:
    data = _diag_message(socket.AF_INET, "127.0.0.2", 8080, 41) + _diag_message(socket.AF_INET6, "::", 9090, 42)
    found, done = decode_listeners(data)
    assert found == [(ipaddress.IPv4Address("127.0.0.2"), 8080, 41), (ipaddress.IPv6Address("::"), 9090, 42)]
    assert not done
    assert decode_listeners(_done()) == ([], True)
    error = struct.pack("=IHHII", 36, NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -13) + bytes(16)
    with pytest.raises(OSError, match="sock_diag"):
        decode_listeners(error)
    request = diag_request(socket.AF_INET)
    assert len(request) == struct.unpack_from("=I", request)[0] == 72


def test_a_listener_takes_the_apps_address_when_bound_to_it_or_to_a_wildcard() -> None:
    v4, v6 = ipaddress.IPv4Address, ipaddress.IPv6Address
    listeners = [
        (v4("127.0.0.2"), 80, 1),  # the address itself
        (v4("0.0.0.0"), 80, 2),  # the IPv4 wildcard
        (v6("::"), 80, 3),  # the dual-stack wildcard
        (v6("::ffff:127.0.0.2"), 80, 4),  # the IPv4-mapped address
        (v4("127.0.0.1"), 80, 5),  # another address
        (v4("127.0.0.2"), 81, 6),  # another port
        (v6("::1"), 80, 7),  # IPv6 loopback
    ]
    assert matching_inodes(listeners, "127.0.0.2", 80) == {1, 2, 3, 4}


@pytest.fixture
def port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def apps() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for app in started:  # each in a session of its own: its whole group, by its PID
        if app.poll() is None:
            os.killpg(app.pid, signal.SIGKILL)
        app.wait()


def _start(apps: list[subprocess.Popen[bytes]], argv: list[str]) -> subprocess.Popen[bytes]:
    app = subprocess.Popen(argv, start_new_session=True)
    apps.append(app)
    return app


def _listening_app(port: int, host: str = "127.0.0.1", delay_s: float = 0.2) -> str:
    return (
        f"import socket, time; time.sleep({delay_s}); s = socket.socket(); s.bind(({host!r}, {port})); "
        "s.listen(); time.sleep(60)"
    )


def test_the_apps_own_listener_is_the_app_listening(port: int, apps: list[subprocess.Popen[bytes]]) -> None:
    app = _start(apps, [sys.executable, "-c", _listening_app(port)])
    assert listener_of(app.pid, "127.0.0.1", port) is Listener.NONE
    wait_listening(app, "127.0.0.1", port, 10, threading.Event())
    assert listener_of(app.pid, "127.0.0.1", port) is Listener.APP


def test_an_app_behind_a_wrapper_is_found_among_the_processes_it_started(
    port: int, apps: list[subprocess.Popen[bytes]]
) -> None:
    inner = _listening_app(port, "0.0.0.0")
    app = _start(apps, ["sh", "-c", f'{sys.executable} -c "{inner}"; true'])
    wait_listening(app, "127.0.0.1", port, 10, threading.Event())
    assert listener_of(app.pid, "127.0.0.1", port) is Listener.APP


def test_another_process_on_the_apps_address_is_not_the_app_listening(
    port: int, apps: list[subprocess.Popen[bytes]]
) -> None:
    """The address answers a connect, but the app never bound it: no success (a connect probe took it
    for the app), and the failure says another process holds the address."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        app = _start(apps, [sys.executable, "-c", "import time; time.sleep(60)"])
        assert listener_of(app.pid, "127.0.0.1", port) is Listener.OTHER
        with pytest.raises(RuntimeError, match=r"within 0.5 s \(another process listens there\)"):
            wait_listening(app, "127.0.0.1", port, 0.5, threading.Event())
        failing = _start(apps, [sys.executable, "-c", _listening_app(port)])  # EADDRINUSE: it exits
        with pytest.raises(RuntimeError, match=r"app exited \(1\) before it listened .*another process listens"):
            wait_listening(failing, "127.0.0.1", port, 10, threading.Event())


def test_where_the_apps_descriptors_cannot_be_read_a_connect_decides(
    port: int, apps: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app run as another user by an agent without the right to read its /proc/PID/fd: not a refusal
    of every start, but the connect probe (what answers while the app runs is taken for it)."""
    from nodeagent import listening

    def unreadable(path: object) -> list[str]:
        raise PermissionError(13, "Permission denied", str(path))

    app = _start(apps, [sys.executable, "-c", _listening_app(port, delay_s=0)])
    wait_listening(app, "127.0.0.1", port, 10, threading.Event())
    monkeypatch.setattr(listening.os, "listdir", unreadable)
    assert listener_of(app.pid, "127.0.0.1", port) is None
    wait_listening(app, "127.0.0.1", port, 10, threading.Event())
