"""OpenFlow 1.3 roles against real Open vSwitch: two `edgectl run` processes on the same two switches,
roles pinned with --static-role. The MASTER programs the switches, the SLAVE never sends a FlowMod; a
later generation takes the switches over without changing a flow; a controller still holding the
older generation is refused as stale (fenced), installs nothing and ends SLAVE."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import (
    ControllerProcess,
    edgectl_run,
    flow_durations,
    free_port,
    http_get,
    ofctl,
    ovs,
    wait_until,
)

pytestmark = pytest.mark.integration

FABRIC = """
name: roles
subnet: 10.0.0.0/16
sites: [{id: s, tier: edge, region: r}]
switches:
  - {id: ra, dpid: 0xe1a, site: s}
  - {id: rb, dpid: 0xe1b, site: s}
links:
  - {a: ra, a_port: 1, b: rb, b_port: 1, latency_ms: 1, bandwidth_mbps: 100}
hosts:
  - {id: u1, switch: ra, port: 2, ip: 10.0.0.1}
  - {id: u2, switch: rb, port: 2, ip: 10.0.0.2}
"""
# What the stale controller would add if it could: a third host, its own flows.
STALE_HOST = "  - {id: u3, switch: rb, port: 3, ip: 10.0.0.3}\n"
BRIDGES = {"eroles-a": 0xE1A, "eroles-b": 0xE1B}


def shows(port: int, role: str) -> bool:
    """``ovs-vsctl list controller``: the controller on ``port`` is connected to both bridges with ``role``."""
    target = f"tcp:127.0.0.1:{port}"
    columns = ("--columns=target,role,is_connected", "--format=csv", "--data=bare", "--no-headings")
    out = ovs(*columns, "list", "controller")
    rows = [line.split(",") for line in out.splitlines() if line.startswith(target + ",")]
    return len(rows) == len(BRIDGES) and all(r[1] == role and r[2] == "true" for r in rows)


@contextlib.contextmanager
def bridges(ports: tuple[int, int]) -> Iterator[None]:
    """Two userspace bridges joined by a patch cable on port 1, each with both controllers; always deleted."""
    names = list(BRIDGES)
    try:
        for name, dpid in BRIDGES.items():
            ovs(
                "--may-exist", "add-br", name,
                "--", "set", "bridge", name, "datapath_type=netdev", "protocols=OpenFlow13",
                f"other-config:datapath-id={dpid:016x}", "fail-mode=secure",
            )  # fmt: skip
        for here, there in (names, names[::-1]):
            ovs(
                "add-port", here, f"{here}-p1",
                "--", "set", "interface", f"{here}-p1", "type=patch", f"options:peer={there}-p1", "ofport_request=1",
            )  # fmt: skip
        for name in names:
            ovs("set-controller", name, *(f"tcp:127.0.0.1:{port}" for port in ports))
            for uuid in ovs("get", "bridge", name, "controller").strip("[]\n ").split(", "):
                ovs("set", "controller", uuid, "max_backoff=1000")
        yield
    finally:
        for name in names:
            subprocess.run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", name], check=False)


def flows_of(bridge: str) -> set[str]:
    """edgectl's flows on a bridge, without counters and durations."""
    kept = set()
    for line in ofctl("dump-flows", bridge).splitlines():
        line = line.strip()
        if line.startswith("cookie=0xec"):
            kept.add(re.sub(r"(duration|n_packets|n_bytes|idle_age|hard_age)=[^,]*, ", "", line))
    return kept


def all_flows() -> dict[str, set[str]]:
    return {name: flows_of(name) for name in BRIDGES}


def programmed_flows() -> dict[str, set[str]] | None:
    """Both bridges' flows, once each holds routes (more than the base and ACL flows)."""
    flows = all_flows()
    return flows if all(any("nw_dst=10.0.0." in f for f in v) for v in flows.values()) else None


def sent(controller: ControllerProcess, message: str) -> float:
    """How many messages of a type the controller sent (its /metrics)."""
    status, body = http_get(controller.http + "/metrics")
    assert status == 200
    match = re.search(rf'^edgectl_openflow_messages_sent_total{{type="{message}"}} (\S+)$', body.decode(), re.M)
    return float(match.group(1)) if match else 0.0


