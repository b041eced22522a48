"""Bandwidth reservations on real OVS (userspace datapath) under Mininet: meters and reservation flows.

A diamond with one compute node behind s4 and a service reserving 20 Mbit/s each way with h1: the
reservation h1 -> web enters at s1 (its meter there), crosses s2 and leaves at s4; web -> h1 the other
way round. Every link of the path gets a best-effort meter of the 75 Mbit/s left (less 5 % of headroom)
at its source switch, on the route flows that leave by it. A restarted controller finds all of it in
place and sends none of it again; a meter changed behind its back is put back by the drift check.
"""

from __future__ import annotations

import contextlib
import re

import pytest

from tests.integration.harness import (
    REPO,
    edgectl_run,
    flow_durations,
    free_port,
    mininet_testbed,
    ofctl,
    wait_until,
)

pytestmark = pytest.mark.integration

DIAMOND = REPO / "tests" / "data" / "fabrics" / "diamond.yaml"
WITH_SERVICE = """
nodes:
  - {id: n1, site: lab, switch: s4, cpu_millis: 1000, memory_mib: 1024, ip: 10.0.0.10}
services:
  - {name: web, port: 8080, replicas: 1, cpu_millis: 100, memory_mib: 64, near: [h1], bandwidth_mbps: 20}
"""
METER = re.compile(r"meter=(\d+)\s+([a-z ]*?)\s*bands=\s*type=drop rate=(\d+) burst_size=(\d+)")
RESERVATION_COOKIE = "cookie=0xec04"


def meters(bridge: str) -> dict[int, tuple[str, int, int]]:
    """meter id -> (flags, rate kbit/s, burst kbit), as the switch holds them."""
    return {
        int(m.group(1)): (m.group(2), int(m.group(3)), int(m.group(4)))
        for m in METER.finditer(ofctl("dump-meters", bridge))
    }


def reservation_flows(bridge: str) -> list[str]:
    return [line.strip() for line in ofctl("dump-flows", bridge).splitlines() if RESERVATION_COOKIE in line]


def port_towards(controller, src: str, dst: str) -> int:
    links = controller.get_json("/api/v1/topology")["links"]
    return next(x["src_port"] for x in links if x["src"] == src and x["dst"] == dst)


def installed(controller) -> bool:
    """Both reservations' flows and every meter they need are on the switches."""
    try:
        s1, s2, s4 = meters("s1"), meters("s2"), meters("s4")
    except Exception:
        return False
    rates_s1 = sorted(rate for _, rate, _ in s1.values())
    return (
        rates_s1 == [20_000, 75_000]
        and sorted(rate for _, rate, _ in s2.values()) == [75_000, 75_000]
        and sorted(rate for _, rate, _ in s4.values()) == [20_000, 75_000]
        and all(len(reservation_flows(name)) == 2 for name in ("s1", "s2", "s4"))
    )


def what_is_there(controller) -> str:
    """The switches' meters and reservation flows, and the controller's last log lines: why a wait failed."""
    held = {name: (meters(name), reservation_flows(name)) for name in ("s1", "s2", "s3", "s4")}
    return f"switches: {held}\nlog: {controller.log()[-4000:]}"


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("meters")
    path = directory / "diamond-reserved.yaml"
    path.write_text(DIAMOND.read_text() + WITH_SERVICE)
    state_dir = directory / "state"
    openflow_port, http_port = free_port(), free_port()
    args = ("--drift-interval", "1", "--state-dir", str(state_dir))
    with contextlib.ExitStack() as stack:  # a restarted controller joins the stack: all stop at the end
        controller = stack.enter_context(edgectl_run(path, *args, openflow_port=openflow_port, http_port=http_port))
        net = stack.enter_context(mininet_testbed(path, openflow_port))  # real delays: one shortest path
        controller.wait_fabric_ready("h1", "h2")
        try:
            wait_until(lambda: installed(controller), 60, what="reservation flows and meters on s1, s2, s4")
        except Exception as exc:
            raise AssertionError(what_is_there(controller)) from exc
        yield {
            "controller": controller,
            "net": net,
            "path": path,
            "args": args,
            "ports": (openflow_port, http_port),
            "stack": stack,
        }


