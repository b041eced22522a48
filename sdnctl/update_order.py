"""The order in which a change of routes reaches the switches: loop-free at every step. Pure.

Sent to every switch at once, a change of next hops leaves some switches on their new next hops and
others still on their old ones for a moment, and a packet can go from one to the other and back (a
micro-loop: OVS drops it where it would leave by the port it came in; a lost ping on a two-path
fabric whose measured latencies swapped its routes). So, per destination, a switch's primary next hop
is changed only once every switch on its new path to that destination runs its new one, as ordered
FIB updates do (RFC 6976): a switch that changed then forwards on the new routes all the way, one that
did not yet on the old routes, which were loop-free; no cycle can mix them.

The rounds: an entry whose primary next hop moves from one link to another goes in the round of its
hop count on the new path (the next switch on it is one hop closer, so it went a round before).
Everything else goes in the first round: meters, the ACL, entries that only change their backup,
entries that gain their first route or belong to the destination's own switch (no old next hop to
loop with). Deletions stay in the break phase, after every round.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from netmodel.ids import SwitchId
from sdnctl.flows import FlowSpec, GroupSpec, SwitchDelta, route_names
from sdnctl.pathing import NO_LINK, RoutePlan


def make_rounds(
    deltas: Mapping[SwitchId, SwitchDelta], old: RoutePlan | None, new: RoutePlan | None
) -> list[dict[SwitchId, SwitchDelta]]:
    """The make phase of ``deltas`` split into rounds, each to be confirmed before the next is sent.
    The first holds every switch of ``deltas``, so each is sent and confirmed at least once: its whole
    delta (whose make phase is what a make sends) unless part of it goes in later rounds. Deletions
    are sent in the break phase, after every round."""
    first = dict(deltas)
    if old is None or new is None:
        return [first]
    movers = [(dpid, delta) for dpid, delta in deltas.items() if delta.modify_groups and dpid in new.index]
    if not movers:
        return [first]
    later: dict[int, dict[SwitchId, SwitchDelta]] = {}
    for (dpid, delta), hops in zip(movers, _hops_of_moved(movers, old, new), strict=True):
        if not any(hops):
            continue
        groups: dict[int, list[GroupSpec]] = {}
        for group, hop in zip(delta.modify_groups, hops, strict=True):
            groups.setdefault(hop, []).append(group)
        added: dict[int, list[FlowSpec]] = {}
        modified: dict[int, list[FlowSpec]] = {}
        if delta.add_flows or delta.modify_flows:
            rounds: dict[int | None, int] = dict(zip((g.group_id for g in delta.modify_groups), hops, strict=True))
            group_of_cookie = _destinations(new)[1]
            for flows, by_round in ((delta.add_flows, added), (delta.modify_flows, modified)):
                for flow in flows:
                    by_round.setdefault(rounds.get(group_of_cookie.get(flow.cookie), 0), []).append(flow)
        first[dpid] = replace(
            delta,
            delete_flows=(),
            delete_groups=(),
            delete_meters=(),
            modify_groups=tuple(groups.pop(0, ())),
            add_flows=tuple(added.pop(0, ())),
            modify_flows=tuple(modified.pop(0, ())),
        )
        for hop in groups.keys() | added.keys() | modified.keys():
            later.setdefault(hop, {})[dpid] = SwitchDelta(
                modify_groups=tuple(groups.get(hop, ())),
                add_flows=tuple(added.get(hop, ())),
                modify_flows=tuple(modified.get(hop, ())),
            )
    return [first, *(later[hop] for hop in sorted(later))]


def _hops_of_moved(movers: list[tuple[SwitchId, SwitchDelta]], old: RoutePlan, new: RoutePlan) -> list[list[int]]:
    """Per switch of ``movers``, per modified group (in order): its round, the hop count to its
    destination on the new routes when its primary next hop moved from one link to another, else 0."""
    dst_of_group = _destinations(new)[0]
    counts = [len(delta.modify_groups) for _, delta in movers]
    s = np.repeat(np.fromiter((new.index[dpid] for dpid, _ in movers), dtype=np.int64, count=len(movers)), counts)
    d = np.fromiter(
        (dst_of_group.get(group.group_id, -1) for _, delta in movers for group in delta.modify_groups),
        dtype=np.int64,
        count=len(s),
    )
    known = (d >= 0) & (s != d)
    d = np.where(known, d, 0)
    after = new.primary[s, d]
    if old._structure is not None and old._structure is new._structure:
        before = old.primary[s, d]  # the same switches and links, by the same indexes
        moved = known & (before != NO_LINK) & (after != NO_LINK) & (before != after)
    else:
        switches = new.switches
        moved = known & np.fromiter(
            (
                link != NO_LINK
                and switches[i] in old.index
                and switches[j] in old.index
                and (first := old.next_hop(switches[i], switches[j])[0]) is not None
                and new.links[link] != first
                for i, j, link in zip(s.tolist(), d.tolist(), after.tolist(), strict=True)
            ),
            dtype=bool,
            count=len(s),
        )
    # Routing weighs latency * scale + 1 a link, scale = switches + 1: the hop count is the remainder.
    hops = (np.where(moved, new.routing[s, d], 0).astype(np.int64) % (len(new.switches) + 1)).tolist()
    out = []
    at = 0
    for count in counts:
        out.append(hops[at : at + count])
        at += count
    return out


_memo: list[object] = [None, None, None]  # the endpoints and index last seen, and their destinations


def _destinations(plan: RoutePlan) -> tuple[dict[int, int], dict[int, int]]:
    """Group id -> the index of its endpoint's switch, and route and ARP cookie -> that group id. The
    same for every plan that shares its endpoints and switches: kept for the last ones."""
    if _memo[0] is plan.endpoints and _memo[1] is plan.index:
        return _memo[2]  # type: ignore[return-value]
    dst_of_group: dict[int, int] = {}
    group_of_cookie: dict[int, int] = {}
    for endpoint in plan.endpoints.values():
        switch = plan.index.get(endpoint.attachment.switch)
        if switch is None:
            continue
        names = route_names(endpoint.ip)
        dst_of_group[names.group_id] = switch
        group_of_cookie[names.cookie] = names.group_id
        group_of_cookie[names.arp_cookie] = names.group_id
    _memo[:] = [plan.endpoints, plan.index, (dst_of_group, group_of_cookie)]
    return dst_of_group, group_of_cookie
