"""The demo workload: a tiny HTTP/1.1 service that says who it is, who called it, and whom it called.

Runs inside a Mininet host's network namespace (``host.popen``), behind its Envoy sidecar. Standard
library only, and nothing from the rest of the project, so it starts fast (the package ``__init__``
is lazy and does not import Mininet).

Run: ``python -m mininet_topos.app --workload web-1 --service web --listen 10.0.0.1:8080
--call api=127.0.0.1:15001`` (or ``--calls "api=127.0.0.1:15001;db=127.0.0.1:5432"``, as a node agent's
``{calls}`` placeholder gives them). Prints one line ``listening HOST:PORT`` on stdout once bound (port 0
picks a free port and prints it): the parent cannot connect into the namespace to find out.

Every response carries ``x-edgectl-workload``. ``GET`` on any path calls each ``--call`` target in
order (``Host: SERVICE``, so a sidecar can route by service) and answers 200 with
``{"workload", "service", "caller", "calls": [downstream bodies]}``, or 502 with
``{"workload", "error"}`` when a call fails. SIGTERM or SIGINT: stop and exit 0.

Weighted calls (``--call SERVICE=HOST:PORT,PER_REQUEST,BYTES``, as a service's ``calls`` declare them):
each request calls the target ``PER_REQUEST`` times on average, deterministically (a running credit per
target: 3 is three calls every request, 0.5 one call every other request, 0.1 one in ten), one after
another; each call moves about ``BYTES`` bytes: half as a request body, half as padding the callee adds
to its answer when asked (``x-edgectl-pad``), which the caller drops before it nests the answer in its own.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WORKLOAD_HEADER = "x-edgectl-workload"
XFCC_HEADER = "x-forwarded-client-cert"
PAD_HEADER = "x-edgectl-pad"
"""On a call: how many bytes of padding the callee adds to its answer (the answer's half of the call's bytes)."""
MAX_PAD_BYTES = 1 << 20
CALL_TIMEOUT_S = 5.0


def _split_unquoted(text: str, separator: str) -> list[str]:
    """Split on separator outside double quotes (XFCC quotes values holding ``,;=``; ``\\`` escapes)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner, out, escaped = value[1:-1], [], False
        for char in inner:
            if escaped or char != "\\":
                out.append(char)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return value


def caller_from_xfcc(value: str | None) -> str | None:
    """The SPIFFE id of whoever called us, from Envoy's ``x-forwarded-client-cert``.

    Each proxy on the way appends one element (comma-separated); the last one describes the hop
    that reached our sidecar, so its ``URI=`` (the client certificate's URI SAN) is the caller.
    None when the header is absent or the last element has no URI.
    """
    if not value or not value.strip():
        return None
    last = _split_unquoted(value, ",")[-1]
    for field in _split_unquoted(last, ";"):
        key, equals, raw = field.partition("=")
        if equals and key.strip().lower() == "uri":
            uri = _unquote(raw)
            return uri or None
    return None


