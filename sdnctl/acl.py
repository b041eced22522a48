"""The ingress policy of table 0: source guards and policy drops at every edge port. Pure.

Authorization is enforced in the network at the first switch, so a host that bypasses its sidecar
still cannot reach a service's port. Per edge port (a switch port on no link of the model):

- a port with a declared endpoint (a declared host, a compute node) of address X (and MAC M when the
  file declares one) gets a **source guard**: IPv4 from X (and M) and ARP claiming X (from M) go on;
  any other IPv4 or ARP from the port is dropped, so nobody there sends as another endpoint. Then,
  for every placed service instance (node address D, instance port) whose policy does not admit X
  (``netmodel.authorization``: X is not a source address of a grant), a connection attempt
  ``tcp, ipv4_src=X, ipv4_dst=D, tcp_dst=port, tcp_flags=+syn-ack`` is dropped.
- any other edge port (a learned host, nothing known) has no identity, so no grant: a connection
  attempt to every service instance is dropped whatever source address it claims (the drop matches
  the port, not the source), so claiming an admitted endpoint's address there gains nothing. Such
  ports get no guard against declared addresses: it would cost a flow per (port, declared endpoint)
  on every switch (a 500-switch fabric with 16 ports per switch: 2.5 million flows, 22 s to compile),
  for traffic the policy drops already refuse.

Only TCP connection attempts (SYN without ACK) to service instances are filtered: a caller not
admitted never gets a connection, while connections already established live on (a caller's
instance draining after its node stopped being admitted, a reply whose ephemeral port happens to
equal a service port; the sidecars' RBAC still judges every request). Pings, ARP, LLDP and anything
else keep working. With the
fabric's default ``allow`` nothing is dropped by policy (the guards stay). An instance called from its
own node crosses no switch (its sidecar enforces that). Everything is derived from addresses and
ports, so a restarted controller computes the flows a switch already holds; a move recompiles the
drops of the instance's new address and port (its callers' addresses follow their new nodes too).

Cookies: ``0xec03 | kind << 40 | caller address`` (0 when the port has no identity), so a drop's
packet counter names its caller and kind; ``labels`` says which service and which port.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from netmodel.authorization import host_identity, service_policy
from netmodel.ids import PortNo, ServiceName, SwitchId
from netmodel.state import FabricState
from sdnctl.flows import (
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    TABLE_ACL,
    TABLE_FORWARD,
    CompiledSwitch,
    Entry,
    FlowSpec,
    MatchField,
    SwitchDelta,
    replace_entries,
)

COOKIE_ACL = 0xEC03_0000_0000_0000
COOKIE_ACL_MASK = 0xFFFF_0000_0000_0000
KIND_DENY = 1  # a policy drop: this caller may not reach this instance
KIND_GUARD = 2  # a source guard drop: a source address or MAC the port does not own
KIND_PASS = 3  # the source guard's way on: the port's own address
PRIORITY_DENY = 300
PRIORITY_GUARD_PASS = 200
PRIORITY_GUARD_DROP = 100
IP_PROTO_TCP = 6
# A TCP connection attempt: SYN set, ACK clear (the ONF extension field of OpenFlow 1.3, value/mask
# as OVS reports it back in flow stats, so the drift check reads what was compiled).
TCP_FLAGS_SYN_ONLY = ("tcp_flags", (0x002, 0x012))
ENTRY_PREFIX = "acl:"  # a switch's ACL entries are keyed acl:<port>, beside the route entries (by IP)
GOTO_FORWARD = (("goto", TABLE_FORWARD),)
DROP: tuple[tuple[str, int], ...] = ()


def acl_cookie(kind: int, caller_ip: str | None) -> int:
    address = int(ipaddress.IPv4Address(caller_ip)) if caller_ip else 0
    return COOKIE_ACL | kind << 40 | address


def cookie_kind(cookie: int) -> int:
    return (cookie >> 40) & 0xFF


def node_identity(trust_domain: str, node: str) -> str:
    return f"spiffe://{trust_domain}/node/{node}"


@dataclass(frozen=True, slots=True)
class DropLabel:
    """What a drop flow's packets mean. ``kind``: ``deny`` (policy; ``service`` the callee) or
    ``spoof`` (source guard). ``caller``: the port's endpoint (its SPIFFE id) or an address, or the
    switch port when nothing is known. ``detail``: ``s1 port 3 -> 10.0.0.2:8080`` (deny) or the
    sources the port owns, ``10.0.1.2/02:00:00:00:00:02`` (spoof)."""

    kind: str
    switch: str
    port: int
    caller: str
    service: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Target:
    """A placed service instance as the switches see it: the node's address and the instance's port."""

    ip: str
    port: int
    service: str


@dataclass(frozen=True, slots=True)
class PortOwner:
    """A declared endpoint at an edge port: its address, its MAC when declared, its identity."""

    ip: str
    mac: str
    identity: str


@dataclass(frozen=True, eq=False)
class AclTables:
    """Per switch, its ACL entries (``acl:<port>`` -> flows), and what each drop flow's counter means."""

    entries: Mapping[SwitchId, Mapping[str, Entry]]
    labels: Mapping[tuple[SwitchId, tuple[int, int, tuple[MatchField, ...]]], DropLabel]

    def flows(self, switch: SwitchId) -> list[FlowSpec]:
        return sorted(f for flows, _ in self.entries.get(switch, {}).values() for f in flows)


