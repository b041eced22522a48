"""The replicated lab (adapter): the edge-cloud lab of ``mininet_topos.lab`` with its controller run as a
cluster: a real 3-member etcd and N ``edgectl run --etcd URLS --replica-id rN`` replicas, every switch
connected to every replica (OpenFlow roles decide which one is master), every client sidecar and node
agent listing every replica's xDS and agent sockets.

    with HaLab(Path("examples/edge-cloud.yaml"), run_dir) as lab:
        lab.wait_declared_services()
        old = lab.leader()                    # "r1", from GET /api/v1/cluster
        lab.kill(old)                         # SIGKILL by PID
        lab.wait_leader(not_in={old})         # a survivor leads
        lab.switch_roles()                    # per bridge: each replica's role, as OVS shows it

The replicas share one CA directory (``--pki-dir``): one trust bundle for every client, and every replica
issues from the same intermediate (docs/cluster.md, "Certificates"). Join tokens are minted at the
replica a node agent attests at (listed first in its ``--controller``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mininet_topos.controller_process import ControllerProcess, free_port, start_edgectl, wait_until
from mininet_topos.lab import NOT_YET, Lab

LOG = logging.getLogger("mininet_topos.ha_lab")

ETCD_HEARTBEAT_MS = 50
ETCD_ELECTION_MS = 250
RETRY_UNAVAILABLE_S = 20.0
"""How long the lab's placement client retries a call no replica could answer (a leader election)."""


@dataclass
class LabReplica:
    """One ``edgectl run`` replica of the lab: its own ports and sockets, the shared CA and config."""

    replica_id: str
    openflow_port: int
    http_port: int
    api_port: int
    xds_port: int
    agent_port: int
    xds_socket: str
    agent_socket: str
    log_path: Path
    process: ControllerProcess | None = None
    paused: bool = False

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return self.process.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.process.poll() is None

    def live(self) -> bool:
        """Running and not stopped (SIGSTOP): it can answer."""
        return self.running() and not self.paused


