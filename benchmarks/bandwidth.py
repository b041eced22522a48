"""Bandwidth reservations, measured: OpenFlow meters on OVS's userspace datapath, and the admission cost.

Meter accuracy. One OVS bridge (``datapath_type=netdev``, a name of this run's own) between two network
namespaces over veth pairs; an OpenFlow 1.3 meter (one DROP band, KBPS | BURST, the rate and bucket the
controller gives a reservation, ``sdnctl/meters.py``, unless ``--burst-ms``) added with ``ovs-ofctl add-
meter`` and a flow ``meter:1,output:2``; UDP from ``mininet_topos.pacer`` through it at twice the meter rate,
in 64-, 512- and 1500-byte frames, meters of 5 and 20 Mbit/s. Reported: the delivered rate counted in whole
frames (what the meter counts) / meter rate, and the payload goodput / meter rate (lower for small frames:
headers are counted); p50 of 3 rounds. Baseline in the same run: the same traffic with no meter (what the path
itself delivers: at 78,125 packets/s, 64-byte frames at 40 Mbit/s, the userspace datapath here delivers ~28
Mbit/s, still above the meter). A case whose packet rate is above ``--max-pps`` is skipped.

Reserved flow under contention. The receiver's port shaped by htb to a link of ``--link-mbps`` (20); a
reserved UDP stream at R (8 Mbit/s, 1500-byte frames) through a meter of R, and a bulk stream at twice the
link through a best-effort meter of what R leaves of the link less 5 % (what the controller installs);
reported: the reserved stream's delivered rate / R (the goal: within 5 %), and a UDP echo's round trips beside
it. Baseline: the same two streams with no meters.

Admission cost: ``benchmarks/bandwidth_admission.py`` (pure; no network).

The lab (``--part lab``): ``examples/bandwidth.yaml`` under ``edgectl run`` in Mininet (real delay, every link
shaped by htb at its capacity); the controller places ``video`` itself. Bulk from u2 to h9 (1 or 4 TCP flows,
or UDP at twice the uplink) over e1's 20 Mbit/s primary uplink, u1's paced 8 Mbit/s stream to the video
instance (TCP to its port 8554, or UDP), alone and together, each with a UDP echo's round trips u1 -> the
instance beside it. On a controller that does not enforce reservations this is the "before"; with meters
installed, the same run is the "after".

Run as root: ``.venv/bin/python benchmarks/bandwidth.py [--rounds N] [--duration S] [--part meters|admission]``.
Everything it creates (bridge, namespaces, veths) is removed in ``finally``. Prints tables, then one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bandwidth_admission import LINK_MBPS  # noqa: E402
from benchmarks.bandwidth_admission import measure as measure_admission  # noqa: E402
from mininet_topos.controller_process import stop_processes  # noqa: E402
from mininet_topos.pacer import result_of, wait_ready  # noqa: E402

FRAMES = (64, 512, 1500)
METER_MBPS = (5.0, 20.0)
RESERVED_PORT, BULK_PORT, ECHO_PORT = 5001, 5002, 5007
SENDER_IP, RECEIVER_IP = "10.99.0.1", "10.99.0.2"


def run(*command: str, check: bool = True) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class MeterBed:
    """Two namespaces (``a`` sends, ``b`` receives) on one userspace OVS bridge: a's port 1, b's port 2."""

    tag: str = field(default_factory=lambda: f"bw{os.getpid() % 100000}")

    @property
    def bridge(self) -> str:
        return f"{self.tag}br"

    def ns(self, side: str) -> str:
        return f"{self.tag}{side}"

    def port(self, side: str) -> str:
        return f"{self.tag}{side}1"  # the bridge's side of the veth

    def create(self) -> None:
        run(
            "ovs-vsctl", "add-br", self.bridge, "--", "set", "bridge", self.bridge, "datapath_type=netdev",
            "protocols=OpenFlow13", "fail_mode=secure",
        )  # fmt: skip
        for number, side, ip in ((1, "a", SENDER_IP), (2, "b", RECEIVER_IP)):
            inner = f"{self.tag}{side}0"
            run("ip", "netns", "add", self.ns(side))
            run("ip", "link", "add", inner, "type", "veth", "peer", "name", self.port(side))
            run("ip", "link", "set", inner, "netns", self.ns(side))
            in_ns = ("ip", "netns", "exec", self.ns(side))
            run(*in_ns, "ip", "link", "set", inner, "name", "eth0")
            run(*in_ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            run(*in_ns, "ip", "link", "set", "eth0", "up")
            run(*in_ns, "ip", "link", "set", "lo", "up")
            # Checksums are left to offload on a veth; the userspace datapath does not fill them in.
            run(*in_ns, "ethtool", "-K", "eth0", "tx", "off")
            run("sysctl", "-qw", f"net.ipv6.conf.{self.port(side)}.disable_ipv6=1")
            run("ip", "link", "set", self.port(side), "up")
            run(
                "ovs-vsctl", "add-port", self.bridge, self.port(side), "--", "set", "interface", self.port(side),
                f"ofport_request={number}",
            )  # fmt: skip
        mac = {side: self.mac(side) for side in "ab"}
        run("ip", "netns", "exec", self.ns("a"), "ip", "neigh", "add", RECEIVER_IP, "lladdr", mac["b"], "dev", "eth0")
        run("ip", "netns", "exec", self.ns("b"), "ip", "neigh", "add", SENDER_IP, "lladdr", mac["a"], "dev", "eth0")

    def mac(self, side: str) -> str:
        out = run("ip", "netns", "exec", self.ns(side), "cat", "/sys/class/net/eth0/address")
        return out.strip()

    def destroy(self) -> None:
        run("ovs-vsctl", "--if-exists", "del-br", self.bridge, check=False)
        for side in "ab":
            run("ip", "netns", "del", self.ns(side), check=False)  # takes its veth, and the peer, along
            run("ip", "link", "del", self.port(side), check=False)

    def ofctl(self, *args: str) -> str:
        return run("ovs-ofctl", "-O", "OpenFlow13", *args)

    def program(self, meters: dict[int, tuple[int, int]]) -> dict[int, int]:
        """Flows: UDP to the reserved port through meter 1, to the bulk port through meter 2 (when given:
        id -> (rate kbit/s, burst kbit)), everything else a -> b and b -> a. Returns each meter's burst in kbit."""
        self.ofctl("del-flows", self.bridge)
        with contextlib.suppress(RuntimeError):
            self.ofctl("del-meters", self.bridge)
        bursts = {}
        for meter_id, (rate_kbps, burst_kbit) in meters.items():
            bursts[meter_id] = burst_kbit
            self.ofctl(
                "add-meter", self.bridge,
                f"meter={meter_id},kbps,burst,band=type=drop,rate={rate_kbps},burst_size={bursts[meter_id]}",
            )  # fmt: skip
        for meter_id, port in ((1, RESERVED_PORT), (2, BULK_PORT)):
            action = f"meter:{meter_id},output:2" if meter_id in meters else "output:2"
            self.ofctl("add-flow", self.bridge, f"priority=200,in_port=1,udp,tp_dst={port},actions={action}")
        self.ofctl("add-flow", self.bridge, "priority=100,in_port=1,actions=output:2")
        self.ofctl("add-flow", self.bridge, "priority=100,in_port=2,actions=output:1")
        return bursts

    def shape(self, mbps: float | None) -> None:
        """htb on the bridge's port toward b at ``mbps`` (None: no shaping), as the testbed shapes a link."""
        run("tc", "qdisc", "del", "dev", self.port("b"), "root", check=False)
        if mbps is not None:
            dev = self.port("b")
            run("tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "1")
            run(
                "tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", f"{mbps}mbit",
                "ceil", f"{mbps}mbit", "quantum", "1514",
            )  # fmt: skip

    def meter_stats(self) -> str:
        return self.ofctl("meter-stats", self.bridge)

    def pacer(self, side: str, *args: str) -> subprocess.Popen[str]:
        command = ["ip", "netns", "exec", self.ns(side), sys.executable, "-m", "mininet_topos.pacer", *args]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)


