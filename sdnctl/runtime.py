"""Starting os-ken inside our process: native threads, our listen address, our apps.

Traps avoided here (measured on these machines): OSKEN_HUB_TYPE must be set before
the first os_ken import; os_ken.base.app_manager must be imported first (circular import); the
listen host/port go into os-ken's config (else it binds 0.0.0.0 on 6653 and 6633); the apps start
from a daemon thread so their threads are daemons and SIGTERM ends the process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdnctl.admission import ConnectionLimits, header_length_problem

if TYPE_CHECKING:  # os-ken is imported only when start_openflow runs (and after OSKEN_HUB_TYPE is set)
    from netmodel.state import FabricState
    from pki.tls import TlsFiles
    from sdnctl.connections import ConnectionGuard
    from sdnctl.openflow import FabricApp, Publish
    from sdnctl.roles import Mastership

LOG = logging.getLogger("edgectl.sdnctl.runtime")


@dataclass
class OpenFlowRuntime:
    app: FabricApp
    host: str
    port: int
    connections: ConnectionGuard | None = None  # the guard serving this listener
    manager: Any = None  # os-ken's AppManager (os-ken is untyped)

    def stop(self) -> None:
        """Stop listening, drop every switch, stop os-ken's apps and their threads."""
        if self.connections is not None:
            self.connections.stop()
        if self.manager is not None:
            self.manager.close()
        LOG.info("OpenFlow listener on %s:%d stopped", self.host, self.port)


def start_openflow(
    host: str,
    port: int,
    publish: Publish,
    state: Callable[[], FabricState],
    *,
    echo_interval_s: float = 2.0,
    timeout_s: float = 10.0,
    tls: TlsFiles | None = None,
    limits: ConnectionLimits | None = None,
    on_tls_context: Callable[[ssl.SSLContext], None] | None = None,
    port_stats_interval_s: float | None = None,
    mastership: Mastership | None = None,
) -> OpenFlowRuntime:
    """Start the OpenFlow 1.3 listener on host:port with the edgectl app; returns once it listens.

    A peer is dropped after ``maximum_unreplied_echo_requests`` (3) unanswered echoes, about
    4 x ``echo_interval_s``; ``limits`` bound the connections still in their handshake.
    ``on_tls_context``: called with the listener's ``ssl.SSLContext`` (to renew its certificate).
    ``port_stats_interval_s``: how often every switch's port counters are read (None: the app's
    default, 5 s; 0: never). ``mastership``: the role to hold from the first switch on (replicated mode,
    or ``--static-role``; None: embedded, no role requests); ``app.set_mastership`` changes it later.
    """
    os.environ["OSKEN_HUB_TYPE"] = "native"
    from os_ken.base import app_manager  # noqa: I001 - must come first (os-ken circular import)
    from os_ken import cfg
    from os_ken.controller import controller as _controller  # registers the ofp-* options
    from os_ken.lib import hub

    if hub.HUB_TYPE != "native":
        raise RuntimeError(f"os-ken hub is {hub.HUB_TYPE!r}; edgectl needs native threads")
    cfg.CONF(args=[], project="os_ken", default_config_files=[])
    cfg.CONF.set_override("ofp_listen_host", host)
    cfg.CONF.set_override("ofp_tcp_listen_port", port)
    if tls is not None:  # a pki.tls.TlsFiles: os-ken then listens with TLS only, on its "ssl" port
        cfg.CONF.set_override("ofp_ssl_listen_port", port)
        cfg.CONF.set_override("ctl_privkey", str(tls.private_key))
        cfg.CONF.set_override("ctl_cert", str(tls.certificate))
        cfg.CONF.set_override("ca_certs", str(tls.ca_certs))
    # os-ken notices a dead switch only when something is sent: a short echo keeps that prompt.
    cfg.CONF.set_override("echo_request_interval", echo_interval_s)
    cfg.CONF.set_override("maximum_unreplied_echo_requests", 3)
    connections = _guard_connections(_controller, limits or ConnectionLimits())
    # os-ken builds its listening SSLContext inside its server loop and keeps it to itself: the server
    # class (ours, set by _guard_connections) hands it to this start's callback as the listener is made.
    _controller.StreamServer.on_tls_context = on_tls_context if tls is not None else None
    manager = app_manager.AppManager.get_instance()
    manager.load_apps(["os_ken.controller.ofp_handler", "sdnctl.openflow"])
    contexts = manager.create_contexts()
    started = threading.Event()
    failure: list[BaseException] = []

    def boot() -> None:
        try:
            manager.instantiate_apps(
                edgectl_publish=publish, edgectl_state=state, edgectl_mastership=mastership, **contexts
            )
        except BaseException as exc:  # surfaced to the caller below
            failure.append(exc)
        finally:
            started.set()

    threading.Thread(target=boot, name="osken-boot", daemon=True).start()
    if not started.wait(timeout_s) or failure:
        raise RuntimeError(f"os-ken did not start: {failure[0] if failure else 'timeout'}")
    app = manager.applications["edgectl_fabric"]
    if port_stats_interval_s is not None:
        app.port_stats_interval_s = port_stats_interval_s
    _wait_listening(host, port, timeout_s)
    LOG.info("OpenFlow 1.3 listening on %s:%d", host, port)
    return OpenFlowRuntime(app=app, host=host, port=port, connections=connections, manager=manager)


OFPT_ECHO_REPLY, OFPT_PACKET_IN = 3, 10  # the same in OpenFlow 1.0 to 1.5
TIMED_TYPES = frozenset({OFPT_ECHO_REPLY, OFPT_PACKET_IN})


