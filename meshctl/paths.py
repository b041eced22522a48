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
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

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
    hysteresis: float = 0.25
    """A caller keeps its previous levels while they still hold within this fraction of the margin either
    way: an instance whose measured latency jitters around a level's bound does not flip between two
    priorities (and push new endpoints) with every measurement."""

    def margin(self, nearest_us: float) -> float:
        return max(self.margin_us, self.margin_ratio * nearest_us)

    def still_holds(self, levels: Levels, distance_us: Mapping[SwitchId, float]) -> bool:
        """Whether ``levels`` (a caller's previous ones, over the same instance switches) still fit these
        distances within the hysteresis band: each level's members within (1 + h) margins of its nearest,
        each next level starting beyond (1 - h) margins of it and no nearer than anything before it, and
        the unreachable (last, on their own) still the unreachable. The rule for one caller: ``compute_paths``
        applies it to all callers of a service at once (``holding_rows``, held to this one by the tests)."""
        if {s for level in levels for s in level} != set(distance_us):
            return False
        unreachable = {s for s, d in distance_us.items() if not math.isfinite(d)}
        reachable_levels = levels[:-1] if unreachable else levels
        if unreachable and set(levels[-1]) != unreachable:
            return False
        previous_anchor = previous_far = -math.inf
        for level in reachable_levels:
            values = [distance_us[s] for s in level]
            if not values or not all(math.isfinite(v) for v in values):
                return False
            anchor, far = min(values), max(values)
            if anchor < previous_far:  # something here is nearer than a member of the level before
                return False
            if previous_anchor > -math.inf and anchor <= previous_anchor + self.margin(previous_anchor) * (
                1 - self.hysteresis
            ):
                return False
            if far > anchor + self.margin(anchor) * (1 + self.hysteresis):
                return False
            previous_anchor, previous_far = anchor, far
        return True


NEAREST = "nearest"
ROUND_ROBIN = "round-robin"
ENDPOINT_ORDERS: Mapping[str, PathRules] = frozen_map(
    {NEAREST: PathRules(), ROUND_ROBIN: PathRules(margin_us=math.inf)}
)
"""``edgectl run --endpoint-order``: ``nearest``, each caller's nearest instances first (the levels above);
``round-robin``, every reachable instance in one level for every caller, so callers spread their calls
over all of them wherever they are: what a mesh without locality does (unreachable ones still come last)."""


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
    previous: ServicePaths | None = None,
    distances: DistanceCache | None = None,
    vectors: LevelVectors | None = None,
) -> ServicePaths:
    """Levels for every caller switch in ``wanted`` and each service it calls there. With ``previous`` (the
    last levels computed), a caller keeps its levels while they fit (``PathRules.still_holds``, checked
    for all callers of a service at once by ``holding_rows``).

    One Dijkstra per caller switch or per instance switch, whichever are fewer (``_distances``), never
    per caller or per (caller, instance): callers on one switch share everything. The levels of all
    caller switches of a service are then cut at once (``levels_of_rows``): a latency measurement
    costs this whole function, so it stays in numpy. With ``distances`` (kept by the caller between
    calls), the Dijkstras run once per caller switch and topology, not once per call; with ``vectors``
    (likewise kept), the hold check reuses what it read of each kept levels."""
    sources = sorted(s for s in wanted if s is not None and s in topology.switches)
    row_of = {source: row for row, source in enumerate(sources)}
    targets = sorted({t for switches in instance_switches.values() for t in switches if t in topology.switches})
    column_of = {target: column for column, target in enumerate(targets)}
    table_of = distances.table if distances is not None else _distances
    distances_now = table_of(topology, sources, targets)
    callers_of: dict[ServiceName, set[SwitchId | None]] = defaultdict(set)
    for caller_switch, services in wanted.items():
        for service in services:
            callers_of[service].add(caller_switch)
    levels: dict[PathKey, Levels] = {}
    for service, callers in callers_of.items():
        switches = tuple(sorted(set(instance_switches.get(service, ()))))
        known = sorted(c for c in callers if c is not None and c in row_of)
        for caller_switch in callers:
            if caller_switch not in row_of:  # its place is unknown: no instance is nearer than another
                one = (switches,) if switches else ()
                last = previous.levels.get((caller_switch, service)) if previous is not None else None
                levels[(caller_switch, service)] = last if last == one else one  # (the same object: no move)
        if not known:
            continue
        if not switches:
            levels.update(((c, service), ()) for c in known)
            continue
        rows = distances_now[[row_of[c] for c in known]]
        columns = np.array([column_of.get(t, -1) for t in switches])
        table = np.where(columns >= 0, rows[:, np.maximum(columns, 0)], math.inf)
        kept = [previous.levels.get((c, service)) for c in known] if previous is not None else []
        # Rows whose last levels still fit keep them (the same objects: nothing downstream moves); only the
        # others are cut again. A levels tuple equal to the last one always fits, so this is the same
        # answer as cutting every row and keeping the last levels where they fit, without the cutting:
        # on a busy fabric most callers' levels hold through a latency measurement.
        memo = vectors.of(service, switches) if vectors is not None else None
        holding = holding_rows(table, switches, kept, rules, memo) if kept else np.zeros(len(known), dtype=bool)
        recut = np.flatnonzero(~holding)
        fresh: dict[int, Levels] = {}
        if recut.size:
            fresh = dict(zip(recut.tolist(), levels_of_rows(table[recut], switches, rules, memo), strict=True))
        for row, caller_switch in enumerate(known):
            held = kept[row] if holding[row] else None
            levels[(caller_switch, service)] = held if held is not None else fresh[row]
        if vectors is not None:
            vectors.keep(service, (levels[(c, service)] for c in known))
    return ServicePaths(frozen_map(levels))


