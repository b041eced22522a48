"""netmodel.state: every event type's transition on the example fabric."""

from __future__ import annotations

from dataclasses import dataclass, replace

import networkx as nx
import pytest
from netmodel_helpers import C1, C2, EA1, EB1, EC1, M1, M2, M3, example_state, snapshot

from netmodel import events as ev
from netmodel.ids import HostId, NodeId, PortNo, ServiceName, SpiffeId, SwitchId, WorkloadId
from netmodel.state import EventRejected, FabricState
from netmodel.types import (
    DEFAULT_CAPACITY_MBPS,
    Attachment,
    Host,
    LinkId,
    Port,
    Resources,
    Workload,
    frozen_map,
)

UNKNOWN = SwitchId(0xDEAD)

# The example's cables, with the ports the fabric file assigns (see test_netmodel_fabric.py).
EA1_M1 = LinkId(SwitchId(EA1), PortNo(1), SwitchId(M1), PortNo(1))
EA1_M2 = LinkId(SwitchId(EA1), PortNo(2), SwitchId(M2), PortNo(1))
M1_M2 = LinkId(SwitchId(M1), PortNo(3), SwitchId(M2), PortNo(3))
C1_C2 = LinkId(SwitchId(C1), PortNo(2), SwitchId(C2), PortNo(2))


def apply_ok(state: FabricState, event: ev.Event) -> FabricState:
    """Apply an event that must change the state; check the generation and that the old state is intact."""
    before = snapshot(state)
    new = state.apply(event)
    assert new is not state
    assert new.generation == state.generation + 1
    assert snapshot(state) == before
    return new


def assert_noop(state: FabricState, event: ev.Event) -> None:
    assert state.apply(event) is state


def assert_rejected(state: FabricState, event: ev.Event, match: str) -> None:
    before = snapshot(state)
    with pytest.raises(EventRejected, match=match):
        state.apply(event)
    assert snapshot(state) == before


def connected(state: FabricState, *dpids: int, at: float = 1.0) -> FabricState:
    for dpid in dpids:
        ports = tuple(Port(PortNo(n), name=f"p{n}") for n in range(1, 6))
        state = state.apply(ev.SwitchConnected(SwitchId(dpid), ports, at))
    return state


def discovered(state: FabricState, *links: LinkId) -> FabricState:
    for link in links:
        state = state.apply(ev.LinkDiscovered(link, 2.0))
    return state


def workload(wid: str = "web-1", service: str = "web", node: str | None = "ea-n1") -> Workload:
    return Workload(
        id=WorkloadId(wid),
        service=ServiceName(service),
        spiffe_id=SpiffeId(f"spiffe://edge.test/{service}"),
        resources=Resources(500, 256),
        node=None if node is None else NodeId(node),
        port=8080,
    )


# -- the initial state -----------------------------------------------------------------------------


def test_initial_state() -> None:
    state = example_state()
    assert state.generation == 0
    assert not any(s.connected for s in state.topology.switches.values())
    assert all(a.up and a.declared and not a.discovered for a in state.topology.links.values())
    assert state.workloads == {}
    assert state.switch_by_name("m2") is not None and state.switch_by_name("m2").id == M2
    assert state.switch_by_name("nope") is None


def test_event_rejected_is_a_value_error() -> None:
    assert issubclass(EventRejected, ValueError)


def test_unknown_event_type_is_rejected() -> None:
    @dataclass(frozen=True)
    class SomethingHappened:
        what: str

    assert_rejected(example_state(), SomethingHappened("?"), "unknown event type")  # type: ignore[arg-type]


def test_generation_counts_changes_only() -> None:
    state = example_state()
    s1 = state.apply(ev.LinkWentDown(EA1_M1))
    s2 = s1.apply(ev.LinkWentDown(EA1_M1))
    s3 = s2.apply(ev.LinkCameUp(EA1_M1))
    assert (s1.generation, s2.generation, s3.generation) == (1, 1, 2)
    assert s2 is s1
    # Back where it started, but a different generation: states compare generation too.
    assert s3.topology == state.topology and s3 != state


