"""The network's policy (sdnctl/acl.py, pure): source guards at every edge port, a service's callers
judged at its instance's switch (the fewer flows of dropping those it does not admit or passing those it
admits), unknown ports' drops, following placements and moves; the engine applies a policy change
make-before-break and only its ACL entries; drop counters become denials (acl_counters.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import pytest
from sdnctl_helpers import apply_delta_to, fabric, live

from netmodel import events as ev
from netmodel.ids import HostId, NodeId, PortNo, ServiceName, SpiffeId, SwitchId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import AllowRule, Attachment, Host, PolicyDefault, Resources, Workload, frozen_map
from sdnctl import engine as engine_module
from sdnctl.acl import (
    COOKIE_ACL,
    COOKIE_ACL_MASK,
    KIND_ADMIT,
    KIND_DENY,
    KIND_GUARD,
    NAMED_DENIALS,
    PRIORITY_DENY,
    UNADMITTED,
    AclTables,
    Admission,
    Target,
    acl_cookie,
    compile_acl,
    cookie_kind,
)
from sdnctl.acl_counters import DropCounters, SpoofReports
from sdnctl.drift import find_drift
from sdnctl.engine import RouteEngine
from sdnctl.flows import (
    TABLE_ACL,
    TABLE_FORWARD,
    CompiledSwitch,
    FlowSpec,
    SwitchConfig,
    SwitchDelta,
    diff_switch,
    replace_entries,
)

TD = "t.example"
FABRIC = """
switches: [{id: a, dpid: 1, site: s}, {id: b, dpid: 2, site: s}]
links: [{a: a, b: b, latency_ms: 1, bandwidth_mbps: 100}]
hosts: [{id: u1, switch: a, ip: 10.0.0.1, mac: "02:00:00:00:00:01"}, {id: u2, switch: a, ip: 10.0.0.2}]
nodes:
  - {id: n1, site: s, switch: b, cpu_millis: 1000, memory_mib: 1024, ip: 10.0.0.10}
  - {id: n2, site: s, switch: a, cpu_millis: 1000, memory_mib: 1024, ip: 10.0.0.11}
services:
  - {name: web, port: 8080, replicas: 1, cpu_millis: 100, memory_mib: 64}
  - {name: api, port: 9090, replicas: 1, cpu_millis: 100, memory_mib: 64}
"""
A, B = SwitchId(1), SwitchId(2)
U1_PORT, U2_PORT, N2_PORT, N1_PORT = 2, 3, 4, 2


def place(state: FabricState, wid: str, service: str, node: str, port: int) -> FabricState:
    workload = Workload(
        WorkloadId(wid),
        ServiceName(service),
        SpiffeId(f"spiffe://{TD}/svc/{service}/w/{wid}"),
        Resources(100, 64),
        NodeId(node),
        port=port,
    )
    return state.apply(ev.WorkloadPlaced(workload))


def allow(state: FabricState, service: str, *rules: AllowRule) -> FabricState:
    services = dict(state.services)
    services[ServiceName(service)] = replace(services[ServiceName(service)], allow_from=tuple(rules))
    return replace(state, services=frozen_map(services), generation=state.generation + 1)


SYN, ACK, PSH, FIN, RST = 0x002, 0x010, 0x008, 0x001, 0x004


def world() -> FabricState:
    """web on n1 (10.0.0.10:8080) admits host u1; api on n2 (10.0.0.11:9090) admits service web."""
    state = place(live(fabric(FABRIC)), "web-1", "web", "n1", 8080)
    state = place(state, "api-1", "api", "n2", 9090)
    state = allow(state, "web", AllowRule(host=HostId("u1")))
    return allow(state, "api", AllowRule(service=ServiceName("web")))


def flows_at(state: FabricState, switch: SwitchId, port: int) -> list[FlowSpec]:
    return [f for f in compile_acl(state, TD).flows(switch) if dict(f.match).get("in_port") == port]


def endpoints(state: FabricState) -> dict[str, tuple[SwitchId, int]]:
    """Every declared endpoint's address -> its switch port."""
    out = {n.ip: (n.attachment.switch, int(n.attachment.port)) for n in state.nodes.values() if n.ip}
    out.update({h.ip: (h.attachment.switch, int(h.attachment.port)) for h in state.hosts.values() if h.declared})
    return out


