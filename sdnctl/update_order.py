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
    if old is None or new is None or not any(delta.modify_groups for delta in deltas.values()):
        return [first]
    dst_of_group, group_of_cookie = _destinations(new)
    ordered = _ordered_groups(deltas, old, new, dst_of_group)
    later: dict[int, dict[SwitchId, SwitchDelta]] = {}
    for dpid, rounds in ordered.items():
        delta = deltas[dpid]
        groups: dict[int, list[GroupSpec]] = {}
        added: dict[int, list[FlowSpec]] = {}
        modified: dict[int, list[FlowSpec]] = {}
        for group in delta.modify_groups:
            groups.setdefault(rounds.get(group.group_id, 0), []).append(group)
        for flows, by_round in ((delta.add_flows, added), (delta.modify_flows, modified)):
            for flow in flows:
                group_id = group_of_cookie.get(flow.cookie)
                by_round.setdefault(rounds.get(group_id, 0) if group_id is not None else 0, []).append(flow)
        first[dpid] = replace(
            delta,
            delete_flows=(),
            delete_groups=(),
            delete_meters=(),
            modify_groups=tuple(groups.pop(0, ())),
            add_flows=tuple(added.pop(0, ())),
            modify_flows=tuple(modified.pop(0, ())),
        )
        for hops in groups.keys() | added.keys() | modified.keys():
            later.setdefault(hops, {})[dpid] = SwitchDelta(
                modify_groups=tuple(groups.get(hops, ())),
                add_flows=tuple(added.get(hops, ())),
                modify_flows=tuple(modified.get(hops, ())),
            )
    return [first, *(later[hops] for hops in sorted(later))]


def _ordered_groups(
    deltas: Mapping[SwitchId, SwitchDelta], old: RoutePlan, new: RoutePlan, dst_of_group: Mapping[int, SwitchId]
) -> dict[SwitchId, dict[int, int]]:
    """Per switch, the modified groups whose primary next hop moved from one link to another, with
    the round each goes in: its hop count to the destination on the new routes."""
    items = [
        (dpid, group.group_id, dst)
        for dpid, delta in deltas.items()
        if dpid in new.index and dpid in old.index
        for group in delta.modify_groups
        if (dst := dst_of_group.get(group.group_id)) is not None and dst != dpid and dst in old.index
    ]
    if not items:
        return {}
    s = np.fromiter((new.index[dpid] for dpid, _, _ in items), dtype=np.int64, count=len(items))
    d = np.fromiter((new.index[dst] for _, _, dst in items), dtype=np.int64, count=len(items))
    after = new.primary[s, d]
    if old._structure is not None and old._structure is new._structure:
        before = old.primary[s, d]  # the same switches and links, by the same indexes
        moved = (before != NO_LINK) & (after != NO_LINK) & (before != after)
    else:
        moved = np.fromiter(
            (
                (first := old.next_hop(dpid, dst)[0]) is not None and link != NO_LINK and new.links[link] != first
                for (dpid, _, dst), link in zip(items, after.tolist(), strict=True)
            ),
            dtype=bool,
            count=len(items),
        )
    # Routing weighs latency * scale + 1 a link, scale = switches + 1: the hop count is the remainder.
    hops = (np.where(moved, new.routing[s, d], 0).astype(np.int64) % (len(new.switches) + 1)).tolist()
    ordered: dict[SwitchId, dict[int, int]] = {}
    for (dpid, group_id, _), count in zip(items, hops, strict=True):
        if count:
            ordered.setdefault(dpid, {})[group_id] = count
    return ordered


def _destinations(plan: RoutePlan) -> tuple[dict[int, SwitchId], dict[int, int]]:
    """Group id -> the switch of its endpoint, and route and ARP cookie -> that group id."""
    dst_of_group: dict[int, SwitchId] = {}
    group_of_cookie: dict[int, int] = {}
    for endpoint in plan.endpoints.values():
        names = route_names(endpoint.ip)
        dst_of_group[names.group_id] = endpoint.attachment.switch
        group_of_cookie[names.cookie] = names.group_id
        group_of_cookie[names.arp_cookie] = names.group_id
    return dst_of_group, group_of_cookie
