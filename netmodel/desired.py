"""Desired state on top of observed state: one pure rule for replacing what operators declare.

The model holds both. What an operator declares (sites, switches with their dpid and site, links
with their latency prior and capacity, hosts, compute nodes with their capacity, services with
their SLO and replicas) comes from the desired-state document; what the controller observes
(switch connections and ports, discovered links and whether they are up, measured latency, learned
hosts, node reachability, placements, instance health) comes from the network and the APIs.
``merge_desired`` replaces the first and keeps the second, so a new declaration never forgets what
was measured, and a network event never changes a declaration.

Prune is opt-in (``effective_spec``): an object that disappears from the document stays declared,
as an orphan, until prune is on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

from netmodel.fabric import CableSpec, FabricSpec, build_state
from netmodel.ids import NodeId, ServiceName, SwitchId, WorkloadId, format_dpid
from netmodel.state import FabricState
from netmodel.topology import Topology
from netmodel.types import LinkAttrs, LinkId, Switch, Workload, frozen_map

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Orphans:
    """Objects the previous declaration had and the new one does not, kept because prune is off.

    Each entry is ``kind/id`` (``switch/m1``, ``link/ea1-m1``, ``service/web``, ...)."""

    names: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.names)


def cable_names(cables: Iterable[CableSpec]) -> list[str]:
    """Each cable's name: its two switches (``ea1-m1``, ends in file order), ``#2``, ``#3``... for parallel
    cables. Ports are not part of the name: a cable moved to another port is a changed cable."""
    seen: dict[str, int] = {}
    names = []
    for cable in cables:
        base = f"{cable.a}-{cable.b}"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return names


def _keyed_sections(spec: FabricSpec) -> dict[str, dict[str, object]]:
    """Every declared object by kind and name: what prune and plans compare."""
    return {
        "site": {s.id: s for s in spec.sites},
        "switch": {s.name: s for s in spec.switches},
        "link": dict(zip(cable_names(spec.cables), spec.cables, strict=True)),
        "host": {h.id: h for h in spec.hosts},
        "node": {n.id: n for n in spec.nodes},
        "service": {s.name: s for s in spec.services},
    }


def _orphans(old: Iterable[T], new: Iterable[T], key: Callable[[T], object]) -> list[T]:
    """The old items whose name (``key``) no new item has."""
    names = {key(item) for item in new}
    return [item for item in old if key(item) not in names]


def effective_spec(previous: FabricSpec | None, new: FabricSpec, *, prune: bool) -> tuple[FabricSpec, Orphans]:
    """What the controller should hold when ``new`` replaces ``previous``.

    With prune, exactly ``new``. Without, ``new`` plus every object ``previous`` declared that
    ``new`` does not (an orphan), so that removing an object from git never tears it down by
    surprise. Orphans keep their old definitions; ``new`` wins for every name it declares. The
    union stays consistent: an orphan refers only to objects of ``previous``, each of which is either
    in ``new`` or an orphan itself.
    """
    if prune or previous is None:
        return new, Orphans()
    o_sites = _orphans(previous.sites, new.sites, lambda s: s.id)
    o_switches = _orphans(previous.switches, new.switches, lambda s: s.name)
    new_dpids = {s.dpid for s in new.switches}
    # A kept switch whose dpid a new switch took is no orphan but a rename: the new name wins.
    o_switches = [s for s in o_switches if s.dpid not in new_dpids]
    switches = [*new.switches, *o_switches]
    new_cable_names = set(cable_names(new.cables))
    o_cables = [
        c for c, n in zip(previous.cables, cable_names(previous.cables), strict=True) if n not in new_cable_names
    ]
    taken = {(c.a, c.a_port) for c in new.cables} | {(c.b, c.b_port) for c in new.cables}
    taken |= {(h.switch, h.port) for h in new.hosts} | {(n.switch, n.port) for n in new.nodes}
    switch_names = {s.name for s in switches}
    # An orphan cable on a port a new object now uses was re-cabled, not removed from the document.
    o_cables = [
        c
        for c in o_cables
        if (c.a, c.a_port) not in taken and (c.b, c.b_port) not in taken and {c.a, c.b} <= switch_names
    ]
    cables = [*new.cables, *o_cables]
    # An orphan host or node keeps its place only while nothing new took its port or its address (an
    # address assigned by position may now belong to another node): one address, one endpoint.
    ips = {h.ip for h in new.hosts} | {n.ip for n in new.nodes}
    o_hosts = _orphans(previous.hosts, new.hosts, lambda h: h.id)
    o_hosts = [h for h in o_hosts if (h.switch, h.port) not in taken and h.switch in switch_names and h.ip not in ips]
    hosts = [*new.hosts, *o_hosts]
    o_nodes = _orphans(previous.nodes, new.nodes, lambda n: n.id)
    o_nodes = [n for n in o_nodes if (n.switch, n.port) not in taken and n.switch in switch_names and n.ip not in ips]
    nodes = [*new.nodes, *o_nodes]
    o_services = _orphans(previous.services, new.services, lambda s: s.name)
    names = (
        [f"site/{s.id}" for s in o_sites]
        + [f"switch/{s.name}" for s in o_switches]
        + [f"link/{c.a}-{c.b}" for c in o_cables]
        + [f"host/{h.id}" for h in o_hosts]
        + [f"node/{n.id}" for n in o_nodes]
        + [f"service/{s.name}" for s in o_services]
    )
    spec = replace(
        new,
        sites=(*new.sites, *o_sites),
        switches=tuple(switches),
        cables=tuple(cables),
        hosts=tuple(hosts),
        nodes=tuple(nodes),
        services=(*new.services, *o_services),
    )
    return spec, Orphans(tuple(names))


@dataclass(frozen=True, slots=True)
class ObjectChanges:
    """Declared objects added, removed and changed between two documents, as ``kind/name``."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def object_changes(old: FabricSpec | None, new: FabricSpec) -> ObjectChanges:
    """Which declared objects ``new`` adds, removes or changes relative to ``old`` (pure)."""
    before = _keyed_sections(old) if old is not None else {k: {} for k in _keyed_sections(new)}
    after = _keyed_sections(new)
    added, removed, changed = [], [], []
    for kind, objects in after.items():
        previous = before[kind]
        added += [f"{kind}/{name}" for name in objects if name not in previous]
        removed += [f"{kind}/{name}" for name in previous if name not in objects]
        changed += [f"{kind}/{name}" for name, obj in objects.items() if name in previous and previous[name] != obj]
    if old is not None and old.default_policy != new.default_policy:
        changed.append("authorization/default")  # one setting, not an object: never added or removed
    return ObjectChanges(tuple(added), tuple(removed), tuple(changed))