class MalformedOpenFlow(Exception):
    """A peer sent bytes that do not parse as the OpenFlow message they claim to be."""


def _guard_connections(controller_module: Any, limits: ConnectionLimits) -> Any:
    """Make os-ken end every connection cleanly, and disconnect a peer that breaks the protocol.

    os-ken logs a traceback and *keeps* a connection whose message fails to parse (it skips the
    message), reads a header whose length is below 8 as an 8-byte message (a length-0 HELLO is a
    HELLO), and a connection that dies on bad bytes re-raises into its thread, which prints another
    traceback. Both are bad input, not bugs. Its connections also leaked threads (see
    ``sdnctl.connections``). The receive loop looks up ``ofproto_parser.msg`` and the listener
    ``datapath_connection_factory`` in their modules at call time, so replacing those two is the whole
    change: a message that does not parse ends its connection, and each connection is served by a
    ``ConnectionGuard`` (the limits of this call; connections already open keep theirs).
    """
    from os_ken.lib import hub
    from os_ken.ofproto import ofproto_parser

    from sdnctl.connections import ConnectionGuard, peer_name
    from sdnctl.flow_stats import FlowStatsReader

    guard = ConnectionGuard(limits)
    controller_module.datapath_connection_factory = guard
    if getattr(ofproto_parser.msg, "edgectl_strict", False):
        return guard
    parsers = ofproto_parser._MSG_PARSERS
    flow_stats = FlowStatsReader()  # flow-stats replies decoded without os-ken's objects (sdnctl.flow_stats)
    unknown_version = ofproto_parser.exception.OFPUnknownVersion

    def strict_msg(datapath: Any, version: int, msg_type: int, msg_len: int, xid: int, buf: Any) -> Any:
        # msg_len is os-ken's (raised to 8 when the header says less): the header's own word decides.
        problem = header_length_problem(int.from_bytes(buf[2:4], "big"), len(buf))
        if problem is not None:
            raise MalformedOpenFlow(problem)
        parser = parsers.get(version)
        if parser is None:
            raise unknown_version(version=version)
        try:
            fast = flow_stats.parse(datapath, version, msg_type, msg_len, xid, buf)
            if fast is not None:
                return fast
            msg = parser(datapath, version, msg_type, msg_len, xid, buf)
        except Exception as exc:
            raise MalformedOpenFlow(f"version {version:#x} type {msg_type} length {msg_len}: {exc}") from None
        if msg_type in TIMED_TYPES:
            # When it was read, for the latency measurements (probes come back as packet-ins, echo replies
            # time the control path): the app's handler runs after the event queue, later under load, and
            # that wait would read as link latency. The minimum over a window cannot filter it out when
            # every sample waits.
            msg.edgectl_read_at = time.monotonic()
        if msg_type == OFPT_ECHO_REPLY:
            # Our echo request counts as answered when its reply is read, here on the connection's own
            # thread: os-ken marks it only once its handler thread gets to the event, and behind a busy
            # process that came late enough (3 echoes) to drop healthy switches. (Its handler's mark
            # again is a no-op.)
            acknowledge = getattr(datapath, "acknowledge_echo_reply", None)
            if acknowledge is not None:
                acknowledge(xid)
        return msg

    strict_msg.edgectl_strict = True  # type: ignore[attr-defined]
    ofproto_parser.msg = strict_msg

    class HandshakeLoggingServer(controller_module.StreamServer):  # type: ignore[misc]
        """The TLS handshake runs in a hub thread whose exceptions the native hub swallows: log refusals.

        It also stops: ``stop()`` ends ``serve_forever`` (os-ken's loops forever), with no traceback.
        """

        handle: Any
        on_tls_context: Callable[[ssl.SSLContext], None] | None = None
        """Given the listener's SSLContext (certificate renewal installs a callback on it)."""

        def __init__(self, listen_info: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(listen_info, handle, *args, **kwargs)
            context = kwargs.get("ssl_ctx")
            hand_over = type(self).on_tls_context  # read off the class: a function must not bind to self
            if isinstance(context, ssl.SSLContext) and hand_over is not None:
                hand_over(context)
            self.stopping = False
            if isinstance(handle, ConnectionGuard):
                handle.listeners.append(self)
            wrapped: Any = self.handle

            def logged(sock: Any, address: Any) -> None:
                try:
                    wrapped(sock, address)
                except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError) as exc:  # probes, hang-ups
                    LOG.debug("TLS connection from %s ended in the handshake: %s", address, exc)
                    sock.close()
                except TimeoutError:  # the socket's timeout is the handshake deadline (serve_admitted)
                    LOG.warning(
                        "OpenFlow connection from %s (switch unknown) dropped: TLS handshake timeout",
                        peer_name(address),
                    )
                    sock.close()
                except (ssl.SSLError, OSError) as exc:
                    LOG.warning("TLS handshake with %s refused: %s", address, exc)
                    sock.close()

            def admitted(sock: Any, address: Any) -> None:
                handle.serve_admitted(sock, address, lambda: logged(sock, address))

            self.handle = admitted if isinstance(handle, ConnectionGuard) else logged

        def serve_forever(self) -> None:
            while not self.stopping:
                try:
                    sock, address = self.server.accept()
                except OSError:
                    if self.stopping:
                        return
                    raise
                hub.spawn(self.handle, sock, address)

        def stop(self) -> None:
            self.stopping = True
            with contextlib.suppress(OSError):
                self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept
            self.server.close()

    controller_module.StreamServer = HandshakeLoggingServer
    return guard


def _wait_listening(host: str, port: int, timeout_s: float) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"OpenFlow listener on {host}:{port} did not come up") from None
            time.sleep(0.02)
