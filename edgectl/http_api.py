"""The HTTP endpoint: /healthz, /metrics and the JSON API. Reads only the latest immutable state."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgectl.http_server import (
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_STREAMS,
    BoundedHttpServer,
    HangupWatcher,
    JsonRequestHandler,
)
from edgectl.live_events import parse_event_id
from edgectl.metrics import ControllerMetrics
from edgectl.static_files import HEADERS as STATIC_HEADERS
from edgectl.static_files import StaticFiles, is_ui_path, not_modified
from netmodel.state import FabricState

if TYPE_CHECKING:
    from edgectl.live_events import EventHub

LOG = logging.getLogger("edgectl.http")

JsonRoute = Callable[[FabricState], Any]
QueryRoute = Callable[[FabricState, Mapping[str, str]], Any]
"""``(state, query parameters) -> JSON``: a GET route that reads its query string (the last value of each)."""
PostRoute = Callable[[FabricState, Any], tuple[int, Any]]
"""``(state, JSON body) -> (status, JSON reply)``: a command (e.g. ``POST /api/v1/pki/rotate``)."""
MAX_BODY = 64 * 1024
KEEPALIVE_S = 15.0
"""An event stream with nothing to say sends a comment line this often (proxies and clients see it alive)."""
STREAM_WRITE_TIMEOUT_S = 10.0
"""A write to an event stream that cannot go on for this long ends the stream (the client stopped reading)."""
STREAM_SEND_BUFFER = 64 * 1024
"""The kernel's send buffer of an event stream: bounded (not auto-tuned to megabytes), so a client that stops
reading fills it and its own frame buffer soon, and is dropped."""
STREAM_WRITE_CHUNK = 16 * 1024
"""An event stream writes its frames in pieces this big, each with the write timeout."""
_KEEPALIVE = b": keepalive\n\n"
_FULL = b"retry: 1000\n: too many event streams, retry later\n\n"


class BadQuery(ValueError):
    """A query parameter a ``QueryRoute`` cannot use: answered 400 with this message."""


class HttpApi:
    """Serves GET routes (``routes``: a path -> a function of the state) and a few POST commands on a
    daemon thread. Bind it to loopback: the API has no authentication of its own. Each request must arrive
    within ``idle_timeout_s``; beyond ``max_connections`` open at once, new ones get a 503."""

    def __init__(
        self,
        host: str,
        port: int,
        state: Callable[[], FabricState],
        metrics: ControllerMetrics,
        routes: dict[str, JsonRoute],
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_streams: int = DEFAULT_MAX_STREAMS,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        self._state = state
        self._keepalive_s = keepalive_s
        self._streams: dict[str, EventHub] = {}
        self._hangups = HangupWatcher()
        self._metrics = metrics
        self._routes = dict(routes)
        self._post_routes: dict[str, PostRoute] = {}
        self._post_limits: dict[str, int] = {}
        self.ready = True
        """False while the process that owns this API still starts its other servers: /healthz says
        ``starting`` (503) until then."""
        self._query_routes: dict[str, QueryRoute] = {}
        self._static = StaticFiles()
        """The web UI at ``/`` and ``/ui/<file>`` (edgectl/ui/)."""
        self._server = BoundedHttpServer(
            (host, port), self._handler_class(), idle_timeout_s, max_connections, max_streams
        )
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def open_connections(self) -> int:
        """Connections being served now (each has a thread), event streams not included."""
        return self._server.active_connections

    @property
    def open_streams(self) -> int:
        """Event streams being served now (each has a thread)."""
        return self._server.active_streams

    def add_event_stream(self, path: str, hub: EventHub) -> None:
        """``GET path``: Server-Sent Events from ``hub`` (docs/dashboard.md), in slots of their own."""
        self._streams[path] = hub

    def add_route(self, path: str, route: Any, method: str = "GET", max_body: int = MAX_BODY) -> None:
        """A GET ``JsonRoute``, or with ``method="POST"`` a ``PostRoute`` (JSON body in, status and JSON out;
        a body over ``max_body`` bytes is refused before it is read)."""
        if method == "POST":
            self._post_routes[path] = route
            self._post_limits[path] = max_body
        elif method == "GET":
            self._routes[path] = route
        else:
            raise ValueError(f"unsupported method {method}")

    def add_query_route(self, path: str, route: QueryRoute) -> None:
        """A GET route given the query parameters too; it raises ``BadQuery`` for one it cannot use."""
        self._query_routes[path] = route

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._hangups.stop()

    def _allowed(self, path: str) -> list[str]:
        """The methods ``path`` answers (empty: no such resource)."""
        methods = []
        static = is_ui_path(path) and self._static.get(path) is not None
        if static or path in (*self._routes, *self._query_routes, *self._streams, "/healthz", "/metrics"):
            methods += ["GET", "HEAD"]
        if path in self._post_routes:
            methods.append("POST")
        return [*methods, "OPTIONS"] if methods else []

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(JsonRequestHandler):
            def _path(self) -> str:
                return self.path.split("?", 1)[0].rstrip("/") or "/"

            def do_GET(self) -> None:
                path = self._path()
                if "GET" not in api._allowed(path):
                    self._not_routed(path)
                    return
                if path in api._streams:
                    self._stream(api._streams[path])
                    return
                if is_ui_path(path):
                    self._send_static(path)
                    return
                state = api._state()
                try:
                    if path == "/healthz":
                        if not api.ready:  # up, but still starting its servers: not ready for requests
                            self.send_json(503, {"status": "starting", "generation": state.generation})
                            return
                        reply: tuple[str, bytes] = _json({"status": "ok", "generation": state.generation})
                    elif path == "/metrics":
                        api._metrics.observe_state(state)
                        reply = (CONTENT_TYPE_LATEST, generate_latest(api._metrics.registry))
                    elif path in api._query_routes:
                        query = {k: v[-1] for k, v in parse_qs(self.path.partition("?")[2]).items()}
                        reply = _json(api._query_routes[path](state, query))
                    else:
                        reply = _json(api._routes[path](state))
                except BadQuery as exc:
                    self.send_json(400, {"error": str(exc)})
                    return
                except Exception as exc:  # a bug in one view must not take the endpoint down
                    LOG.exception("GET %s failed", path)
                    self.send_json(500, {"error": str(exc)})
                    return
                self.send_bytes(200, *reply)

            do_HEAD = do_GET  # send_bytes leaves the body out

            def do_OPTIONS(self) -> None:
                path = self._path()
                allowed = ["GET", "HEAD", "POST", "OPTIONS"] if path == "*" else api._allowed(path)
                if not allowed:
                    self._not_routed(path)
                    return
                self.send_bytes(204, None, b"", {"Allow": ", ".join(allowed)})

            def do_POST(self) -> None:
                path = self._path()
                route = api._post_routes.get(path)
                if route is None:
                    self._not_routed(path)
                    return
                data = self.read_body(api._post_limits.get(path, MAX_BODY))
                if data is None:
                    return
                try:
                    body = json.loads(data or b"{}")
                except ValueError as exc:
                    self.send_json(400, {"error": f"the body is not JSON: {exc}"})
                    return
                try:
                    code, reply = route(api._state(), body)
                except Exception as exc:
                    LOG.exception("POST %s failed", path)
                    code, reply = 500, {"error": str(exc)}
                self.send_json(code, reply)

            def _send_static(self, path: str) -> None:
                asset = api._static.get(path)
                if asset is None:  # checked by _allowed; kept for the type checker
                    self._not_routed(path)
                    return
                headers = {**STATIC_HEADERS, "ETag": asset.etag}
                if not_modified(self.headers.get("If-None-Match"), asset.etag):
                    self.send_bytes(304, None, b"", headers)
                else:
                    self.send_bytes(200, asset.content_type, asset.body, headers)

            def _stream(self, hub: EventHub) -> None:
                """Frames from ``hub`` until the client goes, is dropped as too slow, or the hub stops. Past its
                request the stream never reads: the request deadline does not apply, only the write timeout."""
                if self.command == "HEAD":  # GET's headers, no body
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                    self.send_header("Cache-Control", "no-cache")
                    self.end_headers()
                    return
                self.close_connection = True
                if not self.server.become_stream(self.connection):
                    # Not a 503: a browser's EventSource gives up for good on any answer but an event stream.
                    # An event stream that only says "retry in 1 s" and ends makes it come back.
                    self.send_bytes(200, "text/event-stream", _FULL, {"Cache-Control": "no-cache"})
                    return
                client = hub.subscribe(parse_event_id(self.headers.get("Last-Event-ID"), hub.boot), self._hang_up)
                api._hangups.watch(self.connection, lambda: hub.unsubscribe(client))
                try:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SEND_BUFFER)
                    self.connection.settimeout(STREAM_WRITE_TIMEOUT_S)
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                    self.send_header("Cache-Control", "no-cache")
                    self.send_header("Connection", "close")
                    self.send_header("X-Accel-Buffering", "no")
                    self.end_headers()
                    while (frames := client.next(api._keepalive_s)) is not None:
                        self._send_progressing(b"".join(frames) if frames else _KEEPALIVE)
                except OSError as exc:  # gone, reset, or stopped reading (the write timed out, or it was dropped)
                    LOG.debug("event client %s ended: %s", self.address_string(), exc)
                finally:
                    api._hangups.forget(self.connection)
                    hub.unsubscribe(client)

            def _send_progressing(self, data: bytes) -> None:
                """Write in pieces, the write timeout counting from the last piece the client took: a slow but
                steady client gets a big snapshot; one that stops taking anything for the timeout is ended."""
                view = memoryview(data)
                for start in range(0, len(view), STREAM_WRITE_CHUNK):
                    self.wfile.write(view[start : start + STREAM_WRITE_CHUNK])

            def _hang_up(self) -> None:
                """The hub dropped this client: end a write it may be stuck in."""
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def _not_routed(self, path: str) -> None:
                """404 for a path nothing serves, 405 with Allow for a method this path does not take."""
                allowed = api._allowed(path)
                if not allowed:
                    self.send_json(404, {"error": f"no such resource {path}"})
                    return
                self.send_json(
                    405,
                    {"error": f"{self.command} is not supported here; allowed: {', '.join(allowed)}"},
                    {"Allow": ", ".join(allowed)},
                )

            def do_PUT(self) -> None:
                self._not_routed(self._path())

            do_DELETE = do_PATCH = do_PUT

        return Handler


def _json(body: Any) -> tuple[str, bytes]:
    return "application/json", (json.dumps(body, indent=2) + "\n").encode()
