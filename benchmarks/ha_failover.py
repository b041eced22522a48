"""Takeover time of the replicated controller: from the leader's death to every switch mastered by the new
leader and reconciled.

A 3-member etcd (``cluster.etcd_process.EtcdCluster``: heartbeat 50 ms, election 250 ms, data on /dev/shm),
3 replicas (``edgectl run --etcd ... --replica-id rN --lease-ttl 1``) and N fake OpenFlow 1.3 switches
(``benchmarks/fake_switch.py``, one process, Open vSwitch's role rules) in a line with one host each, every
switch connected to every replica (3 TCP connections per switch). The switches time their own messages
(time.time, one machine), so nothing is read from the controllers' side:

- mastered: the switch sent its ROLE_REPLY MASTER to the new leader's connection;
- reconciled: the new leader's read-back of that switch answered (flow stats, group and meter
  descriptions) and, if it then changed anything, the barrier after its last change answered.

Each round waits until one leader masters every switch, then kills it (t0: just before ``kill -9``; its
followers see its liveness connection close and revoke its lease), measures, restarts the killed replica with
the same id and ports and waits until it is back as a follower that every switch holds as SLAVE. Then the
same with the leader SIGSTOPped instead (its process hangs; the lease expires after --lease-ttl 1 s),
resumed (SIGCONT) after the takeover. Reported per path: every switch mastered and every switch reconciled
(p50 and p99 over rounds, nearest rank: p99 of fewer than 100 rounds is the worst one), one switch
mastered and reconciled (p50 over every switch of every round), the table writes the new leader sent after the takeover
(the old leader installed everything: expected 0), and what the switches refused the old leader once it
runs again (role requests at its stale generation, writes as a SLAVE). Beside them ONOS's published
figures, which measure something close but not the same (noted per figure). Also once per size: the first
role assignment, from the first switch connecting to the leader until every switch is mastered by it.

Run: python -m benchmarks.ha_failover [--switches 10 100] [--rounds 8] [--stop-rounds 3]
(no root, no OVS). Prints a table, then one JSON line of figures.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.fake_switch import FLOW_MOD, GROUP_MOD, METER_MOD, PACKET_OUT  # noqa: E402
from mininet_topos.controller_process import (  # noqa: E402
    ControllerProcess,
    free_port,
    start_edgectl,
    stop_processes,
    wait_until,
)
from mininet_topos.generate import to_yaml  # noqa: E402

REPLICAS = 3
WRITES = ("flow_mod", "group_mod", "meter_mod")
ONOS = {  # ONOS's published figures, and what each measures
    "mastership_failover_s": (0.41, "ONOS: one switch's mastership failover, 3-node cluster"),
    "role_assignment_100_s": (0.76, "ONOS: initial role assignment, 100 switches"),
    "role_assignment_600_s": (4.2, "ONOS: initial role assignment, 600 switches"),
}
REFUSED_WRITES = {FLOW_MOD: "FlowMod", GROUP_MOD: "GroupMod", METER_MOD: "MeterMod", PACKET_OUT: "PacketOut"}
Log = Sequence[Sequence[Any]]  # a switch's log entries: (time, connection, kind, value)


def line_fabric(switches: int) -> dict[str, Any]:
    """N switches in a line, one host each: one path between two hosts, so the latencies discovery measures
    (the fake switches relay its probes) never move a route and any table write after a takeover is the
    takeover's own."""
    names = [f"s{i}" for i in range(1, switches + 1)]
    pairs = list(itertools.pairwise(names))
    return {
        "name": f"line-{switches}",
        "subnet": "10.0.0.0/16",
        "sites": [{"id": "lab", "tier": "edge", "region": "r1", "zone": "z1"}],
        "switches": [{"id": name, "dpid": i, "site": "lab"} for i, name in enumerate(names, 1)],
        "links": [{"a": a, "b": b, "latency_ms": 1.0, "bandwidth_mbps": 1000} for a, b in pairs],
        "hosts": [
            {"id": f"h{i}", "switch": name, "ip": f"10.0.{i // 250}.{i % 250 + 1}"} for i, name in enumerate(names)
        ],
        "services": [],
    }


