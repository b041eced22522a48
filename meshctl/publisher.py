"""The snapshot publisher (adapter: a thread): model -> every node's snapshot -> the cache.

The model writer only flags "rebuild" (it must never block); this thread builds the snapshots the
latest model changes (``meshctl.mesh_builder``: every node's the first time, then only those a change
touches) and sets them in the cache, which wakes the streams of the nodes whose content changed.
Endpoint changes are pushed at once: no debounce. Only while builds follow each other closely does it
pause after each as long as it took, so that changes that keep coming are built in batches.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from meshctl.cache import SnapshotCache
from meshctl.mesh_builder import IdentityNotes, MeshBuilder
from meshctl.metrics import XdsMetrics
from meshctl.readiness import SidecarReadiness
from meshctl.snapshot import MeshConfig
from netmodel.changes import WorkloadChanges
from netmodel.events import Event
from netmodel.state import FabricState
from netmodel.types import PolicyDefault

LOG = logging.getLogger("edgectl.mesh")

MAX_PAUSE_S = 0.05
"""The longest pause between two builds under sustained changes (``pause_after_build``)."""
PAUSE_FACTOR = 2
"""Under sustained changes, the pause after a build in multiples of what the build took."""

NO_PKI_WARNING = "authorization policy is enforced by the switches only: sidecar RBAC needs --pki-dir"


class SnapshotPublisher:
    """Builds the snapshots the latest model changes and sets them in the cache. Level-triggered:
    a burst of model events costs one rebuild from the newest state (coalescing, not a delay); under
    sustained changes, the next one no sooner after the last than it took (``pause_after_build``)."""

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
        self.building_since: float | None = None
        """While a build runs on the publisher's thread: when it began (monotonic)."""
        self.built_ready: frozenset[str] | None = None
        """The ready workloads the last build made endpoints of (None: no readiness gate)."""
        self._config = config
        self._cache = cache
        self._metrics = metrics
        metrics.build_running.set_function(self.build_running_s)
        self._wanted = threading.Condition()
        self._dirty = False
        self._stopping = False
        self._builder = MeshBuilder()
        self._hint_lock = threading.Lock()
        self._hint: WorkloadChanges | None = None
        """The workloads the events since the last build's state touched (``note``)."""
        self._identity_notes = IdentityNotes(config.identities, config.identities)
        """The nodes whose identity the configs set since the last build changed (``set_config``)."""
        self._thread: threading.Thread | None = None
        self.last_generation: int | None = None
        self._warned_no_pki = False

    @property
    def config(self) -> MeshConfig:
        return self._config

    def set_config(
        self, config: MeshConfig, identities_changed: tuple[Mapping[str, Any], Iterable[str]] | None = None
    ) -> None:
        """The new mesh config. ``identities_changed``: (the identities map it was made from, the nodes
        whose identity it changed), so the next build need not compare every node's (10,000 at scale)."""
        with self._hint_lock:
            notes = self._identity_notes
            if config.identities is not notes.last:
                if identities_changed is None or identities_changed[0] is not notes.last:
                    notes = replace(notes, exact=False)
                else:
                    notes = replace(notes, nodes=notes.nodes | frozenset(identities_changed[1]))
                self._identity_notes = replace(notes, last=config.identities)
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

    def settled(self) -> bool:
        """No build is under way or asked for: the cache holds what the latest model and config make."""
        with self._wanted:
            return not self._dirty and self.building_since is None

    def note(self, event: Event, state: FabricState) -> None:
        """Bus subscriber's part (on the model writer, for every event): which workloads ``event`` touched,
        so the next build need not compare every workload to find them."""
        with self._hint_lock:
            if self._hint is not None:
                self._hint.note(event, state)

    def build_running_s(self) -> float:
        """Seconds the build under way has run (0 when none is)."""
        since = self.building_since  # read once: the publisher thread clears it
        return 0.0 if since is None else time.monotonic() - since

    def build_now(self) -> None:
        with self._hint_lock:  # the state read and the next hint's start are one step for note()
            hint = self._hint
            state = self._state()
            self._hint = WorkloadChanges(state)
            config, identity_notes = self._config, self._identity_notes
            self._identity_notes = IdentityNotes(config.identities, config.identities)
        ready = self._readiness.ready_in(state) if self._readiness is not None else None
        self._warn_once_without_pki(state, config)
        started = time.perf_counter()
        # Only what the change touches is rebuilt (meshctl.mesh_builder): a placement costs its own
        # sidecar and its service's callers, a latency measurement that moves no instance to another
        # priority level costs one look at the levels, and a change that touches nothing costs nothing.
        update = self._builder.update(state, config, ready, hint, identity_notes)
        if update is not None:
            if update.complete:
                result = self._cache.set_snapshots(update.snapshots)
            else:
                result = self._cache.update_snapshots(update.snapshots, update.removed)
            self._metrics.build_seconds.observe(time.perf_counter() - started)
            self._metrics.builds.labels("rejected" if result.rejected else "ok").inc()
            for node, reason in sorted(result.rejected.items()):
                LOG.error("snapshot for %s not published (it keeps its last good one): %s", node, reason)
            LOG.debug(
                "generation %d: %d nodes built, %d changed",
                state.generation,
                len(update.snapshots),
                len(result.changed),
            )
        self.built_ready = ready
        self.last_generation = state.generation

    def _warn_once_without_pki(self, state: FabricState, config: MeshConfig) -> None:
        """Sidecar RBAC matches the caller's SPIFFE id from mTLS: without it, say once that the policy
        the fabric declares is not enforced by the sidecars (``meshctl.snapshot.rbac_enforced``)."""
        if self._warned_no_pki or config.mtls or state.default_policy is PolicyDefault.ALLOW:
            return
        self._warned_no_pki = True
        LOG.warning(NO_PKI_WARNING)

    def _run(self) -> None:
        last_end, pause = -math.inf, 0.0
        while True:
            with self._wanted:
                self._wanted.wait_for(lambda: self._dirty or self._stopping)
                if self._stopping:
                    return
                self._dirty = False
                self.building_since = time.monotonic()  # (with the flag: ``settled`` sees one or the other)
            started = time.perf_counter()
            try:
                self.build_now()
            except Exception:  # a bug in one build must not stop later ones
                LOG.exception("building xDS snapshots failed")
                self._metrics.builds.labels("failed").inc()
            finally:
                self.building_since = None
            ended = time.perf_counter()
            pause = pause_after_build(started - last_end, ended - started, pause)
            last_end = ended
            if pause > 0:
                with self._wanted:
                    self._wanted.wait_for(lambda: self._stopping, timeout=pause)


def pause_after_build(idle_before: float, took: float, paused_before: float = 0.0) -> float:
    """How long the publisher waits after a build that took ``took`` seconds, ``idle_before`` seconds
    after the one before ended, of which it paused ``paused_before`` itself. Builds that follow each other
    closely (beyond its own pause, idle for less than twice what they take: changes keep coming) would
    hold the GIL without pause (a build shorter than the interpreter's switch interval never even lets the
    model writer in, so each change found the publisher idle and was built alone) and starve the threads
    that make the changes (Place calls, the model writer) and that keep switches connected: each is
    followed by a pause of PAUSE_FACTOR times what it took (at most MAX_PAUSE_S), in which the next changes
    gather for one build. A build after a quiet spell is not (a change that comes alone, or a large build
    and the change right after it, go at once)."""
    quiet = idle_before - paused_before
    return min(PAUSE_FACTOR * took, MAX_PAUSE_S) if quiet < 2 * took else 0.0
