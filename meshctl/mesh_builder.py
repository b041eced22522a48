"""Snapshots rebuilt only where a model change reaches. Pure (no threads, no I/O).

``MeshBuilder.update(state, config, ready)`` returns every node's snapshot the first time, then after
each model change only the snapshots that change touches, as ``build_snapshots`` would build them
(the unit tests hold the two to equal results over random sequences of changes):

* which workloads changed, the events say (``netmodel.changes.WorkloadChanges``, noted by the publisher
  for every event); without that, it is found by identity: the model's maps are immutable, so a
  workload whose ``Workload`` object is the same one did not change (one pass over the workloads' dict);
* a changed workload touches its service: the service's endpoints (every priority order of them),
  the outbound part of every caller group that calls it, and so the snapshots of that group's
  members; its own sidecar's snapshot; when its identity changes who may speak for the service, the
  service's cluster and the inbound listeners of the services it calls;
* a changed certificate touches its node's snapshot only;
* a changed trust bundle (under mTLS: the PKI appends its CRLs, new with every revocation, so each
  eviction changes it) touches every snapshot's secrets, and nothing else of them: each node's other
  resources stay the objects they were (a full build at 10,000 workloads took ~2.3 s per eviction);
* a topology change (a link down, a latency measured) that moves some callers' priority levels touches
  the outbound parts of the caller groups behind those callers' switches, and so their members' snapshots
  (each moved view rebased on the caller's last one); the services' other callers keep theirs: on a busy
  fabric latencies move levels often, one caller switch's for every service it calls, and rebuilding
  those services for all their callers was close to a full build each time;
* anything else (sites, hosts, nodes, services, policy, any other mesh setting) is a full build: those
  are rare and a rebuild of them is what an operator expects to cost.

Priority levels follow the services that changed (``compute_paths`` for those services alone, with
the last levels for hysteresis), so placing one instance costs no Dijkstra from every caller.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from meshctl.endpoints_wire import LoadAssignmentEncoder
from meshctl.paths import DistanceCache, Levels, LevelVectors, ServicePaths, compute_paths
from meshctl.snapshot import MeshConfig, MeshSnapshot, SnapshotBuilder, service_paths
from netmodel.changes import WorkloadChanges, maps_of
from netmodel.ids import ServiceName, SwitchId
from netmodel.state import FabricState
from netmodel.types import Workload, frozen_map

MODEL_FIELDS = ("sites", "hosts", "nodes", "services", "default_policy")
"""The parts of the model a change of which rebuilds every snapshot."""
CONFIG_FIELDS = tuple(f.name for f in fields(MeshConfig) if f.name not in ("identities", "trust_bundle_pem"))
"""Every mesh setting but the certificates and the trust bundle: a change of one rebuilds every snapshot."""

_MovedLevels = tuple[set[SwitchId | None], list[Levels]]
"""Of one service, after a topology change: the caller switches whose levels moved, and the levels
no caller has any more."""


@dataclass(frozen=True, slots=True)
class IdentityNotes:
    """The nodes whose identity changed from the map ``base`` to the map ``last`` (a mesh config's
    ``identities``), as whoever changed them said (``SnapshotPublisher.set_config``). ``exact`` False:
    someone did not say, and the maps are compared."""

    base: Mapping[str, Any]
    last: Mapping[str, Any]
    nodes: frozenset[str] = frozenset()
    exact: bool = True

    def between(self, before: Mapping[str, Any], after: Mapping[str, Any]) -> set[str] | None:
        """The nodes changed from ``before`` to ``after`` if these notes span exactly those maps; else None."""
        if not self.exact or self.base is not before or self.last is not after:
            return None
        return set(self.nodes)


@dataclass(frozen=True, slots=True)
class MeshUpdate:
    snapshots: Mapping[str, MeshSnapshot]
    """The snapshots built: every node's when ``complete``, else those of the nodes the change touched."""
    removed: frozenset[str]
    """Nodes that no longer have a sidecar in the model (never set when ``complete``)."""
    complete: bool
    paths: ServicePaths