def journey(tables: AclTables, state: FabricState, at: tuple[SwitchId, int], packet: dict[str, object]) -> str:
    """What the fabric does with an IPv4 ``packet`` coming in at ``at`` (switch, port) for an endpoint of
    ``state``: ``drop at <switch>`` (table 0 of its first switch, or the ACL's flows above the routes of
    table 1 at its destination's switch), else ``delivered`` (the route takes it)."""
    names = {dpid: sw.name for dpid, sw in state.topology.switches.items()}
    if fate(tables.flows(at[0]), {**packet, "in_port": at[1]}) == "drop":
        return f"drop at {names[at[0]]}"
    last, port = endpoints(state)[str(packet["ipv4_dst"])]
    judged = [f for f in tables.flows(last) if f.table == TABLE_FORWARD and _all_match(f, packet)]
    best = max(judged, key=lambda f: f.priority, default=None)
    if best is None:
        return "delivered"
    if best.actions == ():
        return f"drop at {names[last]}"
    assert best.actions == (("output", port),), "an admitted caller goes where the route would take it"
    return "delivered"


MACS = {"10.0.0.1": "02:00:00:00:00:01"}  # u1's, declared (its port's guard checks it)


def syn(caller: str, ip: str, port: int, flags: int = 0x002) -> dict[str, object]:
    """A connection attempt from ``caller``'s address (and its declared MAC)."""
    return {
        "eth_type": 0x0800,
        "eth_src": MACS.get(caller, "02:00:00:00:00:99"),
        "ipv4_src": caller,
        "ip_proto": 6,
        "ipv4_dst": ip,
        "tcp_dst": port,
        "tcp_flags": flags,
    }


def denied(state: FabricState) -> set[tuple[str, str, int]]:
    """(caller, instance address, instance port): every connection attempt of a declared endpoint (from
    its own port, as itself) to a placed instance on another node that the fabric drops."""
    tables = compile_acl(state, TD)
    out = set()
    for workload in state.workloads.values():
        ip = state.nodes[workload.node].ip if workload.node is not None else None
        for caller, at in endpoints(state).items():
            if ip and caller != ip and journey(tables, state, at, syn(caller, ip, workload.port)) != "delivered":
                out.add((caller, ip, workload.port))
    return out


def _matches(field: object, wanted: object) -> bool:
    """A packet's header field against a match value, or a (value, mask) pair as OpenFlow masks it."""
    if isinstance(wanted, tuple):
        value, mask = wanted
        return isinstance(field, int) and field & mask == value
    return field == wanted


def _all_match(flow: FlowSpec, packet: dict[str, object]) -> bool:
    return all(_matches(packet.get(k), v) for k, v in flow.match)


def fate(flows: Iterable[FlowSpec], packet: dict[str, object]) -> str:
    """What table 0 does with ``packet`` (its header fields): the highest-priority flow that matches."""
    matching = [f for f in flows if f.table == TABLE_ACL and _all_match(f, packet)]
    best = max(matching, key=lambda f: f.priority, default=None)
    if best is None:
        return "no flow"
    return "forward" if best.actions == (("goto", TABLE_FORWARD),) else "drop"


def test_source_guard_lets_a_host_send_only_as_itself() -> None:
    flows = flows_at(world(), A, U1_PORT)
    me = {"in_port": U1_PORT, "eth_type": 0x0800, "ipv4_src": "10.0.0.1", "eth_src": "02:00:00:00:00:01"}
    assert fate(flows, me) == "forward"
    assert fate(flows, {**me, "ipv4_src": "10.0.0.10"}) == "drop", "a node's address from u1's port"
    assert fate(flows, {**me, "eth_src": "02:00:00:00:00:99"}) == "drop", "another MAC with u1's address"
    arp = {"in_port": U1_PORT, "eth_type": 0x0806, "arp_spa": "10.0.0.1", "eth_src": "02:00:00:00:00:01"}
    assert fate(flows, {**arp, "arp_sha": "02:00:00:00:00:01"}) == "forward"
    assert fate(flows, {**arp, "arp_sha": "02:00:00:00:00:01", "arp_spa": "10.0.0.10"}) == "drop"
    # Neither IPv4 nor ARP (IPv6, LLDP) is the guard's business: table 0's lowest flow takes it on.
    assert fate(flows, {"in_port": U1_PORT, "eth_type": 0x86DD}) == "no flow"
    # A node's port guards its address (no MAC declared: any MAC).
    node_flows = flows_at(world(), B, N1_PORT)
    assert fate(node_flows, {"in_port": N1_PORT, "eth_type": 0x0800, "ipv4_src": "10.0.0.10"}) == "forward"
    assert fate(node_flows, {"in_port": N1_PORT, "eth_type": 0x0800, "ipv4_src": "10.0.0.1"}) == "drop"


