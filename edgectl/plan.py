"""The plan: what applying a desired-state document to the running controller would change. Pure.

Computed by the same cores the controller runs, on a hypothetical state (``merge_desired`` of the
document into the live model), nothing applied: declared objects added, removed and changed (and
orphans kept while prune is off); per switch the FlowMods and GroupMods the route engine would send;
per Envoy node the xDS resources that would change; the instances placement would place, move or
evict; the identities that would be issued or retired. ``edgectl diff`` prints it and ``edgectl apply``
shows it before it acts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from meshctl.snapshot import MeshConfig, MeshSnapshot, build_snapshots
from meshctl.xds_types import PUSH_ORDER
from netmodel.bandwidth import plan_reservations, reserves_anything
from netmodel.desired import (
    ObjectChanges,
    Orphans,
    cable_names,
    effective_spec,
    evicted_by,
    merge_desired,
    object_changes,
)
from netmodel.fabric import FabricSpec
from netmodel.ids import ServiceName, SwitchId, format_dpid
from netmodel.state import FabricState
from placement.naming import DEFAULT_TRUST_DOMAIN, next_workload_ids, workload_spiffe_id
from placement.replicas import ReplicaPlan, plan_replicas
from sdnctl.acl import acl_basis, acl_inputs, compile_acl, same_basis, same_inputs, with_acl
from sdnctl.flows import CompiledSwitch, SwitchDelta, compile_all, diff_switch, merge_deltas, recompile_switches
from sdnctl.meters import EMPTY_PART, SwitchReservations, compile_reservations, with_reservations
from sdnctl.pathing import RoutePlan, changed_entries, compute_routes


@dataclass(frozen=True, slots=True)
class SwitchChange:
    switch: SwitchId
    name: str
    connected: bool
    """False: the switch gets these when it connects (nothing is sent now)."""
    delta: SwitchDelta


@dataclass(frozen=True, slots=True)
class XdsChange:
    """One sidecar's resources that would change: type name -> resource names."""

    node: str
    added: Mapping[str, tuple[str, ...]]
    changed: Mapping[str, tuple[str, ...]]
    removed: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class IdentityChanges:
    issued: tuple[str, ...] = ()
    """SPIFFE ids that would get a first SVID (new services' instances)."""
    retired: tuple[str, ...] = ()
    """SPIFFE ids of instances that would go (evicted, moved away): their SVIDs are no longer renewed."""


@dataclass(frozen=True, slots=True)
class Plan:
    revision_from: str
    revision_to: str
    objects: ObjectChanges
    orphans: Orphans
    warnings: tuple[str, ...]
    openflow: tuple[SwitchChange, ...]
    xds: tuple[XdsChange, ...]
    placement: ReplicaPlan
    """What placement would do because of this document (a new count, a tightened SLO, a new service)."""
    pending: ReplicaPlan
    """What the replica reconciler still has to do anyway (instances that fit nowhere yet): not a change."""
    evicted_by_prune: tuple[str, ...]
    identities: IdentityChanges
    problems: tuple[str, ...]
    """Why the document cannot be applied although it parses: an SLO or a replica count that no node can
    meet (the instances it concerns would have nowhere to go). An apply refuses such a document."""
    spec: FabricSpec = field(repr=False, compare=False)
    """What the controller would hold: the document plus its orphans (``effective_spec``)."""

    def __bool__(self) -> bool:
        return bool(
            self.objects
            or self.openflow
            or self.xds
            or self.placement
            or self.evicted_by_prune
            or self.identities.issued
            or self.identities.retired
        )  # a new revision of the same content changes nothing (a commit touching only other files)

    @property
    def flow_mods(self) -> int:
        return sum(c.delta.size for c in self.openflow)


@dataclass(frozen=True, slots=True)
class PlanInputs:
    """What the running controller holds besides the model: read once per plan."""

    state: FabricState
    applied_spec: FabricSpec | None
    """The document last applied (with its orphans); None before the first."""
    mesh_config: MeshConfig
    ready_workloads: frozenset[str] | None = None
    routes: RoutePlan | None = None
    """The route engine's current plan; None: computed from ``state``."""
    compiled: Mapping[SwitchId, CompiledSwitch] | None = None
    """The tables the route engine holds for ``routes`` (with them the plan is incremental, as the engine is)."""
    trust_domain: str = DEFAULT_TRUST_DOMAIN


