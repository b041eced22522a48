"""The rotation timer: a daemon thread that calls ``IdentityManager.tick`` when a certificate comes due.

Adapter (a thread and a clock). It sleeps until the earliest rotation time (never longer than
``max_sleep_s``, so a clock jump or a missed wake-up costs at most that), ticks, and hands every change
to ``on_change`` -- in the controller, the push of new secrets to meshctl's SDS. Exceptions in the
callback are logged, never lost, and never stop the timer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pki.due_timer import DueTimer
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
        self._timer = DueTimer(
            "pki-rotation",
            manager.next_rotation_at,
            self._tick,
            clock=clock,
            max_sleep_s=max_sleep_s,
            min_sleep_s=min_sleep_s,
        )

    def start(self) -> RotationTimer:
        self._timer.start()
        return self

    def wake(self) -> None:
        """Re-plan now (e.g. after a forced rotation changed the next due time)."""
        self._timer.wake()

    def stop(self, timeout: float = 5.0) -> None:
        self._timer.stop(timeout)

    def _tick(self, now: float) -> bool:
        """One rotation pass; True while a certificate that is due cannot be issued (it stays due)."""
        changes = self._manager.tick(now)
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
        return bool(changes.failed)
