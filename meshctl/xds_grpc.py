"""The xDS control plane of one controller (composition): the snapshot publisher
(``meshctl.publisher``), the cache (``meshctl.cache``), the optional readiness gate
(``meshctl.readiness``) and the ADS servicer (``meshctl.servicer``), served by grpc.aio on its own
thread and event loop (listeners: ``meshctl.listen``); and the questions the rest of edgectl asks of
it (who is behind, has a migration converged, which workloads are not ready).

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
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

import grpc
from prometheus_client import CollectorRegistry

from meshctl.access_log import AccessLogServicer, DenialRecorder
from meshctl.cache import SnapshotCache
from meshctl.listen import bind, host_for_grpc, remove_stale_socket, strip_unix_scheme
from meshctl.metrics import XdsMetrics
from meshctl.publisher import SnapshotPublisher
from meshctl.readiness import SidecarReadiness
from meshctl.rechecks import EVERY_STREAM, identity_changes, model_rechecks, placement_of, revocation_rechecks
from meshctl.servicer import (
    SERVICE,
    AdsServicer,
    NodeAuthorizer,
    NodeKnown,
    OpenStreams,
    XdsCache,
    XdsCallbacks,
)
from meshctl.serving import can_serve
from meshctl.snapshot import MeshConfig, TlsIdentity
from meshctl.xds_types import ENDPOINTS, service_cluster_name
from netmodel.bus import ModelSubscriber
from netmodel.events import Event
from netmodel.ids import HostId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import frozen_map
from netmodel.wire import Undecodable as _Undecodable
from netmodel.wire import safe_parser as _safe_parser
from pki.grpc_tls import ServerTls

LOG = logging.getLogger("edgectl.mesh")

_AdsServicer = AdsServicer  # its earlier name (the unit tests use it)

__all__ = [
    "SERVICE",
    "AdsServicer",
    "IdentitySource",
    "MeshServer",
    "NodeAuthorizer",
    "NodeKnown",
    "SnapshotPublisher",
    "XdsCache",
    "XdsCallbacks",
    "XdsTls",
    "_AdsServicer",
    "_Undecodable",
    "_safe_parser",
    "start_mesh",
]

XdsTls = ServerTls[NodeAuthorizer]
"""mTLS on every listener, TCP and the Unix socket alike (``authorize`` binds each stream's node id to the
client certificate): with the PKI on there is no plaintext way in, not even a local one."""


class _Svid(Protocol):
    # Read-only (properties): pki.policy.Svid is a frozen dataclass.
    @property
    def cert_chain_pem(self) -> str: ...

    @property
    def private_key_pem(self) -> str: ...


class IdentitySource(Protocol):
    """What ``MeshServer.use_identities`` reads (``pki.identities.IdentitySnapshot`` has it)."""

    @property
    def identities(self) -> Mapping[str, _Svid]: ...

    @property
    def bundle_pem(self) -> str: ...


def _tls_identity(svid: _Svid) -> TlsIdentity | None:
    """What SDS serves of an SVID: none for one issued from a CSR (the key stayed with the sidecar)."""
    return TlsIdentity(svid.cert_chain_pem, svid.private_key_pem) if svid.private_key_pem else None


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
        denials: DenialRecorder | None = None,
    ) -> None:
        self.cache = SnapshotCache()
        self.denials = denials
        """Where the sidecars' RBAC denials go (their access logs, ``meshctl.access_log``)."""
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
        self._unix_path = strip_unix_scheme(unix_path) if unix_path else None
        self._grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._stop_requested: asyncio.Event | None = None
        self._bound_port = 0
        self._running = False
        self._open_streams: tuple[OpenStreams, ...] = ()
        self._rechecked_for: tuple[Any, ...] | None = None
        self._served_svids: dict[str, Any] = {}
        """Node -> the SVID ``use_identities`` was last given (``_served_tls``: what SDS serves of each),
        from the PKI's snapshot version ``_served_version``: what changed is rechecked, and an unchanged
        identity stays the same object (the snapshot builder finds changes by identity)."""
        self._served_tls: dict[str, TlsIdentity] = {}
        self._served_version: int | None = None
        self._served_tls_map: Mapping[str, TlsIdentity] | None = None
        """The identities map the last ``use_identities`` set in the config."""
        self._served_revocations: object = None

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

    def on_model_change(self, event: Event, state: FabricState) -> None:
        """Bus subscriber: runs on the model writer, so it only notes which workloads the event touched,
        flags a rebuild, and asks the open streams of those workloads to authorize themselves again (on
        their event loop; ``meshctl.rechecks``): a node SVID's stream for a workload removed from (or moved
        off) its node ends. A stream whose identity the model dropped ends when the PKI drops it
        (``use_identities``). A stream also re-authorizes before it serves a new snapshot, so the order of
        the two is moot."""
        self.publisher.note(event, state)
        if self._running:
            self.publisher.request()
            # Who may be served depends on the workloads (placement) and hosts only: a link-load or
            # health event costs the streams nothing, a placement its workloads' streams only.
            before, self._rechecked_for = self._rechecked_for, placement_of(state)
            nodes = model_rechecks(event, before, self._rechecked_for)
            if nodes is EVERY_STREAM or nodes:
                self.recheck_streams(nodes)

    def recheck_streams(self, nodes: Iterable[str] | None = None) -> None:
        """The open xDS and access log streams of ``nodes`` (None: every one) check again that their peer
        may still be served (any thread)."""
        nodes = None if nodes is None else tuple(nodes)
        for streams in self._open_streams:
            if nodes is None:
                streams.recheck_all()
            else:
                streams.recheck(nodes)

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

    def service_of(self, node: str) -> str | None:
        """The service of the workload whose sidecar has node id ``node`` (None: not a workload's)."""
        workload = self._state().workloads.get(WorkloadId(node))
        return str(workload.service) if workload is not None else None

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
            and can_serve(state, workload)
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
        return {w.id for w in state.workloads.values() if can_serve(state, w) and w.id not in built}

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
        # The PKI's snapshot says which subjects changed since the one it was made from: with that one
        # served last, only those are looked at (a placement's new identity, not 10,000).
        changed_from = getattr(snapshot, "changed_from", None)
        only = changed_from[1] if changed_from is not None and changed_from[0] == self._served_version else None
        served_before, identities = self._served_svids, snapshot.identities
        svids, tls, changed = identity_changes(served_before, self._served_tls, identities, _tls_identity, only)
        self._served_svids, self._served_tls = svids, tls
        self._served_version = getattr(snapshot, "version", None)
        config = self.publisher.config
        # What the config holds differs from what it is given by ``changed`` only if it holds what this
        # method handed over last (no other config replaced it since).
        ours = config.identities is self._served_tls_map
        new_config = replace(
            config,
            identities=config.identities if ours and not changed else frozen_map(tls),
            trust_bundle_pem=snapshot.bundle_pem + crl_pem,
            mtls=config.mtls if mtls is None else mtls,
        )
        self.publisher.set_config(new_config, (config.identities, changed) if ours else None)
        self._served_tls_map = new_config.identities
        # An identity dropped or replaced: its streams are checked again (and end if no longer
        # allowed); a new revocation, the streams that could show what it revokes (meshctl.rechecks).
        revocations = getattr(snapshot, "revocations", None)
        if revocations is None or revocations is not self._served_revocations:
            nodes = revocation_rechecks(self._served_revocations, revocations, served_before, svids, changed)
            self._served_revocations = revocations
            self.recheck_streams(nodes)
        elif changed:
            self.recheck_streams(changed)

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
        servicer = AdsServicer(self.cache, self.metrics, authorize, self.knows)
        access_log = AccessLogServicer(self.denials, self.service_of, self.metrics, authorize)
        self._open_streams = (servicer.open_streams, access_log.open_streams)
        server.add_generic_rpc_handlers([servicer.handler(), access_log.handler()])
        credentials = self._tls.credentials() if self._tls else None
        self._bound_port = bind(server, f"{host_for_grpc(self._host)}:{self._port}", credentials)
        if self._unix_path:
            remove_stale_socket(self._unix_path)
            # Its own credentials object: grpc's certificate fetcher serves one listener.
            bind(server, f"unix:{self._unix_path}", self._tls.credentials() if self._tls else None)
        await server.start()
        self._ready.set()
        await self._stop_requested.wait()
        await server.stop(self._grace_s)


