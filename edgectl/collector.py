"""When CPython's cycle collector makes its full pass in the controller: on a schedule, not on allocation counts.

The controller's heap is large and long-lived (the model, every switch's compiled tables, the sidecars'
snapshots: millions of objects at a thousand workloads) and it churns (a table read decodes every flow of a
switch; a placement rebuilds snapshots). CPython 3.11 starts a full collection whenever the objects promoted
to the oldest generation since the last one outnumber a quarter of those that survived it, so churn alone
keeps triggering it. At 50 switches and 1,000 workloads (``benchmarks/scale.py``) that was every ~3 s, 170-320
ms each, and found nothing to collect; each holds the GIL, so for its duration no LLDP probe, echo reply or
xDS push moves, and a probe delayed that way reads as link latency.

So, once started: what exists is frozen out of the collector's way (``gc.freeze``: long-lived by now), the
young generations are collected as usual (cheap, and where nearly all cyclic garbage dies), and the full pass
runs every ``interval_s`` on a thread of its own, timed for ``/metrics``. What survives a pass is frozen too,
so the next pass scans only what came since; every ``unfreeze_every`` passes one scans everything (at 500
switches and 10,000 workloads a pass over the whole heap took 2.2-3.1 s, each minute). Reference counting
frees everything that is not in a cycle as before; cyclic garbage that outlived the young generations waits
for the next scheduled pass, or, if it was alive at a pass, for the next whole one.

After each pass the C allocator is asked to give its free memory back (glibc's ``malloc_trim``): what CPython
frees in blocks larger than its own small-object pools stays in glibc's heaps, one per thread that
allocated, and at 500 switches (~1,500 os-ken threads) one trim returned 88 MB of an 833 MB resident set in
13 ms.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import threading
import time
from collections.abc import Callable

LOG = logging.getLogger("edgectl.collector")

DEFAULT_INTERVAL_S = 60.0
DEFAULT_UNFREEZE_EVERY = 10  # passes: the whole heap is scanned every 10 minutes
_NEVER = 1 << 30  # gen1 collections before an automatic full one: never, in practice
SLOW_PASS_S = 0.5  # a full pass longer than this is logged

# The thresholds are the process's: the first schedule started saves them, the last one stopped puts them
# back (tests run several controllers in one process).
_LOCK = threading.Lock()
_running = 0
_saved_thresholds: tuple[int, int, int] | None = None


class CollectorSchedule:
    """Owns the cycle collector's full passes from ``start`` to ``stop`` (which restores the thresholds)."""

    def __init__(
        self,
        interval_s: float = DEFAULT_INTERVAL_S,
        on_pass: Callable[[float, int], None] | None = None,
        unfreeze_every: int = DEFAULT_UNFREEZE_EVERY,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, not {interval_s}")
        if unfreeze_every < 1:
            raise ValueError(f"unfreeze_every must be at least 1, not {unfreeze_every}")
        self.interval_s = interval_s
        self.unfreeze_every = unfreeze_every
        self._passes = 0
        self._on_pass = on_pass  # (seconds, objects collected) of each scheduled pass
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        global _running, _saved_thresholds
        if self._thread is not None:
            return
        gc.collect()
        gc.freeze()
        with _LOCK:
            if _running == 0:
                _saved_thresholds = gc.get_threshold()
                young, middle, _ = _saved_thresholds
                gc.set_threshold(young, middle, _NEVER)
            _running += 1
        self._thread = threading.Thread(target=self._run, name="gc-full-pass", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        global _running, _saved_thresholds
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join(5.0)
        self._thread = None
        with _LOCK:
            _running -= 1
            if _running == 0 and _saved_thresholds is not None:
                gc.set_threshold(*_saved_thresholds)
                _saved_thresholds = None

    def full_pass(self) -> tuple[float, int]:
        """One full collection now (of the whole heap every ``unfreeze_every``-th time, else of what is
        not frozen), its survivors frozen after, then the C allocator's free memory given back: (seconds
        the collection took, objects it collected). The trim is not in the seconds: it holds no GIL."""
        started = time.perf_counter()
        self._passes += 1
        if self._passes % self.unfreeze_every == 0:
            gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        took = time.perf_counter() - started  # the GIL was held until here; the trim below lets go of it
        release_free_heap()
        if took > SLOW_PASS_S:
            LOG.info("full garbage collection: %.0f ms, %d objects collected", took * 1000, collected)
        if self._on_pass is not None:
            self._on_pass(took, collected)
        return took, collected

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            try:
                self.full_pass()
            except Exception:  # a bug here must not end the schedule
                LOG.exception("scheduled garbage collection failed")


def release_free_heap() -> bool:
    """Give the C allocator's free memory back to the operating system; False where the C library cannot
    (no glibc). ctypes lets go of the GIL for the call, so other threads run meanwhile."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # another C library (musl, macOS): nothing to trim with
        return None
