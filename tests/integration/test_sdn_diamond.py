"""sdnctl on real OVS (userspace datapath) under Mininet, with real link delay.

The diamond has a 2 ms path (s1-s2-s4) and a 20 ms path (s1-s3-s4) between h1 and h2. Everything
is checked from the switches' own counters and tables or from host traffic, not from the
controller's claims; the controller's API is only read to wait and to compare.
"""

from __future__ import annotations

import contextlib
import time

import pytest

from sdnctl.discovery import PROBE_INTERVAL_S
from sdnctl.latency import WINDOW
from tests.integration.harness import (
    REPO,
    edgectl_run,
    explained_on_failure,
    flow_durations,
    free_port,
    mininet_testbed,
    ofctl,
    ovs,
    ping_summary,
    port_tx_packets,
    wait_until,
)

pytestmark = pytest.mark.integration

DIAMOND = REPO / "tests" / "data" / "fabrics" / "diamond.yaml"
# Ports from the fabric file's assignment (edgectl topo show tests/data/fabrics/diamond.yaml):
S1_TO_S2, S1_TO_S3 = 1, 2
SWITCHES = ("s1", "s2", "s3", "s4")
WINDOW_S = WINDOW * PROBE_INTERVAL_S  # the latency estimator's window, in seconds


def explained(fabric):
    """Prints the running controller's log and the switches' tables if what it wraps fails."""
    return explained_on_failure(lambda: fabric["controller"], SWITCHES)


def links_by_name(controller) -> dict[tuple[str, str], dict]:
    return {(x["src"], x["dst"]): x for x in controller.get_json("/api/v1/topology")["links"]}


@pytest.fixture(scope="module")
def fabric():
    openflow_port, http_port = free_port(), free_port()
    with contextlib.ExitStack() as stack:  # a restarted controller joins the stack: all stop at the end
        controller = stack.enter_context(edgectl_run(DIAMOND, openflow_port=openflow_port, http_port=http_port))
        net = stack.enter_context(mininet_testbed(DIAMOND, openflow_port))
        wait_until(
            lambda: all(s["connected"] for s in controller.get_json("/api/v1/topology")["switches"]),
            30,
            what="all switches connected",
        )
        wait_until(
            lambda: all(x["discovered"] for x in links_by_name(controller).values()), 30, what="all links discovered"
        )
        wait_until(lambda: controller.route("h1", "h2"), 30, what="route h1 -> h2")
        h1, h2 = net.get("h1"), net.get("h2")
        wait_until(lambda: ping_summary(h1.cmd("ping -c 1 -W 1 10.0.0.2"))[1] == 1, 30, what="first ping")
        yield {
            "controller": controller,
            "net": net,
            "h1": h1,
            "h2": h2,
            "ports": (openflow_port, http_port),
            "stack": stack,
        }


def test_traffic_takes_the_2ms_path_by_the_switch_counters(fabric) -> None:
    h1 = fabric["h1"]
    before = port_tx_packets("s1")
    out = h1.cmd("ping -c 200 -i 0.005 -W 1 -q 10.0.0.2")
    sent, received = ping_summary(out)
    after = port_tx_packets("s1")
    assert received == sent == 200
    fast = after[S1_TO_S2] - before[S1_TO_S2]
    slow = after[S1_TO_S3] - before[S1_TO_S3]
    assert fast >= 200, f"s1 sent only {fast} packets towards s2"
    assert slow < 20, f"s1 sent {slow} packets towards s3 (LLDP probes only expected)"
    r = fabric["controller"].route("h1", "h2")
    assert r["path"] == ["s1", "s2", "s4"]


def test_ping_rtt_shows_the_real_delay(fabric) -> None:
    out = fabric["h1"].cmd("ping -c 20 -i 0.05 -W 1 -q 10.0.0.2")
    avg_ms = float(out.split("rtt min/avg/max/mdev = ")[1].split("/")[1])
    # Two ways over 2 ms of links: 4 ms plus the relays' overhead.
    assert 3.6 <= avg_ms <= 8.0, out


