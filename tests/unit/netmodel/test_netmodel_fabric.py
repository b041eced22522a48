"""netmodel.fabric: the initial FabricState built from the example fabric file."""

from __future__ import annotations

import networkx as nx
import pytest
from netmodel_helpers import ALL_SWITCHES, C1, C2, EA1, EB1, EC1, M1, M2, M3, example_spec, example_text

from netmodel.fabric import FabricSpec, build_state, ms_to_us
from netmodel.fabric_file import parse_fabric
from netmodel.ids import PortNo, SwitchId, format_dpid
from netmodel.types import Attachment, LinkId, Resources, Tier

# (a, a_port, b, b_port, latency_us, bandwidth) in file order: ports are the lowest free per switch,
# links first, then hosts, then nodes.
EXPECTED_CABLES = [
    (EA1, 1, M1, 1, 2000, 100),
    (EA1, 2, M2, 1, 5000, 100),
    (EB1, 1, M2, 2, 2000, 100),
    (EB1, 2, M3, 1, 6000, 100),
    (EC1, 1, M3, 2, 2000, 100),
    (EC1, 2, M1, 2, 7000, 100),
    (M1, 3, M2, 3, 1000, 200),
    (M2, 4, M3, 3, 1000, 200),
    (M3, 4, M1, 4, 1000, 200),
    (M1, 5, C1, 1, 10000, 200),
    (M3, 5, C2, 1, 12000, 200),
    (C1, 2, C2, 2, 500, 200),
]
EXPECTED_HOSTS = {"u1": (EA1, 3, "10.0.1.1"), "u2": (EB1, 3, "10.0.2.1"), "u3": (EC1, 3, "10.0.3.1")}
EXPECTED_NODES = {
    "ea-n1": (EA1, 4, "edge-a", 2000, 2048),
    "eb-n1": (EB1, 4, "edge-b", 2000, 2048),
    "ec-n1": (EC1, 4, "edge-c", 1000, 1024),
    "m-n1": (M2, 5, "metro", 4000, 8192),
    "c-n1": (C1, 3, "cloud", 16000, 65536),
    "c-n2": (C2, 3, "cloud", 16000, 65536),
}


def test_example_spec() -> None:
    spec = example_spec()
    assert isinstance(spec, FabricSpec)
    assert spec.name == "edge-cloud"
    assert spec.prefix_len == 16
    assert [s.id for s in spec.sites] == ["edge-a", "edge-b", "edge-c", "metro", "cloud"]
    assert [s.tier for s in spec.sites] == [Tier.EDGE] * 3 + [Tier.METRO, Tier.CLOUD]
    assert [s.name for s in spec.switches] == ["ea1", "eb1", "ec1", "m1", "m2", "m3", "c1", "c2"]
    assert tuple(s.dpid for s in spec.switches) == ALL_SWITCHES
    assert spec.dpid_of("m3") == M3
    with pytest.raises(KeyError):
        spec.dpid_of("nope")
    web, api, db = spec.services
    assert (web.name, web.port, web.replicas, web.resources) == ("web", 8080, 2, Resources(500, 256))
    assert web.max_latency_ms == 5.0 and web.near == ("u1", "u2") and web.calls == ("api",)
    assert api.calls == ("db",) and api.max_latency_ms is None
    assert db.calls == () and db.near == ()


def test_build_state_switches() -> None:
    state = build_state(example_spec())
    switches = state.topology.switches
    assert len(switches) == 8
    assert set(switches) == set(ALL_SWITCHES)
    for switch in switches.values():
        assert switch.declared and not switch.connected and switch.connected_at is None
        assert len(switch.ports) == 0
    assert switches[SwitchId(M2)].name == "m2" and switches[SwitchId(M2)].site == "metro"
    assert state.generation == 0