def merge_desired(state: FabricState, spec: FabricSpec) -> FabricState:
    """``state`` with its declarations replaced by ``spec``'s and every observation kept.

    - switches: declared by dpid; a connected switch the document no longer names stays, undeclared
      (it is still there); an unconnected one goes.
    - links: a declared link takes the document's capacity and latency prior and keeps whether it was
      discovered, is up and its measured latency and load; a link no longer declared stays only if discovered.
    - hosts: declared hosts from the document (a MAC learned for a host without one is kept);
      learned, undeclared hosts stay.
    - nodes: from the document, each keeping whether it is up.
    - the authorization default (``default_policy``): from the document.
    - workloads stay, except those whose service or node the document no longer has (their instance
      cannot exist any more: the plan lists them as evicted).
    The result has a new generation only if something changed (``FabricState.apply`` decides).
    """
    declared = build_state(spec)
    topo = state.topology
    switches: dict[SwitchId, Switch] = {}
    for dpid, switch in declared.topology.switches.items():
        seen = topo.switches.get(dpid)
        if seen is None:
            switches[dpid] = switch
        else:
            switches[dpid] = replace(seen, name=switch.name, site=switch.site, declared=True)
    for dpid, seen in topo.switches.items():
        if dpid not in switches and seen.connected:
            switches[dpid] = replace(seen, name=f"dpid:{format_dpid(dpid)}", site=None, declared=False)
    links: dict[LinkId, LinkAttrs] = {}
    for link, attrs in declared.topology.links.items():
        seen_attrs = topo.links.get(link)
        if seen_attrs is None:
            links[link] = attrs
        else:
            links[link] = replace(
                seen_attrs,
                capacity_mbps=attrs.capacity_mbps,
                declared_latency_us=attrs.declared_latency_us,
                declared=True,
            )
    for link, seen_attrs in topo.links.items():
        if link in links or link.src not in switches or link.dst not in switches:
            continue
        if seen_attrs.discovered:
            links[link] = replace(seen_attrs, declared=False, declared_latency_us=None)
    hosts = {}
    for host_id, host in declared.hosts.items():
        seen_host = state.hosts.get(host_id)
        if seen_host is not None and seen_host.declared and not host.mac and seen_host.mac_learned:
            host = replace(host, mac=seen_host.mac, mac_learned=True)
        hosts[host_id] = host
    for host_id, host in state.hosts.items():
        if not host.declared and host_id not in hosts:
            hosts[host_id] = host
    nodes = {}
    for node_id, node in declared.nodes.items():
        seen_node = state.nodes.get(node_id)
        nodes[node_id] = node if seen_node is None else replace(node, up=seen_node.up)
    workloads = {
        wid: w
        for wid, w in state.workloads.items()
        if w.service in declared.services and (w.node is None or w.node in nodes)
    }
    topology = state.topology
    if switches != topology.switches or links != topology.links:
        topology = Topology(switches, links)  # builds the graph: only when something changed
    merged = replace(
        state,
        topology=topology,
        sites=declared.sites,
        hosts=frozen_map(hosts),
        nodes=frozen_map(nodes),
        services=declared.services,
        default_policy=declared.default_policy,
        workloads=_same_or_new(state.workloads, workloads),
        hosts_seen_at=frozen_map({h: t for h, t in state.hosts_seen_at.items() if h in hosts}),
        unhealthy=frozen_map({w: why for w, why in state.unhealthy.items() if w in workloads}),
        starting=frozen_map({w: at for w, at in state.starting.items() if w in workloads}),
    )
    return _reuse_unchanged(state, merged)