def test_measured_latency_within_30_percent_of_configured(fabric) -> None:
    """The model's latencies come within 30 % of the testbed's delays within two estimator windows. A first
    estimate taken while the machine is loaded carries the load (each term is a windowed minimum: one busy
    spell over a term's few first samples lifts it: a lifted transit reads the link slower, a lifted control
    round trip faster); the window's later, quieter samples bring it back, and the controller reports the
    change even within the measurement's noise. The readings taken are printed either way."""
    controller = fabric["controller"]
    expected = {("s1", "s2"): 1000, ("s2", "s4"): 1000, ("s1", "s3"): 10000, ("s3", "s4"): 10000}
    readings: list[dict] = []

    def measured() -> dict:
        links = links_by_name(controller)
        return {k: links[k]["measured_latency_us"] for k in expected}

    def within() -> bool:
        got = measured()
        readings.append({f"{a}-{b}": got[(a, b)] for a, b in expected})
        return all(got[k] is not None and abs(got[k] - want) <= 0.3 * want for k, want in expected.items())

    wait_until(lambda: all(v is not None for v in measured().values()), 30, what="latency measurements")
    try:
        wait_until(within, 2 * WINDOW_S, interval=1.0, what="every link within 30 %")
    finally:
        print("measured one-way latency (us):", readings[-1], "configured:", list(expected.values()))
        print("readings, every 5th:", readings[::5])
        print("estimator:", controller.get_json("/api/v1/latency"))


def test_controller_restart_loses_no_ping_and_flushes_nothing(fabric) -> None:
    with explained(fabric):
        controller, h1 = fabric["controller"], fabric["h1"]
        openflow_port, http_port = fabric["ports"]
        durations_before = flow_durations("s2")
        assert durations_before, "no edgectl flows on s2"
        stream = h1.popen("ping -i 0.02 -c 400 -W 1 10.0.0.2")  # 8 s of pings across the restart
        time.sleep(1)
        assert controller.stop() == 0
        restarted = fabric["stack"].enter_context(
            edgectl_run(DIAMOND, openflow_port=openflow_port, http_port=http_port)
        )
        fabric["controller"] = restarted
        wait_until(
            lambda: all(s["connected"] for s in restarted.get_json("/api/v1/topology")["switches"]),
            30,
            what="switches reconnected",
        )
        out, _ = stream.communicate(timeout=30)
        sent, received = ping_summary(out.decode())
        assert sent == 400 and received == sent, f"lost {sent - received} of {sent} pings across the restart"
        wait_until(lambda: restarted.route("h1", "h2"), 30, what="routes after restart")
        durations_after = flow_durations("s2")
        for flow, before in durations_before.items():
            assert flow in durations_after, f"{flow} vanished"
            assert durations_after[flow] > before, f"{flow} was re-added (duration reset)"


def test_a_switch_reconnecting_late_after_a_restart_loses_no_route_or_backup(fabric) -> None:
    """OVS retries a lost controller with a backoff of up to 8 s, so switches come back seconds apart.
    Here s3 comes back last: until it does, s1 and s4 keep the fast-failover groups whose backup buckets
    lead through it, and once it is back the restarted controller has changed nothing."""
    with explained(fabric):
        controller = fabric["controller"]
        openflow_port, http_port = fabric["ports"]
        groups_before = {name: ofctl("dump-groups", name) for name in ("s1", "s4")}
        assert all("type=ff" in text for text in groups_before.values()), groups_before
        durations_before = {name: flow_durations(name) for name in ("s1", "s2", "s4")}
        assert controller.stop() == 0
        ovs("set-controller", "s3", f"tcp:127.0.0.1:{free_port()}")  # nobody listens there: s3 stays away
        try:
            restarted = fabric["stack"].enter_context(
                edgectl_run(DIAMOND, openflow_port=openflow_port, http_port=http_port)
            )
            fabric["controller"] = restarted

            def connected() -> set[str]:
                return {s["id"] for s in restarted.get_json("/api/v1/topology")["switches"] if s["connected"]}

            wait_until(lambda: connected() == {"s1", "s2", "s4"}, 30, what="s1, s2, s4 reconnected")
            wait_until(
                lambda: (
                    {(x["src"], x["dst"]) for x in links_by_name(restarted).values() if x["discovered"]}
                    >= {("s1", "s2"), ("s2", "s1"), ("s2", "s4"), ("s4", "s2")}
                ),
                30,
                what="the links among them discovered",
            )
            time.sleep(3)  # well past the quiet second after which a fresh fabric is programmed
            assert {name: ofctl("dump-groups", name) for name in ("s1", "s4")} == groups_before
        finally:
            ovs("set-controller", "s3", f"tcp:127.0.0.1:{openflow_port}")
        wait_until(lambda: len(connected()) == 4, 30, what="s3 reconnected")
        wait_until(
            lambda: all(s["applied_generation"] >= 0 for s in restarted.get_json("/api/v1/routes")["switches"]),
            30,
            what="every switch programmed by the restarted controller",
        )
        withdrawn = [
            (c["switch"], m)
            for c in restarted.get_json("/api/v1/routes/changes")
            if c["reason"] == "plan"
            for m in c["mods"]
            if m["phase"] == "break"
        ]
        assert not withdrawn, withdrawn
        for name, before in durations_before.items():
            after = flow_durations(name)
            for flow, duration in before.items():
                assert flow in after, f"{name}: {flow} vanished"
                assert after[flow] >= duration, f"{name}: {flow} was re-added (duration reset)"


