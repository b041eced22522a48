"""The etcd client against a real 3-member etcd on loopback (EtcdCluster): no OVS, so no shared lock needed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cluster.etcd import Compare, EtcdClient, EtcdCompacted, EtcdUnavailable, Op, WatchEvent
from cluster.etcd_process import EtcdCluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(60),
]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    etcd = EtcdCluster(tmp_path, 3, heartbeat_ms=50, election_ms=250)
    try:
        etcd.start()
        yield etcd
    finally:
        etcd.stop()


@pytest.fixture
def client(cluster: EtcdCluster) -> Iterator[EtcdClient]:
    c = EtcdClient.from_urls(cluster.urls_text, timeout_s=2.0)
    try:
        yield c
    finally:
        c.close()


# A loaded 2-core machine runs etcd and the client's threads late: a wait bounded by the client's own timeouts
# allows this many times them.
LOAD_MARGIN = 3.0


def failover_bound_s(client: EtcdClient) -> float:
    """The longest a paused member delays what the client reads or watches, with LOAD_MARGIN: a call gives up
    on it within the client's timeout and restarts the watches on the next member; a watch that no call
    moved leaves it on its own within ``watch_failover_s``."""
    return LOAD_MARGIN * (client.timeout_s + client.watch_failover_s)


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0, describe: Callable[[], str] = str) -> None:
    """``describe`` says what was seen instead when the deadline passes (a failure on a loaded CI machine is
    only explained by what the watch had delivered and whether it had given up)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout_s:.1f}s: {describe()}"
        time.sleep(0.02)


class Recorder:
    def __init__(self) -> None:
        self.events: list[WatchEvent] = []
        self.revisions: list[int] = []
        self.errors: list[Exception] = []
        self.lock = threading.Lock()

    def on_events(self, events: list[WatchEvent], revision: int) -> None:
        with self.lock:
            self.events.extend(events)
            self.revisions.append(revision)

    def on_error(self, error: Exception) -> None:
        with self.lock:
            self.errors.append(error)

    def writes(self) -> list[bytes]:
        """The values delivered, in order, after asserting that no revision came twice or out of order. A
        value repeated at a later revision counts once: it is one put applied twice. The client repeats a
        put whose attempt had no answer in time (a paused or killed member, or a slow commit on a loaded
        machine), and that attempt may have been applied as well; etcd gives each its own revision."""
        with self.lock:
            events = list(self.events)
        revisions = [e.kv.mod_revision for e in events]
        assert revisions == sorted(set(revisions)), f"a revision delivered twice or out of order: {self.seen()}"
        values: list[bytes] = []
        for event in events:
            if not values or values[-1] != event.kv.value:
                values.append(event.kv.value)
        return values

    def seen(self) -> str:
        with self.lock:
            events = [(e.kv.value, e.kv.mod_revision) for e in self.events]
            return f"events (value, revision) {events}, errors {self.errors!r}"


def test_get_put_delete_and_create_only_txn(client: EtcdClient) -> None:
    assert client.get(b"a") is None
    first = client.put(b"a", b"1")
    kv = client.get(b"a")
    assert kv is not None and (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"1", first, first, 1)
    created = client.txn([Compare.create_revision(b"b", "=", 0)], [Op.put(b"b", b"x"), Op.get(b"b")])
    assert created.succeeded and created.responses[0] is None
    got = created.responses[1]
    assert isinstance(got, list) and got[0].value == b"x" and got[0].create_revision == created.revision
    again = client.txn([Compare.create_revision(b"b", "=", 0)], [Op.put(b"b", b"y")], [Op.get(b"b")])
    assert not again.succeeded and again.revision == created.revision
    current = again.responses[0]
    assert isinstance(current, list) and current[0].value == b"x"
    guarded = client.txn([Compare.value(b"b", "=", b"x")], [Op.delete(b"b")])
    assert guarded.succeeded and guarded.responses == [1]
    assert client.get(b"b") is None
    client.delete(b"a")
    assert client.get(b"a") is None