def test_callers_not_admitted_are_dropped_at_the_instances_switch_and_only_tcp_to_the_port() -> None:
    state = world()
    assert denied(state) == {
        ("10.0.0.2", "10.0.0.10", 8080),  # u2 -> web: not admitted
        ("10.0.0.11", "10.0.0.10", 8080),  # n2 (runs api) -> web: not admitted
        ("10.0.0.1", "10.0.0.11", 9090),  # u1 -> api
        ("10.0.0.2", "10.0.0.11", 9090),  # u2 -> api
        # n1 runs web, which api admits: no drop. n2 -> api is its own node: crosses no switch.
    }
    tables, u2 = compile_acl(state, TD), (A, U2_PORT)
    assert journey(tables, state, u2, syn("10.0.0.2", "10.0.0.10", 8080)) == "drop at b", "at web's node's switch"
    assert journey(tables, state, u2, syn("10.0.0.2", "10.0.0.10", 22)) == "delivered", "only the service's port"
    ping = {"eth_type": 0x0800, "ipv4_src": "10.0.0.2", "ip_proto": 1, "ipv4_dst": "10.0.0.10"}
    assert journey(tables, state, u2, ping) == "delivered", "ping still works"
    # Judged where the instance is: nothing of it at the callers' first switch, a drop per caller at b.
    assert not [f for f in tables.flows(A) if dict(f.match).get("tcp_dst") == 8080]
    deny = [f for f in tables.flows(B) if dict(f.match).get("tcp_dst") == 8080]
    assert {f.cookie for f in deny} == {acl_cookie(KIND_DENY, ip) for ip in ("10.0.0.2", "10.0.0.11")}
    assert all(f.cookie & 0xFFFF << 48 == COOKIE_ACL and cookie_kind(f.cookie) == KIND_DENY for f in deny)
    assert all(f.table == TABLE_FORWARD and f.priority == PRIORITY_DENY and f.actions == () for f in deny)


def test_a_spoofed_source_does_not_get_past_the_instances_switch() -> None:
    """The drops at the instance's switch trust the source address because table 0 vetted it first: u2
    claiming u1's (admitted) address is dropped by its own port's guard, on the instance's switch too."""
    state = world()
    tables = compile_acl(state, TD)
    n2 = (A, N2_PORT)  # api's own switch is a: n2 shares it with u1 and u2
    assert journey(tables, state, (A, U2_PORT), syn("10.0.0.1", "10.0.0.10", 8080)) == "drop at a"
    assert journey(tables, state, (A, U2_PORT), syn("10.0.0.10", "10.0.0.11", 9090)) == "drop at a"
    assert journey(tables, state, n2, syn("10.0.0.11", "10.0.0.11", 9090)) == "delivered"  # (never sent: own node)
    assert journey(tables, state, (B, N1_PORT), syn("10.0.0.10", "10.0.0.11", 9090)) == "delivered", "admitted"


def test_many_callers_not_admitted_cost_one_flow_per_admitted_caller_and_one_drop() -> None:
    """When a service refuses more callers than NAMED_DENIALS and than it admits, its instance's switch
    passes each admitted caller on (to the node's port, as the route would) and drops every other source:
    one drop, not one per caller refused."""
    state = world()
    hosts = dict(state.hosts)
    for n in range(3, 3 + NAMED_DENIALS):
        host = Host(HostId(f"u{n}"), Attachment(A, PortNo(10 + n)), f"10.0.1.{n}", "", True)
        hosts[host.id] = host
    state = replace(state, hosts=frozen_map(hosts), generation=state.generation + 1)
    tables = compile_acl(state, TD)
    to_web = [f for f in tables.flows(B) if dict(f.match).get("tcp_dst") == 8080]
    admit = [f for f in to_web if f.actions]
    assert [(dict(f.match)["ipv4_src"], f.actions, f.cookie) for f in admit] == [
        ("10.0.0.1", (("output", N1_PORT),), acl_cookie(KIND_ADMIT, "10.0.0.1"))
    ]
    (drop,) = [f for f in to_web if not f.actions]
    assert "ipv4_src" not in dict(drop.match) and drop.cookie == acl_cookie(KIND_DENY, None)
    refused = {f"10.0.1.{n}" for n in range(3, 3 + NAMED_DENIALS)} | {"10.0.0.2", "10.0.0.11"}
    assert {c for c, ip, port in denied(state) if (ip, port) == ("10.0.0.10", 8080)} == refused
    label = tables.labels[(B, drop.key)]
    assert (label.kind, label.caller, label.service, label.switch, label.port) == ("deny", UNADMITTED, "web", "b", 2)
    assert label.detail.endswith("-> 10.0.0.10:8080")
    assert tables.labels.get((B, admit[0].key)) is None, "a way on has no label"


