"""The headline figure: a workload moves between edge and cloud under user load; how long until routes,
sidecars and the first mTLS request have followed, and how many requests were lost on the way.

The example testbed (examples/edge-cloud.yaml) under `edgectl run` with its CA: every service's declared
replicas placed by the controller, each instance an HTTP app behind its own Envoy in its node's namespace;
users on every edge host call web -> api -> db through their sidecars. One `api` instance is migrated `--rounds` times,
alternately to the cloud and back to its edge node, through the placement gRPC API. Per migration the
lab reads the stages from the controller's Watch events (decided; routes barrier-confirmed and sidecars
ACKed, as the convergence probes saw them), the agent (app started) and the users' own request
records (first request answered by the new instance, over mTLS): wall clock, one machine.

The chain is also split into back-to-back stages (``MigrationTimeline.split``), each the control plane's
(placement, the node agent, xDS), process start-up's (the app's Python start until it listens, Envoy's
boot until the xDS server handles its first request; from the agent's status.json and the server's
``connected_at``) or the
users' (the wait for their next request, the request itself). The control plane's own figure: new
sidecar serving (it ACKed its listener and secrets) -> every caller's sidecar ACKed the endpoints with
it, from the xDS server's per-node ACK times (``/api/v1/xds/clients``, sampled during each move).

Then the same on one service with no dependencies (tests/data/fabrics/two-edges.yaml, 4 moves): the
user latency with it at the edge and in the cloud, which the example's web -> api -> db chain blurs.

The node agents start each new sidecar beside its app (the instance held as starting first, so it is no
endpoint until its app listens too): Envoy's boot overlaps the app's start-up. Baseline, same run: the
same moves with each sidecar started once its app listens (agent `--sidecar-after-app`,
``--after-app-rounds``): the two start-ups one after the other.

Baseline, same run: the same moves with cold connections (``--cold-rounds``): the node agents warm no
new sidecar's connections (``--no-warm-up``) and sidecars connect without TCP Fast Open (`edgectl run
--no-tcp-fast-open`), so the first request through a new instance waits for a TCP and a TLS handshake on
each new connection. Its first request's time is reported per node moved to, beside the run's own.

Baseline, same run: the same moves on a controller without the readiness gate (no `--wait-for-sidecars`):
the new instance becomes an endpoint at placement, before its sidecar serves, and the old one is withdrawn
once the callers ACK that. Callers then connect to an instance that does not listen yet: Envoy's retry on
connect-failure hides most of it from users, at the price of a failed connection (counted from the
callers' admin stats) and a slower request; what the gate saves shows there, and in any request lost.

Run as root: .venv/bin/python benchmarks/migration.py [--rounds 20] [--rate 10]
Prints a table and, as the last line, the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mininet_topos.lab import Lab  # noqa: E402
from mininet_topos.loadgen import summarize  # noqa: E402
from mininet_topos.timeline import FIRST_REQUEST, NEW_INSTANCE_TO_CALLERS, MigrationTimeline, whose_totals  # noqa: E402

FABRIC = REPO / "examples" / "edge-cloud.yaml"
TWO_EDGES = REPO / "tests" / "data" / "fabrics" / "two-edges.yaml"
"""One service (web, no dependencies) and a user at edge site A: the user latency a move to the edge buys."""
STAGES = (
    "flows barrier-confirmed",
    "app started",
    "sidecars ACKed",
    "first mTLS request",
    "old instance withdrawn",
)
REFUSED = "cluster.svc/api.upstream_cx_connect_fail"
"""Callers' connections to an api instance that failed (Envoy retried those requests on another one)."""
CONTROL_PLANE_ONLY = NEW_INSTANCE_TO_CALLERS
GOAL_CHAIN_P99_MS = 300
GOAL_CONTROL_PLANE_P99_MS = 50
SETTLE_S = 1.5
WINDOW_S = 2.0


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def migrate_back_and_forth(
    lab: Lab, workload: str, edge: str, rounds: int, timelines: list[MigrationTimeline] | None = None
) -> tuple[int, int, list[float], list[float]]:
    """Move ``workload`` to the cloud and back ``rounds`` times under the users' load. Returns requests sent
    and failed during the moves, and the users' p50 latency before each move with the instance at the
    edge and in the cloud."""
    cloud = lab.site_of_tier("cloud")
    at_edge: list[float] = []
    in_cloud: list[float] = []
    begin = time.time()
    for i in range(rounds):
        before = summarize(lab.records(time.time() - WINDOW_S))
        (at_edge if i % 2 == 0 else in_cloud).append(before.p50_ms or 0.0)
        timeline = lab.migrate(workload, cloud if i % 2 == 0 else edge)
        if timeline.error and not timeline.new:
            raise SystemExit(f"migration {i} failed: {timeline.error}")
        if timelines is not None:
            timelines.append(timeline)
        workload = timeline.new
        time.sleep(SETTLE_S)
    during = summarize(lab.records(begin, time.time()))
    return during.sent, during.failed, at_edge, in_cloud