def test_prefix_get_at_a_revision_sorted_by_key(client: EtcdClient) -> None:
    client.put(b"p/b", b"1")
    before = client.put(b"p/a", b"1")
    client.put(b"p/c", b"2")
    client.put(b"q", b"outside")
    client.delete(b"p/a")
    now, revision = client.get_prefix(b"p/")
    assert [kv.key for kv in now] == [b"p/b", b"p/c"] and revision > before
    then, _ = client.get_prefix(b"p/", revision=before)
    assert [(kv.key, kv.value) for kv in then] == [(b"p/a", b"1"), (b"p/b", b"1")]
    limited, _ = client.get_prefix(b"p/", revision=before, limit=1)
    assert [kv.key for kv in limited] == [b"p/a"]
    keys, _ = client.get_prefix(b"p/", keys_only=True)
    assert [kv.value for kv in keys] == [b"", b""]
    ranged, _ = client.get_range(b"p/c", b"r")
    assert [kv.key for kv in ranged] == [b"p/c", b"q"]


def test_lease_keepalive_expiry_and_revoke(client: EtcdClient) -> None:
    kept = client.grant(1)
    client.put(b"kept", b"1", lease=kept)
    for _ in range(6):  # 1.5 s past a 1 s TTL: kept alive
        assert client.keepalive(kept) >= 1
        time.sleep(0.25)
    kv = client.get(b"kept")
    assert kv is not None and kv.lease == kept
    wait_for(lambda: client.get(b"kept") is None)  # no more keep-alives: it expires
    assert client.keepalive(kept) == 0

    revoked = client.grant(30)
    client.put(b"r/1", b"1", lease=revoked)
    client.put(b"r/2", b"2", lease=revoked)
    client.revoke(revoked)
    assert client.get_prefix(b"r/")[0] == []
    assert client.keepalive(revoked) == 0
    client.revoke(revoked)  # already gone: no error


def test_watch_delivers_in_order_from_a_start_revision_and_reports_compaction(client: EtcdClient) -> None:
    start = client.put(b"w/1", b"a")
    client.put(b"w/2", b"b")
    client.delete(b"w/1")
    recorder = Recorder()
    watch = client.watch(b"w/", prefix=True, start_revision=start, on_events=recorder.on_events,
                         on_error=recorder.on_error)  # fmt: skip
    try:
        for i in range(20):
            client.put(f"w/n{i:02d}".encode(), b"x")
        client.put(b"other", b"not watched")
        wait_for(lambda: len(recorder.events) == 23)
        kinds = [(e.kind, e.kv.key) for e in recorder.events[:3]]
        assert kinds == [("put", b"w/1"), ("put", b"w/2"), ("delete", b"w/1")]
        revisions = [e.kv.mod_revision for e in recorder.events]
        assert revisions == sorted(revisions) and revisions[0] == start
        assert [e.kv.key for e in recorder.events[3:]] == [f"w/n{i:02d}".encode() for i in range(20)]
        assert not recorder.errors
    finally:
        watch.cancel()

    last = client.put(b"w/last", b"x")
    client.compact(last)
    late = Recorder()
    client.watch(b"w/", prefix=True, start_revision=start, on_events=late.on_events, on_error=late.on_error)
    wait_for(lambda: bool(late.errors))
    error = late.errors[0]
    assert isinstance(error, EtcdCompacted) and error.compact_revision == last
    assert not late.events
    with pytest.raises(EtcdCompacted):
        client.get_prefix(b"w/", revision=start)


@pytest.mark.parametrize("victim", ["the client's member", "the leader"])
def test_a_killed_member_leaves_the_client_working(cluster: EtcdCluster, client: EtcdClient, victim: str) -> None:
    client.put(b"k", b"0")
    statuses = client.status()
    leader = next(i for i, s in enumerate(statuses) if s.member_id == s.leader_id)
    dead = 0 if victim == "the client's member" else leader  # the channel picks the first member it is given
    recorder = Recorder()
    watch = client.watch(b"k", on_events=recorder.on_events, on_error=recorder.on_error)
    lease = client.grant(30)
    assert client.keepalive(lease) > 0
    try:
        cluster.kill_member(dead)
        for i in range(1, 6):
            client.put(b"k", str(i).encode())
        kv = client.get(b"k")
        assert kv is not None and kv.value == b"5"
        assert client.keepalive(lease) > 0
        wait_for(lambda: bool(recorder.events) and recorder.events[-1].kv.value == b"5")
        assert recorder.writes() == [b"1", b"2", b"3", b"4", b"5"], "the watch resumed without gaps or repeats"
        assert not recorder.errors
        statuses = client.status()
        assert [s.error is not None for s in statuses] == [i == dead for i in range(3)]
        wait_for(lambda: all(s.leader_id != 0 for s in client.status() if s.error is None))
    finally:
        watch.cancel()