class DistanceCache:
    """Shortest latencies from caller switches to every switch, kept while the topology is the same
    object (the model's topology is immutable: a new measurement is a new one): placing an instance
    on a switch no instance of its service was on costs a look-up, not a Dijkstra per caller."""

    def __init__(self) -> None:
        self._topology: Topology | None = None
        self._matrix: Any = None
        self._index: Mapping[SwitchId, int] = {}
        self._rows: dict[SwitchId, npt.NDArray[np.float64]] = {}

    def table(
        self, topology: Topology, sources: Sequence[SwitchId], targets: Sequence[SwitchId]
    ) -> npt.NDArray[np.float64]:
        """Rows: ``sources``; columns: ``targets`` (all switches of ``topology``); inf when unreachable."""
        if not sources or not targets:
            return np.full((len(sources), len(targets)), math.inf)
        if topology is not self._topology:
            self._topology = topology
            self._matrix, self._index = link_matrix(topology, usable_latency())
            self._rows = {}
        missing = [source for source in sources if source not in self._rows]
        if missing:
            computed = shortest_distances(self._matrix, [self._index[source] for source in missing])
            self._rows.update(zip(missing, computed, strict=True))
        columns = [self._index[target] for target in targets]
        return np.stack([self._rows[source][columns] for source in sources])


class LevelVectors:
    """Per service, the level of each of its instance switches in each levels a caller has, kept between
    calls of ``compute_paths`` (its hold check reads them): through a latency measurement most callers
    keep their levels objects, and making their vectors again cost more than the check itself."""

    def __init__(self) -> None:
        self._of: dict[ServiceName, tuple[tuple[SwitchId, ...], dict[int, tuple[Levels, Any]]]] = {}

    def of(self, service: ServiceName, switches: tuple[SwitchId, ...]) -> dict[int, tuple[Levels, Any]]:
        """The service's vectors over ``switches`` (none kept when its instance switches changed)."""
        known = self._of.get(service)
        if known is None or known[0] != switches:
            known = self._of[service] = (switches, {})
        return known[1]

    def keep(self, service: ServiceName, levels: Iterable[Levels]) -> None:
        """Forget the vectors of every other levels of ``service`` (no caller has them any more)."""
        known = self._of.get(service)
        if known is not None:
            vectors = known[1]
            self._of[service] = (known[0], {id(kept): vectors[id(kept)] for kept in levels if id(kept) in vectors})


def _distances(topology: Topology, sources: Sequence[SwitchId], targets: Sequence[SwitchId]) -> npt.NDArray[np.float64]:
    """Shortest latency from each source switch (rows) to each target switch (columns), inf when
    unreachable. Dijkstra runs from whichever side is smaller: callers are usually spread over many
    switches and instances over a few, and distances to a switch are distances from it in the
    reversed graph."""
    if not sources or not targets:
        return np.full((len(sources), len(targets)), math.inf)
    matrix, index = link_matrix(topology, usable_latency())
    if len(targets) < len(sources):
        reverse = shortest_distances(matrix.T.tocsr(), [index[t] for t in targets])
        return np.ascontiguousarray(reverse[:, [index[s] for s in sources]].T)
    return shortest_distances(matrix, [index[s] for s in sources])[:, [index[t] for t in targets]]


