"""One replica in the cluster: its registration, its campaign and what it knows of the leader (adapter).

    member = ClusterMember(client, root, "r1", addresses, on_change=react)
    member.start()          # raises DuplicateReplica when another live replica has the id
    member.may_lead()       # act as the leader now? (elected and the lease surely alive)
    member.stop()           # resigns: the next candidate leads at once

Threads: one keeps the lease alive (every TTL/4) and steps down when it cannot (a replica cut off from
etcd stops acting as the leader before etcd lets another in); one watches the election keys; one holds a
connection to the leader's liveness port, so a leader whose process died (the kernel closes its sockets)
is replaced at once instead of after its TTL: its lease is revoked. A leader that hangs (SIGSTOP) or is
cut off keeps its socket, so it is replaced when its lease expires; the switches' generation_id fences
it if it wakes up. The decisions are ``cluster.election``'s.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from cluster.election import Candidate, CandidateError, Leadership, leader_of, lease_deadline, may_lead
from cluster.etcd import Compare, EtcdClient, EtcdError, Op, Watch, WatchEvent

LOG = logging.getLogger("edgectl.cluster")

DEFAULT_TTL_S = 1
"""etcd's lease TTL (whole seconds). etcd raises a TTL below its minimum (1.5 election timeouts) silently."""
RETRY_S = 0.2
DEADLINE_CHECK_S = 0.05
"""How often a leader compares its lease deadline with the clock (cheap: a lock and a comparison)."""


class DuplicateReplica(RuntimeError):
    """Another running replica holds this replica id."""