# -- reading the switches' logs (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class SwitchTakeover:
    mastered_at: float | None
    reconciled_at: float | None
    writes: dict[str, int]


def takeover_of(log: Log, conn: int, since: float) -> SwitchTakeover:
    """One switch's takeover by the controller on ``conn``, from its log: the first MASTER reply on it at or
    after ``since``; the first read-back after that; and when the new master changed tables after the
    read-back, the first barrier after its last change (not reconciled until that barrier)."""
    mine = sorted((float(e[0]), str(e[2])) for e in log if int(e[1]) == conn and float(e[0]) >= since)
    mastered = next((t for t, kind in mine if kind == "role:master"), None)
    if mastered is None:
        return SwitchTakeover(None, None, {})
    after = [(t, kind) for t, kind in mine if t >= mastered]
    writes = {kind: sum(1 for _, k in after if k == kind) for kind in WRITES}
    read_back = next((t for t, kind in after if kind == "readback"), None)
    if read_back is None:
        return SwitchTakeover(mastered, None, writes)
    last_write = max((t for t, kind in after if kind in WRITES and t >= read_back), default=None)
    if last_write is None:
        return SwitchTakeover(mastered, read_back, writes)
    barrier = next((t for t, kind in after if kind == "barrier" and t >= last_write), None)
    return SwitchTakeover(mastered, barrier, writes)


def first_assignment(logs: Mapping[str, Log], conn: int) -> float | None:
    """From the first switch connecting on ``conn`` until every switch was MASTER-replied on it (seconds)."""
    connected = [float(e[0]) for log in logs.values() for e in log if int(e[1]) == conn and e[2] == "connected"]
    mastered = [
        min((float(e[0]) for e in log if int(e[1]) == conn and e[2] == "role:master"), default=None)
        for log in logs.values()
    ]
    if not connected or any(m is None for m in mastered):
        return None
    return max(m for m in mastered if m is not None) - min(connected)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank: p99 of fewer than 100 values is the largest."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(q / 100 * len(ranked)) - 1)]


# -- the processes ------------------------------------------------------------------------------------------


class FakeSwitches:
    """``benchmarks.fake_switch`` in its own process, asked over its stdin."""

    def __init__(self, fabric: Path, openflow_ports: Sequence[int], cable_delays: bool = False) -> None:
        controllers = ",".join(f"127.0.0.1:{port}" for port in openflow_ports)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.fake_switch",
                str(fabric),
                controllers,
                *(["--cable-delays"] if cable_delays else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert self.process.stdout is not None
        self.process.stdout.readline()  # its first line: how many switches, how many controllers

    def ask(self, line: str) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"the fake switches exited ({self.process.returncode})")
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError("the fake switches closed their output")
        return json.loads(answer)

    def status(self) -> dict[str, dict[str, Any]]:
        return dict(self.ask("status"))

    def logs(self, since: float) -> dict[str, Log]:
        return dict(self.ask(f"events {since!r}"))

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self.process.stdin is not None:
                self.process.stdin.write("quit\n")
                self.process.stdin.close()
        stop_processes([self.process])


