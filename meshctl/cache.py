"""The snapshot cache: the latest consistent snapshot of every node, who watches it, and what each node
has applied. Thread-safe (one lock); no grpc, no I/O.

As in go-control-plane, the xDS server depends only on this: the application builds snapshots and
sets them; a stream asks for its node's snapshot and registers a watch that fires when the node's
content changes. A rebuild that changes nothing for a node neither replaces its snapshot nor wakes its
streams, so a model change pushes only to the nodes it concerns.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from meshctl.snapshot import InconsistentSnapshot, MeshSnapshot, check_consistent, with_versions_of
from meshctl.xds_types import CLUSTER, ENDPOINTS, LISTENER, PUSH_ORDER, ROUTES, short_name

_SHAPE_MEMO_LIMIT = 1024

Watcher = Callable[[str], None]
SyncListener = Callable[[str, MeshSnapshot], None]
NackListener = Callable[[str, str, str, str], None]
"""(node, type URL, rejected version, error message): told of every NACK (the dashboard's timeline)."""
"""Called (outside the cache's lock) with a node id and the snapshot it has just applied in full, each
time a node runs its current content."""


@dataclass(frozen=True, slots=True)
class Nack:
    version: str
    """The version the client rejected."""
    error: str
    code: int
    at: float


@dataclass(slots=True)
class TypeStatus:
    version_sent: str = ""
    sent_at: float | None = None
    pending_nonce: str = ""
    """Nonce of the response the client has not answered yet ("" when none is outstanding)."""
    version_acked: str = ""
    acked_at: float | None = None
    previous_ack: tuple[str, float] | None = None
    """(version, when) of the ACK before the last: two pushes a few ms apart (a migration's new endpoint,
    then the old one's withdrawal) leave both times to whoever samples ``clients_view`` less often."""
    last_nack: Nack | None = None
    current: bool = False
    """The client runs what it should of this type: nothing to send, unanswered or rejected."""
    pushes: int = 0
    acks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class NodeStatus:
    streams: int = 0
    mode: str = ""
    connected_at: float | None = None
    synced_generation: int | None = None
    """Generation of the last snapshot this node had fully applied (every type ACKed, nothing to send)."""
    in_sync: bool = False
    """It still runs exactly that (a config change can change a snapshot without a new generation)."""
    types: dict[str, TypeStatus] = field(default_factory=dict)

    def of(self, type_url: str) -> TypeStatus:
        status = self.types.get(type_url)
        if status is None:
            status = self.types[type_url] = TypeStatus()
        return status


@dataclass(frozen=True, slots=True)
class SetResult:
    changed: frozenset[str]
    """Nodes whose content changed (or appeared): their streams were woken."""
    rejected: Mapping[str, str]
    """Node -> why its new snapshot was refused (it keeps the previous one)."""


class SnapshotCache:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshots: dict[str, MeshSnapshot] = {}
        self._watchers: dict[str, list[Watcher]] = {}
        self._status: dict[str, NodeStatus] = {}
        self._sync_listeners: list[SyncListener] = []
        self._nack_listeners: list[NackListener] = []
        self._checked_shapes: OrderedDict[tuple[object, ...], tuple[tuple[object, ...], str | None]] = OrderedDict()
        """``_consistency`` of every snapshot shape seen (bounded), with the views it was computed from."""
        self._publication = 0

    @property
    def publication(self) -> int:
        """How many times snapshots were published: the watchers one publication calls see its number
        (the xDS server wakes the streams of one publication as one batch)."""
        return self._publication

    # -- snapshots ----------------------------------------------------------------------------------

    def snapshot(self, node: str) -> MeshSnapshot | None:
        return self._snapshots.get(node)  # one dict read: atomic, and snapshots are immutable

    def nodes(self) -> list[str]:
        with self._lock:
            return sorted(self._snapshots)

    def set_snapshot(self, node: str, snapshot: MeshSnapshot) -> bool:
        """Publish one node's snapshot; raises ``InconsistentSnapshot``. True if its content changed."""
        check_consistent(snapshot)
        with self._lock:
            changed = self._store(node, snapshot)
            watchers = list(self._watchers.get(node, ())) if changed else []
            self._publication += 1
        _notify(node, watchers)
        return changed

    def set_snapshots(self, snapshots: Mapping[str, MeshSnapshot], prune: bool = True) -> SetResult:
        """Publish a whole build. An inconsistent snapshot is refused (that node keeps its last good
        one); with ``prune`` nodes missing from the build are dropped (their streams keep what they have)."""
        return self._publish(snapshots, None if prune else ())

    def update_snapshots(self, snapshots: Mapping[str, MeshSnapshot], removed: Iterable[str] = ()) -> SetResult:
        """Publish part of a build (``meshctl.mesh_builder``): these nodes' snapshots, and drop ``removed``;
        every other node keeps its own."""
        return self._publish(snapshots, removed)

    def _publish(self, snapshots: Mapping[str, MeshSnapshot], removed: Iterable[str] | None) -> SetResult:
        """``removed`` None: every node missing from ``snapshots``."""
        if removed is None:
            self._checked_shapes.clear()  # a whole new build: the shapes checked for the last one are gone
        rejected: dict[str, str] = {}
        good: dict[str, MeshSnapshot] = {}
        checked: dict[int, str | None] = {}  # id(resources) -> problem: nodes sharing resources share the check
        same: dict[tuple[int, int], bool] = {}  # likewise for comparing versions
        for node, snapshot in snapshots.items():
            previous = self._snapshots.get(node)
            if previous is not None and _same_content(previous, snapshot, same):
                good[node] = snapshot  # what it had, and that was checked
                continue
            key = id(snapshot.resources)
            if key not in checked:
                checked[key] = self._consistency(snapshot, previous)
            if checked[key] is not None:
                rejected[node] = f"node {node}: {checked[key]}"
                continue
            good[node] = snapshot
        to_wake: list[tuple[str, list[Watcher]]] = []
        rebased: dict[tuple[int, int], MeshSnapshot] = {}  # nodes that shared versions share the result
        with self._lock:
            changed = {node for node, snapshot in good.items() if self._store(node, snapshot, rebased, same)}
            if removed is None:
                removed = [n for n in self._snapshots if n not in snapshots]
            for node in removed:
                self._snapshots.pop(node, None)
            to_wake = [(node, list(self._watchers[node])) for node in changed if node in self._watchers]
            self._publication += 1
        for node, watchers in to_wake:
            _notify(node, watchers)
        return SetResult(frozenset(changed), rejected)

    def _consistency(self, snapshot: MeshSnapshot, previous: MeshSnapshot | None) -> str | None:
        """``check_consistent``'s problems (None: consistent). What references can break depends on the
        clusters, listeners and routes, and on the endpoints' names only (secrets neither hold nor answer
        one): a snapshot whose endpoints or secrets changed and nothing else (an instance came or went, a
        new trust bundle) is consistent if the node's last good one is, or has the shape of one checked
        before."""
        if previous is not None and _same_references(previous, snapshot):
            return None
        resources = snapshot.resources
        views = tuple(resources.get(t) for t in (CLUSTER, LISTENER, ROUTES))
        shape = (*map(id, views), tuple(resources.get(ENDPOINTS, ())))
        known = self._checked_shapes.get(shape)
        if known is not None:
            return known[1]
        try:
            check_consistent(snapshot)
            problem = None
        except InconsistentSnapshot as exc:
            problem = "; ".join(exc.problems)
        if len(self._checked_shapes) >= _SHAPE_MEMO_LIMIT:
            self._checked_shapes.popitem(last=False)  # the oldest
        self._checked_shapes[shape] = (views, problem)  # (the views kept alive: their ids stay theirs)
        return problem

    def clear_snapshot(self, node: str) -> None:
        with self._lock:
            self._snapshots.pop(node, None)

    def _store(
        self,
        node: str,
        snapshot: MeshSnapshot,
        rebased: dict[tuple[int, int], MeshSnapshot] | None = None,
        same: dict[tuple[int, int], bool] | None = None,
    ) -> bool:
        previous = self._snapshots.get(node)
        if previous is not None and _same_content(previous, snapshot, same):
            if previous.problems != snapshot.problems:
                self._snapshots[node] = replace(previous, problems=snapshot.problems)
            return False
        key = (id(previous.versions) if previous is not None else 0, id(snapshot.versions))
        template = rebased.get(key) if rebased is not None else None
        if template is None:
            stored = with_versions_of(snapshot, previous)
            if rebased is not None:
                rebased[key] = stored
        else:
            stored = replace(snapshot, versions=template.versions)
        self._snapshots[node] = stored
        status = self._status.get(node)
        if status is not None:
            status.in_sync = False  # until its stream says it runs the new content
        return True

    # -- watches ------------------------------------------------------------------------------------

    def watch(self, node: str, watcher: Watcher) -> Callable[[], None]:
        """Call ``watcher(node)`` (from the thread that sets snapshots) whenever the node's content
        changes. Returns the function that cancels the watch."""
        with self._lock:
            self._watchers.setdefault(node, []).append(watcher)

        def cancel() -> None:
            with self._lock:
                watchers = self._watchers.get(node, [])
                if watcher in watchers:
                    watchers.remove(watcher)
                if not watchers:
                    self._watchers.pop(node, None)

        return cancel

    # -- what each node has applied -----------------------------------------------------------------

    def stream_opened(self, node: str, mode: str) -> None:
        with self._lock:
            status = self._status.setdefault(node, NodeStatus())
            status.streams += 1
            status.mode = mode
            status.connected_at = self._clock()

    def stream_closed(self, node: str) -> None:
        with self._lock:
            status = self._status.get(node)
            if status is None:
                return
            status.streams = max(0, status.streams - 1)
            status.types = {t: replace(s, pending_nonce="") for t, s in status.types.items()}
            if status.streams == 0:
                status.in_sync = False
            if status.streams == 0 and node not in self._snapshots:
                del self._status[node]  # a node we serve nothing: forget it (bounds memory)

    def record_push(self, node: str, type_url: str, version: str, nonce: str) -> None:
        with self._lock:
            status = self._status.setdefault(node, NodeStatus()).of(type_url)
            status.version_sent, status.pending_nonce, status.sent_at = version, nonce, self._clock()
            status.pushes += 1

    def record_ack(self, node: str, type_url: str, version: str) -> None:
        with self._lock:
            status = self._status.setdefault(node, NodeStatus()).of(type_url)
            if status.acked_at is not None:
                status.previous_ack = (status.version_acked, status.acked_at)
            status.version_acked, status.acked_at, status.pending_nonce = version, self._clock(), ""
            status.acks += 1

    def record_nack(self, node: str, type_url: str, rejected_version: str, error: str, code: int) -> None:
        with self._lock:
            status = self._status.setdefault(node, NodeStatus()).of(type_url)
            status.last_nack = Nack(rejected_version, error, code, self._clock())
            status.pending_nonce = ""
            status.nacks += 1
            listeners = self._nack_listeners
        for listener in listeners:  # outside the lock; a listener must not raise (see add_nack_listener)
            listener(node, type_url, rejected_version, error)

    def record_current(self, node: str, type_url: str, current: bool) -> None:
        with self._lock:
            self._status.setdefault(node, NodeStatus()).of(type_url).current = current

    def add_nack_listener(self, listener: NackListener) -> None:
        """``listener(node, type_url, rejected_version, error)`` after every NACK recorded: it must be quick and
        never raise (it runs on the stream's thread: this pure module has no log to report it to)."""
        with self._lock:
            self._nack_listeners = [*self._nack_listeners, listener]

    def add_sync_listener(self, listener: SyncListener) -> None:
        with self._lock:
            self._sync_listeners = [*self._sync_listeners, listener]

    def record_synced(self, node: str, applied: MeshSnapshot | None) -> None:
        """The node runs the content of ``applied`` (the snapshot its stream last served in full); None:
        it no longer runs its current one. A snapshot replaced meanwhile does not count as applied."""
        with self._lock:
            status = self._status.setdefault(node, NodeStatus())
            current = self._snapshots.get(node)
            status.in_sync = applied is not None and current is not None and _same_content(current, applied)
            if applied is not None:
                status.synced_generation = applied.generation
            listeners = self._sync_listeners if status.in_sync else []
        if applied is not None:
            for listener in listeners:
                listener(node, applied)

    def runs_current(self, node: str, type_url: str) -> bool:
        """The node subscribes to ``type_url`` and runs its current content (ACKed, nothing to send)."""
        with self._lock:
            status = self._status.get(node)
            kind = status.types.get(type_url) if status is not None else None
            return kind is not None and kind.current and kind.acks > 0

    def nodes_with(self, type_url: str, name: str) -> set[str]:
        """The nodes whose current snapshot holds resource ``name`` of ``type_url`` (e.g. the callers
        of a service: every node with its endpoints)."""
        with self._lock:
            return {node for node, snapshot in self._snapshots.items() if name in snapshot.of_type(type_url)}

    def connected_nodes(self) -> list[str]:
        with self._lock:
            return sorted(node for node, status in self._status.items() if status.streams)

    def is_synced(self, node: str) -> bool:
        """The node has applied its current snapshot (every subscribed type ACKed)."""
        snapshot = self._snapshots.get(node)
        status = self._status.get(node)
        return (
            snapshot is not None
            and status is not None
            and status.in_sync
            and status.synced_generation == snapshot.generation
        )

    def status(self, node: str) -> NodeStatus | None:
        with self._lock:
            status = self._status.get(node)
            if status is None:
                return None
            return replace(status, types={t: replace(s) for t, s in status.types.items()})

    def clients_view(self) -> dict[str, Any]:
        """JSON-ready: per node, per type: current, sent and ACKed versions, pending nonce, last NACK."""
        with self._lock:
            nodes = sorted(set(self._snapshots) | set(self._status))
            view = {node: self._node_view(node) for node in nodes}
        return {
            "nodes": view,
            "connected": sum(1 for v in view.values() if v["streams"]),
            "in_sync": sum(1 for v in view.values() if v["streams"] and v["in_sync"]),
        }

    def _node_view(self, node: str) -> dict[str, Any]:
        snapshot = self._snapshots.get(node)
        status = self._status.get(node) or NodeStatus()
        types: dict[str, Any] = {}
        for type_url in PUSH_ORDER:
            sent = status.types.get(type_url)
            current = snapshot.version(type_url) if snapshot is not None else None
            if sent is None and (snapshot is None or not snapshot.of_type(type_url)):
                continue  # neither served nor asked for
            sent = sent or TypeStatus()
            nack = sent.last_nack
            types[short_name(type_url)] = {
                "version": current,
                "sent": sent.version_sent or None,
                "sent_at": sent.sent_at,
                "acked": sent.version_acked or None,
                "acked_at": sent.acked_at,
                "previous_acked": None
                if sent.previous_ack is None
                else {"version": sent.previous_ack[0] or None, "at": sent.previous_ack[1]},
                "pending_nonce": sent.pending_nonce or None,
                "current": sent.current,
                "last_nack": None
                if nack is None
                else {"version": nack.version or None, "error": nack.error, "code": nack.code, "at": nack.at},
                "pushes": sent.pushes,
                "acks": sent.acks,
                "nacks": sent.nacks,
            }
        return {
            "streams": status.streams,
            "mode": status.mode or None,
            "connected_at": status.connected_at,
            "generation": snapshot.generation if snapshot is not None else None,
            "synced_generation": status.synced_generation,
            "in_sync": snapshot is not None and status.in_sync and status.synced_generation == snapshot.generation,
            "problems": list(snapshot.problems) if snapshot is not None else [],
            "types": types,
        }


def _same_content(a: MeshSnapshot, b: MeshSnapshot, memo: dict[tuple[int, int], bool] | None = None) -> bool:
    if a is b:
        return True
    if a.wildcard_excluded != b.wildcard_excluded:
        return False
    key = (id(a.versions), id(b.versions))
    known = memo.get(key) if memo is not None else None
    if known is None:
        known = _same_digests(a, b)
        if memo is not None:
            memo[key] = known
    return known


def _same_digests(a: MeshSnapshot, b: MeshSnapshot) -> bool:
    """Every type's content digest is the same in both (the generations in the versions may differ)."""
    versions_a, versions_b = a.versions, b.versions
    for type_url in PUSH_ORDER:
        version_a, version_b = versions_a.get(type_url), versions_b.get(type_url)
        if version_a is version_b:
            continue
        if version_a is None or version_b is None:  # (a type without a version: the empty set's)
            version_a, version_b = a.version(type_url), b.version(type_url)
        if version_a.rpartition("-")[2] != version_b.rpartition("-")[2]:
            return False
    return True


def _same_references(before: MeshSnapshot, after: MeshSnapshot) -> bool:
    """What ``check_consistent`` reads is the same in both: the clusters, listeners and routes (the same
    objects) and the endpoints' names."""
    if any(before.resources.get(t) is not after.resources.get(t) for t in (CLUSTER, LISTENER, ROUTES)):
        return False
    endpoints_before, endpoints_after = before.of_type(ENDPOINTS), after.of_type(ENDPOINTS)
    return endpoints_before is endpoints_after or endpoints_before.keys() == endpoints_after.keys()


def _notify(node: str, watchers: list[Watcher]) -> None:
    for watcher in watchers:
        watcher(node)
