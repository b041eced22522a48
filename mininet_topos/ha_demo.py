"""`make ha-demo`: the controller replicated on etcd, its leader killed under load.

Starts a 3-member etcd, three `edgectl run --etcd ... --replica-id rN` replicas sharing one CA, the Mininet
testbed of the fabric file with every switch connected to every replica, node agents and client sidecars
listing every replica; waits until the declared services serve; starts a ping stream between two sites and a
request loop on every user host; then:

1. kills the leader (SIGKILL) and prints a timeline from the kill: its election key gone from etcd (lease
   revoked), the new leader elected, each switch mastered by it (as OVS shows), its routes applied on every
   switch (reconciled), the first placement write a leader answered and the first user request served after;
   then the pings and requests lost, and whether the placements stayed the same;
2. a fencing episode: pauses the new leader (SIGSTOP) until the third replica leads, resumes it (SIGCONT)
   and shows it demoted: it says it follows, OVS has it slave on every switch, no flow changed.

Everything it started is stopped by PID, also on Ctrl-C.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mininet_topos.controller_process import WaitTimedOut
from mininet_topos.demo import demo_main
from mininet_topos.ha_lab import HaLab, PingStream
from mininet_topos.loadgen import summarize

RATE_PER_USER = 10.0
SETTLE_S = 4.0
"""Traffic watched this long after a fault has been handled: longer than a request's timeout (2 s)."""
WATCH_S = 30.0
"""How long the timeline waits for each milestone."""
NO_WORKLOAD = "w-ha-demo-probe"
"""Evicted to learn when placement writes are decided again: no such workload, so a leader answers
NOT_FOUND and nothing changes; UNAVAILABLE means no leader has it yet."""


class Timeline:
    """Milestones after a fault at ``t0`` (wall clock), each noted once, printed in time order."""

    def __init__(self, t0: float, out: Callable[[str], None]) -> None:
        self.t0 = t0
        self.out = out
        self.at: dict[str, float] = {}
        self._lock = threading.Lock()

    def mark(self, what: str, at: float | None = None) -> None:
        with self._lock:
            self.at.setdefault(what, time.time() if at is None else at)

    def show(self) -> None:
        with self._lock:
            marks = sorted(self.at.items(), key=lambda item: item[1])
        for what, at in marks:
            self.out(f"  +{(at - self.t0) * 1000:8.1f} ms  {what}")


