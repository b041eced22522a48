"""Flow compilation and diffing: route plan in, per-switch flows and groups out. Pure.

Every switch gets the same base flows (LLDP to the controller for discovery; any other ARP to the
controller, which answers it as a proxy) and two flows per destination endpoint:
``ipv4_dst=<ip> -> group <ip>``, where the group is a fast-failover group of the primary and backup
next hops (``-> output <port>`` on the endpoint's own switch), and ``arp_tpa=<ip>`` -> the same
group, plus a copy to the controller (which learns hosts from it). ARP for a known address is thus
routed like unicast, straight to its owner: nothing is ever flooded, so loops cannot storm, and
address resolution keeps working while the controller restarts. Group ids and cookies derive from
the endpoint's address, so they are stable across controller restarts: reconciliation after a
restart finds the same names on the switch and changes nothing.

Two tables: table 0 is the ingress policy (LLDP to the controller, and the source guards and unknown
ports' drops of ``sdnctl.acl``), whose lowest flow goes on to table 1, forwarding (everything above, and
above the routes each instance's admission of TCP connection attempts, also ``sdnctl.acl``'s).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from itertools import groupby
from operator import attrgetter, itemgetter
from typing import Any, TypeVar, cast

import numpy as np

from netmodel.ids import PortNo, SwitchId
from netmodel.types import LinkId
from sdnctl.entry_map import MISSING, layers, with_changes
from sdnctl.pathing import NO_LINK, Endpoint, RoutePlan

TABLE_ACL = 0  # ingress policy: LLDP to the controller, source guards and policy drops (sdnctl/acl.py)
TABLE_FORWARD = 1  # forwarding: routes, ARP routing, proxy ARP; above the routes, instances' admission (acl)
TABLE = TABLE_FORWARD  # the table of the route flows
PRIORITY_CONTROL = 1000
PRIORITY_ROUTE = 100
PRIORITY_ARP_PROXY = 10
OFPG_MAX = 0xFFFFFF00
ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_LLDP = 0x88CC

COOKIE_MASK = 0xFFFF_0000_0000_0000
COOKIE_ROUTE = 0xEC00_0000_0000_0000  # | destination IPv4 address
COOKIE_BASE = 0xEC01_0000_0000_0000  # | kind of control flow
COOKIE_ARP = 0xEC02_0000_0000_0000  # | target IPv4 address
COOKIE_LLDP = COOKIE_BASE | 1
COOKIE_ARP_PROXY = COOKIE_BASE | 2
COOKIE_TO_FORWARD = COOKIE_BASE | 3
EDGECTL_COOKIE_MASK = 0xFF00_0000_0000_0000
EDGECTL_COOKIE = 0xEC00_0000_0000_0000  # every flow edgectl owns: reconciliation leaves others alone

Action = tuple[str, int]
# ("meter", meter_id) (always first) | ("output", port) | ("group", group_id) | ("controller", max_len)
# | ("goto", table). A flow without actions (or with only a meter) drops what it matches.
MatchField = tuple[str, Any]


@dataclass(frozen=True, slots=True, order=True)
class FlowSpec:
    table: int
    priority: int
    match: tuple[MatchField, ...]  # sorted (field, value) pairs, os-ken OFPMatch names
    actions: tuple[Action, ...]
    cookie: int

    @property
    def key(self) -> tuple[int, int, tuple[MatchField, ...]]:
        """What identifies a flow entry in OpenFlow: table, priority and match."""
        return (self.table, self.priority, self.match)


@dataclass(frozen=True, slots=True, order=True)
class GroupSpec:
    """A fast-failover group: the first bucket whose watch port is live forwards."""

    group_id: int
    buckets: tuple[PortNo, ...]  # each bucket watches and outputs to the same port


@dataclass(frozen=True, slots=True, order=True)
class MeterSpec:
    """An OpenFlow 1.3 meter of one DROP band: rate in kbit/s, burst in kbit (flags KBPS | BURST)."""

    meter_id: int
    rate_kbps: int
    burst_kb: int


@dataclass(frozen=True, slots=True)
class SwitchConfig:
    flows: frozenset[FlowSpec] = frozenset()
    groups: frozenset[GroupSpec] = frozenset()
    meters: frozenset[MeterSpec] = frozenset()


@dataclass(frozen=True, slots=True)
class SwitchDelta:
    """What to send, in this order: meters add/modify, groups add/modify, flows add/modify, barrier,
    flows delete, groups delete, meters delete (a group or meter is removed only after no flow points
    at it; a flow is added only after the meter it uses)."""

    add_groups: tuple[GroupSpec, ...] = ()
    modify_groups: tuple[GroupSpec, ...] = ()
    add_flows: tuple[FlowSpec, ...] = ()
    modify_flows: tuple[FlowSpec, ...] = ()
    delete_flows: tuple[FlowSpec, ...] = ()
    delete_groups: tuple[GroupSpec, ...] = ()
    add_meters: tuple[MeterSpec, ...] = ()
    modify_meters: tuple[MeterSpec, ...] = ()
    delete_meters: tuple[MeterSpec, ...] = ()

    def _parts(self) -> tuple[tuple[object, ...], ...]:
        return (
            self.add_meters,
            self.modify_meters,
            self.add_groups,
            self.modify_groups,
            self.add_flows,
            self.modify_flows,
            self.delete_flows,
            self.delete_groups,
            self.delete_meters,
        )

    def __bool__(self) -> bool:
        return any(self._parts())

    @property
    def size(self) -> int:
        return sum(len(x) for x in self._parts())

    @property
    def breaks(self) -> bool:
        """Whether it has a second phase (deletions, sent after the first is confirmed)."""
        return bool(self.delete_flows or self.delete_groups or self.delete_meters)


@dataclass(frozen=True, slots=True)
class Addresses:
    cookie: int
    arp_cookie: int
    group_id: int


def addresses_of(endpoint: Endpoint) -> Addresses:
    return _addresses(endpoint.ip)


@lru_cache(maxsize=1 << 16)
def _addresses(ip_text: str) -> Addresses:
    # Cached: parsing the address was a quarter of a 500-switch recompute.
    ip = int(ipaddress.IPv4Address(ip_text))
    group_id = ip if ip < OFPG_MAX else ip & 0x7FFF_FFFF
    return Addresses(cookie=COOKIE_ROUTE | ip, arp_cookie=COOKIE_ARP | ip, group_id=group_id)


def base_flows() -> frozenset[FlowSpec]:
    """LLDP to the controller first of all (discovery, loop probes: untouched by any policy), then
    everything else on to the forwarding table, where any ARP no route takes goes to the controller."""
    to_controller = (("controller", 0xFFFF),)
    return frozenset(
        {
            FlowSpec(TABLE_ACL, PRIORITY_CONTROL, (("eth_type", ETH_TYPE_LLDP),), to_controller, COOKIE_LLDP),
            FlowSpec(TABLE_ACL, 0, (), (("goto", TABLE_FORWARD),), COOKIE_TO_FORWARD),
            FlowSpec(TABLE, PRIORITY_ARP_PROXY, (("eth_type", ETH_TYPE_ARP),), to_controller, COOKIE_ARP_PROXY),
        }
    )


_BASE = base_flows()


def compile_entry(
    plan: RoutePlan, switch: SwitchId, endpoint: Endpoint
) -> tuple[tuple[FlowSpec, ...], GroupSpec | None]:
    """The flows (IPv4 and ARP) and the group that take packets for ``endpoint`` out of ``switch``."""
    if endpoint.attachment.switch == switch:
        return _flows_to(endpoint.ip, ("output", endpoint.attachment.port)), None
    return _entry_via(endpoint, *plan.next_hop(switch, endpoint.attachment.switch))


def _entry_via(
    endpoint: Endpoint, primary: LinkId | None, backup: LinkId | None
) -> tuple[tuple[FlowSpec, ...], GroupSpec | None]:
    """``compile_entry`` away from the endpoint's own switch, given the switch's next hops to it."""
    if primary is None:
        return (), None  # unreachable from here: no flow, the table miss drops the packet
    ports = (primary.src_port,) if backup is None else (primary.src_port, backup.src_port)
    return _via_entry(endpoint.ip, ports)


@lru_cache(maxsize=1 << 17)
def _via_entry(ip: str, ports: tuple[PortNo, ...]) -> tuple[tuple[FlowSpec, ...], GroupSpec]:
    """The entry for ``ip`` through its group over ``ports``. Cached, so that the switches whose next
    hops to ``ip`` leave by the same port numbers share one entry: the scale benchmark's 551,395 route
    entries (a tuple, a GroupSpec and its buckets each, ~150 bytes) are 10,984 distinct ones."""
    flows, group_id = _via_group(ip)
    return flows, GroupSpec(group_id, ports)


@lru_cache(maxsize=1 << 16)
def _via_group(ip: str) -> tuple[tuple[FlowSpec, ...], int]:
    """The flows for ``ip`` through its group, and the group's id: one cache lookup per entry."""
    group_id = _addresses(ip).group_id
    return _flows_to(ip, ("group", group_id)), group_id