def test_an_admission_is_its_flows_made_when_read_and_never_from_its_own_address() -> None:
    target = Target("10.0.0.10", 8080, "web")
    callers = ("10.0.0.1", "10.0.0.10", "10.0.0.2")  # the service's callers, the instance's own node among them
    admits = Admission(target, callers, (("output", 3),))
    flows = tuple(admits)
    assert len(admits) == len(flows) == 3  # a way on for each other caller, one drop of every other source
    assert [dict(f.match).get("ipv4_src") for f in flows] == ["10.0.0.1", "10.0.0.2", None]
    assert [f.actions for f in flows] == [(("output", 3),), (("output", 3),), ()]
    assert [cookie_kind(f.cookie) for f in flows] == [KIND_ADMIT, KIND_ADMIT, KIND_DENY]
    assert admits[0] == flows[0] and admits[-1] == flows[-1] and admits[1:] == flows[1:]
    assert admits == flows and flows == admits and hash(admits) == hash(flows)  # equal to the tuple it makes
    assert admits == Admission(target, tuple(callers), (("output", 3),))
    assert admits != Admission(target, callers, (("output", 4),))
    drops = Admission(target, callers, None)
    assert [(dict(f.match)["ipv4_src"], f.actions) for f in drops] == [("10.0.0.1", ()), ("10.0.0.2", ())]
    assert len(drops) == 2 and drops != admits
    assert all(f.match == tuple(sorted(f.match)) for f in (*flows, *drops))  # matches in field order, as compared


def test_only_connection_attempts_are_dropped_established_connections_live_on() -> None:
    state = world()
    tables, u2 = compile_acl(state, TD), (A, U2_PORT)
    to_web = syn("10.0.0.2", "10.0.0.10", 8080)
    assert journey(tables, state, u2, to_web) == "drop at b", "a new connection is refused"
    assert journey(tables, state, u2, {**to_web, "tcp_flags": SYN | 0x100}) == "drop at b", "SYN with ECN bits too"
    # An established connection (a caller draining after its node stopped being admitted) goes on.
    for flags in (ACK, ACK | PSH, ACK | FIN, RST):
        assert journey(tables, state, u2, {**to_web, "tcp_flags": flags}) == "delivered", hex(flags)
    # A callee's reply (SYN+ACK, then ACKs) to a caller whose ephemeral port equals a service port.
    assert journey(tables, state, u2, {**to_web, "tcp_flags": SYN | ACK}) == "delivered"
    deny = [f for f in tables.flows(B) if "tcp_dst" in dict(f.match)]
    assert deny and all(dict(f.match)["tcp_flags"] == (0x002, 0x012) for f in deny), "as OVS reads it back"


def test_default_allow_drops_nothing_by_policy_but_keeps_the_guards() -> None:
    state = replace(world(), default_policy=PolicyDefault.ALLOW)
    assert denied(state) == set()
    assert fate(flows_at(state, A, U2_PORT), {"in_port": U2_PORT, "eth_type": 0x0800, "ipv4_src": "6.6.6.6"}) == "drop"
    assert not [f for s in (A, B) for f in compile_acl(state, TD).flows(s) if f.table == TABLE_FORWARD]


def test_a_policy_change_is_the_drops_it_adds_and_removes() -> None:
    before = world()
    after = allow(before, "web", AllowRule(host=HostId("u2")))  # u2 instead of u1
    assert denied(after) - denied(before) == {("10.0.0.1", "10.0.0.10", 8080)}
    assert denied(before) - denied(after) == {("10.0.0.2", "10.0.0.10", 8080)}


