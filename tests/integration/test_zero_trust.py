"""Zero trust end to end on the example lab (examples/edge-cloud.yaml: the users' hosts call web, web calls
api, api calls db; nothing else is allowed). Real OVS under Mininet, `edgectl run` with its CA, the node
agent (`edgectl agent`, attested with a join token) in every compute node running the apps and their Envoy
sidecars, a client sidecar with its host SVID on every user host.

Both layers are checked on their own, from the outside:
- Envoy: an mTLS call to db's sidecar with a caller identity db does not admit gets 403 from the sidecar.
  It is made from the node of an api instance, the one place the switches let anyone reach db's port
  from (a web instance colocated with api would be such a caller: the network admits its node, only the
  sidecar tells the two apart). u1's client sidecar has no listener for db (a user host's sidecar gets
  listeners for the entry services only), so the calls use u1's or web's SVID directly, as a sidecar would.
- Network: u1 bypassing its sidecar with a raw TCP connect to db's node port gets nothing through, and
  the drop flow at db's node's switch counts it (ovs-ofctl), and the controller reports the denial.
Then a policy change (a new document admitting the host u1 at db, POST /api/v1/config/apply) flips both
within 1 s, and a migration of db keeps the policy at its new node. Everything is stopped by the lab (by
PID, net.stop()), also on failure.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from meshctl.bootstrap import XdsClientTls
from mininet_topos.controller_process import wait_until
from mininet_topos.lab import NOT_YET, Lab
from tests.integration.harness import REPO

pytestmark = pytest.mark.integration

FABRIC = REPO / "examples" / "edge-cloud.yaml"
DB_PORT = 5432
FLIP_S = 1.0


def once(
    lab: Lab, where: str, mode: str, ip: str, want: str, svid: XdsClientTls | None = None, timeout_s: float = 3.0
) -> str:
    """What a call from ``where`` gives: ``want`` as soon as it does within ``timeout_s``, else the last result."""
    return lab.probe(where, mode, (ip, DB_PORT), want, timeout_s, svid).result()[1]


def network_denials(lab: Lab, service: str) -> int:
    view = lab.get("/api/v1/policy")
    return sum(row["count"] for row in view["denied_totals"] if row["service"] == service and row["layer"] == "network")


def apply_document(lab: Lab, text: str) -> tuple[float, float]:
    """POST the document to /api/v1/config/apply; (when it was sent, when the answer came)."""
    body = json.dumps({"files": {"edge-cloud.yaml": text}, "timeout_s": 20}).encode()
    request = urllib.request.Request(
        lab.http + "/api/v1/config/apply", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    sent = time.time()
    with urllib.request.urlopen(request, timeout=60) as response:
        reply = json.load(response)
    answered = time.time()
    assert response.status == 200, reply
    return sent, answered


def switch_of(lab: Lab, host_or_node: str) -> str:
    spec = lab.net.spec
    return next(x.switch for x in (*spec.hosts, *spec.nodes) if x.id == host_or_node)


def node_ip(lab: Lab, node: str) -> str:
    return str(next(n.ip for n in lab.net.spec.nodes if n.id == node))


def host_ip(lab: Lab, host: str) -> str:
    return str(next(h.ip for h in lab.net.spec.hosts if h.id == host))


def test_allowed_denied_bypass_policy_flip_and_migration(tmp_path: Path) -> None:
    with Lab(FABRIC, tmp_path / "lab", extra_args=("--port-stats-interval", "0.5")) as lab:
        td = lab.trust_domain
        workloads = lab.wait_declared_services()
        # The agents attested with their join tokens, and run every workload placed on their nodes.
        for node in lab.agents:
            assert lab.agent_status(node)["spiffe_id"] == f"spiffe://{td}/node/{node}"
        for w in workloads:
            found = lab.workload_status(w["id"])
            assert found is not None and found == (w["node"], found[1]) and found[1]["state"] == "running", found
        db = next(w for w in workloads if w["service"] == "db")
        api_nodes = [w["node"] for w in workloads if w["service"] == "api"]
        caller_node = next((n for n in api_nodes if n != db["node"]), api_nodes[0])
        db_ip = node_ip(lab, db["node"])
        u1_svid = lab.host_svids["u1"]
        web_svid = lab.issue_svid(f"spiffe://{td}/svc/web/w/web-probe", "probes/web")
        print(f"\ndb {db['id']} on {db['node']} ({db_ip}); api instances on {api_nodes}: calls from {caller_node}")

        # (a) allowed: u1's users reach web through u1's client sidecar over mTLS (web calls api calls db).
        lab.start_loads("web", rate=10.0)
        first = wait_until(lambda: next((r for r in lab.records() if r.ok), None), 30, 0.05, "a GET answered", NOT_YET)
        assert first.caller and first.caller.startswith(f"spiffe://{td}/host/u"), first  # mTLS: a user host's SVID
        assert any(s.startswith("db-") for s in first.served_by), first

        # (b) not allowed: web's and u1's identities get 403 from db's sidecar (the network admits the node).
        assert once(lab, caller_node, "tls", db_ip, "403", web_svid) == "403"
        assert once(lab, caller_node, "tls", db_ip, "403", u1_svid) == "403"
        assert once(lab, caller_node, "tcp", db_ip, "open") == "open"  # the switches let api's node through

        # (c) u1 bypassing its sidecar: a raw TCP connect to db's port gets nothing through; db's node's
        # switch drops it and counts, and the controller reports the network-layer denial.
        db_switch, u1_ip = switch_of(lab, db["node"]), host_ip(lab, "u1")
        drops_before = lab.drop_packets(db_switch, (db_ip, DB_PORT), u1_ip)
        denials_before = network_denials(lab, "db")
        assert once(lab, "u1", "tcp", db_ip, "open", timeout_s=2.0) == "closed"
        assert lab.drop_packets(db_switch, (db_ip, DB_PORT), u1_ip) > drops_before
        wait_until(lambda: network_denials(lab, "db") > denials_before, 10, 0.2, "the network denial", NOT_YET)

        # (d) a new document admits the host u1 at db: both layers flip within a second.
        text = FABRIC.read_text()
        allowing = text.replace("allow_from: [api], run:", "allow_from: [api, {host: u1}], run:")
        assert allowing != text
        envoy = lab.probe(caller_node, "tls", (db_ip, DB_PORT), "200", 15.0, u1_svid)
        network = lab.probe("u1", "tcp", (db_ip, DB_PORT), "open", 15.0)
        time.sleep(0.5)  # both are trying (and failing) before the change
        sent, answered = apply_document(lab, allowing)
        (envoy_at, envoy_result), (network_at, network_result) = envoy.result(), network.result()
        assert envoy_at is not None, envoy_result
        assert network_at is not None, network_result
        print(
            f"policy flip: apply answered in {(answered - sent) * 1000:.0f} ms; "
            f"envoy 403 -> 200 {(envoy_at - sent) * 1000:.0f} ms after the request "
            f"({(envoy_at - answered) * 1000:.0f} ms after the answer); "
            f"raw TCP blocked -> open {(network_at - sent) * 1000:.0f} ms after the request "
            f"({(network_at - answered) * 1000:.0f} ms after the answer)"
        )
        assert envoy_at - answered <= FLIP_S and network_at - answered <= FLIP_S
        assert once(lab, "u1", "tls", db_ip, "200", u1_svid) == "200"  # u1 itself now reaches db over mTLS

        # (e) db moves: its new node keeps exactly its callers, on both layers.
        target = next(n for n in ("c-n2", "c-n1", "m-n1") if n != db["node"])
        moved = lab.migrate(db["id"], target)
        assert not moved.error, moved.error
        new_ip = node_ip(lab, moved.to_node)
        found = lab.workload_status(moved.new)
        assert found is not None and found[0] == moved.to_node and found[1]["state"] == "running", found
        after_move = time.time()
        served = wait_until(
            lambda: next((r for r in lab.records(after_move) if r.ok and moved.new in r.served_by), None),
            20,
            0.05,
            "api's calls served by the moved db",
            NOT_YET,
        )
        assert served.ok
        assert once(lab, "u1", "tls", new_ip, "200", u1_svid) == "200"
        assert once(lab, caller_node, "tls", new_ip, "403", web_svid) == "403"
        new_switch, u2_ip = switch_of(lab, moved.to_node), host_ip(lab, "u2")
        u2_drops = lab.drop_packets(new_switch, (new_ip, DB_PORT), u2_ip)
        assert once(lab, "u2", "tcp", new_ip, "open", timeout_s=2.0) == "closed"
        assert lab.drop_packets(new_switch, (new_ip, DB_PORT), u2_ip) > u2_drops
        lost = [r for r in lab.records(after_move) if not r.ok]
        assert lost == [], lost[:5]
        # The users' requests kept working throughout (web -> api -> db, all admitted).
        assert lab.get("/api/v1/policy")["default"] == "deny"
        print(
            f"db moved to {moved.to_node} ({new_ip}): api's calls 200, u1 200, web's identity 403, u2's raw TCP dropped"
        )