@contextlib.contextmanager
def meter_bed() -> Iterator[MeterBed]:
    bed = MeterBed()
    try:
        bed.create()
        yield bed
    finally:
        bed.destroy()


def streams(bed: MeterBed, flows: Sequence[tuple[int, float, int]], duration: float, probe: bool = False) -> list[Any]:
    """Send each (port, Mbit/s, frame) from a to b at once; each receiver's summary (and the probe's)."""
    receivers = []
    for port, _, _ in flows:
        receiver = bed.pacer("b", "recv", "--port", str(port), "--duration", str(duration + 2), "--idle", "1.5")
        wait_ready(receiver)
        receivers.append(receiver)
    echo = None
    if probe:
        echo = bed.pacer("b", "echo", "--port", str(ECHO_PORT))
        wait_ready(echo)
    senders = []
    for port, mbps, frame in flows:
        send = ("send", "--to", RECEIVER_IP, "--port", str(port), "--rate-mbps", str(mbps), "--frame", str(frame))
        senders.append(bed.pacer("a", *send, "--duration", str(duration)))
    pinger = None
    if probe:
        pinger = bed.pacer(
            "a", "ping", "--to", RECEIVER_IP, "--port", str(ECHO_PORT), "--interval", "0.02", "--duration",
            str(duration), "--wait", "1",
        )  # fmt: skip
    results: list[Any] = []
    try:
        sent = [result_of(s, duration + 30) for s in senders]
        results = [result_of(r, duration + 30) for r in receivers]
        for summary, sender in zip(results, sent, strict=True):
            summary["sent_l2_mbps"] = sender["sent_l2_mbps"]
        if pinger is not None:
            results.append(result_of(pinger, duration + 30))
    finally:
        stop_processes((*senders, *receivers, *([echo] if echo else []), *([pinger] if pinger else [])))
    return results