def test_a_moved_workload_keeps_exactly_its_allowed_callers() -> None:
    state = world()
    moved = place(state, "web-2", "web", "n2", 8080).apply(ev.WorkloadRemoved(WorkloadId("web-1")))

    everyone = {"10.0.0.1", "10.0.0.2", "10.0.0.10", "10.0.0.11"}

    def allowed_callers(s: FabricState, ip: str, port: int) -> set[str | None]:
        """Every endpoint but the instance's own node and those dropped on their way to (ip, port)."""
        return everyone - {ip} - {src for (src, dst, tcp) in denied(s) if (dst, tcp) == (ip, port)}

    # web's instance moved n1 -> n2: exactly u1 may call it, at its new address; nothing is left at the old
    assert allowed_callers(state, "10.0.0.10", 8080) == {"10.0.0.1"}
    assert allowed_callers(moved, "10.0.0.11", 8080) == {"10.0.0.1"}
    assert not [
        f
        for s in (A, B)
        for f in compile_acl(moved, TD).flows(s)
        if dict(f.match).get("tcp_dst") == 8080 and dict(f.match).get("ipv4_dst") == "10.0.0.10"
    ]
    # ...and api admits service web, whose instance's address moved with it: n2 (itself) instead of n1.
    assert allowed_callers(state, "10.0.0.11", 9090) == {"10.0.0.10"}
    assert allowed_callers(moved, "10.0.0.11", 9090) == set()


def test_a_port_without_a_declared_endpoint_reaches_no_service_whatever_source_it_claims() -> None:
    learned = Host(HostId("02:00:00:00:00:66"), Attachment(A, PortNo(7)), "10.0.0.66", "02:00:00:00:00:66", False)
    state = world()
    state = replace(state, hosts=frozen_map({**state.hosts, learned.id: learned}))
    flows = flows_at(state, A, 7)
    tcp = {"in_port": 7, "eth_type": 0x0800, "ip_proto": 6, "ipv4_src": "10.0.0.66", "tcp_flags": SYN}
    assert fate(flows, {**tcp, "ipv4_dst": "10.0.0.10", "tcp_dst": 8080}) == "drop"
    assert fate(flows, {**tcp, "ipv4_dst": "10.0.0.11", "tcp_dst": 9090}) == "drop"
    assert fate(flows, {**tcp, "ipv4_dst": "10.0.0.1", "tcp_dst": 22}) == "no flow", "not a service: on"
    # Claiming the address of an endpoint the policy admits (n1 may call api) gains nothing: the drop
    # matches the port, not the source.
    assert fate(flows, {**tcp, "ipv4_src": "10.0.0.10", "ipv4_dst": "10.0.0.11", "tcp_dst": 9090}) == "drop"
    labels = compile_acl(state, TD).labels
    deny = next(f for f in flows if dict(f.match).get("tcp_dst") == 8080)
    assert labels[(A, deny.key)].caller == "10.0.0.66" and labels[(A, deny.key)].service == "web"
    # No flow per (port, declared address): such a guard would grow as ports x endpoints on every switch.
    assert all(f.cookie != acl_cookie(KIND_GUARD, "10.0.0.10") for f in flows)


IDENTITIES = {
    "10.0.0.1": f"spiffe://{TD}/host/u1",
    "10.0.0.2": f"spiffe://{TD}/host/u2",
    "10.0.0.10": f"spiffe://{TD}/node/n1",
    "10.0.0.11": f"spiffe://{TD}/node/n2",
}