@dataclass(frozen=True, slots=True)
class Target:
    """A downstream call: the service name goes in ``Host``, the address is where to connect; on average
    ``per_request`` calls per request, each moving about ``bytes_per_call`` bytes (both ways together)."""

    service: str
    host: str
    port: int
    per_request: float = 1.0
    bytes_per_call: int = 0

    @property
    def request_bytes(self) -> int:
        return self.bytes_per_call // 2

    @property
    def response_bytes(self) -> int:
        return self.bytes_per_call - self.request_bytes


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` to (host, port); ValueError when it is neither."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def parse_target(text: str) -> Target:
    """``SERVICE=HOST:PORT`` (one call per request), or ``SERVICE=HOST:PORT,PER_REQUEST[,BYTES]``."""
    service, equals, rest = text.partition("=")
    address, *weights = rest.split(",")
    if not equals or not service or len(weights) > 2:
        raise ValueError(f"expected SERVICE=HOST:PORT[,PER_REQUEST[,BYTES]], got {text!r}")
    per_request = float(weights[0]) if weights else 1.0
    bytes_per_call = int(weights[1]) if len(weights) > 1 else 0
    if not 0 <= per_request <= 1000 or not 0 <= bytes_per_call <= 2 * MAX_PAD_BYTES:
        raise ValueError(f"PER_REQUEST must be 0..1000 and BYTES 0..{2 * MAX_PAD_BYTES}, got {text!r}")
    return Target(service, *parse_address(address), per_request, bytes_per_call)


class CallCounts:
    """How many times each request calls each target: a running credit per target, so the calls average
    ``per_request`` exactly and the same sequence of requests makes the same calls (no randomness).
    Shared by the server's threads."""

    def __init__(self, targets: tuple[Target, ...]) -> None:
        self._rates = [Fraction(repr(t.per_request)) for t in targets]
        self._credit = [Fraction(0)] * len(targets)
        self._lock = threading.Lock()

    def next_request(self) -> list[int]:
        counts = []
        with self._lock:
            for i, rate in enumerate(self._rates):
                credit = self._credit[i] + rate
                whole = int(credit)  # floor: credit is never negative
                self._credit[i] = credit - whole
                counts.append(whole)
        return counts


class CallFailed(Exception):
    """A downstream call did not give us a 200 with a JSON body; the message says which and why."""


class Caller:
    """Calls downstream targets over one keep-alive connection per thread and target.

    Per thread because http.client connections are not thread-safe and each server thread serves
    one client connection at a time; reusing connections keeps the sidecar's connection count flat.
    """

    def __init__(self, timeout: float = CALL_TIMEOUT_S) -> None:
        self.timeout = timeout
        self._local = threading.local()

    def _connections(self) -> dict[Target, http.client.HTTPConnection]:
        connections: dict[Target, http.client.HTTPConnection] | None = getattr(self._local, "connections", None)
        if connections is None:
            connections = self._local.connections = {}
        return connections

    def call(self, target: Target) -> Any:
        """The downstream's decoded JSON body; CallFailed on a transport error or a status other than 200."""
        connections = self._connections()
        # A reused keep-alive connection may have been closed by the peer while idle: then once more, fresh.
        attempts = 2 if target in connections else 1
        for attempt in range(attempts):
            connection = connections.get(target)
            if connection is None:
                connection = connections[target] = http.client.HTTPConnection(
                    target.host, target.port, timeout=self.timeout
                )
            try:
                status, body = self._get(connection, target)
                break
            except TimeoutError as exc:  # a slow target, not a stale connection: retrying would double the wait
                self._drop(target)
                raise CallFailed(f"{target.service}: timed out after {self.timeout:g}s") from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop(target)
                if attempt == attempts - 1:
                    raise CallFailed(f"{target.service}: {_describe(exc)}") from exc
        if status != 200:
            raise CallFailed(f"{target.service}: HTTP {status}")
        try:
            decoded = json.loads(body)
        except ValueError as exc:
            raise CallFailed(f"{target.service}: response is not JSON") from exc
        if isinstance(decoded, dict):
            decoded.pop("pad", None)  # the call's bytes, moved; nesting them would grow every answer upstream
        return decoded

    def close(self) -> None:
        """Close this thread's connections (its client went away; nothing will reuse them)."""
        for connection in self._connections().values():
            connection.close()
        self._connections().clear()

    @staticmethod
    def _get(connection: http.client.HTTPConnection, target: Target) -> tuple[int, bytes]:
        headers = {"Host": target.service}
        body = None
        if target.bytes_per_call:
            headers[PAD_HEADER] = str(target.response_bytes)
            body = b"x" * target.request_bytes
        connection.request("GET", "/", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()

    def _drop(self, target: Target) -> None:
        connection = self._connections().pop(target, None)
        if connection is not None:
            connection.close()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@dataclass(frozen=True, slots=True)
class Identity:
    workload: str
    service: str


def _pad_asked(value: str | None) -> int:
    """The padding a caller asked for (``x-edgectl-pad``), within 0..MAX_PAD_BYTES; 0 when absent or bad."""
    try:
        return max(0, min(int(value or 0), MAX_PAD_BYTES))
    except ValueError:
        return 0


def make_handler(identity: Identity, targets: tuple[Target, ...], caller: Caller) -> type[BaseHTTPRequestHandler]:
    counts = CallCounts(targets)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a sidecar or load generator reuses its connection
        # One write per response, sent at once: headers and body written separately (the default, an
        # unbuffered writer) meet Nagle's algorithm and the peer's delayed ACK, 40 ms per hop on Linux.
        wbufsize = -1
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > 0:  # drain any body so the next request on this connection parses
                self.rfile.read(length)
            try:
                calls = [
                    caller.call(target)
                    for target, times in zip(targets, counts.next_request(), strict=True)
                    for _ in range(times)
                ]
            except CallFailed as exc:
                self._send(502, {"workload": identity.workload, "error": str(exc)})
                return
            body: dict[str, Any] = {
                "workload": identity.workload,
                "service": identity.service,
                "caller": caller_from_xfcc(self.headers.get(XFCC_HEADER)),
                "calls": calls,
            }
            pad = _pad_asked(self.headers.get(PAD_HEADER))
            if pad:
                body["pad"] = "x" * pad
            self._send(200, body)

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode() + b"\n"
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header(WORKLOAD_HEADER, identity.workload)
            self.end_headers()
            self.wfile.write(data)

        def finish(self) -> None:
            super().finish()
            caller.close()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request would flood the namespace's pipe at the load generator's rate

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True  # keep-alive connections must not hold up exit

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)


def serve(
    identity: Identity, listen: tuple[str, int], targets: tuple[Target, ...], timeout: float = CALL_TIMEOUT_S
) -> Server:
    """A bound server, not yet serving: the caller prints the address, then calls serve_forever()."""
    return Server(listen, make_handler(identity, targets, Caller(timeout)))


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mininet_topos.app", description=__doc__.split("\n")[0])
    parser.add_argument("--workload", required=True, help="workload id, returned in every response")
    parser.add_argument("--service", required=True, help="service name")
    parser.add_argument("--listen", required=True, type=parse_address, help="HOST:PORT (port 0: any free port)")
    parser.add_argument(
        "--call",
        action="append",
        default=[],
        type=parse_target,
        metavar="SERVICE=HOST:PORT[,PER_REQUEST[,BYTES]]",
        help="call this service at HOST:PORT, in order (repeatable): PER_REQUEST times per request on average "
        "(1; 0.5: every other request), each call moving about BYTES bytes (0)",
    )
    parser.add_argument(
        "--calls",
        type=parse_targets,
        default=(),
        metavar="TARGET;TARGET...",
        help="the same targets as one ';'-separated argument (the node agent's {calls}; empty: none), after --call's",
    )
    args = parser.parse_args(argv)
    args.call = [*args.call, *args.calls]
    return args


def parse_targets(text: str) -> tuple[Target, ...]:
    """``SERVICE=HOST:PORT[,PER_REQUEST[,BYTES]]`` separated by ``;``; "" is none."""
    return tuple(parse_target(part) for part in text.split(";") if part.strip())


class _Stop(Exception):
    """Raised from the SIGTERM/SIGINT handler to unwind serve_forever()."""


def _raise_stop(_signum: int, _frame: object) -> None:
    raise _Stop


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        server = serve(Identity(args.workload, args.service), args.listen, tuple(args.call))
    except _Stop:
        return 0
    try:
        host, port = server.server_address[:2]
        print(f"listening {format_address(str(host), int(port))}", flush=True)
        server.serve_forever()
    except _Stop:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
