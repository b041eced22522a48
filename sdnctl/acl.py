"""The network's policy: source guards and unknown ports' drops in table 0, admission at each
instance's own switch in table 1. Pure.

Authorization is enforced in the network as well as in the sidecars, so a host that bypasses its
sidecar still cannot reach a service's port.

At every edge port (a switch port on no link of the model), in table 0:

- a port with a declared endpoint (a declared host, a compute node) of address X (and MAC M when the
  file declares one) gets a **source guard**: IPv4 from X (and M) and ARP claiming X (from M) go on;
  any other IPv4 or ARP from the port is dropped, so nobody there sends as another endpoint.
- any other edge port (a learned host, nothing known) has no identity, so no grant: a connection
  attempt to every service instance is dropped whatever source address it claims (the drop matches
  the port, not the source), so claiming an admitted endpoint's address there gains nothing. Such
  ports get no guard against declared addresses: it would cost a flow per (port, declared endpoint)
  on every switch, for traffic these drops already refuse.

So every IPv4 packet in the fabric from an edge port carries the address of the endpoint it came from,
and the policy itself is enforced where its traffic ends: **at the switch of the instance's node**, in
the forwarding table above the routes (table 0's guards have vetted the source by then, also a caller's
on that same switch). Per placed instance (node address D, instance port P) whose service's policy does
not admit everyone (``netmodel.authorization``), a connection attempt ``tcp, ipv4_dst=D, tcp_dst=P,
tcp_flags=+syn-ack`` is judged by whichever takes fewer flows:

- one drop per declared endpoint the policy does not admit (``ipv4_src=X``), or
- one way on per declared endpoint it admits (``ipv4_src=X -> output`` the node's port), then one drop
  of every other source
(the first while it refuses at most ``NAMED_DENIALS`` callers, or fewer than it admits plus one, so a
denial names its caller).

This grows with instances x min(callers refused, callers admitted), not with edge ports x instances as a
drop at each caller's first switch did (on benchmarks/scale.py's fabric of 500 switches and 10,000
instances: 20,300 flows against 10.9 million). The price: a refused connection attempt crosses the fabric
before it is dropped, and the drop of "every other source" cannot say which caller it stopped (its
denials are counted as ``unadmitted``).

Only TCP connection attempts (SYN without ACK) to service instances are judged: a caller not
admitted never gets a connection, while connections already established live on (a caller's
instance draining after its node stopped being admitted, a reply whose ephemeral port happens to
equal a service port; the sidecars' RBAC still judges every request). Pings, ARP, LLDP and anything
else keep working. With the fabric's default ``allow`` nothing is dropped by policy (the guards stay).
An instance called from its own node crosses no switch (its sidecar enforces that). Everything is
derived from addresses and ports, so a restarted controller computes the flows a switch already holds;
a move recompiles the admission of the instance's old and new address and port.

Entries: a port's guard is ``acl:<port>``, an unknown port's drop of one instance
``acl:<port>:<address>:<tcp port>``, an instance's admission ``acl:to:<address>:<tcp port>`` (on its
node's switch), so ``compile_acl_incremental`` recompiles and hands over only the entries whose inputs
changed (a placement: the instance's admission, and one drop per unknown port), with exactly
``compile_acl``'s result.

Cookies: ``0xec03 | kind << 40 | caller address`` (0 when the flow names no caller), so a drop's packet
counter names its caller and kind; ``labels`` says which service and which port.
"""

from __future__ import annotations

import gc
import ipaddress
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property, lru_cache
from operator import is_
from typing import overload