class HaDemo:
    def __init__(self, lab: HaLab, out: Callable[[str], None] = print) -> None:
        self.lab = lab
        self.out = out
        self.start = time.time()

    def say(self, text: str) -> None:
        self.out(f"[{time.time() - self.start:6.1f} s] {text}")

    # -- the failover -------------------------------------------------------------------------------

    def kill_leader(self, ping: PingStream) -> str:
        lab = self.lab
        old = lab.wait_leader(timeout=WATCH_S)
        before = lab.placements()
        pid = lab.replicas[old].pid
        self.say(f"kill -9 the leader {old} (pid {pid}) under load")
        watch = self._watch_election()
        received = ping.received()
        t0 = lab.kill(old, signal.SIGKILL)
        timeline = Timeline(t0, self.out)
        timeline.mark(f"{old} killed (SIGKILL)", t0)
        if watch is not None:
            watch.timeline = timeline
            watch.flush()
        writes = threading.Thread(target=self._first_write, args=(timeline,), daemon=True)
        writes.start()
        new = self._follow_takeover(timeline, exclude={old})
        writes.join(WATCH_S)
        first = next((r for r in self.lab.records(since=t0) if r.ok), None)
        if first is not None:
            served = " > ".join(first.served_by) or first.workload or "?"
            timeline.mark(f"first user request sent after the kill served (by {served})", first.t + first.ms / 1000)
        if watch is not None:
            watch.cancel()
        timeline.show()
        time.sleep(SETTLE_S)
        self._losses(t0, ping, received)
        after = lab.placements()
        same = "the same (same ids on the same nodes)" if after == before else f"CHANGED: {before} -> {after}"
        doubled = lab.doubled()
        self.out(f"  placements: {same}; {f'DOUBLED: {doubled}' if doubled else 'none doubled'}")
        return new

    def _follow_takeover(self, timeline: Timeline, exclude: set[str]) -> str:
        """Poll the survivors until one leads, each switch answered its MASTER request, its routes are
        applied on every switch (reconciled), and OVS's controller table shows it the one master of each."""
        lab = self.lab
        deadline = time.monotonic() + WATCH_S
        new: str | None = None
        confirmed: set[str] = set()
        reconciled = in_ovs = False
        switches = {s.name for s in lab.net.switches}
        while time.monotonic() < deadline:
            if new is None:
                leader = lab.leader()
                if leader is not None and leader not in exclude:
                    new = leader
                    view = lab.cluster_view(new) or {}
                    generation = (view.get("leader") or {}).get("generation", "?")
                    timeline.mark(f"{new} elected leader (generation {generation})")
            if new is not None:
                for bridge, role in lab.roles_seen_by(new).items():
                    if role == "master" and bridge not in confirmed:
                        confirmed.add(bridge)
                        timeline.mark(f"switch {bridge} mastered: MASTER confirmed to {new}")
                if not reconciled and confirmed >= switches and self._routes_applied(new):
                    reconciled = True
                    timeline.mark(f"reconciled: {new} read back every switch, its routes applied on each")
                if not in_ovs and all(m == [new] for m in lab.masters().values()):
                    in_ovs = True
                    timeline.mark(f"OVS's controller table shows {new} the one master of every switch")
                if reconciled and in_ovs:
                    return new
            time.sleep(0.02)
        raise TimeoutError(
            f"no takeover within {WATCH_S:g} s: leader {new}, MASTER confirmed by {sorted(confirmed)} of "
            f"{sorted(switches)}, OVS shows {lab.masters()}"
        )

    def _routes_applied(self, replica_id: str) -> bool:
        try:
            view = self.lab.get_from([self.lab.replicas[replica_id]], "/api/v1/routes")
        except OSError:
            return False
        generation = view["generation"]
        return bool(view["routes"]) and all(s["applied_generation"] >= generation for s in view["switches"])

    def _first_write(self, timeline: Timeline) -> None:
        """Evict a workload that does not exist until a leader decides it (NOT_FOUND), on fresh channels
        to each live replica in turn (a follower forwards it to the leader)."""
        import grpc

        deadline = time.monotonic() + WATCH_S
        lab = self.lab
        while time.monotonic() < deadline:
            for replica in [r for r in lab.replicas.values() if r.live()]:
                code = lab.evict_at(replica, NO_WORKLOAD)
                if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    timeline.mark(
                        f"first placement write decided by a leader ({code.name}, asked {replica.replica_id})"
                    )
                    return
            time.sleep(0.02)

    def _watch_election(self) -> _ElectionWatch | None:
        try:
            return _ElectionWatch(self.lab)
        except Exception as exc:  # the timeline goes without it
            self.out(f"  (not watching etcd's election keys: {exc})")
            return None

    def _losses(self, t0: float, ping: PingStream, received_before: int) -> None:
        lost = ping.lost()
        self.out(
            f"  pings {ping.source} -> {ping.address} every 20 ms: {ping.received() - received_before} replies since "
            f"the kill, {len(lost)} lost{' (icmp_seq ' + ', '.join(map(str, lost[:10])) + ')' if lost else ''}"
        )
        window = summarize(self.lab.records(since=t0 - 3))
        self.out(f"  requests through the mesh since the kill: {window.sent} sent, {window.failed} failed")

    # -- fencing ------------------------------------------------------------------------------------

    def fence(self, paused: str) -> None:
        lab = self.lab
        flows = lab.dump_flows()
        self.say(f"SIGSTOP the leader {paused}: it hangs with its connections open (its lease expires)")
        t0 = lab.kill(paused, signal.SIGSTOP)
        timeline = Timeline(t0, self.out)
        timeline.mark(f"{paused} paused (SIGSTOP)", t0)
        third = self._follow_takeover(timeline, exclude={paused})
        at = lab.kill(paused, signal.SIGCONT)
        timeline.mark(f"{paused} resumed (SIGCONT): it may still believe it leads until it hears otherwise", at)
        deadline = time.monotonic() + WATCH_S
        follows = slave = False
        while time.monotonic() < deadline and not (follows and slave):
            view = lab.cluster_view(paused)
            if not follows and view is not None and view.get("role") == "follower":
                follows = True
                timeline.mark(f"{paused} says it follows ({third} leads)")
            if not slave and all(r.get(paused) == "slave" for r in lab.switch_roles().values()):
                slave = True
                timeline.mark(f"OVS has {paused} slave on every switch")
            time.sleep(0.05)
        timeline.show()
        time.sleep(SETTLE_S)
        changed = [b for b, now in lab.dump_flows().items() if now != flows[b]]
        self.out(f"  flows changed on: {', '.join(changed) if changed else 'no switch'}")
        masters = lab.masters()
        self.out(f"  masters now: {', '.join(f'{b}: {m}' for b, m in sorted(masters.items()))}")


