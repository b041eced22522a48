"""FlowMods, GroupMods and MeterMods as JSON a person can read. Pure.

The one rendering of a ``SwitchDelta``: the engine's record of what it sent
(``GET /api/v1/routes/changes``) and a plan's prediction of what it will send use the same function,
so the two compare as data. Messages are listed in the order they are sent (make-before-break):
meter adds and modifies, group adds and modifies, flow adds and modifies (phase ``make``), a barrier,
then flow deletes, group deletes and meter deletes (phase ``break``). A flow through a meter lists
``meter:<id>`` first among its actions; reservation flows have cookies ``0xec04...``.
"""

from __future__ import annotations

from typing import Any

from sdnctl.flows import Action, FlowSpec, GroupSpec, MatchField, MeterSpec, SwitchDelta

_HEX_FIELDS = frozenset({"eth_type"})  # read as 0x0800, as ovs-ofctl and every packet trace print them


def action_text(action: Action) -> str:
    """``("group", 7)`` -> ``"group:7"``, ``("output", 2)`` -> ``"output:2"``,
    ``("controller", 65535)`` -> ``"controller:65535"``."""
    kind, value = action
    return f"{kind}:{value}"


def match_json(match: tuple[MatchField, ...]) -> dict[str, Any]:
    return {
        name: f"0x{value:04x}" if name in _HEX_FIELDS and isinstance(value, int) else value for name, value in match
    }


def entry_json(flow: FlowSpec) -> dict[str, Any]:
    """A flow entry: table, priority, cookie, match and actions (none: the flow drops what it matches)."""
    return {
        "table": flow.table,
        "priority": flow.priority,
        "cookie": f"0x{flow.cookie:016x}",
        "match": match_json(flow.match),
        "actions": [action_text(a) for a in flow.actions],
    }


def flow_json(flow: FlowSpec, command: str) -> dict[str, Any]:
    return {"kind": "flow", "command": command, **entry_json(flow)}


def group_json(group: GroupSpec, command: str) -> dict[str, Any]:
    return {
        "kind": "group",
        "command": command,
        "group_id": group.group_id,
        "type": "fast_failover",
        "buckets": [{"watch_port": port, "actions": [action_text(("output", port))]} for port in group.buckets],
    }


def meter_json(meter: MeterSpec, command: str) -> dict[str, Any]:
    """A meter of one DROP band: rate in kbit/s, burst in kbit."""
    return {
        "kind": "meter",
        "command": command,
        "meter_id": meter.meter_id,
        "band": "drop",
        "rate_kbps": meter.rate_kbps,
        "burst_kb": meter.burst_kb,
    }


def delta_json(delta: SwitchDelta) -> dict[str, Any]:
    """Every message of ``delta``, in send order, each with its phase (``make`` or ``break``)."""
    make = [
        *(meter_json(m, "add") for m in delta.add_meters),
        *(meter_json(m, "modify") for m in delta.modify_meters),
        *(group_json(g, "add") for g in delta.add_groups),
        *(group_json(g, "modify") for g in delta.modify_groups),
        *(flow_json(f, "add") for f in delta.add_flows),
        *(flow_json(f, "modify") for f in delta.modify_flows),
    ]
    take_down = [
        *(flow_json(f, "delete") for f in delta.delete_flows),
        *(group_json(g, "delete") for g in delta.delete_groups),
        *(meter_json(m, "delete") for m in delta.delete_meters),
    ]
    return {
        "size": delta.size,
        "mods": [{"phase": "make", **m} for m in make] + [{"phase": "break", **m} for m in take_down],
    }
