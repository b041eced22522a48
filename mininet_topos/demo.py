"""`make demo`: the edge-cloud fabric end to end, with workloads moving under user load.

Starts `edgectl run` (with its CA, xDS on a Unix socket, sidecar readiness), the Mininet testbed of the
same fabric file (OVS userspace switches, real link delay), an Envoy sidecar per user host; places the
services the file declares (each instance an HTTP app behind its own Envoy, in its node's namespace, all
hops mTLS with SPIFFE SVIDs); starts a request loop on every user host; then:

1. migrates an `api` instance from an edge site to the cloud,
2. and back,
3. fails an edge node (its access link goes down: the controller sees it, the failover re-places it),
4. fails a link on an active route (fast-failover groups, then the controller's new routes),
5. tries a call the policy denies (a user host calling db, which admits api only): once over mTLS with the
   host's SVID (db's sidecar answers 403) and once as a raw TCP connect bypassing every sidecar (db's
   node's switch drops it).

The apps and sidecars in each compute node are run by the node agent (`edgectl agent`, attested with a
join token).

For each step it prints a live timeline (placement decided, flows barrier-confirmed, sidecar started,
sidecars ACKed, first mTLS request) and ends with a summary table: convergence time, requests sent and
failed, p50 latency before and after, and the denied calls with the layer that refused them. Everything
it started is stopped, also on Ctrl-C.
"""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mininet_topos.lab import Lab
from mininet_topos.loadgen import Record, summarize
from mininet_topos.timeline import MigrationTimeline

RATE_PER_USER = 10.0
WINDOW_S = 3.0
"""Latency before a step is measured over this long before it; after, over this long once it settled."""
SETTLE_S = 2.5
"""A step's window ends this long after it converged: longer than a user request's timeout (2 s), so a
request caught by the step ends inside it, failed or not."""


DENIED_TIMEOUT_S = 2.0
"""How long a denied call is tried (every 20 ms) before it counts as refused."""


@dataclass
class Denied:
    call: str
    outcome: str


@dataclass
class StepResult:
    name: str
    started_at: float
    converged_s: float | None
    settled_at: float
    note: str = ""


def _ms(seconds: float | None) -> str:
    return "      -" if seconds is None else f"{seconds * 1000:7.1f}"


