"""grpcio's own proxyless xDS client resolves `xds:///hello` through this server (listener by name,
routes, cluster, endpoints with locality weights) and calls both backends; with per-caller priorities it
calls only the nearest backend, and the next priority's when the nearest is gone."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from meshctl.bootstrap import render_grpc_bootstrap
from meshctl.paths import PathRules
from meshctl.snapshot import MeshConfig
from tests.integration.harness import REPO, free_port
from tests.integration.test_xds_harness import NODE_IPS, make_workload, mesh, wait_until

pytestmark = pytest.mark.integration

SERVICE, METHOD = "edgectl.test.Echo", "Who"

CLIENT = f"""
import json, sys, grpc
channel = grpc.insecure_channel("xds:///hello")
who = channel.unary_unary("/{SERVICE}/{METHOD}")
names = [who(b"", timeout=10).decode() for _ in range(int(sys.argv[1]))]
print(json.dumps(names))
"""


@contextmanager
def echo_servers(port: int, *names_ips: tuple[str, str]) -> Iterator[list[grpc.Server]]:
    """One tiny gRPC server per (name, ip): its one method answers with its name."""
    from concurrent.futures import ThreadPoolExecutor

    servers = []
    for name, ip in names_ips:
        server = grpc.server(ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 0)])
        handler = grpc.unary_unary_rpc_method_handler(lambda _request, _context, name=name: name.encode())
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler})])
        assert server.add_insecure_port(f"{ip}:{port}") == port
        server.start()
        servers.append(server)
    try:
        yield servers
    finally:
        for server in servers:
            server.stop(0)


def call(node_id: str, address: str, calls: int, workdir: Path) -> list[str]:
    """Who answered each of ``calls`` calls of a fresh proxyless client with node id ``node_id``."""
    bootstrap = workdir / f"bootstrap-{node_id}.json"
    bootstrap.write_text(json.dumps(render_grpc_bootstrap(node_id, address)))
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap)}
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(calls)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 0, err.decode()[-2000:]
    names: list[str] = json.loads(out)
    return names


def test_proxyless_grpc_client_resolves_and_calls_through_this_server(tmp_path: Path) -> None:
    port = free_port()
    # One priority for everything (an infinite margin): u1 is nearer to edge-a, and only then do both
    # localities get calls, which they do only if each carries a weight.
    one_priority = MeshConfig(paths=PathRules(margin_us=math.inf))
    with mesh(one_priority) as m, echo_servers(port, ("edge-a", NODE_IPS["n1"]), ("edge-b", NODE_IPS["n2"])):
        m.place(make_workload("hello-1", "hello", "n1", port))
        m.place(make_workload("hello-2", "hello", "n2", port))
        names = call("u1", m.tcp_address, 20, tmp_path)
        assert len(names) == 20 and set(names) == {"edge-a", "edge-b"}  # both localities get calls
        view = m.node_view("u1")
        # The gRPC client asked by name: listener "hello", its routes, cluster and endpoints, all ACKed.
        wait_until(lambda: m.node_view("u1")["types"]["eds"]["acks"] >= 1, 5, "EDS ACK")
        for type_name in ("lds", "rds", "cds", "eds"):
            assert view["types"][type_name]["acks"] >= 1, view["types"][type_name]


def test_proxyless_grpc_client_calls_the_nearest_priority_and_the_next_when_it_is_gone(tmp_path: Path) -> None:
    port = free_port()
    with mesh() as m, echo_servers(port, ("edge-a", NODE_IPS["n1"]), ("cloud", NODE_IPS["n3"])) as [near, _far]:
        m.place(make_workload("hello-1", "hello", "n1", port))  # beside u1: priority 0
        m.place(make_workload("hello-2", "hello", "n3", port))  # 10 ms away: priority 1
        assert call("u1", m.tcp_address, 20, tmp_path) == ["edge-a"] * 20
        near.stop(0)  # gone: its address refuses connections, so gRPC's priority policy fails over
        assert call("u1", m.tcp_address, 10, tmp_path) == ["cloud"] * 10