def compute_plan(inputs: PlanInputs, document: FabricSpec, revision: str, *, prune: bool) -> Plan:
    state = inputs.state
    spec, orphans = effective_spec(inputs.applied_spec, document, prune=prune)
    after = merge_desired(state, spec)
    evicted = evicted_by(state, spec)
    if inputs.routes is not None:
        openflow = _openflow_changes(state, after, inputs.routes, inputs.compiled, inputs.trust_domain)
    else:
        openflow = _openflow_changes(state, after, compute_routes(state), None, inputs.trust_domain)
    pending = plan_replicas(state)
    replicas = _caused_by_document(pending, plan_replicas(after, previous=state))
    xds = _xds_changes(state, after, inputs.mesh_config, inputs.ready_workloads)
    return Plan(
        revision_from=state.desired_revision,
        revision_to=revision,
        objects=object_changes(inputs.applied_spec, spec),
        orphans=orphans,
        warnings=tuple(_warnings(inputs.applied_spec, spec)),
        openflow=openflow,
        xds=xds,
        placement=replicas,
        pending=pending,
        evicted_by_prune=tuple(str(w) for w in evicted),
        identities=_identity_changes(state, replicas, tuple(map(str, evicted)), inputs.trust_domain),
        problems=_problems(replicas),
        spec=spec,
    )


def _problems(replicas: ReplicaPlan) -> tuple[str, ...]:
    """What this document asks that placement cannot do: an instance with nowhere to go."""
    out = [f"service {m.service}: {m.reason}" for m in replicas.moved if m.to_node is None]
    out += [f"service {p.service}: {p.reason}" for p in replicas.placed if p.node is None]
    return tuple(out)


def _caused_by_document(pending: ReplicaPlan, after: ReplicaPlan) -> ReplicaPlan:
    """``after`` without what ``pending`` (the same question on the live model) already holds: per service
    the placements beyond those already pending, and evictions and moves of instances not already due."""
    already: dict[ServiceName, int] = {}
    for placed in pending.placed:
        already[placed.service] = already.get(placed.service, 0) + 1
    placed_now = []
    for placed in after.placed:
        if already.get(placed.service, 0) > 0:
            already[placed.service] -= 1
        else:
            placed_now.append(placed)
    evicting = {e.workload for e in pending.evicted}
    moving = {m.workload for m in pending.moved}
    return ReplicaPlan(
        placed=tuple(placed_now),
        evicted=tuple(e for e in after.evicted if e.workload not in evicting),
        moved=tuple(m for m in after.moved if m.workload not in moving),
    )


def _openflow_changes(
    before: FabricState,
    after: FabricState,
    routes: RoutePlan,
    compiled: Mapping[SwitchId, CompiledSwitch] | None,
    trust_domain: str,
) -> tuple[SwitchChange, ...]:
    """Per switch, the FlowMods, GroupMods and MeterMods from the tables the engine holds to those it would hold:
    the engine's own computation (incremental when only routes move, a full diff when endpoints or
    switches change; the ACL of table 0 when what it depends on changes), so the plan names exactly what
    an apply sends."""
    acl_changed = not same_inputs(acl_inputs(before), acl_inputs(after)) and not same_basis(
        acl_basis(before, trust_domain), acl_basis(after, trust_domain)
    )
    parts_before, parts_after = _reservation_parts(before), _reservation_parts(after)
    if (
        after.topology is before.topology
        and after.hosts is before.hosts
        and after.nodes is before.nodes
        and not acl_changed
        and parts_before == parts_after
    ):
        return ()
    new_routes = compute_routes(after, routes)
    deltas: dict[SwitchId, SwitchDelta] = {}
    if compiled is not None and routes.switches == new_routes.switches and routes.endpoints == new_routes.endpoints:
        tables = dict(compiled)
        for dpid, (new_tables, delta) in recompile_switches(
            new_routes, compiled, changed_entries(routes, new_routes)
        ).items():
            deltas[dpid] = delta
            tables[dpid] = new_tables
        if acl_changed:
            new_acl = compile_acl(after, trust_domain)
            for dpid, switch_tables in tables.items():
                _acl_tables, delta = with_acl(switch_tables, new_acl.entries.get(dpid, {}))
                deltas[dpid] = merge_deltas(deltas.get(dpid, SwitchDelta()), delta)
        if parts_before or parts_after:  # the reservations' flows and meters (disjoint from the ACL's)
            for dpid, switch_tables in tables.items():
                _reserved_tables, delta = with_reservations(switch_tables, parts_after.get(dpid, EMPTY_PART))
                deltas[dpid] = merge_deltas(deltas.get(dpid, SwitchDelta()), delta)
    else:
        if compiled is not None:
            old = compiled
        else:
            old_acl = compile_acl(before, trust_domain)
            old = {
                d: with_reservations(with_acl(c, old_acl.entries.get(d, {}))[0], parts_before.get(d, EMPTY_PART))[0]
                for d, c in compile_all(routes).items()
            }
        new_acl = compile_acl(after, trust_domain)
        new = {
            d: with_reservations(with_acl(c, new_acl.entries.get(d, {}))[0], parts_after.get(d, EMPTY_PART))[0]
            for d, c in compile_all(new_routes).items()
        }
        for dpid in set(old) & set(new):
            deltas[dpid] = diff_switch(old[dpid].config, new[dpid].config)
        # A switch appearing in or leaving the routes has its tables read and set when it connects.
    changes = []
    for dpid in sorted(deltas):
        delta = deltas[dpid]
        if not delta:
            continue
        switch = after.topology.switches.get(dpid) or before.topology.switches.get(dpid)
        name = switch.name if switch is not None else f"dpid:{format_dpid(dpid)}"
        changes.append(SwitchChange(dpid, name, bool(switch is not None and switch.connected), delta))
    return tuple(changes)