# -- SwitchConnected / SwitchDisconnected -------------------------------------------------------------


def test_switch_connected_known_switch() -> None:
    state = example_state()
    ports = (Port(PortNo(1), "eth1", "02:00:00:00:00:01"), Port(PortNo(2), "eth2", up=False))
    new = apply_ok(state, ev.SwitchConnected(SwitchId(EA1), ports, 12.5))
    switch = new.topology.switches[SwitchId(EA1)]
    assert switch.connected and switch.declared
    assert switch.name == "ea1" and switch.site == "edge-a"
    assert switch.connected_at == 12.5
    assert dict(switch.ports) == {PortNo(1): ports[0], PortNo(2): ports[1]}
    assert new.topology.links == state.topology.links
    assert new.topology.graph is state.topology.graph


def test_switch_connected_again_identically_is_a_noop() -> None:
    state = connected(example_state(), EA1, at=3.0)
    ports = tuple(Port(PortNo(n), name=f"p{n}") for n in range(1, 6))
    assert_noop(state, ev.SwitchConnected(SwitchId(EA1), ports, 3.0))
    # A new session (later time, fewer ports) is a change.
    new = apply_ok(state, ev.SwitchConnected(SwitchId(EA1), ports[:2], 4.0))
    assert set(new.topology.switches[SwitchId(EA1)].ports) == {1, 2}


def test_switch_connected_unknown_switch_is_added_undeclared() -> None:
    state = example_state()
    new = apply_ok(state, ev.SwitchConnected(UNKNOWN, (Port(PortNo(1)),), 1.0))
    switch = new.topology.switches[UNKNOWN]
    assert not switch.declared and switch.connected
    assert switch.name == "dpid:000000000000dead"
    assert switch.site is None
    assert UNKNOWN in new.topology.graph and UNKNOWN not in state.topology.graph


def test_switch_disconnected_takes_its_links_down_both_directions() -> None:
    state = discovered(connected(example_state(), *[EA1, M1, M2]), EA1_M1, EA1_M1.reversed(), M1_M2)
    new = apply_ok(state, ev.SwitchDisconnected(SwitchId(EA1), 9.0))
    assert not new.topology.switches[SwitchId(EA1)].connected
    ea1_links = set(new.topology.links_of(SwitchId(EA1)))
    assert ea1_links == {EA1_M1, EA1_M1.reversed(), EA1_M2, EA1_M2.reversed()}
    for link, attrs in new.topology.links.items():
        if link in ea1_links:
            assert not attrs.up, link
        else:
            assert attrs.up == state.topology.links[link].up, link
    # Only `up` changed: discovery and latency are kept.
    assert new.topology.links[EA1_M1].discovered


def test_switch_disconnected_when_not_connected_or_unknown_is_a_noop() -> None:
    state = example_state()
    assert_noop(state, ev.SwitchDisconnected(SwitchId(EA1), 1.0))  # declared, never connected
    # Not rejected: os-ken reports a session end for a datapath whose handshake never finished.
    assert_noop(state, ev.SwitchDisconnected(UNKNOWN, 1.0))
    gone = connected(state, EA1).apply(ev.SwitchDisconnected(SwitchId(EA1), 2.0))
    assert_noop(gone, ev.SwitchDisconnected(SwitchId(EA1), 3.0))


def test_switch_reconnect_does_not_bring_links_back_until_discovered() -> None:
    state = discovered(connected(example_state(), EA1, M1), EA1_M1, EA1_M1.reversed())
    state = state.apply(ev.SwitchDisconnected(SwitchId(EA1), 5.0))
    state = connected(state, EA1, at=6.0)
    assert not state.topology.links[EA1_M1].up
    state = state.apply(ev.LinkDiscovered(EA1_M1, 7.0))
    assert state.topology.links[EA1_M1].up
    assert not state.topology.links[EA1_M1.reversed()].up  # LLDP proves one direction at a time


# -- ports ------------------------------------------------------------------------------------------