def run_lab(
    run_dir: Path,
    rounds: int,
    rate: float,
    gated: bool,
    timelines: list[MigrationTimeline] | None,
    fabric: Path = FABRIC,
    service: str = "api",
    sidecar_after_app: bool = False,
    cold_connections: bool = False,
) -> tuple[int, int, list[float], list[float], int, int]:  # sent, lost, at edge, in cloud, refused, agent errors
    def log(line: str) -> None:
        print(f"# {line}", file=sys.stderr)

    with Lab(
        fabric,
        run_dir,
        wait_for_sidecars=gated,
        log=log,
        sidecar_after_app=sidecar_after_app,
        cold_connections=cold_connections,
    ) as lab:
        lab.wait_declared_services()
        workload, edge = lab.instance_at_edge(service)
        lab.start_loads(rate=rate)
        time.sleep(WINDOW_S)
        refused_before = lab.envoy_counter(REFUSED)
        result = migrate_back_and_forth(lab, workload, edge, rounds, timelines)
        return (*result, lab.envoy_counter(REFUSED) - refused_before, len(lab.agent_errors()))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--baseline-rounds", type=int, default=4)
    parser.add_argument(
        "--after-app-rounds", type=int, default=10, help="moves with each sidecar started once its app listens"
    )
    parser.add_argument(
        "--cold-rounds",
        type=int,
        default=10,
        help="moves whose new connections open cold: no warm-up, no TCP Fast Open",
    )
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second per user")
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="edgectl-bench-migration-"))
    timelines: list[MigrationTimeline] = []
    sent, lost, at_edge, in_cloud, refused, agent_errors = run_lab(
        run_dir / "gated", args.rounds, args.rate, True, timelines
    )
    print("# baseline: the same moves without the readiness gate", file=sys.stderr)
    base_sent, base_lost, _, _, base_refused, _ = run_lab(
        run_dir / "ungated", args.baseline_rounds, args.rate, False, None
    )
    after_app, after_sent, after_lost = gated_baseline(
        run_dir, "after-app", "each sidecar started once its app listens", args, sidecar_after_app=True
    )
    after_chains = [t.chain_s for t in after_app if t.chain_s is not None]
    after_control = [s for t in after_app for n, _, s in t.split() if n == CONTROL_PLANE_ONLY and s is not None]
    cold, cold_sent, cold_lost = gated_baseline(
        run_dir, "cold", "cold connections (no warm-up, no TCP Fast Open)", args, cold_connections=True
    )
    cold_chains = [t.chain_s for t in cold if t.chain_s is not None]
    print("# one service alone (two edge sites and a cloud): what moving to the edge buys", file=sys.stderr)
    _, alone_lost, alone_edge, alone_cloud, _, _ = run_lab(
        run_dir / "alone", 4, args.rate, True, None, fabric=TWO_EDGES, service="web"
    )

    print(f"{'#':>3} {'to':<6}" + "".join(f" {name:>24}" for name in STAGES) + f" {'whole chain':>12}")
    for i, t in enumerate(timelines):
        stages = dict(t.stages())
        cells = "".join(f" {_cell(stages.get(name)):>24}" for name in STAGES)
        print(f"{i:>3} {t.to_node:<6}{cells} {_cell(t.chain_s):>12}")
    per_stage = {
        name: [s for t in timelines for stage, s in t.stages() if stage == name and s is not None] for name in STAGES
    }
    chains = [t.chain_s for t in timelines if t.chain_s is not None]
    print_split(timelines)
    splits = [t.split() for t in timelines]
    split_names = [(name, whose) for name, whose, _ in splits[0]] if splits else []
    per_split = {
        name: [s for split in splits for n, _, s in split if n == name and s is not None] for name, _ in split_names
    }
    totals = [whose_totals(split) for split in splits]
    per_whose = {whose: [v for t in totals if (v := t.get(whose)) is not None] for whose in {w for _, w in split_names}}
    control = per_split.get(CONTROL_PLANE_ONLY, [])
    app_start, envoy_boot = start_ups(timelines)
    figures = {
        "benchmark": "migration",
        "fabric": FABRIC.name,
        "migrations": len(timelines),
        "complete_timelines": len(chains),
        "stages_ms": {
            name: {"p50": ms(percentile(v, 50)), "p99": ms(percentile(v, 99))} for name, v in per_stage.items()
        },
        "whole_chain_ms_p50": ms(percentile(chains, 50)),
        "whole_chain_ms_p99": ms(percentile(chains, 99)),
        "whole_chain_goal_ms_p99": GOAL_CHAIN_P99_MS,
        "whole_chain_goal_met": bool(chains) and (percentile(chains, 99) or 0) * 1000 < GOAL_CHAIN_P99_MS,
        "split_ms": {
            name: {"whose": whose, "n": len(per_split[name]), **p50_p99(per_split[name])} for name, whose in split_names
        },
        "split_by_whose_ms": {whose: {"n": len(v), **p50_p99(v)} for whose, v in sorted(per_whose.items())},
        "control_plane_only_ms_p50": ms(percentile(control, 50)),
        "control_plane_only_ms_p99": ms(percentile(control, 99)),
        "control_plane_only_n": len(control),
        "control_plane_only_goal_ms_p99": GOAL_CONTROL_PLANE_P99_MS,
        "control_plane_only_goal_met": bool(control)
        and (percentile(control, 99) or 0) * 1000 < GOAL_CONTROL_PLANE_P99_MS,
        "start_up_dominated_by": dominating(app_start, envoy_boot),
        "start_ups_ms": {"app": p50_p99(app_start), "envoy": p50_p99(envoy_boot)},
        "started_beside": sum(1 for t in timelines if t.started_beside),
        "after_app_baseline": "the same moves, each sidecar started once its app listens (agent --sidecar-after-app)",
        "after_app_migrations": len(after_app),
        "after_app_whole_chain_ms": p50_p99(after_chains),
        "after_app_control_plane_only_ms": p50_p99(after_control),
        "after_app_start_ups_ms": dict(zip(("app", "envoy"), map(p50_p99, start_ups(after_app)), strict=True)),
        "after_app_requests_sent": after_sent,
        "after_app_requests_lost": after_lost,
        "first_request_ms_by_destination": first_requests_by_destination(timelines),
        "cold_baseline": "the same moves, new connections opened cold (agent --no-warm-up, edgectl --no-tcp-fast-open)",
        "cold_migrations": len(cold),
        "cold_whole_chain_ms": p50_p99(cold_chains),
        "cold_first_request_ms_by_destination": first_requests_by_destination(cold),
        "cold_requests_sent": cold_sent,
        "cold_requests_lost": cold_lost,
        "requests_sent_during_migrations": sent,
        "requests_lost_during_migrations": lost,
        "requests_lost_goal": 0,
        "caller_connect_failures": refused,
        "user_p50_ms_with_api_at_edge": round(statistics.median(at_edge), 1) if at_edge else None,
        "user_p50_ms_with_api_in_cloud": round(statistics.median(in_cloud), 1) if in_cloud else None,
        "alone_user_p50_ms_at_edge": round(statistics.median(alone_edge), 1) if alone_edge else None,
        "alone_user_p50_ms_in_cloud": round(statistics.median(alone_cloud), 1) if alone_cloud else None,
        "alone_requests_lost": alone_lost,
        "baseline": "the same moves, endpoints published at placement (no --wait-for-sidecars)",
        "baseline_migrations": args.baseline_rounds,
        "baseline_requests_sent": base_sent,
        "baseline_requests_lost": base_lost,
        "baseline_caller_connect_failures": base_refused,
        "agent_errors": agent_errors,
    }
    print(json.dumps(figures))
    return 0