def test_all_members_down_raises_unavailable_within_the_timeout(cluster: EtcdCluster) -> None:
    client = EtcdClient.from_urls(cluster.urls_text, timeout_s=1.0)
    try:
        client.put(b"k", b"v")
        for i in range(3):
            cluster.kill_member(i)
        for call in (lambda: client.get(b"k"), lambda: client.put(b"k", b"w"), lambda: client.grant(5)):
            began = time.monotonic()
            with pytest.raises(EtcdUnavailable) as raised:
                call()
            assert time.monotonic() - began < 5.0
            assert cluster.client_urls[0].removeprefix("http://") in str(raised.value)
        assert all(s.error is not None for s in client.status())
    finally:
        client.close()


def test_a_paused_member_is_left_within_the_timeout(cluster: EtcdCluster) -> None:
    client = EtcdClient.from_urls(cluster.urls_text, timeout_s=2.0)
    recorder = Recorder()
    watch = client.watch(b"k", on_events=recorder.on_events, on_error=recorder.on_error)
    try:
        client.put(b"k", b"before")
        cluster.pause(0)  # the member the channel uses: its TCP connection stays open, nothing answers
        began = time.monotonic()
        client.put(b"k", b"after")  # an attempt times out, the channel starts at the next member
        assert time.monotonic() - began < client.timeout_s + 1.0  # its timeout, and a slack for a loaded machine
        kv = client.get(b"k")
        assert kv is not None and kv.value == b"after"
        wait_for(
            lambda: recorder.writes() == [b"before", b"after"],
            failover_bound_s(client),
            recorder.seen,
        )
        assert not recorder.errors
        cluster.resume(0)
        cluster.stop_member(1)
        cluster.start_member(1)  # restarted on its data: back in the cluster
        assert all(s.error is None for s in client.status())
    finally:
        watch.cancel()
        client.close()


def test_a_watch_survives_one_failover_after_another(cluster: EtcdCluster) -> None:
    client = EtcdClient.from_urls(cluster.urls_text, timeout_s=1.0)
    recorder = Recorder()
    watch = client.watch(b"w", on_events=recorder.on_events, on_error=recorder.on_error)
    try:
        for round_, victim in enumerate((0, 1)):  # the member the channel is on each time
            cluster.kill_member(victim)
            time.sleep(1.5)  # longer than the client's timeout between the two failovers
            value = str(round_).encode()
            client.put(b"w", value)

            def delivered(value: bytes = value) -> bool:
                return recorder.writes()[-1:] == [value]

            wait_for(delivered, describe=recorder.seen)
            cluster.start_member(victim)
        assert recorder.writes() == [b"0", b"1"]
        assert not recorder.errors
    finally:
        watch.cancel()
        client.close()


def test_a_watch_alone_leaves_a_paused_member(cluster: EtcdCluster) -> None:
    """No call of its client times out to move it: the watch notices its member went silent by itself."""
    watcher = EtcdClient.from_urls(cluster.urls_text, timeout_s=1.0)
    writer = EtcdClient(cluster.client_urls[1:], timeout_s=2.0)
    recorder = Recorder()
    watch = watcher.watch(b"k", on_events=recorder.on_events, on_error=recorder.on_error)
    try:
        writer.put(b"k", b"before")
        wait_for(lambda: len(recorder.events) == 1)
        cluster.pause(0)  # the watcher's member: its TCP connection stays open, nothing answers
        writer.put(b"k", b"after")
        wait_for(lambda: len(recorder.events) >= 2, failover_bound_s(watcher), recorder.seen)
        assert recorder.writes() == [b"before", b"after"]
        assert not recorder.errors
    finally:
        cluster.resume(0)
        watch.cancel()
        watcher.close()
        writer.close()
