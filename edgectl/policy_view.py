"""The authorization policy made visible (pure): what ``GET /api/v1/policy`` shows, the decision
``GET /api/v1/policy/check`` explains layer by layer, and the declared calls a policy would refuse
(``edgectl validate``). Everything is read from one ``FabricState`` through ``netmodel.authorization``,
the same resolution the sidecars' RBAC and the switches' ACL are built from.

    check(state, "example.org", caller="web", callee="api", path="/", method="GET")
    # {"allowed": True, "reason": "allowed by allow_from[0] (service:web)", "layers": {"envoy": ..., "network": ...}}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netmodel.authorization import decide, host_identity, policies, service_policy
from netmodel.ids import HostId, NodeId, ServiceName
from netmodel.state import FabricState
from netmodel.types import PolicyDefault, Service


class UnknownName(ValueError):
    """A caller or callee the model does not know; the message says what is known."""


def policy_view(
    state: FabricState,
    trust_domain: str,
    recent: Sequence[Mapping[str, Any]] = (),
    totals: Mapping[tuple[str, str, str], int] | None = None,
) -> dict[str, Any]:
    """Every service with the rules it admits (resolved to principals and source addresses) and its placed
    instances; the most recent denials (``Denial.as_json()``, newest first) and the totals per (caller,
    service, layer)."""
    services = []
    for name, policy in policies(state, trust_domain).items():
        declared = state.services[name]
        services.append(
            {
                "service": name,
                "protocol": declared.protocol.value,
                "rules": [
                    {
                        "index": grant.index,
                        "who": grant.rule.who,
                        "paths": list(grant.paths),
                        "methods": list(grant.methods),
                        "principal": grant.principal.spiffe_id,
                        "prefix": grant.principal.prefix,
                        "source_ips": list(grant.source_ips),
                    }
                    for grant in policy.grants
                ],
                "instances": [
                    {"id": w.id, "node": w.node, "address": _node_ip(state, w.node), "port": w.port}
                    for w in sorted(state.workloads.values(), key=lambda w: w.id)
                    if w.service == name and w.node is not None
                ],
            }
        )
    return {
        "default": state.default_policy.value,
        "trust_domain": trust_domain,
        "services": services,
        "denied_recent": [dict(denial) for denial in recent],
        "denied_totals": [
            {"caller": caller, "service": service, "layer": layer, "count": count}
            for (caller, service, layer), count in sorted((totals or {}).items())
        ],
    }


def _node_ip(state: FabricState, node: str | None) -> str | None:
    found = state.nodes.get(NodeId(node)) if node is not None else None
    return found.ip if found is not None and found.ip else None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a check is about: the SPIFFE id the callee's sidecar would see, and the addresses its traffic
    would leave from (what the switches see)."""

    label: str
    spiffe_id: str
    addresses: tuple[str, ...]
    why_no_address: str = ""


def resolve_caller(state: FabricState, trust_domain: str, text: str) -> Caller:
    """``text``: a service name (``web`` or ``service:web``), a host id (``u1`` or ``host:u1``) or a SPIFFE id.
    A service stands for its first placed instance (by id), or an instance not placed yet (``any``)."""
    kind, colon, name = text.partition(":")
    if text.startswith("spiffe://"):
        return _caller_by_id(state, trust_domain, text)
    if colon and kind not in ("service", "host"):
        raise UnknownName(f"unknown caller {text!r}: give a service, a host or a spiffe:// id")
    if not colon:
        name = text
    if (not colon or kind == "service") and name in state.services:
        placed = sorted((w for w in state.workloads.values() if w.service == name and w.node), key=lambda w: w.id)
        instance = placed[0].id if placed else "any"
        addresses = sorted({ip for w in placed if (ip := _node_ip(state, w.node))})
        why = "" if addresses else f"no instance of {name} is placed: its traffic comes from nowhere yet"
        return Caller(f"service:{name}", f"spiffe://{trust_domain}/svc/{name}/w/{instance}", tuple(addresses), why)
    if (not colon or kind == "host") and name in state.hosts:
        host = state.hosts[HostId(name)]
        why = "" if host.ip else f"host {name} has no address"
        return Caller(f"host:{name}", host_identity(trust_domain, name), (host.ip,) if host.ip else (), why)
    known = ", ".join([*sorted(state.services), *sorted(state.hosts)]) or "none"
    raise UnknownName(f"unknown caller {text!r}: not a service, a host or a spiffe:// id (known: {known})")


def _caller_by_id(state: FabricState, trust_domain: str, spiffe_id: str) -> Caller:
    for workload in state.workloads.values():
        if workload.spiffe_id == spiffe_id:
            ip = _node_ip(state, workload.node)
            why = "" if ip else f"workload {workload.id} is not placed on a node with an address"
            return Caller(spiffe_id, spiffe_id, (ip,) if ip else (), why)
    for host_id, host in state.hosts.items():
        if host_identity(trust_domain, host_id) == spiffe_id and host.ip:
            return Caller(spiffe_id, spiffe_id, (host.ip,))
    return Caller(spiffe_id, spiffe_id, (), f"no workload or host of this fabric holds {spiffe_id}")