def start_ups(timelines: list[MigrationTimeline]) -> tuple[list[float], list[float]]:
    """The moves' app start-ups and Envoy boots (seconds), each where it was seen."""
    pairs = [t.start_ups() for t in timelines]
    return [a for a, _ in pairs if a is not None], [e for _, e in pairs if e is not None]


def p50_p99(values: list[float]) -> dict[str, float | None]:
    return {"p50": ms(percentile(values, 50)), "p99": ms(percentile(values, 99))}


def dominating(app_start: list[float], envoy_boot: list[float]) -> str | None:
    """Which process start-up takes longer at the median: the app's or Envoy's."""
    if not app_start or not envoy_boot:
        return None
    return "app" if statistics.median(app_start) >= statistics.median(envoy_boot) else "envoy"


def gated_baseline(
    run_dir: Path,
    name: str,
    what: str,
    args: argparse.Namespace,
    *,
    sidecar_after_app: bool = False,
    cold_connections: bool = False,
) -> tuple[list[MigrationTimeline], int, int]:
    """The same moves (``--<name>-rounds``) on a lab with the readiness gate and these options; prints
    their chain. Returns the timelines, requests sent and requests lost."""
    print(f"# baseline: the same moves with {what}", file=sys.stderr)
    timelines: list[MigrationTimeline] = []
    rounds = getattr(args, f"{name.replace('-', '_')}_rounds")
    sent, lost, _, _, _, _ = run_lab(
        run_dir / name,
        rounds,
        args.rate,
        True,
        timelines,
        sidecar_after_app=sidecar_after_app,
        cold_connections=cold_connections,
    )
    print(f"# the {name} baseline's chain:")
    print_split(timelines)
    return timelines, sent, lost


