"""The node agent against a real `edgectl run --pki-dir`: a join token minted over HTTP, the agent (a real
process) attests with it, and the workloads the controller places on its node get their Envoy sidecars,
which get their config over xDS with mTLS on the node SVID (the controller serves a workload's config
only to a node SVID of the node it is placed on). The fabric is edge-cloud with loopback addresses, so
each inbound listener binds here without Mininet. One controller process, stopped by PID."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from mininet_topos.lab import agent_run_as_args
from mininet_topos.mesh import admin_get
from placement._pb import placement_pb2 as pb
from placement._pb import placement_pb2_grpc as pb_grpc
from tests.integration.harness import REPO, edgectl_run, free_port, wait_until
from tests.integration.test_trust_domain import edgectl, operator_channel

pytestmark = pytest.mark.integration

TD = "agent.test"


def loopback_fabric(directory: Path) -> Path:
    """examples/edge-cloud.yaml with 127.0.x.y addresses: the nodes' inbound listeners bind on this host."""
    text = (REPO / "examples" / "edge-cloud.yaml").read_text()
    text = text.replace("subnet: 10.0.0.0/16", "subnet: 127.0.0.0/16").replace("ip: 10.0.", "ip: 127.0.")
    path = directory / "fabric.yaml"
    path.write_text(text)
    return path


