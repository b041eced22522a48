"""A real Envoy (a user's sidecar fed by this control plane) in front of two instances of `web` on loopback
addresses, one of which answers 503 to everything (what a sidecar whose app died answers for it): GETs
and the other idempotent methods are retried on the healthy instance and none fails; a POST that met the
failing instance is not retried (it reaches exactly one instance, and the caller gets the 503); the user's
Envoy ejects the failing instance after 3 gateway failures in a row (outlier detection) and sends it
nothing more, and an instance reported unhealthy leaves its endpoints."""

from __future__ import annotations

import contextlib
import http.server
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from netmodel import events as ev
from netmodel.ids import WorkloadId
from tests.integration.test_xds_harness import NODE_IPS, cluster_hosts, make_workload, mesh, port_open, wait_until

pytestmark = pytest.mark.integration


class Instance:
    """An HTTP server on ip:port answering every method with ``status``; counts what reached it."""

    def __init__(self, ip: str, port: int, status: int) -> None:
        self.hits: Counter[str] = Counter()
        instance = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                instance.hits[self.command] += 1
                body = b"" if self.command == "HEAD" else f"{status}".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_HEAD = do_OPTIONS = do_PUT = do_DELETE = do_POST = do_PATCH = _answer

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((ip, port), Handler)
        threading.Thread(target=self.server.serve_forever, name=f"instance-{ip}", daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def instances(port: int) -> Iterator[tuple[Instance, Instance]]:
    failing = Instance(NODE_IPS["n1"], port, 503)
    healthy = Instance(NODE_IPS["n2"], port, 200)
    try:
        yield failing, healthy
    finally:
        failing.stop()
        healthy.stop()


def send(port: int, method: str) -> int:
    data = b"{}" if method in ("POST", "PUT", "PATCH") else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_idempotent_requests_are_retried_elsewhere_posts_are_not_and_the_failing_instance_is_ejected() -> None:
    with mesh() as m, instances(m.web_port) as (failing, healthy):
        m.place(make_workload("web-1", "web", "n1", m.web_port))
        m.place(make_workload("web-2", "web", "n2", m.web_port))
        # Both instances in the cluster's first endpoints: Envoy 1.40 takes an ejected host out of the
        # rotation only then (docs/meshctl.md, "Failures"). No request before the first one counted.
        user = m.envoy("u1", "users")
        both = {f"{NODE_IPS['n1']}:{m.web_port}", f"{NODE_IPS['n2']}:{m.web_port}"}
        wait_until(lambda: cluster_hosts(user, "svc/web") == both, 15, "u1 to know both instances")
        wait_until(lambda: {"cds", "eds", "lds", "rds"} <= m.acked_types("u1"), 15, "u1 to run its config")
        wait_until(lambda: port_open("127.0.0.1", m.web_port), 15, "u1's outbound listener")

        # Round robin sends some requests to the failing instance first. A POST that met it comes back as
        # 503: it reached one instance only.
        failing.hits.clear()
        healthy.hits.clear()
        posts = []
        while 503 not in posts:
            assert len(posts) < 10, posts
            posts.append(send(m.web_port, "POST"))
        assert failing.hits["POST"] == 1 and healthy.hits["POST"] == len(posts) - 1
        # Idempotent methods: every one answered (by the healthy instance, after a retry where it met the
        # failing one), until the user's Envoy ejects the failing instance.
        methods = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")
        sent = 0
        while f"svc/web::{NODE_IPS['n1']}:{m.web_port}::health_flags::/failed_outlier_check" not in user.admin(
            "/clusters"
        ):
            assert sent < 60, (failing.hits, healthy.hits)
            method = methods[sent % len(methods)]
            assert send(m.web_port, method) == 200, method
            sent += 1
        assert sum(failing.hits.values()) == 3 and failing.hits["POST"] == 1  # 3 gateway failures in a row
        assert sum(n for method, n in failing.hits.items() if method != "POST") == 2  # those were retried
        hits = sum(failing.hits.values())
        for _ in range(6):
            assert send(m.web_port, "POST") == 200  # ejected: not even POSTs meet it now
        assert sum(failing.hits.values()) == hits

        # The node reports it: it leaves the endpoints altogether.
        m.bus.publish(ev.WorkloadHealthChanged(WorkloadId("web-1"), healthy=False, reason="app died")).result(5)
        wait_until(lambda: cluster_hosts(user, "svc/web") == {f"{NODE_IPS['n2']}:{m.web_port}"}, 10, "web-1 withdrawn")
