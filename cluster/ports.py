"""Ports for local processes that are started later (etcd members, controller replicas, test servers).

A port handed out by ``bind(port 0)`` comes from the kernel's ephemeral range: the range every outgoing
connection takes its local port from too. Between the pick and the server's own bind, on a machine busy
with other clients (parallel test suites, a lab's gRPC and etcd connections), a connection can take it and
the server fails with EADDRINUSE. So ports are picked below the ephemeral range, where only listeners bind,
at random (parallel pickers rarely meet), checked free by binding them, and never handed out twice by one
process.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

LOWEST = 20000
"""Above the registered ports local services commonly listen on (etcd 2379, Envoy's 9901, 15000s...)."""
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL_LOW = 32768

_handed_out: set[int] = set()
_lock = threading.Lock()


def ephemeral_low(path: Path = EPHEMERAL_RANGE) -> int:
    """The lowest port the kernel gives outgoing connections (32768 unless configured otherwise)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_LOW


def _tcp_socket(host: str) -> socket.socket:
    return socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)


def _bindable(host: str, port: int) -> bool:
    with _tcp_socket(host) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", *, rng: random.Random | None = None) -> int:
    """A TCP port on ``host`` nobody listens on now, outside the ephemeral range, not handed out before by
    this process."""
    pick = rng or random.SystemRandom()
    high = ephemeral_low() - 1
    if high - LOWEST < 1000:  # a configured ephemeral range that starts low: fall back to the kernel's pick
        return _kernel_pick(host)
    with _lock:
        for _ in range(200):
            port = pick.randint(LOWEST, high)
            if port not in _handed_out and _bindable(host, port):
                _handed_out.add(port)
                return port
    return _kernel_pick(host)


def _kernel_pick(host: str) -> int:
    with _tcp_socket(host) as sock:
        sock.bind((host, 0))
        port = int(sock.getsockname()[1])
    with _lock:
        _handed_out.add(port)
    return port
