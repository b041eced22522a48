"""Hot reload of ``edgectl run --config PATH``: a changed file (or directory) is applied, a bad one rejected.

A thread looks at the files' size and modification time every ``interval_s`` (cheap; nothing is read
while they stay the same; None: never by itself) and ``reload()`` (SIGHUP) looks at once and re-reads
even an unchanged file.
A document whose content hash equals the running revision is not applied again (a ``touch`` or an
editor's save without a change costs nothing). Loading and applying are the caller's: this module
only decides when.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

LOG = logging.getLogger("edgectl.config_watch")
DEFAULT_INTERVAL_S = 1.0

Signature = tuple[tuple[str, int, int, int], ...]


def file_signature(path: str) -> Signature:
    """(name, size, mtime_ns, inode) of ``path`` or of every file under it; () if it cannot be listed."""
    entries: list[tuple[str, int, int, int]] = []
    try:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.startswith("."):
                        continue
                    full = os.path.join(root, name)
                    st = os.stat(full)
                    entries.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns, st.st_ino))
        else:
            st = os.stat(path)
            entries.append((path, st.st_size, st.st_mtime_ns, st.st_ino))
    except OSError as exc:
        entries.append((f"<unreadable: {exc.strerror or exc}>", 0, 0, 0))
    return tuple(entries)


class ConfigWatcher:
    def __init__(
        self,
        path: str,
        on_change: Callable[[], None],
        interval_s: float | None = DEFAULT_INTERVAL_S,
        signature: Callable[[str], Signature] = file_signature,
    ) -> None:
        self._path = path
        self._on_change = on_change
        self._interval_s = interval_s
        self._signature = signature
        self._last = signature(path)
        self._wake = threading.Condition()
        self._forced = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="config-watch", daemon=True)

    def start(self) -> ConfigWatcher:
        self._thread.start()
        return self

    def reload(self) -> None:
        """Re-read now, changed or not (SIGHUP)."""
        with self._wake:
            self._forced = True
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._forced or self._stopping, timeout=self._interval_s)
                if self._stopping:
                    return
                forced, self._forced = self._forced, False
            signature = self._signature(self._path)
            if not forced and signature == self._last:
                continue
            self._last = signature
            LOG.info("%s %s: reading it", self._path, "reload asked" if forced else "changed")
            try:
                self._on_change()
            except Exception:  # a bug in one reload must not end hot reload
                LOG.exception("reloading %s failed", self._path)