def test_port_status_down_takes_both_directions_of_the_cable_down() -> None:
    state = connected(example_state(), EA1, M1)
    new = apply_ok(state, ev.PortStatusChanged(SwitchId(M1), Port(PortNo(1), "p1", up=False)))
    assert not new.topology.links[EA1_M1].up
    assert not new.topology.links[EA1_M1.reversed()].up
    assert new.topology.switches[SwitchId(M1)].ports[PortNo(1)].up is False
    changed = {link for link in new.topology.links if new.topology.links[link] != state.topology.links[link]}
    assert changed == {EA1_M1, EA1_M1.reversed()}


def test_port_status_down_from_the_destination_end() -> None:
    state = example_state()
    # ea1 port 2 is the source end of EA1_M2 and the destination end of its reverse.
    new = apply_ok(state, ev.PortStatusChanged(SwitchId(EA1), Port(PortNo(2), up=False)))
    assert not new.topology.links[EA1_M2].up and not new.topology.links[EA1_M2.reversed()].up
    assert new.topology.links[EA1_M1].up


def test_port_status_up_does_not_bring_links_up() -> None:
    state = connected(example_state(), EA1)
    down = state.apply(ev.PortStatusChanged(SwitchId(EA1), Port(PortNo(1), "p1", up=False)))
    up = apply_ok(down, ev.PortStatusChanged(SwitchId(EA1), Port(PortNo(1), "p1", up=True)))
    assert up.topology.switches[SwitchId(EA1)].ports[PortNo(1)].up
    assert not up.topology.links[EA1_M1].up  # waits for LLDP


def test_port_status_same_port_is_a_noop_and_new_port_is_added() -> None:
    state = connected(example_state(), EA1)
    assert_noop(state, ev.PortStatusChanged(SwitchId(EA1), Port(PortNo(1), "p1")))
    new = apply_ok(state, ev.PortStatusChanged(SwitchId(EA1), Port(PortNo(42), "p42")))
    assert PortNo(42) in new.topology.switches[SwitchId(EA1)].ports
    assert new.topology.links == state.topology.links
    renamed = apply_ok(state, ev.PortStatusChanged(SwitchId(EA1), Port(PortNo(1), "renamed")))
    assert renamed.topology.links == state.topology.links


def test_port_status_unknown_switch_rejected() -> None:
    assert_rejected(example_state(), ev.PortStatusChanged(UNKNOWN, Port(PortNo(1))), "unknown switch")


def test_port_deleted() -> None:
    state = connected(example_state(), EA1)
    new = apply_ok(state, ev.PortDeleted(SwitchId(EA1), PortNo(1)))
    assert PortNo(1) not in new.topology.switches[SwitchId(EA1)].ports
    assert not new.topology.links[EA1_M1].up and not new.topology.links[EA1_M1.reversed()].up
    assert_noop(new, ev.PortDeleted(SwitchId(EA1), PortNo(1)))
    assert_noop(state, ev.PortDeleted(SwitchId(EA1), PortNo(77)))
    assert_rejected(state, ev.PortDeleted(UNKNOWN, PortNo(1)), "unknown switch")


# -- links ------------------------------------------------------------------------------------------


def test_link_discovered_marks_a_declared_link_discovered() -> None:
    state = example_state()
    new = apply_ok(state, ev.LinkDiscovered(EA1_M1, 3.0))
    attrs = new.topology.links[EA1_M1]
    assert attrs.discovered and attrs.up and attrs.declared
    assert attrs.declared_latency_us == 2000
    assert not new.topology.links[EA1_M1.reversed()].discovered
    assert new.topology.graph is state.topology.graph
    assert_noop(new, ev.LinkDiscovered(EA1_M1, 4.0))


def test_link_discovered_brings_a_down_link_up() -> None:
    state = discovered(example_state(), EA1_M1).apply(ev.LinkWentDown(EA1_M1))
    assert not state.topology.links[EA1_M1].up
    new = apply_ok(state, ev.LinkDiscovered(EA1_M1, 5.0))
    assert new.topology.links[EA1_M1].up
    assert not new.topology.links[EA1_M1.reversed()].up