class _ElectionWatch:
    """etcd's election keys, watched: the killed leader's key deleted is its lease revoked."""

    def __init__(self, lab: HaLab) -> None:
        from cluster.etcd import EtcdClient

        self.timeline: Timeline | None = None
        self._early: list[float] = []
        self._client = EtcdClient(lab.etcd.client_urls)
        prefix = f"edgectl/{lab.cluster_name}/election/".encode()
        self._watch = self._client.watch(prefix, prefix=True, on_events=self._events, on_error=lambda _e: None)

    def _events(self, events: list[Any], _revision: int) -> None:
        now = time.time()
        if any(e.kind == "delete" for e in events):
            if self.timeline is None:
                self._early.append(now)
            else:
                self.timeline.mark("the old leader's election key gone from etcd (lease revoked)", now)

    def flush(self) -> None:
        if self.timeline is not None and self._early:
            self.timeline.mark("the old leader's election key gone from etcd (lease revoked)", self._early[0])

    def cancel(self) -> None:
        self._watch.cancel()
        self._client.close()


def run_demo(fabric: Path, run_dir: Path) -> int:
    out = print
    with HaLab(fabric, run_dir, log=lambda line: out(f"ha-demo: {line}")) as lab:
        demo = HaDemo(lab, out)
        demo.say("the leader places the replicas the fabric file declares")
        for w in lab.wait_declared_services(timeout=180):
            out(f"           {w['id']:<8} {w['service']:<5} on {w['node']}")
        leader = lab.wait_leader(timeout=WATCH_S)
        demo.say(f"replicas {', '.join(lab.replicas)}; {leader} leads; OVS masters: {lab.masters()}")
        source, address = lab.ping_ends()
        ping = PingStream.start(lab.net, source, address)
        try:
            lab.start_loads(rate=RATE_PER_USER)
            time.sleep(3)
            demo.say(f"ping {source} -> {address} every 20 ms; users call the entry services {RATE_PER_USER:g}/s each")
            new = demo.kill_leader(ping)
            demo.fence(new)
            lost = ping.lost()
            total = summarize(lab.records())
            out(
                f"\n  whole run: {ping.received()} ping replies, {len(lost)} lost; "
                f"{total.sent} requests, {total.failed} failed"
            )
        finally:
            ping.stop()
        if errors := lab.agent_errors():
            out("\nagent errors:\n  " + "\n  ".join(errors))
    return 0


def main(argv: list[str] | None = None) -> int:
    return demo_main(
        "ha-demo",
        run_demo,
        argv,
        stopped="stopped the replicas, etcd, the node agents (and what they ran), the sidecars and the testbed",
        errors=(RuntimeError, TimeoutError, WaitTimedOut),
    )


if __name__ == "__main__":
    sys.exit(main())
