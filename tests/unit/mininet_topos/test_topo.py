"""FabricTopo: the Mininet graph carries every class and option, so `mn --topo` builds it as build() does."""

from __future__ import annotations

import pytest
from mininet.link import Link
from mininet.node import OVSSwitch

from mininet_topos import topo as topo_module
from mininet_topos.links import DelayRelayLink, SwitchPortIntf
from mininet_topos.topo import DelayBackend, FabricHost, FabricTopo, choose_backend
from netmodel.fabric_file import parse_fabric
from tests.unit.mininet_topos.test_plan import SMALL


def links_by_ends(topo: FabricTopo) -> dict[tuple[str, str], dict]:
    return {(info["node1"], info["node2"]): info for _a, _b, info in topo.links(withInfo=True)}


def test_switches_are_userspace_ovs_on_openflow13_with_the_spec_dpid() -> None:
    topo = FabricTopo(parse_fabric(SMALL), delay=False)
    info = topo.nodeInfo("sw1")
    assert info["cls"] is OVSSwitch
    assert (info["dpid"], info["datapath"], info["protocols"], info["failMode"]) == (
        "00000000000000a1",
        "user",
        "OpenFlow13",
        "secure",
    )
    assert topo.nodeInfo("h1")["cls"] is FabricHost and topo.nodeInfo("h1")["ip"] == "10.1.0.1/16"


def test_every_link_names_its_ports() -> None:
    links = links_by_ends(FabricTopo(parse_fabric(SMALL), delay=False))
    host = links[("h1", "sw1")]
    assert (host["port1"], host["port2"], host["intfName2"], host["addr1"]) == (
        0,
        3,
        "sw1-eth3",
        "02:00:00:00:00:01",
    )
    assert "addr1" not in links[("n1", "sw2")]  # no MAC in the file: Mininet picks one
    cable = next(info for (a, b), info in links.items() if (a, b) == ("sw1", "sw2"))
    assert (cable["port1"], cable["port2"], cable["intfName1"], cable["intfName2"]) == (
        7,
        9,
        "sw1-eth7",
        "sw2-eth9",
    )


def test_no_delay_cables_are_shaped_veths() -> None:
    cable = links_by_ends(FabricTopo(parse_fabric(SMALL), delay=False))[("sw1", "sw2")]
    assert cable["cls"] is Link and cable["intf"] is SwitchPortIntf
    assert cable["bw"] == 100.0 and "delay" not in cable


def test_netem_cables_carry_the_latency_on_both_ports() -> None:
    links = links_by_ends(FabricTopo(parse_fabric(SMALL), delay="netem"))
    assert links[("sw1", "sw2")]["delay"] == "5ms"
    assert "delay" not in links[("sw2", "sw1")]  # a zero-latency cable stays a plain link


def test_relay_cables_use_the_relay_link_except_at_zero_latency() -> None:
    links = links_by_ends(FabricTopo(parse_fabric(SMALL), delay="relay"))
    relay = links[("sw1", "sw2")]
    assert relay["cls"] is DelayRelayLink and (relay["delay_ms"], relay["bw"]) == (5.0, 100.0)
    assert links[("sw2", "sw1")]["cls"] is Link


@pytest.mark.parametrize(
    ("real_delay", "netem", "expected"),
    [
        (False, True, DelayBackend.NONE),
        ("none", False, DelayBackend.NONE),
        (None, True, DelayBackend.NETEM),
        (None, False, DelayBackend.RELAY),
        (True, False, DelayBackend.RELAY),
        ("auto", True, DelayBackend.NETEM),
        ("relay", True, DelayBackend.RELAY),
        ("netem", False, DelayBackend.NETEM),
    ],
)
def test_choose_backend(monkeypatch, real_delay, netem, expected) -> None:
    monkeypatch.setattr(topo_module, "netem_available", lambda: netem)
    assert choose_backend(real_delay) is expected


def test_unknown_delay_choices_are_refused() -> None:
    with pytest.raises(ValueError, match="real_delay must be"):
        choose_backend("sometimes")
