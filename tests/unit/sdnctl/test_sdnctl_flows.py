"""sdnctl.flows: what the compiled tables DO to a packet (traced), plus the few names that must be stable.

Most checks trace packets through the compiled flows and groups (``trace_ipv4``) instead of reading
flow text: a packet from every switch to every endpoint arrives at the endpoint's port along the
shortest path, and still arrives, without looping, when a fast-failover group's primary port dies.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sdnctl_helpers import (
    RandomFabric,
    apply_delta_to,
    cables_of,
    configs_equal,
    fabric,
    link_between,
    live,
    random_fabrics,
    wiring,
)

from netmodel import events as ev
from netmodel.ids import HostId, PortNo, SwitchId
from netmodel.state import FabricState
from netmodel.types import LinkId
from sdnctl.flows import (
    COOKIE_ARP,
    COOKIE_ROUTE,
    EDGECTL_COOKIE,
    EDGECTL_COOKIE_MASK,
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    ETH_TYPE_LLDP,
    PRIORITY_ROUTE,
    FlowSpec,
    GroupSpec,
    SwitchConfig,
    SwitchDelta,
    addresses_of,
    compile_all,
    compile_flows,
    diff_switch,
    recompile_switches,
    trace_ipv4,
)
from sdnctl.pathing import RoutePlan, changed_entries, compute_routes

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

A, B, C, D = SwitchId(1), SwitchId(2), SwitchId(3), SwitchId(4)

# a-b-d 1 + 1 ms, a-c-d 10 + 10 ms; ports in file order (a: 1 to b, 2 to c, 3 to ha).
DIAMOND = """
switches:
  - {id: a, dpid: 1, site: s}
  - {id: b, dpid: 2, site: s}
  - {id: c, dpid: 3, site: s}
  - {id: d, dpid: 4, site: s}
links:
  - {a: a, b: b, latency_ms: 1, bandwidth_mbps: 100}
  - {a: b, b: d, latency_ms: 1, bandwidth_mbps: 100}
  - {a: a, b: c, latency_ms: 10, bandwidth_mbps: 100}
  - {a: c, b: d, latency_ms: 10, bandwidth_mbps: 100}
hosts:
  - {id: ha, switch: a, ip: 10.0.0.1}
  - {id: hd, switch: d, ip: 10.0.0.4}
