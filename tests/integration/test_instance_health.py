"""End to end: an instance whose app dies on a node that stays up. Two instances of `web` behind real Envoy
sidecars in the two-edges testbed (OVS under Mininet, `edgectl run` with its CA, mTLS), one user on u1
calling it through their own sidecar with a loop of GET requests. The app of the instance serving the user
(the nearer one, the user's priority 0) is killed (SIGKILL; its sidecar keeps running, answering 503 for
it). Its node agent (`edgectl agent`, started by the lab with a join token) is held still (SIGSTOP) for a
second meanwhile, so the user's Envoy meets the dead instance before the controller hears of it.

Asserted from the outside: no GET is lost (the user's Envoy retried those that met the dead instance on
the other one, and ejected it: outlier detection); the dead instance leaves the user's Envoy's endpoints
(admin /clusters), because the node agent reported it and the controller withdrew it; and failover
re-places it: a new instance serves the user's requests.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from mininet_topos.controller_process import wait_until
from mininet_topos.lab import NOT_YET, Lab
from tests.integration.harness import declaring_replicas

pytestmark = pytest.mark.integration

FABRIC = Path(__file__).resolve().parents[1] / "data" / "fabrics" / "two-edges.yaml"
RATE = 20.0


def endpoints(lab: Lab, cluster: str = "svc/web") -> set[str]:
    """Where the user's Envoy sends requests of a cluster, from its admin API (/clusters)."""
    status = json.loads(lab.mesh.clients["u1"].admin("/clusters?format=json"))
    for entry in status["cluster_statuses"]:
        if entry["name"] == cluster:
            return {
                f"{h['address']['socket_address']['address']}:{h['address']['socket_address']['port_value']}"
                for h in entry.get("host_statuses", [])
            }
    return set()


def test_a_dead_app_loses_no_get_is_withdrawn_and_is_replaced(tmp_path: Path) -> None:
    # Two instances of web, declared: the controller places them, and keeps two (failover replaces the dead one).
    with Lab(declaring_replicas(FABRIC, tmp_path / "fabric", 2), tmp_path / "lab") as lab:
        instances = [w["id"] for w in lab.wait_declared_services()]
        lab.start_loads("web", rate=RATE)
        # u1's Envoy sends its requests to the instance nearest to it (its priority 0; docs/meshctl.md,
        # "Per-caller priorities"): that one dies, the other is where the requests go meanwhile.
        served = wait_until(lambda: next((r for r in lab.records() if r.ok), None), 15, 0.02, "a GET answered", NOT_YET)
        first = served.workload
        [second] = [i for i in instances if i != first]
        print(f"\ninstances {instances}: u1 is served by {first}")
        mark = len(lab.events())
        found = lab.workload_status(first)
        assert found is not None and found[1]["state"] == "running", found
        node, victim = found
        address = f"{lab.net.get(node).IP()}:{victim['port']}"
        assert address in endpoints(lab)
        time.sleep(1.0)
        since = time.time() - 2.0
        retries = lab.envoy_counter("cluster.svc/web.upstream_rq_retry")

        agent = lab.agents[node]
        os.kill(agent.pid, signal.SIGSTOP)  # let the user's Envoy find out first
        try:
            killed_at = time.time()
            os.kill(victim["app_pid"], signal.SIGKILL)  # the app only: its node and its sidecar stay up
            time.sleep(1.0)
        finally:
            os.kill(agent.pid, signal.SIGCONT)
        wait_until(
            lambda: address not in endpoints(lab), 20, 0.02, "the dead instance to leave u1's endpoints", NOT_YET
        )
        withdrawn_s = time.time() - killed_at
        done = lab.wait_event(
            lambda e: e.kind == "MIGRATION_COMPLETED" and e.from_workload_id == first, timeout=30, start=mark
        )
        replacement = done.workload_id
        first_served = lab.first_served_by(replacement, timeout=15)
        assert first_served is not None, lab.records()[-5:]
        time.sleep(1.0)
        ended = time.time()

        records = lab.records(since=since, until=ended)
        failed = [r for r in records if not r.ok]
        print(
            f"\nkilled the app of {first}: withdrawn from u1's Envoy after {withdrawn_s * 1000:.0f} ms, "
            f"replaced by {replacement} on {done.node}, which answered after "
            f"{first_served.t - killed_at:.2f} s; {len(records)} GETs, {len(failed)} failed; "
            f"u1 retried {lab.envoy_counter('cluster.svc/web.upstream_rq_retry') - retries}, "
            f"ejections {lab.envoy_counter('cluster.svc/web.outlier_detection.ejections_enforced_total')}"
        )
        assert failed == [], failed[:5]
        assert len(records) >= RATE * 2, len(records)
        assert lab.envoy_counter("cluster.svc/web.upstream_rq_retry") > retries  # GETs met the dead instance
        assert {first, second, replacement} <= {r.workload for r in records}
        assert first not in {w["id"] for w in lab.workloads()}
        assert address not in endpoints(lab) and len(endpoints(lab)) == 2
        assert lab.get("/api/v1/workloads/health")["unhealthy"] == []  # withdrawn for good: nothing left marked