def test_reservations_are_metered_at_ingress_and_best_effort_on_the_reserved_links(fabric) -> None:
    controller = fabric["controller"]
    s1 = meters("s1")
    s1_to_s2 = port_towards(controller, "s1", "s2")
    best_effort = 0x30000 + s1_to_s2
    assert s1[best_effort] == ("kbps burst stats", 75_000, 750), s1
    ((reservation_meter, (flags, rate, burst)),) = [(i, m) for i, m in s1.items() if i != best_effort]
    assert 1 <= reservation_meter < 0x30000 and (flags, rate, burst) == ("kbps burst stats", 20_000, 10_000)
    # s1: h1 -> web metered by its own meter, out towards s2; web -> h1 out to h1, no meter (not its ingress).
    flows = reservation_flows("s1")
    to_web = next(f for f in flows if "tp_dst=8080" in f)
    assert "priority=200" in to_web and "nw_src=10.0.0.1" in to_web and "nw_dst=10.0.0.10" in to_web
    assert f"meter:{reservation_meter},output:{s1_to_s2}" in to_web, to_web
    from_web = next(f for f in flows if "tp_src=8080" in f)
    assert "meter:" not in from_web
    # s2 only forwards both: no meter on its reservation flows, its two best-effort meters police routes.
    assert all("meter:" not in f for f in reservation_flows("s2"))
    assert not meters("s3") and not reservation_flows("s3"), "s3 is on no reserved path"
    # s1's route to h2 leaves towards s2: policed by the best-effort meter of that port.
    route_h2 = next(
        line
        for line in ofctl("dump-flows", "s1").splitlines()
        if "priority=100,ip," in line and "nw_dst=10.0.0.2" in line
    )
    assert f"meter:{best_effort}," in route_h2, route_h2


def test_a_restarted_controller_keeps_meters_and_reservation_flows_and_sends_none_again(fabric) -> None:
    controller = fabric["controller"]
    openflow_port, http_port = fabric["ports"]
    meters_before = {name: meters(name) for name in ("s1", "s2", "s4")}
    durations_before = {name: flow_durations(name) for name in ("s1", "s2", "s4")}
    assert controller.stop() == 0
    restarted = fabric["stack"].enter_context(
        edgectl_run(fabric["path"], *fabric["args"], openflow_port=openflow_port, http_port=http_port)
    )
    fabric["controller"] = restarted
    restarted.wait_fabric_ready("h1", "h2")

    def programmed() -> bool:
        changes = restarted.get_json("/api/v1/routes")["switches"]
        return all(s["applied_generation"] >= 0 for s in changes) and len(changes) == 4

    wait_until(programmed, 60, what="every switch programmed by the restarted controller")
    sent = [c for c in restarted.get_json("/api/v1/routes/changes") if c["reason"] == "plan"]
    mods = [m for c in sent for m in c["mods"]]
    assert not [m for m in mods if m["kind"] == "meter"], mods
    assert not [m for m in mods if m["kind"] == "flow" and m["cookie"].startswith("0xec04")], mods
    assert not [m for m in mods if m["kind"] == "flow" and any(a.startswith("meter:") for a in m["actions"])], mods
    for name, before in meters_before.items():
        assert meters(name) == before, name
        after = flow_durations(name)
        for flow, duration in durations_before[name].items():
            assert flow in after, f"{name}: {flow} vanished"
            assert after[flow] >= duration, f"{name}: {flow} was re-added (duration reset)"


def test_a_meter_changed_behind_the_controllers_back_is_put_back(fabric) -> None:
    controller = fabric["controller"]
    before = meters("s4")
    reservation_meter = next(i for i in before if i < 0x30000)
    ofctl("mod-meter", "s4", f"meter={reservation_meter},kbps,burst,band=type=drop,rate=1000,burst_size=100")
    assert meters("s4")[reservation_meter][1] == 1000
    try:
        wait_until(lambda: meters("s4") == before, 30, what="s4's meter put back")
    except Exception as exc:
        raise AssertionError(what_is_there(controller)) from exc
    wait_until(lambda: "1 meters differ; healing" in controller.log(), 10, what="the drift log line")
    heals = [c for c in controller.get_json("/api/v1/routes/changes") if c["reason"] == "drift" and c["switch"] == "s4"]
    assert heals and {(m["kind"], m["command"]) for m in heals[-1]["mods"]} == {("meter", "modify")}