"""


def diamond() -> FabricState:
    return live(fabric(DIAMOND))


def ip_flow(config: SwitchConfig, ip: str) -> FlowSpec | None:
    return next((f for f in config.flows if dict(f.match).get("ipv4_dst") == ip), None)


def arp_flow(config: SwitchConfig, ip: str) -> FlowSpec | None:
    return next((f for f in config.flows if dict(f.match).get("arp_tpa") == ip), None)


def ports_of(state: FabricState, plan: RoutePlan, switch: SwitchId) -> frozenset[PortNo]:
    """Every port of ``switch`` the fabric uses: links and endpoint attachments."""
    ports = {link.src_port for link in state.topology.links if link.src == switch}
    ports |= {e.attachment.port for e in plan.endpoints.values() if e.attachment.switch == switch}
    return frozenset(ports)


def out_link(state: FabricState) -> dict[tuple[SwitchId, PortNo], LinkId]:
    return {(link.src, link.src_port): link for link in state.topology.links}


# -- what is compiled --------------------------------------------------------------------------------


def test_every_switch_gets_the_base_flows() -> None:
    configs = compile_flows(compute_routes(diamond()))
    assert set(configs) == {A, B, C, D}
    for config in configs.values():
        by_match = {f.match: f for f in config.flows}
        lldp = by_match[(("eth_type", ETH_TYPE_LLDP),)]
        arp = by_match[(("eth_type", ETH_TYPE_ARP),)]
        assert lldp.actions == (("controller", 0xFFFF),)
        assert arp.actions == (("controller", 0xFFFF),)
        assert lldp.priority > PRIORITY_ROUTE > arp.priority  # routed ARP beats the proxy catch-all


def test_a_switch_with_no_endpoints_gets_only_the_base_flows() -> None:
    state = live(fabric("switches: [{id: a, dpid: 1, site: s}]"))
    configs = compile_flows(compute_routes(state))
    # LLDP and the way on to forwarding (table 0), ARP to the controller (table 1)
    assert {f.match for f in configs[A].flows} == {(("eth_type", ETH_TYPE_LLDP),), (), (("eth_type", ETH_TYPE_ARP),)}
    assert configs[A].groups == frozenset()


def test_route_flows_match_eth_type_and_ipv4_dst_and_point_at_a_fast_failover_group() -> None:
    state = diamond()
    plan = compute_routes(state)
    config = compile_flows(plan)[A]
    flow = ip_flow(config, "10.0.0.4")
    assert flow is not None
    assert flow.match == (("eth_type", ETH_TYPE_IPV4), ("ipv4_dst", "10.0.0.4"))
    assert flow.match == tuple(sorted(flow.match))
    assert flow.priority == PRIORITY_ROUTE
    group_id = int(ipaddress.IPv4Address("10.0.0.4"))
    assert flow.actions == (("group", group_id),)
    # primary (a:1 towards b, the 2 ms way) first, then the backup (a:2 towards c)
    assert GroupSpec(group_id, (PortNo(1), PortNo(2))) in config.groups


def test_arp_for_a_known_address_is_routed_like_unicast_and_copied_to_the_controller() -> None:
    configs = compile_flows(compute_routes(diamond()))
    for config in configs.values():
        for ip in ("10.0.0.1", "10.0.0.4"):
            routed, arp = ip_flow(config, ip), arp_flow(config, ip)
            assert routed is not None and arp is not None
            assert arp.match == (("arp_tpa", ip), ("eth_type", ETH_TYPE_ARP))
            assert arp.actions == (routed.actions[0], ("controller", 0xFFFF))


def test_the_endpoints_own_switch_outputs_to_its_port() -> None:
    state = diamond()
    plan = compute_routes(state)
    configs = compile_flows(plan)
    endpoint = plan.endpoints[HostId("hd")]
    flow = ip_flow(configs[D], "10.0.0.4")
    assert flow is not None and flow.actions == (("output", endpoint.attachment.port),)
    assert all(g.group_id != addresses_of(endpoint).group_id for g in configs[D].groups)


def test_every_group_a_flow_names_exists() -> None:
    configs = compile_flows(compute_routes(diamond()))
    for config in configs.values():
        group_ids = {g.group_id for g in config.groups}
        named = {value for f in config.flows for kind, value in f.actions if kind == "group"}
        assert named == group_ids


def test_cookies_and_group_ids_derive_from_the_address_and_are_stable() -> None:
    state = diamond()
    plan = compute_routes(state)
    for endpoint in plan.endpoints.values():
        ip = int(ipaddress.IPv4Address(endpoint.ip))
        names = addresses_of(endpoint)
        assert names.group_id == ip
        assert names.cookie == COOKIE_ROUTE | ip and names.arp_cookie == COOKIE_ARP | ip
        assert names.cookie & EDGECTL_COOKIE_MASK == EDGECTL_COOKIE
    for config in compile_flows(plan).values():
        assert all(f.cookie & EDGECTL_COOKIE_MASK == EDGECTL_COOKIE for f in config.flows)
    # The same fabric, reached through other events (another generation, hosts in another order,
    # other host names): the same flows and groups, so a restarted controller changes nothing.
    other_text = DIAMOND.replace("- {id: ha, switch: a, ip: 10.0.0.1}", "- {id: zz, switch: a, ip: 10.0.0.1}")
    lines = other_text.rstrip().splitlines()
    other_text = "\n".join([*lines[:-2], lines[-1], lines[-2]]) + "\n"
    other = live(fabric(other_text)).apply(ev.LinkLatencyMeasured(((link_between(state, A, C), 9000),), 1.0))
    assert other.generation != state.generation
    assert compile_flows(compute_routes(other)) == compile_flows(plan)


def test_an_unreachable_endpoint_gets_no_flows_and_its_packets_drop() -> None:
    state = diamond().apply(ev.SwitchDisconnected(B, 1.0)).apply(ev.SwitchDisconnected(C, 1.0))
    plan = compute_routes(state)
    configs = compile_flows(plan)
    assert ip_flow(configs[A], "10.0.0.4") is None and arp_flow(configs[A], "10.0.0.4") is None
    trace = trace_ipv4(configs, wiring(state), A, "10.0.0.4")
    assert trace.dropped_at == A and trace.delivered_to is None


# -- the effect: traced packets ------------------------------------------------------------------------


def assert_every_packet_arrives_on_the_shortest_path(state: FabricState, plan: RoutePlan) -> None:
    configs = compile_flows(plan)
    neighbour = wiring(state)
    links = out_link(state)
    for start in plan.switches:
        for endpoint in plan.endpoints.values():
            trace = trace_ipv4(configs, neighbour, start, endpoint.ip)
            assert not trace.looped
            assert trace.delivered_to == endpoint.attachment.port, (start, endpoint, trace)
            assert trace.hops[-1][0] == endpoint.attachment.switch
            travelled = [links[hop] for hop in trace.hops[:-1]]
            assert tuple(travelled) == plan.path(start, endpoint.attachment.switch)
            latency = sum(state.topology.links[link].latency_us for link in travelled)
            assert latency == plan.distance_us[plan.index[start], plan.index[endpoint.attachment.switch]]


def test_diamond_packets_take_the_2ms_path() -> None:
    state = diamond()
    plan = compute_routes(state)
    trace = trace_ipv4(compile_flows(plan), wiring(state), A, "10.0.0.4")
    assert [switch for switch, _ in trace.hops] == [A, B, D]
    assert_every_packet_arrives_on_the_shortest_path(state, plan)


@SETTINGS
@given(random_fabrics())
def test_packets_from_every_switch_reach_every_endpoint_on_the_shortest_path(rf: RandomFabric) -> None:
    state = rf.state()
    assert_every_packet_arrives_on_the_shortest_path(state, compute_routes(state))


@SETTINGS
@given(random_fabrics())
def test_a_dead_primary_port_fails_over_to_the_backup_without_loops(rf: RandomFabric) -> None:
    state = rf.state()
    plan = compute_routes(state)
    configs = compile_flows(plan)
    neighbour = wiring(state)
    for start in plan.switches:
        for endpoint in plan.endpoints.values():
            dst = endpoint.attachment.switch
            if start == dst:
                continue
            primary, backup = plan.next_hop(start, dst)
            assert primary is not None
            live_ports = {start: ports_of(state, plan, start) - {primary.src_port}}
            trace = trace_ipv4(configs, neighbour, start, endpoint.ip, live_ports)
            assert not trace.looped
            if backup is None:
                assert trace.dropped_at == start
            else:
                assert trace.delivered_to == endpoint.attachment.port, (start, endpoint, trace)
                assert trace.hops[0] == (start, backup.src_port)
                assert all(switch != start for switch, _ in trace.hops[1:])


@SETTINGS
@given(random_fabrics(), st.integers(0, 1000))
def test_a_cut_cable_before_the_controller_reacts_never_loops(rf: RandomFabric, pick: int) -> None:
    """The old tables with both ports of one cable dead: each packet arrives or drops where a group
    had no live bucket; none loops."""
    state = rf.state()
    plan = compute_routes(state)
    configs = compile_flows(plan)
    cut = cables_of(state)[pick % len(cables_of(state))]
    dead = {(cut.src, cut.src_port), (cut.dst, cut.dst_port)}
    live_ports = {s: frozenset(p for p in ports_of(state, plan, s) if (s, p) not in dead) for s in plan.switches}
    for start in plan.switches:
        for endpoint in plan.endpoints.values():
            trace = trace_ipv4(configs, wiring(state), start, endpoint.ip, live_ports)
            assert not trace.looped
            assert not (set(trace.hops) & dead)
            if trace.delivered_to is None:
                at = trace.dropped_at
                assert at is not None
                primary, backup = plan.next_hop(at, endpoint.attachment.switch)
                assert primary is not None and (at, primary.src_port) in dead
                assert backup is None or (at, backup.src_port) in dead
            else:
                assert trace.delivered_to == endpoint.attachment.port


# -- incremental recompile and diff ----------------------------------------------------------------------


def failed_plans(rf: RandomFabric, pick: int) -> tuple[FabricState, RoutePlan, RoutePlan]:
    state = rf.state()
    cables = cables_of(state)
    before = compute_routes(state)
    after_state = state.apply(ev.LinkWentDown(cables[pick % len(cables)]))
    return after_state, before, compute_routes(after_state)


@SETTINGS
@given(random_fabrics(), st.integers(0, 1000))
def test_recompile_of_changed_entries_equals_a_full_compile(rf: RandomFabric, pick: int) -> None:
    _, before, after = failed_plans(rf, pick)
    compiled = compile_all(before)
    configs = {s: c.config for s, c in compiled.items()}
    changed = changed_entries(before, after)
    result = recompile_switches(after, compiled, changed)
    assert set(result) <= {s for s, _ in changed}
    touched = {s: new.config for s, (new, _) in result.items()}
    assert configs_equal({**configs, **touched}, compile_flows(after))
    # The delta made from the changed entries alone turns each old table into the new one.
    for switch, (new, delta) in result.items():
        assert apply_delta_to(configs[switch], delta) == new.config


@SETTINGS
@given(random_fabrics(), st.integers(0, 1000))
def test_a_delta_applied_to_the_current_config_gives_the_desired_one(rf: RandomFabric, pick: int) -> None:
    _, before, after = failed_plans(rf, pick)
    old, new = compile_flows(before), compile_flows(after)
    for switch in new:
        delta = diff_switch(old[switch], new[switch])
        assert apply_delta_to(old[switch], delta) == new[switch]
        assert bool(delta) == (old[switch] != new[switch])
        # A moved next hop is a group modify: the flow keeps pointing at the same group id. Flows go
        # only for endpoints the failure cut off (a bridge); a failure never adds or rewrites one.
        assert not delta.add_flows and not delta.modify_flows and not delta.add_groups
        for flow in delta.delete_flows:
            ip = dict(flow.match).get("ipv4_dst") or dict(flow.match)["arp_tpa"]
            endpoint = next(e for e in after.endpoints.values() if e.ip == ip)
            assert after.path(switch, endpoint.attachment.switch) is None


@SETTINGS
@given(random_fabrics(max_switches=5), random_fabrics(max_switches=5))
def test_a_delta_between_unrelated_configs_also_applies(one: RandomFabric, other: RandomFabric) -> None:
    """Adds, deletes and modifies of flows and groups all at once (switch 1 exists in both)."""
    current = compile_flows(compute_routes(one.state()))[SwitchId(1)]
    desired = compile_flows(compute_routes(other.state()))[SwitchId(1)]
    delta = diff_switch(current, desired)
    assert apply_delta_to(current, delta) == desired
    # Groups are deleted only once no desired flow points at them.
    still_named = {value for f in desired.flows for kind, value in f.actions if kind == "group"}
    assert not {g.group_id for g in delta.delete_groups} & still_named


def test_identical_configs_give_an_empty_delta() -> None:
    configs = compile_flows(compute_routes(diamond()))
    again = compile_flows(compute_routes(diamond()))
    for switch, config in configs.items():
        for delta in (diff_switch(config, config), diff_switch(config, again[switch])):
            assert delta == SwitchDelta() and not delta and delta.size == 0


def test_a_changed_next_hop_is_a_group_modify_not_a_flow_delete_and_add() -> None:
    state = diamond()
    before = compile_flows(compute_routes(state))
    after = compile_flows(compute_routes(state.apply(ev.LinkWentDown(link_between(state, A, B)))))
    delta = diff_switch(before[A], after[A])
    group_id = int(ipaddress.IPv4Address("10.0.0.4"))
    assert delta.modify_groups == (GroupSpec(group_id, (PortNo(2),)),)  # only the long way is left
    assert not delta.add_flows and not delta.delete_flows and not delta.modify_flows
    assert not delta.add_groups and not delta.delete_groups
    assert delta.size == 1


def test_recompile_touches_only_switches_whose_entries_changed() -> None:
    state = diamond()
    before_plan = compute_routes(state)
    after_plan = compute_routes(state.apply(ev.LinkWentDown(link_between(state, C, D))))
    changed = changed_entries(before_plan, after_plan)
    result = recompile_switches(after_plan, compile_all(before_plan), changed)
    assert set(result) <= {s for s, _ in changed}
    assert C in result  # c's way to d was the cut link
    full: Mapping[SwitchId, SwitchConfig] = compile_flows(after_plan)
    assert all(new.config == full[s] and delta for s, (new, delta) in result.items())