class Replicas:
    """Three ``edgectl run`` replicas on fixed ports (a restarted one comes back on its own)."""

    def __init__(self, fabric: Path, etcd_urls: str, logs: Path) -> None:
        self.fabric, self.etcd_urls, self.logs = fabric, etcd_urls, logs
        self.openflow_ports = [free_port() for _ in range(REPLICAS)]
        self.http_ports = [free_port() for _ in range(REPLICAS)]
        self.processes: list[ControllerProcess | None] = [None] * REPLICAS
        self.starts = [0] * REPLICAS

    def start(self, i: int) -> None:
        self.starts[i] += 1
        self.processes[i] = start_edgectl(
            self.fabric,
            *("--etcd", self.etcd_urls, "--replica-id", f"r{i + 1}", "--lease-ttl", "1"),
            openflow_port=self.openflow_ports[i],
            http_port=self.http_ports[i],
            log_path=self.logs / f"r{i + 1}-{self.starts[i]}.log",
            ready_timeout=60,
        )

    def view(self, i: int) -> dict[str, Any] | None:
        process = self.processes[i]
        if process is None or process.process.poll() is not None:
            return None
        try:
            return dict(process.get_json("/api/v1/cluster"))
        except (OSError, AssertionError, ValueError):
            return None

    def leader(self, among: Sequence[int] = range(REPLICAS)) -> tuple[int, int] | None:
        """(index, generation) of the replica that says it leads, when exactly one does."""
        leading = []
        for i in among:
            view = self.view(i)
            if view and view.get("role") == "leader" and view.get("leader"):
                leading.append((i, int(view["leader"]["generation"])))
        return leading[0] if len(leading) == 1 else None

    def signal(self, i: int, sig: signal.Signals) -> None:
        process = self.processes[i]
        assert process is not None
        process.process.send_signal(sig)

    def stop_all(self) -> None:
        for process in self.processes:
            if process is not None:
                with contextlib.suppress(OSError):
                    process.process.send_signal(signal.SIGCONT)
                process.stop()


def masters_everything(switches: FakeSwitches, leader: int, *, routes: bool = True) -> bool:
    """Every switch holds ``leader`` as MASTER and every other connection as SLAVE (or closed), with routes."""
    for status in switches.status().values():
        roles = status["roles"]
        if roles[leader] != "master" or any(
            r not in ("slave", "disconnected") for j, r in enumerate(roles) if j != leader
        ):
            return False
        if routes and status["flows"] <= 3:  # more than the base flows: the routes are in
            return False
    return True


def follower_back(replicas: Replicas, switches: FakeSwitches, i: int, leader: int) -> bool:
    view = replicas.view(i)
    if view is None or view.get("role") != "follower":
        return False
    return all(s["roles"][i] == "slave" and s["roles"][leader] == "master" for s in switches.status().values())


@dataclass
class Round:
    path: str
    seconds_mastered: float
    seconds_reconciled: float
    per_switch_mastered: list[float]
    per_switch_reconciled: list[float]
    writes: dict[str, int]
    old_leader_refused: dict[str, int]  # its role requests refused as stale, its writes refused (IS_SLAVE)


def refused(logs: Mapping[str, Log], conn: int, since: float) -> dict[str, int]:
    """What the switches refused the controller on ``conn`` since ``since``: ``stale`` role requests, and its
    writes as a SLAVE by message (``FlowMod``, ``PacketOut``, ...)."""
    out: dict[str, int] = {}
    for log in logs.values():
        for when, on, kind, value in log:
            if int(on) != conn or float(when) < since or kind not in ("stale", "is_slave"):
                continue
            name = "stale" if kind == "stale" else REFUSED_WRITES.get(int(value), f"type {value}")
            out[name] = out.get(name, 0) + 1
    return out