EMPTY = AclTables({}, {})


def acl_inputs(state: FabricState) -> tuple[object, ...]:
    """What the ACL depends on; the same objects (``is``) mean the same ACL (the model shares
    unchanged parts between generations), so a link event or a latency change recompiles nothing."""
    topo = state.topology
    return (state.hosts, state.nodes, state.workloads, state.services, state.default_policy, topo.switches, topo.graph)


def same_inputs(a: tuple[object, ...] | None, b: tuple[object, ...]) -> bool:
    return a is not None and len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def targets(state: FabricState) -> list[Target]:
    """Every placed instance of a declared service on a node with an address, once per (address, port)."""
    seen: dict[tuple[str, int], Target] = {}
    for workload in sorted(state.workloads.values(), key=lambda w: w.id):
        if workload.node is None or workload.port <= 0 or workload.service not in state.services:
            continue
        node = state.nodes.get(workload.node)
        if node is None or not node.ip:
            continue
        seen.setdefault((node.ip, workload.port), Target(node.ip, workload.port, workload.service))
    return [seen[k] for k in sorted(seen)]


def _owners(state: FabricState, trust_domain: str) -> dict[tuple[SwitchId, PortNo], PortOwner]:
    owners: dict[tuple[SwitchId, PortNo], PortOwner] = {}
    for node in state.nodes.values():
        if node.ip:
            where = (node.attachment.switch, node.attachment.port)
            owners[where] = PortOwner(node.ip, "", node_identity(trust_domain, node.id))
    for host in state.hosts.values():
        if host.declared and host.ip and host.attachment is not None:
            mac = host.mac.lower() if host.mac and not host.mac_learned else ""
            where = (host.attachment.switch, host.attachment.port)
            owners[where] = PortOwner(host.ip, mac, host_identity(trust_domain, host.id))
    return owners


def edge_ports(state: FabricState) -> list[tuple[SwitchId, PortNo]]:
    """The ports of connected switches (and of endpoints on them) that are on no link of the model
    (declared or discovered)."""
    topo = state.topology
    fabric: set[tuple[SwitchId, PortNo]] = set()
    for link in topo.links:
        fabric.add((link.src, link.src_port))
        fabric.add((link.dst, link.dst_port))
    connected = {switch.id for switch in topo.switches.values() if switch.connected}
    ports = {(switch.id, port) for switch in topo.switches.values() if switch.connected for port in switch.ports}
    # An endpoint's port counts even before its switch reported it.
    for attachment in [n.attachment for n in state.nodes.values()] + [h.attachment for h in state.hosts.values()]:
        if attachment is not None and attachment.switch in connected:
            ports.add((attachment.switch, attachment.port))
    return sorted(ports - fabric)


def compile_acl(state: FabricState, trust_domain: str) -> AclTables:
    """Every connected switch's ACL entries for ``state`` (see the module's doc)."""
    owners = _owners(state, trust_domain)
    instances = targets(state)
    admitted: dict[str, frozenset[str] | None] = {}  # service -> source addresses; None: everyone
    for target in instances:
        if target.service not in admitted:
            policy = service_policy(state, ServiceName(target.service), trust_domain)
            admitted[target.service] = None if policy.allows_everyone else policy.source_ips()
    learned = {
        (h.attachment.switch, h.attachment.port): h.ip
        for h in state.hosts.values()
        if not h.declared and h.ip and h.attachment is not None
    }
    entries: dict[SwitchId, dict[str, Entry]] = {}
    labels: dict[tuple[SwitchId, tuple[int, int, tuple[MatchField, ...]]], DropLabel] = {}
    for dpid, port in edge_ports(state):
        name = state.topology.switches[dpid].name
        owner = owners.get((dpid, port))
        if owner is not None:
            flows, port_labels = _owned_port(name, port, owner, instances, admitted)
        else:
            caller = learned.get((dpid, port)) or f"{name} port {port}"
            flows, port_labels = _unknown_port(name, port, caller, instances, admitted)
        if not flows:
            continue
        entries.setdefault(dpid, {})[f"{ENTRY_PREFIX}{port}"] = (tuple(sorted(flows)), None)
        for flow, label in port_labels:
            labels[(dpid, flow.key)] = label
    return AclTables(entries, labels)