def holding_rows(
    distance_us: npt.NDArray[np.float64],
    switches: Sequence[SwitchId],
    kept: Sequence[Levels | None],
    rules: PathRules,
    vectors: dict[int, tuple[Levels, npt.NDArray[np.int64] | None]] | None = None,
) -> npt.NDArray[np.bool_]:
    """``rules.still_holds(kept[row], row of distance_us)`` for every row (callers x ``switches``) at once;
    False where there is no kept levels. Each distinct kept levels becomes a vector of the level of each
    column once (``vectors``: those of earlier calls over the same ``switches``, by id of the levels,
    added to); then the bounds are checked level by level over all rows."""
    count, width = distance_us.shape
    column_of = {switch: column for column, switch in enumerate(switches)}
    memo: dict[int, tuple[Levels, npt.NDArray[np.int64] | None]] = {} if vectors is None else vectors
    level = np.zeros((count, width), dtype=np.int64)
    levels_in = np.zeros(count, dtype=np.int64)
    usable = np.zeros(count, dtype=bool)
    for row, levels in enumerate(kept):
        if levels is None:
            continue
        known = memo.get(id(levels))
        if known is None or known[0] is not levels:
            known = memo[id(levels)] = (levels, _level_vector(levels, column_of, width))
        vector = known[1]
        if vector is not None:
            level[row], levels_in[row], usable[row] = vector, len(levels), True
    if not usable.any():
        return usable
    unreachable = ~np.isfinite(distance_us)
    with_unreachable = unreachable.any(axis=1)
    # The unreachable, when there are any, are exactly the last level (and so the levels before are finite).
    holds = usable & (~with_unreachable | ((level == (levels_in - 1)[:, None]) == unreachable).all(axis=1))
    reachable_levels = levels_in - with_unreachable
    h = rules.hysteresis
    previous: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None
    with np.errstate(invalid="ignore"):  # (inf - inf in rows with fewer levels: masked out below)
        for k in range(int(reachable_levels.max(initial=0))):
            member = level == k
            anchor = np.where(member, distance_us, math.inf).min(axis=1)
            far = np.where(member, distance_us, -math.inf).max(axis=1)
            margin = np.maximum(rules.margin_us, rules.margin_ratio * anchor)
            fits = far <= anchor + margin * (1 + h)
            if previous is not None:
                previous_anchor, previous_far, previous_margin = previous
                fits &= anchor >= previous_far  # nothing here nearer than a member of the level before
                fits &= anchor > previous_anchor + previous_margin * (1 - h)
            holds &= (k >= reachable_levels) | fits  # (a row with fewer levels has no level k to check)
            previous = anchor, far, margin
    return holds  # type: ignore[no-any-return]


def _level_vector(levels: Levels, column_of: Mapping[SwitchId, int], width: int) -> npt.NDArray[np.int64] | None:
    """The level of each column; None when ``levels`` are not over exactly these switches (they cannot hold)."""
    vector = np.full(width, -1, dtype=np.int64)
    placed = 0
    for k, members in enumerate(levels):
        if not members:
            return None
        for switch in members:
            column = column_of.get(switch)
            if column is None or vector[column] >= 0:
                return None
            vector[column] = k
            placed += 1
    return vector if placed == width else None


def levels_of_rows(
    distance_us: npt.NDArray[np.float64],
    switches: Sequence[SwitchId],
    rules: PathRules,
    vectors: dict[int, tuple[Levels, Any]] | None = None,
) -> list[Levels]:
    """``priority_levels`` of every row of ``distance_us`` (callers x ``switches``), vectorised; each
    distinct levels made, with the level of each column, added to ``vectors`` (``holding_rows``'s).

    Rows are sorted (ties by switch id, as ``switches`` is sorted), then each column either joins its
    row's current level or opens the next one; the few distinct (order, level) patterns are turned
    into tuples once."""
    order = np.argsort(distance_us, axis=1, kind="stable")
    ordered = np.take_along_axis(distance_us, order, axis=1)
    level = np.zeros(order.shape, dtype=np.int64)
    anchor = ordered[:, 0].copy()
    for column in range(1, ordered.shape[1]):
        value = ordered[:, column]
        finite = np.where(np.isfinite(anchor), anchor, 0.0)  # past an unreachable anchor nothing opens a level
        bound = anchor + np.maximum(rules.margin_us, rules.margin_ratio * finite)
        opens = (value > bound) | (np.isinf(value) & np.isfinite(anchor))  # the unreachable: a level of their own
        level[:, column] = level[:, column - 1] + opens
        anchor = np.where(opens, value, anchor)
    patterns, inverse = np.unique(np.concatenate([order, level], axis=1), axis=0, return_inverse=True)
    width = order.shape[1]
    built = []
    for pattern in patterns.tolist():
        grouped: dict[int, list[SwitchId]] = defaultdict(list)
        for position, at_level in zip(pattern[:width], pattern[width:], strict=True):
            grouped[at_level].append(switches[position])
        built.append(tuple(tuple(sorted(grouped[k])) for k in sorted(grouped)))
    if vectors is not None:
        for pattern, levels in zip(patterns, built, strict=True):
            vector = np.empty(width, dtype=np.int64)
            vector[pattern[:width]] = pattern[width:]
            vectors[id(levels)] = (levels, vector)
    return [built[i] for i in np.asarray(inverse).ravel().tolist()]