def reservation_meter(mbps: float, burst_ms: float | None) -> tuple[int, int]:
    """(rate kbit/s, burst kbit) of the meter the controller gives a reservation of ``mbps``
    (sdnctl/meters.py), or with a burst of ``burst_ms`` when given."""
    from sdnctl.meters import BURST_S, meter_spec

    spec = meter_spec(1, mbps, BURST_S if burst_ms is None else burst_ms / 1000)
    return spec.rate_kbps, spec.burst_kb


def best_effort_meter(link: float, reserved: float, burst_ms: float | None) -> tuple[int, int]:
    """The meter the controller puts on the unreserved traffic of a link of ``link`` Mbit/s carrying
    ``reserved``: what is left less the headroom, with its short bucket (sdnctl/meters.py)."""
    from sdnctl.meters import BEST_EFFORT_BURST_S, BEST_EFFORT_HEADROOM, meter_spec

    left = link * (1 - BEST_EFFORT_HEADROOM) - reserved
    spec = meter_spec(2, left, BEST_EFFORT_BURST_S if burst_ms is None else burst_ms / 1000)
    return spec.rate_kbps, spec.burst_kb


def meter_accuracy(
    bed: MeterBed, rounds: int, duration: float, burst_ms: float | None, max_pps: float
) -> list[dict[str, Any]]:
    rows = []
    for meter_mbps in METER_MBPS:
        for frame in FRAMES:
            offered = 2 * meter_mbps
            pps = offered * 1e6 / (frame * 8)
            row: dict[str, Any] = {"meter_mbps": meter_mbps, "frame": frame, "offered_mbps": offered, "pps": round(pps)}
            if pps > max_pps:
                row["skipped"] = f"{pps:,.0f} packets/s is above --max-pps {max_pps:,.0f}"
                rows.append(row)
                continue
            metered, plain = [], []
            for _ in range(rounds):
                bursts = bed.program({1: reservation_meter(meter_mbps, burst_ms)})
                metered.append(streams(bed, [(RESERVED_PORT, offered, frame)], duration)[0])
                bed.program({})
                plain.append(streams(bed, [(RESERVED_PORT, offered, frame)], duration)[0])
            row.update(
                burst_kbit=bursts[1],
                delivered_over_meter=round(statistics.median(m["l2_mbps"] for m in metered) / meter_mbps, 4),
                goodput_over_meter=round(statistics.median(m["goodput_mbps"] for m in metered) / meter_mbps, 4),
                rounds=[m["l2_mbps"] for m in metered],
                sent_mbps=statistics.median(m["sent_l2_mbps"] for m in metered),
                no_meter_delivered_mbps=round(statistics.median(p["l2_mbps"] for p in plain), 3),
                no_meter_sent_mbps=statistics.median(p["sent_l2_mbps"] for p in plain),
            )
            rows.append(row)
            print(f"  {_accuracy_line(row)}", flush=True)
    return rows