@lru_cache(maxsize=1 << 16)
def _flows_to(ip: str, forward: Action) -> tuple[FlowSpec, ...]:
    """The IPv4 and ARP flows for ``ip`` ending in ``forward``. Cached: away from the endpoint's own
    switch they depend on the address alone (the group carries the next hops), so a recompile after
    a link event makes only new groups."""
    names = _addresses(ip)
    ip_match = (("eth_type", ETH_TYPE_IPV4), ("ipv4_dst", ip))
    arp_match = (("arp_tpa", ip), ("eth_type", ETH_TYPE_ARP))
    return (
        FlowSpec(TABLE, PRIORITY_ROUTE, ip_match, (forward,), names.cookie),
        FlowSpec(TABLE, PRIORITY_ROUTE, arp_match, (forward, ("controller", 0xFFFF)), names.arp_cookie),
    )


Entry = tuple[Sequence[FlowSpec], GroupSpec | None]
"""An entry's flows (a tuple, or flows made when read, as ``sdnctl.acl.Admission``) and its group."""
BASE_KEY = ""  # the entry that holds the base flows; every other key is an endpoint's IP


@dataclass(frozen=True, eq=False)
class CompiledSwitch:
    """A switch's desired tables as entries per endpoint IP: the form that updates cheaply.

    After a link event only a few entries change; a new CompiledSwitch shares the rest (one C-level
    dict copy) instead of rebuilding sets of every flow, and the delta comes from the changed
    entries alone (``recompile_switches``). ``config`` is the flat view, for full diffs.
    """

    entries: Mapping[str, Entry]
    meters: frozenset[MeterSpec] = frozenset()
    policed: Mapping[PortNo, int] = field(default_factory=dict)
    """Best-effort meter per port (``sdnctl.meters``): route entries whose primary next hop leaves by
    such a port carry that meter (``police``), also when they are recompiled."""

    @property
    def config(self) -> SwitchConfig:
        """Built on each call, not kept: at 500 switches the kept sets were 126 MB, read only by the
        drift check's turn on each switch and a metrics scrape that needed just their sizes."""
        flows = frozenset(f for entry_flows, _ in self.entries.values() for f in entry_flows)
        groups = frozenset(g for _, g in self.entries.values() if g is not None)
        return SwitchConfig(flows, groups, self.meters)

    @cached_property
    def counts(self) -> tuple[int, int]:
        """How many flows and groups ``config`` holds (no flow is in two entries: each has its own
        match), without building it."""
        flows = groups = 0
        for entry_flows, group in self.entries.values():
            flows += len(entry_flows)
            groups += group is not None
        return flows, groups

    def with_entries(self, entries: Mapping[str, Entry]) -> CompiledSwitch:
        return CompiledSwitch(entries, self.meters, self.policed)