def hosts_where(controller) -> dict[str, tuple[str, int]]:
    return {h["id"]: (h["switch"], h["port"]) for h in controller.get_json("/api/v1/topology")["hosts"]}


def test_arp_copied_from_a_link_not_seen_again_yet_moves_no_host(fabric) -> None:
    """Every switch an ARP crosses sends the controller a copy. After a restart the switches come back
    seconds apart, and until a link's far end is back the link is not seen: a copy from its port was
    taken for its sender's own port, which put h2 at s1's port towards s2 (routes to h2 then looped,
    until h2's next ARP). Here s2 and s4 stay away while h2 asks for h1's address."""
    with explained(fabric):
        controller, h1, h2 = fabric["controller"], fabric["h1"], fabric["h2"]
        openflow_port, http_port = fabric["ports"]
        where = hosts_where(controller)
        assert where["h2"][0] == "s4" and where["h1"][0] == "s1", where
        assert controller.stop() == 0
        away = free_port()  # nobody listens there
        for name in ("s2", "s4"):
            ovs("set-controller", name, f"tcp:127.0.0.1:{away}")
        try:
            restarted = fabric["stack"].enter_context(
                edgectl_run(DIAMOND, openflow_port=openflow_port, http_port=http_port)
            )
            fabric["controller"] = restarted
            wait_until(
                lambda: (
                    {s["id"] for s in restarted.get_json("/api/v1/topology")["switches"] if s["connected"]}
                    == {"s1", "s3"}
                ),
                30,
                what="s1 and s3 reconnected",
            )
            # Its ARP crosses s4, s2 and s1 by the routes they carry; s1 copies it from its port towards s2.
            h2.cmd("ip neigh flush dev h2-eth0")
            assert ping_summary(h2.cmd("ping -c 3 -i 0.2 -W 1 10.0.0.1"))[1] == 3
            time.sleep(0.5)
            assert hosts_where(restarted) == where
        finally:
            for name in ("s2", "s4"):
                ovs("set-controller", name, f"tcp:127.0.0.1:{openflow_port}")
        wait_until(
            lambda: all(x["discovered"] for x in links_by_name(restarted).values()), 30, what="links rediscovered"
        )
        assert hosts_where(restarted) == where
        wait_until(lambda: restarted.route("h1", "h2")["path"] == ["s1", "s2", "s4"], 20, what="on the 2 ms path")
        sent, received = ping_summary(h1.cmd("ping -c 20 -i 0.05 -W 1 -q 10.0.0.2"))
        assert sent == received == 20


def test_failover_keeps_the_stream_flowing(fabric) -> None:
    with explained(fabric):
        controller, net, h1 = fabric["controller"], fabric["net"], fabric["h1"]
        wait_until(lambda: controller.route("h1", "h2")["path"] == ["s1", "s2", "s4"], 20, what="on the 2 ms path")
        stream = h1.popen("ping -i 0.02 -c 250 -W 1 10.0.0.2")  # 5 s
        time.sleep(1.5)
        net.configLinkStatus("s1", "s2", "down")
        try:
            out, _ = stream.communicate(timeout=30)
            sent, received = ping_summary(out.decode())
            print(f"failover: {sent - received} of {sent} pings lost at 20 ms intervals")
            assert sent == 250 and sent - received <= 5, f"lost {sent - received} pings"
            wait_until(lambda: controller.route("h1", "h2")["path"] == ["s1", "s3", "s4"], 10, what="reroute via s3")
        finally:
            net.configLinkStatus("s1", "s2", "up")
        wait_until(lambda: controller.route("h1", "h2")["path"] == ["s1", "s2", "s4"], 20, what="back on the 2 ms path")