def contention(
    bed: MeterBed, rounds: int, duration: float, burst_ms: float | None, link: float, reserved: float, frame: int
) -> dict[str, Any]:
    flows = [(RESERVED_PORT, reserved, frame), (BULK_PORT, 2 * link, 1500)]
    bed.shape(link)
    try:
        metered, plain = [], []
        for _ in range(rounds):
            bursts = bed.program(
                {1: reservation_meter(reserved, burst_ms), 2: best_effort_meter(link, reserved, burst_ms)}
            )
            metered.append(streams(bed, flows, duration, probe=True))
            bed.program({})
            plain.append(streams(bed, flows, duration, probe=True))
    finally:
        bed.shape(None)

    def figures(runs: list[list[Any]]) -> dict[str, Any]:
        return {
            "reserved_over_r": round(statistics.median(r[0]["l2_mbps"] for r in runs) / reserved, 4),
            "reserved_rounds_mbps": [r[0]["l2_mbps"] for r in runs],
            "reserved_goodput_mbps": statistics.median(r[0]["goodput_mbps"] for r in runs),
            "bulk_mbps": statistics.median(r[1]["l2_mbps"] for r in runs),
            "rtt_p50_ms": statistics.median(r[2]["p50_ms"] or 0.0 for r in runs),
            "rtt_p99_ms": statistics.median(r[2]["p99_ms"] or 0.0 for r in runs),
            "probe_lost": [r[2]["lost"] for r in runs],
        }

    return {
        "link_mbps": link,
        "reserved_mbps": reserved,
        "reserved_frame": frame,
        "bulk_offered_mbps": 2 * link,
        "burst_kbit": bursts,
        "meters": figures(metered),
        "no_meters": figures(plain),
    }


def _accuracy_line(row: dict[str, Any]) -> str:
    head = f"{row['meter_mbps']:>5g} Mbit/s {row['frame']:>5} B {row['offered_mbps']:>7g} {row['pps']:>7,}"
    if "skipped" in row:
        return f"{head}  skipped: {row['skipped']}"
    return (
        f"{head} {row['burst_kbit']:>6} kbit {row['delivered_over_meter']:>9.3f} {row['goodput_over_meter']:>9.3f}"
        f" {row['no_meter_delivered_mbps']:>10.2f} of {row['no_meter_sent_mbps']:.2f}"
    )


def admission_cost(link_mbps: float, tries: int, profile: bool) -> dict[str, Any]:
    a = measure_admission(link_mbps, tries=tries, profile=profile)
    for key in ("profile_cold", "profile_admit_one"):
        if key in a:
            print(f"cProfile, {key}:\n{a.pop(key)}")
    print(
        f"admission cost: {a['workloads']:,} instances on {a['nodes']:,} nodes, links {link_mbps:,g} Mbit/s:"
        f" {a['demands']:,} demands, {a['unreserved']} unreserved, {a['detoured']:,} off their shortest path;"
        f" {a['tries']} new instances"
    )
    print(f"  {'cold plan_reservations':<44} p50 {a['cold_plan_ms_p50']:>8} ms")
    print(
        f"  {'one more: plan(previous) + admission':<44} p50 {a['admit_one_ms_p50']:>8} ms"
        f"  p99 {a['admit_one_ms_p99']:>8} ms"
    )
    if a["tries_merged_into_an_existing_demand"]:
        print(
            f"  {'  of which appended to the plan':<44} p50 {a['admit_one_appended_ms_p50']:>8} ms"
            f"  p99 {a['admit_one_appended_ms_p99']:>8} ms"
        )
        print(
            f"  {'  of which joined an earlier demand':<44} p50 {a['admit_one_merged_ms_p50']:>8} ms"
            f"  ({a['tries_merged_into_an_existing_demand']} tries)"
        )
    print(
        f"  {'baseline: plan from scratch + admission':<44} p50 {a['baseline_from_scratch_ms_p50']:>8} ms"
        f"  p99 {a['baseline_from_scratch_ms_p99']:>8} ms"
    )
    return a


LAB = REPO / "examples" / "bandwidth.yaml"
VIDEO_PORT, LAB_UDP_PORT, BULK_TCP_PORT = 8554, 5004, 5010


@dataclass(frozen=True)
class Stream:
    name: str
    src: str
    dst: str  # a Mininet host (user host or compute node)
    proto: str
    port: int
    mbps: float  # TCP: a ceiling (offered at twice the uplink, TCP takes what it can get)


