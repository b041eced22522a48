"""The incremental ACL compile (sdnctl/acl.py ``compile_acl_incremental``) gives exactly the full
compile's tables after every change of its inputs, and its changed entries turn the previous tables
into the new ones (so the engine, applying only those, holds what a full compile would give)."""

from __future__ import annotations

from dataclasses import replace
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sdnctl_helpers import connect_all, discover_all, fabric

from netmodel import events as ev
from netmodel.ids import HostId, NodeId, PortNo, ServiceName, SpiffeId, SwitchId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import AllowRule, Attachment, Host, PolicyDefault, Port, Resources, Workload, frozen_map
from sdnctl import acl
from sdnctl.acl import EMPTY, AclTables, compile_acl, compile_acl_incremental
from sdnctl.flows import Entry

TD = "t.example"
FABRIC = """
switches: [{id: a, dpid: 1, site: s}, {id: b, dpid: 2, site: s}, {id: c, dpid: 3, site: s}]
links: [{a: a, b: b, latency_ms: 1, bandwidth_mbps: 100}, {a: b, b: c, latency_ms: 1, bandwidth_mbps: 100}]
hosts: [{id: u1, switch: a, ip: 10.0.0.1, mac: "02:00:00:00:00:01"}, {id: u2, switch: c, ip: 10.0.0.2}]
nodes:
  - {id: n1, site: s, switch: b, cpu_millis: 1000, memory_mib: 1024, ip: 10.0.0.10}
  - {id: n2, site: s, switch: a, cpu_millis: 1000, memory_mib: 1024, ip: 10.0.0.11}
  - {id: n3, site: s, switch: c, cpu_millis: 1000, memory_mib: 1024, ip: 10.0.0.12}
services:
  - {name: web, port: 8080, replicas: 1, cpu_millis: 100, memory_mib: 64}
  - {name: api, port: 9090, replicas: 1, cpu_millis: 100, memory_mib: 64}
  - {name: db, port: 5432, replicas: 1, cpu_millis: 100, memory_mib: 64}
"""
SERVICES = ("web", "api", "db")
NODES = ("n1", "n2", "n3")
RULES = (
    AllowRule(host=HostId("u1")),
    AllowRule(host=HostId("u2")),
    AllowRule(host=HostId("h9")),
    AllowRule(service=ServiceName("web")),
    AllowRule(service=ServiceName("api")),
)


def start() -> FabricState:
    """Switches a and b connected (c not yet), the a-b link discovered."""
    state = fabric(FABRIC)
    state = connect_all(state, [SwitchId(1), SwitchId(2)])
    links = [link for link in state.topology.links if {link.src, link.dst} == {1, 2}]
    return discover_all(state, links)


def place(state: FabricState, wid: int, service: str, node: str, port: int) -> FabricState:
    workload = Workload(
        WorkloadId(f"w{wid}"),
        ServiceName(service),
        SpiffeId(f"spiffe://{TD}/svc/{service}/w/w{wid}"),
        Resources(1, 1),
        NodeId(node),
        port=port,
    )
    return state.apply(ev.WorkloadPlaced(workload))


def remove(state: FabricState, wid: int) -> FabricState:
    if WorkloadId(f"w{wid}") not in state.workloads:
        return state
    return state.apply(ev.WorkloadRemoved(WorkloadId(f"w{wid}")))


def allow(state: FabricState, service: str, rules: tuple[AllowRule, ...]) -> FabricState:
    services = dict(state.services)
    services[ServiceName(service)] = replace(services[ServiceName(service)], allow_from=rules)
    return replace(state, services=frozen_map(services), generation=state.generation + 1)


def default(state: FabricState, allow_all: bool) -> FabricState:
    policy = PolicyDefault.ALLOW if allow_all else PolicyDefault.DENY
    return replace(state, default_policy=policy, generation=state.generation + 1)


def declare_host(state: FabricState, n: int, switch: int, port: int, with_mac: bool) -> FabricState:
    hosts = dict(state.hosts)
    mac = f"02:00:00:00:01:{n:02x}" if with_mac else ""
    host = Host(HostId(f"h{n}"), Attachment(SwitchId(switch), PortNo(port)), f"10.0.1.{n}", mac)
    hosts[host.id] = host
    return replace(state, hosts=frozen_map(hosts), generation=state.generation + 1)


def learn_host(state: FabricState, n: int, switch: int, port: int) -> FabricState:
    learned = ev.HostLearned(f"02:00:00:00:02:{n:02x}", f"10.0.2.{n}", Attachment(SwitchId(switch), PortNo(port)), 0.0)
    return state.apply(learned)


def readdress(state: FabricState, node: str, last: int) -> FabricState:
    nodes = dict(state.nodes)
    nodes[NodeId(node)] = replace(nodes[NodeId(node)], ip=f"10.0.0.{last}")
    return replace(state, nodes=frozen_map(nodes), generation=state.generation + 1)


def connect(state: FabricState, switch: int, ports: tuple[int, ...]) -> FabricState:
    return state.apply(ev.SwitchConnected(SwitchId(switch), tuple(Port(PortNo(p), f"p{p}") for p in ports), 0.0))


def disconnect(state: FabricState, switch: int) -> FabricState:
    return state.apply(ev.SwitchDisconnected(SwitchId(switch), 0.0))


def discover_b_c(state: FabricState) -> FabricState:
    return discover_all(state, [link for link in state.topology.links if {link.src, link.dst} == {2, 3}])


