"""The replicated mode's core against a real 3-member etcd on loopback: the model log (every replica applies
the same events, a late one starts from a checkpoint) and the election (one leader; a resigned, dead, hung
or cut-off leader replaced; a duplicate replica id refused). No OVS: these need no lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import log_bus
from cluster.election import Candidate, Leadership
from cluster.etcd import EtcdClient
from cluster.etcd_process import EtcdCluster
from cluster.log_bus import ClusterBus, NotLeader, ReadOnly
from cluster.member import ClusterMember, DuplicateReplica
from edgectl.bus import EventBus
from edgectl.config import load_fabric
from mininet_topos.controller_process import wait_until
from netmodel.events import SwitchConnected, SwitchDisconnected, WorkloadHealthChanged
from netmodel.fabric import build_state
from netmodel.ids import WorkloadId
from netmodel.state import FabricState

pytestmark = pytest.mark.integration

FABRIC = str(Path(__file__).resolve().parents[2] / "examples" / "edge-cloud.yaml")
ROOT = b"edgectl/test"


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path / "etcd", members=3, heartbeat_ms=50, election_ms=250)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def seed() -> FabricState:
    return build_state(load_fabric(FABRIC))


def new_bus(client: EtcdClient, replica: str, seed: FabricState) -> ClusterBus:
    return ClusterBus(client, ROOT, replica, seed=lambda: seed, local_bus=lambda state: EventBus(state))


def test_every_replica_applies_the_same_log_and_a_late_one_starts_from_a_checkpoint(
    etcd: EtcdCluster, seed: FabricState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_bus, "CHECKPOINT_EVERY", 5)
    clients = [EtcdClient.from_urls(etcd.urls_text) for _ in range(3)]
    first = new_bus(clients[0], "r1", seed)
    first._is_leader = lambda: True  # writes the checkpoints
    second = new_bus(clients[1], "r2", seed)
    buses = [first.start(), second.start()]
    try:
        assert first.cluster_seeded and not second.cluster_seeded
        switch = next(iter(seed.topology.switches.values()))
        futures = []
        for i in range(12):  # from both replicas at once
            event = SwitchConnected(switch.id, (), float(i)) if i % 2 == 0 else SwitchDisconnected(switch.id, float(i))
            futures.append(buses[i % 2].publish(event))
        applied = [f.result(timeout=10).generation for f in futures]
        for publisher in (0, 1):  # each publisher's events applied in the order it published them
            own = applied[publisher::2]
            assert own == sorted(own)
        for i in range(12):  # one log entry each: checkpoints every 5
            event = SwitchConnected(switch.id, (), 20.0 + i) if i % 2 == 0 else SwitchDisconnected(switch.id, 20.0 + i)
            buses[i % 2].publish(event).result(timeout=10)
        wait_until(
            lambda: second.state.generation == first.state.generation, 10, what="both replicas at one generation"
        )
        assert second.state == first.state
        assert first.checkpoint_revision > 0  # written every 5 entries
        late = new_bus(clients[2], "r3", FabricState())  # its own seed is ignored: the cluster has one
        late.start()
        buses.append(late)
        assert not late.cluster_seeded
        assert late.state == first.state
    finally:
        for bus in buses:
            bus.stop()
        for client in clients:
            client.close()


def test_without_etcd_a_replica_keeps_its_model_and_refuses_changes(etcd: EtcdCluster, seed: FabricState) -> None:
    client = EtcdClient.from_urls(etcd.urls_text, timeout_s=1.0)
    bus = new_bus(client, "r1", seed).start()
    try:
        before = bus.state
        for member in range(3):
            etcd.kill_member(member)
        switch = next(iter(seed.topology.switches))
        with pytest.raises(ReadOnly):
            bus.publish(SwitchConnected(switch, (), 1.0)).result(timeout=10)
        assert bus.state == before
        wait_until(lambda: bus.read_only_reason, 10, what="the replica to say it is read-only")
    finally:
        bus.stop()
        client.close()


class Members:
    def __init__(self, etcd: EtcdCluster) -> None:
        self.etcd = etcd
        self.members: dict[str, ClusterMember] = {}
        self.clients: list[EtcdClient] = []
        self.told: dict[str, list[Leadership]] = {}
        self.lock = threading.Lock()

    def start(self, replica: str, ttl_s: int = 1, urls: str = "") -> ClusterMember:
        client = EtcdClient.from_urls(urls or self.etcd.urls_text, timeout_s=0.5)
        self.clients.append(client)
        self.told[replica] = []

        def note(leadership: Leadership, replica: str = replica) -> None:
            with self.lock:
                self.told[replica].append(leadership)

        member = ClusterMember(
            client, ROOT, replica, Candidate(replica, 0, liveness="127.0.0.1:0"), ttl_s=ttl_s, on_change=note
        )
        member.start()
        self.members[replica] = member
        return member

    def leaders(self) -> list[str]:
        return [name for name, member in self.members.items() if member.may_lead()]

    def stop(self) -> None:
        for member in self.members.values():
            member.stop()
        for client in self.clients:
            client.close()


@pytest.fixture
def members(etcd: EtcdCluster) -> Iterator[Members]:
    group = Members(etcd)
    try:
        yield group
    finally:
        group.stop()


def test_one_leader_and_a_resigned_one_is_replaced_at_once(members: Members) -> None:
    for replica in ("r1", "r2", "r3"):
        members.start(replica)
    assert wait_until(lambda: members.leaders() == ["r1"], 5, what="r1 to lead")
    generation = members.members["r1"].leadership.generation
    started = time.monotonic()
    members.members["r1"].stop()
    wait_until(lambda: members.leaders() == ["r2"], 5, interval=0.02, what="r2 to lead")
    assert time.monotonic() - started < 0.9  # no TTL to wait for: the lease was revoked
    assert members.members["r2"].leadership.generation > generation
    r3 = members.members["r3"]  # learns it from its watch, a moment after r2 itself
    wait_until(
        lambda: r3.leadership.leader is not None and r3.leadership.leader.replica_id == "r2", 5, what="r3 to follow r2"
    )


def test_a_dead_leader_is_replaced_before_its_lease_ends(members: Members) -> None:
    for replica in ("r1", "r2"):
        members.start(replica, ttl_s=5)
    wait_until(lambda: members.leaders() == ["r1"], 5, what="r1 to lead")
    leader = members.members["r1"]
    follower = members.members["r2"]
    wait_until(lambda: follower._watching_leader is not None, 5, what="r2 to watch r1's process")
    time.sleep(0.3)  # its liveness connection open
    # What a kill -9 leaves: the process's sockets closed by the kernel, its lease never revoked.
    leader._stopping.set()
    leader._close_liveness()
    started = time.monotonic()
    wait_until(lambda: "r2" in members.leaders(), 4, interval=0.02, what="r2 to lead")
    assert time.monotonic() - started < 2.0  # the TTL is 5 s: the follower revoked the dead leader's lease
    assert members.members["r2"].revoked_dead_leaders == 1


def test_a_leader_cut_off_from_etcd_steps_down_and_is_replaced_after_its_lease(
    etcd: EtcdCluster, members: Members
) -> None:
    members.start("r1", urls=etcd.client_urls[0])  # r1 reaches etcd through one member only
    members.start("r2", urls=",".join(etcd.client_urls[1:]))
    wait_until(lambda: members.leaders() == ["r1"], 5, what="r1 to lead")
    cut_off = members.members["r1"]
    etcd.pause(0)  # r1's member hangs; the other two keep a quorum. r1's process and sockets are fine.
    try:
        started = time.monotonic()
        wait_until(
            lambda: not cut_off.may_lead(), 1.5, interval=0.02, what="r1 to stop acting before its lease could end"
        )
        stepped_down = time.monotonic() - started
        wait_until(lambda: members.leaders() == ["r2"], 5, interval=0.02, what="r2 to lead once r1's lease expired")
        assert stepped_down < time.monotonic() - started  # r1 stopped before r2 started: never two leaders
        assert not cut_off.etcd_ok
    finally:
        etcd.resume(0)


def test_a_second_replica_with_the_same_id_is_refused(members: Members) -> None:
    members.start("r1")
    with pytest.raises(DuplicateReplica, match="r1"):
        members.start("r1")


def test_a_log_entry_written_twice_is_applied_once(etcd: EtcdCluster, seed: FabricState) -> None:
    """An etcd put retried after a timeout may land twice: every replica skips the repeat."""
    clients = [EtcdClient.from_urls(etcd.urls_text) for _ in range(2)]
    buses = [new_bus(clients[0], "r1", seed).start(), new_bus(clients[1], "r2", seed).start()]
    try:
        switch = next(iter(seed.topology.switches))
        after_connect = buses[0].publish(SwitchConnected(switch, (), 1.0)).result(timeout=10)
        after_disconnect = buses[0].publish(SwitchDisconnected(switch, 2.0)).result(timeout=10)
        connected_entry = clients[0].get(ROOT + b"/log")
        assert connected_entry is not None
        # The disconnect's entry written again (its retry): applied twice, the switch would stay disconnected
        # either way, so repeat the connect entry read back at its revision instead.
        kvs, _ = clients[0].get_prefix(ROOT + b"/log", revision=connected_entry.mod_revision - 1)
        clients[0].put(ROOT + b"/log", kvs[0].value)  # the SwitchConnected entry, again
        marker = buses[1].publish(SwitchDisconnected(switch, 3.0)).result(timeout=10)
        for bus in buses:
            wait_until(lambda bus=bus: bus.state.generation >= marker.generation, 10, what="the marker applied")
            assert bus.state.generation == after_disconnect.generation  # the repeat changed nothing
            assert not bus.state.topology.switches[switch].connected
        assert after_connect.generation == after_disconnect.generation - 1
    finally:
        for bus in buses:
            bus.stop()
        for client in clients:
            client.close()


def test_only_the_leader_appends_its_events_and_a_deposed_one_is_refused_by_etcd(
    etcd: EtcdCluster, seed: FabricState
) -> None:
    """A paused leader that wakes up believing it leads: its observations fail in etcd (its key is gone)."""
    client = EtcdClient.from_urls(etcd.urls_text)
    fence: list[tuple[bytes, int] | None] = [None]
    bus = ClusterBus(
        client, ROOT, "r1", seed=lambda: seed, local_bus=lambda state: EventBus(state), fence=lambda: fence[0]
    ).start()
    try:
        switch = next(iter(seed.topology.switches))
        with pytest.raises(NotLeader):  # not leading: a leader's event is not even sent
            bus.publish(SwitchConnected(switch, (), 1.0)).result(timeout=10)
        bus.publish(WorkloadHealthChanged(WorkloadId("nobody-1"), False, "", 1.0))  # anyone's: sent (rejected later)
        lease = client.grant(5)
        key = ROOT + b"/election/test"
        client.put(key, b"r1", lease=lease)
        revision = client.get(key).create_revision  # type: ignore[union-attr]
        fence[0] = (key, revision)
        assert bus.publish(SwitchConnected(switch, (), 2.0)).result(timeout=10).topology.switches[switch].connected
        client.revoke(lease)  # deposed: the key is gone, this process still believes it leads
        with pytest.raises(NotLeader, match="election key is gone"):
            bus.publish(SwitchDisconnected(switch, 3.0)).result(timeout=10)
        assert bus.state.topology.switches[switch].connected
    finally:
        bus.stop()
        client.close()


def test_after_a_lost_quorum_the_log_is_followed_again(etcd: EtcdCluster, seed: FabricState) -> None:
    client = EtcdClient.from_urls(etcd.urls_text, timeout_s=1.0)
    bus = new_bus(client, "r1", seed).start()
    try:
        switch = next(iter(seed.topology.switches))
        etcd.stop_member(1)
        etcd.stop_member(2)  # no quorum: writes and the watch fail
        with pytest.raises(ReadOnly):
            bus.publish(SwitchConnected(switch, (), 1.0)).result(timeout=10)
        wait_until(lambda: bus.read_only_reason, 10, what="read-only")
        time.sleep(3)  # long enough for the log's watch to give up
        etcd.start_member(1)
        etcd.start_member(2)
        wait_until(lambda: not bus.read_only_reason, 20, what="etcd back")
        state = bus.publish(SwitchConnected(switch, (), 2.0)).result(timeout=10)
        assert state.topology.switches[switch].connected
    finally:
        bus.stop()
        client.close()


def test_a_join_token_minted_at_one_replica_is_redeemed_once_at_any(etcd: EtcdCluster) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from cluster.join_tokens import EtcdJoinTokenStore

    clients = [EtcdClient.from_urls(etcd.urls_text) for _ in range(3)]
    stores = [EtcdJoinTokenStore(client, ROOT, time.time) for client in clients]
    try:
        token, expires_at = stores[0].mint("ea-n1", 600)
        assert expires_at > time.time()
        assert stores[1].check(token, "ea-n1") is None  # known at another replica
        with ThreadPoolExecutor(3) as pool:  # three replicas redeeming it at once: one wins
            refusals = list(pool.map(lambda store: store.redeem(token, "ea-n1"), stores))
        assert sum(r is None for r in refusals) == 1
        assert all(r is None or r.kind == "used" for r in refusals), refusals
        assert stores[2].redeem(token, "ea-n1") is not None
    finally:
        for client in clients:
            client.close()


def test_a_revocation_at_one_replica_is_refused_at_every_replica_and_kept_in_etcd(etcd: EtcdCluster) -> None:
    import itertools

    from cluster.revocations import EtcdRevocationStore
    from pki.identities import IdentityManager
    from pki.policy import host_spiffe_id
    from pki.revocation_sync import RevocationSync
    from tests.unit.pki.pki_helpers import NOW, TD, FakeIssuer

    clients = [EtcdClient.from_urls(etcd.urls_text) for _ in range(3)]
    stores = [EtcdRevocationStore(client, ROOT) for client in clients[:2]]
    # Serials are random in a real CA: here each replica's fake issuer counts from its own range.
    managers = [IdentityManager(FakeIssuer(serials=itertools.count(1000 * (i + 1)))) for i in range(len(stores))]
    syncs = [
        RevocationSync(store, manager, lambda _c: None, clock=lambda: NOW)
        for store, manager in zip(stores, managers, strict=True)
    ]
    try:
        for sync, manager in zip(syncs, managers, strict=True):
            sync.load()
            manager.reconcile({"u1": host_spiffe_id(TD, "u1")}, NOW)
        held = managers[1].snapshot.identities["u1"].info.serial
        # Replica 0 cuts a node off and force-rotates u1; replica 1 cuts another node off, unaware.
        managers[0].revoke_identity(f"spiffe://{TD}/node/ea-n1", NOW)
        managers[0].rotate(host_spiffe_id(TD, "u1"), NOW)
        managers[1].revoke_identity(f"spiffe://{TD}/node/ea-n2", NOW)
        syncs[0].flush()
        stale, version = stores[1].read()
        assert stores[1].write(stale, int(str(version)) - 1) is None  # over a newer revision: refused by etcd
        syncs[1].flush()  # writes its view merged with replica 0's, and takes replica 0's in
        both = managers[1].snapshot.revocations
        assert both.identities == {f"spiffe://{TD}/node/ea-n1", f"spiffe://{TD}/node/ea-n2"}
        assert managers[0].snapshot.revocations.serials.keys() <= both.serials.keys()
        assert managers[1].snapshot.identities["u1"].info.serial == held  # its own certificate was not revoked
        syncs[0].flush()
        assert managers[0].snapshot.revocations == both
        # A replica started later (a third client) begins with the whole list.
        late = IdentityManager(FakeIssuer(serials=itertools.count(9000)))
        RevocationSync(EtcdRevocationStore(clients[2], ROOT), late, lambda _c: None, clock=lambda: NOW).load()
        assert late.snapshot.revocations == both
    finally:
        for client in clients:
            client.close()
