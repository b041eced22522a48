"""End-to-end request latency over the call graph, for every candidate node of one service. Pure.

A user request does not end at the service the user calls: ``frontend`` calls ``cart`` and
``productcatalog``, ``checkout`` calls six more. What a user waits for on the network is every round
trip down that tree, to the instances each caller actually uses. This module computes it from the
declaration (``Service.calls`` with their ``CallWeight.per_request``) and the layout in a
``ClusterSnapshot``, so placement can score and check a node by the **whole request**, not by one hop.

The model (``docs/placement.md`` has it with an example):

- **Users.** Every host in an entry service's ``near`` sends requests to it, each host the same share.
- **Which instance a caller uses** is what the mesh gives it (``meshctl.paths``): the instances of the
  called service in the caller switch's priority level 0 (within ``PathRules.margin`` of the nearest by
  one-way route latency), round robin, one share per instance. Instances on nodes that cannot take work
  (down, cut off) get none: their sidecars fail health checks and callers fail over.
- **A request's network time** is the round trip (one-way both ways, over the routes the switches use)
  of every call, times its ``per_request`` count, summed down the tree: calls are made one after
  another. Request processing time is not modelled: it does not depend on where instances run.
- A service with no instance yet contributes nothing (a tree placed top-down still gets a score);
  a caller that can reach no instance makes the request's time infinite. Cycles are cut where a
  depth-first walk from the entries meets them: a call back up the tree counts nothing.

For the service being placed, ``S``, the request time of user ``u`` with a new instance on node ``y``
is ``base[u] + sum over caller switches x of calls[u, x] * cost_x(y)``: ``base`` is every round trip
that does not touch ``S``, ``calls[u, x]`` how many calls to ``S`` leave switch ``x`` per request of
``u`` (the layout above ``S`` does not depend on ``S``), and ``cost_x(y)`` the mean over the level-0
instances of ``S`` as seen from ``x`` (``y`` included if it is in level 0) of round trip plus the
time of ``S``'s own subtree from there. Exact for this model, vectorised over the candidate nodes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from meshctl.paths import PathRules
from netmodel.ids import HostId, ServiceName
from netmodel.types import Service

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

DEFAULT_PATH_RULES = PathRules()


@dataclass(frozen=True, slots=True)
class CallGraph:
    """The declared calls, cut into a DAG: who calls whom how often, in an order where callers come first."""

    calls: Mapping[ServiceName, tuple[tuple[ServiceName, float], ...]]
    """Per service, (callee, calls per request) for every call kept (callees declared, back edges cut)."""
    order: tuple[ServiceName, ...]
    """Every service some user request reaches, callers before callees."""
    users: tuple[tuple[ServiceName, HostId], ...]
    """One user class per (entry service, near host), in a fixed order."""

    def reaches(self, service: ServiceName) -> bool:
        return service in self.order

    @property
    def involved(self) -> frozenset[ServiceName]:
        """Services whose placement changes some user's request time: those that call or are called."""
        return frozenset(s for s in self.order if self.calls.get(s) or any(s in dict(c) for c in self.calls.values()))


def build_call_graph(
    services: Mapping[ServiceName, Service], users: Mapping[ServiceName, tuple[HostId, ...]] | None = None
) -> CallGraph:
    """The call graph of the declared services. Entries are the services with users: their ``near`` hosts,
    or for a service in ``users`` those hosts instead (a request that names its own)."""
    near = {name: service.near for name, service in services.items()} | dict(users or {})
    entries = sorted(name for name, hosts in near.items() if hosts and name in services)
    kept: dict[ServiceName, list[tuple[ServiceName, float]]] = defaultdict(list)
    finished: list[ServiceName] = []
    state: dict[ServiceName, int] = {}  # 1: on the walk's stack, 2: done
    for entry in entries:
        if entry in state:
            continue
        # Iterative depth-first walk: (service, index of the next call to follow).
        stack: list[tuple[ServiceName, int]] = [(entry, 0)]
        state[entry] = 1
        while stack:
            service, k = stack[-1]
            declared = services[service].weighted_calls()
            if k < len(declared):
                stack[-1] = (service, k + 1)
                callee, weight = declared[k]
                if callee not in services or state.get(callee) == 1:
                    continue  # undeclared, or a call back up the tree: cut
                kept[service].append((callee, weight.per_request))
                if callee not in state:
                    state[callee] = 1
                    stack.append((callee, 0))
            else:
                state[service] = 2
                finished.append(service)
                stack.pop()
    users_of = tuple((entry, host) for entry in entries for host in near[entry])
    calls = {service: tuple(kept.get(service, ())) for service in finished}
    return CallGraph(calls, tuple(reversed(finished)), users_of)