def lab_cases(node: str) -> list[tuple[str, list[Stream]]]:
    bulk_tcp = [Stream(f"bulk_tcp{k}", "u2", "h9", "tcp", BULK_TCP_PORT + k, 40.0) for k in range(4)]
    bulk_udp = [Stream("bulk_udp", "u2", "h9", "udp", BULK_TCP_PORT, 40.0)]
    video_tcp = Stream("video_tcp", "u1", node, "tcp", VIDEO_PORT, 8.0)
    video_udp = Stream("video_udp", "u1", node, "udp", LAB_UDP_PORT, 8.0)
    return [
        ("bulk: 1 TCP flow alone", bulk_tcp[:1]),
        ("video TCP alone", [video_tcp]),
        ("video UDP alone", [video_udp]),
        ("video TCP + 1 bulk TCP flow", [*bulk_tcp[:1], video_tcp]),
        ("video TCP + 4 bulk TCP flows", [*bulk_tcp, video_tcp]),
        ("video UDP + 4 bulk TCP flows", [*bulk_tcp, video_udp]),
        ("video UDP + bulk UDP at 40 Mbit/s", [*bulk_udp, video_udp]),
    ]


def _lab_streams(net: Any, node: str, streams: Sequence[Stream], duration: float) -> dict[str, Any]:
    """Run ``streams`` at once, with a UDP echo's round trips u1 -> ``node`` beside them; their figures."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started: list[Any] = []

    def popen(host: str, *args: str) -> Any:
        command = [sys.executable, "-m", "mininet_topos.pacer", *args]
        process = net.get(host).popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO), env=env
        )
        started.append(process)
        return process

    until = str(duration + 3)
    try:
        receivers = [
            popen(st.dst, "recv", "--proto", st.proto, "--port", str(st.port), "--duration", until) for st in streams
        ]
        receivers.append(popen(node, "echo", "--port", str(ECHO_PORT)))
        for process in receivers:
            wait_ready(process)
        senders = []
        for st in streams:
            to = ("--to", net.get(st.dst).IP(), "--port", str(st.port))
            rate = ("--rate-mbps", str(st.mbps), "--frame", "1500", "--duration", str(duration))
            senders.append(popen(st.src, "send", "--proto", st.proto, *to, *rate))
        probe = popen(
            "u1", "ping", "--to", net.get(node).IP(), "--port", str(ECHO_PORT), "--interval", "0.02",
            "--duration", str(duration), "--wait", "2",
        )  # fmt: skip
        out: dict[str, Any] = {}
        for st, sender, receiver in zip(streams, senders, receivers, strict=False):
            sent = result_of(sender, duration + 60)
            out[st.name] = {**result_of(receiver, duration + 60), "sent_l2_mbps": sent["sent_l2_mbps"]}
        out["probe"] = result_of(probe, duration + 60)
        return out
    finally:
        stop_processes(started)


def lab(duration: float, reserved: bool) -> dict[str, Any]:
    """The lab's cases; ``reserved`` False: the same fabric with video reserving nothing (the baseline: what a
    controller without reservations gives, in the same run)."""
    import tempfile

    text = LAB.read_text()
    if not reserved:
        text, count = re.subn(r",? *bandwidth_mbps: *[0-9.]+(?=[,}])", "", text.split("services:", 1)[1])
        assert count, "the lab's services reserve nothing to take away"
        text = LAB.read_text().split("services:", 1)[0] + "services:" + text
    with tempfile.TemporaryDirectory(prefix="edgectl-bandwidth-lab-") as directory:
        fabric = Path(directory) / LAB.name
        fabric.write_text(text)
        return _lab(fabric, duration)


def _lab(fabric: Path, duration: float) -> dict[str, Any]:
    from mininet_topos.controller_process import edgectl_run, free_port, mininet_testbed, wait_until

    openflow_port = free_port()
    with edgectl_run(fabric, openflow_port=openflow_port) as controller, mininet_testbed(fabric, openflow_port) as net:
        controller.wait_fabric_ready("u2", "h9")

        def video() -> dict[str, Any] | None:
            workloads = controller.get_json("/api/v1/workloads")["workloads"]
            return next((w for w in workloads if w["service"] == "video" and w.get("node")), None)

        wait_until(video, 30, what="video placed")
        instance = video()
        assert instance is not None
        node = instance["node"]
        node_ip = net.get(node).IP()
        h9_ip = net.get("h9").IP()
        wait_until(lambda: controller.route("u1", node), 30, what=f"route u1 -> {node}")
        wait_until(lambda: "1 received" in net.get("u1").cmd(f"ping -c1 -W1 {node_ip}"), 20, what="u1 reaches video")
        wait_until(lambda: "1 received" in net.get("u2").cmd(f"ping -c1 -W1 {h9_ip}"), 20, what="u2 -> h9")
        route = controller.route("u1", node)
        figures: dict[str, Any] = {"video_node": node, "u1_path": route["path"] if route else None}
        figures["cases"] = {}
        for name, streams in lab_cases(node):
            figures["cases"][name] = result = _lab_streams(net, node, streams, duration)
            print(f"  {name:<34} {_lab_line(result)}", flush=True)
        with contextlib.suppress(Exception):
            figures["links"] = controller.get_json("/api/v1/links")
        return figures


def _lab_line(result: dict[str, Any]) -> str:
    bulk = [v for k, v in result.items() if k.startswith("bulk")]
    parts = [f"bulk {sum(b['l2_mbps'] for b in bulk):.2f} Mbit/s"] if bulk else []
    for name in ("video_tcp", "video_udp"):
        if name in result:
            parts.append(f"{name} {result[name]['l2_mbps']:.2f} Mbit/s (goodput {result[name]['goodput_mbps']:.2f})")
    p = result["probe"]
    parts.append(f"u1 echo p50 {p['p50_ms']} p99 {p['p99_ms']} ms, lost {p['lost']}/{p['sent']}")
    return "; ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=("all", "meters", "admission", "lab"), default="all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per stream")
    parser.add_argument(
        "--burst-ms",
        type=float,
        default=None,
        help="every meter's bucket (default: the controller's, sdnctl/meters.py)",
    )
    parser.add_argument("--max-pps", type=float, default=100_000)
    parser.add_argument("--link-mbps", type=float, default=20.0)
    parser.add_argument("--reserved-mbps", type=float, default=8.0)
    parser.add_argument("--tries", type=int, default=200, help="admission: new instances tried")
    parser.add_argument("--profile", action="store_true", help="admission: cProfile's top 15")
    args = parser.parse_args()
    figures: dict[str, Any] = {"benchmark": "bandwidth"}
    if args.part in ("all", "meters"):
        print(f"meter accuracy: OVS userspace datapath, UDP at 2x the meter rate, p50 of {args.rounds} rounds")
        print(f"  {'meter':>12} {'frame':>7} {'offered':>7} {'pkt/s':>7} {'burst':>11} {'L2/meter':>9} "
              f"{'payload/m':>9} {'no meter: delivered of sent, Mbit/s':>10}")  # fmt: skip
        with meter_bed() as bed:
            figures["meter_accuracy"] = meter_accuracy(bed, args.rounds, args.duration, args.burst_ms, args.max_pps)
            print(
                f"reserved flow under contention: htb link {args.link_mbps:g} Mbit/s, reserved {args.reserved_mbps:g}"
                f" Mbit/s (meter R), bulk of 1500-byte frames at {2 * args.link_mbps:g} Mbit/s (meter: what R leaves"
                f" less 5 %); p50 of {args.rounds}"
            )
            results = []
            for frame in FRAMES:
                result = contention(
                    bed, args.rounds, args.duration, args.burst_ms, args.link_mbps, args.reserved_mbps, frame
                )
                results.append(result)
                for name in ("meters", "no_meters"):
                    f = result[name]
                    print(
                        f"  {frame:>5} B {name:<10} reserved delivered / R {f['reserved_over_r']:.3f}"
                        f" {f['reserved_rounds_mbps']}  bulk {f['bulk_mbps']:.2f} Mbit/s  echo p50"
                        f" {f['rtt_p50_ms']} ms p99 {f['rtt_p99_ms']} ms lost {f['probe_lost']}",
                        flush=True,
                    )
        figures["contention"] = results
    if args.part in ("all", "lab"):
        seconds = max(args.duration, 8.0)
        for reserved in (False, True):
            what = "video reserving 8 Mbit/s (after)" if reserved else "nothing reserved (before: the baseline)"
            print(
                f"the bandwidth lab ({LAB.name}), {what}: u2 -> h9 bulk and u1's 8 Mbit/s to video, {seconds:g} s each"
            )
            figures["lab" if reserved else "lab_unreserved"] = lab(seconds, reserved)
    if args.part in ("all", "admission"):
        figures["admission"] = [admission_cost(link, args.tries, args.profile) for link in LINK_MBPS]
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
