"""Bandwidth made visible: per link its capacity, what is reserved and what is measured; per reservation
its path and meter; the demands that found no room and why (pure; ``GET /api/v1/links``, the
``reservations`` of ``GET /api/v1/routes``, ``edgectl links``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from netmodel.bandwidth import Demand, ReservationPlan, link_label
from netmodel.ids import SwitchId
from netmodel.state import FabricState
from netmodel.types import LinkId

MeterOf = Callable[[SwitchId, str], int | None]
"""The meter id a reservation (by demand key) has on its first switch, if the switches are told one."""


def links_view(state: FabricState, plan: ReservationPlan | None) -> dict[str, Any]:
    """Every link direction: capacity, reserved, residual (capacity - reserved), measured load and utilization."""
    names = {dpid: sw.name for dpid, sw in state.topology.switches.items()}
    reserved = plan.links() if plan is not None else {}
    rows = []
    for link, attrs in sorted(state.topology.links.items(), key=lambda kv: (names.get(kv[0].src, ""), kv[0])):
        mbps = reserved.get(link, 0.0)
        rows.append(
            {
                "link": link_label(state, link),
                "src": names.get(link.src, f"{link.src:#x}"),
                "src_port": link.src_port,
                "dst": names.get(link.dst, f"{link.dst:#x}"),
                "dst_port": link.dst_port,
                "up": attrs.up,
                "capacity_mbps": attrs.capacity_mbps,
                "reserved_mbps": round(mbps, 6),
                "residual_mbps": round(max(0.0, attrs.capacity_mbps - mbps), 6),
                "load_mbps": None if attrs.measured_load_bps is None else round(attrs.measured_load_bps / 1e6, 3),
                "utilization": attrs.utilization,
                "load_measured_at": attrs.load_measured_at,
            }
        )
    return {
        "generation": state.generation,
        "plan_generation": plan.generation if plan is not None else None,
        "links": rows,
        "unreserved": [_unreserved(state, u.demand, u.reason, u.link) for u in plan.unreserved] if plan else [],
    }


def reservations_view(
    state: FabricState, plan: ReservationPlan | None, meter_of: MeterOf | None = None
) -> dict[str, Any]:
    """Each reservation's demand, path and meter, and the demands that have none."""
    if plan is None:
        return {"generation": None, "reservations": [], "unreserved": []}
    names = {dpid: sw.name for dpid, sw in state.topology.switches.items()}
    rows = []
    for r in plan.reservations:
        meter = meter_of(r.switches[0], r.demand.key) if meter_of is not None and r.links else None
        rows.append(
            {
                **_demand(r.demand),
                "path": [names.get(s, f"{s:#x}") for s in r.switches],
                "links": [link_label(state, link) for link in r.links],
                "latency_us": r.latency_us,
                "meter": None if meter is None else {"switch": names.get(r.switches[0]), "id": meter},
            }
        )
    return {
        "generation": plan.generation,
        "reservations": rows,
        "unreserved": [_unreserved(state, u.demand, u.reason, u.link) for u in plan.unreserved],
    }


def _demand(demand: Demand) -> dict[str, Any]:
    field, port = demand.l4
    return {
        "key": demand.key,
        "owners": list(demand.owners),
        "src": demand.src,
        "dst": demand.dst,
        "match": {"ipv4_src": demand.src_ip, "ipv4_dst": demand.dst_ip, "ip_proto": 6, field: port},
        "mbps": demand.mbps,
    }


def _unreserved(state: FabricState, demand: Demand, reason: str, link: LinkId | None) -> dict[str, Any]:
    return {**_demand(demand), "reason": reason, "link": None if link is None else link_label(state, link)}


def links_text(view: dict[str, Any]) -> str:
    """``edgectl links``: one line per link direction."""
    lines = [f"links of generation {view['generation']} ({len(view['links'])} directions)"]
    lines.append(f"  {'link':<26} {'up':<4} {'capacity':>9} {'reserved':>9} {'residual':>9} {'load':>9} {'util':>6}")
    for row in view["links"]:
        load = "-" if row["load_mbps"] is None else f"{row['load_mbps']:.2f}"
        util = "-" if row["utilization"] is None else f"{row['utilization'] * 100:.0f}%"
        lines.append(
            f"  {row['link']:<26} {'yes' if row['up'] else 'DOWN':<4} {row['capacity_mbps']:>9g} "
            f"{row['reserved_mbps']:>9g} {row['residual_mbps']:>9g} {load:>9} {util:>6}"
        )
    lines.append("  (Mbit/s; load: measured from port counters; residual: capacity minus reserved)")
    if view["unreserved"]:
        lines.append(f"without a reservation ({len(view['unreserved'])}):")
        for row in view["unreserved"]:
            lines.append(
                f"  {row['src']} -> {row['dst']} {row['mbps']:g} Mbit/s for {', '.join(row['owners'])}: {row['reason']}"
            )
    return "\n".join(lines) + "\n"