def primary_port(entry: Entry) -> PortNo | None:
    """The port a route entry's IPv4 traffic leaves by while its primary next hop is up."""
    flows, group = entry
    if group is not None:
        return group.buckets[0] if group.buckets else None
    for flow in flows:
        if flow.cookie & COOKIE_MASK == COOKIE_ROUTE:
            for kind, value in flow.actions:
                if kind == "output":
                    return PortNo(value)
    return None


def police(entry: Entry, policed: Mapping[PortNo, int]) -> Entry:
    """A route entry with its IPv4 flow metered by the best-effort meter of its primary port (if that
    port is policed) and by no other meter. Only the IPv4 route flow: ARP is not policed."""
    flows, group = entry
    if not policed and not any(a[0] == "meter" for f in flows for a in f.actions):
        return entry
    meter = policed.get(port) if (port := primary_port(entry)) is not None else None
    out = []
    for flow in flows:
        if flow.cookie & COOKIE_MASK == COOKIE_ROUTE:
            actions = tuple(a for a in flow.actions if a[0] != "meter")
            if meter is not None:
                actions = (("meter", meter), *actions)
            if actions != flow.actions:
                flow = FlowSpec(flow.table, flow.priority, flow.match, actions, flow.cookie)
        out.append(flow)
    return (tuple(out), group)


