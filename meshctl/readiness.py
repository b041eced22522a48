"""Which workloads' sidecars serve, so callers are sent only to instances that can answer. No grpc.

With sidecars, a placed workload is not yet a place to send requests: its Envoy may not run, or run
with its inbound listener still warming for a certificate. So a workload becomes an endpoint only once
its own sidecar has applied a snapshot holding its inbound listener and every secret that listener
needs (the readiness gate of a Kubernetes endpoint, with the sidecar's ACKs as the probe). A migration
then waits for it (``MeshServer.converged_for``) before the old instance is withdrawn: make-before-break.
The app behind the sidecar is not probed here. A node agent either starts the sidecar once its app
listens (the testbed's, ``mininet_topos.mesh``, does), so a serving sidecar means a serving instance,
or starts both side by side and says so first (``WorkloadStarting`` in the model): such an instance is
kept out of the ready set until the agent's healthy report says its app listens too.

Readiness is sticky: a sidecar that loses its xDS stream keeps serving its last configuration, so only
removing the workload from the model ends it. Workloads in the model when the controller starts count
as ready: they were serving before the restart, and dropping them until they reconnect would be an
outage made by the controller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from meshctl.cache import SnapshotCache
from meshctl.snapshot import MeshSnapshot, inbound_listener_name
from meshctl.xds_types import LISTENER, SECRET
from netmodel.state import FabricState


class SidecarReadiness:
    def __init__(self, cache: SnapshotCache, on_change: Callable[[], None] = lambda: None) -> None:
        self._cache = cache
        self._on_change = on_change
        self._lock = threading.Lock()
        self._ready: frozenset[str] = frozenset()
        self._listeners: list[Callable[[str], None]] = []
        self._checked_against: object = None
        """The workloads ``ready_in`` last pruned the ready set against."""
        self._reported: frozenset[str] = frozenset()
        """Workloads whose sidecar this server saw serve (told to the listeners once), seeded ones included."""
        self._gated: tuple[frozenset[str], object, frozenset[str]] | None = None
        """The last (ready set, model's starting map, ready set without the starting ones)."""

    def add_ready_listener(self, listener: Callable[[str], None]) -> None:
        """Called with each workload this server saw become ready (replicated mode shares them: a sidecar
        ACKs only the replica it streams from). Runs on the xDS event loop: it must only hand off."""
        self._listeners.append(listener)

    def mark_ready(self, workloads: Iterable[str]) -> None:
        """Workloads another server saw serve (their sidecar streams from another replica)."""
        with self._lock:
            new = frozenset(workloads) - self._ready
            self._ready = self._ready | new
            self._checked_against = None  # (ids this model may not have: pruned at the next look)
        if new:
            self._on_change()

    def seed(self, workloads: Iterable[str]) -> None:
        """Count these as ready (the workloads a restarted controller finds in its model)."""
        with self._lock:
            self._ready = self._ready | frozenset(workloads)
            self._checked_against = None

    def ready_in(self, state: FabricState) -> frozenset[str]:
        """The ready workloads that ``state`` still has (and forget the others), without those whose
        app is still starting beside their serving sidecar (``state.starting``). The same object as
        long as nothing changed, so a snapshot build that compares it by identity costs nothing."""
        with self._lock:
            if state.workloads is not self._checked_against:
                gone = [w for w in self._ready if w not in state.workloads]
                if gone:
                    self._ready = self._ready.difference(gone)
                    self._reported = self._reported.difference(gone)
                self._checked_against = state.workloads
            ready, starting = self._ready, state.starting
            if not starting:
                return ready
            gated = self._gated
            if gated is not None and gated[0] is ready and gated[1] is starting:
                return gated[2]
            # A sidecar serves before its app listens only while starting: those are not ready yet.
            serving = ready.difference(starting) if any(w in ready for w in starting) else ready
            self._gated = (ready, starting, serving)
            return serving

    def is_ready(self, workload: str) -> bool:
        """``workload``'s sidecar serves (whether its app does too: ``ready_in``)."""
        return workload in self._ready

    def on_synced(self, node: str, snapshot: MeshSnapshot) -> None:
        """Cache listener: ``node`` has applied ``snapshot`` in full (not whatever the cache holds by now).
        Runs on the xDS event loop: cheap."""
        if node in self._reported:
            return
        inbound = snapshot.of_type(LISTENER).get(inbound_listener_name(node))
        if inbound is None:
            return  # not a placed workload's sidecar (a host's client sidecar, or not placed yet)
        secrets = [name for kind, name in inbound.refs if kind == SECRET]
        if secrets:
            held = snapshot.of_type(SECRET)
            # Its listener warms until the certificate is there and applied.
            if not all(name in held for name in secrets) or not self._cache.runs_current(node, SECRET):
                return
        with self._lock:
            new = node not in self._ready
            self._ready = self._ready | {node}
            self._reported = self._reported | {node}
        if new:
            self._on_change()
        # Also for a workload counted ready at start: the other replicas, started later, may not count it.
        for listener in self._listeners:
            listener(node)
