"""What a process holds, read from /proc the way a user would see it (``ls /proc/PID/task``, ``ls
/proc/PID/fd``, VmRSS): for tests that open and close many connections and check nothing stays."""

from __future__ import annotations

import os
from typing import NamedTuple


class ProcessResources(NamedTuple):
    """Unpacks as ``threads, fds, rss_kib = process_resources(pid)``."""

    threads: int
    fds: int
    rss_kib: int


def process_resources(pid: int) -> ProcessResources:
    """Threads, open file descriptors and resident memory (KiB) of process ``pid`` now."""
    threads = len(os.listdir(f"/proc/{pid}/task"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss_kib = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
                break
    return ProcessResources(threads=threads, fds=fds, rss_kib=rss_kib)
