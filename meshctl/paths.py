"""Per-caller service paths: which instances of a service a caller uses first. Pure.

Every caller sits behind a switch (a workload behind its node's switch, a host behind its own). For
each (caller switch, called service) the service's instance switches are ordered by the latency of
the shortest path from the caller's switch to theirs (``netmodel.graph``: measured latency wins over
the declared prior, down links are no edge; the rule placement uses too) and cut into **priority
levels**: level 0 holds every instance switch within ``PathRules.margin`` of the nearest one; the
next level starts at the nearest switch left and holds everything within the margin of *that* one;
and so on. Switches the caller cannot reach come last, as one level of their own.

Only the grouping is kept, never a latency: a measurement that moves no switch across a level
boundary yields equal ``ServicePaths``, so nothing is rebuilt or pushed (``SnapshotPublisher``
compares them before rebuilding).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from netmodel.graph import link_matrix, shortest_distances, usable_latency
from netmodel.ids import ServiceName, SwitchId
from netmodel.topology import Topology
from netmodel.types import frozen_map

Levels = tuple[tuple[SwitchId, ...], ...]
"""Instance switches by priority level (level 0 first), each level sorted."""

PathKey = tuple[SwitchId | None, ServiceName]
"""(the caller's switch, the called service); None: a caller whose switch the model does not know."""


@dataclass(frozen=True, slots=True)
class PathRules:
    """How close to a level's nearest instance another instance must be to share its priority.

    The margin is ``max(margin_us, margin_ratio * nearest)``. The absolute part keeps instances a few
    hundred microseconds apart (two racks of one site, a measurement's jitter) together: such a
    difference is noise against an application's own latency, and splitting them would send all
    traffic to one of two equivalent instances. The relative part does the same for far callers: 41
    against 40 ms is no reason to prefer one cloud instance. A real tier boundary (edge at ~1 ms,
    cloud at ~10 ms and more) is far wider than either, so it always splits."""

    margin_us: float = 1000.0
    margin_ratio: float = 0.2

    def margin(self, nearest_us: float) -> float:
        return max(self.margin_us, self.margin_ratio * nearest_us)


def priority_levels(distance_us: Mapping[SwitchId, float], rules: PathRules) -> Levels:
    """``distance_us`` (instance switch -> latency from the caller, inf when unreachable) cut into levels."""
    reachable = sorted((d, s) for s, d in distance_us.items() if math.isfinite(d))
    levels: list[tuple[SwitchId, ...]] = []
    start = 0
    while start < len(reachable):
        nearest = reachable[start][0]
        bound = nearest + rules.margin(nearest)
        end = start
        while end < len(reachable) and reachable[end][0] <= bound:
            end += 1
        levels.append(tuple(sorted(s for _, s in reachable[start:end])))
        start = end
    unreachable = tuple(sorted(s for s, d in distance_us.items() if not math.isfinite(d)))
    if unreachable:
        levels.append(unreachable)
    return tuple(levels)


@dataclass(frozen=True, slots=True)
class ServicePaths:
    """The levels of every (caller switch, service) pair some caller needs. Equal paths: equal EDS."""

    levels: Mapping[PathKey, Levels] = field(default_factory=frozen_map)

    def of(self, caller_switch: SwitchId | None, service: ServiceName, instance_switches: Iterable[SwitchId]) -> Levels:
        """The levels for this caller; a pair not computed (none of its callers was known): one level."""
        known = self.levels.get((caller_switch, service))
        if known is not None:
            return known
        everything = tuple(sorted(set(instance_switches)))
        return (everything,) if everything else ()


def compute_paths(
    topology: Topology,
    wanted: Mapping[SwitchId | None, Iterable[ServiceName]],
    instance_switches: Mapping[ServiceName, Iterable[SwitchId]],
    rules: PathRules,
) -> ServicePaths:
    """Levels for every caller switch in ``wanted`` and each service it calls there.

    Dijkstra runs once per caller switch (scipy, from all of them at once), not per caller or per
    instance: callers on one switch share everything."""
    sources = sorted(s for s in wanted if s is not None and s in topology.switches)
    rows: dict[SwitchId, Mapping[SwitchId, float]] = {}
    if sources:
        matrix, index = link_matrix(topology, usable_latency())
        distances = shortest_distances(matrix, [index[s] for s in sources])
        targets = {t for switches in instance_switches.values() for t in switches}
        for row, source in zip(distances, sources, strict=True):
            rows[source] = {t: float(row[index[t]]) if t in index else math.inf for t in targets}
    levels: dict[PathKey, Levels] = {}
    for caller_switch, services in wanted.items():
        row = rows.get(caller_switch) if caller_switch is not None else None
        for service in services:
            switches = set(instance_switches.get(service, ()))
            if not switches:
                levels[(caller_switch, service)] = ()
            elif row is None:  # the caller's place is unknown: no instance is nearer than another
                levels[(caller_switch, service)] = (tuple(sorted(switches)),)
            else:
                levels[(caller_switch, service)] = priority_levels({s: row[s] for s in switches}, rules)
    return ServicePaths(frozen_map(levels))
