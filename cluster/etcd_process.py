"""A local etcd cluster of real `etcd` processes on loopback, for tests, benchmarks and the demo.

Free ports are picked, members started and waited on until each answers /health; every process is
stopped by its PID (stop() always, also when start() failed). Data directories go to /dev/shm when it
exists (etcd fsyncs every write; tmpfs keeps that cheap), else under the given directory; logs stay in
the given directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cluster.ports import free_port

ETCD_BINARY = "etcd"


@dataclass
class _Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None


class EtcdCluster:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        members: int = 3,
        *,
        heartbeat_ms: int = 50,
        election_ms: int = 250,
        host: str = "127.0.0.1",
        binary: str = ETCD_BINARY,
        start_timeout_s: float = 30.0,
    ) -> None:
        if members < 1:
            raise ValueError(f"an etcd cluster has at least one member, got {members}")
        if election_ms < 5 * heartbeat_ms:
            raise ValueError(f"election_ms ({election_ms}) should be at least 5x heartbeat_ms ({heartbeat_ms})")
        self.directory = Path(directory)
        self.size = members
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.host = host
        self.binary = binary
        self.start_timeout_s = start_timeout_s
        self._members: list[_Member] = []
        self._data_root: Path | None = None
        self._data_root_is_scratch = False

    @property
    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def client_urls(self) -> list[str]:
        return [f"http://{self._url_host}:{m.client_port}" for m in self._members]

    @property
    def urls_text(self) -> str:
        return ",".join(self.client_urls)

    def pid(self, i: int) -> int | None:
        process = self._members[i].process
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> EtcdCluster:
        """Start every member and wait until each is healthy; on failure everything started is stopped."""
        if self._members:
            raise RuntimeError("this etcd cluster is already started")
        if shutil.which(self.binary) is None:
            raise FileNotFoundError(f"{self.binary!r} not found: install etcd (Debian: etcd-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        shm = Path("/dev/shm")
        if shm.is_dir() and os.access(shm, os.W_OK):
            self._data_root = Path(tempfile.mkdtemp(prefix="edgectl-etcd-", dir=shm))
            self._data_root_is_scratch = True
        else:
            self._data_root = self.directory
        try:
            ports: set[int] = set()
            for i in range(self.size):
                client_port, peer_port = self._two_new_ports(ports)
                name = f"etcd{i}"
                data_dir, log_path = self._data_root / f"{name}.data", self.directory / f"{name}.log"
                self._members.append(_Member(name, client_port, peer_port, data_dir, log_path))
            for i in range(self.size):
                self.start_member(i, wait=False)
            for i in range(self.size):
                self.wait_healthy(i)
        except BaseException:
            self.stop()
            raise
        return self

    def _two_new_ports(self, taken: set[int]) -> tuple[int, int]:
        picked: list[int] = []
        while len(picked) < 2:
            port = free_port(self.host)
            if port not in taken:
                taken.add(port)
                picked.append(port)
        return picked[0], picked[1]

    def _initial_cluster(self) -> str:
        return ",".join(f"{m.name}=http://{self._url_host}:{m.peer_port}" for m in self._members)

    def start_member(self, i: int, *, wait: bool = True) -> None:
        """(Re)start member ``i`` with its data directory as it was left."""
        member = self._members[i]
        if member.process is not None and member.process.poll() is None:
            raise RuntimeError(f"etcd member {i} is already running (pid {member.process.pid})")
        peer_url = f"http://{self._url_host}:{member.peer_port}"
        client_url = f"http://{self._url_host}:{member.client_port}"
        command = [
            self.binary,
            "--name", member.name,
            "--data-dir", str(member.data_dir),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", self._initial_cluster(),
            "--initial-cluster-state", "new",
            "--initial-cluster-token", f"edgectl-{os.getpid()}-{id(self)}",
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_ms),
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip
        if member.log_file is not None:
            member.log_file.close()
        member.log_file = open(member.log_path, "ab")  # noqa: SIM115  (kept open for the process's life)
        member.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=member.log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        if wait:
            self.wait_healthy(i)

    def wait_healthy(self, i: int, timeout_s: float | None = None) -> None:
        """Until member ``i`` answers /health with true (it has a leader and can serve)."""
        member = self._members[i]
        deadline = time.monotonic() + (timeout_s or self.start_timeout_s)
        last = "no answer"
        url = f"http://{self._url_host}:{member.client_port}/health"
        while time.monotonic() < deadline:
            if member.process is None or member.process.poll() is not None:
                raise RuntimeError(f"etcd member {i} exited; see {member.log_path}\n{self._log_tail(member)}")
            try:
                with urllib.request.urlopen(url, timeout=1.0) as response:
                    body: Any = json.loads(response.read())
                if str(body.get("health")) == "true":
                    return
                last = json.dumps(body)
            except (OSError, ValueError, urllib.error.URLError) as exc:
                last = str(exc)
            time.sleep(0.05)
        raise TimeoutError(f"etcd member {i} not healthy within the deadline ({last}); see {member.log_path}")

    @staticmethod
    def _log_tail(member: _Member, lines: int = 20) -> str:
        try:
            return "\n".join(member.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _signal(self, i: int, sig: signal.Signals) -> None:
        process = self._members[i].process
        if process is None or process.poll() is not None:
            raise RuntimeError(f"etcd member {i} is not running")
        os.kill(process.pid, sig)

    def kill_member(self, i: int) -> None:
        """SIGKILL member ``i`` (its data stays; start_member(i) brings it back)."""
        self._signal(i, signal.SIGKILL)
        self._reap(i, timeout_s=10.0)

    def stop_member(self, i: int) -> None:
        """SIGTERM member ``i`` (SIGKILL after 10 s); its data stays."""
        member = self._members[i]
        if member.process is None or member.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(member.process.pid, signal.SIGCONT)  # a paused member cannot handle SIGTERM
            os.kill(member.process.pid, signal.SIGTERM)
        self._reap(i, timeout_s=10.0)

    def pause(self, i: int) -> None:
        self._signal(i, signal.SIGSTOP)

    def resume(self, i: int) -> None:
        self._signal(i, signal.SIGCONT)

    def _reap(self, i: int, *, timeout_s: float) -> None:
        member = self._members[i]
        process = member.process
        if process is None:
            return
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10.0)
        if member.log_file is not None:
            member.log_file.close()
            member.log_file = None

    def stop(self) -> None:
        """Stop every member by PID and remove scratch data; safe to call twice or after a failed start."""
        for i in range(len(self._members)):
            with contextlib.suppress(Exception):
                self.stop_member(i)
        for member in self._members:  # whatever stop_member could not end
            if member.process is not None and member.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(member.process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    member.process.wait(timeout=10.0)
            if member.log_file is not None:
                member.log_file.close()
                member.log_file = None
        if self._data_root is not None and self._data_root_is_scratch:
            shutil.rmtree(self._data_root, ignore_errors=True)
        self._data_root = None

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
