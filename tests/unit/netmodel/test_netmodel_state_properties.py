"""Property tests of FabricState.apply: random event sequences, valid and invalid, on the example state."""

from __future__ import annotations

import os
from dataclasses import replace

import networkx as nx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netmodel_helpers import ALL_SWITCHES, example_state, snapshot

from netmodel import events as ev
from netmodel.ids import NodeId, PortNo, ServiceName, SpiffeId, SwitchId, WorkloadId
from netmodel.state import EventRejected, FabricState
from netmodel.types import Attachment, LinkId, Port, Resources, Workload

# NETMODEL_FUZZ_EXAMPLES=5000 pytest ... for a deeper run; the default keeps the suite fast.
SETTINGS = settings(
    max_examples=int(os.environ.get("NETMODEL_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

UNKNOWN_SWITCHES = (SwitchId(0xDEAD), SwitchId(0xBEEF))
DECLARED_LINKS = tuple(sorted(example_state().topology.links))
NODES = (*sorted(example_state().nodes), NodeId("no-such-node"))
SERVICES = (*sorted(example_state().services), ServiceName("no-such-service"))

switch_ids = st.sampled_from(ALL_SWITCHES + UNKNOWN_SWITCHES).map(SwitchId)
port_nos = st.integers(1, 6).map(PortNo)
ports = st.builds(Port, no=port_nos, name=st.sampled_from(["", "eth1", "eth2"]), up=st.booleans())
times = st.floats(0, 1e6, allow_nan=False)
links = st.one_of(
    st.sampled_from(DECLARED_LINKS),
    st.sampled_from(DECLARED_LINKS).map(LinkId.reversed),
    st.builds(LinkId, switch_ids, port_nos, switch_ids, port_nos),  # mostly unknown links
)
macs = st.sampled_from(["02:00:00:00:00:01", "02:00:00:00:00:0A", "02:00:00:00:00:0a", "02:00:00:00:00:02"])
ips = st.sampled_from(["10.0.1.1", "10.0.2.1", "10.0.3.1", "10.0.7.7", ""])
workloads = st.builds(
    Workload,
    id=st.sampled_from(["w1", "w2", "w3"]).map(WorkloadId),
    service=st.sampled_from(SERVICES),
    spiffe_id=st.just(SpiffeId("spiffe://edge.test/w")),
    resources=st.sampled_from([Resources(100, 64), Resources(500, 256)]),
    node=st.one_of(st.none(), st.sampled_from(NODES)),
    port=st.sampled_from([0, 8080]),
)

events = st.one_of(
    st.builds(ev.SwitchConnected, switch_ids, st.lists(ports, max_size=4).map(tuple), times),
    st.builds(ev.SwitchDisconnected, switch_ids, times),
    st.builds(ev.PortStatusChanged, switch_ids, ports),
    st.builds(ev.PortDeleted, switch_ids, port_nos),
    st.builds(ev.LinkDiscovered, links, times),
    st.builds(ev.LinkWentDown, links),
    st.builds(ev.LinkCameUp, links),
    st.builds(
        ev.LinkLatencyMeasured,
        st.lists(st.tuples(links, st.integers(-10, 50_000)), max_size=3).map(tuple),
        times,
    ),
    # Few links and values: batches that name a link twice, and measurements that repeat.
    st.builds(
        ev.LinkLatencyMeasured,
        st.lists(st.tuples(st.sampled_from(DECLARED_LINKS[:2]), st.sampled_from([-1, 0, 700, 900])), max_size=4).map(
            tuple
        ),
        st.sampled_from([1.0, 2.0]),
    ),
    st.builds(ev.HostLearned, macs, ips, st.builds(Attachment, switch_ids, port_nos), times),
    st.builds(ev.HostsExpired, times),
    st.builds(ev.NodeWentDown, st.sampled_from(NODES)),
    st.builds(ev.NodeCameUp, st.sampled_from(NODES)),
    st.builds(ev.WorkloadPlaced, workloads),
    st.builds(ev.WorkloadRemoved, st.sampled_from(["w1", "w2", "w3", "w9"]).map(WorkloadId)),
    st.builds(
        ev.WorkloadHealthChanged,
        st.sampled_from(["w1", "w2", "w9"]).map(WorkloadId),
        st.booleans(),
        st.sampled_from(["", "app exited (-9)"]),
    ),
)


def run(sequence: list[ev.Event]) -> tuple[FabricState, list[str]]:
    """Apply events in order, skipping rejected ones; return the final state and what happened."""
    state = example_state()
    outcomes = []
    for event in sequence:
        try:
            new = state.apply(event)
        except EventRejected:
            outcomes.append("rejected")
            continue
        outcomes.append("noop" if new is state else "changed")
        state = new
    return state, outcomes


def check_invariants(state: FabricState) -> None:
    topo = state.topology
    graph = topo.graph
    assert nx.is_frozen(graph)
    assert set(graph.nodes) == set(topo.switches)
    assert graph.number_of_edges() == len(topo.links)
    for link, attrs in topo.links.items():
        assert link.src in topo.switches and link.dst in topo.switches, link
        assert graph.has_edge(link.src, link.dst, key=link), link
        if attrs.declared:
            reverse = topo.links.get(link.reversed())
            assert reverse is not None and reverse.declared, link
    for u, v, key in graph.edges(keys=True):
        assert key in topo.links and (key.src, key.dst) == (u, v)
    for switch_id, switch in topo.switches.items():
        assert switch.id == switch_id
        assert switch.declared == (switch_id in ALL_SWITCHES)
    for host in state.hosts.values():
        assert host.attachment is None or host.attachment.switch in topo.switches
    # Every undeclared host has a last sighting (so it can expire), and only those have one; no MAC
    # names two hosts.
    assert set(state.hosts_seen_at) == {h.id for h in state.hosts.values() if not h.declared}
    macs_known = [h.mac.lower() for h in state.hosts.values() if h.mac]
    assert len(macs_known) == len(set(macs_known)), macs_known
    for workload in state.workloads.values():
        assert workload.service in state.services
        assert workload.node is None or workload.node in state.nodes
    assert set(state.unhealthy) <= set(state.workloads)  # health is only ever of a placed instance
    # The declared part of the model never shrinks.
    assert set(ALL_SWITCHES) <= set(topo.switches)
    assert set(DECLARED_LINKS) <= set(topo.links)
    assert set(example_state().hosts) <= set(state.hosts)


@SETTINGS
@given(st.lists(events, max_size=40))
def test_apply_transitions(sequence: list[ev.Event]) -> None:
    state = example_state()
    for event in sequence:
        before = snapshot(state)
        try:
            new = state.apply(event)
        except EventRejected:
            # Rejected: the state is untouched (any other exception fails the test).
            assert snapshot(state) == before
            continue
        # apply never mutates the old state, whatever it returns.
        assert snapshot(state) == before
        if new is state:
            assert new.generation == state.generation
        else:
            assert new.generation == state.generation + 1
            # A new state is a real change: equal content with a bumped generation would make every
            # level-triggered reader recompute for nothing.
            assert replace(new, generation=state.generation) != state, event
        check_invariants(new)
        state = new
    assert example_state().generation == 0


@SETTINGS
@given(st.lists(events, max_size=40))
def test_apply_is_deterministic(sequence: list[ev.Event]) -> None:
    first, outcomes = run(sequence)
    again, outcomes_again = run(sequence)
    assert outcomes == outcomes_again
    assert again == first
    assert snapshot(again) == snapshot(first)
    assert first.generation == outcomes.count("changed")


@SETTINGS
@given(st.lists(events, max_size=25), events)
def test_applying_an_event_twice_changes_nothing_the_second_time(prefix: list[ev.Event], event: ev.Event) -> None:
    """Every event is idempotent: a retried delivery never bumps the generation again."""
    state, _ = run(prefix)
    try:
        once = state.apply(event)
    except EventRejected:
        return
    assert once.apply(event) is once


@SETTINGS
@given(st.lists(events, max_size=40))
def test_link_up_flags_follow_the_last_cable_event(sequence: list[ev.Event]) -> None:
    """After LinkWentDown both directions are down; after LinkCameUp both are up (whatever came before)."""
    state, _ = run(sequence)
    for link in DECLARED_LINKS[:4]:
        down = state.apply(ev.LinkWentDown(link))
        assert not down.topology.links[link].up and not down.topology.links[link.reversed()].up
        up = down.apply(ev.LinkCameUp(link))
        assert up.topology.links[link].up and up.topology.links[link.reversed()].up


latency_batches = st.lists(
    st.tuples(st.sampled_from(DECLARED_LINKS[:3]), st.sampled_from([0, 700, 900])), min_size=1, max_size=5
).map(tuple)


@SETTINGS
@given(st.lists(events, max_size=15), latency_batches)
def test_latency_batch_last_value_wins_and_redelivery_is_a_noop(
    prefix: list[ev.Event], batch: tuple[tuple[LinkId, int], ...]
) -> None:
    state, _ = run(prefix)
    event = ev.LinkLatencyMeasured(batch, 3.0)
    new = state.apply(event)
    for link, latency_us in dict(batch).items():
        assert new.topology.links[link].measured_latency_us == latency_us
    assert new.apply(event) is new
    assert new.apply(ev.LinkLatencyMeasured(batch, 4.0)) is new