def compile_compiled(plan: RoutePlan, switch: SwitchId) -> CompiledSwitch:
    entries: dict[str, Entry] = {BASE_KEY: (tuple(sorted(_BASE)), None)}
    for endpoint in plan.endpoints.values():
        entries[endpoint.ip] = compile_entry(plan, switch, endpoint)
    return CompiledSwitch(entries)


def compile_switch(plan: RoutePlan, switch: SwitchId) -> SwitchConfig:
    return compile_compiled(plan, switch).config


def compile_all(plan: RoutePlan) -> dict[SwitchId, CompiledSwitch]:
    return {switch: compile_compiled(plan, switch) for switch in plan.switches}


def compile_flows(plan: RoutePlan) -> dict[SwitchId, SwitchConfig]:
    return {switch: compiled.config for switch, compiled in compile_all(plan).items()}


def recompile_switches(
    plan: RoutePlan,
    current: Mapping[SwitchId, CompiledSwitch],
    entries: Iterable[tuple[SwitchId, SwitchId]],
) -> dict[SwitchId, tuple[CompiledSwitch, SwitchDelta]]:
    """The incremental path after a link event: for each switch with a changed (switch, destination
    switch) entry, its new tables and the delta from ``current[switch]``, from the changed entries
    alone. Switches not returned are unchanged."""
    behind = plan.endpoints_at
    by_switch: dict[SwitchId, set[SwitchId]] = {}
    # Runs of the same switch (changed_entries yields them by switch) are grouped without a Python step
    # per entry; a switch that comes back later merges into its set.
    for switch, run in groupby(entries, key=_FIRST):
        by_switch.setdefault(switch, set()).update(map(_SECOND, run))
    # Only destinations with endpoints behind them have entries. The next hops of every changed entry
    # of every switch come out of the plan's arrays in one read (a few thousand after a failure at
    # 500 switches), as their out-ports: per switch it was two small reads each.
    targets = {switch: [dst for dst in dsts if dst in behind] for switch, dsts in by_switch.items()}
    index, n = plan.index, len(plan.switches)
    flat = np.fromiter(
        (index[switch] * n + index[dst] for switch, dsts in targets.items() for dst in dsts), dtype=np.int64
    )
    primaries, backups = plan.primary.reshape(-1)[flat], plan.backup.reshape(-1)[flat]
    ports_of = plan.out_port_array  # out_ports, and 0 at NO_LINK (-1)
    primary_ports, backup_ports = ports_of[primaries].tolist(), ports_of[backups].tolist()
    primaries_l, backups_l = primaries.tolist(), backups.tolist()
    links = plan.links
    out: dict[SwitchId, tuple[CompiledSwitch, SwitchDelta]] = {}
    at = 0
    for switch, dsts in targets.items():
        first, at = at, at + len(dsts)
        old = current.get(switch)
        if old is None:
            compiled = compile_compiled(plan, switch)
            out[switch] = (compiled, diff_switch(SwitchConfig(), compiled.config))
            continue
        # The changed entries only, over the old ones (shared, not copied: sdnctl/entry_map.py).
        base, top = layers(old.entries)
        changes: dict[str, Entry | None] = {}
        old_part: list[Entry] = []
        new_part: list[Entry] = []
        modified_groups: list[GroupSpec] = []
        fast = not old.policed
        for dst, primary, backup, primary_port, backup_port in zip(
            dsts,
            primaries_l[first:at],
            backups_l[first:at],
            primary_ports[first:at],
            backup_ports[first:at],
            strict=True,
        ):
            ports: tuple[PortNo, ...] = ()
            if primary != NO_LINK and dst != switch and fast:
                ports = (primary_port,) if backup == NO_LINK else (primary_port, backup_port)
            for endpoint in behind[dst]:
                if ports:
                    # The usual entry after a link event: it keeps its flows and group id, and only
                    # the group's buckets may move. Decided on the buckets alone; anything else
                    # takes the general way below.
                    ip = endpoint.ip
                    flows, group_id = _via_group(ip)
                    # _current, inline (the loop's hot path), without ``changes``: an address is behind
                    # one destination, and each destination comes once, so it is not there yet.
                    before = top.get(ip, MISSING) if top else MISSING
                    if before is MISSING:
                        before = base.get(ip)
                    if before is not None and before[0] is flows:
                        held = before[1]
                        if held is not None and held.group_id == group_id:
                            if held.buckets != ports:
                                changes[ip] = moved = _via_entry(ip, ports)
                                modified_groups.append(moved[1])
                            continue
                entry: Entry
                if endpoint.attachment.switch == switch:
                    entry = compile_entry(plan, switch, endpoint)
                else:
                    entry = _entry_via(
                        endpoint,
                        links[primary] if primary != NO_LINK else None,
                        links[backup] if backup != NO_LINK else None,
                    )
                if old.policed:
                    entry = police(entry, old.policed)
                before = _current(endpoint.ip, changes, top, base) or ((), None)
                if entry != before:
                    changes[endpoint.ip] = entry
                    group, old_group = entry[1], before[1]
                    if (
                        entry[0] is before[0]
                        and group is not None
                        and old_group is not None
                        and group.group_id == old_group.group_id
                    ):
                        # The usual entry after a link event: same flows, the group's buckets moved.
                        # What _diff_entries makes of it, without the general case.
                        modified_groups.append(group)
                        continue
                    old_part.append(before)
                    new_part.append(entry)
        if new_part or modified_groups:
            new_entries = with_changes(old.entries, changes)
            out[switch] = (old.with_entries(new_entries), _diff_entries(old_part, new_part, modified_groups))
    return out


