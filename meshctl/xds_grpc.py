"""The ADS server (adapter): grpc.aio on its own thread and event loop, serving
``StreamAggregatedResources`` (state of the world) and ``DeltaAggregatedResources`` (incremental).

Threads: the model writer only flags "rebuild" (it must never block); a builder thread rebuilds every
node's snapshot from the latest model and sets them in the cache; the cache wakes the streams of the
nodes whose content changed, each on the event loop. One coroutine per stream runs its protocol state
machine (``meshctl.protocol``), so there is no lock on the per-stream state and 1,000 streams cost no
threads. Endpoint changes are pushed at once: no debounce.

    server = start_mesh(lambda: bus.state, bus.subscribe, "127.0.0.1", 18000, "unix:/run/edgectl-xds.sock")
    ...
    server.clients_view()   # for /api/v1/xds/clients
    server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from prometheus_client import CollectorRegistry

from meshctl.cache import SnapshotCache
from meshctl.delta import DeltaStream
from meshctl.metrics import XdsMetrics
from meshctl.protocol import ProtocolError
from meshctl.readiness import SidecarReadiness
from meshctl.snapshot import MeshConfig, MeshSnapshot, TlsIdentity, build_snapshots, service_cluster_name
from meshctl.sotw import SotwStream
from meshctl.xds_types import ENDPOINTS
from netmodel.events import Event
from netmodel.ids import HostId, WorkloadId
from netmodel.logsafe import log_safe
from netmodel.state import FabricState
from netmodel.types import Workload, frozen_map
from netmodel.wire import Undecodable as _Undecodable
from netmodel.wire import safe_parser as _safe_parser
from pki.grpc_tls import ServerTls

LOG = logging.getLogger("edgectl.mesh")

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"

Subscriber = Callable[[Event, FabricState], None]
NodeAuthorizer = Callable[[str, str], str | None]
"""``(node_id, peer certificate PEM) -> None`` (allowed) or why not (``PkiService.authorize_xds``)."""
NodeKnown = Callable[[str], bool]
"""``node_id -> bool``: the model has a sidecar of that id (a workload or a host)."""


XdsTls = ServerTls[NodeAuthorizer]
"""mTLS on the TCP listener (``authorize`` binds each stream's node id to the client certificate). The
Unix socket stays plaintext: who may connect to it is decided by its file permissions."""


def _peer_certificate(context: Any) -> str | None:
    """The client's certificate (PEM) as gRPC verified it, or None (Unix socket, plaintext)."""
    try:
        certificates = context.auth_context().get("x509_pem_cert") or []
    except Exception:  # a context without an auth context (tests, plaintext)
        return None
    if not certificates:
        return None
    first = certificates[0]
    return first.decode() if isinstance(first, bytes) else str(first)


class _Svid(Protocol):
    cert_chain_pem: str
    private_key_pem: str


class IdentitySource(Protocol):
    """What ``MeshServer.use_identities`` reads (``pki.identities.IdentitySnapshot`` has it)."""

    @property
    def identities(self) -> Mapping[str, _Svid]: ...

    @property
    def bundle_pem(self) -> str: ...


_WAKE = object()
_END = object()


# -- snapshots from the model ------------------------------------------------------------------------


class SnapshotPublisher:
    """Rebuilds every node's snapshot from the latest model and sets them in the cache. Level-triggered:
    a burst of model events costs one rebuild from the newest state, started as soon as the last
    rebuild ends (coalescing, not a delay)."""

    def __init__(
        self,
        state: Callable[[], FabricState],
        config: MeshConfig,
        cache: SnapshotCache,
        metrics: XdsMetrics,
        readiness: SidecarReadiness | None = None,
    ) -> None:
        self._state = state
        self._readiness = readiness
        self.built_ready: frozenset[str] | None = None
        """The ready workloads the last build made endpoints of (None: no readiness gate)."""
        self._config = config
        self._cache = cache
        self._metrics = metrics
        self._wanted = threading.Condition()
        self._dirty = False
        self._stopping = False
        self._last_inputs: tuple[Any, ...] | None = None
        self._thread: threading.Thread | None = None
        self.last_generation: int | None = None

    @property
    def config(self) -> MeshConfig:
        return self._config

    def set_config(self, config: MeshConfig) -> None:
        self._config = config
        self.request()

    def request(self) -> None:
        with self._wanted:
            self._dirty = True
            self._wanted.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mesh-snapshots", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wanted:
            self._stopping = True
            self._wanted.notify()
        if self._thread is not None:
            self._thread.join(5)

    def build_now(self) -> None:
        state, config = self._state(), self._config
        ready = self._readiness.ready_in(state) if self._readiness is not None else None
        # Only these parts of the model reach xDS: a latency measurement must not cost a rebuild.
        model = (state.sites, state.hosts, state.nodes, state.services, state.workloads, state.unhealthy)
        inputs = (*model, config, ready)
        if self._last_inputs is not None and all(
            a is b or (a == b and isinstance(a, frozenset)) for a, b in zip(inputs, self._last_inputs, strict=True)
        ):
            self.last_generation = state.generation  # the snapshots already are this generation's
            return
        started = time.perf_counter()
        snapshots = build_snapshots(state, config, ready)
        result = self._cache.set_snapshots(snapshots)
        self._metrics.build_seconds.observe(time.perf_counter() - started)
        self._metrics.builds.labels("rejected" if result.rejected else "ok").inc()
        for node, reason in sorted(result.rejected.items()):
            LOG.error("snapshot for %s not published (it keeps its last good one): %s", node, reason)
        self._last_inputs = inputs
        self.built_ready = ready
        self.last_generation = state.generation
        LOG.debug("generation %d: %d nodes, %d changed", state.generation, len(snapshots), len(result.changed))

    def _run(self) -> None:
        while True:
            with self._wanted:
                self._wanted.wait_for(lambda: self._dirty or self._stopping)
                if self._stopping:
                    return
                self._dirty = False
            try:
                self.build_now()
            except Exception:  # a bug in one build must not stop later ones
                LOG.exception("building xDS snapshots failed")
                self._metrics.builds.labels("failed").inc()


# -- the gRPC servicer -------------------------------------------------------------------------------


class _AdsServicer:
    def __init__(
        self,
        cache: SnapshotCache,
        metrics: XdsMetrics,
        authorize: NodeAuthorizer | None = None,
        known: NodeKnown | None = None,
    ) -> None:
        self._cache = cache
        self._metrics = metrics
        self._authorize = authorize
        self._known = known

    def _stand_in(self, mode: str) -> Callable[[str], MeshSnapshot | None] | None:
        """For one stream: what to serve a node the cache has no snapshot of. A node of the model
        (placed, its first snapshot still being built) gets nothing yet, its snapshot follows in
        milliseconds; a node the model does not know gets an empty configuration at once, and one log
        line, rather than a silent hold that makes its Envoy wait out its initial-fetch timeout. It
        gets its real configuration as soon as the model has it (the stream's watch wakes it)."""
        known = self._known
        if known is None:
            return None
        told = False

        def stand_in(node: str) -> MeshSnapshot | None:
            nonlocal told
            if known(node):
                return None
            if not told:
                told = True
                LOG.warning(
                    "xDS %s stream of node %s: no workload or host of the model has that id; serving it an "
                    "empty configuration",
                    mode,
                    log_safe(node),
                )
            return _empty_snapshot(node)

        return stand_in

    def _refusal(self, request: Any, context: grpc.aio.ServicerContext) -> str | None:
        """Why this stream may not be served for the node its first request names (None: it may)."""
        if self._authorize is None:
            return None
        certificate = _peer_certificate(context)
        if certificate is None:
            return None  # the Unix socket: its file permissions decide who connects
        node = getattr(getattr(request, "node", None), "id", "")
        return self._authorize(str(node), certificate)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self.stream_aggregated_resources,
                    request_deserializer=_safe_parser(discovery_pb2.DiscoveryRequest),
                    response_serializer=discovery_pb2.DiscoveryResponse.SerializeToString,
                ),
                "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self.delta_aggregated_resources,
                    request_deserializer=_safe_parser(discovery_pb2.DeltaDiscoveryRequest),
                    response_serializer=discovery_pb2.DeltaDiscoveryResponse.SerializeToString,
                ),
            },
        )

    async def stream_aggregated_resources(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> None:
        await self._serve(SotwStream(self._cache, self._metrics, stand_in=self._stand_in("sotw")), requests, context)

    async def delta_aggregated_resources(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        stream = DeltaStream(self._cache, self._metrics, stand_in=self._stand_in("delta"))
        await self._serve(stream, requests, context)

    async def _serve(
        self, stream: SotwStream | DeltaStream, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> None:
        loop = asyncio.get_running_loop()
        # Bounded: a client that floods requests is slowed by gRPC flow control, not buffered here.
        inbox: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)
        woken = False

        def wake() -> None:  # on the loop: at most one wake-up queued per stream
            nonlocal woken
            if woken:
                return
            try:
                inbox.put_nowait(_WAKE)
                woken = True
            except asyncio.QueueFull:
                pass  # every queued request runs a full pass over the newest snapshot anyway

        def wake_from_any_thread(_node: str) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closing: nothing left to wake
                loop.call_soon_threadsafe(wake)

        async def read() -> None:
            try:
                async for request in requests:
                    await inbox.put(request)
            except Exception as exc:  # the client went away mid-read
                LOG.debug("stream read ended: %s", log_safe(repr(exc)))
            await inbox.put(_END)

        reader = asyncio.create_task(read())
        cancel_watch: Callable[[], None] | None = None
        self._metrics.streams.labels(stream.mode).inc()
        try:
            while True:
                item = await inbox.get()
                if item is _END:
                    return
                if item is _WAKE:
                    woken = False
                    responses = stream.on_change()
                elif isinstance(item, _Undecodable):
                    raise ProtocolError(f"request is not a valid {stream.mode} discovery request: {item.error}")
                else:
                    if stream.node_id is None:
                        refusal = self._refusal(item, context)
                        if refusal is not None:
                            peer = log_safe(context.peer())
                            LOG.warning("refusing %s stream from %s: %s", stream.mode, peer, log_safe(refusal))
                            self._metrics.stream_errors.labels("PERMISSION_DENIED").inc()
                            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
                    responses = stream.on_request(item)
                    if cancel_watch is None and stream.node_id is not None:
                        cancel_watch = self._cache.watch(stream.node_id, wake_from_any_thread)
                        wake()  # a change between the first answer and the watch must not be lost
                for response in responses:
                    await context.write(response)
        except ProtocolError as exc:
            who = log_safe(stream.node_id or context.peer())
            LOG.info("ending %s stream of %s: %s", stream.mode, who, log_safe(exc, limit=1024))
            self._metrics.stream_errors.labels("INVALID_ARGUMENT").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            if context.cancelled() or context.done():
                return  # the client went away while we wrote: nothing is wrong here
            LOG.exception("%s stream of %s failed", stream.mode, log_safe(stream.node_id))
            self._metrics.stream_errors.labels("INTERNAL").inc()
            await context.abort(grpc.StatusCode.INTERNAL, "internal error in the xDS server (logged)")
        finally:
            reader.cancel()
            if cancel_watch is not None:
                cancel_watch()
            stream.close()
            self._metrics.streams.labels(stream.mode).dec()


# -- the server --------------------------------------------------------------------------------------


class MeshServer:
    """The xDS control plane of one controller: snapshot publisher, cache, ADS server."""

    def __init__(
        self,
        state: Callable[[], FabricState],
        host: str = "127.0.0.1",
        port: int = 18000,
        unix_path: str | None = None,
        registry: CollectorRegistry | None = None,
        config: MeshConfig | None = None,
        grace_s: float = 0.5,
        tls: XdsTls | None = None,
        wait_for_sidecars: bool = False,
    ) -> None:
        self.cache = SnapshotCache()
        self._tls = tls
        self._state = state
        self.metrics = XdsMetrics(registry)
        self.readiness: SidecarReadiness | None = None
        if wait_for_sidecars:
            self.readiness = SidecarReadiness(self.cache, on_change=lambda: self.publisher.request())
            self.readiness.seed(state().workloads)  # serving before a restart: see meshctl.readiness
            self.cache.add_sync_listener(self.readiness.on_synced)
        self.publisher = SnapshotPublisher(state, config or MeshConfig(), self.cache, self.metrics, self.readiness)
        self._host = host
        self._port = port
        self._unix_path = _strip_unix_scheme(unix_path) if unix_path else None
        self._grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._stop_requested: asyncio.Event | None = None
        self._bound_port = 0
        self._running = False

    @property
    def address(self) -> tuple[str, int]:
        return self._host, self._bound_port

    @property
    def unix_path(self) -> str | None:
        return self._unix_path

    def start(self) -> MeshServer:
        """Build the first snapshots, then listen. Raises OSError if an address cannot be bound."""
        self.publisher.build_now()  # serve a complete cache from the first request on
        self._thread = threading.Thread(target=self._run_loop, name="xds-server", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._start_error is not None:
            self._thread.join(5)
            raise OSError(f"xDS server cannot listen: {self._start_error}") from self._start_error
        self.publisher.start()
        self._running = True
        mtls = " (mTLS)" if self._tls else ""
        where = f"{self._host}:{self._bound_port}{mtls}" + (f" and unix:{self._unix_path}" if self._unix_path else "")
        LOG.info("xDS (ADS, SotW and delta) on %s", where)
        return self

    def on_model_change(self, _event: Event, _state: FabricState) -> None:
        """Bus subscriber: runs on the model writer, so it only flags a rebuild."""
        if self._running:
            self.publisher.request()

    def update_config(self, config: MeshConfig) -> None:
        """Swap the mesh configuration (e.g. turn mTLS on, new certificates) and rebuild."""
        self.publisher.set_config(config)

    def clients_view(self) -> dict[str, Any]:
        view = self.cache.clients_view()
        if self.readiness is not None:
            view["not_ready"] = sorted(self.not_ready())  # placed, but no serving sidecar yet
        return view

    def knows(self, node: str) -> bool:
        """The model has a sidecar of id ``node``: a workload's or a host's."""
        state = self._state()
        return WorkloadId(node) in state.workloads or HostId(node) in state.hosts

    def behind(self, generation: int, nodes: Iterable[str] | None = None) -> set[str]:
        """The sidecars that do not run yet what model ``generation`` asks of them. ``nodes``: those to
        ask about, else every connected one that has a snapshot. Never waited for: a sidecar that is
        not connected, and one we serve no snapshot (a node id the model does not know, or a sidecar
        that stayed connected after its workload was removed): nothing it runs is the model's."""
        if nodes is None:
            wanted = [n for n in self.cache.connected_nodes() if self.cache.snapshot(n) is not None]
        else:
            wanted = list(nodes)
        built = self.publisher.last_generation is not None and self.publisher.last_generation >= generation
        if not built:
            return set(wanted)
        return {n for n in wanted if not self.cache.is_synced(n)}

    def converged(self, generation: int) -> bool:
        """Placement's convergence probe when it names no instances: every connected sidecar we serve
        a snapshot ACKed generation ``generation`` (or a later one). A sidecar stuck on a rejected
        config holds this back until the caller's timeout: it does not run what the model asks. A
        migration asks ``converged_for`` instead: only the sidecars it concerns."""
        return not self.behind(generation)

    def affected(self, workloads: Iterable[str]) -> set[str]:
        """The connected sidecars a move of ``workloads`` concerns: the callers of their services (the
        nodes whose snapshot holds those services' endpoints) and, with the readiness gate, the
        instances' own sidecars."""
        state = self._state()
        services = {w.service for wid in workloads if (w := state.workloads.get(WorkloadId(wid))) is not None}
        nodes = set(workloads) if self.readiness is not None else set()
        for service in services:
            nodes |= self.cache.nodes_with(ENDPOINTS, service_cluster_name(service))
        connected = set(self.cache.connected_nodes())
        return {n for n in nodes if n in connected and self.cache.snapshot(n) is not None}

    def converged_for(self, generation: int, workloads: frozenset[str]) -> bool:
        """The sidecars a migration of ``workloads`` (the instances it placed) concerns ACKed
        generation ``generation`` (``affected``), and with the readiness gate also: each of
        ``workloads`` is on an up node and an endpoint in what those sidecars ACKed. Only those: an
        unrelated sidecar that never catches up (stuck on a rejected config, a node id the model does
        not know, an instance whose sidecar never serves) must not hold every migration back."""
        # Which build made them endpoints first, then who has ACKed: a build in between resets the
        # callers' sync (meshctl.cache), so this order can only err towards "not yet".
        built = self.publisher.built_ready
        if self.behind(generation, self.affected(workloads)):
            return False
        if self.readiness is None:
            return True
        state = self._state()
        return all(
            (workload := state.workloads.get(WorkloadId(w))) is not None
            and _can_serve(state, workload)
            and built is not None
            and w in built
            for w in workloads
        )

    def not_ready(self) -> set[str]:
        """Placed workloads (on an up node) that are not endpoints yet because their sidecar does not
        serve (always empty without the readiness gate)."""
        if self.readiness is None:
            return set()
        state = self._state()
        built = self.publisher.built_ready or frozenset()
        return {w.id for w in state.workloads.values() if _can_serve(state, w) and w.id not in built}

    def wait_synced(self, generation: int, timeout: float, nodes: Iterable[str] | None = None) -> set[str]:
        """Wait until ``behind(generation, nodes)`` is empty; returns who is still behind at the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            behind = self.behind(generation, nodes)
            if not behind or time.monotonic() >= deadline:
                return behind
            time.sleep(0.002)

    def use_identities(self, snapshot: IdentitySource, mtls: bool | None = None, crl_pem: str = "") -> None:
        """Serve the PKI's certificates by SDS (a ``pki.identities.IdentitySnapshot``, or anything with
        ``identities`` {node id: svid with cert_chain_pem, private_key_pem} and ``bundle_pem``): each
        node its own. ``mtls`` switches mutual TLS on or off (None: as configured). ``crl_pem``: CRLs
        appended to the trust bundle (Envoy loads CRLs found in its trusted CA and then checks the whole
        chain: give one for every CA, ``PkiService.trust_crls_pem()``), so a revoked certificate is refused
        by every listener with the push that carries it. A PKI listener:
        ``pki.subscribe(lambda s: mesh.use_identities(s, mtls=True, crl_pem=pki.trust_crls_pem()))``."""
        identities = {
            node: TlsIdentity(svid.cert_chain_pem, svid.private_key_pem)
            for node, svid in snapshot.identities.items()
            if svid.private_key_pem  # issued from a CSR: the key stayed with the sidecar, not ours to serve
        }
        config = self.publisher.config
        self.update_config(
            replace(
                config,
                identities=frozen_map(identities),
                trust_bundle_pem=snapshot.bundle_pem + crl_pem,
                mtls=config.mtls if mtls is None else mtls,
            )
        )

    def stop(self) -> None:
        self._running = False
        self.publisher.stop()
        loop, stop_requested = self._loop, self._stop_requested
        if loop is not None and stop_requested is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop_requested.set)
        if self._thread is not None:
            self._thread.join(self._grace_s + 5)
        self.metrics.unregister()
        if self._unix_path:
            with contextlib.suppress(OSError):
                os.unlink(self._unix_path)

    # -- the event loop thread ----------------------------------------------------------------------

    def _run_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start() (or logged if it happens later)
            if not self._ready.is_set():
                self._start_error = exc
                self._ready.set()
            else:
                LOG.exception("xDS server loop ended")
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stop_requested = asyncio.Event()
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),  # a second server on our port must fail, not share it
                ("grpc.keepalive_time_ms", 30_000),  # find sidecars that vanished without a FIN
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ]
        )
        authorize = self._tls.authorize if self._tls else None
        servicer = _AdsServicer(self.cache, self.metrics, authorize, self.knows)
        server.add_generic_rpc_handlers([servicer.handler()])
        credentials = self._tls.credentials() if self._tls else None
        self._bound_port = _bind(server, f"{_host_for_grpc(self._host)}:{self._port}", credentials)
        if self._unix_path:
            _remove_stale_socket(self._unix_path)
            _bind(server, f"unix:{self._unix_path}")
        await server.start()
        self._ready.set()
        await self._stop_requested.wait()
        await server.stop(self._grace_s)


def _empty_snapshot(node: str) -> MeshSnapshot:
    return MeshSnapshot(node, 0, frozen_map({}), frozen_map({}))


def _can_serve(state: FabricState, workload: Workload) -> bool:
    """Placed on a node that is up and has an address: it can be an endpoint (meshctl.snapshot)."""
    node = state.nodes.get(workload.node) if workload.node is not None else None
    return node is not None and node.up and bool(node.ip)


def _bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None = None) -> int:
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot bind {address}: {exc}") from exc
    if port == 0 and not address.startswith("unix:"):
        raise OSError(f"cannot bind {address}")
    return int(port)


def _host_for_grpc(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _strip_unix_scheme(path: str) -> str:
    return path[len("unix:") :] if path.startswith("unix:") else path


def _remove_stale_socket(path: str) -> None:
    """A socket file left by a killed controller would make the bind fail: remove it, but never a
    file that is not a socket or a socket someone still listens on."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody answers: stale
            return
    raise OSError(f"another server listens on {path}")


def start_mesh(
    state: Callable[[], FabricState],
    subscribe: Callable[[Subscriber], None],
    host: str = "127.0.0.1",
    port: int = 18000,
    unix_path: str | None = None,
    registry: CollectorRegistry | None = None,
    config: MeshConfig | None = None,
    tls: XdsTls | None = None,
    wait_for_sidecars: bool = False,
) -> MeshServer:
    """Start the xDS control plane of a controller: ``state`` returns the latest model, ``subscribe``
    registers a bus subscriber (called with every applied event); ``tls``: mTLS on the TCP listener;
    ``wait_for_sidecars``: a workload is an endpoint only once its sidecar serves (``meshctl.readiness``).
    Raises OSError when it cannot listen."""
    server = MeshServer(state, host, port, unix_path, registry, config, tls=tls, wait_for_sidecars=wait_for_sidecars)
    server.start()
    subscribe(server.on_model_change)
    # A change between the first build and the subscription must not be lost.
    server.publisher.request()
    return server
