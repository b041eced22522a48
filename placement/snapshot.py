"""The per-cycle snapshot: every node of one ``FabricState`` as arrays. Pure.

Filters and scores run on whole arrays at once (numpy), not node by node in Python: that is what
makes a decision on 1,000 nodes cost tens of microseconds. The usage arrays are built once from the
state's workloads; a series of decisions on one snapshot records each with ``assume`` (the
kube-scheduler's "assume" step) so the next decision sees it without rebuilding anything.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from netmodel.bandwidth import BandwidthRefusal, ReservationPlan, admission, plan_reservations
from netmodel.events import WorkloadPlaced
from netmodel.ids import HostId, NodeId, ServiceName, SiteId, SpiffeId, SwitchId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import ComputeNode, Resources, Tier, Workload
from placement.callgraph import (
    DEFAULT_PATH_RULES,
    CallGraph,
    Layout,
    RequestImpact,
    build_call_graph,
    request_impact,
)
from placement.latency import LatencyCache, SwitchLatencies, compute_switch_latencies
from placement.types import PlacementRequest

if TYPE_CHECKING:
    from meshctl.paths import PathRules

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

TIERS: tuple[Tier, ...] = (Tier.EDGE, Tier.METRO, Tier.CLOUD)
TIER_CODE: Mapping[Tier, int] = {tier: code for code, tier in enumerate(TIERS)}
UNKNOWN_TIER = -1


class Health(enum.IntEnum):
    """Why a node cannot take work (OK when it can). Checked in this order."""

    OK = 0
    NODE_DOWN = 1
    SWITCH_DOWN = 2
    """Its switch was connected and is not any more (a switch never connected is not known down)."""
    UNREACHABLE = 3
    """No known host can reach its switch over usable links (a site cut off)."""


def switch_known_down(state: FabricState, switch: SwitchId) -> bool:
    known = state.topology.switches.get(switch)
    return known is None or (not known.connected and known.connected_at is not None)


@dataclass(frozen=True, slots=True)
class NearLatency:
    """Per node: the worst latency from a set of hosts (the SLO's quantity), the mean (what users see on
    average) and which host is the worst (an index into the tuple of hosts)."""

    worst_ms: Floats
    mean_ms: Floats
    worst_host: Ints


class ClusterSnapshot:
    """Nodes of one state, sorted by id; index i is the same node in every array."""

    def __init__(
        self,
        state: FabricState,
        latency_cache: LatencyCache | None = None,
        path_rules: PathRules = DEFAULT_PATH_RULES,
        reservations: ReservationPlan | None = None,
    ) -> None:
        """``reservations``: a plan of ``state`` or of an earlier state on the same links, if the caller
        keeps one (the bandwidth filter then routes only what changed since)."""
        self.state = state
        self.path_rules = path_rules
        """How the mesh picks the instances a caller uses (the call graph's request times follow it)."""
        self._call_graph: CallGraph | None = None
        self._user_switch: dict[HostId, int] = {}
        self._version = 0  # bumped by assume/forget: what the call graph's cached answers depend on
        self._layout: tuple[int, CallGraph, Layout] | None = None
        self._impacts: dict[tuple[ServiceName, tuple[HostId, ...]], tuple[int, RequestImpact | None]] = {}
        self._graphs_for: dict[tuple[ServiceName, tuple[HostId, ...]], CallGraph] = {}
        nodes = sorted(state.nodes.values(), key=lambda n: n.id)
        self.node_ids: tuple[NodeId, ...] = tuple(n.id for n in nodes)
        self.index: Mapping[NodeId, int] = {node_id: i for i, node_id in enumerate(self.node_ids)}
        self.capacity_cpu: Ints = np.array([n.capacity.cpu_millis for n in nodes], dtype=np.int64)
        self.capacity_memory: Ints = np.array([n.capacity.memory_mib for n in nodes], dtype=np.int64)
        self.used_cpu: Ints = np.zeros(len(nodes), dtype=np.int64)
        self.used_memory: Ints = np.zeros(len(nodes), dtype=np.int64)
        self.site_ids: tuple[SiteId, ...] = tuple(sorted({*state.sites, *(n.site for n in nodes)}))
        site_index = {site: i for i, site in enumerate(self.site_ids)}
        self.site_of: Ints = np.array([site_index[n.site] for n in nodes], dtype=np.int64)
        self.tier_of: Ints = np.array(
            [TIER_CODE[state.sites[n.site].tier] if n.site in state.sites else UNKNOWN_TIER for n in nodes],
            dtype=np.int64,
        )
        self.latencies: SwitchLatencies = (
            latency_cache.of(state.topology) if latency_cache is not None else compute_switch_latencies(state.topology)
        )
        self.switch_column: Ints = np.array(
            [self.latencies.index.get(n.attachment.switch, -1) for n in nodes], dtype=np.int64
        )
        self._instances: dict[ServiceName, Ints] = {}
        self._site_instances: dict[ServiceName, tuple[int, Ints]] = {}  # of a _version
        for workload in state.workloads.values():
            i = self.index.get(workload.node) if workload.node is not None else None
            if i is not None:
                self.used_cpu[i] += workload.resources.cpu_millis
                self.used_memory[i] += workload.resources.memory_mib
                self.instances_of(workload.service)[i] += 1
        self._in_model = frozenset(w.service for w in state.workloads.values())
        """Services with an instance in the model: one forgotten here (displaced, moving) is still placed."""
        self._unhealthy: dict[ServiceName, Ints] = {}
        for workload_id in state.unhealthy:
            sick = state.workloads.get(workload_id)
            at = self.index.get(sick.node) if sick is not None and sick.node is not None else None
            if sick is not None and at is not None:
                counts = self._unhealthy.setdefault(sick.service, np.zeros(len(self.node_ids), dtype=np.int64))
                counts[at] += 1
        self.health: Ints = self._health(state, nodes)
        self.healthy: Bools = self.health == Health.OK
        self._host_rows: dict[HostId, Floats] = {}
        self._near: dict[tuple[HostId, ...], NearLatency] = {}
        self.all_nodes: Bools = np.ones(len(self.node_ids), dtype=np.bool_)
        self.all_nodes.setflags(write=False)
        # Instances assumed on top of the state, in order: what their bandwidth reservations take (a link
        # is shared by nodes anywhere, so unlike cpu it is not a per-node sum).
        self._assumed: list[tuple[ServiceName, int, PlacementRequest | None]] = []
        self._leaving: dict[tuple[ServiceName, int], int] = {}  # instances of the state forgotten, per node
        self._bandwidth: tuple[int, FabricState, ReservationPlan] | None = None
        self._last_plan: ReservationPlan | None = reservations
        self._admitted: dict[tuple[object, ...], BandwidthRefusal | None] = {}  # of this _version
        self._admitted_version = -1
        self._callers_on: dict[NodeId, set[ServiceName]] = {}  # services calling with a bandwidth, per node

    def _health(self, state: FabricState, nodes: Sequence[ComputeNode]) -> Ints:
        health = np.zeros(len(self.node_ids), dtype=np.int64)
        host_rows: list[int] = [
            self.latencies.index[h.attachment.switch]
            for h in state.hosts.values()
            if h.attachment is not None and h.attachment.switch in self.latencies.index
        ]
        columns = self.switch_column
        if host_rows and len(columns):
            reach = np.isfinite(
                self.latencies.distance_us[np.ix_(np.array(host_rows, dtype=np.int64), np.maximum(columns, 0))]
            ).any(axis=0)
            health[~reach] = Health.UNREACHABLE
        health[columns < 0] = Health.UNREACHABLE
        for i, node_id in enumerate(self.node_ids):
            node = state.nodes[node_id]
            if not node.up:
                health[i] = Health.NODE_DOWN
            elif switch_known_down(state, node.attachment.switch):
                health[i] = Health.SWITCH_DOWN
        return health

    def __len__(self) -> int:
        return len(self.node_ids)

    # -- reads ---------------------------------------------------------------------------------------
    def instances_of(self, service: ServiceName) -> Ints:
        """How many instances of ``service`` each node runs (an array owned by the snapshot)."""
        counts = self._instances.get(service)
        if counts is None:
            counts = self._instances[service] = np.zeros(len(self.node_ids), dtype=np.int64)
        return counts

    def site_instances_of(self, service: ServiceName) -> Ints:
        """Per node: how many instances of ``service`` run anywhere in that node's site (read-only; kept
        until the next ``assume``/``forget``: a failover pass scores every option of every displaced
        instance against it, and recounting each time was a third of such a pass at 10,000 instances)."""
        cached = self._site_instances.get(service)
        if cached is not None and cached[0] == self._version:
            return cached[1]
        per_site = np.bincount(self.site_of, weights=self.instances_of(service), minlength=len(self.site_ids))
        counts = np.asarray(per_site[self.site_of], dtype=np.int64)
        counts.flags.writeable = False
        self._site_instances[service] = (self._version, counts)
        return counts

    def host_latency_ms(self, host: HostId) -> Floats:
        """Latency from ``host`` to every node over the route, in ms (inf when unreachable)."""
        row = self._host_rows.get(host)
        if row is None:
            attachment = self.state.hosts[host].attachment
            source = self.latencies.index.get(attachment.switch, -1) if attachment is not None else -1
            if source < 0:
                row = np.full(len(self.node_ids), np.inf)
            else:
                row = self.latencies.distance_us[source, np.maximum(self.switch_column, 0)] / 1000.0
                row[self.switch_column < 0] = np.inf
            row.setflags(write=False)
            self._host_rows[host] = row
        return row

    def near_latency(self, near: tuple[HostId, ...]) -> NearLatency:
        """Worst and mean latency over ``near`` hosts to every node (cached per tuple of hosts)."""
        cached = self._near.get(near)
        if cached is None:
            rows = np.vstack([self.host_latency_ms(host) for host in near])
            worst_host = np.argmax(rows, axis=0)
            worst = rows[worst_host, np.arange(rows.shape[1])] if rows.shape[1] else np.zeros(0)
            with np.errstate(invalid="ignore"):
                mean = rows.mean(axis=0)
            cached = self._near[near] = NearLatency(worst, mean, worst_host)
        return cached

    @property
    def call_graph(self) -> CallGraph:
        """The declared call graph (built once per snapshot: the services do not change within one)."""
        if self._call_graph is None:
            self._call_graph = build_call_graph(self.state.services)
        return self._call_graph

    def call_graph_for(self, service: ServiceName, near: tuple[HostId, ...]) -> CallGraph:
        """The call graph with ``near`` as the users of ``service`` (a request naming its own users)."""
        declared = self.state.services.get(service)
        if not near or (declared is not None and declared.near == near):
            return self.call_graph
        key = (service, near)
        graph = self._graphs_for.get(key)
        if graph is None:
            graph = self._graphs_for[key] = build_call_graph(self.state.services, {service: near})
        return graph

    def request_impact(self, service: ServiceName, near: tuple[HostId, ...]) -> RequestImpact | None:
        """``placement.callgraph.request_impact`` for the service (its users ``near`` if the request names
        them), cached until the next assume/forget: a batch asks it for every unit, many times."""
        key = (service, near)
        cached = self._impacts.get(key)
        if cached is not None and cached[0] == self._version:
            return cached[1]
        graph = self.call_graph_for(service, near)
        impact = request_impact(service, graph, self.layout(graph), self.path_rules) if graph.reaches(service) else None
        self._impacts[key] = (self._version, impact)
        return impact

    def layout(self, graph: CallGraph | None = None) -> Layout:
        """Where every instance is now (``assume``/``forget`` included), for the call graph's request times.
        Instances on nodes that cannot take work are left out: callers fail over away from them."""
        graph = graph or self.call_graph
        if self._layout is not None and self._layout[0] == self._version and self._layout[1] is graph:
            return self._layout[2]
        usable = self.healthy & (self.switch_column >= 0)
        instances = {}
        for service, counts in self._instances.items():
            if counts.any() or service in self._in_model:  # placed (those reported unhealthy serve nothing)
                serving = np.maximum(counts - self._unhealthy.get(service, 0), 0)
                instances[service] = np.repeat(self.switch_column[usable], serving[usable])
        for _, host in graph.users:
            if host not in self._user_switch:
                known = self.state.hosts.get(host)
                attachment = known.attachment if known is not None else None
                if attachment is not None and attachment.switch in self.latencies.index:
                    self._user_switch[host] = self.latencies.index[attachment.switch]
        layout = Layout(instances, self.latencies.distance_us, dict(self._user_switch))
        self._layout = (self._version, graph, layout)
        return layout

    def free(self, i: int) -> Resources:
        return Resources(
            int(self.capacity_cpu[i] - self.used_cpu[i]), int(self.capacity_memory[i] - self.used_memory[i])
        )

    # -- bandwidth ---------------------------------------------------------------------------------------
    def candidate_workload(
        self, state: FabricState, request: PlacementRequest | None, service: ServiceName, i: int, k: int
    ) -> Workload:
        """The instance a request would add to ``state`` on node i, as the bandwidth model sees it: on the
        port the orchestrator would give it (a second instance on a node listens on the next free one, so
        its demands are its own, not merged into the first's)."""
        node = self.node_ids[i]
        declared = state.services.get(service)
        port = declared.port if declared is not None else 0
        if port:
            services = state.services
            taken = {
                w.port or (services[w.service].port if w.service in services else 0)
                for w in state.workloads.values()
                if w.node == node
            }
            while port in taken and port < 65535:
                port += 1
        return Workload(
            id=WorkloadId(f"{service}~assumed-{k}"),
            service=service,
            spiffe_id=SpiffeId(""),
            resources=request.resources if request is not None else Resources(0, 0),
            node=node,
            port=port,
            constraints=request.constraints if request is not None else None,
            bandwidth_mbps=request.bandwidth_mbps if request is not None else None,
        )

    def bandwidth_base(self) -> tuple[FabricState, ReservationPlan]:
        """The state with every assumed instance placed, and its reservation plan (once per change).

        Instances the state placed stay in it also when ``forget`` takes them out of the counts: a
        moving or displaced instance keeps its reservations until it is withdrawn (make-before-break)."""
        cached = self._bandwidth
        if cached is not None and cached[0] == self._version:
            return cached[1], cached[2]
        state = self.state
        for k, (service, i, request) in enumerate(self._assumed):
            state = state.apply(WorkloadPlaced(self.candidate_workload(state, request, service, i, k)))
        plan = plan_reservations(state, self._last_plan)
        self._last_plan = plan
        self._bandwidth = (self._version, state, plan)
        return state, plan

    def bandwidth_admission(self, request: PlacementRequest, i: int) -> BandwidthRefusal | None:
        """Why an instance of ``request`` on node i could not be admitted (``netmodel.bandwidth.admission``
        of the plan with it against the plan without it), or None.

        Reservations follow switches, not nodes: nodes on one switch get the same answer (their demands
        differ in addresses and ports only), unless the instance calls with a bandwidth and the node has
        callers already (a caller's demands to one callee instance are merged per node). So one node is
        routed per such group, and the answers are kept until the next assume/forget."""
        if self.leaving(request.service, i):  # staying where it is: it holds its room already
            return None
        base, before = self.bandwidth_base()
        if self._admitted_version != self._version:
            self._admitted, self._admitted_version = {}, self._version
            self._callers_on = {}
            for w in base.workloads.values():
                declared = base.services.get(w.service)
                if w.node is not None and declared is not None and declared.call_bandwidth:
                    self._callers_on.setdefault(w.node, set()).add(w.service)
        node = self.state.nodes[self.node_ids[i]]
        service = base.services.get(request.service)
        calls = service is not None and bool(service.call_bandwidth)
        callers = tuple(sorted(self._callers_on.get(node.id, ()))) if calls else ()
        key = (
            request.service,
            request.bandwidth_mbps,
            request.constraints.near,
            node.attachment.switch,
            bool(node.ip),
            callers,
        )
        if key not in self._admitted:
            workload = self.candidate_workload(base, request, request.service, i, len(base.workloads))
            self._admitted[key] = admission(before, plan_reservations(base.apply(WorkloadPlaced(workload)), before))
        return self._admitted[key]

    # -- recording decisions ---------------------------------------------------------------------------
    def assume(
        self, service: ServiceName, resources: Resources, i: int, request: PlacementRequest | None = None
    ) -> None:
        """Count an instance on node i, as if already placed (later decisions on this snapshot see it).
        ``request``: what it was asked with (its bandwidth); None: its service's declared values."""
        self.used_cpu[i] += resources.cpu_millis
        self.used_memory[i] += resources.memory_mib
        self.instances_of(service)[i] += 1
        if self._leaving.get((service, i), 0) > 0:  # one the state placed, counted again (a what-if undone)
            self._leaving[(service, i)] -= 1
        else:
            self._assumed.append((service, i, request))
        self._version += 1

    def forget(
        self, service: ServiceName, resources: Resources, i: int, request: PlacementRequest | None = None
    ) -> None:
        """Undo ``assume`` (or take out an instance the state placed, for a what-if: its bandwidth stays
        reserved, see ``bandwidth_base``)."""
        self.used_cpu[i] -= resources.cpu_millis
        self.used_memory[i] -= resources.memory_mib
        self.instances_of(service)[i] -= 1
        matches = [k for k, (s, at, _) in enumerate(self._assumed) if s == service and at == i]
        exact = [k for k in matches if self._assumed[k][2] is request]
        if exact or matches:
            del self._assumed[(exact or matches)[-1]]
        else:
            self._leaving[(service, i)] = self._leaving.get((service, i), 0) + 1
        self._version += 1

    def settle(self, state: FabricState, placed: Sequence[Workload]) -> bool:
        """Make the instances assumed on this snapshot part of its state: ``state`` is this snapshot's
        state with exactly ``placed`` added (one WorkloadPlaced each, in the order assumed, nothing else in
        between). Afterwards the snapshot equals ``ClusterSnapshot(state)`` and serves the next decision
        without a rebuild (O(1), where a rebuild counts every instance of the model). False (and nothing
        changed) when ``state`` is not that: the caller builds a fresh snapshot then."""
        old = self.state
        if state.generation != old.generation + len(placed) or self._leaving or len(self._assumed) != len(placed):
            return False
        for (service, i, _), workload in zip(self._assumed, placed, strict=True):
            if (
                workload.id in old.workloads
                or state.workloads.get(workload.id) != workload
                or workload.service != service
                or workload.node is None
                or self.index.get(workload.node) != i
            ):
                return False
        self.state = state
        self._assumed.clear()
        self._bandwidth = None  # routed with the assumed instances on the old state; the next asks again
        self._in_model = self._in_model | {w.service for w in placed}
        self._version += 1
        return True

    def leaving(self, service: ServiceName, i: int) -> bool:
        """Whether an instance of ``service`` the state placed on node i is forgotten (moving away): the
        instance staying there takes no bandwidth it does not hold already."""
        return self._leaving.get((service, i), 0) > 0