def metric(controller: ControllerProcess, line: str) -> bool:
    return line in http_get(controller.http + "/metrics")[1].decode()


def programmed(controller: ControllerProcess) -> bool:
    """Both switches reconciled and running the controller's current routes."""
    routes = controller.get_json("/api/v1/routes")
    switches = routes["switches"]
    return (
        routes["generation"] is not None
        and len(switches) == 2
        and all(s["reconciled"] and s["applied_generation"] >= 0 for s in switches)
    )


def test_master_programs_slave_never_writes_handover_keeps_every_flow_and_a_stale_master_is_fenced(
    tmp_path: Path,
) -> None:
    fabric = tmp_path / "roles.yaml"
    fabric.write_text(FABRIC)
    stale_fabric = tmp_path / "roles-stale.yaml"
    stale_fabric.write_text(FABRIC + STALE_HOST)
    port_a, port_b = free_port(), free_port()
    # 1. A master at generation 2, B slave at 2.
    with (
        bridges((port_a, port_b)),
        edgectl_run(fabric, "--static-role", "master:2", openflow_port=port_a) as a,
        edgectl_run(fabric, "--static-role", "slave:2", openflow_port=port_b) as b,
    ):
        wait_until(lambda: shows(port_a, "master") and shows(port_b, "slave"), 30, what="A master, B slave in OVS")
        wait_until(lambda: programmed(a), 40, what="A programmed both switches")
        wait_until(lambda: a.route("u1", "u2"), 20, what="A's route u1 -> u2")
        flows = wait_until(programmed_flows, 20, what="A's flows on both switches")
        assert any("nw_dst=10.0.0.2" in f for f in flows["eroles-a"]), flows
        assert sent(a, "OFPFlowMod") > 0
        for message in ("OFPFlowMod", "OFPGroupMod", "OFPMeterMod", "OFPPacketOut"):
            assert sent(b, message) == 0, f"the SLAVE sent {message}"
        assert b.get_json("/api/v1/topology")["links"][0]["discovered"] is False, "a SLAVE observes nothing"
        assert metric(b, 'edgectl_openflow_switch_role{role="slave",switch="ra"} 1.0'), b.log()[-2000:]
        assert metric(a, 'edgectl_openflow_switch_role{role="master",switch="rb"} 1.0'), a.log()[-2000:]
        ages = flow_durations("eroles-a") | flow_durations("eroles-b")

        # 2. B restarted at generation 3 as master: A is made SLAVE, and B changes nothing.
        assert b.stop() == 0
        with edgectl_run(fabric, "--static-role", "master:3", openflow_port=port_b) as b3:
            wait_until(lambda: shows(port_b, "master") and shows(port_a, "slave"), 30, what="B master, A slave in OVS")
            wait_until(lambda: programmed(b3), 40, what="B read both switches back")
            wait_until(lambda: b3.route("u1", "u2"), 20, what="B's route u1 -> u2")
            assert sent(b3, "OFPFlowMod") == 0, "nothing differed, yet the new master sent FlowMods"
            assert sent(b3, "OFPGroupMod") == 0
            assert all_flows() == flows, "the handover changed the switches' flows"
            after = flow_durations("eroles-a") | flow_durations("eroles-b")
            assert set(after) == set(ages) and all(after[k] >= ages[k] for k in ages), "a flow was re-added"
            wait_until(
                lambda: metric(a, 'edgectl_openflow_switch_role{role="slave",switch="ra"} 1.0'),
                15,
                what="A sees itself SLAVE",
            )

            # OVS said so itself: its role status (an ONF experimenter message in OpenFlow 1.3).
            assert metric(a, 'edgectl_openflow_messages_received_total{type="OFPExperimenter"}')

            # 3. A restarted, still at generation 2 (stale), with one more host: refused, fenced, SLAVE.
            assert a.stop() == 0
            with edgectl_run(stale_fabric, "--static-role", "master:2", openflow_port=port_a) as stale:
                wait_until(lambda: shows(port_a, "slave"), 30, what="the stale controller SLAVE in OVS")
                wait_until(
                    lambda: "refused MASTER at generation 2 as stale" in stale.log(), 15, what="fenced in the log"
                )
                assert metric(stale, 'edgectl_openflow_errors_total{code="0",type="role_request_failed"}')
                wait_until(
                    lambda: metric(stale, 'edgectl_openflow_switch_role{role="slave",switch="rb"} 1.0'),
                    15,
                    what="the stale controller's own view",
                )
                for message in ("OFPFlowMod", "OFPGroupMod", "OFPMeterMod", "OFPPacketOut"):
                    assert sent(stale, message) == 0, f"the fenced controller sent {message}"
                assert shows(port_b, "master")
                now = all_flows()
                assert not any("10.0.0.3" in f for v in now.values() for f in v), "a fenced flow was installed"
                assert now == flows


