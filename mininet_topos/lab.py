"""The edge-cloud lab (adapter): ``edgectl run`` with its CA, the Mininet testbed of the same fabric file,
the product's node agent in each compute node (``edgectl agent``, attested with a join token: it runs the
apps and sidecars placed there), the users' client sidecars and request loops, and a placement client. The demo, the
migration benchmark and the end-to-end test all drive the product through it, as a user would: the gRPC
API with an operator certificate, the HTTP API, and nothing the controller does not publish.

    with Lab(Path("examples/edge-cloud.yaml"), run_dir) as lab:
        lab.wait_declared_services()                 # the controller places what the file declares
        lab.start_loads(rate=20)
        timeline = lab.migrate("api-1", "c-n1")      # mininet_topos.timeline.MigrationTimeline

``edgectl run`` is started as the tests start it (``mininet_topos.controller_process``).

Time is wall-clock (``time.time()``) everywhere: the controller's events, the agents' starts (their
``status.json``) and every request record are on the one clock of this machine, in whatever namespace
they ran.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from meshctl.bootstrap import XdsClientTls
from mininet_topos.controller_process import ControllerProcess, WaitTimedOut, free_port, start_edgectl, wait_until
from mininet_topos.loadgen import Record
from mininet_topos.timeline import ENDED, Event, MigrationTimeline, fill_stages, xds_milestones, xds_stream_opened

LOG = logging.getLogger("mininet_topos.lab")

TRUST_DOMAIN = "edgectl.local"
"""The lab's CA's trust domain unless told another; the controller takes every SPIFFE id's from the CA."""
APP_HOST = "127.0.0.2"
"""Apps listen here behind their sidecars, so a node can run an app and a caller of its port."""


AGENT_STOP_TIMEOUT_S = 15.0
"""How long an agent may take to stop what it runs after SIGTERM before it is killed."""

XDS_SAMPLE_S = 0.01
"""How often a migration samples the xDS server's per-node ACK times (``/api/v1/xds/clients``): the times
are the server's own, the sampling only has to see each caller's ACK of the new endpoint before two later
ACKs replace it (the server keeps the last one and the one before: the old instance's withdrawal, a
model change, a push and an ACK, comes ~5 ms after the add's ACK)."""

NOT_YET = (OSError, ValueError, KeyError)
"""What a poll of the controller may raise while it comes up; any other error (it exited) ends the wait."""


@dataclass
class Probe:
    """A ``mininet_topos.probe`` running in a namespace (``Lab.probe``)."""

    process: subprocess.Popen[bytes]
    timeout_s: float

    def result(self) -> tuple[float | None, str]:
        """(when the wanted result came, wall clock; it) or (None, the last result)."""
        out, _ = self.process.communicate(timeout=self.timeout_s + 30)
        words = out.decode(errors="replace").split()
        if words[:1] == ["at"] and len(words) >= 3:
            return float(words[1]), words[2]
        return None, " ".join(words[1:2]) or out.decode(errors="replace")[-300:]


class XdsSampler:
    """``/api/v1/xds/clients``'s nodes, sampled every ``XDS_SAMPLE_S`` on a thread of its own until stopped."""

    def __init__(self, get: Callable[[str], Any]) -> None:
        self._get = get
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lab-xds-sampler", daemon=True)

    def start(self) -> XdsSampler:
        self._thread.start()
        return self

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join(5)
        return self.samples

    def _run(self) -> None:
        while True:
            with contextlib.suppress(*NOT_YET):
                self.samples.append(dict(self._get("/api/v1/xds/clients")["nodes"]))
            if self._stop.wait(XDS_SAMPLE_S):
                return


@dataclass
class _Watch:
    events: list[Event] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)


