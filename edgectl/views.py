"""JSON-ready views of the model, shared by the HTTP API and the CLI. Pure."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from meshctl.paths import PathRules
from netmodel.ids import format_dpid
from netmodel.state import FabricState
from netmodel.types import Service, Workload
from placement.callgraph import call_edges, request_times_ms
from placement.latency import compute_switch_latencies
from placement.snapshot import ClusterSnapshot


def topology_view(state: FabricState) -> dict[str, Any]:
    topo = state.topology

    def name(dpid: int) -> str:
        switch = topo.switches.get(dpid)  # type: ignore[call-overload]
        return switch.name if switch else f"dpid:{format_dpid(dpid)}"

    switches = [
        {
            "id": s.name,
            "dpid": format_dpid(s.id),
            "site": s.site,
            "declared": s.declared,
            "connected": s.connected,
            "connected_at": s.connected_at,
            "ports": [
                {"no": p.no, "name": p.name, "hw_addr": p.hw_addr, "up": p.up}
                for p in sorted(s.ports.values(), key=lambda p: p.no)
            ],
        }
        for s in sorted(topo.switches.values(), key=lambda s: (not s.declared, s.name))
    ]
    links = [
        {
            "src": name(link.src),
            "src_port": link.src_port,
            "dst": name(link.dst),
            "dst_port": link.dst_port,
            "latency_us": attrs.latency_us,
            "declared_latency_us": attrs.declared_latency_us,
            "measured_latency_us": attrs.measured_latency_us,
            "measured_at": attrs.measured_at,
            "capacity_mbps": attrs.capacity_mbps,
            "load_bps": attrs.measured_load_bps,
            "load_measured_at": attrs.load_measured_at,
            "utilization": attrs.utilization,
            "up": attrs.up,
            "declared": attrs.declared,
            "discovered": attrs.discovered,
        }
        for link, attrs in sorted(topo.links.items(), key=lambda kv: (name(kv[0].src), kv[0]))
    ]
    hosts = [
        {
            "id": h.id,
            "ip": h.ip,
            "mac": h.mac,
            "switch": name(h.attachment.switch) if h.attachment else None,
            "port": h.attachment.port if h.attachment else None,
            "declared": h.declared,
        }
        for h in sorted(state.hosts.values(), key=lambda h: h.id)
    ]
    nodes = [
        {
            "id": n.id,
            "site": n.site,
            "switch": name(n.attachment.switch),
            "port": n.attachment.port,
            "ip": n.ip,
            "cpu_millis": n.capacity.cpu_millis,
            "memory_mib": n.capacity.memory_mib,
            "up": n.up,
        }
        for n in sorted(state.nodes.values(), key=lambda n: n.id)
    ]
    sites = [
        {"id": s.id, "tier": s.tier.value, "region": s.region, "zone": s.zone}
        for s in sorted(state.sites.values(), key=lambda s: s.id)
    ]
    return {
        "generation": state.generation,
        "sites": sites,
        "switches": switches,
        "links": links,
        "hosts": hosts,
        "nodes": nodes,
    }


def workloads_view(state: FabricState) -> dict[str, Any]:
    return {
        "generation": state.generation,
        "workloads": [
            {
                "id": w.id,
                "service": w.service,
                "spiffe_id": w.spiffe_id,
                "node": w.node,
                "port": w.port,
                "cpu_millis": w.resources.cpu_millis,
                "memory_mib": w.resources.memory_mib,
                "declared": w.declared,
            }
            for w in sorted(state.workloads.values(), key=lambda w: w.id)
        ],
    }


def routes_view(plan: Any, status: Any, state: FabricState, acl: Any = None) -> dict[str, Any]:
    """Routes between every pair of endpoints, as the route engine last computed them; per switch, with
    ``acl`` (``sdnctl.acl.AclTables``), the flows of its network policy (table 0's guards and drops, and
    the admission of the instances on its nodes in table 1)."""
    if plan is None:
        return {"generation": None, "routes": [], "switches": []}
    names = {dpid: sw.name for dpid, sw in state.topology.switches.items()}

    def acl_view(dpid: int) -> dict[str, Any]:
        from sdnctl.flow_text import entry_json  # here: the CLI imports this module, and sdnctl brings numpy

        flows = acl.flows(dpid) if acl is not None else []
        return {"acl": {"count": len(flows), "flows": [entry_json(f) for f in flows]}} if acl is not None else {}

    return {
        "generation": plan.generation,
        "routes": [
            {
                "src": r.src,
                "dst": r.dst,
                "latency_us": r.latency_us,
                "path": [names.get(s, str(s)) for s in r.path],
                "hops": [
                    {"switch": names.get(link.src), "out_port": link.src_port, "next": names.get(link.dst)}
                    for link in r.links
                ],
            }
            for r in plan.routes()
        ],
        "switches": [
            {
                "dpid": names.get(dpid, f"{dpid:016x}"),
                "applied_generation": st.applied_generation,
                "reconciled": st.reconciled,
                "last_delta_size": st.last_delta_size,
                "last_applied_at": st.last_applied_at,
                "drift": st.drift.view(),
                **acl_view(dpid),
            }
            for dpid, st in sorted(status.items())
        ],
    }


def changes_view(changes: Iterable[Any], state: FabricState) -> list[dict[str, Any]]:
    """The deltas the route engine sent (``RouteEngine.changes``), oldest first, each rendered by
    ``sdnctl.flow_text.delta_json`` (the one rendering a plan's prediction uses too)."""
    from sdnctl.flow_text import delta_json  # here: the CLI imports this module, and sdnctl brings numpy

    names = {dpid: sw.name for dpid, sw in state.topology.switches.items()}
    return [
        {
            "seq": c.seq,
            "generation": c.generation,
            "switch": names.get(c.dpid, format_dpid(c.dpid)),
            "dpid": format_dpid(c.dpid),
            "reason": c.reason,
            "at": c.at,
            "confirmed": c.confirmed,
            **delta_json(c.delta),
        }
        for c in changes
    ]


def proto_view(message: Any) -> dict[str, Any]:
    """A protobuf message as the CLI prints it in JSON: the .proto's field names, numbers as JSON numbers
    (protobuf's JSON mapping writes 64-bit integers as strings), enums as the tables show them
    (``TIER_EDGE`` -> ``"edge"``, an unspecified one -> null); plain fields always (0 is a value), fields
    with presence (optional, oneof, messages) only when set."""
    view: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.is_repeated:
            entry = field.message_type
            if entry is not None and entry.GetOptions().map_entry:
                value_field = entry.fields_by_name["value"]
                view[field.name] = {key: _proto_value(value_field, value[key]) for key in sorted(value)}
            else:
                view[field.name] = [_proto_value(field, item) for item in value]
        elif not field.has_presence or message.HasField(field.name):
            view[field.name] = _proto_value(field, value)
    return view


def enum_label(enum_type: Any, number: int) -> str | int | None:
    """``TIER_EDGE`` -> ``"edge"``, ``KIND_MIGRATION_STARTED`` -> ``"migration_started"``; the
    ``*_UNSPECIFIED`` zero -> None; a number this code does not know (a newer server) stays a number."""
    value = enum_type.values_by_number.get(number)
    if value is None:
        return number
    if value.name.endswith("_UNSPECIFIED"):
        return None
    return str(value.name.split("_", 1)[-1].lower())


def _proto_value(field: Any, value: Any) -> Any:
    if field.type == field.TYPE_MESSAGE:
        return proto_view(value)
    if field.type == field.TYPE_ENUM:
        return enum_label(field.enum_type, value)
    if field.type == field.TYPE_BYTES:
        return value.hex()
    return value


def service_paths_view(state: FabricState, rules: PathRules | None = None) -> dict[str, Any]:
    """Users' requests over the call graph, as placement sees them: each user's request time (network round
    trips down the tree, ms) and, for every service and switch its calls leave from, the instances they go to
    (the caller's nearest priority level) with the round trip to each (``placement.callgraph``)."""
    snapshot = ClusterSnapshot(state, path_rules=rules) if rules is not None else ClusterSnapshot(state)
    graph, layout = snapshot.call_graph, snapshot.layout()
    names = {i: state.topology.switches[dpid].name for i, dpid in enumerate(snapshot.latencies.switches)}
    behind: dict[tuple[str, int], list[dict[str, str]]] = {}
    for workload in sorted(state.workloads.values(), key=lambda w: w.id):
        i = snapshot.index.get(workload.node) if workload.node is not None else None
        if i is not None and snapshot.healthy[i] and snapshot.switch_column[i] >= 0:
            key = (workload.service, int(snapshot.switch_column[i]))
            behind.setdefault(key, []).append({"workload": workload.id, "node": str(workload.node)})
    times = request_times_ms(graph, layout, snapshot.path_rules)
    calls = []
    for edge in call_edges(graph, layout, snapshot.path_rules):
        instances = []
        for switch in sorted(set(edge.instances)):
            one = np.array([edge.caller], dtype=np.int64)
            trip = float(layout.round_trip_ms(one, np.array([switch], dtype=np.int64))[0, 0])
            rounded = round(trip, 3) if np.isfinite(trip) else None  # None: unreachable (JSON has no Infinity)
            instances += [{**w, "round_trip_ms": rounded} for w in behind.get((edge.service, switch), [])]
        calls.append(
            {
                "service": edge.service,
                "from_switch": names.get(edge.caller, str(edge.caller)),
                "calls_per_request": round(edge.calls_per_request, 6),
                "instances": instances,
            }
        )
    return {
        "generation": state.generation,
        "users": [
            {"service": entry, "host": host, "request_ms": round(t, 3) if np.isfinite(t) else None}
            for (entry, host), t in zip(graph.users, times.tolist(), strict=True)
        ],
        "calls": calls,
    }


def allow_from_view(service: Service) -> list[dict[str, Any]]:
    """Who may call ``service``, as declared: ``{who, paths, methods}`` per rule (``who``: ``service:web``,
    ``host:u1`` or a SPIFFE id); GET /api/v1/policy shows them resolved."""
    return [{"who": r.who, "paths": list(r.paths), "methods": list(r.methods)} for r in service.allow_from]


def services_view(state: FabricState) -> dict[str, Any]:
    """Each service as declared: replicas, resources, its SLOs (``max_latency_ms`` from each ``near`` host,
    ``max_request_latency_ms`` end to end), the services it calls and who may call it; and each of its
    instances with the largest route latency from its ``near`` hosts now (measured where measured) and the
    margin to the SLO (negative: broken; None: no SLO, no near hosts, or unreachable)."""
    latencies = compute_switch_latencies(state.topology)

    def instance(workload: Workload, service: Service) -> dict[str, Any]:
        node = state.nodes.get(workload.node) if workload.node is not None else None
        worst: float | None = None
        if node is not None and service.near:
            found = []
            for host_id in service.near:
                host = state.hosts.get(host_id)
                attachment = host.attachment if host is not None else None
                found.append(
                    latencies.between_us(attachment.switch, node.attachment.switch) / 1000.0
                    if attachment is not None
                    else math.inf
                )
            worst = max(found)
        shown = worst if worst is not None and math.isfinite(worst) else None
        slo = service.max_latency_ms
        margin = slo - shown if shown is not None and slo is not None else None
        return {
            "workload": workload.id,
            "node": workload.node,
            "worst_latency_ms": round(shown, 3) if shown is not None else None,
            "margin_ms": round(margin, 3) if margin is not None else None,
        }

    by_service: dict[str, list[Workload]] = {}
    for workload in sorted(state.workloads.values(), key=lambda w: w.id):
        by_service.setdefault(workload.service, []).append(workload)
    return {
        "generation": state.generation,
        "services": [
            {
                "name": s.name,
                "port": s.port,
                "replicas": s.replicas,
                "cpu_millis": s.resources.cpu_millis,
                "memory_mib": s.resources.memory_mib,
                "max_latency_ms": s.max_latency_ms,
                "max_request_latency_ms": s.max_request_latency_ms,
                "near": list(s.near),
                "calls": list(s.calls),
                "protocol": s.protocol.value,
                "allow_from": allow_from_view(s),
                "instances": [instance(w, s) for w in by_service.get(s.name, [])],
            }
            for s in sorted(state.services.values(), key=lambda s: s.name)
        ],
    }
