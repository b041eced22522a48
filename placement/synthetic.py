"""Generated edge/metro/cloud fabrics for benchmarks and tests. Pure and deterministic (seeded).

Each site has one switch. Edge switches have one user host each and two uplinks into a metro ring (a
short primary, a longer backup); metro switches form a ring; each metro switch has a link to the
nearest cloud site and one to the next. Latencies are one-way, in microseconds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from netmodel.ids import HostId, NodeId, PortNo, ServiceName, SiteId, SwitchId, WorkloadId
from netmodel.state import FabricState
from netmodel.topology import Topology
from netmodel.types import (
    Attachment,
    ComputeNode,
    Host,
    LinkAttrs,
    LinkId,
    Resources,
    Service,
    Site,
    Switch,
    Tier,
    frozen_map,
)
from placement.types import Constraints, PlacementRequest


@dataclass(frozen=True, slots=True)
class FabricShape:
    edge_sites: int = 100
    edge_nodes: int = 6
    metro_sites: int = 10
    metro_nodes: int = 20
    cloud_sites: int = 4
    cloud_nodes: int = 50
    edge_capacity: Resources = field(default_factory=lambda: Resources(4000, 8192))
    metro_capacity: Resources = field(default_factory=lambda: Resources(16000, 32768))
    cloud_capacity: Resources = field(default_factory=lambda: Resources(64000, 262144))
    services: int = 20
    access_latency_us: tuple[int, int] = (0, 0)
    """Users' last mile: with a nonzero range each user host sits on its own access switch, linked to
    its edge switch with a latency drawn from it (users are near the edge site, not inside it)."""

    @property
    def nodes(self) -> int:
        return (
            self.edge_sites * self.edge_nodes
            + self.metro_sites * self.metro_nodes
            + self.cloud_sites * self.cloud_nodes
        )


def build_fabric(shape: FabricShape, seed: int = 1) -> FabricState:
    rng = random.Random(seed)
    sites: dict[SiteId, Site] = {}
    switches: dict[SwitchId, Switch] = {}
    links: dict[LinkId, LinkAttrs] = {}
    hosts: dict[HostId, Host] = {}
    nodes: dict[NodeId, ComputeNode] = {}
    next_port: dict[SwitchId, int] = {}

    def port(switch: SwitchId) -> PortNo:
        next_port[switch] = next_port.get(switch, 0) + 1
        return PortNo(next_port[switch])

    def cable(a: SwitchId, b: SwitchId, latency_us: int) -> None:
        pa, pb = port(a), port(b)
        attrs = LinkAttrs(capacity_mbps=1000.0, declared_latency_us=latency_us)
        links[LinkId(a, pa, b, pb)] = attrs
        links[LinkId(b, pb, a, pa)] = attrs

    def site(name: str, tier: Tier, count: int, capacity: Resources, dpid: int) -> SwitchId:
        site_id = SiteId(name)
        sites[site_id] = Site(site_id, tier, region="synthetic")
        switch = SwitchId(dpid)
        switches[switch] = Switch(switch, name=f"s-{name}", site=site_id)
        for k in range(count):
            node_id = NodeId(f"{name}-n{k + 1}")
            nodes[node_id] = ComputeNode(node_id, site_id, Attachment(switch, port(switch)), capacity)
        return switch

    clouds = [
        site(f"cloud-{c}", Tier.CLOUD, shape.cloud_nodes, shape.cloud_capacity, 0x30000 + c)
        for c in range(shape.cloud_sites)
    ]
    metros = [
        site(f"metro-{m}", Tier.METRO, shape.metro_nodes, shape.metro_capacity, 0x20000 + m)
        for m in range(shape.metro_sites)
    ]
    for m, switch in enumerate(metros):
        if len(metros) > 1:
            cable(switch, metros[(m + 1) % len(metros)], rng.randint(500, 1500))
        if clouds:
            cable(switch, clouds[m % len(clouds)], rng.randint(8000, 15000))
            if len(clouds) > 1:
                cable(switch, clouds[(m + 1) % len(clouds)], rng.randint(12000, 25000))
    for e in range(shape.edge_sites):
        switch = site(f"edge-{e}", Tier.EDGE, shape.edge_nodes, shape.edge_capacity, 0x10000 + e)
        host = HostId(f"u{e}")
        access = switch
        if shape.access_latency_us[1] > 0:
            access = SwitchId(0x40000 + e)
            switches[access] = Switch(access, name=f"s-access-{e}", site=SiteId(f"edge-{e}"))
            cable(access, switch, rng.randint(*shape.access_latency_us))
        hosts[host] = Host(host, Attachment(access, port(access)), ip=f"10.{e // 250}.{e % 250}.1")
        if metros:
            home = e * len(metros) // max(shape.edge_sites, 1)
            cable(switch, metros[home], rng.randint(1000, 3000))
            cable(switch, metros[(home + 1) % len(metros)], rng.randint(4000, 8000))
    services = {
        ServiceName(f"svc{k}"): Service(ServiceName(f"svc{k}"), 8000 + k, replicas=1, resources=Resources(500, 512))
        for k in range(shape.services)
    }
    return FabricState(
        topology=Topology(switches, links),
        sites=frozen_map(sites),
        hosts=frozen_map(hosts),
        nodes=frozen_map(nodes),
        services=frozen_map(services),
    )


def random_requests(
    state: FabricState, count: int, seed: int = 2, slo_ms: tuple[float, float] = (3.0, 10.0)
) -> list[PlacementRequest]:
    """A mix: 40% with a latency SLO from one user host, 30% near a host with no SLO, 30% with neither."""
    rng = random.Random(seed)
    hosts = sorted(state.hosts)
    services = sorted(state.services)
    out = []
    for _ in range(count):
        kind = rng.random()
        near = (rng.choice(hosts),) if kind < 0.7 and hosts else ()
        slo = round(rng.uniform(*slo_ms), 1) if kind < 0.4 and near else None
        out.append(
            PlacementRequest(
                service=rng.choice(services),
                resources=Resources(rng.choice((100, 250, 500, 1000)), rng.choice((128, 256, 512, 1024, 2048))),
                constraints=Constraints(max_latency_ms=slo, near=near),
            )
        )
    return out


def workload_id(n: int, service: str) -> WorkloadId:
    return WorkloadId(f"{service}-{n}")