def test_link_discovered_undeclared_link_is_added() -> None:
    state = example_state()
    link = LinkId(SwitchId(EA1), PortNo(9), SwitchId(C2), PortNo(9))
    new = apply_ok(state, ev.LinkDiscovered(link, 1.0))
    attrs = new.topology.links[link]
    assert not attrs.declared and attrs.discovered and attrs.up
    assert attrs.capacity_mbps == DEFAULT_CAPACITY_MBPS and attrs.declared_latency_us is None
    assert link.reversed() not in new.topology.links
    assert new.topology.graph.has_edge(EA1, C2, key=link)
    assert not state.topology.graph.has_edge(EA1, C2)


def test_link_discovered_unknown_switch_rejected() -> None:
    state = example_state()
    assert_rejected(state, ev.LinkDiscovered(LinkId(UNKNOWN, PortNo(1), SwitchId(M1), PortNo(9)), 1.0), "unknown")
    assert_rejected(state, ev.LinkDiscovered(LinkId(SwitchId(M1), PortNo(9), UNKNOWN, PortNo(1)), 1.0), "unknown")


def test_link_discovered_between_undeclared_switches() -> None:
    state = example_state().apply(ev.SwitchConnected(UNKNOWN, (), 1.0))
    link = LinkId(UNKNOWN, PortNo(1), SwitchId(M3), PortNo(9))
    new = apply_ok(state, ev.LinkDiscovered(link, 2.0))
    assert link in new.topology.links


def test_link_down_takes_both_directions_down() -> None:
    state = example_state()
    new = apply_ok(state, ev.LinkWentDown(C1_C2.reversed()))
    assert not new.topology.links[C1_C2].up and not new.topology.links[C1_C2.reversed()].up
    assert sum(not a.up for a in new.topology.links.values()) == 2
    assert_noop(new, ev.LinkWentDown(C1_C2))


def test_link_down_of_one_direction_only_link() -> None:
    link = LinkId(SwitchId(EA1), PortNo(9), SwitchId(C2), PortNo(9))
    state = example_state().apply(ev.LinkDiscovered(link, 1.0))
    new = apply_ok(state, ev.LinkWentDown(link))
    assert not new.topology.links[link].up
    assert link.reversed() not in new.topology.links


def test_link_up_brings_both_directions_up() -> None:
    state = example_state().apply(ev.LinkWentDown(M1_M2))
    new = apply_ok(state, ev.LinkCameUp(M1_M2))
    assert new.topology.links[M1_M2].up and new.topology.links[M1_M2.reversed()].up
    assert_noop(new, ev.LinkCameUp(M1_M2.reversed()))


def test_link_events_on_unknown_links_are_rejected() -> None:
    state = example_state()
    bogus = LinkId(SwitchId(EA1), PortNo(1), SwitchId(M2), PortNo(1))  # known switches, wrong ports
    assert_rejected(state, ev.LinkWentDown(bogus), "unknown link")
    assert_rejected(state, ev.LinkCameUp(bogus), "unknown link")
    assert_rejected(state, ev.LinkLatencyMeasured(((bogus, 10),), 1.0), "unknown link")


def test_link_latency_measured() -> None:
    state = example_state()
    new = apply_ok(state, ev.LinkLatencyMeasured(((EA1_M1, 2600), (M1_M2, 900)), 8.0))
    assert new.topology.links[EA1_M1].measured_latency_us == 2600
    assert new.topology.links[EA1_M1].measured_at == 8.0
    assert new.topology.links[EA1_M1].latency_us == 2600
    assert new.topology.links[EA1_M1.reversed()].measured_latency_us is None  # per direction
    assert new.topology.graph is state.topology.graph
    weight = new.topology.latency_weight()
    assert weight(EA1, M1, new.topology.graph[EA1][M1]) == 2600
    # Same values again (later): nothing changed.
    assert_noop(new, ev.LinkLatencyMeasured(((EA1_M1, 2600), (M1_M2, 900)), 9.0))
    assert_noop(new, ev.LinkLatencyMeasured((), 9.0))