class MeshBuilder:
    """Keeps the last build (its resources, caller groups and levels) to rebuild only what changes."""

    def __init__(self) -> None:
        self._built: SnapshotBuilder | None = None
        self._encoder = LoadAssignmentEncoder()
        self._caller_switches: dict[ServiceName, Counter[SwitchId | None]] = {}
        """Per called service, the switches of the placed workloads that call it (with how many)."""
        self._host_switches: dict[ServiceName, set[SwitchId | None]] = {}
        """Per called service, the switches of the hosts that call it (hosts change only in a full build)."""
        self._levels_for: dict[ServiceName, tuple[frozenset[SwitchId | None], frozenset[SwitchId]]] = {}
        """Per service, the (caller switches, instance switches) its levels were last computed for."""
        self._distances = DistanceCache()
        self._vectors = LevelVectors()

    @property
    def paths(self) -> ServicePaths | None:
        return self._built.paths if self._built is not None else None

    def update(
        self,
        state: FabricState,
        config: MeshConfig,
        ready: frozenset[str] | None,
        hint: WorkloadChanges | None = None,
        identity_notes: IdentityNotes | None = None,
    ) -> MeshUpdate | None:
        """The snapshots ``state`` changes since the last call; None when it changes none. ``hint``: the
        workloads the events since the last call's state touched; ``identity_notes``: the nodes whose
        identity changed since the last call's config (else the two configs' identities are compared:
        ~0.6 ms at 10,000)."""
        built = self._built
        if built is None or not self._same_frame(built, state, config, ready):
            # Every node's snapshot from scratch (the levels keep their hysteresis against the last ones).
            return self._full(state, config, ready, service_paths(state, config, ready, self.paths, self._vectors))
        moved: dict[ServiceName, _MovedLevels] = {}
        if not (state.topology is built.state.topology or state.topology.same_but_load(built.state.topology)):
            paths = service_paths(state, config, ready, built.paths, self._vectors)
            if paths != built.paths:
                moved = self._take_paths(built, paths)
        hinted = hint.between(maps_of(built.state), maps_of(state)) if hint is not None else None
        changed: set[str]
        if hinted is not None:
            changed = set(hinted)
        else:
            changed = _changed_keys(built.state.workloads, state.workloads)
            if built.state.unhealthy is not state.unhealthy:
                changed |= built.state.unhealthy.keys() ^ state.unhealthy.keys()  # the reason weighs nowhere
        if ready is not None and built.ready is not None and ready is not built.ready:
            changed |= ready ^ built.ready
        noted = identity_notes.between(built.config.identities, config.identities) if identity_notes else None
        identities = noted if noted is not None else _changed_keys(built.config.identities, config.identities, True)
        if config.trust_bundle_pem != built.config.trust_bundle_pem and config.mtls:
            identities |= built.sidecar_nodes()  # every node's secrets: the bundle is one of them
        if not changed and not identities and not moved:
            built.state, built.config, built.ready = state, config, ready
            return None
        return self._apply(built, state, config, ready, changed, identities, moved)

    @staticmethod
    def _take_paths(built: SnapshotBuilder, paths: ServicePaths) -> dict[ServiceName, _MovedLevels]:
        """The topology moved some callers' levels: ``paths`` replaces the builder's; returns, per service
        with a level that is not the same object as before, the caller switches whose levels moved and the
        levels no caller has any more (each new view is rebased on the caller's last one)."""
        before, after = built.paths.levels, paths.levels
        moved: dict[ServiceName, _MovedLevels] = {}
        for key in before.keys() | after.keys():
            old, new = before.get(key), after.get(key)
            if old is new:
                continue
            callers, gone = moved.setdefault(key[1], (set(), []))
            callers.add(key[0])
            if old is not None:
                gone.append(old)
                if new is not None:
                    built.rebase(key[1], old, new)
        if moved:
            in_use = {id(levels) for (_, service), levels in after.items() if service in moved}
            for _, gone in moved.values():
                gone[:] = {id(levels): levels for levels in gone if id(levels) not in in_use}.values()
        built.paths = paths
        return moved

    # -- a full build -------------------------------------------------------------------------------

    def _full(
        self, state: FabricState, config: MeshConfig, ready: frozenset[str] | None, paths: ServicePaths
    ) -> MeshUpdate:
        builder = SnapshotBuilder(state, config, ready, paths, self._encoder)
        snapshots = builder.build()
        builder.end_update()
        self._built = builder
        self._caller_switches = defaultdict(Counter)
        for workload in state.workloads.values():
            self._count_caller(state, workload, 1)
        self._host_switches = _host_switches(builder)
        self._levels_for = {name: self._path_inputs(builder, name) for name in state.services}
        return MeshUpdate(snapshots, frozenset(), True, paths)

    def _path_inputs(
        self, built: SnapshotBuilder, name: ServiceName
    ) -> tuple[frozenset[SwitchId | None], frozenset[SwitchId]]:
        callers = frozenset(self._caller_switches.get(name, ())) | self._host_switches.get(name, set())
        return callers, frozenset(built.at_switch.get(name, ()))

    @staticmethod
    def _same_frame(
        built: SnapshotBuilder, state: FabricState, config: MeshConfig, ready: frozenset[str] | None
    ) -> bool:
        """Nothing changed that rebuilds everything: the model's frame and every mesh setting but the
        certificates."""
        if any(getattr(state, name) is not getattr(built.state, name) for name in MODEL_FIELDS):
            return False
        if (ready is None) != (built.ready is None):
            return False
        before = built.config
        return config is before or all(
            getattr(config, name) is getattr(before, name) or getattr(config, name) == getattr(before, name)
            for name in CONFIG_FIELDS
        )

    # -- an incremental build -----------------------------------------------------------------------

    def _apply(
        self,
        built: SnapshotBuilder,
        state: FabricState,
        config: MeshConfig,
        ready: frozenset[str] | None,
        changed: set[str],
        identities: set[str],
        moved: Mapping[ServiceName, _MovedLevels],
    ) -> MeshUpdate:
        """Rebuild what ``changed`` workloads, ``identities`` and the services whose levels the topology
        ``moved`` touch."""
        before = built.state
        built.state, built.config, built.ready = state, config, ready
        touched_services: set[ServiceName] = set()
        own: set[str] = set(identities)  # nodes whose own resources (inbound, secrets) change
        for workload_id in changed:
            old = before.workloads.get(workload_id)  # type: ignore[call-overload]
            new = state.workloads.get(workload_id)  # type: ignore[call-overload]
            if old is not new:
                own.add(workload_id)
                built.forget_workload(workload_id)
                if old is not None:
                    built.drop_workload(old)
                    self._count_caller(before, old, -1)
                if new is not None:
                    built.put_workload(new)
                    self._count_caller(state, new, 1)
            for workload in (old, new):
                if workload is not None:
                    touched_services.add(workload.service)
                    built.remove_instance(workload)
            if new is not None:
                node = built.endpoint_node(new)
                if node is not None:
                    built.add_instance(new, node)
        rebuild = set(own)
        for name, (callers, gone) in sorted(moved.items()):
            rebuild |= built.forget_levels(name, callers, gone)
        paths_changed = self._update_paths(built, state, touched_services)
        for name in sorted(touched_services | paths_changed):
            cluster_changed = built.identities_changed(name)
            rebuild |= built.forget_service(name, cluster_too=cluster_changed, levels_too=name in paths_changed)
            if cluster_changed:
                for callee in built.services[name].calls:
                    if built.recompute_callers(callee):
                        for workload_id in built.workloads_of.get(callee, {}):
                            built.forget_workload(workload_id)
                            rebuild.add(workload_id)
        snapshots: dict[str, MeshSnapshot] = {}
        removed: set[str] = set()
        for node_id in sorted(rebuild):
            snapshot = built.node_snapshot(node_id)
            if snapshot is None:
                removed.add(node_id)
            else:
                snapshots[node_id] = snapshot
        built.end_update()
        return MeshUpdate(snapshots, frozenset(removed), False, built.paths)

    def _count_caller(self, state: FabricState, workload: Workload, delta: int) -> None:
        """The caller switches of each service ``workload`` calls (what ``service_paths`` wants levels for)."""
        node = state.nodes.get(workload.node) if workload.node is not None else None
        if node is None:
            return
        service = state.services.get(workload.service)
        for callee in service.calls if service is not None else ():
            counter = self._caller_switches.setdefault(callee, Counter())
            counter[node.attachment.switch] += delta
            if counter[node.attachment.switch] <= 0:
                del counter[node.attachment.switch]

    def _update_paths(
        self, built: SnapshotBuilder, state: FabricState, touched: Iterable[ServiceName]
    ) -> set[ServiceName]:
        """Levels again for the services whose instance switches or caller switches changed; returns the
        services whose levels did (their parts are rebuilt). Others keep theirs (and their hysteresis)."""
        callees = set(touched) | {
            callee for name in touched if name in built.services for callee in built.services[name].calls
        }
        levels: dict[tuple[SwitchId | None, ServiceName], tuple[tuple[SwitchId, ...], ...]] | None = None
        changed: set[ServiceName] = set()
        for name in sorted(callees):
            inputs = self._path_inputs(built, name)
            if inputs == self._levels_for.get(name):
                continue
            self._levels_for[name] = inputs
            callers, switches = inputs
            fresh = compute_paths(
                state.topology,
                {caller: (name,) for caller in callers},
                {name: switches},
                built.config.paths,
                built.paths,
                self._distances,
                self._vectors,
            )
            if levels is None:
                levels = dict(built.paths.levels)
            for key in [key for key in levels if key[1] == name]:
                before = levels.pop(key)
                after = fresh.levels.get(key)
                if after is not None:
                    built.rebase(name, before, after)
            levels.update(fresh.levels)
            changed.add(name)
        if levels is not None:
            built.paths = ServicePaths(frozen_map(levels))
        return changed


def _host_switches(built: SnapshotBuilder) -> dict[ServiceName, set[SwitchId | None]]:
    """The switches of the hosts calling each service."""
    calling: dict[ServiceName, set[SwitchId | None]] = defaultdict(set)
    for host in built.state.hosts.values():
        switch = host.attachment.switch if host.attachment is not None else None
        for callee in built.host_calls(host.id):
            calling[callee].add(switch)
    return dict(calling)


def _changed_keys(before: Mapping[Any, object], after: Mapping[Any, object], by_equality: bool = False) -> set[str]:
    """The keys whose value is not the same object (or, ``by_equality``, not equal) in both maps."""
    if before is after:
        return set()
    get = before.get
    if by_equality:
        changed = {key for key, value in after.items() if get(key) is not value and get(key) != value}
    else:
        changed = {key for key, value in after.items() if get(key) is not value}
    if len(before) != len(after) - sum(1 for key in changed if key not in before):
        changed |= {key for key in before if key not in after}
    return changed