def _reservation_parts(state: FabricState) -> dict[SwitchId, SwitchReservations]:
    """Each switch's part of the bandwidth reservations of ``state``, as the route engine compiles it."""
    return compile_reservations(plan_reservations(state)) if reserves_anything(state) else {}


def _xds_changes(
    before: FabricState, after: FabricState, config: MeshConfig, ready: frozenset[str] | None
) -> tuple[XdsChange, ...]:
    parts = ("sites", "hosts", "nodes", "services", "workloads", "unhealthy")
    if all(getattr(before, p) is getattr(after, p) for p in parts):
        return ()
    old = build_snapshots(before, config, ready)
    new = build_snapshots(after, config, None if ready is None else ready & frozenset(map(str, after.workloads)))
    changes = []
    for node in sorted(set(old) | set(new)):
        change = _snapshot_change(node, old.get(node), new.get(node))
        if change is not None:
            changes.append(change)
    return tuple(changes)


def _snapshot_change(node: str, old: MeshSnapshot | None, new: MeshSnapshot | None) -> XdsChange | None:
    added: dict[str, tuple[str, ...]] = {}
    changed: dict[str, tuple[str, ...]] = {}
    removed: dict[str, tuple[str, ...]] = {}
    for type_url in PUSH_ORDER:
        a = old.of_type(type_url) if old is not None else {}
        b = new.of_type(type_url) if new is not None else {}
        kind = type_url.rsplit(".", 1)[-1]
        if names := tuple(sorted(n for n in b if n not in a)):
            added[kind] = names
        if names := tuple(sorted(n for n in b if n in a and a[n].digest != b[n].digest)):
            changed[kind] = names
        if names := tuple(sorted(n for n in a if n not in b)):
            removed[kind] = names
    if not (added or changed or removed):
        return None
    return XdsChange(node, added, changed, removed)


def _identity_changes(
    state: FabricState, replicas: ReplicaPlan, evicted: tuple[str, ...], trust_domain: str
) -> IdentityChanges:
    """New instances (placed, or the new end of a move) get SVIDs; evicted and moved-away ones retire.
    New ids are those placement would assign now (it allocates them when it places)."""
    wanted: dict[ServiceName, int] = {}
    for placed in replicas.placed:
        if placed.node is not None:
            wanted[placed.service] = wanted.get(placed.service, 0) + 1
    for move in replicas.moved:
        if move.to_node is not None:
            wanted[move.service] = wanted.get(move.service, 0) + 1
    issued = [
        str(workload_spiffe_id(trust_domain, service, workload))
        for service, count in sorted(wanted.items())
        for workload in next_workload_ids(service, state.workloads, count)
    ]
    gone = set(evicted) | {str(e.workload) for e in replicas.evicted}
    gone |= {str(m.workload) for m in replicas.moved if m.to_node is not None}
    retired = {str(w.spiffe_id) for w in state.workloads.values() if str(w.id) in gone}
    return IdentityChanges(issued=tuple(issued), retired=tuple(sorted(retired)))


def _warnings(old: FabricSpec | None, new: FabricSpec) -> list[str]:
    """What an operator may not have meant: a cable whose ports change is a cable re-plugged, and a host or
    node whose address changes gets new routes and new endpoints (addresses and ports left out of the
    document are assigned by position: adding or removing an entry before them moves them)."""
    if old is None:
        return []
    old_ips = {h.id: h.ip for h in old.hosts} | {n.id: n.ip for n in old.nodes}
    moved_ips = [
        f"{kind} {item.id}: address changes ({old_ips[item.id]} -> {item.ip}); addresses assigned by position "
        "move when an entry before them is added or removed: give it an ip"
        for kind, items in (("host", new.hosts), ("node", new.nodes))
        for item in items
        if item.id in old_ips and old_ips[item.id] != item.ip
    ]
    old_cables = dict(zip(cable_names(old.cables), old.cables, strict=True))
    out = []
    for name, cable in zip(cable_names(new.cables), new.cables, strict=True):
        was = old_cables.get(name)
        if was is not None and (was.a_port, was.b_port) != (cable.a_port, cable.b_port):
            out.append(
                f"link {name}: ports change ({was.a}:{was.a_port}-{was.b}:{was.b_port} -> "
                f"{cable.a}:{cable.a_port}-{cable.b}:{cable.b_port}); ports assigned by position move when a "
                "link before them is added or removed: pin them with a_port/b_port"
            )
    return out + moved_ips
