"""The rotation timer: a daemon thread that calls ``IdentityManager.tick`` when a certificate comes due.

Adapter (a thread and a clock). It sleeps until the earliest rotation time (never longer than
``max_sleep_s``, so a clock jump or a missed wake-up costs at most that), ticks, and hands every change
to ``on_change`` -- in the controller, the push of new secrets to meshctl's SDS. Exceptions in the
callback are logged, never lost, and never stop the timer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pki.identities import IdentityChanges, IdentityManager

LOG = logging.getLogger("edgectl.pki.rotation")


class RotationTimer:
    def __init__(
        self,
        manager: IdentityManager,
        on_change: Callable[[IdentityChanges], None],
        *,
        clock: Callable[[], float] = time.time,
        max_sleep_s: float = 30.0,
        min_sleep_s: float = 0.05,
    ) -> None:
        self._manager = manager
        self._on_change = on_change
        self._clock = clock
        self._max_sleep_s = max_sleep_s
        self._min_sleep_s = min_sleep_s
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> RotationTimer:
        self._thread = threading.Thread(target=self._run, name="pki-rotation", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        """Re-plan now (e.g. after a forced rotation changed the next due time)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        failing = False
        while not self._stopping:
            due = self._manager.next_rotation_at()
            now = self._clock()
            sleep = self._max_sleep_s if due is None else min(max(due - now, self._min_sleep_s), self._max_sleep_s)
            # A certificate that is due but cannot be issued stays due: without this back-off the loop
            # would spin on it every min_sleep_s.
            self._wake.wait(self._max_sleep_s if failing else sleep)
            self._wake.clear()
            if self._stopping:
                return
            failing = True
            try:
                changes = self._manager.tick(self._clock())
                failing = bool(changes.failed)
                for subject, why in changes.failed:
                    LOG.warning("no certificate for %s: %s", subject, why)
                if changes.changed:
                    LOG.info(
                        "identities: %d issued (%s), %d dropped",
                        len(changes.issued),
                        ", ".join(sorted({why for _s, _id, why in changes.issued})) or "-",
                        len(changes.dropped),
                    )
                    self._on_change(changes)
            except Exception:
                LOG.exception("rotation tick failed; retrying in %.0f s", self._max_sleep_s)