from netmodel.authorization import host_identity, service_policy
from netmodel.ids import PortNo, ServiceName, SwitchId
from netmodel.state import FabricState
from sdnctl.flows import (
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    TABLE_ACL,
    TABLE_FORWARD,
    Action,
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
KIND_ADMIT = 4  # an instance's way on for one admitted caller (its counters are not read)
PRIORITY_DENY = 300  # table 0: an unknown port's drop; table 1: an instance's drop (above routes, reservations)
PRIORITY_ADMIT = 310  # table 1: an admitted caller's way on, above the instance's drop of every other source
PRIORITY_GUARD_PASS = 200
PRIORITY_GUARD_DROP = 100
IP_PROTO_TCP = 6
# A TCP connection attempt: SYN set, ACK clear (the ONF extension field of OpenFlow 1.3, value/mask
# as OVS reports it back in flow stats, so the drift check reads what was compiled).
TCP_FLAGS_SYN_ONLY = ("tcp_flags", (0x002, 0x012))
# A switch's ACL entries (acl:<port>[:<ip>:<tcp port>], acl:to:<ip>:<tcp port>), beside its route entries (by IP).
ENTRY_PREFIX = "acl:"
ADMISSION_PREFIX = f"{ENTRY_PREFIX}to:"
NAMED_DENIALS = 64
"""Up to this many callers refused, an instance drops each on its own flow, whose counter names the caller in
the denied-calls view, even where passing the admitted and dropping the rest would take fewer flows (at
most this many flows more per instance; none on benchmarks/scale.py's fabrics, whose services refuse either
a few callers or nearly all)."""
UNADMITTED = "unadmitted"
"""The caller of a denial counted by an instance's drop of every source it does not admit (it has no source)."""
GOTO_FORWARD = (("goto", TABLE_FORWARD),)
DROP: tuple[tuple[str, int], ...] = ()


@lru_cache(maxsize=65536)  # called once per drop flow with few distinct callers; parsing is the cost
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


@dataclass(frozen=True, slots=True)
class PortContext:
    """What an edge port's ACL depends on besides the targets: the switch's name, the declared
    endpoint there (None: no identity) and, for a port without one, how its caller is named."""

    switch: str
    owner: PortOwner | None
    caller: str


@dataclass(frozen=True, eq=False)
class AclBasis:
    """The inputs of the ACL, small (edge ports + instances + services), kept beside the tables so the
    next compile changes only the entries of ports and instances whose inputs differ."""

    ports: Mapping[tuple[SwitchId, PortNo], PortContext]
    targets: Mapping[tuple[str, int], Target]
    admitted: Mapping[str, frozenset[str] | None]  # service -> source addresses; None: everyone
    # The model's maps (and trust domain) ``targets`` and ``admitted`` were derived from: a later basis
    # whose state still holds these very objects (a port or switch change) reuses both as they are.
    sources: tuple[object, ...] = ()

    @cached_property
    def located(self) -> Mapping[str, tuple[SwitchId, PortNo]]:
        """Each declared endpoint's address -> its edge port (the first, should two claim one address)."""
        out: dict[str, tuple[SwitchId, PortNo]] = {}
        for where, context in sorted(self.ports.items()):
            if context.owner is not None:
                out.setdefault(context.owner.ip, where)
        return out

    @cached_property
    def unknown_ports(self) -> tuple[tuple[SwitchId, PortNo], ...]:
        """The edge ports without a declared endpoint: the only ones with drops in table 0."""
        return tuple(where for where, context in self.ports.items() if context.owner is None)

    @cached_property
    def _callers(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]] | None]:
        return {}

    def callers(self, service: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """The declared endpoints' addresses ``service`` does not admit and those it admits (sorted), or
        None when it admits everyone."""
        cache = self._callers
        if service not in cache:
            allowed = self.admitted.get(service)
            cache[service] = (
                None
                if allowed is None
                else (
                    tuple(sorted(ip for ip in self.located if ip not in allowed)),
                    tuple(sorted(ip for ip in self.located if ip in allowed)),
                )
            )
        return cache[service]


LabelKey = tuple[SwitchId, tuple[int, int, tuple[MatchField, ...]]]
"""A drop flow's place: its switch and its key (table, priority, match)."""


@dataclass(frozen=True, eq=False)
class AclTables:
    """Per switch, its ACL entries (``acl:<port>``: the guard; ``acl:<port>:<address>:<tcp port>``:
    one policy drop) -> flows, and what they were compiled from; ``labels`` says what each drop flow's
    counter means."""

    entries: Mapping[SwitchId, Mapping[str, Entry]]
    basis: AclBasis | None = None

    def flows(self, switch: SwitchId) -> list[FlowSpec]:
        return sorted(f for flows, _ in self.entries.get(switch, {}).values() for f in flows)

    @cached_property
    def labels(self) -> Mapping[LabelKey, DropLabel]:
        """(switch, flow key) -> what the drop flow's packets mean, for every drop flow of the tables."""
        return DropLabels(self.entries, self.basis)


class DropLabels(Mapping[LabelKey, DropLabel]):
    """The drop flows' labels, made when asked for from the flow's match and the basis: held beside
    every flow they cost ~300 bytes a flow (a label, its detail text, a key tuple and a dict slot), a
    third of the ACL's memory, for the few flows whose counters ever move."""

    def __init__(self, entries: Mapping[SwitchId, Mapping[str, Entry]], basis: AclBasis | None) -> None:
        self._entries = entries
        self._basis = basis

    def __getitem__(self, item: LabelKey) -> DropLabel:
        dpid, (table, priority, match) = item
        basis = self._basis
        if basis is None or priority not in (PRIORITY_DENY, PRIORITY_GUARD_DROP):
            raise KeyError(item)
        if table == TABLE_FORWARD and priority == PRIORITY_DENY:
            return self._admission_drop(item)
        if table != TABLE_ACL:
            raise KeyError(item)
        fields = dict(match)
        port = fields.get("in_port")
        context = basis.ports.get((dpid, PortNo(port))) if isinstance(port, int) else None
        if context is None or not isinstance(port, int):
            raise KeyError(item)
        switch_entries = self._entries.get(dpid, {})
        if priority == PRIORITY_DENY:
            target = _target_of(basis, fields)
            entry = switch_entries.get(deny_key(port, target.ip, target.port)) if target is not None else None
            if target is None or entry is None or entry[0][0].match != match:
                raise KeyError(item)
            return _deny_label(port, context, target)
        entry = switch_entries.get(guard_key(port))
        if entry is None or not any(f.priority == priority and f.match == match for f in entry[0]):
            raise KeyError(item)
        return _spoof_label(port, context)

    def _admission_drop(self, item: LabelKey) -> DropLabel:
        """An instance's drop at its own switch: of one caller (named by its source), or of every source
        the policy does not admit."""
        dpid, (_table, _priority, match) = item
        basis = self._basis
        assert basis is not None
        fields = dict(match)
        target = _target_of(basis, fields)
        entry = self._entries.get(dpid, {}).get(admission_key(target.ip, target.port)) if target is not None else None
        if target is None or entry is None or not any(f.match == match for f in entry[0]):
            raise KeyError(item)
        source = fields.get("ipv4_src")
        where = basis.located.get(source) if isinstance(source, str) else None
        if where is not None:
            return _deny_label(where[1], basis.ports[where], target)
        switch, port = basis.located[target.ip]
        name = basis.ports[(switch, port)].switch
        detail = f"{name} port {port} <- a caller not admitted -> {target.ip}:{target.port}"
        return DropLabel("deny", name, port, UNADMITTED, target.service, detail)

    def __iter__(self) -> Iterator[LabelKey]:
        if self._basis is None:
            return
        for dpid, entries in self._entries.items():
            for flows, _ in entries.values():
                for flow in flows:
                    if _is_drop(flow):
                        yield dpid, flow.key

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _is_drop(flow: FlowSpec) -> bool:
    """A flow whose counter is read: a guard's or an unknown port's drop (table 0), an instance's drop."""
    if flow.table == TABLE_ACL:
        return flow.priority in (PRIORITY_DENY, PRIORITY_GUARD_DROP)
    return flow.table == TABLE_FORWARD and flow.priority == PRIORITY_DENY


def _target_of(basis: AclBasis, fields: Mapping[str, object]) -> Target | None:
    ip, tcp_port = fields.get("ipv4_dst"), fields.get("tcp_dst")
    return basis.targets.get((ip, tcp_port)) if isinstance(ip, str) and isinstance(tcp_port, int) else None


EMPTY = AclTables({})
AclChanges = Mapping[SwitchId, Mapping[str, Entry | None]]
"""Per switch, the ACL entries that changed (None: removed), as ``replace_entries`` takes them."""


def acl_inputs(state: FabricState) -> tuple[object, ...]:
    """What the ACL depends on; the same objects (``is``) mean the same ACL (the model shares
    unchanged parts between generations), so a link event or a latency change recompiles nothing."""
    topo = state.topology
    return (state.hosts, state.nodes, state.workloads, state.services, state.default_policy, topo.switches, topo.graph)


def same_inputs(a: tuple[object, ...] | None, b: tuple[object, ...]) -> bool:
    return a is not None and len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def same_basis(a: AclBasis, b: AclBasis) -> bool:
    """Two states whose ACL inputs are equal by value (a desired-state document builds new maps even
    where nothing the ACL reads changed): the same ACL, without compiling either."""
    return a.ports == b.ports and a.targets == b.targets and a.admitted == b.admitted


def targets(state: FabricState) -> list[Target]:
    """Every placed instance of a declared service on a node with an address, once per (address, port)."""
    return list(_targets(state).values())


def _targets(state: FabricState) -> dict[tuple[str, int], Target]:
    seen: dict[tuple[str, int], Target] = {}
    for workload in sorted(state.workloads.values(), key=lambda w: w.id):
        if workload.node is None or workload.port <= 0 or workload.service not in state.services:
            continue
        node = state.nodes.get(workload.node)
        if node is None or not node.ip:
            continue
        seen.setdefault((node.ip, workload.port), Target(node.ip, workload.port, workload.service))
    return {k: seen[k] for k in sorted(seen)}


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


def acl_basis(state: FabricState, trust_domain: str, previous: AclBasis | None = None) -> AclBasis:
    """What the ACL of ``state`` is compiled from: O(ports + hosts + nodes + workloads x rules); with
    ``previous`` (an earlier state's), the instances and admitted sources are taken over when the maps
    they come from are the same objects (a switch or port change: O(ports + hosts + nodes))."""
    owners = _owners(state, trust_domain)
    sources = (state.hosts, state.nodes, state.workloads, state.services, state.default_policy, trust_domain)
    instances: Mapping[tuple[str, int], Target]
    admitted: Mapping[str, frozenset[str] | None]
    if previous is not None and len(previous.sources) == len(sources) and all(map(is_, sources, previous.sources)):
        instances, admitted = previous.targets, previous.admitted
    else:
        instances = _targets(state)
        admitted = {}
        for target in instances.values():
            if target.service not in admitted:
                policy = service_policy(state, ServiceName(target.service), trust_domain)
                admitted[target.service] = None if policy.allows_everyone else policy.source_ips()
    learned = {
        (h.attachment.switch, h.attachment.port): h.ip
        for h in state.hosts.values()
        if not h.declared and h.ip and h.attachment is not None
    }
    ports: dict[tuple[SwitchId, PortNo], PortContext] = {}
    for dpid, port in edge_ports(state):
        name = state.topology.switches[dpid].name
        owner = owners.get((dpid, port))
        caller = owner.identity if owner is not None else learned.get((dpid, port)) or f"{name} port {port}"
        ports[(dpid, port)] = PortContext(name, owner, caller)
    return AclBasis(ports, instances, admitted, sources)


def guard_key(port: int) -> str:
    return f"{ENTRY_PREFIX}{port}"


@lru_cache(maxsize=1 << 17)
def deny_key(port: int, target_ip: str, target_port: int) -> str:
    # Cached: the same port number denied the same instance on many switches holds one string, not one
    # per switch (~70 bytes a policy drop).
    return f"{ENTRY_PREFIX}{port}:{target_ip}:{target_port}"


def admission_key(target_ip: str, target_port: int) -> str:
    return f"{ADMISSION_PREFIX}{target_ip}:{target_port}"


def compile_acl(state: FabricState, trust_domain: str) -> AclTables:
    """Every connected switch's ACL entries for ``state`` (see the module's doc)."""
    return _compile_from(acl_basis(state, trust_domain))


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cycle collector off while the ACL's hundreds of thousands of acyclic tuples are built: each
    collection would walk the whole (growing) heap, which tripled a full compile's time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _port_entries(
    port: int, context: PortContext, instances: Iterable[Target], basis: AclBasis
) -> Iterator[tuple[str, Entry]]:
    guard = _guard(port, context)
    if guard:
        yield guard_key(port), (guard, None)
    if context.owner is not None:
        return
    for target in instances:
        deny = _deny(port, target, basis.admitted)
        if deny is not None:
            yield deny_key(port, target.ip, target.port), ((deny,), None)


