"""Service paths end to end: where a controller puts a call graph's instances and how callers pick them, as
users see it through the real sidecars, against two baselines, in one run.

The fixture is examples/online-boutique.yaml (Online Boutique's service graph, its calls weighted by a
typical user request, on the example's edge-cloud fabric; the edge cannot hold every instance). Three
variants, each a fresh lab (`edgectl run` with its CA, the Mininet testbed with real link delay, every
declared instance an app behind its own Envoy, mTLS), differing only in the controller's flags:

  (a) --placement-profile kube-default-like --endpoint-order round-robin   kube-scheduler, a mesh without locality
  (b) --placement-profile diktyo-like       --endpoint-order round-robin   Diktyo's network-aware placement
  (c) --placement-profile latency-first     --endpoint-order nearest       ours: per-caller priorities

The same load on each: users on u1, u2 and u3 (one per edge site), each through its own client sidecar,
call `frontend` at a constant rate for the same duration; every frontend request makes the fixture's
weighted calls (mininet_topos/app.py). Per variant: where each instance went (the controller places the
declared replicas itself), the users' request latency p50/p99 (end to end, every hop through the
sidecars), requests lost, and the bytes that crossed the edge sites' uplinks into the metro ring (and the
metro-cloud links) during the load, from the OVS port counters (`ovs-ofctl dump-ports`) of the testbed's
switches. Then, on (c), the app of the instance of the hot service (`currencyservice`, 4 calls per user
request) that the callers use most is killed under the load (as a crash: its sidecar stays up): how long
until the callers that used it are served by another instance, and how many user requests were lost.

Run as root (the lab builds a Mininet testbed): python -m benchmarks.service_paths [--duration 30] [--rate 5]
Human lines, then the figures as one JSON line; exit 1 when a variant could not run or served nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mininet_topos.controller_process import WaitTimedOut, wait_until  # noqa: E402
from mininet_topos.lab import NOT_YET, Lab  # noqa: E402
from mininet_topos.loadgen import summarize  # noqa: E402
from netmodel.fabric import FabricSpec  # noqa: E402
from netmodel.types import Tier  # noqa: E402

FABRIC = REPO / "examples" / "online-boutique.yaml"
HOT_SERVICE = "currencyservice"
PLACE_TIMEOUT_S = 180.0
SETTLE_S = 1.5
"""After the load window: requests sent in it finish before their records are read."""


@dataclass(frozen=True)
class Variant:
    key: str
    profile: str
    endpoint_order: str

    @property
    def label(self) -> str:
        return f"({self.key}) --placement-profile {self.profile} --endpoint-order {self.endpoint_order}"


VARIANTS = (
    Variant("a", "kube-default-like", "round-robin"),
    Variant("b", "diktyo-like", "round-robin"),
    Variant("c", "latency-first", "nearest"),
)


# -- OVS port counters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwitchPort:
    """One end of a cable as OVS counts it: the switch (its bridge) and the OpenFlow port number."""

    bridge: str
    port: int
    link: str  # "ea1-m1": the cable, named by its two switches


def cable_ends(spec: FabricSpec, near: set[Tier], far: set[Tier]) -> list[SwitchPort]:
    """The ``near``-tier end of every cable between a switch of a ``near`` tier site and one of a ``far`` tier
    site (each cable counted once, at that end)."""
    tiers = {site.id: site.tier for site in spec.sites}
    tier_of = {switch.name: tiers.get(switch.site) for switch in spec.switches}
    ends = []
    for cable in spec.cables:
        for here, port, there in ((cable.a, cable.a_port, cable.b), (cable.b, cable.b_port, cable.a)):
            if tier_of.get(here) in near and tier_of.get(there) in far:
                ends.append(SwitchPort(here, int(port), f"{here}-{there}"))
    return ends


def parse_port_bytes(text: str) -> dict[int, int]:
    """rx + tx bytes per OpenFlow port from ``ovs-ofctl -O OpenFlow13 dump-ports`` output."""
    out: dict[int, int] = {}
    port: int | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("port"):
            head = line.split(":")[0].split()[-1]
            port = int(head) if head.isdigit() else None
            line = line.split(":", 1)[1].strip()
        if port is None or not (line.startswith("rx ") or line.startswith("tx ")):
            continue
        for field in line.split(","):
            key, _, value = field.strip().partition("=")
            if key == "bytes" and value.isdigit():
                out[port] = out.get(port, 0) + int(value)
    return out


def bytes_through(ends: Iterable[SwitchPort]) -> int:
    """Bytes both ways through these switch ports so far (read from the switches now)."""
    total = 0
    by_bridge: dict[str, list[int]] = {}
    for end in ends:
        by_bridge.setdefault(end.bridge, []).append(end.port)
    for bridge, ports in by_bridge.items():
        text = subprocess.run(
            ["ovs-ofctl", "-O", "OpenFlow13", "dump-ports", bridge],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        counts = parse_port_bytes(text)
        total += sum(counts.get(port, 0) for port in ports)
    return total


# -- one variant ----------------------------------------------------------------------------------------


def placement_of(workloads: list[dict[str, Any]]) -> dict[str, list[str]]:
    where: dict[str, list[str]] = {}
    for workload in workloads:
        where.setdefault(str(workload["service"]), []).append(str(workload["node"]))
    return {service: sorted(nodes) for service, nodes in sorted(where.items())}


def ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def run_variant(variant: Variant, args: argparse.Namespace, run_dir: Path, fail_hot: bool) -> dict[str, Any]:
    log = lambda line: print(f"# {line}", file=sys.stderr)  # noqa: E731
    extra = ("--placement-profile", variant.profile, "--endpoint-order", variant.endpoint_order)
    started = time.monotonic()
    with Lab(FABRIC, run_dir, log=log, extra_args=extra) as lab:
        workloads = lab.wait_declared_services(timeout=PLACE_TIMEOUT_S)
        spec = lab.net.spec
        uplinks = cable_ends(spec, {Tier.EDGE}, {Tier.METRO, Tier.CLOUD})
        cloud_links = cable_ends(spec, {Tier.METRO}, {Tier.CLOUD})
        up_s = time.monotonic() - started
        lab.start_loads(rate=args.rate)
        time.sleep(args.warmup)
        uplink_before, cloud_before = bytes_through(uplinks), bytes_through(cloud_links)
        begin = time.time()
        time.sleep(args.duration)
        end = time.time()
        uplink_bytes, cloud_bytes = bytes_through(uplinks) - uplink_before, bytes_through(cloud_links) - cloud_before
        time.sleep(SETTLE_S)
        users = summarize(lab.records(begin, end))
        result: dict[str, Any] = {
            "profile": variant.profile,
            "endpoint_order": variant.endpoint_order,
            "placement": placement_of(workloads),
            "requests": users.sent,
            "lost": users.failed,
            "p50_ms": ms(users.p50_ms),
            "p99_ms": ms(users.p99_ms),
            "edge_uplink_bytes": uplink_bytes,
            "edge_uplinks": sorted(end.link for end in uplinks),
            "metro_cloud_bytes": cloud_bytes,
            "metro_cloud_links": sorted(end.link for end in cloud_links),
            "bring_up_s": round(up_s, 1),
            "users": sorted(host.id for host in spec.hosts),
        }
        if fail_hot:
            result["failover"] = fail_hot_instance(lab, HOT_SERVICE)
        result["agent_errors"] = lab.agent_errors()
    return result


def fail_hot_instance(lab: Lab, service: str) -> dict[str, Any]:
    """Kill the app of the ``service`` instance the users' requests used most lately (its sidecar stays up);
    how long until the frontends that used it are served by another instance, and what was lost."""
    prefix = f"{service}-"
    recent = [r for r in lab.records(time.time() - 3.0) if r.ok]
    used = Counter(w for r in recent for w in set(r.served_by) if w.startswith(prefix))
    if not used:
        raise RuntimeError(f"no user request used {service} in the last 3 s")
    victim = used.most_common(1)[0][0]
    callers = {r.workload for r in recent if victim in r.served_by}
    found = lab.workload_status(victim)  # its node agent's status.json
    if found is None or not found[1].get("app_pid"):
        raise RuntimeError(f"no node agent runs {victim}")
    node, row = found
    mark = len(lab.events())
    killed_at = time.time()
    os.kill(row["app_pid"], signal.SIGKILL)

    def served_by_another() -> Any:
        return next(
            (
                r
                for r in lab.records(killed_at)
                if r.ok and r.workload in callers and any(w.startswith(prefix) and w != victim for w in r.served_by)
            ),
            None,
        )

    first = wait_until(served_by_another, 20, 0.02, "a caller served by another instance", NOT_YET)
    switched_s = first.t + first.ms / 1000.0 - killed_at
    withdrawn = lab.wait_event(lambda e: e.kind == "FAILOVER_STARTED", 20, mark)
    try:
        replaced = lab.wait_event(lambda e: e.kind == "MIGRATION_COMPLETED" and e.from_workload_id == victim, 30, mark)
        replacement: dict[str, Any] = {"workload": replaced.workload_id, "node": replaced.node}
        replacement["completed_s"] = round(replaced.at - killed_at, 3)
    except TimeoutError:
        replacement = {"workload": None}
    time.sleep(2.0)
    after = summarize(lab.records(killed_at - 1.0, time.time() - SETTLE_S))
    return {
        "service": service,
        "killed": victim,
        "node": node,
        "callers": sorted(c for c in callers if c),
        "served_by_another_after_ms": round(switched_s * 1000, 1),
        "failover_started_after_ms": round((withdrawn.at - killed_at) * 1000, 1),
        "replacement": replacement,
        "requests": after.sent,
        "lost": after.failed,
        "p50_ms": ms(after.p50_ms),
        "p99_ms": ms(after.p99_ms),
    }


# -- report ---------------------------------------------------------------------------------------------


def kib(value: float) -> str:
    return f"{value / 1024:,.1f} KiB"


def print_variant(variant: Variant, result: dict[str, Any]) -> None:
    print(variant.label)
    for service, nodes in result["placement"].items():
        print(f"    {service:<22} {' '.join(nodes)}")
    sent = max(result["requests"], 1)
    print(
        f"    users: {result['requests']} requests, {result['lost']} lost, "
        f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms"
    )
    print(
        f"    edge uplinks ({', '.join(result['edge_uplinks'])}): {kib(result['edge_uplink_bytes'])}, "
        f"{kib(result['edge_uplink_bytes'] / sent)} per request"
    )
    print(
        f"    metro-cloud links ({', '.join(result['metro_cloud_links'])}): {kib(result['metro_cloud_bytes'])}, "
        f"{kib(result['metro_cloud_bytes'] / sent)} per request"
    )
    failover = result.get("failover")
    if failover:
        print(
            f"    killed the app of {failover['killed']} on {failover['node']} "
            f"(used by {', '.join(failover['callers'])}): "
            f"served by another instance after {failover['served_by_another_after_ms']} ms, "
            f"failover started after {failover['failover_started_after_ms']} ms, "
            f"replaced by {failover['replacement'].get('workload')} on {failover['replacement'].get('node')}; "
            f"{failover['requests']} requests, {failover['lost']} lost, p99 {failover['p99_ms']} ms"
        )
    for error in result["agent_errors"]:
        print(f"    agent error: {error}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.service_paths", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of measured load per variant (30)")
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second per user (5)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring (3)")
    parser.add_argument("--variants", default="abc", help="which variants to run (abc; c also runs the failure)")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rate <= 0 or args.warmup < 0:
        parser.error("--duration and --rate must be > 0, --warmup >= 0")
    chosen = [v for v in VARIANTS if v.key in args.variants]
    if not chosen:
        parser.error(f"--variants: none of {args.variants!r} is a, b or c")
    run_dir = Path(tempfile.mkdtemp(prefix="edgectl-bench-service-paths-"))
    started = time.monotonic()
    results: dict[str, Any] = {}
    failed: list[str] = []
    for variant in chosen:
        print(f"# {variant.label}", file=sys.stderr)
        try:
            results[variant.key] = run_variant(variant, args, run_dir / variant.key, fail_hot=variant.key == "c")
        except (RuntimeError, WaitTimedOut, TimeoutError, OSError, subprocess.SubprocessError) as exc:
            failed.append(f"{variant.label}: {exc}")
            print(f"{variant.label}: FAILED: {exc}", file=sys.stderr)
            continue
        print_variant(variant, results[variant.key])
        if results[variant.key]["requests"] == results[variant.key]["lost"]:
            failed.append(f"{variant.label}: no request succeeded")
    wall_s = time.monotonic() - started
    print(f"wall time {wall_s:.0f} s (run directory {run_dir})")
    figures = {
        "benchmark": "service_paths",
        "fabric": FABRIC.name,
        "rate_per_user": args.rate,
        "users": sorted({user for result in results.values() for user in result["users"]}),
        "duration_s": args.duration,
        "variants": results,
        "failed": failed,
        "wall_s": round(wall_s, 1),
    }
    print(json.dumps(figures))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
