"""sdnctl.hosts: hosts learned from ARP at edge ports, proxy ARP, expiry. A fake wall clock (floats)."""

from __future__ import annotations

from sdnctl_helpers import fabric, live

from netmodel import events as ev
from netmodel.ids import PortNo, SwitchId
from netmodel.state import HOST_SEEN_REFRESH_S, HOST_TTL_S, FabricState
from netmodel.types import Attachment
from sdnctl import frames
from sdnctl.discovery import PacketOut
from sdnctl.hosts import HostLearning, expiry, proxy_arp_reply

A, B = SwitchId(1), SwitchId(2)
FABRIC = """
switches:
  - {id: a, dpid: 1, site: s}
  - {id: b, dpid: 2, site: s}
links:
  - {a: a, b: b, latency_ms: 1, bandwidth_mbps: 100}
hosts:
  - {id: ha, switch: a, ip: 10.0.0.1, mac: "02:00:00:00:00:01"}
  - {id: hb, switch: b, ip: 10.0.0.2}
"""
ASKER_MAC, ASKER_IP = "02:00:00:00:00:09", "10.0.0.9"
EDGE = PortNo(5)  # a port of switch a with no link: where the asker sits
HB_PORT = PortNo(2)  # hb's declared attachment on switch b


def state() -> FabricState:
    return live(fabric(FABRIC))


def request(target_ip: str, sender_mac: str = ASKER_MAC, sender_ip: str = ASKER_IP) -> tuple[frames.Arp, bytes]:
    arp = frames.Arp(frames.ARP_REQUEST, sender_mac, sender_ip, "00:00:00:00:00:00", target_ip)
    return arp, frames.build_arp(arp, "ff:ff:ff:ff:ff:ff")


def test_a_request_for_a_host_with_a_known_mac_gets_the_owners_reply_at_the_askers_port() -> None:
    arp, data = request("10.0.0.1")
    outcome = HostLearning().on_arp(state(), A, EDGE, arp, data, True, 100.0)
    assert outcome.events == (ev.HostLearned(ASKER_MAC, ASKER_IP, Attachment(A, EDGE), 100.0),)
    assert outcome.packets == (PacketOut(A, EDGE, frames.arp_reply(arp, "02:00:00:00:00:01")),)
    reply = frames.parse_arp(outcome.packets[0].data)
    assert reply == frames.Arp(frames.ARP_REPLY, "02:00:00:00:00:01", "10.0.0.1", ASKER_MAC, ASKER_IP)


def test_a_request_for_an_address_nobody_has_gets_no_answer() -> None:
    arp, data = request("10.0.0.77")
    assert HostLearning().on_arp(state(), A, EDGE, arp, data, True, 100.0).packets == ()
    assert proxy_arp_reply(state(), {}, arp) is None


def test_the_proxy_arp_reply_prefers_the_learned_mac_over_the_declared_one() -> None:
    arp, _ = request("10.0.0.1")
    learned = {"10.0.0.1": ("02:00:00:00:00:aa", Attachment(A, PortNo(2)))}
    assert proxy_arp_reply(state(), learned, arp) == frames.arp_reply(arp, "02:00:00:00:00:aa")
    assert proxy_arp_reply(state(), {}, arp) == frames.arp_reply(arp, "02:00:00:00:00:01")


def test_an_unknown_mac_is_asked_at_the_targets_port_and_its_reply_goes_to_the_asker() -> None:
    hosts, fabric_state = HostLearning(), state()
    arp, data = request("10.0.0.2")  # hb: declared without a MAC
    assert hosts.on_arp(fabric_state, A, EDGE, arp, data, True, 100.0).packets == (PacketOut(B, HB_PORT, data),)
    reply = frames.Arp(frames.ARP_REPLY, "02:00:00:00:00:02", "10.0.0.2", ASKER_MAC, ASKER_IP)
    reply_data = frames.build_arp(reply, ASKER_MAC)
    outcome = hosts.on_arp(fabric_state, B, HB_PORT, reply, reply_data, True, 100.1)
    assert outcome.events == (ev.HostLearned("02:00:00:00:00:02", "10.0.0.2", Attachment(B, HB_PORT), 100.1),)
    assert outcome.packets == (PacketOut(A, EDGE, reply_data),)
    # Now the MAC is known: the next asker gets the answer from the controller.
    again, again_data = request("10.0.0.2", "02:00:00:00:00:01", "10.0.0.1")
    assert hosts.on_arp(fabric_state, A, PortNo(2), again, again_data, True, 101.0).packets == (
        PacketOut(A, PortNo(2), frames.arp_reply(again, "02:00:00:00:00:02")),
    )


