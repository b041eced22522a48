"""Route recomputation after one link failure, on real and synthetic backbones, against networkx.

Graphs come from topohub (PyPI): every Internet Topology Zoo graph and Gabriel graphs (topohub's up to
500 nodes; larger ones generated the same way: random points, Gabriel edges, seeded). Each becomes a
FabricState the way the controller sees a fabric: one switch per node, one cable per edge (latency from
the edge's delay if given, else ~5 us per km of its length, else from the nodes' coordinates, else 1
ms), one host per switch, then SwitchConnected and LinkDiscovered for everything. The busiest cable
(highest utilisation in topohub's ECMP figures, preferring one whose loss does not cut the graph) then
goes down.

- baseline: ``networkx.all_pairs_dijkstra_path`` on the graph without that cable (paths only:
  no backups, no flows).
- ours: what the controller does on LinkWentDown: ``compute_routes`` (all pairs, primaries and loop-free
  alternates), ``changed_entries`` against the previous plan, ``recompile`` of the entries that
  moved, ``diff_switch`` for every touched switch (the FlowMods and GroupMods to send), and
  ``make_rounds``: the loop-free order they are sent in (a moving primary after the moving primaries
  on its new path).

Both are repeated (median and p95 reported); a benchmark, not a test: nothing asserts on time.
Prints a table, then one JSON object of figures as the last line.

    .venv/bin/python benchmarks/routes.py [--quick] [--zoo all|largest|none] [--gabriel 100,300,...]

Needs ``topohub`` (``pip install topohub``).
"""

from __future__ import annotations

import argparse
import gc
import importlib.resources
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402

from netmodel import events as ev  # noqa: E402
from netmodel.fabric import CableSpec, FabricSpec, HostSpec, SwitchSpec, build_state  # noqa: E402
from netmodel.ids import HostId, PortNo, SiteId, SwitchId  # noqa: E402
from netmodel.state import FabricState  # noqa: E402
from netmodel.types import LinkId, Site, Tier  # noqa: E402
from sdnctl.flows import CompiledSwitch, compile_all, recompile_switches  # noqa: E402
from sdnctl.pathing import RoutePlan, changed_entries, compute_routes  # noqa: E402
from sdnctl.update_order import make_rounds  # noqa: E402

US_PER_KM = 5.0  # light in fibre: about 200,000 km/s
DEFAULT_LATENCY_US = 1000
GABRIEL_SIZES = (100, 300, 500, 1000)
QUICK_GABRIEL_SIZES = (100, 500)
TIME_PER_SIDE_S = 1.0  # repeat each side until about this long (within the rep limits)


@dataclass
class Graph:
    name: str
    family: str
    nodes: list[Any]
    edges: list[tuple[Any, Any, dict[str, Any]]]
    pos: dict[Any, tuple[float, float]]


# -- loading ------------------------------------------------------------------------------------------------


def load(key: str, family: str) -> Graph:
    import topohub

    data = topohub.get(key)
    nodes = [n["id"] for n in data["nodes"]]
    pos = {n["id"]: tuple(n["pos"]) for n in data["nodes"] if "pos" in n}
    edges = [(e["source"], e["target"], e) for e in data["edges"] if e["source"] != e["target"]]
    return Graph(key, family, nodes, edges, pos)


def gabriel(size: int) -> Graph:
    """topohub's Gabriel graph of that size, or one generated alike (topohub stops at 500 nodes)."""
    import topohub

    if (importlib.resources.files(topohub) / "data" / "gabriel" / str(size) / "0.json").is_file():
        return load(f"gabriel/{size}/0", "gabriel")
    return generated_gabriel(size)


def generated_gabriel(size: int, seed: int = 0) -> Graph:
    """A Gabriel graph as topohub makes them: points uniform on a square of side 100 km * sqrt(n) (its
    density), an edge where the circle on the two points as diameter holds no other point."""
    from scipy.spatial import Delaunay, cKDTree

    points = np.random.default_rng(seed).uniform(0, 100 * math.sqrt(size), (size, 2))
    candidates: set[tuple[int, int]] = set()
    for a, b, c in Delaunay(points).simplices.tolist():  # every Gabriel edge is a Delaunay edge
        candidates.update({(min(a, b), max(a, b)), (min(b, c), max(b, c)), (min(a, c), max(a, c))})
    tree = cKDTree(points)
    edges = []
    for a, b in sorted(candidates):
        middle, radius = (points[a] + points[b]) / 2, float(np.linalg.norm(points[a] - points[b])) / 2
        if all(i in (a, b) for i in tree.query_ball_point(middle, radius * (1 - 1e-9))):
            edges.append((a, b, {"dist": round(2 * radius, 2)}))
    pos = {i: (float(x), float(y)) for i, (x, y) in enumerate(points.tolist())}
    return Graph(f"gabriel/{size}/generated", "gabriel", list(range(size)), edges, pos)