def first_requests_by_destination(timelines: list[MigrationTimeline]) -> dict[str, dict[str, float | None]]:
    """The first request's own time (new connections through web -> api -> db) per node moved to."""
    by_node: dict[str, list[float]] = {}
    for t in timelines:
        seconds = dict((name, s) for name, _, s in t.split()).get(FIRST_REQUEST)
        if seconds is not None:
            by_node.setdefault(t.to_node, []).append(seconds)
    return {node: {"n": len(v), **p50_p99(v)} for node, v in sorted(by_node.items())}


def print_split(timelines: list[MigrationTimeline]) -> None:
    """Per move, the chain's back-to-back stages (ms), each marked with whose time it is."""
    if not timelines:
        return
    names = [(name, whose) for name, whose, _ in timelines[0].split()]
    print("# the chain split, ms (c: control plane, s: process start-up, u: the users)")
    for n, (name, whose) in enumerate(names):
        print(f"#   {n}{whose[0]}: {name}")
    print(f"{'#':>3} " + "".join(f" {f'{n}{whose[0]}':>7}" for n, (_, whose) in enumerate(names)))
    for i, t in enumerate(timelines):
        print(f"{i:>3} " + "".join(f" {_number(s):>7}" for _, _, s in t.split()))


def _number(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _cell(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


if __name__ == "__main__":
    sys.exit(main())
