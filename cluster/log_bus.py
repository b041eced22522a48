"""The model bus of a replica: every event goes through a log in etcd, every replica applies the log (adapter).

    bus = ClusterBus(client, root, "r1", seed=lambda: initial_state)
    bus.start()                 # the model from the newest checkpoint, then the log after it
    bus.publish(event)          # appended to the log; the future resolves once applied here
    bus.state, bus.subscribe    # as the embedded EventBus

``publish`` only queues: a batcher thread appends what queued meanwhile as one log entry (one etcd put).
A watcher thread reads the entries in etcd's revision order and hands their events to this replica's
``EventBus`` (the one writer thread), so every replica applies the same events in the same order and holds
the same ``FabricState`` (``apply`` is pure). The publisher's future resolves when its own event comes back
applied: an answer means every replica will apply it.

The first replica of a cluster writes the first checkpoint from its own desired state (``seed``). The leader
writes a checkpoint (the encoded model at a log revision) every ``CHECKPOINT_EVERY`` entries and compacts
etcd's history before the previous one, so a replica starting later reads one checkpoint and a short log.
While etcd is unreachable, publishing fails at once (``ReadOnly``) and the replica keeps its last model.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from cluster.codec import CodecError, decode_events, decode_state, encode_events, encode_state
from cluster.etcd import Compare, EtcdClient, EtcdCompacted, EtcdError, Op, Watch, WatchEvent
from netmodel.bus import BusUnavailable, ModelSubscriber
from netmodel.events import Event, WorkloadHealthChanged, WorkloadStarting
from netmodel.state import FabricState

LOG = logging.getLogger("edgectl.cluster.log")

MAX_BATCH_EVENTS = 512
CHECKPOINT_EVERY = 1000
"""Log entries between two checkpoints (the leader writes them)."""
RETRY_S = 0.2


class LocalBus(Protocol):
    """The replica's own model writer (``edgectl.bus.EventBus``): applies what the log says, in order."""

    @property
    def state(self) -> FabricState: ...
    def publish(self, event: Event) -> Future[FabricState]: ...
    def subscribe(self, subscriber: ModelSubscriber) -> None: ...
    def wait_for(self, predicate: Callable[[FabricState], bool], timeout: float) -> FabricState | None: ...
    def start(self) -> None: ...
    def stop(self, timeout: float = 5.0) -> None: ...


ANY_REPLICA_EVENTS: frozenset[type] = frozenset({WorkloadHealthChanged, WorkloadStarting})
"""Events any replica may publish: node agents report to whichever replica they reach. Every other event is
an observation of the network or a decision, the leader's alone: fenced by its election key in etcd."""


class NotLeader(BusUnavailable):
    """A leader's event (an observation, a decision) from a replica that does not lead, or no longer does."""


class ReadOnly(BusUnavailable):
    """etcd is unreachable: this replica serves its last model and accepts no change."""


@dataclass(frozen=True, slots=True)
class _Entry:
    replica: str
    incarnation: str
    first_seq: int
    events: list[Event]


def _encode_entry(replica: str, incarnation: str, first_seq: int, events: list[Event]) -> bytes:
    header = json.dumps({"replica": replica, "incarnation": incarnation, "seq": first_seq}).encode()
    return header + b"\n" + encode_events(events)


