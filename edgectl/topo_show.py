"""``edgectl topo show``: the declared fabric as a table, JSON or GraphML. Pure formatting."""

from __future__ import annotations

import io
from typing import Any

import networkx as nx

from edgectl.views import allow_from_view, topology_view
from netmodel.fabric import FabricSpec, build_state
from netmodel.types import DEFAULT_CALL_WEIGHT, AllowRule, CallWeight


def as_json(spec: FabricSpec) -> dict[str, Any]:
    view = topology_view(build_state(spec))
    view["fabric"] = spec.name
    view["services"] = [
        {
            "name": s.name,
            "port": s.port,
            "replicas": s.replicas,
            "cpu_millis": s.resources.cpu_millis,
            "memory_mib": s.resources.memory_mib,
            "max_latency_ms": s.max_latency_ms,
            "max_request_latency_ms": s.max_request_latency_ms,
            "near": list(s.near),
            "calls": [
                {"service": callee, "per_request": weight.per_request, "bytes_per_call": weight.bytes_per_call}
                for callee, weight in s.weighted_calls()
            ],
            "protocol": s.protocol.value,
            "allow_from": allow_from_view(s),
        }
        for s in spec.services
    ]
    view["authorization"] = {"default": spec.default_policy.value}
    return view


def _call_text(callee: str, weight: CallWeight) -> str:
    return callee if weight == DEFAULT_CALL_WEIGHT else f"{callee}x{weight.per_request:g}"


def _rule_text(rule: AllowRule) -> str:
    """``service:web``, ``host:u1[GET /status]``: the caller, and what it may ask when limited."""
    limits = " ".join([*rule.methods, *rule.paths])
    return f"{rule.who}[{limits}]" if limits else rule.who


def _table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [["-" if v is None or v == "" else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [f"{title} ({len(rows)})"]
    for n, row in enumerate(cells):
        lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n\n"


def as_table(spec: FabricSpec) -> str:
    sites = {s.id: s for s in spec.sites}
    out = [f"fabric {spec.name}\n\n"]
    out.append(
        _table("sites", ["id", "tier", "region", "zone"], [[s.id, s.tier, s.region, s.zone] for s in spec.sites])
    )
    out.append(
        _table(
            "switches",
            ["id", "dpid", "site", "tier"],
            [[s.name, f"{s.dpid:016x}", s.site, sites[s.site].tier] for s in spec.switches],
        )
    )
    out.append(
        _table(
            "links",
            ["a", "port", "b", "port", "latency_ms", "bandwidth_mbps"],
            [[c.a, c.a_port, c.b, c.b_port, f"{c.latency_ms:g}", f"{c.bandwidth_mbps:g}"] for c in spec.cables],
        )
    )
    out.append(
        _table(
            "hosts", ["id", "switch", "port", "ip", "mac"], [[h.id, h.switch, h.port, h.ip, h.mac] for h in spec.hosts]
        )
    )
    out.append(
        _table(
            "nodes",
            ["id", "site", "switch", "port", "ip", "cpu_millis", "memory_mib"],
            [[n.id, n.site, n.switch, n.port, n.ip, n.cpu_millis, n.memory_mib] for n in spec.nodes],
        )
    )
    out.append(
        _table(
            "services",
            [
                "name",
                "port",
                "replicas",
                "cpu_millis",
                "memory_mib",
                "max_latency_ms",
                "max_request_ms",
                "near",
                "calls",
                "allow_from",
            ],
            [
                [
                    s.name,
                    s.port,
                    s.replicas,
                    s.resources.cpu_millis,
                    s.resources.memory_mib,
                    s.max_latency_ms,
                    s.max_request_latency_ms,
                    ",".join(s.near),
                    ",".join(_call_text(callee, weight) for callee, weight in s.weighted_calls()),
                    ",".join(_rule_text(rule) for rule in s.allow_from),
                ]
                for s in spec.services
            ],
        )
    )
    out.append(f"authorization: default {spec.default_policy.value}\n")
    return "".join(out).rstrip("\n") + "\n"


def as_graphml(spec: FabricSpec) -> str:
    graph = nx.Graph(name=spec.name)
    sites = {s.id: s for s in spec.sites}
    for s in spec.switches:
        graph.add_node(s.name, kind="switch", dpid=f"{s.dpid:016x}", site=s.site, tier=str(sites[s.site].tier))
    for h in spec.hosts:
        graph.add_node(h.id, kind="host", ip=h.ip)
        graph.add_edge(h.id, h.switch, port=h.port)
    for n in spec.nodes:
        graph.add_node(n.id, kind="node", ip=n.ip, site=n.site, cpu_millis=n.cpu_millis, memory_mib=n.memory_mib)
        graph.add_edge(n.id, n.switch, port=n.port)
    for c in spec.cables:
        # A simple Graph keeps one edge per pair: redundant parallel cables keep the lowest latency.
        if graph.has_edge(c.a, c.b) and graph.edges[c.a, c.b].get("latency_ms", 1e18) <= c.latency_ms:
            continue
        graph.add_edge(
            c.a, c.b, latency_ms=c.latency_ms, bandwidth_mbps=c.bandwidth_mbps, a_port=c.a_port, b_port=c.b_port
        )
    buffer = io.BytesIO()
    nx.write_graphml(graph, buffer)
    return buffer.getvalue().decode()
