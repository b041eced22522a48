"""A threading HTTP server that survives slow, abandoned and too many clients; a handler base that answers in JSON.

The standard library's ``ThreadingHTTPServer`` waits forever for a request, accepts any number of connections
(one thread each) behind a listen backlog of 5, serves a request whose headers or body were cut short by the
client closing, and prints a traceback for every client that disconnects early. This module bounds each of
those; ``edgectl/http_api.py`` routes on top of it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import resource
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOG = logging.getLogger("edgectl.http")

DEFAULT_IDLE_TIMEOUT_S = 10.0
"""A request (line, headers and body) must arrive within this, however slowly its bytes trickle in."""
DEFAULT_MAX_CONNECTIONS = 512
"""Connections served at once (a thread each); the next ones get a 503 and are closed at once."""
DEFAULT_MAX_STREAMS = 1024
FD_RESERVE = 256
"""Descriptors kept for the rest of the process beside the HTTP connections (``stream_limit``)."""
ACCEPT_BACKOFF_S = 0.1
"""Long-lived streams (``GET /api/v1/events``) served at once, a thread each, beside and not counted in
``max_connections``: watching clients cannot take the slots of ordinary requests."""
LISTEN_BACKLOG = 1024
LINGER_MAX_BYTES = 64 << 20
"""A refused body up to this size is read and dropped so the client sees the answer; past it, the reset."""
_CLIENT_GONE = (ConnectionError, TimeoutError)
"""Errors a client causes by closing, resetting or stalling its connection: routine, never a traceback."""
_OVERLOADED_BODY = b'{"error": "too many connections, retry later"}\n'
_OVERLOADED = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\nRetry-After: 1\r\n"
    + f"Content-Length: {len(_OVERLOADED_BODY)}\r\n\r\n".encode()
    + _OVERLOADED_BODY
)


class DeadlineReader:
    """A connection's buffered reader whose reads fail with ``TimeoutError`` once the current request's deadline
    passes: a socket timeout alone bounds each ``recv``, so a client sending a byte every few seconds would keep
    its thread forever (slowloris). Remembers the last line read, to tell headers that ended from headers that
    were cut off by the client closing."""

    def __init__(self, raw: Any, sock: socket.socket, timeout_s: float) -> None:
        self._raw = raw
        self._sock = sock
        self._timeout_s = timeout_s
        self._deadline = time.monotonic() + timeout_s
        self.last_line = b""

    def restart(self) -> None:
        """A new request may take the whole timeout (keep-alive: the wait for it included)."""
        self._deadline = time.monotonic() + self._timeout_s

    def _arm(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete request within {self._timeout_s:g} s")
        self._sock.settimeout(remaining)

    def readline(self, limit: int = -1) -> bytes:
        parts: list[bytes] = []
        size = 0
        while limit < 0 or size < limit:
            self._arm()
            buffered = self._raw.peek(1)  # at most one recv, bounded by the deadline; b"" at end of stream
            if not buffered:
                break
            window = len(buffered) if limit < 0 else min(len(buffered), limit - size)
            newline = buffered.find(b"\n", 0, window)
            part = self._raw.read(newline + 1 if newline >= 0 else window)  # from the buffer: no recv
            parts.append(part)
            size += len(part)
            if newline >= 0:
                break
        self.last_line = b"".join(parts)
        return self.last_line

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes, fewer only at the end of the stream."""
        parts: list[bytes] = []
        got = 0
        while got < size:
            self._arm()
            part = self._raw.read1(size - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def close(self) -> None:
        self._raw.close()


class HangupWatcher:
    """One thread that notices a stream's client closing while the stream's thread waits for something to send
    (it would find out only at its next write, a keepalive up to 15 s later, and hold its slot meanwhile). A
    stream's client sends nothing after its request, so anything readable (the end, a reset, bytes) ends it."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def watch(self, sock: socket.socket, on_hangup: Callable[[], None]) -> None:
        with self._lock:
            if self._stopping:
                on_hangup()
                return
            self._selector.register(sock, selectors.EVENT_READ, on_hangup)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="http-stream-hangups", daemon=True)
                self._thread.start()

    def forget(self, sock: socket.socket) -> None:
        with self._lock, contextlib.suppress(KeyError, ValueError, OSError):  # never watched, or stopped
            self._selector.unregister(sock)

    def stop(self) -> None:
        """Stop watching, and end every stream still watched (the server they belong to is stopping)."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            thread = self._thread
            watched = [key.data for key in self._selector.get_map().values()]
        if thread is not None:
            thread.join(5)
        for on_hangup in watched:
            try:
                on_hangup()
            except Exception:
                LOG.exception("ending a stream at stop failed")
        self._selector.close()

    def _run(self) -> None:
        while not self._stopping:
            for key, _ in self._selector.select(timeout=0.5):
                self.forget(key.fileobj)  # type: ignore[arg-type]
                try:
                    key.data()
                except Exception:
                    LOG.exception("ending a stream whose client hung up failed")


class BoundedHttpServer(ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` of them; a deep listen backlog so bursts of
    connections wait in the kernel instead of being dropped and retried seconds later."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_streams: int = DEFAULT_MAX_STREAMS,
    ) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.max_streams = max_streams
        self._active = 0
        self._streams: set[Any] = set()
        self._lock = threading.Lock()
        super().__init__(address, handler)

    @property
    def active_connections(self) -> int:
        """Connections served now, streams not included."""
        return self._active

    @property
    def active_streams(self) -> int:
        return len(self._streams)

    def stream_limit(self) -> int:
        """``max_streams``, or fewer when the open-files limit would not hold them beside every ordinary
        connection and a reserve for the rest of the process (switches, files): streams must never take the
        descriptors /healthz and the controller need."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_streams
        return max(0, min(self.max_streams, soft - self.max_connections - FD_RESERVE))

    def become_stream(self, request: Any) -> bool:
        """Move a connection from the ordinary slots to the stream slots (False: every stream slot is taken)."""
        with self._lock:
            if len(self._streams) >= self.stream_limit():
                return False
            self._streams.add(request)
            self._active -= 1
            return True

    def get_request(self) -> tuple[Any, Any]:
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):  # out of descriptors: back off, do not spin on accept
                LOG.warning("cannot accept a connection: %s", exc)
                time.sleep(ACCEPT_BACKOFF_S)
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            admitted = self._active < self.max_connections
            if admitted:
                self._active += 1
        if not admitted:
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: the slot is free again
            self._release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def _release(self, request: Any) -> None:
        with self._lock:
            if request in self._streams:
                self._streams.discard(request)
            else:
                self._active -= 1

    def _refuse(self, request: socket.socket) -> None:
        """503 without reading the request and without blocking the accept loop (the socket is non-blocking)."""
        LOG.debug("refusing a connection: %d open", self._active)
        try:
            request.setblocking(False)
            request.send(_OVERLOADED)
            request.shutdown(socket.SHUT_WR)
            request.recv(65536)  # what already arrived: closing with unread data would reset the 503 away
        except OSError:
            pass
        finally:
            request.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, _CLIENT_GONE):
            LOG.debug("client %s went away: %s", client_address, error)
        else:
            LOG.exception("error while serving %s", client_address)


class JsonRequestHandler(BaseHTTPRequestHandler):
    """Reads requests against the server's deadline, answers errors in JSON, answers HEAD without a body, and
    treats a client that goes away as routine (debug log, no traceback)."""

    server: BoundedHttpServer
    rfile: Any
    raw_requestline: bytes
    _headers_buffer: list[bytes]
    server_version = "edgectl"
    default_request_version = "HTTP/1.0"  # a garbled request line still gets a status line and headers

    def setup(self) -> None:
        super().setup()
        self.rfile = DeadlineReader(self.rfile, self.connection, self.server.idle_timeout_s)

    def handle_one_request(self) -> None:
        self.rfile.restart()
        super().handle_one_request()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.rfile.last_line not in (b"\r\n", b"\n"):  # the client closed mid-headers (or sent HTTP/0.9)
            self.send_error(400, "incomplete request: the headers did not end")
            return False
        return True

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("%s " + format, self.address_string(), *args)

    def read_body(self, max_bytes: int) -> bytes | None:
        """The whole body the headers announce, or None after answering 400 (too long, bad length, cut short)."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= max_bytes:
            self.send_json(400, {"error": f"body must be 0-{max_bytes} bytes"})
            self.close_connection = True
            self._discard_body(length)
            return None
        body: bytes = self.rfile.read(length)
        if len(body) < length:
            self.send_json(400, {"error": f"incomplete body: {len(body)} of {length} bytes"})
            self.close_connection = True
            return None
        return body

    def _discard_body(self, length: int) -> None:
        """Read and drop (a bounded part of) a refused body before closing: a client still sending it
        would otherwise get a reset instead of our answer (a lingering close, as web servers do)."""
        left = min(length, LINGER_MAX_BYTES) if length > 0 else 0
        try:
            while left > 0:  # within the request's own read deadline
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        self.send_json(code, {"error": message or self.responses.get(code, ("error",))[0]}, {"Connection": "close"})

    def send_json(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.send_bytes(code, "application/json", (json.dumps(body, indent=2) + "\n").encode(), headers)

    def send_bytes(
        self, code: int, content_type: str | None, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """The whole response in one write (HEAD: the same headers, no body); a client gone meanwhile is routine."""
        self.connection.settimeout(self.server.idle_timeout_s)  # the read deadline may be nearly spent
        try:
            self.send_response(code)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if content_type:
                self.send_header("Content-Type", content_type)
            if code not in (204, 304):  # neither has a body (nor, then, a length)
                self.send_header("Content-Length", str(len(data)))
            self._headers_buffer.append(b"\r\n")
            if self.command != "HEAD" and code not in (204, 304):
                self._headers_buffer.append(data)
            self.flush_headers()
        except _CLIENT_GONE as exc:
            LOG.debug("client %s went away before its %d answer: %s", self.address_string(), code, exc)
            self.close_connection = True
