"""``FabricState``: the one immutable model every part of edgectl reads.

``state.apply(event)`` returns the next state with ``generation + 1``, or the same object when the
event changes nothing (so ``generation`` counts real changes and level-triggered readers skip
no-ops). An event that contradicts the model raises ``EventRejected`` and the state stays as it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from netmodel import events as ev
from netmodel.ids import HostId, NodeId, ServiceName, SiteId, SwitchId, WorkloadId, format_dpid
from netmodel.topology import Topology
from netmodel.types import (
    DEFAULT_CAPACITY_MBPS,
    Attachment,
    ComputeNode,
    Host,
    LinkAttrs,
    PolicyDefault,
    Port,
    Service,
    Site,
    Switch,
    Workload,
    frozen_map,
    map_with,
    map_without,
)

HOST_TTL_S = 300.0
"""A learned, undeclared host not seen for this long is forgotten (it left, or was rebuilt elsewhere)."""
HOST_SEEN_REFRESH_S = 60.0
"""How stale an undeclared host's last sighting may get before a sighting is news again (see
``learning_due``): keeps a talking host from expiring without a model change per ARP."""


class EventRejected(ValueError):
    """The event names something the model does not know, or breaks an invariant."""


@dataclass(frozen=True, slots=True)
class FabricState:
    topology: Topology = field(default_factory=Topology)
    sites: Mapping[SiteId, Site] = field(default_factory=frozen_map)
    hosts: Mapping[HostId, Host] = field(default_factory=frozen_map)
    nodes: Mapping[NodeId, ComputeNode] = field(default_factory=frozen_map)
    services: Mapping[ServiceName, Service] = field(default_factory=frozen_map)
    workloads: Mapping[WorkloadId, Workload] = field(default_factory=frozen_map)
    hosts_seen_at: Mapping[HostId, float] = field(default_factory=frozen_map)  # undeclared hosts: last seen
    unhealthy: Mapping[WorkloadId, str] = field(default_factory=frozen_map)
    """Placed instances reported unhealthy (``WorkloadHealthChanged``), with the reason. A runtime
    observation of the processes behind a placement, not part of it: a new placement clears it."""
    starting: Mapping[WorkloadId, float] = field(default_factory=frozen_map)
    """Placed instances whose node agent is starting the app beside its sidecar (``WorkloadStarting``),
    with when it said so: no endpoint until a healthy report. Runtime, like ``unhealthy``."""
    desired_revision: str = ""
    """The revision of the desired-state document the declarations come from (``DesiredStateApplied``)."""
    default_policy: PolicyDefault = PolicyDefault.DENY
    """What a call no service's ``allow_from`` admits gets (the document's ``authorization.default``)."""
    generation: int = 0

    def apply(self, event: ev.Event) -> FabricState:
        handler = _HANDLERS.get(type(event))
        if handler is None:
            raise EventRejected(f"unknown event type {type(event).__name__}")
        new = handler(self, event)
        if new is self:
            return self
        return replace(new, generation=self.generation + 1)

    def _with(self, **changes: Any) -> FabricState:
        return replace(self, **changes)

    # Convenience reads used by several packages.
    def switch_by_name(self, name: str) -> Switch | None:
        for switch in self.topology.switches.values():
            if switch.name == name:
                return switch
        return None

    def workloads_on(self, node: NodeId) -> list[Workload]:
        return [w for w in self.workloads.values() if w.node == node]


# -- transitions ------------------------------------------------------------------------------------


def _switch_connected(state: FabricState, event: ev.SwitchConnected) -> FabricState:
    """A (re)connected switch reports its ports: the compute nodes on them follow as on a port status
    (a port that went down or came up while the switch was away says so only here)."""
    topo = state.topology
    known = topo.switches.get(event.switch)
    ports = frozen_map({p.no: p for p in event.ports})
    if known is None:
        # A switch the fabric file does not name: shown, flagged undeclared.
        known = Switch(id=event.switch, name=f"dpid:{format_dpid(event.switch)}", declared=False)
    switch = replace(known, connected=True, ports=ports, connected_at=event.at)
    if switch == topo.switches.get(event.switch):
        return state  # the same connection reported again: nothing changed
    nodes = state.nodes
    for port in event.ports:
        before = known.ports.get(port.no)
        here = Attachment(event.switch, port.no)
        if not port.up:
            nodes = _nodes_marked(nodes, here, up=False)
        elif before is not None and not before.up:
            nodes = _nodes_marked(nodes, here, up=True)  # came up while away (not a first report)
    return state._with(topology=topo.with_switch(switch), nodes=nodes)


def _switch_disconnected(state: FabricState, event: ev.SwitchDisconnected) -> FabricState:
    """The OpenFlow session ended: the switch's links go down, its compute nodes do not.

    The data plane keeps forwarding on the flows it holds when the control connection drops, so the
    nodes behind it may well still be reachable; placement already treats them as behind a switch that
    is down, and a NodeWentDown here could not be undone by anything the switch reports on reconnect.
    """
    topo = state.topology
    known = topo.switches.get(event.switch)
    if known is None or not known.connected:
        return state
    topo = topo.with_switch(replace(known, connected=False))
    topo = topo.updated_links(list(topo.links_of(event.switch)), up=False)
    return state._with(topology=topo)


def _port_status_changed(state: FabricState, event: ev.PortStatusChanged) -> FabricState:
    """A port going down takes its cable and the compute nodes on it down in one step.

    A node's access port is its only way into the fabric, so a node behind a down port is
    unreachable: marking it down here is what lets placement's failover move its workloads.
    """
    topo = state.topology
    switch = _require_switch(topo, event.switch)
    old_port = switch.ports.get(event.port.no)
    if old_port == event.port:
        return state
    topo = topo.with_switch(replace(switch, ports=frozen_map({**switch.ports, event.port.no: event.port})))
    nodes = state.nodes
    here = Attachment(event.switch, event.port.no)
    if not event.port.up:
        topo = _cable_down(topo, topo.links_on_port(event.switch, event.port.no))
        nodes = _nodes_marked(nodes, here, up=False)
    elif old_port is None or not old_port.up:
        # Only a port that comes up brings its nodes up: a change to a port that was already up (a
        # rename) must not undo a NodeWentDown from elsewhere.
        nodes = _nodes_marked(nodes, here, up=True)
    # A port coming up does not bring links up: LLDP (LinkDiscovered) proves a link works.
    return state._with(topology=topo, nodes=nodes)


def _port_deleted(state: FabricState, event: ev.PortDeleted) -> FabricState:
    """A deleted port is a down port for good: its cable and the compute nodes on it go down."""
    topo = state.topology
    switch = _require_switch(topo, event.switch)
    if event.port not in switch.ports:
        return state
    ports = {no: p for no, p in switch.ports.items() if no != event.port}
    topo = topo.with_switch(replace(switch, ports=frozen_map(ports)))
    topo = _cable_down(topo, topo.links_on_port(event.switch, event.port))
    nodes = _nodes_marked(state.nodes, Attachment(event.switch, event.port), up=False)
    return state._with(topology=topo, nodes=nodes)


def _link_discovered(state: FabricState, event: ev.LinkDiscovered) -> FabricState:
    topo = state.topology
    link = event.link
    for end in (link.src, link.dst):
        _require_switch(topo, end)
    attrs = topo.links.get(link)
    if attrs is None:
        attrs = LinkAttrs(capacity_mbps=DEFAULT_CAPACITY_MBPS, declared=False, discovered=True)
    elif attrs.discovered and attrs.up:
        return state
    else:
        attrs = replace(attrs, discovered=True, up=True)
    return state._with(topology=topo.with_link(link, attrs))


def _link_down(state: FabricState, event: ev.LinkWentDown) -> FabricState:
    topo = state.topology
    _require_link(topo, event.link)
    new = _cable_down(topo, [event.link])
    return state if new is topo else state._with(topology=new)


def _link_up(state: FabricState, event: ev.LinkCameUp) -> FabricState:
    topo = state.topology
    _require_link(topo, event.link)
    both = [link for link in (event.link, event.link.reversed()) if link in topo.links]
    new = topo.updated_links(both, up=True)
    return state if new is topo else state._with(topology=new)


def _link_latency_measured(state: FabricState, event: ev.LinkLatencyMeasured) -> FabricState:
    topo = state.topology
    latest: dict[Any, int] = {}  # a link named twice in one batch: the last value wins
    for link, latency_us in event.latencies_us:
        _require_link(topo, link)
        if latency_us < 0:
            raise EventRejected(f"negative latency {latency_us} us for {link}")
        latest[link] = latency_us
    changes: dict[Any, LinkAttrs] = {}
    for link, latency_us in latest.items():
        attrs = topo.links[link]
        if attrs.measured_latency_us != latency_us:
            changes[link] = replace(attrs, measured_latency_us=latency_us, measured_at=event.at)
    if not changes:
        return state
    return state._with(topology=topo.with_link_attrs(changes))


def _link_load_measured(state: FabricState, event: ev.LinkLoadMeasured) -> FabricState:
    """Only the load fields change: nothing routing or placement weighs (latency, up, discovered)."""
    topo = state.topology
    latest: dict[Any, float | None] = {}  # a link named twice in one batch: the last value wins
    for link, load_bps in event.loads_bps:
        _require_link(topo, link)
        if load_bps is not None and not (0 <= load_bps < math.inf):
            raise EventRejected(f"load {load_bps} bit/s for {link}: not a finite rate >= 0")
        latest[link] = load_bps
    changes: dict[Any, LinkAttrs] = {}
    for link, load_bps in latest.items():
        attrs = topo.links[link]
        if attrs.measured_load_bps != load_bps:
            at = None if load_bps is None else event.at
            changes[link] = replace(attrs, measured_load_bps=load_bps, load_measured_at=at)
    if not changes:
        return state
    return state._with(topology=topo.with_link_attrs(changes))


def _host_learned(state: FabricState, event: ev.HostLearned) -> FabricState:
    """Who sent this: a declared host by its MAC; else a declared host at this IP whose MAC the file
    does not fix (a rebuilt testbed gives hosts new MACs: still the same host, not a second one); else
    an undeclared host by its MAC; else a new undeclared host named by its MAC. An undeclared host left
    holding the same MAC or IP is stale and forgotten: an address belongs to one host at a time."""
    _require_switch(state.topology, event.attachment.switch)
    mac = event.mac.lower()
    hosts = state.hosts.values()
    match = next((h for h in hosts if h.declared and h.mac.lower() == mac), None)
    if match is None:
        match = next((h for h in hosts if h.declared and h.ip == event.ip and (not h.mac or h.mac_learned)), None)
    if match is None:
        match = next((h for h in hosts if not h.declared and h.mac.lower() == mac), None)
    if match is None:
        host = Host(id=HostId(mac), attachment=event.attachment, ip=event.ip, mac=mac, declared=False)
    else:
        learned = match.mac_learned or (match.declared and match.mac.lower() != mac)
        host = replace(match, attachment=event.attachment, mac=mac, ip=event.ip or match.ip, mac_learned=learned)
    stale = {
        h.id
        for h in hosts
        if not h.declared and h.id != host.id and (h.mac.lower() == mac or (host.ip and h.ip == host.ip))
    }
    seen = state.hosts_seen_at.get(host.id)
    refresh = not host.declared and (seen is None or event.at - seen >= HOST_SEEN_REFRESH_S)
    if host == match and not stale and not refresh:
        return state
    new_hosts = {k: h for k, h in state.hosts.items() if k not in stale}
    new_hosts[host.id] = host
    new_seen = {k: t for k, t in state.hosts_seen_at.items() if k not in stale}
    if not host.declared:
        new_seen[host.id] = event.at if seen is None else max(event.at, seen)  # events may arrive late
    return state._with(hosts=frozen_map(new_hosts), hosts_seen_at=frozen_map(new_seen))


def _hosts_expired(state: FabricState, event: ev.HostsExpired) -> FabricState:
    gone = set(expired_hosts(state, event.at))
    if not gone:
        return state
    return state._with(
        hosts=frozen_map({k: h for k, h in state.hosts.items() if k not in gone}),
        hosts_seen_at=frozen_map({k: t for k, t in state.hosts_seen_at.items() if k not in gone}),
    )


def expired_hosts(state: FabricState, now: float) -> tuple[HostId, ...]:
    """Undeclared hosts last seen more than ``HOST_TTL_S`` before ``now`` (declared hosts never expire)."""
    return tuple(
        host.id
        for host in state.hosts.values()
        if not host.declared and now - state.hosts_seen_at.get(host.id, float("-inf")) > HOST_TTL_S
    )


def learning_due(state: FabricState, mac: str, now: float) -> bool:
    """Whether a sighting of ``mac`` is news for the model even if the sender was seen before at the
    same place: its host is unknown (never learned, or expired) or undeclared and last seen more than
    ``HOST_SEEN_REFRESH_S`` ago. Adapters that publish only changes use it so a talking host stays."""
    mac = mac.lower()
    host = next((h for h in state.hosts.values() if h.mac.lower() == mac), None)
    if host is None:
        return True
    seen = state.hosts_seen_at.get(host.id)
    return not host.declared and (seen is None or now - seen >= HOST_SEEN_REFRESH_S)


def _node_up_or_down(up: bool) -> Callable[[FabricState, Any], FabricState]:
    def transition(state: FabricState, event: ev.NodeCameUp | ev.NodeWentDown) -> FabricState:
        node = state.nodes.get(event.node)
        if node is None:
            raise EventRejected(f"unknown node {event.node!r}")
        if node.up == up:
            return state
        return state._with(nodes=map_with(state.nodes, node.id, replace(node, up=up)))

    return transition


def _workload_placed(state: FabricState, event: ev.WorkloadPlaced) -> FabricState:
    workload = event.workload
    if workload.service not in state.services:
        raise EventRejected(f"workload {workload.id!r}: unknown service {workload.service!r}")
    if workload.node is not None and workload.node not in state.nodes:
        raise EventRejected(f"workload {workload.id!r}: unknown node {workload.node!r}")
    if state.workloads.get(workload.id) == workload:
        return state
    # Placed anew (or moved): new processes, so whatever was seen of the old ones no longer holds.
    return state._with(
        workloads=map_with(state.workloads, workload.id, workload),
        unhealthy=_without(state.unhealthy, workload.id),
        starting=map_without(state.starting, workload.id),
    )


def _workload_removed(state: FabricState, event: ev.WorkloadRemoved) -> FabricState:
    if event.workload not in state.workloads:
        return state
    return state._with(
        workloads=map_without(state.workloads, event.workload),
        unhealthy=_without(state.unhealthy, event.workload),
        starting=map_without(state.starting, event.workload),
    )


def _workload_health_changed(state: FabricState, event: ev.WorkloadHealthChanged) -> FabricState:
    """Idempotent: a second report of the same health changes nothing (the first reason is kept). Either
    report ends a start (``WorkloadStarting``): healthy, the app listens; unhealthy, the start failed."""
    if event.workload not in state.workloads:
        raise EventRejected(f"unknown workload {event.workload!r}")
    starting = map_without(state.starting, event.workload)
    if event.healthy:
        unhealthy = _without(state.unhealthy, event.workload)
    elif event.workload in state.unhealthy:
        unhealthy = state.unhealthy
    else:
        unhealthy = map_with(state.unhealthy, event.workload, event.reason or "reported unhealthy")
    if unhealthy is state.unhealthy and starting is state.starting:
        return state
    return state._with(unhealthy=unhealthy, starting=starting)


def _workload_starting(state: FabricState, event: ev.WorkloadStarting) -> FabricState:
    """Idempotent: a second report keeps the first time."""
    if event.workload not in state.workloads:
        raise EventRejected(f"unknown workload {event.workload!r}")
    if event.workload in state.starting:
        return state
    return state._with(starting=map_with(state.starting, event.workload, event.at))


def _desired_state_applied(state: FabricState, event: ev.DesiredStateApplied) -> FabricState:
    from netmodel.desired import merge_desired  # netmodel.desired builds on this module

    merged = merge_desired(state, event.spec)
    if merged is state and state.desired_revision == event.revision:
        return state
    return replace(merged, desired_revision=event.revision)


# -- helpers ----------------------------------------------------------------------------------------


def _require_switch(topo: Topology, switch: SwitchId) -> Switch:
    known = topo.switches.get(switch)
    if known is None:
        raise EventRejected(f"unknown switch {format_dpid(switch)}")
    return known


def _require_link(topo: Topology, link: Any) -> LinkAttrs:
    attrs = topo.links.get(link)
    if attrs is None:
        raise EventRejected(f"unknown link {link}")
    return attrs


def _nodes_marked(
    nodes: Mapping[NodeId, ComputeNode], attachment: Attachment, *, up: bool
) -> Mapping[NodeId, ComputeNode]:
    """``nodes`` with every node attached at ``attachment`` set to ``up``; the same map when none changes."""
    changed = {n.id: replace(n, up=up) for n in nodes.values() if n.attachment == attachment and n.up != up}
    if not changed:
        return nodes
    return frozen_map({**nodes, **changed})


def _without(unhealthy: Mapping[WorkloadId, str], workload: WorkloadId) -> Mapping[WorkloadId, str]:
    return map_without(unhealthy, workload)


def _cable_down(topo: Topology, links: list[Any]) -> Topology:
    both = {x for link in links for x in (link, link.reversed()) if x in topo.links}
    return topo.updated_links(sorted(both), up=False)


_HANDLERS: dict[type, Callable[[FabricState, Any], FabricState]] = {
    ev.SwitchConnected: _switch_connected,
    ev.SwitchDisconnected: _switch_disconnected,
    ev.PortStatusChanged: _port_status_changed,
    ev.PortDeleted: _port_deleted,
    ev.LinkDiscovered: _link_discovered,
    ev.LinkWentDown: _link_down,
    ev.LinkCameUp: _link_up,
    ev.LinkLatencyMeasured: _link_latency_measured,
    ev.LinkLoadMeasured: _link_load_measured,
    ev.HostLearned: _host_learned,
    ev.HostsExpired: _hosts_expired,
    ev.NodeWentDown: _node_up_or_down(False),
    ev.NodeCameUp: _node_up_or_down(True),
    ev.WorkloadPlaced: _workload_placed,
    ev.WorkloadRemoved: _workload_removed,
    ev.WorkloadHealthChanged: _workload_health_changed,
    ev.WorkloadStarting: _workload_starting,
    ev.DesiredStateApplied: _desired_state_applied,
}

__all__ = [
    "HOST_SEEN_REFRESH_S",
    "HOST_TTL_S",
    "EventRejected",
    "FabricState",
    "Port",
    "expired_hosts",
    "learning_due",
]
