"""Sidecar readiness shared by the replicas (adapter).

A workload's sidecar ACKs only the replica it streams from, yet every replica's EDS must count it as
serving (the readiness gate of ``meshctl.readiness``). Each replica writes the workloads it saw become
ready under ``<root>/serving/`` and marks ready what the others wrote. Sticky, like the gate itself: a key
stays until its workload leaves the model (the leader deletes those of workloads gone).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from cluster.etcd import EtcdClient, EtcdError, Watch, WatchEvent
from netmodel.state import FabricState

LOG = logging.getLogger("edgectl.cluster.readiness")

CLEANUP_S = 30.0
RETRY_S = 0.5


class SharedReadiness:
    def __init__(
        self,
        client: EtcdClient,
        root: bytes,
        mark_ready: Callable[[list[str]], None],
        state: Callable[[], FabricState],
        leads: Callable[[], bool],
    ) -> None:
        self._client = client
        self._prefix = root.rstrip(b"/") + b"/serving/"
        self._mark_ready = mark_ready
        self._state = state
        self._leads = leads
        self._outbox: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watch: Watch | None = None

    def saw_ready(self, workload: str) -> None:
        """This replica's sidecar listener: hand off (it runs on the xDS event loop)."""
        self._outbox.put(workload)

    def start(self) -> SharedReadiness:
        for target, name in ((self._write, "cluster-ready-write"), (self._follow, "cluster-ready-follow")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._outbox.put(None)
        if self._watch is not None:
            self._watch.cancel()
        for thread in self._threads:
            thread.join(2.0)

    def _write(self) -> None:
        while not self._stopping.is_set():
            workload = self._outbox.get()
            if workload is None:
                return
            while not self._stopping.is_set():
                try:
                    self._client.put(self._prefix + workload.encode(), b"")
                    break
                except EtcdError as exc:
                    LOG.warning("could not share that %s serves: %s", workload, exc)
                    self._stopping.wait(RETRY_S)

    def _follow(self) -> None:
        next_cleanup = 0.0
        while not self._stopping.is_set():
            try:
                kvs, revision = self._client.get_prefix(self._prefix, keys_only=True)
            except EtcdError:
                self._stopping.wait(RETRY_S)
                continue
            self._mark_ready([kv.key[len(self._prefix) :].decode() for kv in kvs])
            failed = threading.Event()

            def on_events(events: list[WatchEvent], _revision: int) -> None:
                names = [e.kv.key[len(self._prefix) :].decode() for e in events if e.kind == "put"]
                if names:
                    self._mark_ready(names)

            def on_error(exc: Exception, failed: threading.Event = failed) -> None:
                failed.set()

            self._watch = self._client.watch(
                self._prefix, prefix=True, start_revision=revision + 1, on_events=on_events, on_error=on_error
            )
            while not self._stopping.is_set() and not failed.wait(1.0):
                if self._leads() and time.monotonic() >= next_cleanup:
                    next_cleanup = time.monotonic() + CLEANUP_S
                    self._clean_up()
            if self._watch is not None:
                self._watch.cancel()

    def _clean_up(self) -> None:
        """The leader deletes the keys of workloads no longer in the model."""
        workloads = self._state().workloads
        try:
            kvs, _ = self._client.get_prefix(self._prefix, keys_only=True)
            for kv in kvs:
                if kv.key[len(self._prefix) :].decode() not in workloads:
                    self._client.delete(kv.key)
        except EtcdError as exc:
            LOG.warning("serving keys not cleaned up: %s", exc)