def compile_acl_incremental(previous: AclTables, state: FabricState, trust_domain: str) -> tuple[AclTables, AclChanges]:
    """The ACL of ``state`` (exactly ``compile_acl``'s), computed from ``previous`` by recompiling only
    the entries whose inputs changed: every entry of a port whose context changed (an endpoint
    added, removed or readdressed, a switch connected or renamed, a link making it an edge port or
    not), every instance's admission when the declared endpoints or their ports changed, and otherwise
    the admission of each instance added, removed or whose service's admitted sources changed, and its
    drop at each unknown port. So a placement costs O(unknown ports + the instance's callers), not
    O(edge ports x instances). Also the changed entries per switch."""
    new = acl_basis(state, trust_domain, previous.basis)
    if previous.basis is None:
        return _full_changes(previous, _compile_from(new))
    with _collector_paused():  # copies of large dicts: a collection would walk the whole heap
        return _apply_changed_inputs(previous, previous.basis, new)


def _apply_changed_inputs(previous: AclTables, old: AclBasis, new: AclBasis) -> tuple[AclTables, AclChanges]:
    changed_targets = (
        []
        if old.targets is new.targets and old.admitted is new.admitted  # taken over whole: nothing to compare
        else [
            key
            for key in old.targets.keys() | new.targets.keys()
            if _target_inputs(old, key) != _target_inputs(new, key)
        ]
    )
    changed_ports = {p for p in old.ports.keys() | new.ports.keys() if old.ports.get(p) != new.ports.get(p)}
    entries: dict[SwitchId, Mapping[str, Entry]] = dict(previous.entries)
    copied: dict[SwitchId, dict[str, Entry]] = {}
    changes: dict[SwitchId, dict[str, Entry | None]] = {}

    def switch_entries(dpid: SwitchId) -> dict[str, Entry]:
        if dpid not in copied:
            copied[dpid] = dict(entries.get(dpid, {}))
            entries[dpid] = copied[dpid]
        return copied[dpid]

    def remove(dpid: SwitchId, key: str) -> None:
        if key in entries.get(dpid, {}) and switch_entries(dpid).pop(key, None) is not None:
            changes.setdefault(dpid, {})[key] = None

    def put(dpid: SwitchId, key: str, entry: Entry) -> None:
        mine = switch_entries(dpid)
        if mine.get(key) != entry:
            changes.setdefault(dpid, {})[key] = entry
        mine[key] = entry

    for dpid, port in sorted(changed_ports):
        context = new.ports.get((dpid, port))
        port_entries = dict(_port_entries(port, context, new.targets.values(), new)) if context is not None else {}
        if (dpid, port) in old.ports:
            for key in [guard_key(port), *(deny_key(port, ip, tcp_port) for ip, tcp_port in old.targets)]:
                if key not in port_entries:
                    remove(dpid, key)
        for key, entry in port_entries.items():
            put(dpid, key, entry)
    for dpid, port in new.unknown_ports:
        if (dpid, port) in changed_ports:
            continue
        for ip, tcp_port in changed_targets:
            target = new.targets.get((ip, tcp_port))
            deny = _deny(port, target, new.admitted) if target is not None else None
            if deny is not None:
                put(dpid, deny_key(port, ip, tcp_port), ((deny,), None))
            else:
                remove(dpid, deny_key(port, ip, tcp_port))
    # Admissions: all of them when a declared endpoint came, went or moved (each one's callers are the
    # declared endpoints, and its place is its node's port), else those of the changed instances.
    every = old.located != new.located
    for ip, tcp_port in sorted(old.targets.keys() | new.targets.keys()) if every else changed_targets:
        key = admission_key(ip, tcp_port)
        before = old.located.get(ip) if (ip, tcp_port) in old.targets else None
        target = new.targets.get((ip, tcp_port))
        admission = _admission(target, new) if target is not None else None
        if before is not None and (admission is None or admission[0] != before[0]):
            remove(before[0], key)
        if admission is not None:
            put(admission[0], key, (admission[1], None))
    tables = AclTables({dpid: e for dpid, e in entries.items() if e}, new)
    return tables, changes