def test_link_latency_measured_shifts_shortest_path() -> None:
    state = example_state()
    weight = state.topology.latency_weight()
    assert nx.shortest_path(state.topology.graph, EA1, M1, weight=weight) == [EA1, M1]
    slow = state.apply(ev.LinkLatencyMeasured(((EA1_M1, 9000),), 1.0))
    assert nx.shortest_path(slow.topology.graph, EA1, M1, weight=slow.topology.latency_weight()) == [EA1, M2, M1]


def test_link_latency_measured_same_link_twice_last_value_wins_and_is_idempotent() -> None:
    state = example_state()
    event = ev.LinkLatencyMeasured(((EA1_M1, 500), (EA1_M1, 700)), 1.0)
    once = apply_ok(state, event)
    assert once.topology.links[EA1_M1].measured_latency_us == 700
    assert_noop(once, event)  # a redelivered batch changes nothing
    assert_noop(once, ev.LinkLatencyMeasured(((EA1_M1, 500), (EA1_M1, 700)), 2.0))


def test_link_latency_measured_rejects_the_whole_batch() -> None:
    state = example_state()
    bogus = LinkId(SwitchId(EA1), PortNo(7), SwitchId(M1), PortNo(7))
    assert_rejected(state, ev.LinkLatencyMeasured(((EA1_M1, 10), (bogus, 10)), 1.0), "unknown link")
    assert_rejected(state, ev.LinkLatencyMeasured(((EA1_M1, 10), (M1_M2, -1)), 1.0), "negative latency")


# -- hosts ------------------------------------------------------------------------------------------


def test_host_learned_matches_a_declared_host_by_ip() -> None:
    state = example_state()
    at = Attachment(SwitchId(EA1), PortNo(3))
    new = apply_ok(state, ev.HostLearned("02:AA:00:00:00:01", "10.0.1.1", at, 1.0))
    host = new.hosts[HostId("u1")]
    assert host.declared and host.mac == "02:aa:00:00:00:01" and host.attachment == at
    assert len(new.hosts) == len(state.hosts)
    assert_noop(new, ev.HostLearned("02:aa:00:00:00:01", "10.0.1.1", at, 2.0))


def test_host_learned_matches_by_mac_case_insensitively_and_follows_moves() -> None:
    hosts = dict(example_state().hosts)
    hosts[HostId("u1")] = replace(hosts[HostId("u1")], mac="02:aa:00:00:00:01")
    state = replace(example_state(), hosts=frozen_map(hosts))
    moved = Attachment(SwitchId(EB1), PortNo(9))
    new = apply_ok(state, ev.HostLearned("02:AA:00:00:00:01", "10.0.2.99", moved, 1.0))
    assert new.hosts[HostId("u1")].attachment == moved
    assert new.hosts[HostId("u1")].ip == "10.0.2.99"
    assert len(new.hosts) == len(state.hosts)


def test_host_learned_declared_mac_wins_over_ip() -> None:
    hosts = dict(example_state().hosts)
    hosts[HostId("u1")] = replace(hosts[HostId("u1")], mac="02:aa:00:00:00:01")
    state = replace(example_state(), hosts=frozen_map(hosts))
    # u1's ip, a different mac: u1 has a declared mac, so this is someone else.
    new = apply_ok(state, ev.HostLearned("02:bb:00:00:00:02", "10.0.1.1", Attachment(SwitchId(EA1), PortNo(3)), 1.0))
    assert new.hosts[HostId("u1")] == state.hosts[HostId("u1")]
    assert not new.hosts[HostId("02:bb:00:00:00:02")].declared