def _decode_entry(value: bytes) -> _Entry:
    header, sep, body = value.partition(b"\n")
    if not sep:
        raise CodecError("log entry without a header line")
    try:
        fields = json.loads(header)
        replica, incarnation, seq = str(fields["replica"]), str(fields["incarnation"]), int(fields["seq"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CodecError(f"log entry header: {exc}") from None
    return _Entry(replica, incarnation, seq, decode_events(body))


def _encode_checkpoint(log_revision: int, state: FabricState) -> bytes:
    return b"%d\n" % log_revision + encode_state(state)


def _decode_checkpoint(value: bytes) -> tuple[int, FabricState]:
    revision, sep, body = value.partition(b"\n")
    if not sep or not revision.isdigit():
        raise CodecError("checkpoint without its log revision")
    return int(revision), decode_state(body)


class ClusterBus:
    """A ``netmodel.bus.ModelBus`` whose writes go through etcd."""

    def __init__(
        self,
        client: EtcdClient,
        root: bytes,
        replica_id: str,
        *,
        seed: Callable[[], FabricState],
        local_bus: Callable[[FabricState], LocalBus],
        is_leader: Callable[[], bool] = lambda: False,
        fence: Callable[[], tuple[bytes, int] | None] | None = None,
    ) -> None:
        self._client = client
        self._root = root.rstrip(b"/")
        self.replica_id = replica_id
        self._seed = seed
        self._local_bus = local_bus
        self._is_leader = is_leader
        self._fence = fence
        """``ClusterMember.fence``: (our election key, its revision) while we lead. None: no fencing at all
        (every replica may publish every event; tests of the log alone)."""
        self._last_handed: Future[FabricState] | None = None  # the last event handed to the model writer
        self._watch_ended = False
        self._bus = local_bus(seed())
        self._subscribers: list[ModelSubscriber] = []
        self._lock = threading.Condition()
        self._queue: list[tuple[Event, Future[FabricState]]] = []
        self._waiting: dict[int, Future[FabricState]] = {}  # our own events in flight, by sequence number
        self._next_seq = 0
        self._incarnation = os.urandom(8).hex()  # this process's entries, told apart from a restart's
        self._applied_seq: dict[tuple[str, str], int] = {}
        """Per publisher (replica, incarnation): the sequence number after its last entry applied. An etcd put
        retried after a timeout may have been written twice: the second copy is skipped, on every replica."""
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._watch: Watch | None = None
        self.applied_revision = 0
        """The etcd revision of the last log entry handed to the model writer."""
        self.checkpoint_revision = 0
        self.entries_since_checkpoint = 0
        self.read_only_reason = ""
        self._probing = False
        self.cluster_seeded = False
        """Whether this replica wrote the cluster's first checkpoint (its own desired state)."""

    @property
    def _log_key(self) -> bytes:
        return self._root + b"/log"

    @property
    def _checkpoint_key(self) -> bytes:
        return self._root + b"/checkpoint"

    # -- ModelBus ----------------------------------------------------------------------------------------------
    @property
    def state(self) -> FabricState:
        return self._bus.state

    def subscribe(self, subscriber: ModelSubscriber) -> None:
        self._subscribers.append(subscriber)
        self._bus.subscribe(subscriber)

    def wait_for(self, predicate: Callable[[FabricState], bool], timeout: float) -> FabricState | None:
        return self._bus.wait_for(predicate, timeout)

    def publish(self, event: Event) -> Future[FabricState]:
        future: Future[FabricState] = Future()
        if self.read_only_reason:
            future.set_exception(ReadOnly(self.read_only_reason))
            return future
        with self._lock:
            self._queue.append((event, future))
            self._lock.notify()
        return future

    def publish_and_wait(self, event: Event, timeout: float) -> FabricState:
        return self.publish(event).result(timeout)  # (through etcd: never applied on the caller's thread)

    # -- life ---------------------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 30.0) -> ClusterBus:
        revision, state = self._read_checkpoint()
        self._bus = self._local_bus(state)
        for subscriber in self._subscribers:
            self._bus.subscribe(subscriber)
        self._bus.start()
        self.applied_revision = self.checkpoint_revision = revision
        head = self._client.get(self._log_key)
        self._start_watch(revision)
        self._spawn(self._append_loop, "cluster-log-append")
        if head is not None and head.mod_revision > revision:  # catch up before serving anything
            deadline_hit = not self._wait_applied(head.mod_revision, timeout_s)
            if deadline_hit:
                LOG.warning("the log was not read up to revision %d within %g s", head.mod_revision, timeout_s)
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._watch is not None:
            self._watch.cancel()
        for thread in self._threads:
            thread.join(2.0)
        self._bus.stop()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _read_checkpoint(self) -> tuple[int, FabricState]:
        kv = self._client.get(self._checkpoint_key)
        if kv is None:
            state = self._seed()
            result = self._client.txn(
                [Compare.create_revision(self._checkpoint_key, "=", 0)],
                [Op.put(self._checkpoint_key, _encode_checkpoint(0, state))],
                [Op.get(self._checkpoint_key)],
            )
            if result.succeeded:
                self.cluster_seeded = True
                LOG.info("a new cluster: its model starts from this replica's desired state")
                return 0, state
            held = result.responses[0] if result.responses else None
            if not isinstance(held, list) or not held:
                raise EtcdError("the cluster's checkpoint vanished while this replica read it: start it again")
            kv = held[0]
        revision, state = _decode_checkpoint(kv.value)
        LOG.info("model read from the checkpoint at log revision %d (generation %d)", revision, state.generation)
        return revision, state

    def _wait_applied(self, revision: int, timeout_s: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self.applied_revision >= revision, timeout_s)

    # -- appending ----------------------------------------------------------------------------------------------
    def _append_loop(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._queue or self._stopping)
                if self._stopping:
                    pending, self._queue = self._queue, []
                    for _, future in pending:
                        future.set_exception(ReadOnly("this replica is stopping"))
                    return
                batch, self._queue = self._queue[:MAX_BATCH_EVENTS], self._queue[MAX_BATCH_EVENTS:]
            fence = self._fence() if self._fence is not None else None
            leaders = any(type(event) not in ANY_REPLICA_EVENTS for event, _ in batch)
            if leaders and self._fence is not None and fence is None:
                kept = []
                for event, future in batch:
                    if type(event) in ANY_REPLICA_EVENTS:
                        kept.append((event, future))
                    else:
                        future.set_exception(NotLeader(f"{type(event).__name__}: this replica does not lead"))
                batch, leaders = kept, False
                if not batch:
                    continue
            with self._lock:
                first = self._next_seq
                self._next_seq += len(batch)
                for offset, (_, future) in enumerate(batch):
                    self._waiting[first + offset] = future
            try:
                value = _encode_entry(self.replica_id, self._incarnation, first, [event for event, _ in batch])
                if leaders and fence is not None:
                    key, revision = fence
                    result = self._client.txn(
                        [Compare.create_revision(key, "=", revision)], [Op.put(self._log_key, value)]
                    )
                    written, why = result.succeeded, "this replica's election key is gone: it no longer leads"
                else:
                    self._client.put(self._log_key, value)
                    written, why = True, ""
            except (EtcdError, CodecError) as exc:
                # An etcd timeout may still have committed the entry: if it comes back, it is applied once
                # (entries are deduplicated), and its futures, already failed, stay failed.
                if isinstance(exc, EtcdError):
                    self._went_read_only(f"etcd unreachable ({exc}): serving the last model read-only")
                written, why = False, f"the change may or may not have been written to etcd (outcome unknown): {exc}"
            if not written:
                with self._lock:
                    for offset in range(len(batch)):
                        self._waiting.pop(first + offset, None)
                error: BusUnavailable = NotLeader(why) if why.startswith("this replica") else ReadOnly(why)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)

    def catch_up(self, timeout_s: float) -> bool:
        """Wait until this replica has applied every entry etcd holds now (a linearizable read of the log's
        head): a replica about to lead decides on its predecessor's last word, not on a lagging model."""
        try:
            head = self._client.get(self._log_key)
        except EtcdError:
            return False
        return head is None or self._wait_applied(head.mod_revision, timeout_s)

    # -- applying -----------------------------------------------------------------------------------------------
    def _start_watch(self, after_revision: int) -> None:
        def on_events(events: list[WatchEvent], _header_revision: int) -> None:
            for event in events:
                if event.kind == "put":
                    self._apply_entry(event.kv.value, event.kv.mod_revision)

        def on_error(exc: Exception) -> None:
            self._watch_failed(exc)

        self._watch = self._client.watch(
            self._log_key, start_revision=after_revision + 1, on_events=on_events, on_error=on_error
        )

    def _watch_failed(self, exc: Exception) -> None:
        if self._stopping:
            return
        if isinstance(exc, EtcdCompacted):
            # Behind the last checkpoint's compaction: the entries it missed are gone from etcd. Only a restart
            # (which starts from the checkpoint) can catch up; until then it serves what it has, read-only.
            self.read_only_reason = (
                f"this replica fell behind etcd's compaction (revision {exc}): restart it to catch up from the "
                "checkpoint; serving the last model read-only"
            )
            LOG.error("%s", self.read_only_reason)
            with self._lock:
                waiting, self._waiting = self._waiting, {}
            for future in waiting.values():
                future.set_exception(ReadOnly(self.read_only_reason))
            return
        with self._lock:
            self._watch_ended = True
        self._went_read_only(f"the log's watch ended ({exc}): serving the last model read-only")

    def _went_read_only(self, reason: str) -> None:
        with self._lock:
            probing = self._probing
            self._probing = True
            self.read_only_reason = reason
        if not probing:
            LOG.warning("%s", reason)
            self._spawn(self._probe_etcd, "cluster-log-probe")

    def _probe_etcd(self) -> None:
        """Until etcd answers again: then follow the log again (if its watch ended meanwhile) and take changes."""
        while not self._stopping:
            try:
                self._client.get(self._log_key)
            except EtcdError:
                threading.Event().wait(RETRY_S)
                continue
            with self._lock:
                rewatch, self._watch_ended = self._watch_ended, False
            if rewatch:
                try:
                    self._start_watch(self.applied_revision)
                except EtcdError:  # not created in time (its member went away after the read): probe on
                    with self._lock:
                        self._watch_ended = True
                    threading.Event().wait(RETRY_S)
                    continue
            with self._lock:
                if self._watch_ended:  # ended again while it started: probe on
                    continue
                self._probing = False
                self.read_only_reason = ""
            LOG.info("etcd reachable again: following the log from revision %d", self.applied_revision)
            return

    def _apply_entry(self, value: bytes, revision: int) -> None:
        try:
            entry = _decode_entry(value)
        except CodecError as exc:
            LOG.error("log entry at revision %d skipped: %s", revision, exc)
            self._note_applied_after_the_writer(revision)
            return
        publisher = (entry.replica, entry.incarnation)
        if entry.first_seq < self._applied_seq.get(publisher, 0):
            LOG.info("log entry at revision %d is a repeat of %s's (a retried write): skipped", revision, entry.replica)
            self._note_applied_after_the_writer(revision)
            return
        self._applied_seq[publisher] = entry.first_seq + len(entry.events)
        ours = publisher == (self.replica_id, self._incarnation)
        last: Future[FabricState] | None = None
        for offset, event in enumerate(entry.events):
            mine = None
            if ours:
                with self._lock:
                    mine = self._waiting.pop(entry.first_seq + offset, None)
            applied = self._bus.publish(event)
            if mine is not None:
                applied.add_done_callback(_forward_to(mine))
            last = self._last_handed = applied
        if last is None:
            self._note_applied_after_the_writer(revision)
        else:
            last.add_done_callback(lambda _f: self._note_applied(revision))

    def _note_applied_after_the_writer(self, revision: int) -> None:
        """An entry with nothing to apply counts as applied once the writer applied what came before it (a
        checkpoint labelled with its revision must hold every earlier entry's events)."""
        last = self._last_handed
        if last is None or last.done():
            self._note_applied(revision)
        else:
            last.add_done_callback(lambda _f: self._note_applied(revision))

    def _note_applied(self, revision: int) -> None:
        with self._lock:
            if revision > self.applied_revision:
                self.applied_revision = revision
                self.entries_since_checkpoint += 1
            self._lock.notify_all()
        if self.entries_since_checkpoint >= CHECKPOINT_EVERY and self._is_leader():
            self.write_checkpoint()

    def write_checkpoint(self) -> None:
        """The model at the last applied entry, and etcd's history before the previous checkpoint compacted.

        Runs on the model writer thread (after the entry applied), so ``state`` is the model of exactly
        ``applied_revision``."""
        revision, state = self.applied_revision, self._bus.state
        previous = self.checkpoint_revision
        try:
            self._client.put(self._checkpoint_key, _encode_checkpoint(revision, state))
            if previous:
                self._client.compact(previous)
        except EtcdError as exc:
            LOG.warning("checkpoint at revision %d not written: %s", revision, exc)
            return
        self.checkpoint_revision = revision
        self.entries_since_checkpoint = 0


def _forward_to(target: Future[FabricState]) -> Callable[[Future[FabricState]], None]:
    def forward(done: Future[FabricState]) -> None:
        if target.done():
            return
        exc = done.exception()
        if exc is not None:
            target.set_exception(exc)
        else:
            target.set_result(done.result())

    return forward