def calls_per_request(graph: CallGraph) -> dict[ServiceName, float]:
    """Per service: how many calls one user request makes to it on average (over the users), down the tree."""
    rate: dict[ServiceName, float] = defaultdict(float)
    for entry, _host in graph.users:
        rate[entry] += 1.0 / len(graph.users)
    for service in graph.order:  # callers first: a service's rate is complete before it passes it on
        for callee, per_request in graph.calls.get(service, ()):
            rate[callee] += rate[service] * per_request
    return dict(rate)


def busiest_first(graph: CallGraph) -> list[ServiceName]:
    """The services users' requests reach, each once a service that calls it is in the list (entries first),
    and among those the one called most per user request first: the order to place a tree in when capacity
    near users is scarce (a callee's request times count the callers placed before it: most of its calls
    come from the busiest of them)."""
    rate = calls_per_request(graph)
    entries = {entry for entry, _ in graph.users}
    ready = [s for s in graph.order if s in entries]
    seen = set(ready)
    out: list[ServiceName] = []
    while ready:
        ready.sort(key=lambda s: (-rate.get(s, 0.0), s))
        service = ready.pop(0)
        out.append(service)
        for callee, _ in graph.calls.get(service, ()):
            if callee not in seen:
                seen.add(callee)
                ready.append(callee)
    return out


@dataclass(frozen=True, slots=True)
class Layout:
    """Where every service's instances are, as switch indices of the latency matrix (one entry per
    instance: two instances behind one switch get two shares), and the matrices to reason on."""

    instances: Mapping[ServiceName, Ints]
    """A service absent: never placed (it adds nothing); present with no entry: placed, none usable (inf)."""
    one_way_us: Floats
    """Shortest one-way latency between switch indices, microseconds (inf: unreachable)."""
    user_switch: Mapping[HostId, int]
    """Switch index of each user host (missing: location unknown)."""

    def round_trip_ms(self, sources: Ints, targets: Ints) -> Floats:
        """Round trip (ms) from each source switch to each target switch: rows x columns."""
        there = self.one_way_us[np.ix_(sources, targets)]
        back = self.one_way_us[np.ix_(targets, sources)].T
        result: Floats = (there + back) / 1000.0
        return result


def level0_cost(one_way_us: Floats, value_ms: Floats, rules: PathRules) -> Floats:
    """Per row (a caller): the mean of ``value_ms`` over the columns (instances) in its level 0, by
    ``one_way_us`` from it; inf for a row that reaches none. ``value_ms`` may broadcast over rows."""
    member = _level0_members(one_way_us, rules)
    count = member.sum(axis=1)
    values = np.broadcast_to(value_ms, one_way_us.shape)
    with np.errstate(invalid="ignore"):
        total = np.where(member, values, 0.0).sum(axis=1)
    out: Floats = np.full(one_way_us.shape[0], np.inf)
    np.divide(total, count, out=out, where=count > 0)
    return out