class ClusterMember:
    def __init__(
        self,
        client: EtcdClient,
        root: bytes,
        replica_id: str,
        addresses: Candidate,
        *,
        ttl_s: int = DEFAULT_TTL_S,
        on_change: Callable[[Leadership], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        advertise_host: str = "",
    ) -> None:
        self._client = client
        self._root = root.rstrip(b"/")
        self.replica_id = replica_id
        self._addresses = addresses
        self.ttl_s = ttl_s
        self._on_change = on_change
        self._advertise_host = advertise_host
        self._clock = clock
        self._lock = threading.RLock()
        self._lease = 0
        self._deadline = 0.0
        self._candidates: dict[bytes, Candidate] = {}
        self._leadership = Leadership(None, replica_id)
        self._acting = False  # whether this replica last acted as the leader
        self._told: tuple[bool, Candidate | None] | None = None  # what on_change was last told
        self._tell: queue.SimpleQueue[Leadership | None] = queue.SimpleQueue()
        """What to tell on_change, in order, on its own thread: never under our lock, never on an etcd thread
        (a hook may block on a switch; the keepalive must not wait for it)."""
        self._stepping_down = False
        self.fatal = ""
        """Why this replica can no longer campaign (its id taken by another replica while it was cut off)."""
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._liveness_server: socket.socket | None = None
        self._liveness_peers: list[socket.socket] = []
        self._watch: Watch | None = None
        self._watching_leader: Candidate | None = None
        self.etcd_ok = True
        self.etcd_error = ""
        self.leadership_changes = 0
        self.revoked_dead_leaders = 0

    # -- keys ---------------------------------------------------------------------------------------------------
    def _replica_key(self, replica_id: str) -> bytes:
        return self._root + b"/replicas/" + replica_id.encode()

    def _election_key(self, lease: int) -> bytes:
        return self._root + b"/election/%016x" % lease

    @property
    def _election_prefix(self) -> bytes:
        return self._root + b"/election/"

    # -- life ---------------------------------------------------------------------------------------------------
    def start(self) -> ClusterMember:
        self._listen_liveness()
        self._join()
        self._spawn(self._notify, "cluster-notify")
        self._spawn(self._keep_alive, "cluster-lease")
        self._spawn(self._watch_deadline, "cluster-deadline")
        self._spawn(self._follow_election, "cluster-election")
        return self

    def fence(self) -> tuple[bytes, int] | None:
        """While this replica may lead: its election key and that key's revision (its generation). A write
        that only the leader may make is an etcd txn comparing them: once the key is gone (lease expired or
        revoked), the write fails in etcd itself, whatever this process still believes."""
        with self._lock:
            if not self.may_lead():
                return None
            leader = self._leadership.leader
            assert leader is not None
            return self._election_key(self._lease), leader.revision

    def stop(self) -> None:
        """Resign and leave: the lease is revoked, so the next candidate leads without waiting for a TTL."""
        self._stopping.set()
        with self._lock:
            lease, self._lease = self._lease, 0
        if self._watch is not None:
            self._watch.cancel()
        if lease:
            try:
                self._client.revoke(lease)
            except EtcdError as exc:
                LOG.warning("could not resign (the lease expires by itself in %d s): %s", self.ttl_s, exc)
        self._set_leadership(Leadership(None, self.replica_id))
        self._close_liveness()
        self._tell.put(None)
        for thread in self._threads:
            thread.join(2.0)

    def step_down(self, generation: int | None = None) -> None:
        """Stop leading now (a switch refused us as stale): the lease is revoked, so our election key goes, and
        the keepalive thread campaigns again with a new lease, behind every candidate already waiting.
        ``generation``: the one refused; a late refusal of an older generation than ours now is ignored."""
        with self._lock:
            if generation is not None and (not self._leadership.is_leader or generation != self._leadership.generation):
                return
            if self._stepping_down:
                return  # several switches refusing one generation: one step down
            self._stepping_down = True
            lease, self._lease = self._lease, 0
        self._act()
        if lease:
            try:
                self._client.revoke(lease)
            except EtcdError as exc:
                LOG.warning("could not revoke the lease (it expires by itself in %d s): %s", self.ttl_s, exc)
        with self._lock:
            self._stepping_down = False

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _join(self) -> None:
        """A lease, the registration (refused while another replica holds the id) and the campaign key."""
        give_up = self._clock() + 2 * self.ttl_s + 1.0  # a crashed predecessor's lease expires meanwhile
        lease = self._client.grant(self.ttl_s)
        sent = self._clock()
        registration = self._replica_key(self.replica_id)
        candidate = replace(self._addresses, replica_id=self.replica_id, lease=lease)
        while True:
            result = self._client.txn(
                [Compare.create_revision(registration, "=", 0)],
                [
                    Op.put(registration, candidate.encode(), lease=lease),
                    Op.put(self._election_key(lease), candidate.encode(), lease=lease),
                ],
                [Op.get(registration)],
            )
            if result.succeeded:
                break
            if self._clock() >= give_up:
                self._client.revoke(lease)
                held = result.responses[0] if result.responses and isinstance(result.responses[0], list) else []
                since = f" (its key is of revision {held[0].create_revision})" if held else ""
                raise DuplicateReplica(
                    f"replica id {self.replica_id!r} is held by a running replica{since}: pick another --replica-id"
                )
            time.sleep(RETRY_S)
            if self._client.keepalive(lease) <= 0:  # our own lease must live while we wait
                lease = self._client.grant(self.ttl_s)
                candidate = replace(candidate, lease=lease)
            sent = self._clock()
        if self._stopping.is_set():  # stopped while joining: resign what was just won
            self._client.revoke(lease)
            return
        with self._lock:
            self._lease = lease
            self._deadline = lease_deadline(sent, self.ttl_s)
        LOG.info("replica %s joined the cluster (lease %x)", self.replica_id, lease)

    def _rejoin(self) -> None:
        """The lease is gone (expired while cut off, or revoked as dead): campaign again with a new one."""
        with self._lock:
            self._lease = 0
        self._act()
        while not self._stopping.is_set():
            try:
                self._join()
                return
            except DuplicateReplica:
                raise
            except EtcdError as exc:
                self._note_etcd(exc)
                self._stopping.wait(RETRY_S)

    # -- the lease ----------------------------------------------------------------------------------------------
    def _keep_alive(self) -> None:
        period = self.ttl_s / 4
        while not self._stopping.wait(min(period, max(0.01, self._deadline - self._clock()))):
            try:
                self._keep_alive_once()
            except DuplicateReplica as exc:
                self.fatal = str(exc)
                LOG.error("%s: this replica serves as a follower and can never lead again; restart it", exc)
                self._act()
                return
            except Exception:  # a bug here must not end the lease's thread silently: the replica would be mute
                LOG.exception("lease keepalive failed")

    def _watch_deadline(self) -> None:
        """Step down at the lease deadline, whatever a keepalive request is doing: one to an etcd that does not
        answer blocks for the client's timeout, and the next leader may be elected as soon as the lease ends."""
        while not self._stopping.wait(DEADLINE_CHECK_S):
            self._act()

    def _keep_alive_once(self) -> None:
        # First the deadline: a keepalive to an unreachable etcd blocks for its timeout, and a leader must have
        # stopped acting by then (the next one may be elected as soon as the lease ends).
        self._act()
        with self._lock:
            lease = self._lease
        if not lease:  # stepped down: campaign again, behind the others
            self._rejoin()
            return
        sent = self._clock()
        try:
            remaining = self._client.keepalive(lease)
        except EtcdError as exc:
            self._note_etcd(exc)
            self._act()  # the deadline may have passed meanwhile: step down
            return
        self._note_etcd(None)
        if remaining <= 0:
            LOG.warning("replica %s lost its lease (expired or revoked): campaigning again", self.replica_id)
            self._rejoin()
            return
        with self._lock:
            if self._lease == lease:
                self._deadline = lease_deadline(sent, self.ttl_s)
        self._act()

    def _note_etcd(self, error: Exception | None) -> None:
        ok = error is None
        if ok != self.etcd_ok:
            if ok:
                LOG.info("etcd reachable again")
            else:
                LOG.warning("etcd unreachable: %s", error)
        self.etcd_ok, self.etcd_error = ok, "" if error is None else str(error)

    # -- the election -------------------------------------------------------------------------------------------
    def _follow_election(self) -> None:
        while not self._stopping.is_set():
            try:
                kvs, revision = self._client.get_prefix(self._election_prefix)
            except EtcdError as exc:
                self._note_etcd(exc)
                self._stopping.wait(RETRY_S)
                continue
            with self._lock:
                self._candidates = {}
                for kv in kvs:
                    self._add_candidate(kv.key, kv.value, kv.create_revision)
            self._elect()
            failed = threading.Event()

            def on_events(events: list[WatchEvent], _revision: int) -> None:
                with self._lock:
                    for event in events:
                        if event.kind == "put":
                            self._add_candidate(event.kv.key, event.kv.value, event.kv.create_revision)
                        else:
                            self._candidates.pop(event.kv.key, None)
                self._elect()

            def on_error(exc: Exception, failed: threading.Event = failed) -> None:
                LOG.warning("election watch ended: %s", exc)
                failed.set()

            try:
                self._watch = self._client.watch(
                    self._election_prefix,
                    prefix=True,
                    start_revision=revision + 1,
                    on_events=on_events,
                    on_error=on_error,
                )
            except EtcdError as exc:  # not created in time (its member went away after the read): read again
                self._note_etcd(exc)
                self._stopping.wait(RETRY_S)
                continue
            while not self._stopping.is_set() and not failed.wait(0.5):
                pass
            if self._watch is not None:
                self._watch.cancel()

    def _add_candidate(self, key: bytes, value: bytes, revision: int) -> None:
        try:
            self._candidates[key] = Candidate.decode(value, revision)
        except CandidateError as exc:
            LOG.warning("ignoring election key %r: %s", key, exc)

    def _elect(self) -> None:
        with self._lock:
            leader = leader_of(self._candidates.values())
        self._set_leadership(Leadership(leader, self.replica_id))
        if leader is not None and leader.replica_id != self.replica_id:
            self._watch_leader_process(leader)

    def _set_leadership(self, leadership: Leadership) -> None:
        with self._lock:
            self._leadership = leadership
        self._act()

    @property
    def leadership(self) -> Leadership:
        return self._leadership

    @property
    def candidates(self) -> list[Candidate]:
        with self._lock:
            return sorted(self._candidates.values(), key=lambda c: c.revision)

    def may_lead(self) -> bool:
        with self._lock:
            return bool(self._lease) and may_lead(self._leadership, self._clock(), self._deadline)

    def _act(self) -> None:
        """Tell ``on_change`` when this replica starts or stops acting as the leader, or the leader changes.

        While elected but not sure of its lease, a replica is told there is no leader: it must not act as
        one, and must not forward writes to itself."""
        with self._lock:
            acting = self.may_lead() and not self.fatal
            leadership = self._leadership
            if acting != self._acting:
                self._acting = acting
                self.leadership_changes += 1
                LOG.warning(
                    "replica %s %s (generation %d)",
                    self.replica_id,
                    "leads" if acting else "does not lead",
                    leadership.generation,
                )
            told = leadership if acting or not leadership.is_leader else Leadership(None, self.replica_id)
            key = (acting, told.leader)
            if key == self._told or self._on_change is None:
                return
            self._told = key
            self._tell.put(told)

    def _notify(self) -> None:
        while True:
            leadership = self._tell.get()
            if leadership is None or self._on_change is None:
                return
            try:
                self._on_change(leadership)
            except Exception:
                LOG.exception("a leadership hook failed")

    # -- the leader's process -----------------------------------------------------------------------------------
    def _listen_liveness(self) -> None:
        """Listen on the liveness address's host (port 0: any); advertise the port bound, on ``advertise_host``
        when the bind host is a wildcard (another machine cannot reach 0.0.0.0)."""
        host, _, port = self._addresses.liveness.rpartition(":")
        server = socket.create_server((host or "127.0.0.1", int(port or 0)))
        self._liveness_server = server
        bound_host, bound_port = server.getsockname()[:2]
        shown = self._advertise_host or bound_host
        self._addresses = replace(self._addresses, liveness=f"{shown}:{bound_port}")
        self._spawn(self._accept_liveness, "cluster-liveness")

    def _accept_liveness(self) -> None:
        server = self._liveness_server
        while server is not None and not self._stopping.is_set():
            try:
                peer, _ = server.accept()
            except OSError:
                return
            # Held open, never written: its closing is the news. Followers that went away are dropped here.
            self._liveness_peers = [p for p in self._liveness_peers if _open(p)] + [peer]

    def _close_liveness(self) -> None:
        server = self._liveness_server
        if server is not None:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)  # wakes the accept, resets connections not yet accepted
            server.close()
        for peer in self._liveness_peers:
            peer.close()

    def _watch_leader_process(self, leader: Candidate) -> None:
        with self._lock:
            if self._watching_leader == leader or not leader.liveness:
                return
            self._watching_leader = leader
        self._spawn(lambda: self._hold_liveness(leader), "cluster-leader-liveness")

    def _hold_liveness(self, leader: Candidate) -> None:
        """Hold a connection to the leader's liveness port while it leads; revoke its lease when it closes.

        Only a connection that was open and then closed (or reset) means the process died: a refused or
        timed-out connect may be a firewall or a partition, so it is retried, and the lease decides."""
        host, _, port = leader.liveness.rpartition(":")
        while not self._stopping.is_set() and self._still_watching(leader):
            try:
                connection = socket.create_connection((host, int(port)), timeout=2.0)
            except OSError:
                self._stopping.wait(RETRY_S)
                continue
            if self._hold(connection, leader):
                break
        else:
            return
        if self._stopping.is_set() or not self._still_watching(leader):
            return
        LOG.warning("leader %s's process is gone: revoking its lease", leader.replica_id)
        try:
            self._client.revoke(leader.lease)
            self.revoked_dead_leaders += 1
        except EtcdError as exc:
            LOG.warning("could not revoke %s's lease (it expires in %d s): %s", leader.replica_id, self.ttl_s, exc)

    def _still_watching(self, leader: Candidate) -> bool:
        with self._lock:
            return self._watching_leader == leader and self._leadership.leader == leader

    def _hold(self, connection: socket.socket, leader: Candidate) -> bool:
        """Block on the connection: True when the leader's process closed it, False when the leader changed."""
        connection.settimeout(0.5)
        with connection:
            while not self._stopping.is_set() and self._still_watching(leader):
                try:
                    if connection.recv(1) == b"":
                        return True  # closed: its process is gone
                except TimeoutError:
                    continue
                except OSError:
                    return True  # reset: likewise
        return False


def _open(peer: socket.socket) -> bool:
    """Whether a follower's liveness connection is still open (else it is closed here)."""
    try:
        if peer.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b"":
            peer.close()
            return False
    except BlockingIOError:
        return True
    except OSError:
        peer.close()
        return False
    return True
