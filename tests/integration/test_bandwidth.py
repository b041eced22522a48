"""Bandwidth reservations end to end on a real testbed: `edgectl run` driving Mininet (OVS userspace datapath,
real link delay, every link shaped by htb at its capacity) with examples/bandwidth.yaml — an edge switch e1
with two 20 Mbit/s uplinks, u1 (a user of `video`, which reserves 8 Mbit/s each way per instance), u2 (a bulk
source) and h9 (its sink in the cloud).

One test, in the order an operator would see it:
1. a video instance placed in the cloud gets its reservation over the latency-shortest uplink, metered at e1;
2. a bulk flow at twice the uplink beside it: video's paced 8 Mbit/s still arrives within 5 %, the bulk is
   held to what is left of the uplink, and round trips u1 -> the instance stay within video's SLO;
3. more instances: the next that does not fit the short uplink takes the other one, the one that fits
   nowhere is refused with RESOURCE_EXHAUSTED naming the link, and without a tier constraint it goes to the
   edge node instead (its users' traffic crosses no uplink);
4. the short uplink fails: reservations move, oldest first, onto the other only while it has room; the
   rest are reported without a reservation; no link holds more than its capacity, and video's traffic flows.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from mininet_topos.controller_process import stop_processes
from mininet_topos.pacer import result_of, wait_ready
from placement._pb import placement_pb2 as pb
from placement._pb import placement_pb2_grpc as pb_grpc
from tests.integration.harness import (
    REPO,
    declaring_replicas,
    edgectl_run,
    free_port,
    mininet_testbed,
    wait_until,
)

pytestmark = pytest.mark.integration

LAB = REPO / "examples" / "bandwidth.yaml"
RESERVED_MBPS = 8.0
UPLINK_MBPS = 20.0
SLO_MS = 20.0  # video's max_latency_ms (one way)
BEST_EFFORT_MBPS = UPLINK_MBPS * 0.95 - RESERVED_MBPS  # what the reservation leaves, less 5 % of headroom
BULK_PORT, ECHO_PORT = 5201, 5207


@contextlib.contextmanager
def placement_stub(port: int) -> Iterator[pb_grpc.PlacementStub]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=15)
        yield pb_grpc.PlacementStub(channel)


class Pacers:
    """``mininet_topos.pacer`` processes in the testbed's hosts; every one stopped by PID at the end."""

    def __init__(self, net: Any) -> None:
        self.net = net
        self.started: list[subprocess.Popen[str]] = []

    def start(self, host: str, *args: str) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        command = [sys.executable, "-m", "mininet_topos.pacer", *args]
        process: subprocess.Popen[str] = self.net.get(host).popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO), env=env
        )
        self.started.append(process)
        return process

    def listening(self, host: str, *args: str) -> subprocess.Popen[str]:
        process = self.start(host, *args)
        wait_ready(process)
        return process

    def stop(self) -> None:
        stop_processes(self.started)