class Lab:
    def __init__(
        self,
        fabric: Path,
        run_dir: Path,
        *,
        real_delay: bool | str | None = None,
        wait_for_sidecars: bool = True,
        trust_domain: str = TRUST_DOMAIN,
        log: Callable[[str], None] = lambda _line: None,
        extra_args: Sequence[str] = (),
        sidecar_after_app: bool = False,
        cold_connections: bool = False,
    ) -> None:
        self.fabric = fabric
        self.sidecar_after_app = sidecar_after_app
        """The node agents start each sidecar once its app listens (else beside it)."""
        self.cold_connections = cold_connections
        """A new sidecar's connections open on first use, each with a full TCP handshake: the agents warm
        none up (``--no-warm-up``) and sidecars do not use TCP Fast Open (``--no-tcp-fast-open``)."""
        self.trust_domain = trust_domain
        self.wait_for_sidecars = wait_for_sidecars
        self.run_dir = run_dir
        self.real_delay = real_delay
        self.log = log
        self.extra_args = tuple(extra_args)
        """More `edgectl run` arguments (a git source, say)."""
        self.http_port, self.openflow_port = free_port(), free_port()
        self.api_port, self.xds_port = free_port(), free_port()
        self.http = f"http://127.0.0.1:{self.http_port}"
        self.xds_socket = str(run_dir / "xds.sock")
        self.agent_port = free_port()
        self.agent_socket = str(run_dir / "agent.sock")
        self.ca: Path | None = None
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.host_svids: dict[str, XdsClientTls] = {}
        """Each user host's SVID (its client sidecar's certificate), by host id."""
        self.agents_dir: Path | None = None
        """The agents' work directories (``<node>/status.json``, ``<node>/w/<id>/``): short, under /tmp
        (Unix socket paths stay within 107 bytes); copied into the run directory (``agents/``) at stop."""
        self.controller: ControllerProcess | None = None
        self.net: Any = None
        self.mesh: Any = None
        self.loads: list[Any] = []  # mininet_topos.mesh.UserLoad
        self._channel: Any = None
        self._stub: Any = None
        self._pb: Any = None
        self._watch = _Watch()
        self._watch_call: Any = None
        self._watch_thread: threading.Thread | None = None

    # -- bring-up --------------------------------------------------------------------------------------

    def start(self) -> Self:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ca, operator = self._make_ca()
        self.ca = ca
        self._start_controller(ca)
        self._start_testbed()
        self._connect_api(operator)
        return self

    def _edgectl(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "edgectl.cli", *args], capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"edgectl {' '.join(args[:2])} failed: {result.stderr.strip()}")
        return result.stdout

    def _make_ca(self) -> tuple[Path, Path]:
        ca = self.run_dir / "ca"
        operator = self.run_dir / "operator"
        self._edgectl("pki", "init", "--trust-domain", self.trust_domain, "--dir", str(ca))
        self._edgectl(
            "pki",
            "issue",
            "--dir",
            str(ca),
            "--spiffe-id",
            f"spiffe://{self.trust_domain}/operator/lab",
            "--out",
            str(operator),
        )
        return ca, operator

    def _start_controller(self, ca: Path) -> None:
        log_path = self.run_dir / "edgectl.log"
        self.log(f"starting edgectl run (HTTP :{self.http_port}, log {log_path})")
        self.controller = start_edgectl(
            self.fabric,
            *self._run_args(
                ca,
                xds_port=self.xds_port,
                api_port=self.api_port,
                agent_port=self.agent_port,
                xds_socket=self.xds_socket,
                agent_socket=self.agent_socket,
            ),
            openflow_port=self.openflow_port,
            http_port=self.http_port,
            log_path=log_path,
            cwd=None,
            ready_timeout=30,
        )

    def _run_args(
        self, ca: Path, *, xds_port: int, api_port: int, agent_port: int, xds_socket: str, agent_socket: str
    ) -> list[str]:
        """The ``edgectl run`` arguments of one controller process (one replica of a replicated lab)."""
        return [
            "--xds-port",
            str(xds_port),
            "--api-port",
            str(api_port),
            "--xds-unix",
            xds_socket,
            "--agent-port",
            str(agent_port),
            "--agent-unix",
            agent_socket,
            "--mesh-app-host",
            APP_HOST,
            "--pki-dir",
            str(ca),
            *(["--wait-for-sidecars"] if self.wait_for_sidecars else []),
            *(["--no-tcp-fast-open"] if self.cold_connections else []),
            *self.extra_args,
        ]

    def _start_testbed(self) -> None:
        from mininet.log import setLogLevel

        import mininet_topos
        from mininet_topos.mesh import MeshTestbed

        setLogLevel("warning")
        self.log("building the Mininet testbed (OVS userspace datapath, real link delay)")
        started = time.monotonic()
        self.net = self._build_net(mininet_topos)
        self.net.start()
        switches = len(self.net.switches)
        wait_until(
            lambda: sum(s["connected"] for s in self.get("/api/v1/topology")["switches"]) >= switches,
            60,
            what="every switch to connect",
            retry_on=NOT_YET,
        )
        wait_until(
            lambda: all(k["discovered"] for k in self.get("/api/v1/topology")["links"]),
            60,
            what="every link discovered",
            retry_on=NOT_YET,
        )
        wait_until(self._routes_applied, 60, what="routes on every switch", retry_on=NOT_YET)
        self.log(
            f"{switches} switches connected, links discovered, routes installed in {time.monotonic() - started:.1f} s"
        )
        self.mesh = MeshTestbed(self.net, xds_socket=self._mesh_xds(), run_dir=self.run_dir / "mesh")
        for host in self.net.spec.hosts:
            self.mesh.start_client(host.id, tls=self._host_svid(host.id))
        self.agents_dir = Path(tempfile.mkdtemp(prefix="edgectl-lab-"))
        for node in self.net.spec.nodes:
            self._start_agent(node.id)
        wait_until(self._agents_attested, 60, what="every node agent to attest", retry_on=NOT_YET)
        self.log(f"{len(self.agents)} node agents attested with join tokens (edgectl agent, in each node)")

    def _build_net(self, topos: Any) -> Any:
        """The Mininet testbed (built, not started), its switches connecting to the controller."""
        return topos.build(str(self.fabric), controller=("127.0.0.1", self.openflow_port), real_delay=self.real_delay)

    def _mesh_xds(self) -> Any:
        """What the client sidecars' bootstraps name as xDS (``MeshTestbed(xds_socket=...)``)."""
        return self.xds_socket

    def _agent_endpoints(self) -> tuple[str, str]:
        """A node agent's ``--controller`` and ``--xds``."""
        return f"unix:{self.agent_socket}", f"unix:{self.xds_socket}"

    def _host_svid(self, host_id: str) -> XdsClientTls:
        """The user host's SVID (``spiffe://<td>/host/<id>``) for its client sidecar's mTLS to xDS."""
        svid = self.issue_svid(f"spiffe://{self.trust_domain}/host/{host_id}", f"hosts/{host_id}")
        self.host_svids[host_id] = svid
        return svid

    def issue_svid(self, spiffe_id: str, name: str) -> XdsClientTls:
        """A certificate for ``spiffe_id`` from the lab's CA, as files under the run directory."""
        assert self.ca is not None
        prefix = self.run_dir / name
        prefix.parent.mkdir(parents=True, exist_ok=True)
        self._edgectl("pki", "issue", "--dir", str(self.ca), "--spiffe-id", spiffe_id, "--out", str(prefix))
        return XdsClientTls(f"{prefix}.crt", f"{prefix}.key", f"{prefix}.bundle.pem")

    def probe(
        self,
        where: str,
        mode: str,
        address: tuple[str, int],
        want: str,
        timeout_s: float,
        svid: XdsClientTls | None = None,
    ) -> Probe:
        """Call ``address`` from ``where``'s namespace (``mininet_topos.probe``: ``tcp``, a raw connect that
        bypasses any sidecar; ``tls``, an HTTP GET over mTLS with ``svid``) until the result is ``want``."""
        from mininet_topos.mesh import checkout_env

        command = [sys.executable, "-m", "mininet_topos.probe", mode, address[0], str(address[1]), want, str(timeout_s)]
        if svid is not None:
            command += ["--cert", svid.cert_file, "--key", svid.key_file, "--ca", svid.ca_file]
        process = self.net.get(where).popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=checkout_env()
        )
        return Probe(process, timeout_s)

    def drop_packets(self, switch: str, address: tuple[str, int], source: str | None = None) -> int:
        """n_packets of ``switch``'s policy drop flows for TCP to ``address`` (from ``source``, or any): an
        unknown port's in table 0, those of the instance at ``address`` in table 1 of its node's switch."""
        flows = subprocess.run(
            ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", switch],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        total = 0
        for line in flows.splitlines():
            to = re.search(rf"nw_dst={re.escape(address[0])}\b.*tp_dst={address[1]}\b", line)
            if to and "actions=drop" in line and (source is None or re.search(rf"nw_src={re.escape(source)}\b", line)):
                found = re.search(r"n_packets=(\d+)", line)
                total += int(found.group(1)) if found else 0
        return total

    def join_token(self, node: str, ttl_s: int = 600) -> str:
        """A one-time join token for ``node`` (``POST /api/v1/pki/join-tokens``, loopback only)."""
        body = json.dumps({"node": node, "ttl_s": ttl_s}).encode()
        request = urllib.request.Request(
            self.http + "/api/v1/pki/join-tokens",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.load(response)["token"])

    def _start_agent(self, node: str) -> None:
        """``edgectl agent`` inside the node's network namespace, attesting with a fresh join token; the
        API and xDS on the controller's Unix sockets (file paths cross namespaces, addresses do not)."""
        from mininet_topos.mesh import checkout_env

        assert self.agents_dir is not None and self.ca is not None
        work_dir = self.agents_dir / node
        work_dir.mkdir()
        bundle = self.run_dir / "operator.bundle.pem"  # the CA's certificates, as `edgectl pki issue` wrote them
        token = work_dir / "join-token"  # a file: not on a command line (ps), and a token may start with "-"
        token.touch(mode=0o600)
        token.write_text(self.join_token(node))
        controller, xds = self._agent_endpoints()
        command = [
            sys.executable,
            "-m",
            "edgectl.cli",
            "agent",
            "--node",
            node,
            "--controller",
            controller,
            "--xds",
            xds,
            "--join-token-file",
            str(token),
            "--trust-bundle",
            str(bundle),
            "--work-dir",
            str(work_dir),
            *self._run_as(),
            *(["--sidecar-after-app"] if self.sidecar_after_app else []),
            *(["--no-warm-up"] if self.cold_connections else []),
        ]
        with open(work_dir / "agent.log", "wb") as log:
            self.agents[node] = self.net.get(node).popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=checkout_env()
            )

    def _run_as(self) -> list[str]:
        args = agent_run_as_args()
        if args:
            self.log("this checkout is not reachable by other users: the node agents run apps as the lab's own user")
        return args

    def _agents_attested(self) -> bool:
        for node, agent in self.agents.items():
            if agent.poll() is not None:
                raise RuntimeError(f"the agent of {node} exited ({agent.returncode}): {self.agent_log(node)[-800:]}")
        return all(self.agent_status(node).get("spiffe_id") for node in self.agents)

    def agent_log(self, node: str) -> str:
        assert self.agents_dir is not None
        try:
            return (self.agents_dir / node / "agent.log").read_text(errors="replace")
        except OSError:
            return ""

    def _routes_applied(self) -> bool:
        view = self.get("/api/v1/routes")
        generation = view["generation"]
        return bool(view["routes"]) and all(s["applied_generation"] >= generation for s in view["switches"])

    def _connect_api(self, operator: Path) -> None:
        import grpc

        from placement._pb import placement_pb2 as pb
        from placement._pb import placement_pb2_grpc as pb_grpc

        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(f"{operator}.bundle.pem").read_bytes(),
            private_key=Path(f"{operator}.key").read_bytes(),
            certificate_chain=Path(f"{operator}.crt").read_bytes(),
        )
        self._pb = pb
        target, options = self._api_target()
        self._channel = grpc.secure_channel(target, credentials, options=options)
        self._stub = pb_grpc.PlacementStub(self._channel)
        self._watch_call = self._stub.Watch(pb.WatchRequest(include_existing=True))
        self._watch_thread = threading.Thread(target=self._follow, name="lab-watch", daemon=True)
        self._watch_thread.start()

    def _api_target(self) -> tuple[str, list[tuple[str, Any]]]:
        """The placement API's gRPC target and channel options."""
        return f"127.0.0.1:{self.api_port}", []

    def _follow(self) -> None:
        """The placement events, for the timelines (the node agents follow their own nodes' placements)."""
        import grpc

        try:
            self._follow_call(self._watch_call)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                LOG.warning("placement watch ended: %s", exc)

    def _follow_call(self, call: Any) -> None:
        """Note every event of one Watch call until it ends (its ``grpc.RpcError`` raised)."""
        kinds = self._pb.PlacementEvent.Kind
        for message in call:
            kind = kinds.Name(message.kind).removeprefix("KIND_")
            event = Event(
                kind,
                message.at,
                message.generation,
                message.workload.id,
                message.workload.node,
                message.workload.service,
                message.migration_id,
                message.from_workload_id,
                message.message,
                tuple((p.probe, p.seconds) for p in message.converged_after),
                tuple(message.reasons),
            )
            with self._watch.changed:
                self._watch.events.append(event)
                self._watch.changed.notify_all()

    # -- reading ---------------------------------------------------------------------------------------

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.http + path, timeout=5) as response:
            return json.load(response)

    def events(self, since: int = 0) -> list[Event]:
        with self._watch.changed:
            return self._watch.events[since:]

    def wait_event(self, predicate: Callable[[Event], bool], timeout: float, start: int = 0) -> Event:
        deadline = time.monotonic() + timeout
        with self._watch.changed:
            while True:
                for event in self._watch.events[start:]:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("timed out waiting for a placement event")
                self._watch.changed.wait(remaining)

    def workloads(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/workloads")["workloads"])

    def wait_mesh_serving(self, timeout: float = 60) -> None:
        """Every placed workload's sidecar serves and every sidecar runs its current config."""

        def serving() -> bool:
            view = self.get("/api/v1/xds/clients")
            placed = {w["id"] for w in self.workloads()}
            connected = {n for n, v in view["nodes"].items() if v["streams"]}
            return (
                not view.get("not_ready")
                and placed <= connected
                and all(v["in_sync"] for v in view["nodes"].values() if v["streams"])
            )

        wait_until(serving, timeout, what="every sidecar to serve", retry_on=NOT_YET)

    def agent_status(self, node: str) -> dict[str, Any]:
        """The node agent's ``status.json`` ({} before it wrote one)."""
        assert self.agents_dir is not None
        try:
            return dict(json.loads((self.agents_dir / node / "status.json").read_text()))
        except (OSError, ValueError):
            return {}

    def agent_errors(self) -> list[str]:
        """What went wrong under the node agents: an agent that exited, a workload that crashed (its
        restarts and the reason its agent gives), from their ``status.json``."""
        errors = []
        for node, agent in self.agents.items():
            if agent.poll() is not None:
                errors.append(f"the agent of {node} exited ({agent.returncode})")
            for workload_id, row in sorted(self.agent_status(node).get("workloads", {}).items()):
                if row.get("state") == "crashed" or row.get("restarts"):
                    restarts = row.get("restarts", 0)
                    errors.append(
                        f"{workload_id} on {node}: {row.get('state')}, {restarts} restarts ({row.get('reason') or '-'})"
                    )
        return errors

    def workload_status(self, workload_id: str) -> tuple[str, dict[str, Any]] | None:
        """(node, its row of that node agent's ``status.json``) of a workload an agent runs or ran."""
        for node in self.agents:
            row = self.agent_status(node).get("workloads", {}).get(workload_id)
            if row is not None:
                return node, dict(row)
        return None

    def admin_socket(self, workload_id: str) -> Path | None:
        """The admin API socket of a workload's sidecar (``<agent work dir>/w/<id>/admin.sock``)."""
        found = self.workload_status(workload_id)
        if found is None or self.agents_dir is None:
            return None
        return self.agents_dir / found[0] / "w" / workload_id / "admin.sock"

    def started_at(self, workload_id: str) -> float | None:
        """When its agent last started that workload's app (wall clock), or None."""
        found = self.workload_status(workload_id)
        started = found[1].get("started_at") if found is not None else None
        return float(started) if started is not None else None

    def tcp_counters(self, host: str) -> dict[str, int]:
        """The kernel's TCP extension counters in one host's or node's namespace (``/proc/net/netstat``,
        e.g. ``TCPFastOpenActive``: connections whose SYN carried data, ``TCPFastOpenPassive``: accepted so)."""
        return parse_tcp_ext(self.net.get(host).cmd("cat /proc/net/netstat"))

    def envoy_counter(self, name: str) -> int:
        """A counter summed over every running sidecar (clients and workloads), from their admin APIs,
        e.g. ``cluster.svc/api.upstream_cx_connect_fail`` (connections refused by an instance)."""
        from mininet_topos.mesh import admin_get

        query = f"/stats?filter=^{name.replace('.', '[.]')}$"
        texts = [sidecar.admin_or_none(query) for sidecar in self.mesh.clients.values()]
        for node in self.agents:
            for workload_id, row in self.agent_status(node).get("workloads", {}).items():
                if row.get("sidecar_pid") and self.agents_dir is not None:
                    texts.append(admin_get(self.agents_dir / node / "w" / workload_id / "admin.sock", query))
        total = 0
        for text in texts:
            for line in (text or "").splitlines():
                stat, _, value = line.partition(": ")
                if stat == name and value.strip().isdigit():
                    total += int(value)
        return total

    # -- commands --------------------------------------------------------------------------------------

    def wait_declared_services(self, timeout: float = 60) -> list[dict[str, Any]]:
        """Wait until the controller has placed every replica the fabric file declares (it places them
        itself, with their declared constraints; ``GET /api/v1/replicas``) and every instance serves;
        the workloads. The node agent (the Watch stream) has started each one as it was placed."""

        def all_placed() -> bool:
            services = self.get("/api/v1/replicas")["services"]
            return all(s["placed"] == s["replicas"] for s in services.values())

        try:
            wait_until(all_placed, timeout, what="the declared replicas to be placed", retry_on=NOT_YET)
        except WaitTimedOut as exc:
            pending = {n: s["pending"] for n, s in self.get("/api/v1/replicas")["services"].items() if s["pending"]}
            raise RuntimeError(f"{exc}; not placed: {pending}") from None
        self.wait_mesh_serving()
        return self.workloads()

    def place(self, service: str, replicas: int) -> list[str]:
        """Place ``replicas`` instances of a declared service and wait until they serve; their ids."""
        response = self._stub.Place(self._pb.PlaceRequest(service=service, replicas=replicas), timeout=30)
        self.wait_mesh_serving()
        return [w.id for w in response.workloads]

    def start_loads(self, service: str | None = None, rate: float = 20.0) -> None:
        """A request loop on every user host, calling ``service`` (default: the entry services)."""
        names = [service] if service else self._entry_services()
        for host in self.net.spec.hosts:
            for name in names:
                self.loads.append(self.mesh.start_load(host.id, name, rate=rate))

    def _entry_services(self) -> list[str]:
        called = {c for s in self.net.spec.services for c in s.calls}
        return [s.name for s in self.net.spec.services if s.name not in called]

    def records(self, since: float = 0.0, until: float = float("inf")) -> list[Record]:
        return sorted((r for load in self.loads for r in load.snapshot(since) if r.t < until), key=lambda r: r.t)

    def migrate(self, workload_id: str, to: str, timeout_s: float = 15.0) -> MigrationTimeline:
        """Move a workload make-before-break and time every stage (see ``MigrationTimeline``)."""
        import grpc

        mark = len(self.events())
        old = next((w for w in self.workloads() if w["id"] == workload_id), None)
        if old is None:
            raise ValueError(f"no workload {workload_id}")
        requested_at = time.time()
        sampler = XdsSampler(self.get).start()
        try:
            response = self._stub.Migrate(
                self._pb.MigrateRequest(workload_id=workload_id, node_or_site=to, timeout_s=timeout_s),
                timeout=timeout_s + 10,
            )
        except grpc.RpcError as exc:
            sampler.stop()
            timeline = MigrationTimeline("", workload_id, "", old["node"], to, requested_at)
            timeline.error = f"{exc.code().name}: {exc.details()}"
            return timeline
        timeline = MigrationTimeline(
            response.migration_id, workload_id, response.workload.id, old["node"], response.workload.node, requested_at
        )
        self._fill_timeline(timeline, mark, sampler)
        return timeline

    def _fill_timeline(self, timeline: MigrationTimeline, mark: int, sampler: XdsSampler | None = None) -> None:
        """Wait for the migration to end, then fill in its stages (``mininet_topos.timeline.fill_stages``),
        what the new instance's agent says of its start, and the xDS milestones ``sampler`` saw."""
        try:
            self.wait_event(
                lambda e: e.kind in ENDED and e.migration_id == timeline.migration_id,
                20,
                mark,
            )
        except TimeoutError:
            timeline.error = "did not complete within 20 s"
        samples = sampler.stop() if sampler is not None else []
        fill_stages(timeline, self.events(mark))
        if timeline.new:
            self._fill_start(timeline)
            service = next((w["service"] for w in self.workloads() if w["id"] == timeline.new), "")
            listening = timeline.app_listening_at if timeline.started_beside else None
            milestones = xds_milestones(
                samples, timeline.new, self.callers_of(service), timeline.sidecars_at, listening_at=listening
            )
            timeline.xds_connected_at, timeline.sidecar_serving_at, timeline.callers_acked_at = milestones
            timeline.xds_stream_at = xds_stream_opened(samples, timeline.new)
        first = self.first_served_by(timeline.new, timeout=5) if timeline.new else None
        if first is not None:
            timeline.first_request_sent_at = first.t
            timeline.first_request_at = first.t + first.ms / 1000

    def _fill_start(self, timeline: MigrationTimeline) -> None:
        """The new instance's start as its agent's ``status.json`` tells it, once its start is done (the
        controller may hear the app listens, and end the move, before the agent rewrote the file)."""

        def start_done() -> tuple[str, dict[str, Any]] | None:
            found = self.workload_status(timeline.new)
            return found if found is not None and found[1].get("state") != "starting" else None

        try:
            found = wait_until(start_done, 5, what=f"{timeline.new}'s start to end")
        except WaitTimedOut:
            found = self.workload_status(timeline.new)
        row = found[1] if found is not None else {}

        def at(key: str) -> float | None:
            value = row.get(key)
            return float(value) if value is not None else None

        timeline.app_started_at = at("started_at")
        timeline.app_listening_at = at("app_listening_at")
        timeline.envoy_started_at = at("sidecar_started_at")

    def callers_of(self, service: str) -> list[str]:
        """The xDS nodes that call ``service``: the instances of the services that call it, and the user
        hosts whose request loops do."""
        calling = {s.name for s in self.net.spec.services if service in s.calls}
        instances = [w["id"] for w in self.workloads() if w["service"] in calling]
        return instances + sorted({load.host for load in self.loads if load.service == service})

    def tier_of(self, node: str) -> str:
        """ "edge", "metro" or "cloud": the tier of the node's site, as the fabric file declares it."""
        tiers = {site.id: str(site.tier.value) for site in self.net.spec.sites}
        return next(tiers[n.site] for n in self.net.spec.nodes if n.id == node)

    def site_of_tier(self, tier: str) -> str:
        return str(next(site.id for site in self.net.spec.sites if site.tier.value == tier))

    def instance_at_edge(self, service: str) -> tuple[str, str]:
        """An instance of ``service`` on an edge node, moved to a free edge node first if none is
        there; (its id, the node). Raises RuntimeError when it cannot be moved there."""
        instances = [w for w in self.workloads() if w["service"] == service]
        for w in instances:
            if self.tier_of(w["node"]) == "edge":
                return w["id"], w["node"]
        busy = {w["node"] for w in self.workloads()}
        edges = [n.id for n in self.net.spec.nodes if self.tier_of(n.id) == "edge"]
        target = next((n for n in edges if n not in busy), edges[0])
        self.log(f"no {service} instance at the edge yet: moving {instances[0]['id']} to {target}")
        moved = self.migrate(instances[0]["id"], target)
        if moved.error:
            raise RuntimeError(f"cannot put a {service} instance at the edge: {moved.error}")
        return moved.new, target

    def first_served_by(self, workload_id: str, timeout: float) -> Record | None:
        """The first successful user request the given instance answered (waits up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            served = [r for r in self.records() if r.ok and workload_id in r.served_by]
            if served:
                return served[0]
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    def moves_after(self, mark: int, timeout: float) -> list[MigrationTimeline]:
        """The moves a failover started after event ``mark``, each timed once it completed (or at the timeout)."""
        detected = self.wait_event(lambda e: e.kind == "FAILOVER_STARTED", timeout, mark)
        deadline = time.monotonic() + timeout
        while True:
            events = self.events(mark)
            started = [e for e in events if e.kind == "MIGRATION_STARTED"]
            done = {e.migration_id for e in events if e.kind in ENDED}
            if (started and all(e.migration_id in done for e in started)) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        timelines = []
        for start in started:
            old = start.from_workload_id
            timeline = MigrationTimeline(start.migration_id, old, "", start.node, "", detected.at)
            self._fill_timeline(timeline, mark)
            timelines.append(timeline)
        return timelines

    def set_link(self, a: str, b: str, up: bool) -> float:
        """Take the cable between two testbed nodes down (or up); returns when it was done."""
        self.net.configLinkStatus(a, b, "up" if up else "down")
        return time.time()

    # -- teardown --------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything this lab started, in reverse order, by PID; each step even if one before failed."""
        steps: list[Callable[[], None]] = []
        if self._watch_call is not None:
            steps.append(self._watch_call.cancel)
        if self.mesh is not None:
            steps.append(self.mesh.stop)
        steps.append(self._stop_agents)
        if self._channel is not None:
            steps.append(self._channel.close)
        if self.net is not None:
            steps.append(self.net.stop)
        steps.append(self._stop_controller)
        steps.append(self._keep_agent_files)
        with _uninterruptible():
            for step in steps:
                try:
                    step()
                except Exception:
                    LOG.exception("lab teardown step failed")

    def _stop_agents(self) -> None:
        """SIGTERM every agent (each stops the apps and sidecars it started), wait, kill a stuck one; then
        stop what an agent left running (killed, or exited on its own): its ``status.json`` names them,
        and it is read before ``_keep_agent_files`` removes the agents' directory."""
        from nodeagent.supervisor import stop_leftovers

        for agent in self.agents.values():
            if agent.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    agent.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + AGENT_STOP_TIMEOUT_S
        for node, agent in self.agents.items():
            try:
                agent.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                LOG.warning("the agent of %s did not stop within %.0f s: killing it", node, AGENT_STOP_TIMEOUT_S)
                agent.kill()
                agent.wait(5)
        if self.agents_dir is not None:
            for node in self.agents:
                work_dir = self.agents_dir / node
                stop_leftovers(work_dir / "status.json", work_dir)

    def _keep_agent_files(self) -> None:
        """The agents' logs and status (no keys) go to the run directory; their short /tmp directory is removed."""
        if self.agents_dir is None:
            return
        with contextlib.suppress(OSError):
            shutil.copytree(
                self.agents_dir, self.run_dir / "agents", ignore=shutil.ignore_patterns("*.sock", "*.key", "*.sds.json")
            )
        shutil.rmtree(self.agents_dir, ignore_errors=True)
        self.agents_dir = None

    def _stop_controller(self) -> None:
        if self.controller is not None:
            self.controller.stop(timeout=15)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def _uninterruptible() -> Iterator[None]:
    """Ctrl-C pressed again (or a SIGINT forwarded by a wrapper) must not cut the cleanup short and leave
    switches, sidecars and apps behind: hold SIGINT and SIGTERM off until it is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {sig: signal.signal(sig, _note_held) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)


def _note_held(signum: int, _frame: object) -> None:
    print(f"lab: {signal.Signals(signum).name} while cleaning up: finishing the cleanup first", file=sys.stderr)


def agent_run_as_args() -> list[str]:
    """``--run-as`` for node agents started from this checkout: none (their default, ``nobody``: apps without
    the node's keys) when such a user can run this checkout's Python and code, else the caller's own user
    (a checkout in a private directory, as a fresh clone under ``mktemp -d`` is: ``nobody`` could not even
    start the app)."""
    from mininet_topos.mesh import CHECKOUT

    if all(reachable_by_others(Path(p)) for p in (CHECKOUT, sys.prefix, sys.executable)):
        return []
    return ["--run-as", _own_user()]


def reachable_by_others(path: Path) -> bool:
    """A user with no rights of its own here (``nobody``) can reach ``path``: every directory above it lets
    others through, and ``path`` lets them read it."""
    path = path.resolve()
    try:
        if not all(above.stat().st_mode & stat.S_IXOTH for above in path.parents):
            return False
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def _own_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def parse_tcp_ext(netstat: str) -> dict[str, int]:
    """The ``TcpExt:`` counters of a ``/proc/net/netstat`` text (a line of names, then one of values)."""
    rows = [line.split() for line in netstat.splitlines() if line.startswith("TcpExt:")]
    if len(rows) < 2:
        return {}
    names, values = rows[0][1:], rows[1][1:]
    return {name: int(value) for name, value in zip(names, values, strict=False) if value.lstrip("-").isdigit()}