def test_every_drop_flow_is_labelled_and_only_drop_flows_of_the_tables() -> None:
    """Labels are made when asked for, from the flow's match: each drop flow (policy or guard) has the
    label its port and target say; a pass flow, a route, a flow the tables do not hold has none."""
    state = world()
    tables = compile_acl(state, TD)
    drops = [(s, f) for s in (A, B) for f in tables.flows(s) if f.actions == ()]
    assert drops and sorted(tables.labels) == sorted((s, f.key) for s, f in drops)
    assert len(tables.labels) == len(drops)
    where = {ip: (state.topology.switches[s].name, port) for ip, (s, port) in endpoints(state).items()}
    for switch, flow in drops:
        label = tables.labels[(switch, flow.key)]
        match = dict(flow.match)
        if flow.table == TABLE_ACL:  # where its packets came in
            assert (label.switch, label.port) == (state.topology.switches[switch].name, match["in_port"])
        else:  # the caller's own port, which its source names (the drop is at the instance's switch)
            assert (label.switch, label.port) == where[match["ipv4_src"]]
            assert label.caller == IDENTITIES[match["ipv4_src"]]
        if "tcp_dst" in match:
            assert label.kind == "deny"
            assert label.detail.endswith(f"-> {match['ipv4_dst']}:{match['tcp_dst']}")
            assert label.service == {8080: "web", 9090: "api"}[match["tcp_dst"]]
        else:
            assert label.kind == "spoof" and label.caller.startswith(f"spiffe://{TD}/")
    passing = next(f for f in tables.flows(A) if f.actions == (("goto", TABLE_FORWARD),))
    assert tables.labels.get((A, passing.key)) is None
    deny = next(f for s, f in drops if s == A and f.priority == PRIORITY_DENY)
    assert tables.labels.get((B, deny.key)) is None, "the same flow on another switch"
    elsewhere = replace(deny, match=tuple(p if p[0] != "tcp_dst" else ("tcp_dst", 1) for p in deny.match))
    assert tables.labels.get((A, elsewhere.key)) is None, "a drop the tables do not hold"
    # The caller admitted now: its drops are gone, and so are their labels.
    admitted = compile_acl(allow(state, "web", AllowRule(host=HostId("u1")), AllowRule(host=HostId("u2"))), TD)
    gone = [(s, f.key) for s, f in drops if (s, f) not in {(t, g) for t in (A, B) for g in admitted.flows(t)}]
    assert gone and all(admitted.labels.get(key) is None for key in gone)


# -- the engine ---------------------------------------------------------------------------------------


class RecordingSwitches:
    """What the engine needs of FabricApp; records every phase sent."""

    def __init__(self) -> None:
        self.tables: dict[int, SwitchConfig] = {}
        self.sent: list[tuple[int, str, SwitchDelta]] = []
        self.on_switch_error = None
        self.on_acl_counters = None

    def read_config(self, dpid: int, late_answers_count: bool = False) -> SwitchConfig:
        return self.tables.setdefault(dpid, SwitchConfig(frozenset(), frozenset()))

    def read_configs(
        self, dpids: Iterable[int], timeout_s: float, late_answers_count: bool = False
    ) -> dict[int, SwitchConfig]:
        return {dpid: self.read_config(dpid) for dpid in dpids}

    def send_phase(self, dpid: int, delta: SwitchDelta, phase: str) -> bool:
        self.sent.append((dpid, phase, delta))
        part = (
            SwitchDelta(
                add_groups=delta.add_groups,
                modify_groups=delta.modify_groups,
                add_flows=delta.add_flows,
                modify_flows=delta.modify_flows,
            )
            if phase == "make"
            else SwitchDelta(delete_flows=delta.delete_flows, delete_groups=delta.delete_groups)
        )
        self.tables[dpid] = apply_delta_to(self.read_config(dpid), part)
        return True

    def barriers(self, dpids: Iterable[int]) -> set[int]:
        return set(dpids)


def engine_on(state_box: list[FabricState], monkeypatch, **kwargs) -> tuple[RouteEngine, RecordingSwitches]:
    monkeypatch.setattr(engine_module, "SETTLE_QUIET_S", 0.0)
    switches = RecordingSwitches()
    engine = RouteEngine(switches, lambda: state_box[0], trust_domain=TD, **kwargs)
    engine._last_discovery -= 1
    engine._converge()
    engine._converge()
    return engine, switches


def test_the_engine_applies_a_policy_change_make_before_break_and_only_the_acl(monkeypatch) -> None:
    box = [world()]
    engine, switches = engine_on(box, monkeypatch)
    assert switches.tables[A].flows == engine._compiled[A].config.flows, "programmed, ACL included"
    switches.sent.clear()
    box[0] = allow(box[0], "web", AllowRule(host=HostId("u2")))
    engine._converge()
    # web's instance is on n1, at b: its switch alone changes.
    assert [(dpid, phase) for dpid, phase, _ in switches.sent] == [(B, "make"), (B, "break")]
    delta = switches.sent[0][2]
    assert [dict(f.match)["ipv4_src"] for f in delta.add_flows] == ["10.0.0.1"], "u1's new drop first"
    assert [dict(f.match)["ipv4_src"] for f in delta.delete_flows] == ["10.0.0.2"], "u2's drop removed after"
    assert not delta.modify_flows and not delta.add_groups
    assert all(f.cookie & COOKIE_ACL_MASK == COOKIE_ACL for f in (*delta.add_flows, *delta.delete_flows))
    assert switches.tables[B].flows == engine._compiled[B].config.flows
    assert engine.status[A].applied_generation == box[0].generation