def evicted_by(state: FabricState, spec: FabricSpec) -> tuple[WorkloadId, ...]:
    """Workloads ``merge_desired(state, spec)`` drops: their service or node is no longer declared."""
    services = {ServiceName(s.name) for s in spec.services}
    nodes = {NodeId(n.id) for n in spec.nodes}
    return tuple(
        sorted(
            w.id
            for w in state.workloads.values()
            if w.service not in services or (w.node is not None and w.node not in nodes)
        )
    )


def _same_or_new(old: Mapping[WorkloadId, Workload], new: dict[WorkloadId, Workload]) -> Mapping[WorkloadId, Workload]:
    return old if len(old) == len(new) else frozen_map(new)


def _reuse_unchanged(old: FabricState, new: FabricState) -> FabricState:
    """``old`` itself when the merge changed nothing (so applying the same document is a no-op),
    else ``new`` with every unchanged part shared with ``old`` (readers compare parts by identity)."""
    topology = new.topology
    if topology.switches == old.topology.switches and topology.links == old.topology.links:
        topology = old.topology
    parts: dict[str, object] = {"topology": topology}
    for name in (
        "sites",
        "hosts",
        "nodes",
        "services",
        "workloads",
        "hosts_seen_at",
        "unhealthy",
        "starting",
        "default_policy",
    ):
        value, before = getattr(new, name), getattr(old, name)
        parts[name] = before if value == before else value
    if all(parts[name] is getattr(old, name) for name in parts):
        return old
    return replace(new, **parts)  # type: ignore[arg-type]


__all__ = [
    "ObjectChanges",
    "Orphans",
    "cable_names",
    "effective_spec",
    "evicted_by",
    "merge_desired",
    "object_changes",
]