def test_host_learned_unknown_host_is_added_undeclared() -> None:
    state = example_state()
    at = Attachment(SwitchId(EC1), PortNo(8))
    new = apply_ok(state, ev.HostLearned("02:CC:00:00:00:07", "10.0.3.77", at, 1.0))
    host = new.hosts[HostId("02:cc:00:00:00:07")]
    assert host == Host(HostId("02:cc:00:00:00:07"), at, "10.0.3.77", "02:cc:00:00:00:07", declared=False)
    assert len(new.hosts) == len(state.hosts) + 1
    # Seen again elsewhere: the same undeclared host moves.
    moved = apply_ok(new, ev.HostLearned("02:cc:00:00:00:07", "10.0.3.77", Attachment(SwitchId(EB1), PortNo(8)), 2))
    assert len(moved.hosts) == len(new.hosts)
    assert moved.hosts[HostId("02:cc:00:00:00:07")].attachment.switch == EB1


def test_host_learned_unknown_switch_rejected() -> None:
    event = ev.HostLearned("02:00:00:00:00:01", "10.0.1.1", Attachment(UNKNOWN, PortNo(1)), 1.0)
    assert_rejected(example_state(), event, "unknown switch")


# -- nodes ------------------------------------------------------------------------------------------


def test_node_down_and_up() -> None:
    state = example_state()
    down = apply_ok(state, ev.NodeWentDown(NodeId("m-n1")))
    assert not down.nodes[NodeId("m-n1")].up and state.nodes[NodeId("m-n1")].up
    assert_noop(down, ev.NodeWentDown(NodeId("m-n1")))
    up = apply_ok(down, ev.NodeCameUp(NodeId("m-n1")))
    assert up.nodes == state.nodes
    assert_noop(state, ev.NodeCameUp(NodeId("m-n1")))


def test_node_events_unknown_node_rejected() -> None:
    assert_rejected(example_state(), ev.NodeWentDown(NodeId("nope")), "unknown node")
    assert_rejected(example_state(), ev.NodeCameUp(NodeId("nope")), "unknown node")


# -- workloads --------------------------------------------------------------------------------------


def test_workload_placed_and_moved_and_removed() -> None:
    state = example_state()
    placed = apply_ok(state, ev.WorkloadPlaced(workload()))
    assert placed.workloads[WorkloadId("web-1")].node == "ea-n1"
    assert [w.id for w in placed.workloads_on(NodeId("ea-n1"))] == ["web-1"]
    assert_noop(placed, ev.WorkloadPlaced(workload()))
    moved = apply_ok(placed, ev.WorkloadPlaced(workload(node="eb-n1")))
    assert moved.workloads_on(NodeId("ea-n1")) == []
    assert [w.id for w in moved.workloads_on(NodeId("eb-n1"))] == ["web-1"]
    assert len(moved.workloads) == 1
    removed = apply_ok(moved, ev.WorkloadRemoved(WorkloadId("web-1")))
    assert removed.workloads == {}
    assert_noop(removed, ev.WorkloadRemoved(WorkloadId("web-1")))


def test_workload_pending_without_node() -> None:
    new = apply_ok(example_state(), ev.WorkloadPlaced(workload(node=None)))
    assert new.workloads[WorkloadId("web-1")].node is None


def test_workload_placed_unknown_service_or_node_rejected() -> None:
    state = example_state()
    assert_rejected(state, ev.WorkloadPlaced(workload(service="nope")), "unknown service")
    assert_rejected(state, ev.WorkloadPlaced(workload(node="nope")), "unknown node")


def test_workload_removed_unknown_is_a_noop() -> None:
    assert_noop(example_state(), ev.WorkloadRemoved(WorkloadId("never-placed")))


def test_workload_health_changed_is_idempotent_and_ends_with_a_new_placement_or_removal() -> None:
    placed = apply_ok(example_state(), ev.WorkloadPlaced(workload()))
    web = WorkloadId("web-1")
    assert placed.unhealthy == {}
    assert_noop(placed, ev.WorkloadHealthChanged(web, healthy=True))
    sick = apply_ok(placed, ev.WorkloadHealthChanged(web, healthy=False, reason="app exited (-9)", at=5.0))
    assert sick.unhealthy == {web: "app exited (-9)"}
    assert sick.workloads == placed.workloads  # still placed: failover decides where it goes
    assert_noop(sick, ev.WorkloadHealthChanged(web, healthy=False, reason="sidecar exited (0)"))  # first reason kept
    assert apply_ok(sick, ev.WorkloadHealthChanged(web, healthy=True)).unhealthy == {}
    assert apply_ok(sick, ev.WorkloadPlaced(workload(node="eb-n1"))).unhealthy == {}  # new processes
    assert apply_ok(sick, ev.WorkloadRemoved(web)).unhealthy == {}
    unnamed = apply_ok(placed, ev.WorkloadHealthChanged(web, healthy=False))
    assert unnamed.unhealthy[web]  # a reason is always given