def mint(http: str, node: str) -> str:
    body = json.dumps({"node": node, "ttl_s": 600}).encode()
    request = urllib.request.Request(
        f"{http}/api/v1/pki/join-tokens", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
        return str(json.load(response)["token"])


class _UnixHttp(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=5)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def config_dump(admin_socket: Path) -> dict[str, Any]:
    connection = _UnixHttp(str(admin_socket))
    try:
        connection.request("GET", "/config_dump")
        return dict(json.loads(connection.getresponse().read()))
    finally:
        connection.close()


def active_listeners(admin_socket: Path) -> list[str]:
    dump = config_dump(admin_socket)
    listeners = next(c for c in dump["configs"] if c["@type"].endswith("ListenersConfigDump"))
    return [item["name"] for item in listeners.get("dynamic_listeners", []) if "active_state" in item]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ea-"))  # admin.sock paths stay under 107 bytes
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_an_attested_agent_runs_its_nodes_sidecars_with_config_over_node_svid_mtls(
    tmp_path: Path, short_dir: Path, transport: str
) -> None:
    """``unix``: the agent API and xDS on Unix sockets, as in a Mininet node's network namespace."""
    ca_dir, operator = tmp_path / "ca", tmp_path / "alice"
    edgectl("pki", "init", "--trust-domain", TD, "--dir", str(ca_dir))
    edgectl(
        "pki", "issue", "--dir", str(ca_dir), "--spiffe-id", f"spiffe://{TD}/operator/alice", "--out", str(operator)
    )
    api, agent_port, xds = free_port(), free_port(), free_port()
    extra = ["--pki-dir", str(ca_dir), "--api-port", str(api), "--agent-port", str(agent_port)]
    extra += ["--xds-port", str(xds)]
    controller_address, xds_address = f"127.0.0.1:{agent_port}", f"127.0.0.1:{xds}"
    app_host = "127.0.0.2"  # edgectl run's default
    if transport == "unix":
        extra += ["--agent-unix", str(short_dir / "agent.sock"), "--xds-unix", str(short_dir / "xds.sock")]
        controller_address, xds_address = f"unix:{short_dir}/agent.sock", f"unix:{short_dir}/xds.sock"
        app_host = "127.0.0.3"  # and once another: the agent starts apps where the controller says
        extra += ["--mesh-app-host", app_host]
    work_dir = short_dir / "agent"
    agent: subprocess.Popen[bytes] | None = None
    agent_log = short_dir / "agent.log"
    with edgectl_run(loopback_fabric(tmp_path), *extra) as controller, operator_channel(operator, api) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=30)
            placement = pb_grpc.PlacementStub(channel)
            db = wait_until(
                lambda: next(iter(placement.List(pb.ListRequest(service="db"), timeout=10).workloads), None),
                30,
                what="the declared db instance",
            )
            node = db.node
            token_file = short_dir / "token"
            token_file.write_text(mint(controller.http, node) + "\n")
            command = [
                sys.executable,
                "-m",
                "edgectl.cli",
                "agent",
                "--node",
                node,
                "--controller",
                controller_address,
                "--join-token-file",
                str(token_file),
                "--trust-bundle",
                str(ca_dir / "bundle.pem"),
                "--xds",
                xds_address,
                "--xds-server-id",
                f"spiffe://{TD}/controller/edgectl",
                "--work-dir",
                str(work_dir),
                *agent_run_as_args(),
            ]
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
            with open(agent_log, "wb") as log:
                agent = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)

            def status() -> dict[str, Any]:
                try:
                    return dict(json.loads((work_dir / "status.json").read_text()))
                except (OSError, ValueError):
                    return {}

            def state_of(workload_id: str) -> str:
                return str(status().get("workloads", {}).get(workload_id, {}).get("state", ""))

            def explain() -> str:
                agent_text = agent_log.read_text()[-3000:]
                return f"status {status()}\nagent:\n{agent_text}\ncontroller:\n{controller.log()[-3000:]}"

            try:
                wait_until(lambda: state_of(db.id) == "running", 60, what=f"{db.id} running")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{explain()}") from None
            assert status()["spiffe_id"] == f"spiffe://{TD}/node/{node}"
            # Its sidecar got its inbound listener from the controller, over mTLS with the node SVID.
            admin = work_dir / "w" / db.id / "admin.sock"
            try:
                wait_until(lambda: f"in/{db.id}" in active_listeners(admin), 60, what="the inbound listener")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{explain()}") from None
            assert db.id in controller.get_json("/api/v1/xds/clients")["nodes"]
            # Only its own node's workloads run here.
            on_node = {w.id for w in placement.List(pb.ListRequest(), timeout=10).workloads if w.node == node}
            assert set(status()["workloads"]) == on_node
            # Each runs without a restart, a caller beside its callee too (api calls db; the declared
            # replicas put one beside db here): the caller's sidecar takes <its own outbound address>:<db
            # port> for its outbound listener, db's app listens on the controller's --mesh-app-host.
            try:
                wait_until(lambda: all(state_of(w) == "running" for w in on_node), 60, what="the node's apps running")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{explain()}") from None
            assert all(row["restarts"] == 0 for row in status()["workloads"].values()), explain()
            with socket.create_connection((app_host, db.port), timeout=5):
                pass  # db's app itself, on the address the controller gave

            # A new instance on the node is started; evicted, it drains and stops.
            request = pb.PlaceRequest(
                service="api", constraints=pb.Constraints(affinity=[pb.AffinityTerm(service="db")])
            )
            (api_instance,) = placement.Place(request, timeout=30).workloads
            assert api_instance.node == node
            wait_until(lambda: state_of(api_instance.id) == "running", 60, what=f"{api_instance.id} running")
            api_admin = work_dir / "w" / api_instance.id / "admin.sock"
            wait_until(lambda: f"in/{api_instance.id}" in active_listeners(api_admin), 60, what="its listener")
            # The agent opened its sidecar's connection to db before its app asked: one warm-up request
            # over mTLS, answered 204 by db's sidecar itself (db's app never sees it).
            warmed = f"{api_instance.id}: connection to db warm"
            wait_until(lambda: warmed in agent_log.read_text(), 30, what="the warm-up of api's connection to db")
            stats = admin_get(api_admin, "/stats?filter=^cluster[.]svc/db[.]upstream_(rq_204|cx_total)$") or ""
            counters = {k: int(v) for k, _, v in (line.partition(": ") for line in stats.splitlines()) if v.isdigit()}
            assert counters.get("cluster.svc/db.upstream_rq_204") == 1, f"{stats}\n{explain()}"
            assert counters.get("cluster.svc/db.upstream_cx_total", 0) >= 1, f"{stats}\n{explain()}"
            sidecar_pid = status()["workloads"][api_instance.id]["sidecar_pid"]
            placement.Evict(pb.EvictRequest(workload_id=api_instance.id), timeout=30)
            wait_until(lambda: state_of(api_instance.id) == "stopped", 60, what=f"{api_instance.id} stopped")
            assert not Path(f"/proc/{sidecar_pid}").exists() or "Z" in Path(f"/proc/{sidecar_pid}/stat").read_text()

            # Its sidecar dies: the agent's ReportHealth (mTLS, node SVID) reaches the controller, which
            # marks it unhealthy or has already re-placed it.
            db_sidecar = status()["workloads"][db.id]["sidecar_pid"]
            assert db_sidecar is not None, explain()
            os.kill(db_sidecar, signal.SIGKILL)

            def reported() -> bool:
                unhealthy = controller.get_json("/api/v1/workloads/health")["unhealthy"]
                placed = {w.id for w in placement.List(pb.ListRequest(), timeout=10).workloads}
                return any(u["workload"] == db.id for u in unhealthy) or db.id not in placed

            wait_until(reported, 30, what=f"the controller hears that {db.id}'s sidecar died")
            assert "db-1: sidecar exited (-9); reporting it unhealthy" in agent_log.read_text()
            assert "cannot report" not in agent_log.read_text(), explain()

            agent.send_signal(signal.SIGTERM)
            assert agent.wait(30) == 0, explain()
            assert {e["state"] for e in status()["workloads"].values()} == {"stopped"}
        finally:
            if agent is not None and agent.poll() is None:
                agent.send_signal(signal.SIGTERM)
                try:
                    agent.wait(30)
                except subprocess.TimeoutExpired:
                    agent.kill()
                    agent.wait(10)
            with contextlib.suppress(OSError, ValueError):
                for entry in json.loads((work_dir / "status.json").read_text())["workloads"].values():
                    for pid in (entry.get("app_pid"), entry.get("sidecar_pid")):
                        if pid and Path(f"/proc/{pid}").exists():
                            with contextlib.suppress(OSError):
                                os.kill(pid, signal.SIGKILL)