def test_build_state_links_both_directions_with_latency_in_us() -> None:
    topo = build_state(example_spec()).topology
    assert len(topo.links) == 24
    assert topo.graph.number_of_edges() == 24
    expected = {}
    for a, ap, b, bp, latency_us, bw in EXPECTED_CABLES:
        forward = LinkId(SwitchId(a), PortNo(ap), SwitchId(b), PortNo(bp))
        expected[forward] = (latency_us, bw)
        expected[forward.reversed()] = (latency_us, bw)
    assert set(topo.links) == set(expected)
    for link, (latency_us, bw) in expected.items():
        attrs = topo.links[link]
        assert attrs.declared_latency_us == latency_us, link
        assert attrs.latency_us == latency_us
        assert attrs.capacity_mbps == bw
        assert attrs.up and attrs.declared and not attrs.discovered
        assert attrs.measured_latency_us is None


def test_build_state_cable_specs_match_assigned_ports() -> None:
    cables = [
        (example_spec().dpid_of(c.a), c.a_port, example_spec().dpid_of(c.b), c.b_port, ms_to_us(c.latency_ms))
        for c in example_spec().cables
    ]
    assert cables == [row[:5] for row in EXPECTED_CABLES]


def test_build_state_hosts_and_nodes() -> None:
    state = build_state(example_spec())
    assert {h: (x.attachment.switch, x.attachment.port, x.ip) for h, x in state.hosts.items()} == EXPECTED_HOSTS
    assert all(h.declared and h.mac == "" for h in state.hosts.values())
    got = {
        n: (x.attachment.switch, x.attachment.port, x.site, x.capacity.cpu_millis, x.capacity.memory_mib)
        for n, x in state.nodes.items()
    }
    assert got == EXPECTED_NODES
    assert state.nodes["c-n2"].ip == "10.0.9.11" and state.nodes["c-n2"].up
    assert set(state.services) == {"web", "api", "db"}
    assert set(state.sites) == {"edge-a", "edge-b", "edge-c", "metro", "cloud"}


def test_no_port_is_used_twice() -> None:
    state = build_state(example_spec())
    used: dict[Attachment, str] = {}
    endpoints = [(Attachment(link.src, link.src_port), str(link)) for link in state.topology.links]
    endpoints = list(dict(endpoints).items())  # both directions of a cable share their end ports
    endpoints += [(h.attachment, h.id) for h in state.hosts.values()]
    endpoints += [(n.attachment, n.id) for n in state.nodes.values()]
    for attachment, owner in endpoints:
        assert attachment not in used, (attachment, owner, used.get(attachment))
        used[attachment] = owner


def test_port_assignment_is_deterministic() -> None:
    first = build_state(parse_fabric(example_text()))
    for _ in range(3):
        again = build_state(parse_fabric(example_text()))
        assert again == first
        assert list(again.topology.links) == list(first.topology.links)
    assert parse_fabric(example_text().encode()) == parse_fabric(example_text())


def test_explicit_ports_are_reserved_before_automatic_ones() -> None:
    text = """
sites: [{id: s, tier: edge, region: r}]
switches:
  - {id: a, dpid: 1, site: s}
  - {id: b, dpid: 2, site: s}
links:
  - {a: a, b: b, latency_ms: 1, bandwidth_mbps: 10}
  - {a: a, b: b, latency_ms: 2, bandwidth_mbps: 10, a_port: 1, b_port: 7}
hosts:
  - {id: h, switch: a, ip: 10.0.0.1}
  - {id: g, switch: b, ip: 10.0.0.2, port: 1}
"""
    spec = parse_fabric(text)
    first, second = spec.cables
    assert (first.a_port, first.b_port) == (2, 2)  # a:1 and b:1 were claimed explicitly
    assert (second.a_port, second.b_port) == (1, 7)
    assert [(h.id, h.port) for h in spec.hosts] == [("h", 3), ("g", 1)]
    topo = build_state(spec).topology
    assert len(topo.links) == 4 and topo.graph.number_of_edges() == 4