def test_a_follower_promoted_at_run_time_takes_over_without_a_flowmod_and_a_demoted_one_stops(tmp_path: Path) -> None:
    """In one process, as the cluster drives it: a follower (SLAVE at 2, its model without observations)
    promoted with set_mastership at 3 takes the switches from the running master: OVS makes the other SLAVE,
    the follower publishes the switches it holds, discovers the link, reads the tables back and sends no
    FlowMod; demoted again, it writes nothing more at once and OVS shows it SLAVE."""
    from edgectl.config import RunConfig, load_fabric
    from edgectl.controller import Controller
    from sdnctl.roles import Mastership

    fabric = tmp_path / "roles.yaml"
    fabric.write_text(FABRIC)
    port_a, port_p = free_port(), free_port()
    config = RunConfig(
        fabric_file=str(fabric),
        openflow_port=port_p,
        http_port=free_port(),
        xds_port=free_port(),
        api_port=free_port(),
        agent_port=0,
        static_role=Mastership(False, 2),
    )
    follower = Controller(config, load_fabric(config.fabric_file))
    follower.start()
    try:
        with bridges((port_a, port_p)), edgectl_run(fabric, "--static-role", "master:2", openflow_port=port_a) as a:
            assert follower.openflow is not None and follower.routes is not None
            app, state = follower.openflow.app, lambda: follower.bus.state
            wait_until(lambda: shows(port_a, "master") and shows(port_p, "slave"), 30, what="A master, P slave")
            wait_until(lambda: programmed(a), 40, what="A programmed both switches")
            flows = wait_until(programmed_flows, 20, what="A's flows on both switches")
            assert not any(s.connected for s in state().topology.switches.values()), "a follower observes nothing"
            ages = flow_durations("eroles-a") | flow_durations("eroles-b")

            app.set_mastership(Mastership(True, 3))
            wait_until(lambda: shows(port_p, "master") and shows(port_a, "slave"), 30, what="P master, A slave")
            wait_until(
                lambda: (
                    all(s.connected for s in state().topology.switches.values())
                    and all(x.discovered for x in state().topology.links.values())
                ),
                30,
                what="the promoted follower's model: switches connected, link discovered",
            )
            wait_until(lambda: follower.routes.runs(state().generation), 40, what="P read the switches back")
            assert app.roles_view() == {
                0xE1A: {"role": "master", "generation_id": 3},
                0xE1B: {"role": "master", "generation_id": 3},
            }
            assert app.messages.totals().sent.get("OFPFlowMod", 0) == 0, "nothing differed, yet FlowMods were sent"
            assert all_flows() == flows
            after = flow_durations("eroles-a") | flow_durations("eroles-b")
            assert set(after) == set(ages) and all(after[k] >= ages[k] for k in ages), "a flow was re-added"

            app.set_mastership(Mastership(False, 4))
            assert not app.may_write(0xE1A) and not app.may_write(0xE1B), "demoted: no write, before any answer"
            wait_until(lambda: shows(port_p, "slave"), 30, what="P slave in OVS")
            sent_before = app.messages.totals().sent.get("OFPPacketOut", 0)
            time.sleep(2.5)  # two probe rounds: a demoted controller probes no more
            assert app.messages.totals().sent.get("OFPPacketOut", 0) == sent_before
    finally:
        follower.stop()