def one_round(replicas: Replicas, switches: FakeSwitches, path: str, *, timeout: float = 60.0) -> Round:
    found = wait_until(replicas.leader, timeout, what="one leader")
    leader, generation = found
    wait_until(lambda: masters_everything(switches, leader), timeout, what=f"r{leader + 1} masters every switch")
    time.sleep(1.0)  # let the last read-backs and probes settle
    others = [i for i in range(REPLICAS) if i != leader]
    t0 = time.time()
    if path == "kill":
        replicas.signal(leader, signal.SIGKILL)
    else:
        replicas.signal(leader, signal.SIGSTOP)

    def new_leader() -> tuple[int, int] | None:
        found = replicas.leader(others)
        return found if found is not None and found[1] > generation else None

    successor, _ = wait_until(new_leader, timeout, interval=0.05, what="a new leader")

    def taken_over() -> dict[str, SwitchTakeover] | None:
        takeovers = {dpid: takeover_of(log, successor, t0) for dpid, log in switches.logs(t0).items()}
        return takeovers if all(t.reconciled_at is not None for t in takeovers.values()) else None

    wait_until(taken_over, timeout, interval=0.1, what="every switch mastered and reconciled by the new leader")
    time.sleep(2.0)  # writes the new leader sends later still count
    takeovers = {dpid: takeover_of(log, successor, t0) for dpid, log in switches.logs(t0).items()}
    mastered = [t.mastered_at - t0 for t in takeovers.values() if t.mastered_at is not None]
    reconciled = [t.reconciled_at - t0 for t in takeovers.values() if t.reconciled_at is not None]
    writes = {kind: sum(t.writes.get(kind, 0) for t in takeovers.values()) for kind in WRITES}
    if path == "kill":
        process = replicas.processes[leader]
        assert process is not None
        process.process.wait(10)
        replicas.start(leader)
    else:
        replicas.signal(leader, signal.SIGCONT)
    wait_until(lambda: follower_back(replicas, switches, leader, successor), timeout, what=f"r{leader + 1} a follower")
    fenced = refused(switches.logs(t0), leader, t0)
    return Round(path, max(mastered), max(reconciled), mastered, reconciled, writes, fenced)


@contextlib.contextmanager
def cluster(switch_count: int, work: Path) -> Iterator[tuple[Replicas, FakeSwitches]]:
    from cluster.etcd_process import EtcdCluster

    fabric = work / f"line-{switch_count}.yaml"
    fabric.write_text(to_yaml(line_fabric(switch_count)))
    etcd = EtcdCluster(work / "etcd", 3, heartbeat_ms=50, election_ms=250)
    replicas: Replicas | None = None
    switches: FakeSwitches | None = None
    try:
        etcd.start()
        replicas = Replicas(fabric, etcd.urls_text, work)
        for i in range(REPLICAS):
            replicas.start(i)
        wait_until(replicas.leader, 60, what="one leader")
        switches = FakeSwitches(fabric, replicas.openflow_ports)
        yield replicas, switches
    finally:
        if switches is not None:
            switches.stop()
        if replicas is not None:
            replicas.stop_all()
        etcd.stop()


def summary(rounds: Sequence[Round]) -> dict[str, Any]:
    mastered = [r.seconds_mastered for r in rounds]
    reconciled = [r.seconds_reconciled for r in rounds]
    every_switch = [s for r in rounds for s in r.per_switch_mastered]
    return {
        "rounds": len(rounds),
        "all_mastered_s_p50": round(statistics.median(mastered), 3),
        "all_mastered_s_p99": round(percentile(mastered, 99), 3),
        "all_reconciled_s_p50": round(statistics.median(reconciled), 3),
        "all_reconciled_s_p99": round(percentile(reconciled, 99), 3),
        "one_switch_mastered_s_p50": round(statistics.median(every_switch), 3),
        "one_switch_reconciled_s_p50": round(statistics.median(s for r in rounds for s in r.per_switch_reconciled), 3),
        "flow_mods_after_takeover": sum(r.writes["flow_mod"] for r in rounds),
        "group_and_meter_mods_after_takeover": sum(r.writes["group_mod"] + r.writes["meter_mod"] for r in rounds),
        "old_leader_stale_role_requests": sum(r.old_leader_refused.get("stale", 0) for r in rounds),
        "old_leader_writes_refused": {
            name: sum(r.old_leader_refused.get(name, 0) for r in rounds)
            for name in sorted({k for r in rounds for k in r.old_leader_refused} - {"stale"})
        },
    }


