"""A daemon thread that runs work when it comes due: the loop under the SVID rotation timer and the
control-certificate renewal timer.

Adapter (a thread and a clock). It sleeps until ``next_at()`` (never longer than ``max_sleep_s``, so a
clock jump or a missed wake-up costs at most that; never shorter than ``min_sleep_s``), then calls
``run_due(now)``. ``run_due`` returns True while something due keeps failing: the next sleep is then
``max_sleep_s``, so a certificate that cannot be issued does not make the loop spin. Exceptions from
``run_due`` are logged, never lost, and never stop the timer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

LOG = logging.getLogger("edgectl.pki.timer")


class DueTimer:
    def __init__(
        self,
        name: str,
        next_at: Callable[[], float | None],
        run_due: Callable[[float], bool],
        *,
        clock: Callable[[], float] = time.time,
        max_sleep_s: float = 30.0,
        min_sleep_s: float = 0.05,
    ) -> None:
        self.name = name
        self._next_at = next_at
        self._run_due = run_due
        self._clock = clock
        self._max_sleep_s = max_sleep_s
        self._min_sleep_s = min_sleep_s
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Re-plan now (the next due time changed)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        failing = False
        while not self._stopping:
            due = self._next_at()
            now = self._clock()
            sleep = self._max_sleep_s if due is None else min(max(due - now, self._min_sleep_s), self._max_sleep_s)
            self._wake.wait(self._max_sleep_s if failing else sleep)
            self._wake.clear()
            if self._stopping:
                return
            try:
                failing = self._run_due(self._clock())
            except Exception:
                failing = True
                LOG.exception("%s: due work failed; retrying in %.0f s", self.name, self._max_sleep_s)
