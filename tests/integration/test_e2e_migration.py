"""End to end: two edge sites and a cloud (OVS under Mininet, real link delay), `edgectl run` with its CA,
one service whose app runs in a compute node's namespace behind a real Envoy sidecar (bootstrapped by
``edgectl mesh bootstrap``'s renderer, xDS over the controller's Unix socket), a user on edge site A calling
it through their own sidecar over mTLS. The service moves edge -> cloud -> edge under a request loop.

Asserted from the outside, not from the controller's claims: every request succeeded (and the service saw
the user's SPIFFE id, so mTLS was on the way), and the user's Envoy never failed to connect to an instance
(none was an endpoint before its sidecar served); the user's Envoy, through its admin API, sends to the new
address after each move; the user's new connection back to the edge node, which it reached before,
opened with TCP Fast Open (the kernel's counters in both namespaces); and the switches' port counters show
the traffic going to the cloud node's port, then back to the edge node's. Everything is stopped by the
lab (by PID, net.stop()), also on failure.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mininet_topos.lab import Lab
from mininet_topos.timeline import MigrationTimeline
from tests.integration.harness import port_tx_packets

pytestmark = pytest.mark.integration

FABRIC = Path(__file__).resolve().parents[1] / "data" / "fabrics" / "two-edges.yaml"
EDGE, CLOUD = "ea-n1", "c-n1"
ADDRESS = {EDGE: "10.0.1.10", CLOUD: "10.0.9.10"}
ACCESS = {EDGE: "ea1", CLOUD: "c1"}  # the switch each node hangs off
RATE = 20.0


def access_port(lab: Lab, node: str) -> int:
    switch, host = lab.net.get(ACCESS[node]), lab.net.get(node)
    (link,) = lab.net.linksBetween(switch, host)
    intf = link.intf1 if link.intf1.node is switch else link.intf2
    return int(switch.ports[intf])


def tx_to(lab: Lab, node: str) -> int:
    return port_tx_packets(ACCESS[node])[access_port(lab, node)]


def web_endpoints(lab: Lab) -> list[str]:
    """Where the user's Envoy sends `web` requests, from its admin API (/clusters)."""
    clusters = json.loads(lab.mesh.clients["u1"].admin("/clusters?format=json"))
    for cluster in clusters["cluster_statuses"]:
        if cluster["name"] == "svc/web":
            return sorted(
                f"{h['address']['socket_address']['address']}:{h['address']['socket_address']['port_value']}"
                for h in cluster.get("host_statuses", [])
            )
    return []


def move(lab: Lab, workload: str, node: str) -> MigrationTimeline:
    timeline = lab.migrate(workload, node)
    assert not timeline.error, timeline.error
    assert timeline.to_node == node and timeline.chain_s is not None, timeline
    stages = [seconds for _, seconds in timeline.stages()]
    assert all(s is not None for s in stages), timeline.stages()
    return timeline


def test_a_service_moves_edge_to_cloud_and_back_without_losing_a_request(tmp_path: Path) -> None:
    with Lab(FABRIC, tmp_path / "lab") as lab:
        (web,) = lab.wait_declared_services()
        lab.start_loads("web", rate=RATE)
        web_id = web["id"]
        if web["node"] != EDGE:  # start at the edge, whatever the scheduler preferred
            web_id = move(lab, web_id, EDGE).new
        assert lab.first_served_by(web_id, timeout=10) is not None, lab.records()[-5:]
        started = time.time()
        refused = lab.envoy_counter("cluster.svc/web.upstream_cx_connect_fail")
        fast_opened = lab.tcp_counters("u1").get("TCPFastOpenActive", 0)
        fast_accepted = lab.tcp_counters(EDGE).get("TCPFastOpenPassive", 0)

        time.sleep(1.0)
        to_cloud = move(lab, web_id, CLOUD)
        time.sleep(1.5)  # let the old instance drain and traffic settle on the new one
        assert web_endpoints(lab) == [f"{ADDRESS[CLOUD]}:8080"]
        edge_before = tx_to(lab, EDGE)
        cloud_before = tx_to(lab, CLOUD)
        time.sleep(1.0)
        cloud_sent = tx_to(lab, CLOUD) - cloud_before
        edge_idle = tx_to(lab, EDGE) - edge_before

        back = move(lab, to_cloud.new, EDGE)
        time.sleep(1.5)
        assert web_endpoints(lab) == [f"{ADDRESS[EDGE]}:8080"]
        edge_before = tx_to(lab, EDGE)
        cloud_before = tx_to(lab, CLOUD)
        time.sleep(1.0)
        edge_sent = tx_to(lab, EDGE) - edge_before
        cloud_idle = tx_to(lab, CLOUD) - cloud_before
        ended = time.time()

        # Make-before-break with real sidecars: the user's Envoy never even tried an instance that did
        # not listen yet (without the readiness gate it does, 5 times here, and retries elsewhere).
        assert lab.envoy_counter("cluster.svc/web.upstream_cx_connect_fail") == refused
        # Back at the edge node, which it reached before the moves: the user's sidecar opened its new
        # connection with TCP Fast Open (the ClientHello in the SYN), and the new sidecar took it so.
        assert lab.tcp_counters("u1").get("TCPFastOpenActive", 0) > fast_opened
        assert lab.tcp_counters(EDGE).get("TCPFastOpenPassive", 0) > fast_accepted
        records = lab.records(since=started, until=ended)
        failed = [r for r in records if not r.ok]
        assert len(records) >= RATE * 6, len(records)
        assert failed == [], failed[:5]
        assert all(r.caller == "spiffe://edgectl.local/host/u1" for r in records)  # mTLS: the app saw the SVID
        served = [r.workload for r in records]
        assert {web_id, to_cloud.new, back.new} <= set(served)
        # In order: the first instance, then the cloud one, then the edge one again.
        assert served.index(to_cloud.new) > served.index(web_id) and served.index(back.new) > served.index(to_cloud.new)

        # The switches saw it: about RATE requests a second (each several packets) reach the serving
        # node's port, and only ARP/LLDP-level trickle reaches the other one.
        assert cloud_sent >= RATE, (cloud_sent, edge_idle)
        assert edge_sent >= RATE, (edge_sent, cloud_idle)
        assert edge_idle < cloud_sent / 4 and cloud_idle < edge_sent / 4, (cloud_sent, edge_idle, edge_sent, cloud_idle)

        for timeline in (to_cloud, back):
            assert timeline.chain_s is not None and timeline.chain_s < 5.0, timeline.stages()