def _target_inputs(basis: AclBasis, key: tuple[str, int]) -> tuple[Target, frozenset[str] | None] | None:
    target = basis.targets.get(key)
    return None if target is None else (target, basis.admitted.get(target.service))


def _compile_from(basis: AclBasis) -> AclTables:
    entries: dict[SwitchId, dict[str, Entry]] = {}
    instances = list(basis.targets.values())
    with _collector_paused():
        _compile_ports(basis, instances, entries)
    return AclTables({dpid: e for dpid, e in entries.items() if e}, basis)


def _compile_ports(basis: AclBasis, instances: list[Target], entries: dict[SwitchId, dict[str, Entry]]) -> None:
    for (dpid, port), context in basis.ports.items():
        guard = _guard(port, context)
        if guard:
            entries.setdefault(dpid, {})[guard_key(port)] = (guard, None)
    for dpid, port in basis.unknown_ports:
        switch_entries = entries.setdefault(dpid, {})
        for target in instances:
            deny = _deny(port, target, basis.admitted)
            if deny is not None:
                switch_entries[deny_key(port, target.ip, target.port)] = ((deny,), None)
    for target in instances:
        admission = _admission(target, basis)
        if admission is not None:
            entries.setdefault(admission[0], {})[admission_key(target.ip, target.port)] = (admission[1], None)


