"""From a fabric file to what Mininet creates: names, dpids, addresses and, above all, port numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from mininet_topos.plan import IFNAMSIZ, PlanError, compute_plan, intf_name
from netmodel.fabric_file import parse_fabric

REPO = Path(__file__).resolve().parents[3]

SMALL = """
name: small
subnet: 10.1.0.0/16
sites: [{id: s, tier: edge, region: r}]
switches:
  - {id: sw1, dpid: 0xa1, site: s}
  - {id: sw2, dpid: "00:00:00:00:00:00:00:b2", site: s}
links:
  - {a: sw1, b: sw2, latency_ms: 5, bandwidth_mbps: 100, a_port: 7, b_port: 9}
  - {a: sw2, b: sw1, latency_ms: 0, bandwidth_mbps: 5000}
hosts:
  - {id: h1, switch: sw1, ip: 10.1.0.1, port: 3, mac: "02:00:00:00:00:01"}
nodes:
  - {id: n1, site: s, switch: sw2, cpu_millis: 1000, memory_mib: 512, ip: 10.1.0.9}
"""


def plan_of(text: str):
    return compute_plan(parse_fabric(text, "test.yaml"))


def test_switches_keep_their_ids_and_get_16_digit_dpids() -> None:
    plan = plan_of(SMALL)
    assert [(s.name, s.dpid) for s in plan.switches] == [
        ("sw1", "00000000000000a1"),
        ("sw2", "00000000000000b2"),
    ]


def test_cables_keep_the_spec_port_numbers_and_assigned_ones() -> None:
    first, second = plan_of(SMALL).cables
    assert (first.a, first.a_port, first.a_intf, first.b, first.b_port, first.b_intf) == (
        "sw1",
        7,
        "sw1-eth7",
        "sw2",
        9,
        "sw2-eth9",
    )
    assert (first.latency_ms, first.bandwidth_mbps) == (5.0, 100.0)
    # Ports the file leaves out are assigned by netmodel: the lowest free number on each switch.
    assert (second.a_port, second.b_port) == (1, 1)
    assert second.bandwidth_mbps is None  # above what htb is set up for: not shaped


def test_hosts_and_compute_nodes_become_hosts_with_prefix_and_port() -> None:
    h1, n1 = plan_of(SMALL).hosts
    assert (h1.name, h1.ip, h1.mac, h1.switch, h1.port, h1.intf, h1.switch_intf, h1.compute_node) == (
        "h1",
        "10.1.0.1/16",
        "02:00:00:00:00:01",
        "sw1",
        3,
        "h1-eth0",
        "sw1-eth3",
        False,
    )
    assert (n1.name, n1.ip, n1.mac, n1.switch, n1.port, n1.compute_node) == (
        "n1",
        "10.1.0.9/16",
        None,
        "sw2",
        2,
        True,
    )


def test_the_example_fabric_plans_with_every_port_from_the_spec() -> None:
    spec = parse_fabric((REPO / "examples" / "edge-cloud.yaml").read_bytes(), "edge-cloud.yaml")
    plan = compute_plan(spec)
    assert len(plan.switches) == len(spec.switches) and len(plan.cables) == len(spec.cables)
    assert len(plan.hosts) == len(spec.hosts) + len(spec.nodes)
    assert [(c.a_port, c.b_port) for c in plan.cables] == [(c.a_port, c.b_port) for c in spec.cables]
    assert [h.port for h in plan.hosts] == [h.port for h in spec.hosts] + [n.port for n in spec.nodes]
    names = [c.a_intf for c in plan.cables] + [c.b_intf for c in plan.cables] + [h.switch_intf for h in plan.hosts]
    assert len(names) == len(set(names)) and all(len(n) <= IFNAMSIZ for n in names)


def test_long_names_get_short_stable_interface_names() -> None:
    assert intf_name("h1", 0) == "h1-eth0"
    long = intf_name("a-rather-long-host-name", 0)
    assert len(long) <= IFNAMSIZ and long == intf_name("a-rather-long-host-name", 0)
    assert long != intf_name("a-rather-long-host-nam2", 0)


def test_what_linux_or_ovs_cannot_build_is_refused_with_every_reason() -> None:
    text = SMALL.replace("sw1", "a-switch-name-too-long").replace("b_port: 9", "b_port: 70000")
    with pytest.raises(PlanError) as caught:
        plan_of(text)
    problems = "\n".join(caught.value.problems)
    assert "a-switch-name-too-long" in problems and "OVS bridge" in problems
    assert "port 70000 of sw2" in problems
