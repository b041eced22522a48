"""Health per declared object: is what the desired state declares actually running? Pure.

Sync status says whether the controller runs the newest document; health says whether the fabric
does what that document asks, object by object (as Argo CD shows a resource "Synced" yet "Degraded"):

- switch: ``healthy`` connected and running the routes of the applied generation (or later);
  ``progressing`` connected, routes still being sent; ``missing`` not connected.
- link: ``healthy`` discovered and up; ``degraded`` down; ``missing`` not seen by discovery.
- node: ``healthy`` up; ``degraded`` down (failover moves its instances).
- service: ``healthy`` every declared replica placed, each instance's sidecar in sync; ``progressing``
  placed, some sidecars not yet in sync; ``degraded`` fewer placed than declared (with placement's reason).
- site, host: ``healthy`` (a host's traffic is the switches'; learned hosts are observations).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from netmodel.desired import cable_names
from netmodel.fabric import FabricSpec
from netmodel.ids import NodeId, ServiceName, SwitchId
from netmodel.state import FabricState
from netmodel.types import LinkId

HEALTHY, PROGRESSING, DEGRADED, MISSING = "healthy", "progressing", "degraded", "missing"


def object_health(
    spec: FabricSpec,
    state: FabricState,
    *,
    applied_generation: int,
    switch_generations: Mapping[SwitchId, int],
    replicas: Mapping[ServiceName, tuple[int, int, str | None]],
    sidecars_behind: Collection[str],
) -> dict[str, Any]:
    """``replicas``: service -> (declared, placed, why not all are placed). Returns per object
    ``{"health": ..., "why": ...}`` (``why`` only when not healthy) and the counts per health."""
    objects: dict[str, dict[str, str]] = {}
    for site in spec.sites:
        objects[f"site/{site.id}"] = {"health": HEALTHY}
    for switch in spec.switches:
        seen = state.topology.switches.get(switch.dpid)
        if seen is None or not seen.connected:
            objects[f"switch/{switch.name}"] = _bad(MISSING, "not connected")
        elif switch_generations.get(switch.dpid, -1) < applied_generation:
            objects[f"switch/{switch.name}"] = _bad(PROGRESSING, "routes of the applied revision still being sent")
        else:
            objects[f"switch/{switch.name}"] = {"health": HEALTHY}
    dpids = {s.name: s.dpid for s in spec.switches}
    for name, cable in zip(cable_names(spec.cables), spec.cables, strict=True):
        link = LinkId(dpids[cable.a], cable.a_port, dpids[cable.b], cable.b_port)
        attrs = state.topology.links.get(link)
        if attrs is None or not attrs.discovered:
            objects[f"link/{name}"] = _bad(MISSING, "not seen by discovery")
        elif not attrs.up:
            objects[f"link/{name}"] = _bad(DEGRADED, "down")
        else:
            objects[f"link/{name}"] = {"health": HEALTHY}
    for host in spec.hosts:
        objects[f"host/{host.id}"] = {"health": HEALTHY}
    for node in spec.nodes:
        seen_node = state.nodes.get(NodeId(node.id))
        up = seen_node is not None and seen_node.up
        objects[f"node/{node.id}"] = {"health": HEALTHY} if up else _bad(DEGRADED, "down")
    behind = set(sidecars_behind)
    for service in spec.services:
        name = ServiceName(service.name)
        declared, placed, why = replicas.get(name, (service.replicas, 0, None))
        instances = [str(w.id) for w in state.workloads.values() if w.service == name and w.declared]
        if placed < declared:
            reason = f"{placed} of {declared} declared replicas placed" + (f": {why}" if why else "")
            objects[f"service/{name}"] = _bad(DEGRADED, reason)
        elif lagging := sorted(w for w in instances if w in behind):
            objects[f"service/{name}"] = _bad(PROGRESSING, f"sidecars not in sync yet: {', '.join(lagging)}")
        else:
            objects[f"service/{name}"] = {"health": HEALTHY}
    counts: dict[str, int] = {}
    for entry in objects.values():
        counts[entry["health"]] = counts.get(entry["health"], 0) + 1
    return {"counts": counts, "objects": objects}


def _bad(health: str, why: str) -> dict[str, str]:
    return {"health": health, "why": why}
