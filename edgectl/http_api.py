"""The HTTP endpoint: /healthz, /metrics and the JSON API. Reads only the latest immutable state."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgectl.metrics import ControllerMetrics
from netmodel.state import FabricState

LOG = logging.getLogger("edgectl.http")

JsonRoute = Callable[[FabricState], Any]
PostRoute = Callable[[FabricState, Any], tuple[int, Any]]
"""``(state, JSON body) -> (status, JSON reply)``: a command (e.g. ``POST /api/v1/pki/rotate``)."""
MAX_BODY = 64 * 1024


class HttpApi:
    """Serves GET routes (``routes``: a path -> a function of the state) and a few POST commands on a
    daemon thread. Bind it to loopback: the API has no authentication of its own."""

    def __init__(
        self,
        host: str,
        port: int,
        state: Callable[[], FabricState],
        metrics: ControllerMetrics,
        routes: dict[str, JsonRoute],
    ) -> None:
        self._state = state
        self._metrics = metrics
        self._routes = dict(routes)
        self._post_routes: dict[str, PostRoute] = {}
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def add_route(self, path: str, route: Any, method: str = "GET") -> None:
        """A GET ``JsonRoute``, or with ``method="POST"`` a ``PostRoute`` (JSON body in, status and JSON out)."""
        if method == "POST":
            self._post_routes[path] = route
        elif method == "GET":
            self._routes[path] = route
        else:
            raise ValueError(f"unsupported method {method}")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "edgectl"

            def log_message(self, format: str, *args: Any) -> None:
                LOG.debug("%s " + format, self.address_string(), *args)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/") or "/"
                state = api._state()
                try:
                    if path == "/healthz":
                        self._send(200, "application/json", {"status": "ok", "generation": state.generation})
                    elif path == "/metrics":
                        api._metrics.observe_state(state)
                        self._send_bytes(200, CONTENT_TYPE_LATEST, generate_latest(api._metrics.registry))
                    elif path in api._routes:
                        self._send(200, "application/json", api._routes[path](state))
                    else:
                        self._send(404, "application/json", {"error": f"no such resource {path}"})
                except Exception as exc:  # a bug in one view must not take the endpoint down
                    LOG.exception("GET %s failed", path)
                    self._send(500, "application/json", {"error": str(exc)})

            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/") or "/"
                route = api._post_routes.get(path)
                if route is None:
                    if path in api._routes or path in ("/healthz", "/metrics"):
                        self._not_allowed()
                    else:
                        self._send(404, "application/json", {"error": f"no such resource {path}"})
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if not 0 <= length <= MAX_BODY:
                    self._send(400, "application/json", {"error": f"body must be 0-{MAX_BODY} bytes"})
                    return
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError as exc:
                    self._send(400, "application/json", {"error": f"the body is not JSON: {exc}"})
                    return
                try:
                    code, reply = route(api._state(), body)
                except Exception as exc:
                    LOG.exception("POST %s failed", path)
                    code, reply = 500, {"error": str(exc)}
                self._send(code, "application/json", reply)

            def _not_allowed(self) -> None:
                allowed = "POST" if self.path.split("?", 1)[0].rstrip("/") in api._post_routes else "GET"
                self._send(405, "application/json", {"error": f"only {allowed} is supported here"})

            do_PUT = do_DELETE = do_PATCH = _not_allowed

            def _send(self, code: int, content_type: str, body: Any) -> None:
                self._send_bytes(code, content_type, (json.dumps(body, indent=2) + "\n").encode())

            def _send_bytes(self, code: int, content_type: str, data: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