def zoo_keys(which: str) -> list[str]:
    if which == "none":
        return []
    import topohub

    folder = importlib.resources.files(topohub) / "data" / "topozoo"
    names = [entry.name.removesuffix(".json") for entry in folder.iterdir() if entry.name.endswith(".json")]
    keys = sorted(f"topozoo/{name}" for name in names)
    if which == "largest":
        sizes = {key: len(json.loads((folder / f"{key.split('/')[1]}.json").read_text())["nodes"]) for key in keys}
        keys = sorted(keys, key=lambda k: -sizes[k])[:10]
    return keys


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    (lon1, lat1), (lon2, lat2) = (map(math.radians, a), map(math.radians, b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def latency_us(graph: Graph, u: Any, v: Any, attrs: dict[str, Any]) -> int:
    for key, scale in (("delay_us", 1.0), ("delay_ms", 1000.0), ("delay", 1000.0)):  # delay in ms unless named
        value = attrs.get(key)
        if isinstance(value, int | float):
            return round(value * scale)
    dist = attrs.get("dist")
    if isinstance(dist, int | float):
        return round(dist * US_PER_KM)
    if u in graph.pos and v in graph.pos and graph.family == "topozoo":  # (longitude, latitude)
        return round(haversine_km(graph.pos[u], graph.pos[v]) * US_PER_KM)
    return DEFAULT_LATENCY_US


@dataclass
class Fabric:
    state: FabricState
    dpid: dict[Any, SwitchId]
    cables: list[tuple[Any, Any, LinkId, int, dict[str, Any]]]  # (u, v, u->v link, latency us, attrs)


def build_fabric(graph: Graph) -> Fabric:
    def order(node: Any) -> tuple[int, Any]:
        return (0, int(node)) if str(node).isdigit() else (1, str(node))

    nodes = sorted(graph.nodes, key=order)
    dpid = {node: SwitchId(i + 1) for i, node in enumerate(nodes)}
    name = {node: f"s{i}" for i, node in enumerate(nodes)}
    next_port = dict.fromkeys(nodes, 1)

    def port(node: Any) -> PortNo:
        next_port[node] += 1
        return PortNo(next_port[node] - 1)

    specs, cables = [], []
    for u, v, attrs in graph.edges:
        latency = latency_us(graph, u, v, attrs)
        pu, pv = port(u), port(v)
        specs.append(CableSpec(name[u], pu, name[v], pv, latency / 1000, 1000.0))
        cables.append((u, v, LinkId(dpid[u], pu, dpid[v], pv), latency, attrs))
    hosts = tuple(
        HostSpec(HostId(f"h{i}"), name[node], port(node), f"10.{(i >> 8) & 255}.{i & 255}.1", "")
        for i, node in enumerate(nodes)
    )
    spec = FabricSpec(
        name=graph.name,
        prefix_len=8,
        sites=(Site(SiteId("core"), Tier.METRO, "any"),),
        switches=tuple(SwitchSpec(name[node], dpid[node], SiteId("core")) for node in nodes),
        cables=tuple(specs),
        hosts=hosts,
        nodes=(),
        services=(),
    )
    state = build_state(spec)
    for switch in sorted(state.topology.switches):
        state = state.apply(ev.SwitchConnected(switch, (), 0.0))
    for link in sorted(state.topology.links):
        state = state.apply(ev.LinkDiscovered(link, 0.0))
    return Fabric(state, dpid, cables)


def busiest_cable(graph: Graph, fabric: Fabric) -> int:
    """Index into fabric.cables: highest ECMP utilisation, preferring a cable that is not a bridge."""
    simple = nx.Graph((u, v) for u, v, _ in graph.edges)
    bridges = {frozenset(edge) for edge in nx.bridges(simple)}
    if all("ecmp_fwd" in attrs for *_, attrs in fabric.cables):

        def load_of(i: int) -> float:
            attrs = fabric.cables[i][4]
            return float(attrs["ecmp_fwd"].get("uni", 0)) + float(attrs.get("ecmp_bwd", {}).get("uni", 0))

    else:
        centrality = nx.edge_betweenness_centrality(simple)

        def load_of(i: int) -> float:
            u, v = fabric.cables[i][:2]
            return float(centrality.get((u, v), centrality.get((v, u), 0.0)))  # networkx is untyped

    def rank(i: int) -> tuple[bool, float]:
        u, v = fabric.cables[i][:2]
        return (frozenset((u, v)) not in bridges, load_of(i))

    return max(range(len(fabric.cables)), key=rank)


def baseline_graph(fabric: Fabric, failed: int) -> nx.Graph:
    """The same graph for networkx: lowest latency per node pair, the failed cable removed."""
    graph = nx.Graph()
    graph.add_nodes_from(fabric.dpid)
    for i, (u, v, _, latency, _) in enumerate(fabric.cables):
        if i == failed:
            continue
        if not graph.has_edge(u, v) or graph[u][v]["latency_us"] > latency:
            graph.add_edge(u, v, latency_us=latency)
    return graph


# -- timing ------------------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any], min_reps: int, max_reps: int) -> tuple[list[float], Any]:
    """Run fn at least min_reps times and until ~TIME_PER_SIDE_S has passed (at most max_reps)."""
    samples: list[float] = []
    result = None
    spent = 0.0
    while len(samples) < min_reps or (spent < TIME_PER_SIDE_S and len(samples) < max_reps):
        result = None  # the previous run's result is freed here, not inside the next run's timing
        gc.collect()
        start = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - start
        samples.append(elapsed * 1000)
        spent += elapsed
    return samples, result


def p95(samples: list[float]) -> float:
    return float(np.percentile(samples, 95))


@dataclass
class Recompute:
    plan: RoutePlan
    changed: list[tuple[SwitchId, SwitchId]]
    flow_changes: int
    touched: int
    stages_ms: dict[str, float]
    rounds: int  # the make phase's loop-free rounds


def recompute(state: FabricState, old_plan: RoutePlan, old_tables: dict[SwitchId, CompiledSwitch]) -> Recompute:
    """What the route engine does after a link event: the new plan (incremental from the old one),
    the moved entries, and the new tables with their FlowMod/GroupMod deltas per touched switch."""
    t0 = time.perf_counter()
    plan = compute_routes(state, previous=old_plan)
    t1 = time.perf_counter()
    changed = changed_entries(old_plan, plan)
    t2 = time.perf_counter()
    touched = recompile_switches(plan, old_tables, changed)
    t3 = time.perf_counter()
    rounds = make_rounds({dpid: delta for dpid, (_, delta) in touched.items() if delta}, old_plan, plan)
    t4 = time.perf_counter()
    deltas = [delta for _, delta in touched.values()]
    stages = {"routes": t1 - t0, "changed": t2 - t1, "recompile_and_delta": t3 - t2, "order": t4 - t3}
    return Recompute(
        plan,
        changed,
        sum(d.size for d in deltas),
        sum(1 for d in deltas if d),
        {k: v * 1000 for k, v in stages.items()},
        len(rounds),
    )


def routes_agree(plan: RoutePlan, fabric: Fabric, graph: nx.Graph, sources: int = 3) -> bool:
    """Cross-check a few sources: our distances equal networkx's."""
    for node in sorted(fabric.dpid, key=lambda n: fabric.dpid[n])[:sources]:
        lengths = nx.single_source_dijkstra_path_length(graph, node, weight="latency_us")
        row = plan.distance_us[plan.index[fabric.dpid[node]]]
        for other, switch in fabric.dpid.items():
            expected = lengths.get(other, math.inf)
            if row[plan.index[switch]] != expected:
                return False
    return True


def run_graph(graph: Graph, min_reps: int, max_reps: int) -> dict[str, Any]:
    fabric = build_fabric(graph)
    failed = busiest_cable(graph, fabric)
    u, v, link, latency, _ = fabric.cables[failed]

    start = time.perf_counter()
    old_plan = compute_routes(fabric.state)
    old_tables = compile_all(old_plan)
    full_ms = (time.perf_counter() - start) * 1000
    after = fabric.state.apply(ev.LinkWentDown(link))

    reference = baseline_graph(fabric, failed)
    # The set-up (up to 750,000 compiled flows) is long-lived: keep it out of the collector's scans, as
    # the controller does with gc.freeze(); else full collections land in whichever side runs then.
    gc.collect()
    gc.freeze()
    try:
        # The last result is dropped at once: kept, its ~125,000 path lists would sit in every collection
        # (and the caches) while ours is timed.
        base_samples = timed(lambda: dict(nx.all_pairs_dijkstra_path(reference, weight="latency_us")), 3, max_reps)[0]
        stages: list[dict[str, float]] = []

        def ours() -> Recompute:
            result = recompute(after, old_plan, old_tables)
            stages.append(result.stages_ms)
            return result

        ours_samples, result = timed(ours, min_reps, max_reps)
    finally:
        gc.unfreeze()

    baseline_ms = statistics.median(base_samples)
    recompute_ms = statistics.median(ours_samples)
    stages_ms = {name: statistics.median(s[name] for s in stages) for name in stages[0]}
    return {
        "name": graph.name,
        "family": graph.family,
        "switches": len(fabric.dpid),
        "links": len(fabric.cables),
        "failed_link": f"{u}-{v} ({latency} us)",
        "baseline_ms": round(baseline_ms, 3),
        "baseline_p95_ms": round(p95(base_samples), 3),
        "baseline_reps": len(base_samples),
        "recompute_ms": round(recompute_ms, 3),
        "recompute_p95_ms": round(p95(ours_samples), 3),
        "recompute_reps": len(ours_samples),
        "speedup": round(baseline_ms / recompute_ms, 2) if recompute_ms > 0 else None,
        "stages_ms": {k: round(x, 3) for k, x in stages_ms.items()},
        "routes_speedup": round(baseline_ms / stages_ms["routes"], 2) if stages_ms["routes"] > 0 else None,
        "changed_entries": len(result.changed),
        "touched_switches": result.touched,
        "flow_changes": result.flow_changes,
        "rounds": result.rounds,
        "flows_total": sum(len(c.config.flows) + len(c.config.groups) for c in old_tables.values()),
        "full_compile_ms": round(full_ms, 1),
        "routes_agree": routes_agree(result.plan, fabric, reference),
    }


# -- report ------------------------------------------------------------------------------------------------


HEADER = (
    f"{'graph':<24} {'sw':>4} {'links':>5} {'networkx ms':>11} {'p95':>7} {'ours ms':>8} {'p95':>7} {'speedup':>7} "
    f"{'routes ms':>9} {'speedup':>7} {'moved':>6} {'sw touched':>10} {'changes':>7} {'rounds':>6} {'full ms':>8} "
    f"{'ok':>3}"
)


def row(g: dict[str, Any]) -> str:
    return (
        f"{g['name']:<24.24} {g['switches']:>4} {g['links']:>5} {g['baseline_ms']:>11.2f} {g['baseline_p95_ms']:>7.2f} "
        f"{g['recompute_ms']:>8.2f} "
        f"{g['recompute_p95_ms']:>7.2f} {g['speedup']:>6.1f}x "
        f"{g['stages_ms']['routes']:>9.2f} {g['routes_speedup']:>6.1f}x "
        f"{g['changed_entries']:>6} {g['touched_switches']:>10} {g['flow_changes']:>7} {g['rounds']:>6} "
        f"{g['full_compile_ms']:>8.0f} "
        f"{'yes' if g['routes_agree'] else 'NO':>3}"
    )


def summarize(graphs: list[dict[str, Any]]) -> dict[str, Any]:
    if not graphs:
        return {}
    speedups = [g["speedup"] for g in graphs if g["speedup"] is not None]
    routes_speedups = [g["routes_speedup"] for g in graphs if g["routes_speedup"] is not None]
    largest = max(graphs, key=lambda g: g["switches"])
    slowest = min(graphs, key=lambda g: g["speedup"] if g["speedup"] is not None else math.inf)
    return {
        "graphs": len(graphs),
        "median_speedup": round(statistics.median(speedups), 2),
        "min_speedup": min(speedups),
        "max_speedup": max(speedups),
        "slower_than_networkx": sum(1 for x in speedups if x < 1),
        "slowest": {k: slowest[k] for k in ("name", "switches", "baseline_ms", "recompute_ms", "changed_entries")},
        "median_routes_speedup": round(statistics.median(routes_speedups), 2),
        "min_routes_speedup": min(routes_speedups),
        "routes_slower_than_networkx": sum(1 for x in routes_speedups if x < 1),
        "largest": {
            k: largest[k] for k in ("name", "switches", "baseline_ms", "recompute_ms", "speedup", "routes_speedup")
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer graphs and repetitions")
    parser.add_argument("--zoo", choices=("all", "largest", "none"), default=None)
    parser.add_argument("--gabriel", default=None, help="comma-separated Gabriel graph sizes (5..500)")
    parser.add_argument("--reps", type=int, default=None, help="at least this many timed runs per side")
    parser.add_argument("--json-all", action="store_true", help="every Zoo graph in the JSON, not the 10 largest")
    args = parser.parse_args()
    try:
        import topohub
    except ImportError:
        print("benchmarks/routes.py needs topohub: .venv/bin/pip install topohub", file=sys.stderr)
        return 2

    zoo = args.zoo or ("largest" if args.quick else "all")
    sizes = (
        tuple(int(s) for s in args.gabriel.split(",") if s)
        if args.gabriel is not None
        else (QUICK_GABRIEL_SIZES if args.quick else GABRIEL_SIZES)
    )
    min_reps = args.reps or (3 if args.quick else 7)
    max_reps = max(min_reps, 15 if args.quick else 41)

    results: dict[str, list[dict[str, Any]]] = {"gabriel": [], "topozoo": []}
    started = time.perf_counter()
    print(f"Route recompute after one link failure (median of repeated runs; p95 of ours). min reps {min_reps}.")
    print(HEADER)
    for size in sizes:
        g = run_graph(gabriel(size), min_reps, max_reps)
        results["gabriel"].append(g)
        print(row(g), flush=True)
    zoo_results = results["topozoo"]
    for key in zoo_keys(zoo):
        zoo_results.append(run_graph(load(key, "topozoo"), min_reps, max_reps))
    largest_zoo = sorted(zoo_results, key=lambda g: -g["switches"])[:10]
    if zoo_results:
        print(f"-- Topology Zoo: {len(zoo_results)} graphs; the {len(largest_zoo)} largest:")
        for g in largest_zoo:
            print(row(g))
        s = summarize(zoo_results)
        print(
            f"-- Topology Zoo, all {s['graphs']}: speedup median {s['median_speedup']}x "
            f"(min {s['min_speedup']}x on {s['slowest']['name']}, max {s['max_speedup']}x; "
            f"{s['slower_than_networkx']} slower than networkx); routes alone median {s['median_routes_speedup']}x "
            f"(min {s['min_routes_speedup']}x, {s['routes_slower_than_networkx']} slower)"
        )
    elapsed = time.perf_counter() - started
    print(
        "networkx = all_pairs_dijkstra_path (paths only); ours = compute_routes + changed_entries + recompile + "
        "diff_switch + make_rounds (routes, loop-free alternates, FlowMods, their loop-free order); routes ms = "
        "the compute_routes part of ours; moved = changed (switch, dst) entries; changes = flow and group mods; "
        "rounds = the make phase's loop-free rounds; full ms = compute_routes + "
        f"compile_flows from scratch (once); ok = distances match networkx. {elapsed:.0f} s in all."
    )
    figures = {
        "benchmark": "routes",
        "unit": "ms",
        # The Zoo's 200-odd graphs are summarised; only the largest are listed (all with --json-all).
        "graphs": results["gabriel"] + (zoo_results if args.json_all else largest_zoo),
        "summary": {"gabriel": summarize(results["gabriel"]), "topozoo": summarize(results["topozoo"])},
        "elapsed_s": round(elapsed, 1),
        "env": {
            "python": platform.python_version(),
            "networkx": nx.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "topohub": getattr(topohub, "__version__", "?"),
        },
    }
    print(json.dumps(figures, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
