"""A plan as JSON (``--output json``, the HTTP API) and as text for a person (``edgectl diff``). Pure."""

from __future__ import annotations

from typing import Any

from edgectl.plan import Plan, SwitchChange, XdsChange
from netmodel.ids import format_dpid
from sdnctl.flow_text import delta_json


def _switch_json(change: SwitchChange) -> dict[str, Any]:
    """The switch and its messages in the route engine's own rendering (``GET /api/v1/routes/changes``
    lists what it then sent in the same form)."""
    rendered = delta_json(change.delta)
    return {
        "switch": change.name,
        "dpid": format_dpid(change.switch),
        "connected": change.connected,
        "messages": rendered["size"],
        "mods": rendered["mods"],
    }


def _xds_json(change: XdsChange) -> dict[str, Any]:
    return {
        "node": change.node,
        "added": dict(change.added),
        "changed": dict(change.changed),
        "removed": dict(change.removed),
    }


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "changes": bool(plan),
        "revision": {"from": plan.revision_from, "to": plan.revision_to},
        "objects": {
            "added": list(plan.objects.added),
            "removed": list(plan.objects.removed),
            "changed": list(plan.objects.changed),
            "orphans": list(plan.orphans.names),
        },
        "warnings": list(plan.warnings),
        "problems": list(plan.problems),
        "openflow": [_switch_json(c) for c in plan.openflow],
        "flow_mods": plan.flow_mods,
        "xds": [_xds_json(c) for c in plan.xds],
        "placement": {
            "placed": [{"service": p.service, "node": p.node, "reason": p.reason} for p in plan.placement.placed],
            "moved": [
                {
                    "workload": m.workload,
                    "service": m.service,
                    "from": m.from_node,
                    "to": m.to_node,
                    "reason": m.reason,
                }
                for m in plan.placement.moved
            ],
            "evicted": [
                {"workload": e.workload, "service": e.service, "node": e.node, "reason": e.reason}
                for e in plan.placement.evicted
            ]
            + [
                {"workload": w, "service": None, "node": None, "reason": "its service or node is pruned"}
                for w in plan.evicted_by_prune
            ],
        },
        "pending": {
            "placed": [{"service": p.service, "node": p.node, "reason": p.reason} for p in plan.pending.placed],
            "evicted": [str(e.workload) for e in plan.pending.evicted],
            "moved": [str(m.workload) for m in plan.pending.moved],
        },
        "identities": {"issued": list(plan.identities.issued), "retired": list(plan.identities.retired)},
    }


_SIGNS = {"add": "+", "modify": "~", "delete": "-"}


def _mod_line(mod: dict[str, Any]) -> str:
    sign = _SIGNS.get(mod["command"], "?")
    if mod["kind"] == "group":
        ports = ",".join(str(b["watch_port"]) for b in mod["buckets"])
        return f"{sign} group {mod['group_id']} {mod['type']} watch {ports}"
    match = ",".join(f"{name}={value}" for name, value in mod["match"].items()) or "*"
    actions = ",".join(mod["actions"]) or "drop"
    return f"{sign} table={mod['table']} priority={mod['priority']} {match} -> {actions}"


def plan_text(view: dict[str, Any]) -> str:
    """A plan's JSON (``plan_json``) for a person, ``terraform plan``-like: ``+`` added, ``-`` removed,
    ``~`` changed, ``=`` kept as an orphan; one section per layer. The CLI gets the JSON over HTTP."""
    revision = view["revision"]
    if not view["changes"]:
        return f"No changes: the controller already runs revision {revision['to'] or '(none)'}.\n"
    out = [f"Plan: revision {revision['from'] or '(none)'} -> {revision['to']}"]
    objects = view["objects"]
    if any(objects.values()):
        out.append("\ndeclared objects:")
        out += [f"  + {name}" for name in objects["added"]]
        out += [f"  ~ {name}" for name in objects["changed"]]
        out += [f"  - {name}" for name in objects["removed"]]
        out += [f"  = {name} (orphan: kept until prune is on)" for name in objects["orphans"]]
    if view["problems"]:
        out.append("\ncannot be applied:")
        out += [f"  x {p}" for p in view["problems"]]
    if view["warnings"]:
        out.append("\nwarnings:")
        out += [f"  ! {w}" for w in view["warnings"]]
    if view["openflow"]:
        out.append(f"\nOpenFlow ({view['flow_mods']} messages on {len(view['openflow'])} switches):")
        for change in view["openflow"]:
            note = "" if change["connected"] else " (not connected: sent when it connects)"
            out.append(f"  switch {change['switch']} ({change['dpid']}){note}:")
            out += [f"    {_mod_line(mod)}" for mod in change["mods"]]
    if view["xds"]:
        out.append(f"\nxDS ({len(view['xds'])} sidecars):")
        for x in view["xds"]:
            out.append(f"  node {x['node']}:")
            for sign, part in (("+", "added"), ("~", "changed"), ("-", "removed")):
                out += [f"    {sign} {kind} {', '.join(names)}" for kind, names in x[part].items()]
    placement = view["placement"]
    if any(placement.values()):
        out.append("\nplacement:")
        for p in placement["placed"]:
            out.append(f"  + {p['service']} on {p['node'] or 'nowhere'}: {p['reason']}")
        for m in placement["moved"]:
            out.append(f"  ~ {m['workload']} {m['from']} -> {m['to'] or 'nowhere'}: {m['reason']}")
        for e in placement["evicted"]:
            out.append(f"  - {e['workload']}{' on ' + e['node'] if e['node'] else ''}: {e['reason']}")
    pending = view["pending"]
    if any(pending.values()):
        out.append("\nnot changed by this document, still pending in placement:")
        out += [f"  . {p['service']}: {p['reason']}" for p in pending["placed"]]
        out += [f"  . {w}: to be drained" for w in pending["evicted"]]
        out += [f"  . {w}: to be moved" for w in pending["moved"]]
    identities = view["identities"]
    if identities["issued"] or identities["retired"]:
        out.append("\nidentities:")
        out += [f"  + {s}" for s in identities["issued"]]
        out += [f"  - {s} (retired)" for s in identities["retired"]]
    return "\n".join(out) + "\n"