class HaLab(Lab):
    def __init__(
        self,
        fabric: Path,
        run_dir: Path,
        *,
        replicas: int = 3,
        etcd_members: int = 3,
        lease_ttl_s: int = 1,
        cluster_name: str = "lab",
        **kwargs: Any,
    ) -> None:
        super().__init__(fabric, run_dir, **kwargs)
        if replicas < 1:
            raise ValueError(f"a replicated lab needs at least one replica, not {replicas}")
        self.lease_ttl_s = lease_ttl_s
        self.cluster_name = cluster_name
        self.etcd_members = etcd_members
        self.etcd: Any = None  # cluster.etcd_process.EtcdCluster
        self.etcd_dir: Path | None = None
        self.replicas: dict[str, LabReplica] = {}
        for number in range(1, replicas + 1):
            rid = f"r{number}"
            self.replicas[rid] = LabReplica(
                rid,
                openflow_port=free_port(),
                http_port=free_port(),
                api_port=free_port(),
                xds_port=free_port(),
                agent_port=free_port(),
                xds_socket=str(run_dir / f"{rid}-xds.sock"),
                agent_socket=str(run_dir / f"{rid}-agent.sock"),
                log_path=run_dir / f"edgectl-{rid}.log",
            )
        first = self.replicas["r1"]
        # What Lab's single-controller code reads: the first replica's (only for messages and defaults).
        self.http_port, self.openflow_port, self.api_port = first.http_port, first.openflow_port, first.api_port
        self.http = first.http
        self.xds_socket, self.agent_socket = first.xds_socket, first.agent_socket
        self._leader_hint: str | None = None
        self._stopping = threading.Event()
        self._replica_channels: dict[str, Any] = {}

    # -- bring-up --------------------------------------------------------------------------------------

    def _start_controller(self, ca: Path) -> None:
        from cluster.etcd_process import EtcdCluster

        # Its logs under the run directory; its data in /dev/shm when there is one (etcd fsyncs every write).
        self.etcd_dir = self.run_dir / "etcd"
        self.log(f"starting a {self.etcd_members}-member etcd (logs in {self.etcd_dir})")
        self.etcd = EtcdCluster(
            self.etcd_dir, self.etcd_members, heartbeat_ms=ETCD_HEARTBEAT_MS, election_ms=ETCD_ELECTION_MS
        )
        self.etcd.start()
        self.log(f"etcd at {self.etcd.urls_text}")
        # One after the other: r1 seeds the model from --config and leads; the others join as followers.
        for replica in self.replicas.values():
            self._start_replica(replica, ca)

    def _start_replica(self, replica: LabReplica, ca: Path) -> None:
        self.log(f"starting replica {replica.replica_id} (HTTP :{replica.http_port}, log {replica.log_path})")
        with contextlib.suppress(FileNotFoundError):  # a restart: the dead process's sockets
            os.unlink(replica.xds_socket)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(replica.agent_socket)
        replica.process = start_edgectl(
            self.fabric,
            "--etcd",
            self.etcd.urls_text,
            "--replica-id",
            replica.replica_id,
            "--cluster-name",
            self.cluster_name,
            "--lease-ttl",
            str(self.lease_ttl_s),
            *self._run_args(
                ca,
                xds_port=replica.xds_port,
                api_port=replica.api_port,
                agent_port=replica.agent_port,
                xds_socket=replica.xds_socket,
                agent_socket=replica.agent_socket,
            ),
            openflow_port=replica.openflow_port,
            http_port=replica.http_port,
            log_path=replica.log_path,
            cwd=None,
            ready_timeout=60,
        )
        replica.paused = False
        if replica.replica_id == "r1":
            self.controller = replica.process

    def _build_net(self, topos: Any) -> Any:
        first, *more = [("127.0.0.1", r.openflow_port) for r in self.replicas.values()]
        return topos.build(str(self.fabric), controller=first, more_controllers=more, real_delay=self.real_delay)

    def _mesh_xds(self) -> Any:
        return [r.xds_socket for r in self.replicas.values()]

    def _agent_endpoints(self) -> tuple[str, str]:
        """Every replica's agent and xDS sockets, the one minting join tokens first (the agent attests there)."""
        order = self._replicas_from(self._enrolling_replica())
        return ",".join(f"unix:{r.agent_socket}" for r in order), ",".join(f"unix:{r.xds_socket}" for r in order)

    def _enrolling_replica(self) -> LabReplica:
        """Where join tokens are minted: a token is known to the replica that minted it."""
        return next(r for r in self.replicas.values() if r.live())

    def _replicas_from(self, first: LabReplica) -> list[LabReplica]:
        return [first, *(r for r in self.replicas.values() if r is not first)]

    def join_token(self, node: str, ttl_s: int = 600) -> str:
        body = json.dumps({"node": node, "ttl_s": ttl_s}).encode()
        request = urllib.request.Request(
            self._enrolling_replica().http + "/api/v1/pki/join-tokens",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.load(response)["token"])

    def _api_target(self) -> tuple[str, list[tuple[str, Any]]]:
        """Every replica's placement API on one channel: pick_first moves to the next when one dies."""
        addresses = ",".join(f"127.0.0.1:{r.api_port}" for r in self.replicas.values())
        options = [
            ("grpc.lb_policy_name", "pick_first"),
            ("grpc.ssl_target_name_override", "127.0.0.1"),
            ("grpc.default_authority", "127.0.0.1"),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        return f"ipv4:{addresses}", options

    def _connect_api(self, operator: Path) -> None:
        super()._connect_api(operator)
        self._stub = RetryingStub(self._stub)

    def evict_at(self, replica: LabReplica, workload_id: str, timeout_s: float = 2.0) -> Any:
        """Evict ``workload_id`` at one replica's API (a follower forwards it to the leader); the answer's
        ``grpc.StatusCode`` (OK, NOT_FOUND, UNAVAILABLE...)."""
        import grpc

        from placement._pb import placement_pb2_grpc as pb_grpc

        channel = self._replica_channels.get(replica.replica_id)
        if channel is None:
            operator = self.run_dir / "operator"
            credentials = grpc.ssl_channel_credentials(
                root_certificates=Path(f"{operator}.bundle.pem").read_bytes(),
                private_key=Path(f"{operator}.key").read_bytes(),
                certificate_chain=Path(f"{operator}.crt").read_bytes(),
            )
            channel = grpc.secure_channel(f"127.0.0.1:{replica.api_port}", credentials)
            self._replica_channels[replica.replica_id] = channel
        stub = pb_grpc.PlacementStub(channel)
        try:
            stub.Evict(self._pb.EvictRequest(workload_id=workload_id), timeout=timeout_s)
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    def _follow(self) -> None:
        """The placement events; the stream moves to another replica when its replica goes away (events
        in between are not replayed: the lab's timelines are of what it saw)."""
        import grpc

        call = self._watch_call
        while True:
            try:
                self._follow_call(call)
            except grpc.RpcError as exc:
                if self._stopping.is_set() or exc.code() == grpc.StatusCode.CANCELLED:
                    return
                LOG.info("placement watch ended (%s): following another replica", exc.code().name)
            if self._stopping.wait(0.2):
                return
            call = self._stub.Watch(self._pb.WatchRequest(include_existing=False))
            self._watch_call = call
            if self._stopping.is_set():
                call.cancel()
                return

    # -- reading ---------------------------------------------------------------------------------------

    def get(self, path: str) -> Any:
        """From the leader when it answers (routes and switches are its view), else from any live replica."""
        return self.get_from(self._read_order(), path)

    def get_from(self, replicas: Iterable[LabReplica], path: str) -> Any:
        last: Exception | None = None
        for replica in replicas:
            try:
                with urllib.request.urlopen(replica.http + path, timeout=3) as response:
                    return json.load(response)
            except OSError as exc:
                last = exc
                if replica.replica_id == self._leader_hint:
                    self._leader_hint = None
        raise last or OSError("no replica of the lab is live")

    def _read_order(self) -> list[LabReplica]:
        live = [r for r in self.replicas.values() if r.live()]
        hint = self.replicas.get(self._leader_hint or "")
        if hint is None or not hint.live():
            hint = next((r for r in live if self._reports_leader(r)), None)
            self._leader_hint = hint.replica_id if hint is not None else None
        return [hint, *(r for r in live if r is not hint)] if hint is not None else live

    def _reports_leader(self, replica: LabReplica) -> bool:
        view = self.cluster_view(replica)
        return view is not None and view.get("role") == "leader"

    def cluster_view(self, replica: LabReplica | str) -> dict[str, Any] | None:
        """One replica's ``GET /api/v1/cluster`` (None when it does not answer)."""
        if isinstance(replica, str):
            replica = self.replicas[replica]
        if not replica.live():
            return None
        try:
            with urllib.request.urlopen(replica.http + "/api/v1/cluster", timeout=2) as response:
                return dict(json.load(response))
        except (OSError, ValueError):
            return None

    def leader(self) -> str | None:
        """The replica that leads: a live one that says it does (None during an election)."""
        for replica in self.replicas.values():
            if self._reports_leader(replica):
                self._leader_hint = replica.replica_id
                return replica.replica_id
        return None

    def wait_leader(self, not_in: Iterable[str] = (), timeout: float = 30) -> str:
        """Wait until a live replica outside ``not_in`` leads; its id."""
        excluded = set(not_in)

        def found() -> str | None:
            rid = self.leader()
            return rid if rid is not None and rid not in excluded else None

        return str(wait_until(found, timeout, interval=0.02, what=f"a leader other than {sorted(excluded)}"))

    def wait_mesh_serving(self, timeout: float = 60) -> None:
        """Every placed workload's sidecar serves: its xDS stream is on some replica (each sidecar picks
        one), and every stream runs its replica's current config."""

        why = [""]

        def serving() -> bool:
            placed = {w["id"] for w in self.workloads()}
            connected: set[str] = set()
            for replica in self.replicas.values():
                if not replica.live():
                    continue
                view = self.get_from([replica], "/api/v1/xds/clients")
                if view.get("not_ready"):
                    why[0] = f"{replica.replica_id} has sidecars not ready: {view['not_ready']}"
                    return False
                streaming = {n: v for n, v in view["nodes"].items() if v["streams"]}
                behind = sorted(n for n, v in streaming.items() if not v["in_sync"])
                if behind:
                    why[0] = f"{replica.replica_id}'s streams of {behind} do not run its current config"
                    return False
                connected |= set(streaming)
            why[0] = f"placed {sorted(placed)}, streaming to some replica {sorted(connected)}"
            return placed <= connected

        try:
            wait_until(serving, timeout, what="every sidecar to serve", retry_on=NOT_YET)
        except TimeoutError as exc:
            raise type(exc)(f"{exc}: {why[0]}") from None

    def switch_roles(self) -> dict[str, dict[str, str]]:
        """Per bridge of the testbed, each replica's role as OVS shows it (``ovs-vsctl list controller``):
        "master", "slave", "other"; a replica whose connection is down: "disconnected"."""
        by_port = {r.openflow_port: r.replica_id for r in self.replicas.values()}
        controllers = _ovs_rows("controller", "_uuid,target,role,is_connected")
        by_uuid = {}
        for row in controllers:
            found = re.search(r":(\d+)$", str(row["target"]))
            rid = by_port.get(int(found.group(1))) if found else None
            if rid is not None:
                role = str(row["role"] or "other") if row["is_connected"] is True else "disconnected"
                by_uuid[_uuid(row["_uuid"])] = (rid, role)
        names = {s.name for s in self.net.switches} if self.net is not None else set()
        roles: dict[str, dict[str, str]] = {}
        for bridge in _ovs_rows("bridge", "name,controller"):
            if bridge["name"] not in names:
                continue
            roles[bridge["name"]] = dict(by_uuid[u] for u in _uuids(bridge["controller"]) if u in by_uuid)
        return roles

    def roles_seen_by(self, replica_id: str) -> dict[str, str]:
        """Per bridge, the role ``replica_id`` holds as it knows it (its ``/api/v1/cluster``: the switch's
        answer to its role request), e.g. "master"; {} when it does not answer."""
        view = self.cluster_view(replica_id) or {}
        names = {f"{int(s.dpid):016x}": s.name for s in self.net.spec.switches}
        return {names[dpid]: str(row.get("role")) for dpid, row in view.get("switches", {}).items() if dpid in names}

    def masters(self) -> dict[str, list[str]]:
        """Per bridge, the replicas OVS has as master (exactly one when all is well)."""
        return {
            b: sorted(r for r, role in roles.items() if role == "master") for b, roles in self.switch_roles().items()
        }

    def dump_flows(self) -> dict[str, list[str]]:
        """Every bridge's flows (``ovs-ofctl dump-flows``), counters and ages left out, sorted: comparable."""
        flows = {}
        for switch in self.net.switches:
            text = subprocess.run(
                ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", switch.name],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout
            flows[switch.name] = sorted(_without_counters(line) for line in text.splitlines() if "actions=" in line)
        return flows

    def placements(self) -> dict[str, tuple[str, str]]:
        """Every placed instance: id -> (service, node)."""
        return {w["id"]: (w["service"], w["node"]) for w in self.workloads()}

    def doubled(self) -> dict[str, int]:
        """Services with more instances placed than the fabric file declares: name -> how many."""
        declared = {s.name: s.replicas for s in self.net.spec.services}
        placed: dict[str, int] = {}
        for service, _node in self.placements().values():
            placed[service] = placed.get(service, 0) + 1
        return {name: n for name, n in placed.items() if n > declared.get(name, 0)}

    def ping_ends(self) -> tuple[str, str]:
        """A ping stream between two sites: the first user host and the address of the last-listed compute
        node in another site."""
        spec = self.net.spec
        site = {s.name: s.site for s in spec.switches}
        user = spec.hosts[0]
        other = next(n for n in reversed(spec.nodes) if n.site != site[user.switch])
        return user.id, str(other.ip)

    # -- faults ----------------------------------------------------------------------------------------

    def kill(self, replica_id: str, sig: signal.Signals = signal.SIGKILL) -> float:
        """Send ``sig`` to a replica by its PID (SIGKILL: reaped; SIGSTOP/SIGCONT: paused/resumed); when."""
        replica = self.replicas[replica_id]
        if not replica.running() or replica.process is None:
            raise RuntimeError(f"replica {replica_id} is not running")
        at = time.time()
        os.kill(replica.process.process.pid, sig)
        if sig == signal.SIGSTOP:
            replica.paused = True
        elif sig == signal.SIGCONT:
            replica.paused = False
        elif sig in (signal.SIGKILL, signal.SIGTERM):
            with contextlib.suppress(subprocess.TimeoutExpired):
                replica.process.process.wait(15)
        if self._leader_hint == replica_id and sig != signal.SIGCONT:
            self._leader_hint = None
        return at

    def restart(self, replica_id: str) -> None:
        """Start a replica again on its ports and sockets (stopped first, by PID, if it still runs)."""
        replica = self.replicas[replica_id]
        self._stop_replica(replica)
        runs = 1
        while replica.log_path.with_suffix(f".{runs}.log").exists():
            runs += 1
        with contextlib.suppress(FileNotFoundError):  # the last run's log is kept beside the new one
            replica.log_path.rename(replica.log_path.with_suffix(f".{runs}.log"))
        assert self.ca is not None
        self._start_replica(replica, self.ca)

    # -- teardown --------------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()
        for channel in self._replica_channels.values():
            channel.close()
        self._replica_channels.clear()
        super().stop()

    def _stop_controller(self) -> None:
        """Every replica by PID (a paused one is resumed first, or SIGTERM would wait), then etcd."""
        try:
            for replica in self.replicas.values():
                try:
                    self._stop_replica(replica)
                except Exception:
                    LOG.exception("stopping replica %s failed", replica.replica_id)
        finally:
            if self.etcd is not None:
                self.etcd.stop()  # by PID; removes its data

    def _stop_replica(self, replica: LabReplica) -> None:
        if replica.process is None:
            return
        if replica.paused and replica.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(replica.process.process.pid, signal.SIGCONT)
            replica.paused = False
        replica.process.stop(timeout=15)


class RetryingStub:
    """The placement stub, its unary calls retried while no replica answers (UNAVAILABLE: a replica died,
    or an election is under way). Streams (Watch) are the caller's to restart."""

    def __init__(self, stub: Any, patience_s: float = RETRY_UNAVAILABLE_S) -> None:
        self._stub = stub
        self._patience_s = patience_s

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)
        if name == "Watch":
            return method

        def call(request: Any, **kwargs: Any) -> Any:
            import grpc

            deadline = time.monotonic() + self._patience_s
            while True:
                try:
                    return method(request, **kwargs)
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                        raise
                    LOG.info("%s: %s; retrying", name, exc.details())
                    time.sleep(0.1)

        return call


@dataclass
class PingStream:
    """``ping -i 0.02`` from one Mininet host to another's address; replies counted by icmp_seq."""

    source: str
    address: str
    process: subprocess.Popen[bytes]
    replies: dict[int, float] = field(default_factory=dict)
    """icmp_seq -> when its reply came (wall clock, ping's -D timestamp)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    reader: threading.Thread | None = None

    @classmethod
    def start(cls, net: Any, source: str, address: str, interval_s: float = 0.02) -> PingStream:
        process = net.get(source).popen(
            ["ping", "-n", "-D", "-i", f"{interval_s:g}", address],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        stream = cls(source, address, process)
        stream.reader = threading.Thread(target=stream._read, name=f"ping-{source}", daemon=True)
        stream.reader.start()
        return stream

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            found = re.match(rb"\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)", raw)
            if found:
                with self.lock:
                    self.replies.setdefault(int(found.group(2)), float(found.group(1)))

    def received(self) -> int:
        with self.lock:
            return len(self.replies)

    def lost(self) -> list[int]:
        """The icmp_seq numbers without a reply between the first and the last answered (the tail, still
        in flight, does not count)."""
        with self.lock:
            seqs = set(self.replies)
        if not seqs:
            return []
        return [s for s in range(min(seqs), max(seqs) + 1) if s not in seqs]

    def last_reply_at(self) -> float | None:
        with self.lock:
            return max(self.replies.values(), default=None)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.reader is not None:
            self.reader.join(5)


def wait_masters(
    lab: HaLab, replica_id: str, timeout: float, on_switch: Callable[[str, float], None] | None = None
) -> dict[str, float]:
    """Wait until OVS shows ``replica_id`` as the one master of every bridge; when each got there."""
    mastered: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while True:
        now = time.time()
        for bridge, masters in lab.masters().items():
            if bridge not in mastered and masters == [replica_id]:
                mastered[bridge] = now
                if on_switch is not None:
                    on_switch(bridge, now)
        if len(mastered) == len(lab.net.switches):
            return mastered
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"after {timeout:g} s {replica_id} is sole master of {len(mastered)} of {len(lab.net.switches)} "
                f"switches; OVS shows {lab.switch_roles()}"
            )
        time.sleep(0.05)


def _ovs_rows(table: str, columns: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["ovs-vsctl", "--timeout=10", "--format=json", f"--columns={columns}", "list", table],
        capture_output=True,
        text=True,
        check=True,
        timeout=15,
    ).stdout
    document = json.loads(out)
    headings = document["headings"]
    return [dict(zip(headings, [_ovs_value(v) for v in row], strict=True)) for row in document["data"]]


def _ovs_value(value: Any) -> Any:
    """OVSDB JSON: ["set", []] is empty, ["set", [x]] a set, ["uuid", u] a reference; scalars as they are."""
    if isinstance(value, list) and len(value) == 2 and value[0] == "set":
        items = [_ovs_value(v) for v in value[1]]
        return items if len(items) != 1 else items[0]
    return value


def _uuid(value: Any) -> str:
    return str(value[1]) if isinstance(value, list) and value[:1] == ["uuid"] else str(value)


def _uuids(value: Any) -> list[str]:
    if isinstance(value, list) and value[:1] == ["uuid"]:
        return [str(value[1])]
    if isinstance(value, list):
        return [_uuid(v) for v in value]
    return []


COUNTERS = re.compile(r"\b(duration|n_packets|n_bytes|idle_age|hard_age)=[^,\s]+,?\s*")


def _without_counters(line: str) -> str:
    return COUNTERS.sub("", line).strip()
