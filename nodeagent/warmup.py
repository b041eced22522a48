"""Open a new sidecar's connections to the services its app calls before the app's first request needs them.

A new instance's sidecar has no connection to what its app calls: the first request through it waits
for one to open (TCP, then TLS: two round trips, across an edge-cloud link tens of milliseconds), and
after a migration that first request is a user's. So the agent sends one request through the sidecar's
outbound listener for each HTTP service the app calls, as soon as that listener accepts (ADS sends a
sidecar its clusters and endpoints before its listeners, so by then it knows where to connect). The
callee's sidecar answers it itself (``meshctl.xds_types.WARM_UP_PATH``: 204, never reaching its app),
and the connection stays in the sidecar's pool for the app's first request. A TCP callee is skipped: a
TCP proxy's upstream connection belongs to the one downstream connection that opened it.

The warm-up goes to the workload's own outbound address (``meshctl.xds_types.workload_outbound_host``).
Where two sidecars still listen on one address and port (several nodes' agents in one network namespace,
as on a test machine, with workloads of one port; Envoy binds with SO_REUSEPORT and the kernel spreads
connections among them), an answer may come through the other one: the new sidecar's admin API says
whether it opened a connection to the callee, and until it did the warm-up is sent again (a new source
port, so another draw among the listeners).

Best effort: nothing waits for a warm-up, and one that finds no sidecar listening by its deadline (the
instance stopped, its configuration late) ends quietly.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from meshctl.sidecar import unix_admin
from meshctl.xds_types import WARM_UP_PATH, service_cluster_name
from nodeagent.plan import Call

LOG = logging.getLogger("edgectl.agent")

WARM_UP_TIMEOUT_S = 10.0
"""How long a warm-up keeps trying: the sidecar's boot and first configuration take ~0.1-0.2 s."""
EAGER_S = 1.0
EAGER_PAUSE_S = 0.005
"""For its first second a warm-up tries every 5 ms (a refused connect on loopback costs ~50 us): it must
be done before the first user request, ~50-100 ms after the sidecar can route. Doubling pauses from 5 ms
found the listener at 155 or 255 ms, when that request had come and gone."""
LATE_PAUSE_S = 0.1
RETRY_STATUSES = frozenset({502, 503, 504})
"""The sidecar had no endpoint yet, or could not reach it: try again (any other answer came from the
callee's sidecar or app, so the connection was made)."""


@dataclass(frozen=True, slots=True)
class WarmUp:
    service: str
    status: int | None
    """The answer (204: the callee's sidecar); None: none before the deadline."""
    seconds: float
    listening_after: float | None = None
    """When the sidecar's outbound listener first accepted (seconds from the start; None: never)."""
    tries: int = 0
    elsewhere: int = 0
    """Answers that came through another sidecar listening on the same address."""


Connections = Callable[[str], "int | None"]
"""The new sidecar's count of connections opened to a service (None: it cannot tell: its admin API not up
yet, or no cluster of that service yet; for the first second that counts as not its answer)."""


def sidecar_connections(admin_socket: str) -> Connections:
    """``Connections`` from a sidecar's admin API on a Unix socket (``upstream_cx_total`` of the service's cluster)."""

    def opened(service: str) -> int | None:
        name = f"cluster.{service_cluster_name(service)}.upstream_cx_total"
        try:
            text = unix_admin(admin_socket, f"/stats?filter=^{name.replace('.', '[.]')}$", timeout=1.0)
        except OSError:
            return None
        for line in text.splitlines():
            stat, _, value = line.partition(": ")
            if stat == name and value.strip().isdigit():
                return int(value)
        return None

    return opened


def request(service: str) -> bytes:
    """The warm-up request for ``service`` (the Host the sidecar's outbound routes match on)."""
    return f"GET {WARM_UP_PATH} HTTP/1.1\r\nHost: {service}\r\nConnection: close\r\n\r\n".encode()