def measure(switch_count: int, rounds: int, stop_rounds: int, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"switches": switch_count}
    with cluster(switch_count, work) as (replicas, switches):
        leader, _ = wait_until(replicas.leader, 60, what="one leader")
        wait_until(lambda: masters_everything(switches, leader), 120, what="the first leader masters every switch")
        first = first_assignment(switches.logs(0.0), leader)
        out["first_role_assignment_s"] = round(first, 3) if first is not None else None
        for path, count in (("kill", rounds), ("stop", stop_rounds)):
            done = []
            for k in range(count):
                result = one_round(replicas, switches, path)
                done.append(result)
                print(
                    f"  {switch_count:>4} switches, {path:<4} round {k + 1}: every switch mastered "
                    f"{result.seconds_mastered * 1000:7.1f} ms, reconciled {result.seconds_reconciled * 1000:7.1f} ms, "
                    f"writes after {sum(result.writes.values())}, old leader refused {result.old_leader_refused}",
                    flush=True,
                )
            if done:
                out[path] = summary(done)
    return out


def print_table(results: Sequence[dict[str, Any]]) -> None:
    paths = {"kill": "leader kill -9", "stop": "leader SIGSTOP (lease 1 s)"}
    print()
    print(
        f"{'switches':>8}  {'leader':<27} {'rounds':>6}  {'every switch mastered':>23}  {'every switch reconciled':>23}"
        f"  {'one switch':>17}  {'FlowMods':>8}  ONOS published"
    )
    print(
        f"{'':>8}  {'':<27} {'':>6}  {'p50 / p99 (s)':>23}  {'p50 / p99 (s)':>23}  "
        f"{'mast. / rec. p50':>17}  {'after':>8}"
    )
    for result in results:
        n = result["switches"]
        for path, label in paths.items():
            s = result.get(path)
            if not s:
                continue
            onos = f"{ONOS['mastership_failover_s'][0]:.2f} s: {ONOS['mastership_failover_s'][1][6:]}"
            print(
                f"{n:>8}  {label:<27} {s['rounds']:>6}  "
                f"{s['all_mastered_s_p50']:>11.3f} / {s['all_mastered_s_p99']:<9.3f}  "
                f"{s['all_reconciled_s_p50']:>11.3f} / {s['all_reconciled_s_p99']:<9.3f}  "
                f"{s['one_switch_mastered_s_p50']:>7.3f} / {s['one_switch_reconciled_s_p50']:<7.3f}  "
                f"{s['flow_mods_after_takeover']:>8}  {onos}"
            )
        first = result.get("first_role_assignment_s")
        onos_first = ONOS["role_assignment_100_s"] if n >= 100 else None
        print(
            f"{n:>8}  {'first role assignment':<27} {1:>6}  {first if first is not None else '-':>23}"
            + (f"  {'':>23}  {'':>17}  {'':>8}  {onos_first[0]:.2f} s: {onos_first[1][6:]}" if onos_first else "")
        )
        for path, label in paths.items():
            s = result.get(path)
            if s and (s["old_leader_stale_role_requests"] or s["old_leader_writes_refused"]):
                writes = ", ".join(f"{count} {name}" for name, count in s["old_leader_writes_refused"].items())
                print(
                    f"{n:>8}  {label}: the old leader, running again, was refused "
                    f"{s['old_leader_stale_role_requests']} role requests as stale; "
                    f"writes as a SLAVE: {writes or 'none'}"
                )
    print(f"ONOS also: {ONOS['role_assignment_600_s'][0]} s: {ONOS['role_assignment_600_s'][1][6:]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--switches", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--rounds", type=int, default=8, help="kill -9 rounds per size")
    parser.add_argument("--stop-rounds", type=int, default=3, help="SIGSTOP rounds per size")
    args = parser.parse_args(argv)
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    results = []
    for count in args.switches:
        with tempfile.TemporaryDirectory(prefix="ha-failover-", dir=base) as work:
            try:
                results.append(measure(count, args.rounds, args.stop_rounds, Path(work)))
            except BaseException:
                kept = Path(tempfile.mkdtemp(prefix="ha-failover-logs-"))
                for log in Path(work).glob("*.log"):
                    shutil.copy(log, kept)
                print(f"the replicas' logs: {kept}", file=sys.stderr)
                raise
    print_table(results)
    figures = {
        "benchmark": "ha_failover",
        "results": results,
        "onos_published": {key: value for key, (value, _) in ONOS.items()},
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