def test_workload_health_of_an_unknown_workload_is_rejected() -> None:
    assert_rejected(example_state(), ev.WorkloadHealthChanged(WorkloadId("gone"), healthy=False), "unknown workload")


def test_a_start_beside_the_sidecar_lasts_until_a_health_report_a_new_placement_or_removal() -> None:
    placed = apply_ok(example_state(), ev.WorkloadPlaced(workload()))
    web = WorkloadId("web-1")
    starting = apply_ok(placed, ev.WorkloadStarting(web, at=3.0))
    assert starting.starting == {web: 3.0}
    assert starting.unhealthy == {}  # no failure: failover leaves it alone
    assert_noop(starting, ev.WorkloadStarting(web, at=4.0))  # the first time kept
    listening = apply_ok(starting, ev.WorkloadHealthChanged(web, healthy=True, reason="app listening"))
    assert listening.starting == {} and listening.unhealthy == {}
    failed = apply_ok(starting, ev.WorkloadHealthChanged(web, healthy=False, reason="app exited (1)"))
    assert failed.starting == {} and failed.unhealthy == {web: "app exited (1)"}
    assert apply_ok(starting, ev.WorkloadPlaced(workload(node="eb-n1"))).starting == {}  # new processes
    assert apply_ok(starting, ev.WorkloadRemoved(web)).starting == {}
    # A crashed instance restarted beside its sidecar: unhealthy until its app listens again.
    restarting = apply_ok(failed, ev.WorkloadStarting(web, at=9.0))
    assert restarting.starting == {web: 9.0} and web in restarting.unhealthy
    assert_rejected(placed, ev.WorkloadStarting(WorkloadId("gone")), "unknown workload")


# -- the shared example state itself ----------------------------------------------------------------


def test_example_state_is_never_mutated_by_these_tests() -> None:
    state = example_state()
    assert state.generation == 0
    assert all(a.up and not a.discovered for a in state.topology.links.values())
    assert not any(s.connected for s in state.topology.switches.values())
    assert all(h.mac == "" for h in state.hosts.values())
    assert state.workloads == {}
    assert set(state.topology.switches) == {EA1, EB1, EC1, M1, M2, M3, C1, C2}


# -- a node's access port decides whether the node is up ------------------------------------------

# ea-n1 plugs into ea1 port 4 (the fabric file's assignment); nothing else is attached there.
EA_N1 = NodeId("ea-n1")
EA_N1_PORT = PortNo(4)


def test_access_port_down_takes_its_node_down_in_the_same_step() -> None:
    state = connected(example_state(), EA1)
    assert state.nodes[EA_N1].attachment == Attachment(SwitchId(EA1), EA_N1_PORT)
    new = apply_ok(state, ev.PortStatusChanged(SwitchId(EA1), Port(EA_N1_PORT, "p4", up=False)))
    assert not new.nodes[EA_N1].up
    assert new.topology.switches[SwitchId(EA1)].ports[EA_N1_PORT].up is False
    # Only the attached node: every other node is the very same object.
    assert all(new.nodes[n] is state.nodes[n] for n in state.nodes if n != EA_N1)


def test_access_port_up_again_brings_its_node_up() -> None:
    state = connected(example_state(), EA1)
    down = state.apply(ev.PortStatusChanged(SwitchId(EA1), Port(EA_N1_PORT, "p4", up=False)))
    up = apply_ok(down, ev.PortStatusChanged(SwitchId(EA1), Port(EA_N1_PORT, "p4", up=True)))
    assert up.nodes[EA_N1].up
    assert up.nodes == state.nodes