def test_a_guard_whose_owner_changes_address_gets_its_new_cookie_on_the_switch(monkeypatch) -> None:
    # The guard drops keep their key (in_port alone) but name the owner's address in their cookie; a
    # modify would keep the old cookie on the switch (OpenFlow 1.3), so they are sent as adds.
    box = [world()]
    engine, switches = engine_on(box, monkeypatch)
    u1 = box[0].hosts[HostId("u1")]
    box[0] = replace(box[0], hosts=frozen_map({**box[0].hosts, u1.id: replace(u1, ip="10.0.0.5")}))
    before = {f.key: f.cookie for f in switches.tables[A].flows}
    engine._converge()
    guards = [
        f for f in engine._compiled[A].config.flows if f.priority == 100 and dict(f.match).get("in_port") == U1_PORT
    ]
    assert guards and all(before[f.key] != f.cookie == acl_cookie(KIND_GUARD, "10.0.0.5") for f in guards)
    assert switches.tables[A].flows == engine._compiled[A].config.flows, "the switch holds the new cookies"
    assert find_drift(engine._compiled[A].config, switches.tables[A]) is None


def test_a_changed_cookie_is_an_add_and_changed_actions_of_the_same_cookie_a_modify() -> None:
    flow = FlowSpec(TABLE_ACL, 100, (("in_port", 2),), (), 1)
    recookied = replace(flow, cookie=2)
    rerouted = replace(flow, actions=(("goto", TABLE_FORWARD),))
    for delta in (
        diff_switch(SwitchConfig(frozenset({flow})), SwitchConfig(frozenset({recookied}))),
        replace_entries(CompiledSwitch({"k": ((flow,), None)}), {"k": ((recookied,), None)})[1],
    ):
        assert delta == SwitchDelta(add_flows=(recookied,))
    assert diff_switch(SwitchConfig(frozenset({flow})), SwitchConfig(frozenset({rerouted}))) == SwitchDelta(
        modify_flows=(rerouted,)
    )


