"""Drift on real OVS under Mininet: tables changed behind the controller's back are put back.

`ovs-ofctl del-flows` on one switch: the controller finds it within a few drift intervals, says so
(log line, metric, API), and puts back exactly the flows that were there, on that switch alone. A
flow added by hand in edgectl's cookie space is removed; one with another cookie is left alone.
"""

from __future__ import annotations

import contextlib
import re
import time

import pytest

from tests.integration.harness import (
    REPO,
    edgectl_run,
    flow_durations,
    free_port,
    http_get,
    mininet_testbed,
    ofctl,
    wait_until,
)

pytestmark = pytest.mark.integration

DIAMOND = REPO / "tests" / "data" / "fabrics" / "diamond.yaml"
VOLATILE = re.compile(r"\b(duration|n_packets|n_bytes|idle_age|hard_age)=[^,\s]*,?\s*")
OURS_STRAY = "cookie=0xec000000000000ff,priority=7,ip,nw_dst=10.9.9.9,actions=drop"
FOREIGN_STRAY = "cookie=0x1234,priority=5,ip,nw_dst=10.9.9.8,actions=drop"


def flows(bridge: str) -> list[str]:
    """The switch's flow table, without counters and ages: what it holds, not for how long."""
    return sorted(VOLATILE.sub("", line).strip() for line in ofctl("dump-flows", bridge).splitlines()[1:])


def switch_view(controller, name: str) -> dict:
    return next(s for s in controller.get_json("/api/v1/routes")["switches"] if s["dpid"] == name)


def drift_metric(controller, name: str) -> float:
    _, body = http_get(controller.http + "/metrics")
    found = re.search(rf'^edgectl_flow_drift_total{{switch="{name}"}} (\S+)$', body.decode(), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def checked_since(controller, name: str, since: float) -> bool:
    checked = switch_view(controller, name)["drift"]["last_check_at"]
    return checked is not None and checked > since


@pytest.fixture(scope="module")
def fabric():
    openflow_port = free_port()
    with contextlib.ExitStack() as stack:
        controller = stack.enter_context(edgectl_run(DIAMOND, "--drift-interval", "1", openflow_port=openflow_port))
        net = stack.enter_context(mininet_testbed(DIAMOND, openflow_port, real_delay=False))
        controller.wait_fabric_ready("h1", "h2")
        # Programmed and checked clean once: the tables are what the controller installed.
        start = time.time()
        for name in ("s1", "s2", "s3", "s4"):
            wait_until(lambda name=name: checked_since(controller, name, start), 30, what=f"a drift check of {name}")
        assert all(switch_view(controller, n)["drift"]["last_found"] is None for n in ("s1", "s2", "s3", "s4"))
        yield controller, net


def test_flushed_flows_are_put_back_on_that_switch_alone(fabric) -> None:
    controller, _net = fabric
    before = flows("s2")
    ours = [line for line in before if line.startswith("cookie=0xec")]
    assert len(ours) >= 6, before  # LLDP, ARP proxy, and IPv4 + ARP per host
    others_before = {name: flow_durations(name) for name in ("s1", "s3", "s4")}
    ofctl("del-flows", "s2")
    assert flows("s2") == []
    wait_until(lambda: flows("s2") == before, 30, what="s2's flows put back")

    # Reported: the log line, the metric, the API.
    line = f"drift on switch s2 (dpid 0x12): {len(ours)} flows missing, 0 unexpected, 0 groups differ; healing"
    wait_until(lambda: line in controller.log(), 10, what="the drift log line")
    assert controller.log().count("drift on switch s2 ") == 1, "reported more than once"
    drift = switch_view(controller, "s2")["drift"]
    assert drift["heals"] == 1
    assert drift["last_found"]["flows_missing"] == len(ours)
    assert drift["last_found"]["flows_unexpected"] == drift["last_found"]["groups_differ"] == 0
    assert drift_metric(controller, "s2") == 1.0
    assert drift_metric(controller, "s1") == 0.0

    # The record of what was sent: one heal of s2, flow adds only.
    heals = [c for c in controller.get_json("/api/v1/routes/changes") if c["reason"] == "drift"]
    assert [(c["switch"], c["confirmed"], c["size"]) for c in heals] == [("s2", True, len(ours))]
    assert {(m["phase"], m["kind"], m["command"]) for m in heals[0]["mods"]} == {("make", "flow", "add")}

    # The other switches were not touched: their flows were not re-added (durations not reset).
    for name, durations in others_before.items():
        after = flow_durations(name)
        for flow, duration in durations.items():
            assert flow in after, f"{name}: {flow} vanished"
            assert after[flow] >= duration, f"{name}: {flow} was re-added (duration reset)"
        assert drift_metric(controller, name) == 0.0


def test_a_stray_flow_in_our_cookie_space_goes_and_a_foreign_one_stays(fabric) -> None:
    controller, _net = fabric
    before = flows("s3")
    durations_before = flow_durations("s3")
    ofctl("add-flow", "s3", OURS_STRAY)
    ofctl("add-flow", "s3", FOREIGN_STRAY)
    wait_until(lambda: not any("10.9.9.9" in line for line in flows("s3")), 30, what="our-cookie stray removed")
    removed_at = time.time()
    line = "drift on switch s3 (dpid 0x13): 0 flows missing, 1 unexpected, 0 groups differ; healing"
    wait_until(lambda: line in controller.log(), 10, what="the drift log line")

    # Two more checks later the foreign flow is still there, and nothing else changed on s3.
    wait_until(lambda: checked_since(controller, "s3", removed_at + 1.5), 30, what="later drift checks of s3")
    after = flows("s3")
    foreign = [x for x in after if x.startswith("cookie=0x1234,")]
    assert len(foreign) == 1 and "priority=5" in foreign[0] and "nw_dst=10.9.9.8" in foreign[0], after
    assert [x for x in after if x not in foreign] == before
    for flow, duration in durations_before.items():
        assert flow_durations("s3")[flow] >= duration, f"{flow} was re-added (duration reset)"
    drift = switch_view(controller, "s3")["drift"]
    assert drift["heals"] == 1 and drift["last_found"]["flows_unexpected"] == 1
    assert drift_metric(controller, "s3") == 1.0
    heal = [c for c in controller.get_json("/api/v1/routes/changes") if c["reason"] == "drift" and c["switch"] == "s3"]
    assert len(heal) == 1
    assert heal[0]["mods"] == [
        {
            "phase": "break",
            "kind": "flow",
            "command": "delete",
            "table": 0,
            "priority": 7,
            "cookie": "0xec000000000000ff",
            "match": {"eth_type": "0x0800", "ipv4_dst": "10.9.9.9"},
            "actions": [],
        }
    ]