@dataclass(frozen=True, slots=True)
class RequestImpact:
    """How the placement of one service's next instance changes every user's request time."""

    service: ServiceName
    users: tuple[tuple[ServiceName, HostId], ...]
    base_ms: Floats
    """Per user: the network time of everything in the request that does not touch the service."""
    caller_switches: Ints
    """The switches calls to the service leave from (users' own switches for an entry service)."""
    calls: Floats
    """users x caller_switches: calls to the service from that switch per request of that user."""
    existing: Ints
    """Switch indices of the service's instances already placed (usable ones)."""
    existing_subtree_ms: Floats
    """The network time of the service's own subtree, per call, from each existing instance."""
    layout: Layout
    graph: CallGraph
    subtree: Mapping[ServiceName, Floats]
    """Per callee below the service: its subtree time from each of its instances."""
    rules: PathRules

    def subtree_ms(self, switches: Ints) -> Floats:
        """The network time of one call's subtree below the service, from an instance on each switch."""
        return _subtree_ms(self.service, switches, self.layout, self.graph, self.subtree, self.rules)

    @property
    def reached(self) -> npt.NDArray[np.bool_]:
        """Per user: whether their requests call the service at all."""
        result: npt.NDArray[np.bool_] = self.calls.sum(axis=1) > 0
        return result

    def added_ms(self, candidate_switches: Ints) -> Floats:
        """users x candidates: the part of each user's request time spent on calls to the service and
        below it, with one more instance behind each candidate switch (-1: a switch unknown, inf).

        Per caller switch, the existing instances are sorted by distance once, with prefix sums of their
        values (round trip + subtree); a candidate's level 0 is then a ``searchsorted`` of its bound, so the
        cost is O(callers x candidate switches x log instances), computed once per distinct switch."""
        valid = candidate_switches >= 0
        unique, back = np.unique(np.maximum(candidate_switches, 0), return_inverse=True)
        layout = self.layout
        callers = self.caller_switches
        if not len(callers):
            total: Floats = np.zeros((len(self.users), len(candidate_switches)))
            total[:, ~valid] = np.inf
            return total
        new_dist = layout.one_way_us[np.ix_(callers, unique)]  # callers x candidates
        new_value = layout.round_trip_ms(callers, unique) + self.subtree_ms(unique)[None, :]
        old_dist = layout.one_way_us[np.ix_(callers, self.existing)]  # callers x existing
        old_value = layout.round_trip_ms(callers, self.existing) + self.existing_subtree_ms[None, :]
        order = np.argsort(old_dist, axis=1, kind="stable")
        sorted_dist = np.take_along_axis(old_dist, order, axis=1)
        prefix = np.concatenate(
            [np.zeros((len(callers), 1)), np.cumsum(np.take_along_axis(old_value, order, axis=1), axis=1)], axis=1
        )
        existing_nearest = sorted_dist[:, 0] if sorted_dist.shape[1] else np.full(len(callers), np.inf)
        nearest = np.minimum(existing_nearest[:, None], new_dist)
        finite = np.isfinite(nearest)
        safe = np.where(finite, nearest, 0.0)
        bound = safe + np.maximum(self.rules.margin_us, self.rules.margin_ratio * safe)
        cost = np.full(new_dist.shape, np.inf)
        for row in range(len(callers)):
            count = np.searchsorted(sorted_dist[row], bound[row], side="right")
            joins = new_dist[row] <= bound[row]
            members = count + joins
            with np.errstate(invalid="ignore"):
                summed = prefix[row, count] + np.where(joins, new_value[row], 0.0)
            ok = finite[row] & (members > 0)
            cost[row, ok] = summed[ok] / members[ok]
        # users x candidates = calls (users x callers) . cost (callers x candidates), inf where a user's calls meet one
        unreachable = ~np.isfinite(cost)
        total = self.calls @ np.where(unreachable, 0.0, cost)
        total[(self.calls > 0).astype(np.float64) @ unreachable.astype(np.float64) > 0] = np.inf
        total = total[:, back]
        total[:, ~valid] = np.inf
        return total

    def existing_ms(self) -> Floats:
        """Per user: the request time with the instances already placed (the layout as it is)."""
        placed = self.service in self.layout.instances
        if not len(self.caller_switches) or not placed:
            return self.base_ms.copy()
        if not len(self.existing):
            cost = np.full(len(self.caller_switches), np.inf)
        else:
            dist = self.layout.one_way_us[np.ix_(self.caller_switches, self.existing)]
            value = self.layout.round_trip_ms(self.caller_switches, self.existing) + self.existing_subtree_ms[None, :]
            cost = level0_cost(dist, value, self.rules)
        unreachable = ~np.isfinite(cost)
        added = self.calls @ np.where(unreachable, 0.0, cost)
        added[(self.calls > 0).astype(np.float64) @ unreachable.astype(np.float64) > 0] = np.inf
        result: Floats = self.base_ms + added
        return result

    def request_ms(self, candidate_switches: Ints) -> Floats:
        """users x candidates: each user's whole request time with one more instance behind each candidate."""
        result: Floats = self.base_ms[:, None] + self.added_ms(candidate_switches)
        return result