class Demo:
    def __init__(self, lab: Lab, out: Callable[[str], None] = print) -> None:
        self.lab = lab
        self.out = out
        self.t0 = time.time()
        self.results: list[StepResult] = []
        self.denied: list[Denied] = []

    def say(self, text: str) -> None:
        self.out(f"[{time.time() - self.t0:6.1f} s] {text}")

    # -- progress -----------------------------------------------------------------------------------

    def watch_load(self, seconds: float, label: str) -> None:
        """Show the users' requests for a while: one line updated in place on a terminal."""
        end = time.time() + seconds
        tty = sys.stdout.isatty()
        since = time.time()
        while True:
            now = time.time()
            window = summarize(self.lab.records(since=since))
            line = (
                f"           {label}: {window.sent:5d} requests, {window.failed} failed, "
                f"p50 {window.p50_ms or 0:6.1f} ms  {'#' * int(min(20, 20 * (1 - (end - now) / seconds)))}"
            )
            if tty:
                sys.stdout.write("\r" + line.ljust(100))
                sys.stdout.flush()
            if now >= end:
                break
            time.sleep(0.25)
        if tty:
            sys.stdout.write("\n")
        else:
            self.out(line)

    def show_paths(self) -> None:
        """Per user, the instances its requests went through over the last window and the p50: each caller
        uses its nearest instances (per-caller priorities), which is what the request times come from."""
        where = {w["id"]: w["node"] for w in self.lab.workloads()}
        since = time.time() - WINDOW_S
        for load in self.lab.loads:
            records = load.snapshot(since)
            window = summarize(records)
            paths = request_paths(records)
            if not paths:
                self.out(f"           {load.host}: no successful request in the last {WINDOW_S:g} s")
                continue
            path, count = paths[0]
            hops = " > ".join(f"{w} ({where.get(w, 'gone')})" for w in path)
            share = 100 * count / max(1, sum(n for _, n in paths))
            self.out(f"           {load.host}: {hops}  {share:.0f}% of requests, p50 {_p50(window.p50_ms)}")

    def show_timeline(self, timeline: MigrationTimeline) -> None:
        if timeline.error and timeline.decided_at is None:
            self.out(f"           refused: {timeline.error}")
            return
        self.out(f"           {timeline.old} on {timeline.from_node} -> {timeline.new} on {timeline.to_node}")
        if timeline.reason:
            self.out(f"           why: {timeline.reason}")
        for stage, seconds in sorted(timeline.stages(), key=lambda s: (s[1] is None, s[1] or 0.0)):
            self.out(f"           +{_ms(seconds)} ms  {stage}")
        split = timeline.split()
        if any(seconds is not None for _, _, seconds in split):
            self.out("           the chain, stage by stage (whose time):")
            for stage, whose, seconds in split:
                self.out(f"           {_ms(seconds)} ms  {stage} ({whose})")
        if timeline.error:
            self.out(f"           note: {timeline.error}")

    # -- steps --------------------------------------------------------------------------------------

    def record(self, name: str, started_at: float, converged_s: float | None, note: str = "") -> None:
        time.sleep(SETTLE_S)
        self.results.append(StepResult(name, started_at, converged_s, time.time(), note))
        self.watch_load(WINDOW_S, "after")

    def migrate(self, name: str, workload: str, to: str) -> MigrationTimeline:
        self.say(name)
        started = time.time()
        timeline = self.lab.migrate(workload, to)
        self.show_timeline(timeline)
        self.record(name, started, timeline.chain_s, timeline.error)
        return timeline

    def fail_node(self, node: str) -> None:
        switch = next(n.switch for n in self.lab.net.spec.nodes if n.id == node)
        name = f"fail edge node {node} (its link to {switch} goes down)"
        self.say(name)
        mark = len(self.lab.events())
        started = self.lab.set_link(node, switch, up=False)
        try:
            moves = self.lab.moves_after(mark, timeout=20)
        except TimeoutError:
            moves = []
            self.out("           no failover started (nothing ran there?)")
        detected = next((e for e in self.lab.events(mark) if e.kind == "FAILOVER_STARTED"), None)
        if detected is not None:
            seen = _ms(detected.at - started)
            self.out(f"           +{seen} ms  node down seen, failover started ({detected.message})")
        for timeline in moves:
            self.show_timeline(timeline)
        ends = [t.first_request_at for t in moves if t.first_request_at is not None]
        converged = (max(ends) - started) if ends and len(ends) == len(moves) else None
        self.record(name, started, converged, f"{len(moves)} instance(s) re-placed")
        self.lab.set_link(node, switch, up=True)
        self.say(f"{node} is back (link up); its old instances stay where the failover put them")

    def fail_link(self) -> None:
        route, hop = self._active_hop()
        if route is None:
            self.say("fail a link: no active route between switches found, skipped")
            return
        a, b = hop["switch"], hop["next"]
        name = f"fail link {a}-{b} on the active route {route['src']} -> {route['dst']}"
        self.say(name)
        started = self.lab.set_link(a, b, up=False)

        def rerouted() -> bool:
            view = self.lab.get("/api/v1/routes")
            for r in view["routes"]:
                if r["src"] == route["src"] and r["dst"] == route["dst"]:
                    uses = any(h["switch"] == a and h["next"] == b for h in r["hops"])
                    applied = all(s["applied_generation"] >= view["generation"] for s in view["switches"])
                    return not uses and applied
            return False

        converged: float | None = None
        deadline = time.time() + 15
        while time.time() < deadline:
            if rerouted():
                converged = time.time() - started
                break
            time.sleep(0.02)
        new = next(
            (
                r
                for r in self.lab.get("/api/v1/routes")["routes"]
                if (r["src"], r["dst"]) == (route["src"], route["dst"])
            ),
            None,
        )
        self.out("           +    0.0 ms  link down; the switches' fast-failover groups take the backup port at once")
        self.out(f"           +{_ms(converged)} ms  controller's new routes barrier-confirmed on every switch")
        if new is not None:
            self.out(f"           now via {' > '.join(new['path'])} ({new['latency_us'] / 1000:.1f} ms)")
        self.record(name, started, converged, "routes recomputed")
        self.lab.set_link(a, b, up=True)
        self.say(f"link {a}-{b} is back up")

    def try_denied(self) -> None:
        """A user host calls a service that does not admit it (the last declared one admitting no host),
        on each layer on its own: over mTLS with the host's SVID from a node the switches admit (the node of
        an instance of an admitted caller), where the callee's sidecar refuses it; and as a raw TCP connect
        from the user host itself, bypassing every sidecar, which the instance's node's switch drops."""
        spec, lab = self.lab.net.spec, self.lab
        user = spec.hosts[0].id
        target = next(
            (s for s in reversed(spec.services) if not any(r.host == user for r in s.allow_from) and s.allow_from),
            None,
        )
        placed = lab.workloads()
        instance = next((w for w in placed if target is not None and w["service"] == target.name), None)
        if target is None or instance is None:
            self.say("denied calls: skipped, no placed service that refuses the users")
            return
        admitted = {str(r.service) for r in target.allow_from if r.service}
        callers = [w["node"] for w in placed if w["service"] in admitted]
        nodes = {n.id: n for n in spec.nodes}
        address = (str(nodes[instance["node"]].ip), target.port)
        self.say(f"a call the policy denies: {user} -> {target.name} (it admits {', '.join(sorted(admitted))})")
        if callers:
            where = next((n for n in callers if n != instance["node"]), callers[0])
            _, result = lab.probe(where, "tls", address, "403", DENIED_TIMEOUT_S, lab.host_svids[user]).result()
            outcome = (
                f"envoy {result} ({target.name}'s sidecar on {instance['node']})"
                if result == "403"
                else f"NOT denied by the sidecar: {result}"
            )
            self.out(f"           {user}'s SVID over mTLS, sent from {where} (the switches admit it): {outcome}")
            self.denied.append(Denied(f"{user} -> {target.name}", outcome))
        switch, source = nodes[instance["node"]].switch, str(next(h.ip for h in spec.hosts if h.id == user))
        before = lab.drop_packets(switch, address, source)
        _, result = lab.probe(user, "tcp", address, "open", DENIED_TIMEOUT_S).result()
        dropped = lab.drop_packets(switch, address, source) - before
        if result == "closed" and dropped > 0:
            outcome = f"network: dropped at {switch} ({dropped} packets on its drop flow)"
        else:
            outcome = f"NOT dropped at {switch}: {result}, drop flow +{dropped}"
        self.out(f"           raw TCP from {user} to {address[0]}:{address[1]}, bypassing its sidecar: {outcome}")
        self.denied.append(Denied(f"{user} -> {target.name}:{target.port} raw TCP", outcome))

    def _active_hop(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """A link between two switches on the route from a user to a node serving it right now."""
        users = {h.id for h in self.lab.net.spec.hosts}
        serving = {w["node"] for w in self.lab.workloads() if w["service"] in ("web",)}
        for r in self.lab.get("/api/v1/routes")["routes"]:
            if r["src"] in users and r["dst"] in serving:
                inter = [h for h in r["hops"] if h.get("next")]
                if inter:
                    return r, inter[0]
        return None, {}

    # -- summary ------------------------------------------------------------------------------------

    def summary(self) -> None:
        self.out("\nsummary (requests of every user that ended during each step; latency: p50 of the users' requests)")
        header = f"  {'step':<58} {'converged':>10} {'sent':>6} {'failed':>6} {'p50 before':>11} {'p50 after':>10}"
        self.out(header)
        self.out("  " + "-" * (len(header) - 2))
        for result in self.results:
            before = summarize(self.lab.records(result.started_at - WINDOW_S, result.started_at))
            # By when they ended: a request already on its way when the step began is the step's too.
            during = summarize(
                r
                for r in self.lab.records(result.started_at - 10)
                if result.started_at <= r.t + r.ms / 1000 < result.settled_at
            )
            after = summarize(self.lab.records(result.settled_at, result.settled_at + WINDOW_S))
            converged = "-" if result.converged_s is None else f"{result.converged_s * 1000:.0f} ms"
            self.out(
                f"  {result.name[:58]:<58} {converged:>10} {during.sent:>6} {during.failed:>6} "
                f"{_p50(before.p50_ms):>11} {_p50(after.p50_ms):>10}"
            )
        if self.denied:
            self.out("")
        for denied in self.denied:
            self.out(f"  denied  {denied.call:<28} {denied.outcome}")
        records = self.lab.records()
        total = summarize(records)
        self.out(f"\n  all users, whole run: {total.sent} requests, {total.failed} failed")
        for record in [r for r in records if not r.ok][:10]:
            self.out(f"    failed at {record.t - self.t0:6.1f} s after {record.ms:7.1f} ms: {record.error}")


def request_paths(records: Iterable[Record]) -> list[tuple[tuple[str, ...], int]]:
    """The instances successful requests went through (the one that answered, then those it called), most
    common first, with how many requests took each."""
    counts = Counter(r.served_by for r in records if r.ok and r.served_by)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _p50(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def run_demo(fabric: Path, run_dir: Path) -> int:
    out = print
    with Lab(fabric, run_dir, log=lambda line: out(f"demo: {line}")) as lab:
        demo = Demo(lab, out)
        demo.say(
            "the controller places the replicas the fabric file declares (latency-aware; each behind its own Envoy)"
        )
        placed = lab.wait_declared_services()
        for w in placed:
            out(f"           {w['id']:<8} {w['service']:<5} on {w['node']:<6} {w['spiffe_id']}")
        api, edge_node = lab.instance_at_edge("api")
        lab.start_loads(rate=RATE_PER_USER)
        users = ", ".join(h.id for h in lab.net.spec.hosts)
        demo.say(f"users {users} call web -> api -> db through their sidecars, {RATE_PER_USER:g} requests/s each")
        demo.watch_load(WINDOW_S, "before")
        demo.say("service paths: the instances each user's requests went through (each caller uses its nearest)")
        demo.show_paths()
        cloud = lab.site_of_tier("cloud")
        there = demo.migrate(f"migrate {api} from {edge_node} (edge) to the cloud", api, cloud)
        if not there.error and there.new:
            demo.migrate(f"migrate {there.new} back to {edge_node} (edge)", there.new, edge_node)
        # The edge node the api instance just came back to: what runs there has somewhere else to go
        # (failing the one node that meets web's SLO would strand web and show only an outage).
        if any(w["service"] == "api" and w["node"] == edge_node for w in lab.workloads()):
            demo.fail_node(edge_node)
        else:
            demo.say(f"fail an edge node: skipped, no api instance on {edge_node} (its move back failed)")
        demo.fail_link()
        demo.try_denied()
        demo.say("service paths now")
        demo.show_paths()
        demo.summary()
        if errors := lab.agent_errors():
            out("\nagent errors:\n  " + "\n  ".join(errors))
    return 0


def main(argv: list[str] | None = None) -> int:
    return demo_main(
        "demo",
        run_demo,
        argv,
        stopped="stopped edgectl, the node agents (and what they ran), the client sidecars and the testbed",
    )


def demo_main(
    name: str,
    run: Callable[[Path, Path], int],
    argv: list[str] | None,
    *,
    stopped: str,
    errors: tuple[type[BaseException], ...] = (RuntimeError, TimeoutError),
) -> int:
    """A demo's command line: the fabric file (argument, or the example), a fresh run directory, SIGTERM as an
    interrupt (so the demo's teardown runs), one line for what ended it and what was stopped."""
    args = argv if argv is not None else sys.argv[1:]
    fabric = Path(args[0] if args else "examples/edge-cloud.yaml")
    run_dir = Path(tempfile.mkdtemp(prefix=f"edgectl-{name}-"))
    print(f"{name}: {fabric}; logs and sockets in {run_dir}")
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return run(fabric, run_dir)
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted; everything it started has been stopped")
        return 130
    except errors as exc:  # the controller died, a step could not be set up
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        print(f"{name}: {stopped}")


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