def _full_changes(previous: AclTables, tables: AclTables) -> tuple[AclTables, AclChanges]:
    changes: dict[SwitchId, dict[str, Entry | None]] = {}
    for dpid in previous.entries.keys() | tables.entries.keys():
        before, after = previous.entries.get(dpid, {}), tables.entries.get(dpid, {})
        diff: dict[str, Entry | None] = {key: None for key in before if key not in after}
        diff.update((key, entry) for key, entry in after.items() if before.get(key) != entry)
        if diff:
            changes[dpid] = diff
    return tables, changes


def _match(*pairs: MatchField) -> tuple[MatchField, ...]:
    return tuple(sorted(pairs))


ETH_IPV4 = ("eth_type", ETH_TYPE_IPV4)
ETH_ARP = ("eth_type", ETH_TYPE_ARP)
PROTO_TCP = ("ip_proto", IP_PROTO_TCP)


@lru_cache(maxsize=1 << 16)
def _field(name: str, value: str | int) -> MatchField:
    """One match field, shared by every flow that matches it: a policy drop's seven fields are the same
    few ports and addresses over and over, and each pair held once per flow was ~280 bytes a flow."""
    return (name, value)


def _tcp_to(port: int, target: Target) -> tuple[MatchField, ...]:
    """A connection attempt to ``target`` coming in at ``port``, whatever its source."""
    return _match(
        ETH_IPV4,
        _field("in_port", port),
        PROTO_TCP,
        _field("ipv4_dst", target.ip),
        _field("tcp_dst", target.port),
        TCP_FLAGS_SYN_ONLY,
    )