def _subtree_ms(
    service: ServiceName,
    switches: Ints,
    layout: Layout,
    graph: CallGraph,
    subtree: Mapping[ServiceName, Floats],
    rules: PathRules,
) -> Floats:
    """Network time of the calls one request to ``service`` makes, from an instance on each switch."""
    total: Floats = np.zeros(len(switches))
    for callee, per_request in graph.calls.get(service, ()):
        instances = layout.instances.get(callee)
        if instances is None or per_request <= 0:
            continue  # never placed: nothing known below it (a tree placed top-down)
        if not len(instances):  # placed, but no instance can serve: the calls fail
            total = total + np.inf
            continue
        dist = layout.one_way_us[np.ix_(switches, instances)]
        value = layout.round_trip_ms(switches, instances) + subtree[callee][None, :]
        total = total + per_request * level0_cost(dist, value, rules)
    return total


def request_times_ms(graph: CallGraph, layout: Layout, rules: PathRules = DEFAULT_PATH_RULES) -> Floats:
    """Per user of ``graph``: the network time of one request with the instances where ``layout`` has them."""
    base, _ = _propagate(graph, layout, rules, graph.users, None)
    return base


@dataclass(frozen=True, slots=True)
class CallEdge:
    """Calls to ``service`` leaving switch ``caller`` (a user's or a calling instance's) per user request (the
    mean over the users), and the instances they go to (the caller's level 0, as switch indices, one per instance)."""

    service: ServiceName
    caller: int
    calls_per_request: float
    instances: tuple[int, ...]


def call_edges(graph: CallGraph, layout: Layout, rules: PathRules = DEFAULT_PATH_RULES) -> list[CallEdge]:
    """Every (service, caller switch) some user's request goes through, in the graph's order."""
    _, inbound = _propagate(graph, layout, rules, graph.users, None)
    edges = []
    for service in graph.order:
        instances = layout.instances.get(service, np.zeros(0, dtype=np.int64))
        for caller, rates in sorted(inbound.get(service, {}).items()):
            row = np.array([caller], dtype=np.int64)
            member = _level0_members(layout.one_way_us[np.ix_(row, instances)], rules)[0]
            chosen = tuple(int(s) for s, used in zip(instances.tolist(), member.tolist(), strict=True) if used)
            edges.append(CallEdge(service, caller, float(rates.mean()), chosen))
    return edges