def test_a_change_to_an_access_port_that_stays_up_keeps_a_node_down_from_elsewhere() -> None:
    state = connected(example_state(), EA1).apply(ev.NodeWentDown(EA_N1))
    renamed = apply_ok(state, ev.PortStatusChanged(SwitchId(EA1), Port(EA_N1_PORT, "renamed")))
    assert not renamed.nodes[EA_N1].up
    assert renamed.nodes is state.nodes


def test_port_events_elsewhere_leave_nodes_alone() -> None:
    state = connected(example_state(), EA1)
    # ea1 port 1 carries the cable to m1, not a node: the links change, the nodes do not.
    new = apply_ok(state, ev.PortStatusChanged(SwitchId(EA1), Port(PortNo(1), "p1", up=False)))
    assert new.nodes is state.nodes
    # ea-n1's port number on another switch is not ea-n1's port.
    other = apply_ok(state, ev.PortStatusChanged(SwitchId(M1), Port(EA_N1_PORT, up=False)))
    assert other.nodes is state.nodes


def test_access_port_down_again_is_a_noop() -> None:
    state = connected(example_state(), EA1)
    down = state.apply(ev.PortStatusChanged(SwitchId(EA1), Port(EA_N1_PORT, "p4", up=False)))
    assert_noop(down, ev.PortStatusChanged(SwitchId(EA1), Port(EA_N1_PORT, "p4", up=False)))
    # Renaming the port while it is down changes the port, not the node (it is down already).
    again = apply_ok(down, ev.PortStatusChanged(SwitchId(EA1), Port(EA_N1_PORT, "renamed", up=False)))
    assert again.nodes is down.nodes


def test_access_port_deleted_takes_its_node_down() -> None:
    state = connected(example_state(), EA1)
    new = apply_ok(state, ev.PortDeleted(SwitchId(EA1), EA_N1_PORT))
    assert not new.nodes[EA_N1].up
    assert all(new.nodes[n] is state.nodes[n] for n in state.nodes if n != EA_N1)
    assert_noop(new, ev.PortDeleted(SwitchId(EA1), EA_N1_PORT))
    # The port comes back (an OFPPR_ADD reports it up): so does the node.
    back = apply_ok(new, ev.PortStatusChanged(SwitchId(EA1), Port(EA_N1_PORT, "p4")))
    assert back.nodes[EA_N1].up


def test_switch_disconnected_leaves_its_nodes_up() -> None:
    state = connected(example_state(), EA1)
    new = apply_ok(state, ev.SwitchDisconnected(SwitchId(EA1), 9.0))
    assert new.nodes[EA_N1].up
    assert new.nodes is state.nodes


def test_a_reconnecting_switch_reports_what_its_access_ports_did_while_away() -> None:
    state = connected(example_state(), EA1)
    away = state.apply(ev.SwitchDisconnected(SwitchId(EA1), 2.0))
    ports_down = tuple(Port(PortNo(n), name=f"p{n}", up=n != EA_N1_PORT) for n in range(1, 6))
    back_down = apply_ok(away, ev.SwitchConnected(SwitchId(EA1), ports_down, 3.0))
    assert not back_down.nodes[EA_N1].up  # its port went down while the switch was away
    assert all(back_down.nodes[n] is state.nodes[n] for n in state.nodes if n != EA_N1)
    gone_again = back_down.apply(ev.SwitchDisconnected(SwitchId(EA1), 4.0))
    all_up = tuple(Port(PortNo(n), name=f"p{n}") for n in range(1, 6))
    back_up = apply_ok(gone_again, ev.SwitchConnected(SwitchId(EA1), all_up, 5.0))
    assert back_up.nodes[EA_N1].up  # and came back up


def test_a_first_connect_with_every_port_up_keeps_a_node_down_from_elsewhere() -> None:
    state = example_state().apply(ev.NodeWentDown(EA_N1))
    new = connected(state, EA1)
    assert not new.nodes[EA_N1].up and new.nodes is state.nodes
