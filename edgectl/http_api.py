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


class HttpApi:
    """Serves GET routes on a daemon thread. ``routes`` maps a path to a function of the state."""

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
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def add_route(self, path: str, route: JsonRoute) -> None:
        self._routes[path] = route

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

            def _not_allowed(self) -> None:
                self._send(405, "application/json", {"error": "only GET is supported here"})

            do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

            def _send(self, code: int, content_type: str, body: Any) -> None:
                self._send_bytes(code, content_type, (json.dumps(body, indent=2) + "\n").encode())

            def _send_bytes(self, code: int, content_type: str, data: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