def _propagate(
    graph: CallGraph,
    layout: Layout,
    rules: PathRules,
    users: tuple[tuple[ServiceName, HostId], ...],
    stop_at: ServiceName | None,
) -> tuple[Floats, dict[ServiceName, dict[int, Floats]]]:
    """Walk the tree top-down: each user's network time on every call not to ``stop_at`` (nor below it),
    and the calls arriving at each service per switch they leave from (switch -> per-user rates)."""
    base = np.zeros(len(users))
    inbound: dict[ServiceName, dict[int, Floats]] = defaultdict(dict)
    for u, (entry, host) in enumerate(users):
        switch = layout.user_switch.get(host)
        if switch is None:
            base[u] = np.inf
            continue
        rates = inbound[entry].setdefault(switch, np.zeros(len(users)))
        rates[u] += 1.0
    for current in graph.order:
        arriving = inbound.get(current)
        if not arriving or current == stop_at:
            continue
        instances = layout.instances.get(current)
        if instances is None:
            continue  # never placed: nothing below it is known either
        if not len(instances):  # placed, but no instance can serve: these users' requests fail
            for rates in arriving.values():
                base[rates > 0] = np.inf
            continue
        sources = np.array(sorted(arriving), dtype=np.int64)
        rates = np.vstack([arriving[s] for s in sources])  # switches x users
        dist = layout.one_way_us[np.ix_(sources, instances)]
        round_trip = layout.round_trip_ms(sources, instances)
        member = _level0_members(dist, rules)
        count = member.sum(axis=1)
        share = np.where(count[:, None] > 0, member / np.maximum(count, 1)[:, None], 0.0)  # switches x instances
        with np.errstate(invalid="ignore"):
            hop = np.where(member, round_trip, 0.0).sum(axis=1) / np.maximum(count, 1)
        hop[count == 0] = np.inf
        with np.errstate(invalid="ignore"):
            base = base + np.where(rates > 0, rates * hop[:, None], 0.0).sum(axis=0)
        served = share.T @ rates  # instances x users: calls each instance serves
        for callee, per_request in graph.calls.get(current, ()):
            target = inbound[callee]
            for k, switch in enumerate(instances.tolist()):
                if served[k].any():
                    target[switch] = target.get(switch, np.zeros(len(users))) + served[k] * per_request
    return base, inbound


def request_impact(
    service: ServiceName,
    graph: CallGraph,
    layout: Layout,
    rules: PathRules = DEFAULT_PATH_RULES,
    users: Sequence[tuple[ServiceName, HostId]] | None = None,
) -> RequestImpact | None:
    """The impact of placing an instance of ``service``; None when no user's request reaches it."""
    if not graph.reaches(service):
        return None
    users = tuple(graph.users if users is None else users)
    subtree = _subtrees_below(service, graph, layout, rules)
    base, inbound = _propagate(graph, layout, rules, users, service)
    arriving = inbound.get(service, {})
    caller_switches = np.array(sorted(arriving), dtype=np.int64)
    if not len(caller_switches):
        return None
    calls = np.vstack([arriving[s] for s in caller_switches]).T  # users x switches
    existing = layout.instances.get(service, np.zeros(0, dtype=np.int64))
    return RequestImpact(
        service=service,
        users=users,
        base_ms=base,
        caller_switches=caller_switches,
        calls=calls,
        existing=existing,
        existing_subtree_ms=_subtree_ms(service, existing, layout, graph, subtree, rules),
        layout=layout,
        graph=graph,
        subtree=subtree,
        rules=rules,
    )


def _level0_members(one_way_us: Floats, rules: PathRules) -> npt.NDArray[np.bool_]:
    nearest = one_way_us.min(axis=1, initial=np.inf)
    finite = np.isfinite(nearest)
    safe = np.where(finite, nearest, 0.0)
    bound = safe + np.maximum(rules.margin_us, rules.margin_ratio * safe)
    result: npt.NDArray[np.bool_] = (one_way_us <= bound[:, None]) & finite[:, None]
    return result


def _subtrees_below(
    service: ServiceName, graph: CallGraph, layout: Layout, rules: PathRules
) -> dict[ServiceName, Floats]:
    """Subtree time from each instance of every service below ``service`` (callees before callers)."""
    below: set[ServiceName] = set()
    frontier = [service]
    while frontier:
        for callee, _ in graph.calls.get(frontier.pop(), ()):
            if callee not in below:
                below.add(callee)
                frontier.append(callee)
    subtree: dict[ServiceName, Floats] = {}
    for current in reversed(graph.order):
        if current in below:
            instances = layout.instances.get(current, np.zeros(0, dtype=np.int64))
            subtree[current] = _subtree_ms(current, instances, layout, graph, subtree, rules)
    return subtree