def _syn_to(target: Target, source_ip: str | None) -> tuple[MatchField, ...]:
    """A connection attempt to ``target`` (from ``source_ip``, or from anyone), wherever it came in.
    Written in field-name order, as ``_match`` sorts (an instance's admission makes these each time it is
    read: no sort)."""
    dst, port = _field("ipv4_dst", target.ip), _field("tcp_dst", target.port)
    if source_ip is None:
        return (ETH_IPV4, PROTO_TCP, dst, port, TCP_FLAGS_SYN_ONLY)
    return (ETH_IPV4, PROTO_TCP, dst, _field("ipv4_src", source_ip), port, TCP_FLAGS_SYN_ONLY)


def _guard(port: int, context: PortContext) -> tuple[FlowSpec, ...]:
    """The port's source guard: its own address (and MAC) go on, any other is dropped. A port without
    a declared endpoint has none (see the module's doc)."""
    owner = context.owner
    if owner is None:
        return ()
    mac = (("eth_src", owner.mac),) if owner.mac else ()
    arp_mac = (("arp_sha", owner.mac), *mac) if owner.mac else ()
    ip = owner.ip
    passing, guard = acl_cookie(KIND_PASS, ip), acl_cookie(KIND_GUARD, ip)
    ip_in = (ETH_IPV4, _field("in_port", port))
    arp_in = (ETH_ARP, _field("in_port", port))
    return tuple(
        sorted(
            (
                FlowSpec(TABLE_ACL, PRIORITY_GUARD_PASS, _match(*ip_in, ("ipv4_src", ip), *mac), GOTO_FORWARD, passing),
                FlowSpec(
                    TABLE_ACL, PRIORITY_GUARD_PASS, _match(*arp_in, ("arp_spa", ip), *arp_mac), GOTO_FORWARD, passing
                ),
                FlowSpec(TABLE_ACL, PRIORITY_GUARD_DROP, _match(*ip_in), DROP, guard),
                FlowSpec(TABLE_ACL, PRIORITY_GUARD_DROP, _match(*arp_in), DROP, guard),
            )
        )
    )


def _spoof_label(port: int, context: PortContext) -> DropLabel:
    """What the guard's drops at ``port`` mean (the pass flows have none: their counters are not read)."""
    owner = context.owner
    assert owner is not None  # (only a port with an owner has a guard)
    sources = f"{owner.ip}/{owner.mac}" if owner.mac else owner.ip
    return DropLabel("spoof", context.switch, port, owner.identity, detail=f"not {sources}")


