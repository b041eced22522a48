"""Where the xDS server listens (adapter): binding a grpc.aio server to TCP or a Unix socket, and
clearing the socket file a killed controller left behind."""

from __future__ import annotations

import os
import socket
import stat

import grpc


def bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None = None) -> int:
    """Bind ``address`` (``host:port`` or ``unix:path``); the bound TCP port. OSError if it cannot."""
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot bind {address}: {exc}") from exc
    if port == 0 and not address.startswith("unix:"):
        raise OSError(f"cannot bind {address}")
    return int(port)


def host_for_grpc(host: str) -> str:
    """An IPv6 literal in brackets, as gRPC addresses spell it."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def strip_unix_scheme(path: str) -> str:
    return path[len("unix:") :] if path.startswith("unix:") else path


def remove_stale_socket(path: str) -> None:
    """A socket file left by a killed controller would make the bind fail: remove it, but never a
    file that is not a socket or a socket someone still listens on."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody answers: stale
            return
    raise OSError(f"another server listens on {path}")
