"""Names a fabric needs that exist already: found before anything is built, and named in the error."""

from __future__ import annotations

import pytest

from mininet_topos import inuse
from mininet_topos.inuse import NamesInUse, names_taken, names_wanted, parse_ip_link
from mininet_topos.plan import compute_plan
from mininet_topos.topo import FabricTopo, for_mn_command
from netmodel.fabric_file import parse_fabric
from tests.unit.mininet_topos.test_plan import SMALL

IP_LINK = """1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default
7: sw1-eth3@if6: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc htb master ovs-netdev state UP
9: sw1: <BROADCAST,MULTICAST,PROMISC,UP,LOWER_UP> mtu 1500 qdisc fq_codel state UNKNOWN
"""


def test_what_a_build_creates_in_the_root_namespace() -> None:
    wanted = names_wanted(compute_plan(parse_fabric(SMALL)))
    assert wanted.bridges == ("sw1", "sw2")
    # Every switch port (cables and host/node attachments) and each bridge's own interface; host-side
    # interfaces live in the hosts' unnamed namespaces and cannot collide.
    assert set(wanted.interfaces) == {
        "sw1",
        "sw2",
        "sw1-eth7",
        "sw2-eth9",
        "sw2-eth1",
        "sw1-eth1",
        "sw1-eth3",
        "sw2-eth2",
    }


def test_parse_ip_link_strips_the_peer_suffix() -> None:
    assert parse_ip_link(IP_LINK) == {"lo", "sw1-eth3", "sw1"}
    assert parse_ip_link("") == set()


def test_names_taken_lists_only_the_fabric_s_own_names() -> None:
    wanted = names_wanted(compute_plan(parse_fabric(SMALL)))
    assert names_taken(wanted, {"sw1", "other"}, parse_ip_link(IP_LINK)) == (["sw1"], ["sw1", "sw1-eth3"])
    assert names_taken(wanted, {"other"}, {"lo", "eth0"}) == ([], [])


def test_the_error_names_what_is_in_use_and_says_nothing_was_touched() -> None:
    error = NamesInUse("small", ["sw1"], [f"sw1-eth{i}" for i in range(20)])
    text = str(error)
    assert "'small'" in text and "OVS bridges sw1" in text and "sw1-eth0" in text and "and 8 more" in text
    assert "nothing was created or deleted" in text and "\n" not in text


def test_refuse_reads_ovs_and_ip_link(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = compute_plan(parse_fabric(SMALL))
    monkeypatch.setattr(inuse, "existing_bridges", lambda: {"sw2"})
    monkeypatch.setattr(inuse, "existing_interfaces", lambda: {"lo", "sw2"})
    with pytest.raises(NamesInUse) as refused:
        inuse.refuse_names_in_use(plan)
    assert (refused.value.bridges, refused.value.interfaces) == (["sw2"], ["sw2"])
    monkeypatch.setattr(inuse, "existing_bridges", set)
    monkeypatch.setattr(inuse, "existing_interfaces", lambda: {"lo"})
    inuse.refuse_names_in_use(plan)  # free: no error


def test_for_mn_a_fabric_that_cannot_be_built_exits_instead_of_raising(monkeypatch: pytest.MonkeyPatch) -> None:
    """mn runs its machine-wide cleanup after an Exception, not after SystemExit."""
    topos = for_mn_command({"fabric": FabricTopo})
    monkeypatch.setattr(inuse, "existing_bridges", lambda: {"sw1"})
    monkeypatch.setattr(inuse, "existing_interfaces", set)
    with pytest.raises(SystemExit, match=r"names already in use.*sw1") as exited:
        topos["fabric"](parse_fabric(SMALL), delay=False)
    assert not isinstance(exited.value, Exception)
    with pytest.raises(SystemExit, match="No such file"):
        topos["fabric"]("/nonexistent/fabric.yaml", delay=False)
    monkeypatch.setattr(inuse, "existing_bridges", set)
    assert isinstance(topos["fabric"](parse_fabric(SMALL), delay=False), FabricTopo)
