"""Hosts from ARP: learning at edge ports, proxy ARP, expiry of learned hosts. Pure.

The os-ken app parses an ARP packet-in and hands it here with the model's state and the wall clock
(the model stamps host sightings with it); it publishes the events and sends the frames returned.
ARP is never flooded: a request is answered by the controller, or relayed to the target's port.
"""

from __future__ import annotations

from dataclasses import dataclass

from netmodel import events as ev
from netmodel.ids import PortNo, SwitchId
from netmodel.state import FabricState, expired_hosts, learning_due
from netmodel.types import Attachment
from sdnctl import frames
from sdnctl.discovery import PacketOut


@dataclass(frozen=True, slots=True)
class ArpOutcome:
    events: tuple[ev.Event, ...] = ()
    packets: tuple[PacketOut, ...] = ()


class HostLearning:
    """Which MAC answered for an IP, and where: the ARP cache behind learning and proxy ARP.
    Not thread-safe: the adapter serialises calls."""

    def __init__(self) -> None:
        self._arp_cache: dict[str, tuple[str, Attachment]] = {}  # ip -> (mac, where)

    def on_arp(
        self,
        state: FabricState,
        dpid: SwitchId,
        in_port: PortNo,
        arp: frames.Arp,
        data: bytes,
        answer: bool,
        now: float,
    ) -> ArpOutcome:
        """An ARP packet-in (``data`` its frame): learn its sender; when ``answer``, answer a request
        or deliver a reply to the asker. ``answer`` is False for a copy of an ARP the fabric already
        routes to its owner: learn from it, send nothing."""
        if _is_fabric_port(state, dpid, in_port):
            return ArpOutcome()  # only edge ports have hosts; our own probes never come back as ARP
        events: tuple[ev.Event, ...] = ()
        where = Attachment(dpid, in_port)
        seen = self._arp_cache.get(arp.sender_ip) == (arp.sender_mac, where)  # learning_due: expiry, refresh
        if arp.sender_ip != "0.0.0.0" and (not seen or learning_due(state, arp.sender_mac, now)):
            self._arp_cache[arp.sender_ip] = (arp.sender_mac, where)
            if not any(node.ip == arp.sender_ip for node in state.nodes.values()):
                events = (ev.HostLearned(arp.sender_mac, arp.sender_ip, where, now),)
        if not answer:
            return ArpOutcome(events)
        if arp.op == frames.ARP_REQUEST:
            packet = self.proxy_arp(state, dpid, in_port, arp, data)
        else:
            # A reply to a request we relayed: deliver it to the asker's port (ARP is never flooded).
            asker = self._arp_cache.get(arp.target_ip)
            packet = PacketOut(asker[1].switch, asker[1].port, data) if asker is not None else None
        return ArpOutcome(events, (packet,) if packet is not None else ())

    def proxy_arp(
        self, state: FabricState, dpid: SwitchId, in_port: PortNo, request: frames.Arp, data: bytes
    ) -> PacketOut | None:
        """The answer to an ARP request at ``dpid``/``in_port``: the reply when the target's MAC is
        known; else the request itself, relayed to the target's port (its reply comes back as a
        packet-in); None for an address nobody has."""
        reply = proxy_arp_reply(state, self._arp_cache, request)
        if reply is not None:
            return PacketOut(dpid, in_port, reply)
        target = _attachment_of(state, request.target_ip)
        return PacketOut(target.switch, target.port, data) if target is not None else None


def proxy_arp_reply(
    state: FabricState, arp_cache: dict[str, tuple[str, Attachment]], request: frames.Arp
) -> bytes | None:
    """The reply frame to ``request`` from the target's owner, when its MAC is known (learned, else
    declared in the fabric file); None otherwise."""
    known = arp_cache.get(request.target_ip)
    mac = known[0] if known else _declared_mac(state, request.target_ip)
    return frames.arp_reply(request, mac) if mac else None


def expiry(state: FabricState, now: float) -> tuple[ev.Event, ...]:
    """A HostsExpired when learned hosts have gone unseen long enough to be forgotten."""
    return (ev.HostsExpired(now),) if expired_hosts(state, now) else ()


def _is_fabric_port(state: FabricState, dpid: SwitchId, port: PortNo) -> bool:
    """A port on a link of the model, declared or discovered (``acl.edge_ports``'s rule): every switch an
    ARP crosses sends the controller a copy, and right after a restart, while no link is seen yet, a copy
    from a declared link's port (only discovered ones counted then) put its sender at the wrong switch:
    its routes pointed back along the path it came by (a loop, pings lost until its next ARP)."""
    return bool(state.topology.links_on_port(dpid, port))


def _declared_mac(state: FabricState, ip: str) -> str:
    for host in state.hosts.values():
        if host.ip == ip and host.mac:
            return host.mac
    return ""


def _attachment_of(state: FabricState, ip: str) -> Attachment | None:
    for host in state.hosts.values():
        if host.ip == ip:
            return host.attachment
    for node in state.nodes.values():
        if node.ip == ip:
            return node.attachment
    return None
