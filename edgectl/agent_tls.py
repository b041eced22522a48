"""The node agent API's TLS listener: client certificate OPTIONAL, verified when presented (adapter).

grpcio's server credentials either require a client certificate or never ask for one; the agent API
needs both kinds of callers on one address (Attest comes before the node has a certificate, every other
call presents the node SVID). So TLS ends here, in Python's ``ssl`` (``CERT_OPTIONAL`` against the CA's
trust bundle, ALPN ``h2``, the controller's newest gRPC certificate for every new connection), and the
decrypted HTTP/2 bytes go to the gRPC server on a loopback port. Each forwarded connection is recorded
under its local address before its first byte is forwarded, so the gRPC handler finds the verified
client certificate of its caller from ``context.peer()`` (``peer_certificate``). A process that
connects to the loopback port directly has no record: it is a caller without a certificate (Attest
only, which the join token protects).

Connections without a client certificate cannot crowd out the agents: they have their own small
allowance (``MAX_ANONYMOUS_CONNECTIONS``, ``MAX_ANONYMOUS_PER_SOURCE`` per address), and are closed when
idle or old (``ANONYMOUS_IDLE_TIMEOUT_S``, ``ANONYMOUS_MAX_LIFETIME_S``); a handshake must end within
``HANDSHAKE_TIMEOUT_S``. Session tickets are off, so every connection's certificate is verified anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import tempfile
import threading
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger("edgectl.agent_api")

CertificatePair = Callable[[], tuple[int, str, str]]
"""``() -> (serial, chain PEM, key PEM)`` of the certificate to present now (renewed while it runs)."""

HANDSHAKE_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 1024
"""Connections with a verified client certificate (node agents)."""
MAX_ANONYMOUS_CONNECTIONS = 64
"""Connections without a client certificate: they can only Attest, so a few suffice; kept apart from
``MAX_CONNECTIONS`` so that anonymous clients can never take the slots of certified agents."""
MAX_ANONYMOUS_PER_SOURCE = 8
"""Anonymous connections from one address (all Unix-socket clients count as one source)."""
ANONYMOUS_IDLE_TIMEOUT_S = 15.0
"""An anonymous connection with no byte either way for this long is closed."""
ANONYMOUS_MAX_LIFETIME_S = 60.0
"""An anonymous connection is closed after this long whatever it does (an Attest takes well under a second)."""


def server_context(chain_pem: str, key_pem: str, client_ca_pem: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # TLS 1.3 only (every gRPC client speaks it): TLS 1.2 would resume sessions by id from a server-side
    # cache, which ``ssl`` cannot turn off.
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_OPTIONAL  # verified against the bundle when presented
    context.load_verify_locations(cadata=client_ca_pem)
    context.set_alpn_protocols(["h2"])
    # No session tickets: a resumed session would carry the client certificate of its first handshake,
    # not checked again (expired or revoked meanwhile); every connection does a full handshake.
    context.options |= ssl.OP_NO_TICKET
    context.num_tickets = 0
    # ssl loads a key only from a file: a private one, gone as soon as it is loaded.
    fd, path = tempfile.mkstemp(prefix="edgectl-agent-tls-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(chain_pem if chain_pem.endswith("\n") else chain_pem + "\n")
            handle.write(key_pem)
        context.load_cert_chain(path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    return context


class TlsFront:
    """Listens with TLS on TCP and/or a Unix socket, forwards to ``backend_port`` on 127.0.0.1."""

    def __init__(self, certificate: CertificatePair, client_ca_pem: str, backend_port: int) -> None:
        self._certificate = certificate
        self._client_ca = client_ca_pem
        self._backend_port = backend_port
        self._peers: dict[str, str | None] = {}
        self._addresses: dict[str, str] = {}
        self._lock = threading.Lock()
        self._context_serial, chain, key = certificate()
        self._context = server_context(chain, key, client_ca_pem)
        self._context.sni_callback = self._newest_context
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._thread: threading.Thread | None = None
        self._connections = 0
        self._anonymous = 0
        self._anonymous_by_source: dict[str, int] = {}
        self._unix_path: str | None = None
        self.port = 0

    def peer_certificate(self, grpc_peer: str) -> tuple[bool, str | None]:
        """(known, PEM or None) for the gRPC peer string of a forwarded connection ("ipv4:127.0.0.1:P")."""
        with self._lock:
            if grpc_peer not in self._peers:
                return False, None
            return True, self._peers[grpc_peer]

    def client_address(self, grpc_peer: str) -> str:
        """Where a forwarded connection really comes from (for log lines); ``grpc_peer`` if not ours."""
        with self._lock:
            return self._addresses.get(grpc_peer, grpc_peer)

    def _newest_context(self, ssl_object: Any, _server_name: str | None, _context: ssl.SSLContext) -> None:
        """On every ClientHello: hand the connection the context of the newest certificate."""
        try:
            serial, chain, key = self._certificate()
            if serial != self._context_serial:
                newest = server_context(chain, key, self._client_ca)
                newest.sni_callback = self._newest_context
                self._context, self._context_serial = newest, serial
            ssl_object.context = self._context
        except Exception:  # keep the current certificate rather than fail the handshake
            LOG.exception("agent API: cannot load the renewed certificate")

    def start(self, host: str | None, port: int, unix_path: str | None) -> TlsFront:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            # A client that fails its handshake (plaintext, a foreign CA) is its problem: one debug line.
            loop.set_exception_handler(lambda _loop, context: LOG.debug("agent API TLS: %s", context.get("message")))
            self._loop = loop
            try:
                loop.run_until_complete(self._listen(host, port, unix_path))
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="agent-api-tls", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise OSError(f"agent API: cannot listen: {errors[0]}")
        return self

    async def _listen(self, host: str | None, port: int, unix_path: str | None) -> None:
        if host is not None:
            server = await asyncio.start_server(
                self._serve, host, port, ssl=self._context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S
            )
            self._servers.append(server)
            self.port = int(server.sockets[0].getsockname()[1])
        if unix_path is not None:
            from meshctl.listen import remove_stale_socket

            remove_stale_socket(unix_path)
            self._unix_path = unix_path
            unix = await asyncio.start_unix_server(
                self._serve, unix_path, ssl=self._context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S
            )
            self._servers.append(unix)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        ssl_object = client_writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        certificate = ssl.DER_cert_to_PEM_cert(der) if der else None
        client = client_writer.get_extra_info("peername")
        address = f"{client[0]}:{client[1]}" if isinstance(client, tuple) else f"unix:{client or '(local)'}"
        source = str(client[0]) if isinstance(client, tuple) else "unix"
        if not self._admit(certificate is not None, source):
            LOG.debug("agent API: connection from %s refused: too many connections", address)
            client_writer.close()
            return
        key = ""
        backend_writer: asyncio.StreamWriter | None = None
        try:
            backend_reader, backend_writer = await asyncio.open_connection("127.0.0.1", self._backend_port)
            local_host, local_port = backend_writer.get_extra_info("sockname")[:2]
            key = f"ipv4:{local_host}:{local_port}"
            with self._lock:  # before the first byte reaches the gRPC server
                self._peers[key] = certificate
                self._addresses[key] = address
            activity = _Activity(asyncio.get_running_loop().time())
            pumps = [
                asyncio.create_task(_pump(client_reader, backend_writer, activity)),
                asyncio.create_task(_pump(backend_reader, client_writer, activity)),
            ]
            if certificate is None:  # anonymous: bounded idle time and lifetime
                await _watchdog(pumps, activity, ANONYMOUS_IDLE_TIMEOUT_S, ANONYMOUS_MAX_LIFETIME_S)
            await asyncio.gather(*pumps, return_exceptions=True)
        except Exception as exc:
            LOG.debug("agent API connection ended: %r", exc)
        finally:
            self._release(certificate is not None, source)
            if key:
                with self._lock:
                    self._peers.pop(key, None)
                    self._addresses.pop(key, None)
            for writer in (client_writer, backend_writer):
                if writer is not None:
                    with contextlib.suppress(Exception):
                        writer.close()

    def _admit(self, certified: bool, source: str) -> bool:
        """Count a new connection in, or False when its kind (or its source, when anonymous) is full.
        Runs on the event loop thread only."""
        if certified:
            if self._connections >= MAX_CONNECTIONS:
                return False
            self._connections += 1
            return True
        if self._anonymous >= MAX_ANONYMOUS_CONNECTIONS:
            return False
        if self._anonymous_by_source.get(source, 0) >= MAX_ANONYMOUS_PER_SOURCE:
            return False
        self._anonymous += 1
        self._anonymous_by_source[source] = self._anonymous_by_source.get(source, 0) + 1
        return True

    def _release(self, certified: bool, source: str) -> None:
        if certified:
            self._connections -= 1
            return
        self._anonymous -= 1
        left = self._anonymous_by_source.get(source, 1) - 1
        if left > 0:
            self._anonymous_by_source[source] = left
        else:
            self._anonymous_by_source.pop(source, None)

    def stop(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        async def close() -> None:
            for server in self._servers:
                server.close()
            for server in self._servers:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 2)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), loop).result(5)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        if self._unix_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._unix_path)


class _Activity:
    """When a byte last went either way on one forwarded connection (event loop time)."""

    def __init__(self, now: float) -> None:
        self.started = now
        self.last = now


async def _watchdog(pumps: list[asyncio.Task[None]], activity: _Activity, idle_s: float, lifetime_s: float) -> None:
    """Cancel ``pumps`` when the connection is idle ``idle_s`` or older than ``lifetime_s``; returns when
    they are done."""
    loop = asyncio.get_running_loop()
    while not all(pump.done() for pump in pumps):
        now = loop.time()
        if now - activity.last >= idle_s or now - activity.started >= lifetime_s:
            for pump in pumps:
                pump.cancel()
            return
        wake = min(activity.last + idle_s, activity.started + lifetime_s) - now
        await asyncio.wait(pumps, timeout=max(wake, 0.05))


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, activity: _Activity) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            activity.last = asyncio.get_running_loop().time()
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()
