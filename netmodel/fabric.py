"""``FabricSpec``: what a fabric file declares, resolved (ports assigned, ids typed), and the
initial ``FabricState`` built from it. Pure: the YAML reading lives in ``fabric_file``."""

from __future__ import annotations

from dataclasses import dataclass

from netmodel.ids import HostId, NodeId, PortNo, ServiceName, SiteId, SwitchId
from netmodel.state import FabricState
from netmodel.topology import Topology
from netmodel.types import (
    Attachment,
    ComputeNode,
    Host,
    LinkAttrs,
    LinkId,
    PolicyDefault,
    Resources,
    Service,
    Site,
    Switch,
    frozen_map,
)


@dataclass(frozen=True, slots=True)
class SwitchSpec:
    name: str
    dpid: SwitchId
    site: SiteId


@dataclass(frozen=True, slots=True)
class CableSpec:
    """A declared link: both directions share latency and bandwidth."""

    a: str
    a_port: PortNo
    b: str
    b_port: PortNo
    latency_ms: float
    bandwidth_mbps: float


@dataclass(frozen=True, slots=True)
class HostSpec:
    id: HostId
    switch: str
    port: PortNo
    ip: str
    mac: str


@dataclass(frozen=True, slots=True)
class NodeSpec:
    id: NodeId
    site: SiteId
    switch: str
    port: PortNo
    ip: str
    mac: str
    cpu_millis: int
    memory_mib: int


@dataclass(frozen=True, slots=True)
class FabricSpec:
    name: str
    prefix_len: int
    sites: tuple[Site, ...]
    switches: tuple[SwitchSpec, ...]
    cables: tuple[CableSpec, ...]
    hosts: tuple[HostSpec, ...]
    nodes: tuple[NodeSpec, ...]
    services: tuple[Service, ...]
    default_policy: PolicyDefault = PolicyDefault.DENY
    """``authorization.default``: what a call no service's ``allow_from`` admits gets."""

    def dpid_of(self, switch_name: str) -> SwitchId:
        for switch in self.switches:
            if switch.name == switch_name:
                return switch.dpid
        raise KeyError(switch_name)


def ms_to_us(ms: float) -> int:
    return round(ms * 1000)


def build_state(spec: FabricSpec) -> FabricState:
    """The model as the file declares it: nothing connected, nothing discovered yet."""
    dpid_of = {s.name: s.dpid for s in spec.switches}.__getitem__  # by name, once (not a scan per cable)
    switches = {
        s.dpid: Switch(id=s.dpid, name=s.name, site=s.site, declared=True, connected=False) for s in spec.switches
    }
    links: dict[LinkId, LinkAttrs] = {}
    for cable in spec.cables:
        a, b = dpid_of(cable.a), dpid_of(cable.b)
        attrs = LinkAttrs(
            capacity_mbps=cable.bandwidth_mbps,
            declared_latency_us=ms_to_us(cable.latency_ms),
            declared=True,
            discovered=False,
        )
        links[LinkId(a, cable.a_port, b, cable.b_port)] = attrs
        links[LinkId(b, cable.b_port, a, cable.a_port)] = attrs
    hosts = {
        h.id: Host(id=h.id, attachment=Attachment(dpid_of(h.switch), h.port), ip=h.ip, mac=h.mac) for h in spec.hosts
    }
    nodes = {
        n.id: ComputeNode(
            id=n.id,
            site=n.site,
            attachment=Attachment(dpid_of(n.switch), n.port),
            capacity=Resources(n.cpu_millis, n.memory_mib),
            ip=n.ip,
        )
        for n in spec.nodes
    }
    return FabricState(
        topology=Topology(switches, links),
        sites=frozen_map({s.id: s for s in spec.sites}),
        hosts=frozen_map(hosts),
        nodes=frozen_map(nodes),
        services=frozen_map({ServiceName(s.name): s for s in spec.services}),
        default_policy=spec.default_policy,
    )