def streams(
    net: Any, pacers: Pacers, video: tuple[str, int], bulk: bool, duration: float
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
    """u1's paced TCP at the reservation to the video instance (node, port), with u2's UDP bulk at twice the
    uplink to h9 beside it when ``bulk``, and UDP round trips u1 -> the node: (video, bulk, probe) figures."""
    node, port = video
    node_ip, h9_ip = net.get(node).IP(), net.get("h9").IP()
    until = str(duration + 3)
    video_rx = pacers.listening(node, "recv", "--proto", "tcp", "--port", str(port), "--duration", until)
    bulk_rx = (
        pacers.listening("h9", "recv", "--proto", "udp", "--port", str(BULK_PORT), "--duration", until)
        if bulk
        else None
    )
    echo = pacers.listening(node, "echo", "--port", str(ECHO_PORT))
    rate = ("--frame", "1500", "--duration", str(duration))
    bulk_tx = (
        pacers.start(
            "u2",
            "send",
            "--proto",
            "udp",
            "--to",
            h9_ip,
            "--port",
            str(BULK_PORT),
            "--rate-mbps",
            str(2 * UPLINK_MBPS),
            *rate,
        )
        if bulk
        else None
    )
    video_tx = pacers.start(
        "u1", "send", "--proto", "tcp", "--to", node_ip, "--port", str(port), "--rate-mbps", str(RESERVED_MBPS), *rate
    )
    probe = pacers.start(
        "u1",
        "ping",
        "--to",
        node_ip,
        "--port",
        str(ECHO_PORT),
        "--interval",
        "0.02",
        "--duration",
        str(duration),
        "--wait",
        "2",
    )
    wait = duration + 60
    result_of(video_tx, wait)
    if bulk_tx is not None:
        result_of(bulk_tx, wait)
    video_figures = result_of(video_rx, wait)
    bulk_figures = result_of(bulk_rx, wait) if bulk_rx is not None else None
    probe_figures = result_of(probe, wait)
    echo.terminate()
    echo.wait(timeout=10)  # its port is free for the next streams() on this node only once it has exited
    return video_figures, bulk_figures, probe_figures


def place(stub: pb_grpc.PlacementStub, *, cloud: bool) -> pb.Workload:
    constraints = pb.Constraints(tiers=[pb.TIER_CLOUD]) if cloud else pb.Constraints()
    reply = stub.Place(pb.PlaceRequest(service="video", constraints=constraints), timeout=20)
    assert len(reply.workloads) == 1
    return reply.workloads[0]


def reservations_of(controller: Any, workload: str) -> list[dict[str, Any]]:
    view = controller.get_json("/api/v1/routes")["reservations"]
    return [r for r in view["reservations"] if workload in r["owners"]]


def uplink_of(reservation: dict[str, Any]) -> str:
    return reservation["path"][1]  # e1 -> (m1 | m2) -> c1


def links_fit(controller: Any) -> dict[str, Any]:
    view = controller.get_json("/api/v1/links")
    for row in view["links"]:
        assert row["reserved_mbps"] <= row["capacity_mbps"] + 1e-9, row
    return view


def ofctl(switch: str, *args: str) -> str:
    return subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow13", *args, switch], check=True, capture_output=True, text=True, timeout=20
    ).stdout


METER = re.compile(r"meter=(\d+)\s+[a-z ]*?\s*bands=\s*type=drop rate=(\d+)")


def meters_at(switch: str) -> dict[int, int]:
    """meter id -> rate (kbit/s) of the meters on ``switch``."""
    return {int(m.group(1)): int(m.group(2)) for m in METER.finditer(ofctl(switch, "dump-meters"))}


def short_uplink_shortest(controller: Any) -> bool:
    """Both ways between e1 and c1, the way over m1 is the latency-shortest again by the controller's
    measured latencies (a queue on an uplink delays its probes too, and reads as latency)."""
    latency = {
        (link["src"], link["dst"]): link["latency_us"] for link in controller.get_json("/api/v1/topology")["links"]
    }

    def way(*hops: str) -> float:
        return sum(latency[(a, b)] for a, b in itertools.pairwise(hops))

    return way("e1", "m1", "c1") < way("e1", "m2", "c1") and way("c1", "m1", "e1") < way("c1", "m2", "e1")


def wait_reserved(controller: Any, workload: str, count: int = 2) -> list[dict[str, Any]]:
    """``workload``'s reservations once the route engine has programmed them (each with its meter)."""
    return wait_until(
        lambda: (
            (found := reservations_of(controller, workload))
            and len(found) == count
            and all(r["meter"] is not None for r in found if r["links"])
            and found
        ),
        30,
        interval=0.3,
        what=f"{workload}'s reservations",
    )