def test_a_policy_change_whose_round_failed_is_applied_by_the_next_round(monkeypatch) -> None:
    box = [world()]
    engine, switches = engine_on(box, monkeypatch)
    real = engine_module.recompile_switches
    calls = []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("recompile failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_module, "recompile_switches", fails_once)
    box[0] = allow(box[0], "web", AllowRule(host=HostId("u2")))
    with pytest.raises(RuntimeError):
        engine._converge()
    engine._converge()  # the engine's loop runs the next round
    assert len(calls) == 2
    assert engine._compiled[B].config.flows >= set(engine.acl.flows(B)), "the new ACL is in the tables"
    assert switches.tables[B].flows == engine._compiled[B].config.flows, "and on the switch"
    to_web = [dict(f.match) for f in switches.tables[B].flows if dict(f.match).get("tcp_dst") == 8080]
    assert sorted(m["ipv4_src"] for m in to_web) == ["10.0.0.1", "10.0.0.11"], "u2 admitted, u1 no longer"


def test_a_move_recompiles_the_drops_and_routes_stay(monkeypatch) -> None:
    box = [world()]
    engine, switches = engine_on(box, monkeypatch)
    switches.sent.clear()
    box[0] = place(box[0], "web-2", "web", "n2", 8080).apply(ev.WorkloadRemoved(WorkloadId("web-1")))
    engine._converge()
    assert {dpid for dpid, _, _ in switches.sent} == {A, B}, "the drops follow the instance from b to a"
    sent = [f for _, _, d in switches.sent for f in (*d.add_flows, *d.modify_flows, *d.delete_flows)]
    assert sent and all(f.cookie & COOKIE_ACL_MASK == COOKIE_ACL for f in sent), "only the ACL's flows"
    assert not [d for _, _, d in switches.sent if d.add_groups or d.modify_groups or d.delete_groups]
    assert all(switches.tables[d].flows == engine._compiled[d].config.flows for d in (A, B))


def test_drop_counters_become_denials_and_spoofing_reports(monkeypatch) -> None:
    box = [world()]
    recorded: list[dict[str, object]] = []
    engine, _ = engine_on(box, monkeypatch, record_denial=lambda **kw: recorded.append(kw))
    at_b = compile_acl(box[0], TD).flows(B)  # u2's calls to web are dropped at web's switch, b
    deny = next(f for f in at_b if dict(f.match).get("tcp_dst") == 8080 and dict(f.match)["ipv4_src"] == "10.0.0.2")
    flows = flows_at(box[0], A, U2_PORT)
    guard = next(f for f in flows if f.cookie == acl_cookie(KIND_GUARD, "10.0.0.2") and "arp_spa" not in dict(f.match))
    engine.on_acl_counters(B, {deny.key: 4}, 100.0)  # flows this engine added: from zero
    engine.on_acl_counters(A, {guard.key: 1}, 100.0)
    engine.on_acl_counters(B, {deny.key: 7}, 105.0)
    engine.on_acl_counters(A, {guard.key: 6}, 105.0)
    assert [(r["count"], r["at"]) for r in recorded] == [(4, 100.0), (3, 105.0)]
    assert recorded[-1] == {
        "layer": "network",
        "caller": f"spiffe://{TD}/host/u2",
        "service": "web",
        "at": 105.0,
        "count": 3,
        "detail": "a port 3 -> 10.0.0.10:8080",
    }
    assert engine.spoofing.totals() == {("a", 3): 6}


def test_drop_counters_count_from_the_baseline_new_flows_from_zero() -> None:
    counters = DropCounters()
    k1, k2 = (0, 300, (("a", 1),)), (0, 300, (("a", 2),))
    assert counters.update(A, {k1: 10}) == {}, "first reading: baseline"
    assert counters.update(A, {k1: 10}) == {}
    assert counters.update(A, {k1: 12, k2: 3}) == {k1: 2, k2: 3}, "a new flow counts from zero"
    assert counters.update(A, {k1: 1, k2: 3}) == {k1: 1}, "re-added: starts over"
    counters.forget_switch(A)
    assert counters.update(A, {k1: 50}) == {}
    counters.forget_switch(A)
    counters.installed(A, [k2])  # added by this controller before the switch's first reading
    assert counters.update(A, {k1: 50, k2: 4}) == {k2: 4}, "ours count from zero, the others are the baseline"


def test_spoofing_is_said_once_per_port_per_interval() -> None:
    from sdnctl.acl import DropLabel

    reports = SpoofReports(interval_s=10.0)
    label = DropLabel("spoof", "s1", 3, "spiffe://t/host/u2", detail="not 10.0.1.2/02:00:00:00:00:02")
    reports.add(label, 5)
    assert reports.due(100.0) == [
        "switch s1 port 3: 5 packets whose source is not 10.0.1.2/02:00:00:00:00:02 dropped (spoofing?)"
    ]
    reports.add(label, 2)
    assert reports.due(105.0) == []
    reports.add(label, 1)
    assert reports.due(110.0) == [
        "switch s1 port 3: 3 packets whose source is not 10.0.1.2/02:00:00:00:00:02 dropped (spoofing?)"
    ]
    assert reports.totals() == {("s1", 3): 8}


def test_a_desired_state_plan_predicts_the_acl_flowmods_the_engine_sends(monkeypatch) -> None:
    from edgectl.plan import _openflow_changes

    box = [world()]
    engine, switches = engine_on(box, monkeypatch)
    plan, tables = engine.tables
    assert plan is not None
    before = box[0]
    after = allow(before, "web", AllowRule(host=HostId("u2")))
    predicted = {c.switch: c.delta for c in _openflow_changes(before, after, plan, tables, TD)}
    from_scratch = {c.switch: c.delta for c in _openflow_changes(before, after, plan, None, TD)}
    switches.sent.clear()
    box[0] = after
    engine._converge()
    sent = {dpid: delta for dpid, phase, delta in switches.sent if phase == "make"}
    assert predicted == sent and from_scratch == sent


def test_a_packet_that_is_not_a_connection_attempt_is_traced_past_the_instances_admission() -> None:
    """The admission flows sit above the routes at the instance's switch but judge TCP connection
    attempts only: a traced IPv4 packet to the node goes out of its port."""
    from sdnctl_helpers import wiring

    from sdnctl.acl import with_acl
    from sdnctl.flows import compile_all, trace_ipv4
    from sdnctl.pathing import compute_routes

    state = world()
    acl = compile_acl(state, TD)
    configs = {d: with_acl(c, acl.entries.get(d, {}))[0].config for d, c in compile_all(compute_routes(state)).items()}
    assert any(f.table == TABLE_FORWARD and f.priority == PRIORITY_DENY for f in configs[B].flows)
    trace = trace_ipv4(configs, wiring(state), A, "10.0.0.10")
    assert trace.delivered_to == N1_PORT and trace.dropped_at is None