def test_arp_at_a_fabric_port_is_neither_learned_nor_answered() -> None:
    arp, data = request("10.0.0.1")
    outcome = HostLearning().on_arp(state(), A, PortNo(1), arp, data, True, 100.0)
    assert outcome.events == () and outcome.packets == ()


def test_a_copy_from_a_declared_link_not_discovered_yet_teaches_nothing() -> None:
    """A restarted controller: the switches are back, their declared link not seen yet. The copy of hb's
    ARP that switch a sends after it crossed the link is not hb's own port (hb would be routed back
    along the link: a loop until its next ARP)."""
    restarted = fabric(FABRIC)
    for dpid in (A, B):
        restarted = restarted.apply(ev.SwitchConnected(dpid, (), 0.0))
    assert not any(attrs.discovered for attrs in restarted.topology.links.values())
    arp, data = request("10.0.0.1", "02:00:00:00:00:02", "10.0.0.2")
    outcome = HostLearning().on_arp(restarted, A, PortNo(1), arp, data, False, 100.0)
    assert outcome.events == () and outcome.packets == ()
    at_its_own_port = HostLearning().on_arp(restarted, B, HB_PORT, arp, data, False, 100.0)
    assert at_its_own_port.events == (ev.HostLearned("02:00:00:00:00:02", "10.0.0.2", Attachment(B, HB_PORT), 100.0),)


def test_a_copy_of_a_routed_arp_is_learned_from_and_not_answered() -> None:
    arp, data = request("10.0.0.1")
    outcome = HostLearning().on_arp(state(), A, EDGE, arp, data, False, 100.0)
    assert outcome.events == (ev.HostLearned(ASKER_MAC, ASKER_IP, Attachment(A, EDGE), 100.0),)
    assert outcome.packets == ()


def test_an_arp_probe_from_0_0_0_0_teaches_nothing() -> None:
    arp, data = request("10.0.0.1", sender_ip="0.0.0.0")
    assert HostLearning().on_arp(state(), A, EDGE, arp, data, True, 100.0).events == ()


def test_a_known_host_is_published_again_only_when_the_model_wants_a_refresh_or_it_moved() -> None:
    hosts, arp_and_data = HostLearning(), request("10.0.0.1")
    fabric_state = state()
    (learned,) = hosts.on_arp(fabric_state, A, EDGE, *arp_and_data, True, 100.0).events
    fabric_state = fabric_state.apply(learned)
    assert hosts.on_arp(fabric_state, A, EDGE, *arp_and_data, True, 101.0).events == ()
    refresh = 100.0 + HOST_SEEN_REFRESH_S
    assert hosts.on_arp(fabric_state, A, EDGE, *arp_and_data, True, refresh).events == (
        ev.HostLearned(ASKER_MAC, ASKER_IP, Attachment(A, EDGE), refresh),
    )
    moved = hosts.on_arp(fabric_state, A, PortNo(6), *arp_and_data, True, 102.0).events
    assert moved == (ev.HostLearned(ASKER_MAC, ASKER_IP, Attachment(A, PortNo(6)), 102.0),)


def test_learned_hosts_expire_after_the_ttl_and_declared_ones_never() -> None:
    assert expiry(state(), 1e9) == ()  # only declared hosts
    arp, data = request("10.0.0.1")
    (learned,) = HostLearning().on_arp(state(), A, EDGE, arp, data, True, 100.0).events
    fabric_state = state().apply(learned)
    assert expiry(fabric_state, 100.0 + HOST_TTL_S - 1) == ()
    assert expiry(fabric_state, 100.0 + HOST_TTL_S + 1) == (ev.HostsExpired(100.0 + HOST_TTL_S + 1),)
    assert expiry(fabric_state.apply(ev.HostsExpired(100.0 + HOST_TTL_S + 1)), 1e9) == ()