def status_of(response: bytes) -> int | None:
    """The status code of an HTTP/1.x response's first line (None: not one)."""
    line = response.split(b"\r\n", 1)[0].split()
    if len(line) >= 2 and line[0].startswith(b"HTTP/1.") and line[1].isdigit():
        return int(line[1])
    return None


def warm_up(
    host: str, call: Call, deadline: float, cancelled: threading.Event, connections: Connections | None = None
) -> WarmUp:
    """Send the warm-up for ``call`` through the outbound listener at ``host:call.port`` until a sidecar
    answers it with anything but a gateway error, and (with ``connections``, the new sidecar's) that
    sidecar has a connection to the callee; or the ``deadline`` (monotonic) passes, or ``cancelled`` is set."""
    started = time.monotonic()
    status: int | None = None
    listening_after: float | None = None
    tries = elsewhere = 0
    while True:
        tries += 1
        accepted_at, status = _try_once(host, call, deadline)
        if accepted_at is not None and listening_after is None:
            listening_after = accepted_at - started
        if status is not None and status not in RETRY_STATUSES:
            if connections is None:
                break
            opened = connections(call.service)
            if opened is not None and opened > 0:
                break
            if opened is None and time.monotonic() - started >= EAGER_S:
                break  # its admin API cannot tell (not up yet, or no such cluster): the answer is taken
            elsewhere += 1  # another sidecar on this address answered it (or ours cannot tell yet)
            status = None
        pause = EAGER_PAUSE_S if time.monotonic() - started < EAGER_S else LATE_PAUSE_S
        if time.monotonic() + pause > deadline or cancelled.wait(pause):
            break
    return WarmUp(call.service, status, time.monotonic() - started, listening_after, tries, elsewhere)


def _try_once(host: str, call: Call, deadline: float) -> tuple[float | None, int | None]:
    """(when the listener accepted: None if it did not, the answer's status: None if none)."""
    timeout = max(0.05, deadline - time.monotonic())
    try:
        connection = socket.create_connection((host, call.port), timeout=timeout)
    except OSError:
        return None, None
    accepted_at = time.monotonic()
    response = b""
    with connection:
        try:
            connection.sendall(request(call.service))
            while b"\r\n" not in response and len(response) < 4096:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                response += chunk
        except OSError:
            return accepted_at, None
    return accepted_at, status_of(response)


def warm_up_in_background(
    workload_id: str,
    calls: Iterable[Call],
    cancelled: threading.Event,
    host: str = "127.0.0.1",
    timeout_s: float = WARM_UP_TIMEOUT_S,
    done: Callable[[WarmUp], None] | None = None,
    connections: Connections | None = None,
) -> list[threading.Thread]:
    """One daemon thread per HTTP callee of ``workload_id``'s app, each warming its connection (``warm_up``;
    ``connections``: the new sidecar's, ``sidecar_connections``)."""
    deadline = time.monotonic() + timeout_s
    threads = []
    for call in calls:
        if call.protocol != "http":
            continue

        def run(call: Call = call) -> None:
            result = warm_up(host, call, deadline, cancelled, connections)
            listening = "never" if result.listening_after is None else f"after {result.listening_after * 1000:.0f} ms"
            if result.status is None or result.status in RETRY_STATUSES:
                LOG.info(
                    "%s: no warm connection to %s (%s; its sidecar's listener accepted %s; %d answered elsewhere)",
                    workload_id,
                    call.service,
                    result.status or "no answer",
                    listening,
                    result.elsewhere,
                )
            else:
                LOG.info(
                    "%s: connection to %s warm in %.0f ms (its sidecar's listener accepted %s; %d tries, %d "
                    "answered through another sidecar on that address)",
                    workload_id,
                    call.service,
                    result.seconds * 1000,
                    listening,
                    result.tries,
                    result.elsewhere,
                )
            if done is not None:
                done(result)

        thread = threading.Thread(target=run, name=f"warm-{workload_id}-{call.service}", daemon=True)
        thread.start()
        threads.append(thread)
    return threads
