"""The replicated controller, done-when: a real 3-member etcd, three ``edgectl run --etcd`` replicas
sharing one CA, the Mininet testbed with every switch connected to every replica, node agents and client
sidecars listing every replica. Under a ping stream between two sites and the users' request loops:

1. the leader is killed (SIGKILL): a survivor leads within a few seconds, OVS shows it the one master of
   every switch, not one ping and not one request is lost, and the placements are the same (same ids on the
   same nodes, none doubled);
2. the new leader is paused (SIGSTOP) until the third replica leads, then resumed: OVS shows it slave on
   every switch, it says it follows, and no flow on any switch changed (what it may have sent was refused);
3. a node identity revoked at one replica is refused by the others (the revocation list is in etcd), and
   restored likewise; a certificate revoked with ``edgectl pki rotate --dir`` on the shared CA directory is
   taken in by every replica.

Asserted from the outside: OVS's controller table, ping's replies by icmp_seq, the request loops' records,
``ovs-ofctl dump-flows``. Everything is stopped by PID (replicas, etcd, agents, sidecars) and the testbed
removed, also on failure.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from mininet_topos.controller_process import wait_until
from mininet_topos.ha_lab import HaLab, PingStream, wait_masters

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FABRIC = REPO / "tests" / "data" / "fabrics" / "two-edges.yaml"
RATE = 10.0
ELECTION_BOUND_S = 5.0
"""A dead leader's lease is revoked at once (its liveness connection closed), a hung one's expires after
the 1 s TTL: a few seconds is generous on a loaded 2-core machine."""
SETTLE_S = 4.0
"""Traffic kept flowing this long after a fault: longer than a request's timeout (2 s)."""