def start_mesh(
    state: Callable[[], FabricState],
    subscribe: Callable[[ModelSubscriber], None],
    host: str = "127.0.0.1",
    port: int = 18000,
    unix_path: str | None = None,
    registry: CollectorRegistry | None = None,
    config: MeshConfig | None = None,
    tls: XdsTls | None = None,
    wait_for_sidecars: bool = False,
    denials: DenialRecorder | None = None,
    identities: IdentitySource | None = None,
    crl_pem: str = "",
) -> MeshServer:
    """Start the xDS control plane of a controller: ``state`` returns the latest model, ``subscribe``
    registers a bus subscriber (called with every applied event); ``tls``: mTLS on every listener (TCP and Unix);
    ``wait_for_sidecars``: a workload is an endpoint only once its sidecar serves (``meshctl.readiness``);
    ``denials``: where the sidecars' RBAC denials are recorded; ``identities`` (and ``crl_pem``): the PKI's,
    so the mesh serves mTLS from its first snapshot on (``use_identities`` before it listens). Raises
    OSError when it cannot listen."""
    server = MeshServer(
        state,
        host,
        port,
        unix_path,
        registry,
        config,
        tls=tls,
        wait_for_sidecars=wait_for_sidecars,
        denials=denials,
    )
    if identities is not None:
        # Before the first build: started in plaintext and then given the PKI, it built every snapshot
        # twice and served a sidecar that came in between plaintext inbound listeners.
        server.use_identities(identities, mtls=True, crl_pem=crl_pem)
    server.start()
    subscribe(server)
    # A change between the first build and the subscription must not be lost.
    server.publisher.request()
    return server