def test_nodes_without_ip_get_the_highest_free_addresses() -> None:
    text = """
subnet: 10.9.0.0/29
sites: [{id: s, tier: edge, region: r}]
switches: [{id: a, dpid: 1, site: s}]
hosts: [{id: h, switch: a, ip: 10.9.0.6}]
nodes:
  - {id: n1, site: s, switch: a, cpu_millis: 1, memory_mib: 1}
  - {id: n2, site: s, switch: a, cpu_millis: 1, memory_mib: 1, ip: 10.9.0.5}
  - {id: n3, site: s, switch: a, cpu_millis: 1, memory_mib: 1}
"""
    spec = parse_fabric(text)
    assert [(n.id, n.ip) for n in spec.nodes] == [("n1", "10.9.0.4"), ("n2", "10.9.0.5"), ("n3", "10.9.0.3")]


def test_a_large_subnet_is_not_listed() -> None:
    # Node addresses come from the top of the subnet; a /1 has 2^31 addresses and must not be listed.
    text = """
subnet: 0.0.0.0/1
sites: [{id: s, tier: edge, region: r}]
switches: [{id: a, dpid: 1, site: s}]
nodes: [{id: n1, site: s, switch: a, cpu_millis: 1, memory_mib: 1}]
"""
    assert parse_fabric(text).nodes[0].ip == "127.255.255.254"


@pytest.mark.parametrize(
    ("subnet", "expected"),
    [("10.0.0.0/31", ["10.0.0.1", "10.0.0.0"]), ("10.0.0.7/32", ["10.0.0.7"])],
)
def test_tiny_subnets_use_every_address(subnet: str, expected: list[str]) -> None:
    nodes = "\n".join(
        f"  - {{id: n{i}, site: s, switch: a, cpu_millis: 1, memory_mib: 1}}" for i in range(len(expected))
    )
    text = f"subnet: {subnet}\nsites: [{{id: s, tier: edge, region: r}}]\nswitches: [{{id: a, dpid: 1, site: s}}]\n"
    spec = parse_fabric(text + "nodes:\n" + nodes + "\n")
    assert [n.ip for n in spec.nodes] == expected


def test_colon_separated_dpid_and_mac_are_not_read_as_base_60() -> None:
    # YAML 1.1 reads 10:00:00:00:00:00:00:01 as a sexagesimal integer; the fabric means hex.
    text = """
sites: [{id: s, tier: edge, region: r}]
switches:
  - {id: a, dpid: 10:00:00:00:00:00:00:01, site: s}
  - {id: b, dpid: "00:00:00:00:00:00:00:02", site: s}
  - {id: c, dpid: 0x3, site: s}
  - {id: d, dpid: 4, site: s}
hosts: [{id: h, switch: a, ip: 10.0.0.1, mac: 52:54:00:12:34:56}]
"""
    spec = parse_fabric(text)
    assert [s.dpid for s in spec.switches] == [0x1000000000000001, 2, 3, 4]
    assert spec.hosts[0].mac == "52:54:00:12:34:56"
    assert format_dpid(spec.switches[0].dpid) == "1000000000000001"


def test_crlf_line_endings_parse_the_same() -> None:
    assert parse_fabric(example_text().replace("\n", "\r\n")) == example_spec()


def test_utf8_bom_is_accepted() -> None:
    assert parse_fabric(b"\xef\xbb\xbf" + example_text().encode()) == example_spec()


def test_ms_to_us() -> None:
    assert ms_to_us(0.5) == 500
    assert ms_to_us(2) == 2000
    assert ms_to_us(0.0004) == 0


def test_example_routes_prefer_the_short_uplinks() -> None:
    topo = build_state(example_spec()).topology
    weight = topo.latency_weight()
    assert nx.shortest_path(topo.graph, EA1, C2, weight=weight) == [EA1, M1, C1, C2]
    assert nx.shortest_path_length(topo.graph, EA1, C2, weight=weight) == 2000 + 10000 + 500
    assert nx.shortest_path(topo.graph, EB1, EC1, weight=weight) == [EB1, M2, M3, EC1]
    # Routing needs discovered links: none yet.
    with pytest.raises(nx.NetworkXNoPath):
        nx.shortest_path(topo.graph, EA1, C2, weight=topo.latency_weight(require_discovered=True))