def test_reservations_hold_under_contention_refuse_over_commit_and_follow_a_link_failure(tmp_path: Path) -> None:
    fabric = declaring_replicas(LAB, tmp_path)  # every instance is placed here, through the API
    openflow_port, api_port = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        controller = stack.enter_context(
            edgectl_run(fabric, "--api-port", str(api_port), "--port-stats-interval", "1", openflow_port=openflow_port)
        )
        net = stack.enter_context(mininet_testbed(fabric, openflow_port))
        pacers = Pacers(net)
        stack.callback(pacers.stop)
        stub = stack.enter_context(placement_stub(api_port))
        controller.wait_fabric_ready("u1", "c-n1")
        controller.wait_fabric_ready("u2", "h9")

        # 1. The first instance in the cloud: reserved both ways over the short uplink, metered at e1.
        first = place(stub, cloud=True)
        reserved = wait_reserved(controller, first.id)
        assert {uplink_of(r) for r in reserved} == {"m1"}, reserved
        to_video = next(r for r in reserved if r["src"] == "u1")
        assert to_video["path"] == ["e1", "m1", "c1"] and to_video["meter"]["switch"] == "e1", to_video
        meter = to_video["meter"]["id"]
        wait_until(lambda: meters_at("e1").get(meter) == int(RESERVED_MBPS * 1000), 20, what="video's meter on e1")
        best_effort = meters_at("e1")
        assert round(BEST_EFFORT_MBPS * 1000) in best_effort.values(), best_effort  # the rest of the uplink
        node_ip = net.get(first.node).IP()
        wait_until(lambda: "1 received" in net.get("u1").cmd(f"ping -c1 -W1 {node_ip}"), 20, what="u1 reaches video")

        # 2. Contention: bulk UDP at twice the uplink beside video's paced reservation.
        video, bulk, probe = streams(net, pacers, (first.node, first.port), bulk=True, duration=8.0)
        assert bulk is not None
        assert video["l2_mbps"] >= 0.95 * RESERVED_MBPS, (video, bulk)
        assert bulk["l2_mbps"] <= 1.05 * BEST_EFFORT_MBPS, bulk  # held to what is left
        assert bulk["l2_mbps"] >= 0.5 * BEST_EFFORT_MBPS, bulk  # and it did load the uplink
        assert probe["received"] > 0 and probe["p99_ms"] / 2 <= SLO_MS, probe  # one way: half a round trip

        # 3. More instances: the short uplink holds two, the long one two more; then nothing in the cloud fits.
        # The bulk flow queued at e1 -> m1, which the latency probes measured too: the next reservation
        # would take the other uplink for that direction until the estimate comes back down.
        wait_until(lambda: short_uplink_shortest(controller), 30, what="the measured latencies after the bulk flow")
        second = place(stub, cloud=True)
        assert {uplink_of(r) for r in wait_reserved(controller, second.id)} == {"m1"}
        third = place(stub, cloud=True)
        assert {uplink_of(r) for r in wait_reserved(controller, third.id)} == {"m2"}  # the detour with room
        fourth = place(stub, cloud=True)
        assert {uplink_of(r) for r in wait_reserved(controller, fourth.id)} == {"m2"}
        with pytest.raises(grpc.RpcError) as refused:
            place(stub, cloud=True)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "e1:" in refused.value.details() and "Mbit/s left" in refused.value.details(), refused.value.details()
        elsewhere = place(stub, cloud=False)  # the SLO allows the edge node: no uplink to cross
        assert elsewhere.node == "e-n1", elsewhere
        view = links_fit(controller)
        assert not view["unreserved"], view["unreserved"]

        # 4. The short uplink fails: the oldest reservations move to the long one while it has room.
        net.configLinkStatus("e1", "m1", "down")

        def moved() -> dict[str, Any] | None:
            view = controller.get_json("/api/v1/routes")["reservations"]
            return view if view["unreserved"] and all("m1" not in r["path"] for r in view["reservations"]) else None

        after = wait_until(moved, 30, interval=0.3, what="reservations re-planned around the failed uplink")
        kept = {owner for r in after["reservations"] for owner in r["owners"]}
        dropped = {owner for u in after["unreserved"] for owner in u["owners"]}
        assert {first.id, second.id} <= kept and {third.id, fourth.id} <= dropped, after  # oldest first
        assert all("e1:" in u["reason"] or "no path" in u["reason"] for u in after["unreserved"]), after
        links_fit(controller)
        wait_until(
            lambda: "1 received" in net.get("u1").cmd(f"ping -c1 -W1 {node_ip}"), 20, what="u1 still reaches video"
        )
        video, _, _ = streams(net, pacers, (first.node, first.port), bulk=False, duration=5.0)
        assert video["l2_mbps"] >= 0.95 * RESERVED_MBPS, video