def _match(*pairs: MatchField) -> tuple[MatchField, ...]:
    return tuple(sorted(pairs))


def _tcp_to(port: int, target: Target, *source: MatchField) -> tuple[MatchField, ...]:
    return _match(
        ("eth_type", ETH_TYPE_IPV4),
        ("in_port", port),
        ("ip_proto", IP_PROTO_TCP),
        ("ipv4_dst", target.ip),
        ("tcp_dst", target.port),
        TCP_FLAGS_SYN_ONLY,
        *source,
    )


Labelled = list[tuple[FlowSpec, DropLabel]]


def _owned_port(
    switch: str,
    port: int,
    owner: PortOwner,
    instances: list[Target],
    admitted: Mapping[str, frozenset[str] | None],
) -> tuple[list[FlowSpec], Labelled]:
    mac = (("eth_src", owner.mac),) if owner.mac else ()
    arp_mac = (("arp_sha", owner.mac), *mac) if owner.mac else ()
    sources = f"{owner.ip}/{owner.mac}" if owner.mac else owner.ip
    spoof = DropLabel("spoof", switch, port, owner.identity, detail=f"not {sources}")
    ip = owner.ip
    passing, guard = acl_cookie(KIND_PASS, ip), acl_cookie(KIND_GUARD, ip)
    ip_in = (("eth_type", ETH_TYPE_IPV4), ("in_port", port))
    arp_in = (("eth_type", ETH_TYPE_ARP), ("in_port", port))
    flows = [
        FlowSpec(TABLE_ACL, PRIORITY_GUARD_PASS, _match(*ip_in, ("ipv4_src", ip), *mac), GOTO_FORWARD, passing),
        FlowSpec(TABLE_ACL, PRIORITY_GUARD_PASS, _match(*arp_in, ("arp_spa", ip), *arp_mac), GOTO_FORWARD, passing),
        FlowSpec(TABLE_ACL, PRIORITY_GUARD_DROP, _match(*ip_in), DROP, guard),
        FlowSpec(TABLE_ACL, PRIORITY_GUARD_DROP, _match(*arp_in), DROP, guard),
    ]
    labelled: Labelled = [(flows[2], spoof), (flows[3], spoof)]
    deny = acl_cookie(KIND_DENY, owner.ip)
    for target in instances:
        allowed = admitted.get(target.service)
        if target.ip == owner.ip or allowed is None or owner.ip in allowed:
            continue
        flow = FlowSpec(TABLE_ACL, PRIORITY_DENY, _tcp_to(port, target, ("ipv4_src", owner.ip)), DROP, deny)
        flows.append(flow)
        detail = f"{switch} port {port} -> {target.ip}:{target.port}"
        labelled.append((flow, DropLabel("deny", switch, port, owner.identity, target.service, detail)))
    return flows, labelled


def _unknown_port(
    switch: str,
    port: int,
    caller: str,
    instances: list[Target],
    admitted: Mapping[str, frozenset[str] | None],
) -> tuple[list[FlowSpec], Labelled]:
    flows: list[FlowSpec] = []
    labelled: Labelled = []
    deny = acl_cookie(KIND_DENY, None)
    for target in instances:
        if admitted.get(target.service) is None:
            continue
        flow = FlowSpec(TABLE_ACL, PRIORITY_DENY, _tcp_to(port, target), DROP, deny)
        flows.append(flow)
        detail = f"{switch} port {port} -> {target.ip}:{target.port}"
        labelled.append((flow, DropLabel("deny", switch, port, caller, target.service, detail)))
    return flows, labelled


def is_acl_key(key: str) -> bool:
    return key.startswith(ENTRY_PREFIX)


def with_acl(compiled: CompiledSwitch, acl: Mapping[str, Entry]) -> tuple[CompiledSwitch, SwitchDelta]:
    """A switch's tables with its ACL entries replaced by ``acl``, and the delta of the ACL entries
    that changed (adds and modifies before deletes, as every delta: make-before-break)."""
    changes: dict[str, Entry | None] = {key: None for key in compiled.entries if is_acl_key(key)}
    changes.update(acl)
    return replace_entries(compiled, changes)


def spoof_message(label: DropLabel, packets: int) -> str:
    """The log line of packets a source guard dropped."""
    where = f"switch {label.switch} port {label.port}"
    return f"{where}: {packets} packets whose source is {label.detail} dropped (spoofing?)"
