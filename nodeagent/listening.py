"""Whether the app the agent started is the process listening on its address (adapter: netlink, /proc).

A TCP connect to the app's address that succeeds proves only that *something* listens there: another
process holding that address (a sidecar's listener, an app left over) would pass for the app while the
app itself fails to bind, and its instance would become an endpoint that answers with someone else's
service. Here the listening socket is matched to the app: the kernel's listening TCP sockets in this
network namespace (a sock_diag netlink dump of the LISTEN state only, as ``ss -ltn`` asks; reading
/proc/net/tcp walks the whole established-connections table, ~5 ms) give the inode of each socket
that listens on the address (or on the wildcard address), and the app (or a process it started) must
hold one of them among its file descriptors (/proc/PID/fd).

``decode_listeners`` and ``matching_inodes`` are pure; ``listener_of`` asks the kernel, and says None
when it cannot tell (no netlink or /proc here: the caller falls back to a connect).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterable
from enum import Enum
from pathlib import Path

MAX_DESCENDANTS = 64
"""Processes of the app's tree looked at (its children, theirs...): a wrapper and its app, a worker pool."""

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_LISTEN = 10
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_REQUEST = struct.Struct("=BBBBI")  # inet_diag_req_v2 before its socket id: family, protocol, ext, pad, states
_SOCKET_ID = 48  # inet_diag_sockid: ports (big-endian), source and destination (16 bytes each), interface, cookie
_MESSAGE = struct.Struct("=BBBB")  # inet_diag_msg before its socket id: family, state, timer, retransmits
_MESSAGE_TAIL = struct.Struct("=IIIII")  # expires, read queue, write queue, uid, inode

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Listener(Enum):
    APP = "app"
    """The app (or a process it started) listens on the address."""
    OTHER = "other"
    """Something listens there, and it is not the app."""
    NONE = "none"
    """Nothing listens there yet."""


def diag_request(family: int, sequence: int = 1) -> bytes:
    """A sock_diag dump request for the TCP sockets of ``family`` in the LISTEN state."""
    body = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN) + bytes(_SOCKET_ID)
    return _HEADER.pack(_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, sequence, 0) + body


def decode_listeners(data: bytes) -> tuple[list[tuple[Address, int, int]], bool]:
    """The (address, port, inode) of each socket in one read of a dump's answer, and whether the dump
    ended there. Raises OSError for an error answer."""
    found: list[tuple[Address, int, int]] = []
    at = 0
    while at + _HEADER.size <= len(data):
        length, kind, _flags, _sequence, _port = _HEADER.unpack_from(data, at)
        if length < _HEADER.size:
            break
        if kind == NLMSG_DONE:
            return found, True
        if kind == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", data, at + _HEADER.size)
            raise OSError(-error, f"sock_diag: {os.strerror(-error)}")
        if kind == SOCK_DIAG_BY_FAMILY:
            body = at + _HEADER.size
            family = data[body]
            (port,) = struct.unpack_from("!H", data, body + _MESSAGE.size)
            raw = data[body + _MESSAGE.size + 4 : body + _MESSAGE.size + 20]
            address: Address = (
                ipaddress.IPv4Address(raw[:4]) if family == socket.AF_INET else ipaddress.IPv6Address(raw)
            )
            inode = _MESSAGE_TAIL.unpack_from(data, body + _MESSAGE.size + _SOCKET_ID)[4]
            found.append((address, port, inode))
        at += (length + 3) & ~3
    return found, False


def matching_inodes(listeners: Iterable[tuple[Address, int, int]], host: str, port: int) -> set[int]:
    """The inodes of the listening sockets that take connections to ``host:port`` (an IPv4 address):
    bound to it, to its IPv4-mapped IPv6 form, or to a wildcard address."""
    wanted = ipaddress.IPv4Address(host)
    inodes: set[int] = set()
    for address, listening_port, inode in listeners:
        if listening_port != port:
            continue
        if isinstance(address, ipaddress.IPv6Address):
            mapped = address.ipv4_mapped
            serves = address.is_unspecified or (mapped is not None and (mapped == wanted or mapped.is_unspecified))
        else:
            serves = address == wanted or address.is_unspecified
        if serves:
            inodes.add(inode)
    return inodes


def _listening_sockets() -> list[tuple[Address, int, int]]:
    """Every TCP socket in LISTEN in this network namespace (IPv4 and IPv6). Raises OSError."""
    found: list[tuple[Address, int, int]] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as diag:
        diag.settimeout(1.0)
        for sequence, family in enumerate((socket.AF_INET, socket.AF_INET6), start=1):
            diag.send(diag_request(family, sequence))
            done = False
            while not done:
                part, done = decode_listeners(diag.recv(65536))
                found += part
    return found


def _socket_inodes(pid: int, proc: Path) -> set[int]:
    """The sockets process ``pid`` holds (none once it is gone). PermissionError: not ours to read (an
    app run as another user by an agent without the right to look)."""
    inodes: set[int] = set()
    fds = proc / str(pid) / "fd"
    try:
        names = os.listdir(fds)
    except PermissionError:
        raise
    except OSError:
        return inodes  # gone
    for name in names:
        try:
            target = os.readlink(fds / name)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _tree(pid: int, proc: Path) -> list[int]:
    """``pid`` and the processes it started, breadth first (at most ``MAX_DESCENDANTS``)."""
    found, at = [pid], 0
    while at < len(found) and len(found) < MAX_DESCENDANTS:
        tasks = proc / str(found[at]) / "task"
        at += 1
        try:
            tids = os.listdir(tasks)
        except OSError:
            continue
        for tid in tids:
            try:
                children = (tasks / tid / "children").read_text().split()
            except OSError:
                continue
            found.extend(int(child) for child in children if int(child) not in found)
    return found[:MAX_DESCENDANTS]


def listener_of(pid: int, host: str, port: int, proc: Path = Path("/proc")) -> Listener | None:
    """Who listens on ``host:port`` in this network namespace: the process ``pid`` or one it started,
    another process, or nobody. None: this cannot be told here (no sock_diag, ``host`` not an IPv4
    address)."""
    try:
        ipaddress.IPv4Address(host)
        inodes = matching_inodes(_listening_sockets(), host, port)
    except (OSError, ValueError):
        return None
    if not inodes:
        return Listener.NONE
    try:
        if any(_socket_inodes(process, proc) & inodes for process in _tree(pid, proc)):
            return Listener.APP
    except PermissionError:
        return None
    return Listener.OTHER