def cluster_status(lab: HaLab) -> dict[str, Any]:
    """`edgectl cluster status --output json` over every replica's HTTP API, as an operator runs it (exit 0:
    no problem found)."""
    import json
    import subprocess
    import sys

    http = ",".join(r.http.removeprefix("http://") for r in lab.replicas.values())
    result = subprocess.run(
        [sys.executable, "-m", "edgectl.cli", "cluster", "status", "--http", http, "--output", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    status: dict[str, Any] = json.loads(result.stdout)
    assert result.returncode == 0, (result.returncode, result.stderr, status["problems"])
    return status


def revoke(lab: HaLab, replica: str, body: dict[str, Any]) -> None:
    import json
    import urllib.request

    url = f"{lab.replicas[replica].http}/api/v1/pki/node-revocations"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def revoked(lab: HaLab, replica: str, what: str) -> list[str]:
    """A replica's ``/api/v1/identities`` ``revoked_identities`` or ``revoked_serials``."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"{lab.replicas[replica].http}/api/v1/identities", timeout=10) as response:
        return list(json.load(response)[f"revoked_{what}"])


def edgectl_cli(*args: str) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "edgectl.cli", *args], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert result.returncode == 0, result.stderr


def failed_since(lab: HaLab, since: float) -> list[Any]:
    return [r for r in lab.records(since=since) if not r.ok]


def test_leader_killed_under_load_loses_nothing_and_a_paused_leader_is_fenced(tmp_path: Path) -> None:
    with HaLab(FABRIC, tmp_path / "lab", log=print) as lab:
        lab.wait_declared_services(timeout=120)
        before = lab.placements()
        services = {s.name: s.replicas for s in lab.net.spec.services}
        first = lab.wait_leader(timeout=30)
        wait_masters(lab, first, timeout=30)

        source, address = lab.ping_ends()
        ping = PingStream.start(lab.net, source, address)
        try:
            lab.start_loads(rate=RATE)
            wait_until(lambda: ping.received() > 50, 30, what="ping replies")
            wait_until(lambda: sum(r.ok for r in lab.records()) > 10, 30, what="requests served")
            assert not ping.lost(), f"pings lost before any fault: {ping.lost()[:20]}"

            # 1. kill -9 the leader
            flows_before_kill = lab.dump_flows()
            killed_at = lab.kill(first, signal.SIGKILL)
            second = lab.wait_leader(not_in={first}, timeout=30)
            elected_s = time.time() - killed_at
            assert elected_s < ELECTION_BOUND_S, f"{second} led {elected_s:.1f} s after {first} was killed"
            wait_masters(lab, second, timeout=30)
            masters = lab.masters()
            assert all(m == [second] for m in masters.values()), masters
            time.sleep(SETTLE_S)
            assert ping.received() > 0 and not ping.lost(), f"pings lost: icmp_seq {ping.lost()[:20]}"
            failed = failed_since(lab, killed_at - 3)
            assert not failed, f"{len(failed)} requests failed: {failed[:5]}"
            after = lab.placements()
            assert after == before, f"placements changed: {before} -> {after}"
            assert not lab.doubled(), f"more instances than declared: {lab.doubled()}"
            counts = {name: sum(1 for s, _ in after.values() if s == name) for name in services}
            assert counts == services, f"instances per service {counts}, declared {services}"
            changed = [b for b, flows in lab.dump_flows().items() if flows != flows_before_kill[b]]
            print(f"failover: {second} led after {elected_s:.2f} s; switches whose flows changed: {changed}")

            # 2. pause the new leader until the third leads, then let it wake up
            flows_before_pause = lab.dump_flows()
            lab.kill(second, signal.SIGSTOP)
            third = lab.wait_leader(not_in={first, second}, timeout=30)
            wait_masters(lab, third, timeout=30)
            lab.kill(second, signal.SIGCONT)

            def fenced() -> bool:
                view = lab.cluster_view(second)
                roles = lab.switch_roles()
                slave_everywhere = all(r.get(second) == "slave" for r in roles.values())
                return view is not None and view["role"] == "follower" and slave_everywhere

            wait_until(fenced, 30, what=f"{second} to follow and be slave on every switch")
            time.sleep(SETTLE_S)  # whatever the woken replica sent has reached the switches
            masters = lab.masters()
            assert all(m == [third] for m in masters.values()), masters
            flows = lab.dump_flows()
            differ = {b: sorted(set(f) ^ set(flows_before_pause[b])) for b, f in flows.items()}
            assert not any(differ.values()), f"flows changed while {second} was paused and woke up: {differ}"
            assert lab.placements() == before
            print(f"fencing: {third} leads; {second} follows and is slave on every switch; no flow changed")
            status = cluster_status(lab)  # what an operator sees: one leader, every switch one master
            assert status["leader"] == third and not status["problems"], status
            print(f"pings: {ping.received()} replies, lost {len(ping.lost())}; requests: {len(lab.records())}")

            # 3. one revocation list for every replica (etcd): a node cut off at the follower is cut off at
            # the leader, and its restore at the leader reaches the follower.
            node_id = f"spiffe://{lab.trust_domain}/node/stolen-1"
            revoke(lab, second, {"node": "stolen-1"})
            wait_until(lambda: node_id in revoked(lab, third, "identities"), 15, what=f"{third} to refuse the node")
            revoke(lab, third, {"node": "stolen-1", "restore": True})
            wait_until(lambda: node_id not in revoked(lab, second, "identities"), 15, what=f"{second} to accept it")
            # What the CA directory's own command revokes reaches every replica (each keeps both lists).
            assert lab.ca is not None
            extra = lab.run_dir / "operator-extra"
            edgectl_cli("pki", "issue", "--dir", str(lab.ca), "--spiffe-id", f"spiffe://{lab.trust_domain}/operator/x",
                        "--out", str(extra))  # fmt: skip
            serial = format(x509.load_pem_x509_certificate(Path(f"{extra}.crt").read_bytes()).serial_number, "x")
            edgectl_cli("pki", "rotate", "--dir", str(lab.ca), "--spiffe-id", f"spiffe://{lab.trust_domain}/operator/x")
            for replica in (second, third):
                wait_until(lambda r=replica: serial in revoked(lab, r, "serials"), 15, what=f"{replica} to take it in")
        finally:
            ping.stop()
