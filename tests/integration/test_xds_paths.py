"""Per-caller priorities with a real Envoy: a user at edge-a calls `web`, which has an instance beside it
(edge-a, priority 0 in the user's endpoints) and one in the cloud (10 ms away, priority 1). Every request
goes to the near one; when it dies, requests go to the cloud one and no GET is lost (the retry of the
connect failure leaves the tried priority), and once outlier detection has ejected the dead instance the
whole of priority 0 is gone, so traffic goes to priority 1 without a retry."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration.test_xds_harness import NODE_IPS, get, make_workload, mesh, port_open, wait_until

pytestmark = pytest.mark.integration

SERVER = """
import http.server, sys
name = sys.argv[3].encode()
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(name)))
        self.end_headers()
        self.wfile.write(name)
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
"""


@contextlib.contextmanager
def instance(name: str, ip: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """An HTTP server in its own process answering GETs with ``name``: killing it closes its connections
    too, as when an instance dies (a server thread stopped in this process would keep them serving)."""
    process = subprocess.Popen([sys.executable, "-c", SERVER, ip, str(port), name])
    try:
        wait_until(lambda: port_open(ip, port), 10, f"instance {name}")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def priorities(admin_clusters: str, cluster: str) -> dict[str, int]:
    """host:port -> priority, from Envoy's /clusters."""
    found = {}
    for line in admin_clusters.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == cluster and parts[2] == "priority":
            found[parts[1]] = int(parts[3])
    return found


def stat(sidecar, name: str) -> int:
    for line in sidecar.admin("/stats").splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


def test_the_nearest_instance_takes_every_request_and_the_next_priority_takes_over_when_it_dies() -> None:
    with (
        mesh() as m,
        instance("near", NODE_IPS["n1"], m.web_port) as near,
        instance("far", NODE_IPS["n3"], m.web_port),
    ):
        m.place(make_workload("web-near", "web", "n1", m.web_port))  # edge-a, beside the user
        m.place(make_workload("web-far", "web", "n3", m.web_port))  # the cloud, 10 ms away
        user = m.envoy("u1", "users")
        near_host, far_host = f"{NODE_IPS['n1']}:{m.web_port}", f"{NODE_IPS['n3']}:{m.web_port}"
        wait_until(
            lambda: priorities(user.admin("/clusters"), "svc/web") == {near_host: 0, far_host: 1},
            15,
            "u1 to run its endpoints by priority",
        )
        wait_until(lambda: {"cds", "eds", "lds", "rds"} <= m.acked_types("u1"), 15, "u1 to run its config")
        wait_until(lambda: port_open("127.0.0.1", m.web_port), 15, "u1's outbound listener")

        answers = [get(m.web_port) for _ in range(30)]
        assert answers == [(200, "near")] * 30  # the far one gets nothing

        near.kill()  # the near instance dies: its connections close, its address refuses new ones
        near.wait()
        answers = [get(m.web_port, timeout=5) for _ in range(30)]
        assert answers == [(200, "far")] * 30  # not one lost: each failed try was retried on priority 1
        flagged = f"svc/web::{near_host}::health_flags::/failed_outlier_check"
        wait_until(lambda: flagged in user.admin("/clusters"), 10, "the dead instance to be ejected")
        # All of priority 0 ejected: requests go to priority 1 first, no retry needed any more.
        retries = stat(user, "cluster.svc/web.upstream_rq_retry")
        assert [get(m.web_port, timeout=5) for _ in range(10)] == [(200, "far")] * 10
        assert stat(user, "cluster.svc/web.upstream_rq_retry") == retries