def _current(
    key: str, changes: dict[str, Entry | None], top: dict[str, Entry | None], base: Mapping[str, Entry]
) -> Entry | None:
    """The entry ``key`` holds: changed in this pass, changed before (None: removed), or the base's."""
    value = changes.get(key, MISSING)
    if value is MISSING:
        value = top.get(key, MISSING)
        if value is MISSING:
            return base.get(key)
    return cast("Entry | None", value)


def replace_entries(
    compiled: CompiledSwitch, changes: Mapping[str, Entry | None]
) -> tuple[CompiledSwitch, SwitchDelta]:
    """``compiled`` with the entries of ``changes`` set (None: removed), and the delta of just those
    entries; ``compiled`` itself (and no delta) when nothing differs."""
    keys = [key for key, entry in changes.items() if compiled.entries.get(key) != entry]
    if not keys:
        return compiled, SwitchDelta()
    held = compiled.entries
    old: list[Entry] = []
    new: list[Entry] = []
    for key in keys:
        entry = changes[key]
        old.append(held.get(key, ((), None)))
        new.append(entry if entry is not None else ((), None))
    entries = with_changes(held, {key: changes[key] for key in keys})
    return compiled.with_entries(entries), _diff_entries(old, new)


def merge_deltas(a: SwitchDelta, b: SwitchDelta) -> SwitchDelta:
    """One delta that does ``a`` then ``b`` (e.g. a switch's routes, then its ACL or reservations).

    Usually over disjoint entries; where both touch one flow, group or meter (a route flow recompiled, then
    policed by a new meter), ``b``'s word is the last: two modifies of one flow in one delta would be sent in
    sort order, not in the order they were made, and the stale one could name a meter the delta deletes."""
    if not b:
        return a
    if not a:
        return b
    add_flows, modify_flows, delete_flows = _compose(
        (a.add_flows, a.modify_flows, a.delete_flows), (b.add_flows, b.modify_flows, b.delete_flows), _flow_key
    )
    add_groups, modify_groups, delete_groups = _compose(
        (a.add_groups, a.modify_groups, a.delete_groups),
        (b.add_groups, b.modify_groups, b.delete_groups),
        _group_key,
        readd="modify",
    )
    add_meters, modify_meters, delete_meters = _compose(
        (a.add_meters, a.modify_meters, a.delete_meters),
        (b.add_meters, b.modify_meters, b.delete_meters),
        _meter_key,
        readd="modify",
    )
    return SwitchDelta(
        add_groups=add_groups,
        modify_groups=modify_groups,
        add_flows=add_flows,
        modify_flows=modify_flows,
        delete_flows=delete_flows,
        delete_groups=delete_groups,
        add_meters=add_meters,
        modify_meters=modify_meters,
        delete_meters=delete_meters,
    )


