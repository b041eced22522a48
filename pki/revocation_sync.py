"""Keeps a running controller's revocation list and the stored one (``RevocationStore``) in step.

Adapter (a thread and a clock). Why: a revocation kept in memory only is forgotten by a restart (a
certificate revoked for a compromised key trusted again until it expires, a node cut off attesting
again), and what ``pki rotate --dir`` revokes in the CA directory would never reach the mesh's CRL.

- ``load`` (at start, before the first certificate is issued): the stored list becomes the manager's.
- A change in memory (``kick``) is written by the thread, at most every ``min_interval_s`` (an eviction
  revokes a certificate: a burst of them is one write, off the model writer); ``flush`` writes on the
  caller's thread, for an operator's revocation that must be stored before it is answered.
- Every ``poll_s`` the stored version is looked at (a ``stat``, a keys-only etcd get): what another
  writer added is merged in, and certificates it revoked here are replaced at once.
One per store: with two (the CA directory and a replicated controller's etcd), what one gains is taken
into memory and from there written to the other.
A write that fails is logged and tried again at the next poll; memory stays authoritative meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pki.identities import IdentityChanges, IdentityManager
from pki.policy import RevocationList, merge_revocations
from pki.revocation_store import ATTEMPTS, RevocationStore

LOG = logging.getLogger("edgectl.pki.revocations")

REPEAT_LOG_S = 300.0
"""The same failure to store is logged again after this long (a read-only CA directory: not every poll)."""
_UNKNOWN = object()


class RevocationSync:
    def __init__(
        self,
        store: RevocationStore,
        manager: IdentityManager,
        on_change: Callable[[IdentityChanges], None],
        *,
        clock: Callable[[], float] = time.time,
        poll_s: float = 2.0,
        min_interval_s: float = 0.5,
    ) -> None:
        self.store = store
        self._manager = manager
        self._on_change = on_change
        self._clock = clock
        self._poll_s = poll_s
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._base = RevocationList()
        """The list last read from or written to the store: what both sides started from since."""
        self._version: object = _UNKNOWN
        self._synced: RevocationList | None = None
        """The manager's list as of the last sync (the same object: nothing of ours to write)."""
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self) -> IdentityChanges:
        """The stored list into the manager (raises ``PkiError`` if it is unreadable: a controller that
        cannot know what is revoked does not start trusting everything)."""
        with self._lock:
            theirs, version = self.store.read()
            changes = self._manager.merge_revocations(RevocationList(), theirs, self._clock())
            self._base, self._version = theirs, version
            if theirs.serials or theirs.identities:
                serials, identities = len(theirs.serials), len(theirs.identities)
                LOG.info("revocations loaded: %d certificates, %d identities", serials, identities)
            return changes

    def start(self) -> RevocationSync:
        self._thread = threading.Thread(target=self._run, name="pki-revocations", daemon=True)
        self._thread.start()
        return self

    def kick(self) -> None:
        """The manager's list may have changed: store it soon (any thread; once stopped, at once on the
        caller's: a certificate dropped while the controller winds down is stored too)."""
        if not self._stopping.is_set():
            self._wake.set()
            return
        try:
            self._sync()
        except Exception as exc:
            LOG.error("revocation list not stored while stopping: %s", exc)

    def flush(self) -> None:
        """Store the manager's list now, on this thread (raises what the store raises)."""
        self._sync()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self._sync()  # what the last interval changed
        except Exception as exc:
            LOG.error("revocation list not stored at stop: %s", exc)

    def _run(self) -> None:
        last_error, last_logged = "", 0.0
        while not self._stopping.is_set():
            self._wake.wait(self._poll_s)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._sync()
                self.store.refresh(self._clock())
            except Exception as exc:  # a full disk, etcd away: memory still holds it, tried again
                now = time.monotonic()
                if str(exc) != last_error or now - last_logged >= REPEAT_LOG_S:  # not a line every poll
                    LOG.warning("revocation list not stored (tried again every %.0f s): %s", self._poll_s, exc)
                    last_error, last_logged = str(exc), now
            else:
                last_error = ""
            self._stopping.wait(self._min_interval_s)

    def _sync(self) -> None:
        changes = self._sync_locked()
        if changes is not None:  # listeners are not called under the lock: a flush never waits on them
            self._on_change(changes)

    def _sync_locked(self) -> IdentityChanges | None:
        """One round: what memory changed is written, what the store gained is taken in (the manager's
        changes then, for the listeners)."""
        with self._lock:
            ours = self._manager.snapshot.revocations
            version = self.store.version()
            if ours is self._synced and version == self._version:
                return None
            for _ in range(ATTEMPTS):
                if version == self._version:
                    theirs = self._base
                else:
                    theirs, version = self.store.read()
                merged = merge_revocations(self._base, ours, theirs)
                stored = merged.pruned(self._clock())
                if stored != theirs:
                    written = self.store.write(stored, version)
                    if written is None:  # another writer came first: read theirs again
                        version = _UNKNOWN
                        continue
                    version = written
                self._base, self._version, self._synced = stored, version, ours
                if merged.identities == ours.identities and merged.serials.keys() <= ours.serials.keys():
                    return None
                LOG.warning(
                    "revocations from the stored list taken in: %d certificates, %d identities revoked",
                    len(merged.serials.keys() - ours.serials.keys()),
                    len(merged.identities - ours.identities),
                )
                return self._manager.merge_revocations(ours, merged, self._clock())
            raise RuntimeError(f"the stored revocation list kept changing: {ATTEMPTS} attempts")