def _deny(port: int, target: Target, admitted: Mapping[str, frozenset[str] | None]) -> FlowSpec | None:
    """An unknown port's drop of connection attempts to ``target``, or None when its service admits
    everyone (a declared endpoint's calls are judged at the instance's switch: ``_admission``)."""
    if admitted.get(target.service) is None:
        return None
    return FlowSpec(TABLE_ACL, PRIORITY_DENY, _tcp_to(port, target), DROP, acl_cookie(KIND_DENY, None))


def _admission(target: Target, basis: AclBasis) -> tuple[SwitchId, Admission] | None:
    """Where ``target``'s connection attempts are judged (its node's switch) and the flows that judge them
    (see the module's doc), or None when it has no declared node port or admits every caller."""
    at = basis.located.get(target.ip)
    callers = basis.callers(target.service)
    if at is None or callers is None:
        return None
    denied, admitted = callers
    own_admitted = target.ip in (basis.admitted.get(target.service) or ())  # its own node: crosses no switch
    refused = len(denied) - (not own_admitted)
    if refused <= max(len(admitted) - own_admitted + 1, NAMED_DENIALS):
        flows = Admission(target, denied, None)
    else:
        flows = Admission(target, admitted, _output(at[1]))
    return (at[0], flows) if len(flows) else None


class Admission(Sequence[FlowSpec]):
    """An instance's admission flows, made each time they are read: a drop per source of ``sources``
    (``on`` None), or a way on (``on``) per source and one drop of every other; the instance's own
    address is never a source (its own node's calls cross no switch).

    The callers are the service's (one tuple shared by all its instances), so an instance holds a few
    references, not its flows: held as FlowSpecs and match tuples they were ~290 bytes a flow (at 100
    switches and 2,000 instances called by 100 each, 435 MB at rest against 378 now; 10,000 instances make
    ~1.0 million). Equal when made from the same target, sources and action; also equal to the tuple of
    the flows it makes."""

    __slots__ = ("_length", "_on", "_sources", "_target")

    def __init__(self, target: Target, sources: tuple[str, ...], on: tuple[Action, ...] | None) -> None:
        self._target = target
        self._sources = sources
        self._on = on
        self._length = len(sources) - (target.ip in sources) + (on is not None)

    def flows(self) -> tuple[FlowSpec, ...]:
        target, on = self._target, self._on
        if on is None:
            return tuple(
                FlowSpec(TABLE_FORWARD, PRIORITY_DENY, _syn_to(target, ip), DROP, acl_cookie(KIND_DENY, ip))
                for ip in self._sources
                if ip != target.ip
            )
        return (
            *(
                FlowSpec(TABLE_FORWARD, PRIORITY_ADMIT, _syn_to(target, ip), on, acl_cookie(KIND_ADMIT, ip))
                for ip in self._sources
                if ip != target.ip
            ),
            FlowSpec(TABLE_FORWARD, PRIORITY_DENY, _syn_to(target, None), DROP, acl_cookie(KIND_DENY, None)),
        )

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[FlowSpec]:
        return iter(self.flows())

    @overload
    def __getitem__(self, index: int) -> FlowSpec: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[FlowSpec, ...]: ...

    def __getitem__(self, index: int | slice) -> FlowSpec | tuple[FlowSpec, ...]:
        return self.flows()[index]

    def _made_from(self) -> tuple[object, ...]:
        return (self._target, self._sources, self._on)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Admission):
            return self._made_from() == other._made_from() or self.flows() == other.flows()
        if isinstance(other, tuple):
            return self.flows() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.flows())

    def __repr__(self) -> str:
        kind = "drops" if self._on is None else "admits"
        return f"Admission({self._target.ip}:{self._target.port}, {kind} {len(self._sources)} sources)"


@lru_cache(maxsize=4096)
def _output(port: int) -> tuple[tuple[str, int], ...]:
    return (("output", port),)


def _deny_label(port: int, context: PortContext, target: Target) -> DropLabel:
    """What the policy drop of ``port`` to ``target`` means."""
    detail = f"{context.switch} port {port} -> {target.ip}:{target.port}"
    return DropLabel("deny", context.switch, port, context.caller, target.service, detail)


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