def _flow_key(flow: FlowSpec) -> object:
    return flow.key


def _group_key(group: GroupSpec) -> object:
    return group.group_id


def _meter_key(meter: MeterSpec) -> object:
    return meter.meter_id


_T = TypeVar("_T", FlowSpec, GroupSpec, MeterSpec)


def _compose(
    first: tuple[tuple[_T, ...], tuple[_T, ...], tuple[_T, ...]],
    then: tuple[tuple[_T, ...], tuple[_T, ...], tuple[_T, ...]],
    key: Callable[[_T], object],
    readd: str = "add",
) -> tuple[tuple[_T, ...], tuple[_T, ...], tuple[_T, ...]]:
    """(adds, modifies, deletes) of doing ``first`` then ``then``: per key, the later word wins; a modify
    after an add stays an add (the switch did not hold it); a write after a delete is ``readd``: an add for
    a flow (an add replaces), a modify for a group or a meter (adding an id the switch holds is an error)."""
    ops: dict[object, tuple[str, _T]] = {}
    for kind, items in zip(("add", "modify", "delete"), first, strict=True):
        for item in items:
            ops[key(item)] = (kind, item)
    for kind, items in zip(("add", "modify", "delete"), then, strict=True):
        for item in items:
            k = key(item)
            before = ops.get(k)
            if before is not None and kind == "modify" and before[0] == "add":
                kind_now = "add"
            elif before is not None and kind != "delete" and before[0] == "delete":
                kind_now = readd
            else:
                kind_now = kind
            ops[k] = (kind_now, item)
    out: dict[str, list[_T]] = {"add": [], "modify": [], "delete": []}
    for kind, item in ops.values():
        out[kind].append(item)
    return tuple(sorted(out["add"])), tuple(sorted(out["modify"])), tuple(sorted(out["delete"]))


