"""The node agent as a real process (`python -m edgectl.cli agent`) against a fake controller: a real gRPC
server implementing NodeAgent with TLS from a throwaway CA, serving the events the test drives. The agent
starts real apps (`python -m http.server`) and real Envoys (their xDS address is a Unix socket nobody
serves: these tests are about the processes, not the config; tests/integration/test_nodeagent_controller.py
runs it against `edgectl run`)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from mininet_topos.controller_process import free_port, wait_until
from mininet_topos.lab import agent_run_as_args
from nodeagent._pb import agent_pb2 as pb
from nodeagent._pb import agent_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TD = "example.org"
NODE = "n1"
TOKEN = "join-token-for-n1"


@dataclass
class FakeController(pb_grpc.NodeAgentServicer):  # type: ignore[misc]
    """NodeAgent as the contract says, with the test in charge of the placements."""

    ca: Any
    ttl_s: int = 3600
    workloads: dict[str, Any] = field(default_factory=dict)
    streams: list[queue.Queue[Any]] = field(default_factory=list)
    reports: list[tuple[str, bool, str]] = field(default_factory=list)
    starts: list[str] = field(default_factory=list)
    """Workloads the agent said it starts beside their sidecar (ReportHealth with starting)."""
    starts_beside: list[bool] = field(default_factory=list)
    """Each WatchNode's word: the agent starts sidecars beside their apps."""
    attests: int = 0
    renewals: int = 0
    watches: int = 0
    used_tokens: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _node_svid(self, csr_pem: str) -> pb.NodeSvid:
        svid = self.ca.issue_from_csr(csr_pem, f"spiffe://{TD}/node/{NODE}", time.time(), ttl_s=self.ttl_s)
        return pb.NodeSvid(
            spiffe_id=str(svid.spiffe_id),
            cert_chain_pem=svid.cert_chain_pem,
            trust_bundle_pem=self.ca.bundle_pem,
            expires_at=float(svid.info.not_after),
        )

    def _caller(self, context: grpc.ServicerContext) -> None:
        """grpcio's server either requires a client certificate or never asks for one, and Attest comes
        without: this fake asks for none (the real controller's optional-certificate listener, and the
        agent presenting its node SVID, are tested against `edgectl run`)."""
        del context

    def Attest(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.lock:
            if request.join_token != TOKEN or request.node != NODE:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "unknown join token")
            if request.join_token in self.used_tokens:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "join token already used")
            self.used_tokens.add(request.join_token)
            self.attests += 1
        return self._node_svid(request.csr_pem)

    def RenewNodeSvid(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._caller(context)
        with self.lock:
            self.renewals += 1
        return self._node_svid(request.csr_pem)

    def WatchNode(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self._caller(context)
        events: queue.Queue[Any] = queue.Queue()
        with self.lock:
            self.watches += 1
            self.starts_beside.append(request.starts_beside)
            self.streams.append(events)
            snapshot = pb.NodeEvent(kind=pb.NodeEvent.SNAPSHOT, workloads=list(self.workloads.values()))
        context.add_callback(lambda: events.put(None))
        yield snapshot
        while context.is_active():
            event = events.get()
            if event is None:
                return
            yield event

    def ReportHealth(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._caller(context)
        with self.lock:
            if request.starting:
                self.starts.append(request.workload_id)
            else:
                self.reports.append((request.workload_id, request.healthy, request.reason))
        return pb.HealthReply()

    # -- driven by the test ------------------------------------------------------------------------

    def _send(self, event: Any) -> None:
        with self.lock:
            for stream in self.streams:
                stream.put(event)

    def place(self, workload: Any, held: bool = False) -> None:
        """``held``: as the controller does for an agent that starts sidecars beside their apps, the new
        workload is said to be held as starting already."""
        with self.lock:
            self.workloads[workload.id] = workload
        self._send(pb.NodeEvent(kind=pb.NodeEvent.PLACED, workloads=[workload], starting=[workload.id] * held))

    def remove(self, workload_id: str) -> None:
        with self.lock:
            workload = self.workloads.pop(workload_id)
        self._send(pb.NodeEvent(kind=pb.NodeEvent.REMOVED, workloads=[workload]))

    def cut_streams(self) -> None:
        """End every WatchNode stream (a controller restart, a network cut)."""
        with self.lock:
            streams, self.streams = self.streams, []
        for stream in streams:
            stream.put(None)


def http_server(workload_id: str, port: int, run: tuple[str, ...] = ()) -> Any:
    return pb.NodeWorkload(
        id=workload_id,
        service="web",
        port=port,
        address="127.0.0.1",
        app_host="127.0.0.1",
        run=list(run or ("{python}", "-m", "http.server", "--bind", "{host}", "{port}")),
        env={"WHERE": "{work_dir}"},
        spiffe_id=f"spiffe://{TD}/svc/web/w/{workload_id}",
        protocol="http",
    )


@dataclass
class Setup:
    controller: FakeController
    address: str
    bundle: Path
    work_dir: Path
    agents: list[subprocess.Popen[bytes]] = field(default_factory=list)
    seen_pids: set[int] = field(default_factory=set)

    def start_agent(
        self, *extra: str, token: str | None = TOKEN, apps_as_default_user: bool = False
    ) -> subprocess.Popen[bytes]:
        """The agent as a process; its apps run as the user this checkout allows (``agent_run_as_args``),
        or, with ``apps_as_default_user``, as the agent's default (``nobody`` under root)."""
        command = [
            sys.executable,
            "-m",
            "edgectl.cli",
            "agent",
            "--node",
            NODE,
            "--controller",
            self.address,
            "--trust-bundle",
            str(self.bundle),
            "--xds",
            f"unix:{self.work_dir}/nobody-serves-xds.sock",
            "--work-dir",
            str(self.work_dir),
            "--drain-s",
            "1.0",
            *(["--join-token", token] if token else []),
            *([] if apps_as_default_user else agent_run_as_args()),
            *extra,
        ]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        log = open(self.work_dir / f"agent-{len(self.agents)}.log", "wb")  # noqa: SIM115 (kept for the process)
        agent = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        log.close()
        self.agents.append(agent)
        return agent

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.work_dir.glob("agent-*.log")))

    def status(self) -> dict[str, Any]:
        try:
            status = dict(json.loads((self.work_dir / "status.json").read_text()))
        except (OSError, ValueError):
            return {}
        for entry in status.get("workloads", {}).values():  # to stop them should the agent not
            self.seen_pids.update(pid for pid in (entry.get("app_pid"), entry.get("sidecar_pid")) if pid)
        return status

    def workload(self, workload_id: str) -> dict[str, Any]:
        return dict(self.status().get("workloads", {}).get(workload_id, {}))

    def wait_state(self, workload_id: str, state: str, timeout: float = 30) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            entry = self.workload(workload_id)
            return entry if entry.get("state") == state else None

        try:
            return dict(wait_until(reached, timeout, what=f"{workload_id} {state}"))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; status {self.status()}\n{self.log()[-3000:]}") from None


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def answers(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def setup() -> Iterator[Setup]:
    from pki.ca import CertificateAuthority

    ca, _ = CertificateAuthority.create(TD)
    server_svid = ca.issue_with_new_key(
        f"spiffe://{TD}/controller/edgectl", time.time(), ip_addresses=["127.0.0.1"], dns_names=["localhost"]
    )
    controller = FakeController(ca)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_NodeAgentServicer_to_server(controller, server)
    credentials = grpc.ssl_server_credentials(
        [(server_svid.private_key_pem.encode(), server_svid.cert_chain_pem.encode())],
        root_certificates=ca.bundle_pem.encode(),
        require_client_auth=False,  # Attest comes without a client certificate
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    work_dir = Path(tempfile.mkdtemp(prefix="ea-"))  # short: admin.sock paths stay under 107 bytes
    # As under /var/lib: the directory holding the agent's work dir lets the apps' user (nobody, when
    # the tests run as root) through to their own directories beside it; mkdtemp's does not.
    work_dir.chmod(0o755)
    bundle = work_dir / "ca-bundle.pem"
    bundle.write_text(ca.bundle_pem)
    state = Setup(controller, f"127.0.0.1:{port}", bundle, work_dir / "agent")
    state.work_dir.mkdir()
    try:
        yield state
    finally:
        state.status()
        pids = sorted(state.seen_pids)
        for agent in state.agents:
            if agent.poll() is None:
                agent.send_signal(signal.SIGTERM)
                try:
                    agent.wait(30)
                except subprocess.TimeoutExpired:
                    agent.kill()
                    agent.wait(10)
        for pid in pids:  # the agent failed to stop them: do not leave them behind
            if alive(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        server.stop(0)
        shutil.rmtree(work_dir, ignore_errors=True)


def test_the_agent_runs_restarts_drains_and_stops_its_workloads(setup: Setup) -> None:
    port = free_port()
    setup.controller.place(http_server("web-1", port))
    agent = setup.start_agent()
    first = setup.wait_state("web-1", "running")
    assert alive(first["app_pid"]) and alive(first["sidecar_pid"]), setup.log()
    assert os.getpgid(first["app_pid"]) == first["app_pid"]  # its own process group
    assert answers(port)
    status = setup.status()
    assert status["node"] == NODE and status["spiffe_id"] == f"spiffe://{TD}/node/{NODE}"
    assert status["expires_at"] > time.time()
    assert abs(first["started_at"] - time.time()) < 120  # wall clock
    assert (setup.work_dir / "w" / "web-1" / "app.log").exists()
    assert (setup.work_dir / "w" / "web-1" / "envoy.log").exists()
    assert oct((setup.work_dir / "node.key").stat().st_mode & 0o777) == "0o600"
    # Started beside its sidecar: said so first, then that the app listens.
    assert setup.controller.starts == ["web-1"]
    assert setup.controller.reports == [("web-1", True, "app listening")]
    assert oct((setup.work_dir / "node.sds.json").stat().st_mode & 0o777) == "0o600"
    sds = json.loads((setup.work_dir / "node.sds.json").read_text())
    assert sds["resources"][0]["name"] == "edgectl-xds-client"
    bootstrap = json.loads((setup.work_dir / "w" / "web-1" / "bootstrap.json").read_text())
    assert bootstrap["node"] == {"id": "web-1", "cluster": "web"}
    tls = bootstrap["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    sds_path = tls["tls_certificate_sds_secret_configs"][0]["sds_config"]["path_config_source"]["path"]
    assert sds_path == str(setup.work_dir / "node.sds.json")

    # The app dies: reported unhealthy once, restarted (beside its sidecar again), reported healthy again.
    os.kill(first["app_pid"], signal.SIGKILL)
    wait_until(lambda: ("web-1", False, "app exited (-9)") in setup.controller.reports, 30, what="unhealthy report")
    second = wait_until(
        lambda: (e := setup.workload("web-1")).get("state") == "running" and e.get("restarts") == 1 and e,
        30,
        what="web-1 restarted",
    )
    assert second["app_pid"] != first["app_pid"] and alive(second["app_pid"])
    assert not alive(first["sidecar_pid"]) and alive(second["sidecar_pid"])
    wait_until(lambda: len(setup.controller.reports) == 3, 30, what="healthy report")
    assert setup.controller.reports[1:] == [("web-1", False, "app exited (-9)"), ("web-1", True, "app listening")]
    assert setup.controller.starts == ["web-1", "web-1"]
    assert answers(port)

    # Removed: drains (still serving for --drain-s), then both are stopped.
    setup.controller.remove("web-1")
    setup.wait_state("web-1", "draining")
    setup.wait_state("web-1", "stopped")
    wait_until(lambda: not alive(second["app_pid"]) and not alive(second["sidecar_pid"]), 15, what="stopped")
    assert "draining web-1 for 1.0 s" in setup.log()

    agent.send_signal(signal.SIGTERM)
    assert agent.wait(30) == 0


def test_a_placement_the_controller_holds_as_starting_is_started_without_a_report_of_its_start(
    setup: Setup,
) -> None:
    setup.start_agent()
    wait_until(lambda: setup.controller.starts_beside, 30, what="the agent's watch")
    assert setup.controller.starts_beside == [True]  # it starts sidecars beside their apps
    port = free_port()
    setup.controller.place(http_server("web-2", port), held=True)
    entry = setup.wait_state("web-2", "running")
    assert alive(entry["sidecar_pid"]) and answers(port)
    assert setup.controller.starts == []  # held already: not said again
    assert setup.controller.reports == [("web-2", True, "app listening")]


def test_with_sidecar_after_app_the_sidecar_starts_once_the_app_listens_and_nothing_is_reported(
    setup: Setup,
) -> None:
    setup.start_agent("--sidecar-after-app")
    wait_until(lambda: setup.controller.starts_beside, 30, what="the agent's watch")
    assert setup.controller.starts_beside == [False]
    port = free_port()
    setup.controller.place(http_server("web-3", port))
    entry = setup.wait_state("web-3", "running")
    assert entry["app_listening_at"] <= entry["sidecar_started_at"]
    assert answers(port)
    assert setup.controller.starts == [] and setup.controller.reports == []


def test_sigterm_stops_every_process_the_agent_started(setup: Setup) -> None:
    ports = [free_port(), free_port()]
    for i, port in enumerate(ports):
        setup.controller.place(http_server(f"web-{i}", port))
    agent = setup.start_agent()
    entries = [setup.wait_state(f"web-{i}", "running") for i in range(2)]
    pids = [pid for entry in entries for pid in (entry["app_pid"], entry["sidecar_pid"])]
    assert all(alive(pid) for pid in pids)
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(30) == 0, setup.log()
    assert [pid for pid in pids if alive(pid)] == []
    assert {e["state"] for e in setup.status()["workloads"].values()} == {"stopped"}


def test_a_refused_join_token_exits_2_with_the_controllers_reason(setup: Setup) -> None:
    agent = setup.start_agent(token="not-the-token")
    assert agent.wait(30) == 2
    assert "the controller refused the join token: unknown join token" in setup.log()
    assert not (setup.work_dir / "node.sds.json").exists()


def test_no_token_and_no_kept_identity_exits_2(setup: Setup) -> None:
    agent = setup.start_agent(token=None)
    assert agent.wait(30) == 2
    assert "no valid node SVID in the work directory and no --join-token" in setup.log()


def test_a_restarted_agent_keeps_its_node_svid_and_needs_no_new_token(setup: Setup) -> None:
    agent = setup.start_agent()
    wait_until(lambda: setup.controller.watches == 1, 30, what="the first WatchNode")
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(30) == 0
    port = free_port()
    setup.controller.place(http_server("web-1", port))
    again = setup.start_agent(token=None)  # the token is used up: the kept SVID must do
    setup.wait_state("web-1", "running")
    assert setup.controller.attests == 1 and setup.controller.watches == 2
    assert "using the node SVID" in setup.log()
    again.send_signal(signal.SIGTERM)
    assert again.wait(30) == 0


def test_a_bad_placeholder_is_reported_and_the_agent_keeps_going(setup: Setup) -> None:
    setup.start_agent()
    wait_until(lambda: setup.controller.watches == 1, 30, what="WatchNode")
    setup.controller.place(http_server("bad-1", free_port(), run=("{python}", "{secret}")))
    good = free_port()
    setup.controller.place(http_server("web-1", good))
    setup.wait_state("web-1", "running")
    wait_until(lambda: any(r[0] == "bad-1" and not r[1] for r in setup.controller.reports), 30, what="report")
    (report,) = [r for r in setup.controller.reports if r[0] == "bad-1"]
    assert "unknown placeholder {secret}" in report[2]
    assert setup.workload("bad-1")["state"] == "crashed"


def test_after_a_reconnect_the_snapshot_is_the_truth(setup: Setup) -> None:
    ports = [free_port(), free_port()]
    setup.controller.place(http_server("web-1", ports[0]))
    setup.start_agent()
    kept = setup.wait_state("web-1", "running")
    with setup.controller.lock:  # changes while the stream is down: the agent hears no event of them
        setup.controller.workloads.pop("web-1")
        setup.controller.workloads["web-2"] = http_server("web-2", ports[1])
    setup.controller.cut_streams()
    setup.wait_state("web-2", "running")
    setup.wait_state("web-1", "stopped")
    assert not alive(kept["app_pid"])
    assert setup.controller.watches >= 2


def test_the_node_svid_is_renewed_at_half_life_and_the_sds_file_rewritten(setup: Setup) -> None:
    setup.controller.ttl_s = 12
    setup.start_agent()
    wait_until(lambda: setup.controller.watches == 1, 30, what="WatchNode")
    sds = setup.work_dir / "node.sds.json"
    before = sds.read_text()
    expires = setup.status()["expires_at"]
    wait_until(lambda: setup.controller.renewals >= 1, 30, what="a renewal")
    wait_until(lambda: sds.read_text() != before, 10, what="a new SDS file")
    wait_until(lambda: setup.status()["expires_at"] > expires, 10, what="status.json's new expiry")
    assert oct(sds.stat().st_mode & 0o777) == "0o600"
    # The agent carries on with the new identity.
    port = free_port()
    setup.controller.place(http_server("web-1", port))
    setup.wait_state("web-1", "running")


def test_after_a_renewal_watchnode_moves_to_the_new_channel_without_a_gap(setup: Setup) -> None:
    setup.controller.ttl_s = 12
    setup.start_agent()
    wait_until(lambda: setup.controller.watches == 1, 30, what="WatchNode")
    wait_until(lambda: setup.controller.renewals >= 1, 30, what="a renewal")
    # Right after the renewal, not when the old certificate expires and the old stream fails.
    wait_until(lambda: setup.controller.watches == 2, 5, what="WatchNode on the renewed channel")
    assert "reconnecting in" not in setup.log()
    assert "following on the channel of the renewed node SVID" in setup.log()
    port = free_port()
    setup.controller.place(http_server("web-1", port))  # followed on the new stream
    setup.wait_state("web-1", "running")


def test_a_dead_sidecar_is_reported_and_the_workload_restarted(setup: Setup) -> None:
    port = free_port()
    setup.controller.place(http_server("web-1", port))
    setup.start_agent()
    first = setup.wait_state("web-1", "running")
    os.kill(first["sidecar_pid"], signal.SIGKILL)
    wait_until(lambda: ("web-1", False, "sidecar exited (-9)") in setup.controller.reports, 30, what="report")
    second = wait_until(
        lambda: (e := setup.workload("web-1")).get("state") == "running" and e.get("restarts") == 1 and e,
        30,
        what="web-1 restarted",
    )
    assert alive(second["app_pid"]) and alive(second["sidecar_pid"])
    assert not alive(first["app_pid"])  # restarted as a whole: app first, then its sidecar


def test_a_placement_on_a_draining_instances_port_stops_that_one_first(setup: Setup) -> None:
    port = free_port()
    setup.controller.place(http_server("web-1", port))
    setup.start_agent("--drain-s", "60")
    old = setup.wait_state("web-1", "running")
    setup.controller.remove("web-1")
    setup.wait_state("web-1", "draining")
    assert alive(old["app_pid"]) and answers(port)  # still serving requests in flight
    setup.controller.place(http_server("web-2", port))  # moved back to this node: same port
    new = setup.wait_state("web-2", "running")
    stopped = setup.workload("web-1")
    assert stopped["state"] == "stopped" and stopped["reason"] == f"its port {port} is needed by web-2"
    assert not alive(old["app_pid"]) and alive(new["app_pid"])


def test_an_agent_killed_without_cleanup_takes_its_processes_along_and_the_next_starts_afresh(
    setup: Setup,
) -> None:
    port = free_port()
    setup.controller.place(http_server("web-1", port))
    agent = setup.start_agent()
    old = setup.wait_state("web-1", "running")
    agent.kill()  # no SIGTERM cleanup: its app and sidecar die with it (their parent-death signal)
    agent.wait(10)
    wait_until(lambda: not alive(old["app_pid"]) and not alive(old["sidecar_pid"]), 15, what="died with the agent")
    setup.start_agent(token=None)
    new = wait_until(
        lambda: (e := setup.workload("web-1")).get("state") == "running" and e["app_pid"] != old["app_pid"] and e,
        30,
        what="web-1 running again",
    )
    assert alive(new["app_pid"]) and answers(port)


SLOW_APP = """
import os, sys, time
open("pids", "a").write(str(os.getpid()) + "\\n")
time.sleep(2)  # starting: not listening yet
os.execv(sys.executable, [sys.executable, "-m", "http.server", "--bind", sys.argv[1], sys.argv[2]])
"""


def test_an_agent_killed_while_an_app_starts_leaves_no_orphan_and_the_workload_runs_once(setup: Setup) -> None:
    port = free_port()
    setup.controller.place(http_server("web-1", port, run=("{python}", "-c", SLOW_APP, "{host}", "{port}")))
    pids_file = setup.work_dir.parent / "agent-apps" / "web-1" / "pids"

    def app_pids() -> list[int]:
        try:
            return [int(line) for line in pids_file.read_text().split()]
        except OSError:
            return []

    try:
        agent = setup.start_agent()
        (first,) = wait_until(app_pids, 30, what="the app started")
        # Its PID is in status.json while it starts: the next agent can find it, whatever happens.
        wait_until(lambda: setup.workload("web-1").get("app_pid") == first, 10, what="its PID in status.json")
        assert setup.workload("web-1")["state"] == "starting"
        agent.kill()  # while its app sleeps before listening
        agent.wait(10)
        setup.start_agent(token=None)
        running = wait_until(
            lambda: (e := setup.workload("web-1")).get("state") == "running" and e.get("app_pid") != first and e,
            60,
            what="web-1 running under the new agent",
        )
        wait_until(lambda: not alive(first), 15, what="the first app gone")
        time.sleep(3)  # had the first app survived, it would listen now and the second would die
        assert [pid for pid in app_pids() if alive(pid)] == [running["app_pid"]], setup.log()[-3000:]
        assert setup.workload("web-1")["app_pid"] == running["app_pid"]
        assert setup.workload("web-1")["restarts"] == 0 and answers(port)
    finally:
        for pid in app_pids():  # an orphan is in no status.json: the fixture would not find it
            if alive(pid):
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)


def test_the_testbed_app_runs_from_a_run_line_with_every_placeholder(setup: Setup) -> None:
    import urllib.error
    import urllib.request

    port, api_port = free_port(), free_port()
    workload = http_server(
        "web-1",
        port,
        run=(
            "{python}",
            "-m",
            "mininet_topos.app",
            "--workload",
            "{workload}",
            "--service",
            "{service}",
            "--listen",
            "{listen}",
            "--calls",
            "{calls}",
        ),
    )
    workload.calls.append(pb.Call(service="api", port=api_port, per_request=1.0, bytes_per_call=0))
    workload.outbound_host = "127.1.9.9"  # the workload's own outbound address: {calls} points there
    setup.controller.place(workload)
    setup.start_agent()
    setup.wait_state("web-1", "running")
    with pytest.raises(urllib.error.HTTPError) as failed:  # nothing serves api: the app says so
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
    body = json.loads(failed.value.read())
    assert failed.value.code == 502 and body["workload"] == "web-1" and "api" in body["error"]
    # Where its sidecar's outbound listener would be (the fake controller serves the sidecar nothing),
    # an api answers: the app calls it there.
    api_argv = ["--workload", "api-1", "--service", "api", "--listen", f"127.1.9.9:{api_port}"]
    api = subprocess.Popen([sys.executable, "-m", "mininet_topos.app", *api_argv], stdout=subprocess.PIPE, cwd=REPO)
    try:
        assert api.stdout is not None and api.stdout.readline().startswith(b"listening")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            body = json.loads(response.read())
        assert [call["workload"] for call in body["calls"]] == ["api-1"]
    finally:
        api.terminate()
        api.wait(timeout=10)


def test_an_app_that_never_listens_is_retried_with_backoff_and_sigterm_marks_it_stopped(setup: Setup) -> None:
    setup.controller.place(http_server("web-1", free_port(), run=("{python}", "-c", "raise SystemExit(3)")))
    agent = setup.start_agent()
    wait_until(lambda: len([r for r in setup.controller.reports if r[0] == "web-1"]) >= 2, 30, what="two tries")
    reports = [r for r in setup.controller.reports if r[0] == "web-1"]
    assert all(not healthy and "app exited (3) before it listened" in why for _, healthy, why in reports)
    assert setup.workload("web-1")["state"] in ("crashed", "starting")
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(30) == 0
    assert setup.workload("web-1")["state"] == "stopped"  # not left saying crashed (or starting)


PROBE = """
import errno, json, os, socket, sys
found = dict(uid=os.getuid(), env=sorted(os.environ), home=os.environ.get("HOME"), cwd=os.getcwd())
for path in sys.argv[1:4]:
    try:
        open(path, "rb").read(1)
        found[path] = "read"
    except OSError as exc:
        found[path] = errno.errorcode.get(exc.errno, str(exc.errno))
admin = socket.socket(socket.AF_UNIX)
try:
    admin.connect(sys.argv[4])
    found["admin"] = "connected"
except OSError as exc:
    found["admin"] = errno.errorcode.get(exc.errno, str(exc.errno))
open("mine.txt", "w").write("ok")
print("PROBE " + json.dumps(found), flush=True)
os.execv(sys.executable, [sys.executable, "-m", "http.server", "--bind", sys.argv[5], sys.argv[6]])
"""


def test_an_app_runs_as_another_user_and_reaches_neither_the_node_key_nor_the_agents_environment(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pwd

    if os.geteuid() != 0:
        pytest.skip("the agent separates the apps' user only when it runs as root")
    nobody = pwd.getpwnam("nobody")
    monkeypatch.setenv("AGENT_ONLY_SECRET", "not for apps")
    port, other_port = free_port(), free_port()
    # The system's interpreter, not this checkout's venv: another user can run it wherever the checkout is.
    python = os.path.realpath(sys.executable)
    web_0 = (python, "-m", "http.server", "--bind", "{host}", "{port}")
    setup.controller.place(http_server("web-0", other_port, run=web_0))  # another sidecar: its admin socket
    keys = [str(setup.work_dir / name) for name in ("node.key", "node.sds.json", "status.json")]
    admin = str(setup.work_dir / "w" / "web-0" / "admin.sock")
    run = (python, "-c", PROBE, *keys, admin, "{host}", "{port}")
    setup.controller.place(http_server("web-1", port, run=run))
    setup.start_agent(apps_as_default_user=True)  # as root, no --run-as: the apps run as nobody
    setup.wait_state("web-0", "running")
    entry = setup.wait_state("web-1", "running")
    log = (setup.work_dir / "w" / "web-1" / "app.log").read_text()
    assert wait_until(lambda: answers(port), 15, what="the app answers"), log
    found = json.loads(log.split("PROBE ", 1)[1].splitlines()[0])
    assert found["uid"] == nobody.pw_uid
    assert {found[k] for k in keys} == {"EACCES"}, found  # the work dir is root's, 0700
    assert found["admin"] == "EACCES", found
    assert "AGENT_ONLY_SECRET" not in found["env"] and "EDGECTL_WORKLOAD" in found["env"]
    assert set(found["env"]) <= {"PATH", "LANG", "PYTHONPATH", "HOME", "WHERE", "LC_CTYPE"} | {
        name for name in found["env"] if name.startswith("EDGECTL_")
    }
    app_dir = setup.work_dir.parent / "agent-apps" / "web-1"
    assert found["home"] == found["cwd"] == str(app_dir)
    assert app_dir.stat().st_uid == nobody.pw_uid and app_dir.stat().st_mode & 0o777 == 0o700
    assert (app_dir / "mine.txt").read_text() == "ok"  # its own directory is writable
    assert Path(f"/proc/{entry['app_pid']}/status").read_text().count(f"\t{nobody.pw_uid}\t") >= 1