switches = st.sampled_from((1, 2, 3))
edge_port = st.integers(min_value=2, max_value=6)
CHANGES = st.one_of(
    st.tuples(
        st.just(place), st.integers(0, 7), st.sampled_from(SERVICES), st.sampled_from(NODES), st.integers(8000, 8003)
    ),
    st.tuples(st.just(remove), st.integers(0, 7)),
    st.tuples(st.just(allow), st.sampled_from(SERVICES), st.lists(st.sampled_from(RULES), max_size=3).map(tuple)),
    st.tuples(st.just(default), st.booleans()),
    st.tuples(st.just(declare_host), st.integers(1, 9), switches, edge_port, st.booleans()),
    st.tuples(st.just(learn_host), st.integers(1, 9), switches, edge_port),
    st.tuples(st.just(readdress), st.sampled_from(NODES), st.integers(10, 14)),
    st.tuples(st.just(connect), switches, st.lists(st.integers(1, 6), max_size=4, unique=True).map(tuple)),
    st.tuples(st.just(disconnect), switches),
    st.tuples(st.just(discover_b_c)),
)


def entries_of(tables: AclTables) -> dict[SwitchId, dict[str, Entry]]:
    return {dpid: dict(entries) for dpid, entries in tables.entries.items()}


@pytest.mark.parametrize("named_denials", [acl.NAMED_DENIALS, 0])  # 0: an instance passes the admitted, drops the rest
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(CHANGES, min_size=1, max_size=12))
def test_incremental_acl_equals_the_full_compile_after_every_change(
    named_denials: int, changes: list[tuple[object, ...]]
) -> None:
    with patch.object(acl, "NAMED_DENIALS", named_denials):
        _incremental_equals_full(changes)


def _incremental_equals_full(changes: list[tuple[object, ...]]) -> None:
    state = start()
    tables, _ = compile_acl_incremental(EMPTY, state, TD)
    for change in changes:
        function, *args = change
        state = function(state, *args)  # type: ignore[operator]
        before = entries_of(tables)
        tables, changed = compile_acl_incremental(tables, state, TD)
        full = compile_acl(state, TD)
        assert entries_of(tables) == entries_of(full), change
        assert dict(tables.labels) == dict(full.labels), change
        # The changed entries alone turn the previous tables into the new ones.
        for dpid, keys in changed.items():
            switch = before.setdefault(dpid, {})
            for key, entry in keys.items():
                if entry is None:
                    assert key in switch
                    del switch[key]
                else:
                    assert switch.get(key) != entry
                    switch[key] = entry
        assert {d: e for d, e in before.items() if e} == entries_of(full), change


def test_a_placement_changes_its_admission_and_one_drop_per_unknown_port() -> None:
    state = default(place(start(), 0, "web", "n1", 8080), allow_all=False)
    state = learn_host(state, 1, 1, 5)  # a port without a declared endpoint, on a
    tables = compile_acl(state, TD)
    after = place(state, 1, "api", "n1", 9090)
    new, changed = compile_acl_incremental(tables, after, TD)
    # The new instance's admission at its node's switch (b), and the unknown port's drop of it; the
    # declared endpoints' ports change nothing (they are judged at the instance's switch).
    assert {dpid: sorted(keys) for dpid, keys in changed.items()} == {
        SwitchId(1): ["acl:5:10.0.0.10:9090"],
        SwitchId(2): ["acl:to:10.0.0.10:9090"],
    }
    assert entries_of(new) == entries_of(compile_acl(after, TD))


def test_a_port_change_takes_the_instances_and_admitted_sources_over_without_recomputing_them() -> None:
    state = default(place(place(start(), 0, "web", "n1", 8080), 1, "api", "n2", 9090), allow_all=False)
    tables = compile_acl(state, TD)
    after = state.apply(ev.PortStatusChanged(SwitchId(1), Port(PortNo(6), "p6")))  # a new edge port on a
    assert after.workloads is state.workloads and after.topology.switches is not state.topology.switches
    new, changed = compile_acl_incremental(tables, after, TD)
    assert tables.basis is not None and new.basis is not None
    assert new.basis.targets is tables.basis.targets and new.basis.admitted is tables.basis.admitted
    assert set(changed) == {SwitchId(1)}  # the new port's drops (nobody declared there), nothing else
    assert entries_of(new) == entries_of(compile_acl(after, TD))


def test_the_engine_applies_only_the_changed_acl_entries_and_holds_the_full_compiles_tables(monkeypatch) -> None:
    from test_sdnctl_acl import A, B, engine_on, world
    from test_sdnctl_acl import allow as allow_hosts
    from test_sdnctl_acl import place as place_named

    from sdnctl import engine as engine_module
    from sdnctl.acl import with_acl
    from sdnctl.flows import compile_all
    from sdnctl.pathing import compute_routes

    box = [world()]
    engine, switches = engine_on(box, monkeypatch)

    def no_whole_acl_pass(*args: object) -> object:
        raise AssertionError("a change replaced a switch's whole ACL")

    monkeypatch.setattr(engine_module, "with_acl", no_whole_acl_pass)
    for change in (
        lambda s: place_named(s, "db-1", "web", "n2", 8081),
        lambda s: allow_hosts(s, "api", AllowRule(host=HostId("u2"))),
        lambda s: default(s, allow_all=True),
        lambda s: default(s, allow_all=False),
    ):
        box[0] = change(box[0])
        switches.sent.clear()
        engine._converge()
        assert switches.sent, "the change reached the switches"
        full = compile_acl(box[0], TD)
        for dpid, compiled in compile_all(compute_routes(box[0])).items():
            assert engine._compiled[dpid].entries == with_acl(compiled, full.entries.get(dpid, {}))[0].entries
        assert all(switches.tables[d].flows == engine._compiled[d].config.flows for d in (A, B))