def _diff_entries(old: Iterable[Entry], new: Iterable[Entry], modified_groups: Iterable[GroupSpec] = ()) -> SwitchDelta:
    """The delta between two lists of entries for the same endpoints (old[i] and new[i] belong
    together), without building sets of every flow; plus ``modified_groups``, groups of other entries
    already known to be modified (same id, same flows, other buckets)."""
    if not old and not new:  # only moved buckets: the usual delta after a link event
        return SwitchDelta(modify_groups=tuple(sorted(modified_groups, key=_GROUP_ORDER)))
    add_groups: list[GroupSpec | None] = []
    modify_groups: list[GroupSpec | None] = list(modified_groups)
    delete_groups: list[GroupSpec | None] = []
    add_flows: list[FlowSpec] = []
    modify_flows: list[FlowSpec] = []
    delete_flows: list[FlowSpec] = []
    for (old_flows, old_group), (new_flows, new_group) in zip(old, new, strict=True):
        if old_group != new_group:
            if old_group is None:
                add_groups.append(new_group)
            elif new_group is None:
                delete_groups.append(old_group)
            elif old_group.group_id == new_group.group_id:
                modify_groups.append(new_group)
            else:
                delete_groups.append(old_group)
                add_groups.append(new_group)
        if old_flows != new_flows:
            before = {f.key: f for f in old_flows}
            for flow in new_flows:
                previous = before.pop(flow.key, None)
                if _replaces(previous, flow):
                    add_flows.append(flow)
                elif previous != flow:
                    modify_flows.append(flow)
            delete_flows.extend(before.values())
    return SwitchDelta(
        add_groups=tuple(sorted((g for g in add_groups if g is not None), key=_GROUP_ORDER)),
        modify_groups=tuple(sorted((g for g in modify_groups if g is not None), key=_GROUP_ORDER)),
        add_flows=tuple(sorted(add_flows, key=_FLOW_ORDER)),
        modify_flows=tuple(sorted(modify_flows, key=_FLOW_ORDER)),
        delete_flows=tuple(sorted(delete_flows, key=_FLOW_ORDER)),
        delete_groups=tuple(sorted((g for g in delete_groups if g is not None), key=_GROUP_ORDER)),
    )


# The dataclasses' own order (their fields in turn) as sort keys: one C-built tuple per item instead of
# two Python-built tuples per comparison.
_GROUP_ORDER = attrgetter("group_id", "buckets")
_FIRST, _SECOND = itemgetter(0), itemgetter(1)
_FLOW_ORDER = attrgetter("table", "priority", "match", "actions", "cookie")


def _replaces(current: FlowSpec | None, flow: FlowSpec) -> bool:
    """Whether ``flow`` is sent as an add rather than a modify: a new key, or a new cookie. A
    MODIFY_STRICT in OpenFlow 1.3 keeps the entry's cookie (OVS does), so a changed cookie would read
    back as the old one and the drift check would heal it forever; an ADD of an existing key replaces
    the entry in one step (no gap in between, unlike a delete and an add)."""
    return current is None or current.cookie != flow.cookie


def diff_meters(
    current: frozenset[MeterSpec], desired: frozenset[MeterSpec]
) -> tuple[tuple[MeterSpec, ...], tuple[MeterSpec, ...], tuple[MeterSpec, ...]]:
    """The meters to add, modify (same id, other rate or burst) and delete."""
    if current == desired:
        return (), (), ()
    cur = {m.meter_id: m for m in current - desired}
    new = {m.meter_id: m for m in desired - current}
    return (
        tuple(sorted(m for mid, m in new.items() if mid not in cur)),
        tuple(sorted(m for mid, m in new.items() if mid in cur)),
        tuple(sorted(m for mid, m in cur.items() if mid not in new)),
    )