def check(
    state: FabricState,
    trust_domain: str,
    *,
    caller: str,
    callee: str,
    path: str | None = None,
    method: str | None = None,
) -> dict[str, Any]:
    """May ``caller`` call ``callee`` (with this path and method)? The decision of each enforcement point and
    why; allowed only when both allow. ``UnknownName`` for a callee or caller the model does not know."""
    if callee not in state.services:
        known = ", ".join(sorted(state.services)) or "none"
        raise UnknownName(f"unknown service {callee!r} (services: {known})")
    who = resolve_caller(state, trust_domain, caller)
    policy = service_policy(state, ServiceName(callee), trust_domain)
    decision = decide(policy, who.spiffe_id, path=path, method=method)
    envoy = {
        "allowed": decision.allowed,
        "reason": decision.reason,
        "principal": who.spiffe_id,
        "rule": decision.grant.index if decision.grant is not None else None,
    }
    network = _network_layer(policy.allows_everyone, sorted(policy.source_ips()), who, callee)
    layers = {"envoy": envoy, "network": network}
    denied = [layer for layer in layers.values() if not layer["allowed"]]
    return {
        "allowed": not denied,
        "reason": str(denied[0]["reason"]) if denied else decision.reason,
        "caller": who.label,
        "service": callee,
        "path": path,
        "method": method,
        "layers": layers,
    }


def _network_layer(allows_everyone: bool, allowed: list[str], who: Caller, callee: str) -> dict[str, Any]:
    base = {"addresses": list(who.addresses), "allowed_addresses": allowed}
    if allows_everyone:
        return {**base, "allowed": True, "reason": "the fabric's default is allow: the switches do not filter"}
    if not who.addresses:
        return {**base, "allowed": False, "reason": who.why_no_address}
    listed = ", ".join(allowed) or "none"
    for address in who.addresses:
        if address not in allowed:
            reason = f"{address} is not among the addresses allowed to reach {callee} ({listed})"
            return {**base, "allowed": False, "reason": reason}
    sources = ", ".join(who.addresses)
    return {**base, "allowed": True, "reason": f"{sources} may reach {callee} (allowed addresses: {listed})"}


def refused_calls(services: Iterable[Service], default: PolicyDefault) -> list[str]:
    """Declared calls (``calls``) the callee's ``allow_from`` does not admit, as sentences: with default deny
    these calls would be refused. A ``spiffe_id`` rule admits a caller when it names ``/svc/<caller>/``."""
    if default is PolicyDefault.ALLOW:
        return []
    by_name = {s.name: s for s in services}
    out = []
    for service in by_name.values():
        for callee_name in service.calls:
            callee = by_name.get(callee_name)
            if callee is None:
                continue
            marker = f"/svc/{service.name}/"
            if not any(
                rule.service == service.name or (rule.spiffe_id is not None and marker in rule.spiffe_id)
                for rule in callee.allow_from
            ):
                out.append(
                    f"{service.name} calls {callee.name}, but {callee.name}'s allow_from does not admit "
                    f"{service.name}: with default deny these calls are refused"
                )
    return out


def as_text(view: Mapping[str, Any]) -> str:
    """``edgectl policy show``: who may call each service, then the recent denials."""
    lines = [f"authorization: default {view['default']} (trust domain {view['trust_domain']})"]
    lines.append(f"  {'service':<22} {'protocol':<8} {'#':>2}  who (paths, methods) -> from addresses")
    for service in view["services"]:
        rules = service["rules"] or [None]
        for n, rule in enumerate(rules):
            head = f"  {service['service']:<22} {service['protocol']:<8}" if n == 0 else f"  {'':<22} {'':<8}"
            if rule is None:
                what = "nobody" if view["default"] == "deny" else "everyone (default allow)"
                lines.append(f"{head} {'-':>2}  {what}")
                continue
            limits = "; ".join(
                part
                for part in (
                    f"paths {','.join(rule['paths'])}" if rule["paths"] else "",
                    f"methods {','.join(rule['methods'])}" if rule["methods"] else "",
                )
                if part
            )
            sources = ", ".join(rule["source_ips"]) or "no address yet"
            lines.append(f"{head} {rule['index']:>2}  {rule['who']}{f' ({limits})' if limits else ''} -> {sources}")
    recent = view.get("denied_recent") or []
    lines.append(f"recent denials ({len(recent)})")
    for denial in recent:
        detail = f" {denial['detail']}" if denial.get("detail") else ""
        lines.append(
            f"  {denial['at']:.3f} {denial['layer']:<7} {denial['caller_label']} -> {denial['service']}"
            f" x{denial['count']}{detail}"
        )
    return "\n".join(lines) + "\n"


def check_text(result: Mapping[str, Any]) -> str:
    """``edgectl policy check``: the decision, then each layer's."""
    verdict = "ALLOWED" if result["allowed"] else "DENIED"
    what = " ".join(part for part in (result.get("method"), result.get("path")) if part)
    lines = [f"{verdict}: {result['caller']} -> {result['service']}{f' ({what})' if what else ''}: {result['reason']}"]
    for name, layer in result["layers"].items():
        lines.append(f"  {name:<8} {'allow' if layer['allowed'] else 'deny':<5} {layer['reason']}")
    return "\n".join(lines) + "\n"