def diff_switch(current: SwitchConfig, desired: SwitchConfig) -> SwitchDelta:
    """The FlowMods, GroupMods and MeterMods that turn ``current`` into ``desired``, nothing more."""
    if current is desired:
        return SwitchDelta()
    # Only what differs can need a message: key the symmetric differences, not every flow.
    gone_flows, new_flows_only = current.flows - desired.flows, desired.flows - current.flows
    gone_groups, new_groups_only = current.groups - desired.groups, desired.groups - current.groups
    cur_flows = {f.key: f for f in gone_flows}
    new_flows = {f.key: f for f in new_flows_only}
    cur_groups = {g.group_id: g for g in gone_groups}
    new_groups = {g.group_id: g for g in new_groups_only}
    add_meters, modify_meters, delete_meters = diff_meters(current.meters, desired.meters)
    return SwitchDelta(
        add_meters=add_meters,
        modify_meters=modify_meters,
        delete_meters=delete_meters,
        add_groups=tuple(sorted((g for gid, g in new_groups.items() if gid not in cur_groups), key=_GROUP_ORDER)),
        modify_groups=tuple(sorted((g for gid, g in new_groups.items() if gid in cur_groups), key=_GROUP_ORDER)),
        add_flows=tuple(sorted((f for k, f in new_flows.items() if _replaces(cur_flows.get(k), f)), key=_FLOW_ORDER)),
        modify_flows=tuple(
            sorted((f for k, f in new_flows.items() if not _replaces(cur_flows.get(k), f)), key=_FLOW_ORDER)
        ),
        delete_flows=tuple(sorted((f for k, f in cur_flows.items() if k not in new_flows), key=_FLOW_ORDER)),
        delete_groups=tuple(sorted((g for gid, g in cur_groups.items() if gid not in new_groups), key=_GROUP_ORDER)),
    )


@dataclass(frozen=True, slots=True)
class PacketTrace:
    """Where a packet ends up: the test tool for flows (trace the effect, not the flow text)."""

    hops: tuple[tuple[SwitchId, PortNo], ...] = field(default_factory=tuple)
    delivered_to: PortNo | None = None
    dropped_at: SwitchId | None = None
    looped: bool = False


def trace_ipv4(
    configs: Mapping[SwitchId, SwitchConfig],
    neighbour: Mapping[tuple[SwitchId, PortNo], SwitchId],
    start: SwitchId,
    ipv4_dst: str,
    live_ports: Mapping[SwitchId, frozenset[PortNo]] | None = None,
) -> PacketTrace:
    """Follow an IPv4 packet that is not a TCP connection attempt through the compiled forwarding
    tables, honouring fast-failover liveness (the policy's flows, which judge connection attempts, and
    table 0's are ``sdnctl.acl``'s to test)."""
    hops: list[tuple[SwitchId, PortNo]] = []
    switch = start
    for _ in range(len(configs) + 1):
        config = configs.get(switch)
        flow = None
        if config is not None:
            candidates = [
                f
                for f in config.flows
                if f.table == TABLE_FORWARD
                and dict(f.match).get("eth_type") == ETH_TYPE_IPV4
                and dict(f.match).get("ipv4_dst") == ipv4_dst
                and "tcp_flags" not in dict(f.match)
            ]
            flow = max(candidates, key=lambda f: f.priority, default=None)
        if flow is None or config is None:
            return PacketTrace(tuple(hops), dropped_at=switch)
        forwarding = [a for a in flow.actions if a[0] != "meter"]  # a meter polices, it does not forward
        if not forwarding:
            return PacketTrace(tuple(hops), dropped_at=switch)
        kind, value = forwarding[0]
        if kind == "group":
            group = next(g for g in config.groups if g.group_id == value)
            live = live_ports.get(switch) if live_ports is not None else None
            port = next((p for p in group.buckets if live is None or p in live), None)
            if port is None:
                return PacketTrace(tuple(hops), dropped_at=switch)
        else:
            port = PortNo(value)
        hops.append((switch, port))
        nxt = neighbour.get((switch, port))
        if nxt is None:
            return PacketTrace(tuple(hops), delivered_to=port)
        switch = nxt
    return PacketTrace(tuple(hops), looped=True)
