"""Node attestation on a real ``edgectl run --pki-dir``: a join token minted over HTTP attests its node
once over the real agent API (gRPC, TLS), and the node SVID it returns is all a node agent gets in with:
its own node's workloads (WatchNode, ReportHealth), xDS streams for the workloads placed on its node and
no other. Replayed, foreign and unknown-node tokens are refused; the plaintext xDS Unix socket is gone
with the PKI on. One controller process, stopped by PID."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshctl.xds_types import LISTENER
from nodeagent._pb import agent_pb2 as apb
from nodeagent._pb import agent_pb2_grpc as apb_grpc
from pki.verify import TrustBundle, verify_svid
from placement._pb import placement_pb2 as pb
from placement._pb import placement_pb2_grpc as pb_grpc
from tests.integration.harness import REPO, edgectl_run, free_port, wait_until
from tests.integration.test_trust_domain import edgectl, operator_channel
from tests.integration.test_xds_malformed import Conversation, sotw

pytestmark = pytest.mark.integration

FABRIC = REPO / "examples" / "edge-cloud.yaml"
TD = "attest.test"


def run_edgectl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgectl.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


def mint(http: str, node: str, ttl_s: int = 600) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"node": node, "ttl_s": ttl_s}).encode()
    request = urllib.request.Request(
        f"{http}/api/v1/pki/join-tokens", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def csr_for(node: str) -> tuple[str, str]:
    """(CSR PEM, key PEM) for a fresh P-256 key, the node's SPIFFE id as its URI SAN."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{TD}/node/{node}")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def channel(address: str, bundle: bytes, chain: str = "", key: str = "") -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=bundle,
        private_key=key.encode() if key else None,
        certificate_chain=chain.encode() if chain else None,
    )
    return grpc.secure_channel(address, credentials, options=[("grpc.ssl_target_name_override", "localhost")])


def attest(stub: apb_grpc.NodeAgentStub, node: str, token: str) -> tuple[Any, str]:
    csr, key = csr_for(node)
    return stub.Attest(apb.AttestRequest(node=node, join_token=token, csr_pem=csr), timeout=20), key


def refused(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


class Watch:
    """A WatchNode stream read on its own thread."""

    def __init__(self, stub: apb_grpc.NodeAgentStub, node: str) -> None:
        self.call = stub.WatchNode(apb.WatchNodeRequest(node=node), timeout=120)
        self.events: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for event in self.call:
                self.events.put(event)
        except grpc.RpcError as exc:
            self.events.put(exc)

    def next(self, timeout: float = 30) -> Any:
        item = self.events.get(timeout=timeout)
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self.call.cancel()


def test_join_token_attests_once_and_the_node_svid_reaches_only_its_own_node(tmp_path: Path) -> None:
    ca_dir, operator = tmp_path / "ca", tmp_path / "alice"
    edgectl("pki", "init", "--trust-domain", TD, "--dir", str(ca_dir))
    edgectl(
        "pki", "issue", "--dir", str(ca_dir), "--spiffe-id", f"spiffe://{TD}/operator/alice", "--out", str(operator)
    )
    bundle_pem = (ca_dir / "bundle.pem").read_bytes()
    api, agent, xds, socket = free_port(), free_port(), free_port(), tmp_path / "xds.sock"
    agent_socket = tmp_path / "agent.sock"
    extra = ["--pki-dir", str(ca_dir), "--api-port", str(api), "--agent-port", str(agent)]
    extra += ["--agent-unix", str(agent_socket)]
    extra += ["--xds-port", str(xds), "--xds-unix", str(socket)]
    with edgectl_run(FABRIC, *extra) as controller, operator_channel(operator, api) as placement_channel:
        grpc.channel_ready_future(placement_channel).result(timeout=30)
        placement = pb_grpc.PlacementStub(placement_channel)
        # The declared replicas get placed: db has one instance; its node is the node under test.
        db = wait_until(
            lambda: next(iter(placement.List(pb.ListRequest(service="db"), timeout=10).workloads), None),
            30,
            what="the declared db instance",
        )
        node = db.node
        others = [w for w in placement.List(pb.ListRequest(), timeout=10).workloads if w.node != node]
        assert others, "every instance on one node: nothing to refuse"
        other = others[0]

        # Bad token requests: the reason, nothing minted.
        assert mint(controller.http, "no-such-node")[0] == 400
        assert mint(controller.http, node, ttl_s=5)[0] == 400
        code, minted = mint(controller.http, node)
        assert code == 201 and minted["node"] == node and minted["spiffe_id"] == f"spiffe://{TD}/node/{node}"
        # The CLI: the token on stdout, its expiry on stderr; a refusal is one line and exit 1.
        http = ["--http", f"127.0.0.1:{controller.http_port}"]
        cli = run_edgectl("pki", "token", "--node", node, "--ttl", "1h", *http)
        assert cli.returncode == 0 and len(cli.stdout.strip()) >= 22 and "one use, until" in cli.stderr, cli.stderr
        cli_refused = run_edgectl("pki", "token", "--node", "no-such-node", *http)
        assert cli_refused.returncode == 1 and "unknown node" in cli_refused.stderr
        short_code, short_lived = mint(controller.http, node, ttl_s=10)
        assert short_code == 201
        short_minted_at = time.monotonic()
        _, foreign = mint(controller.http, other.node)

        with channel(f"127.0.0.1:{agent}", bundle_pem) as anonymous:
            stub = apb_grpc.NodeAgentStub(anonymous)
            grpc.channel_ready_future(anonymous).result(timeout=30)
            unknown = refused(lambda: attest(stub, "no-such-node", minted["token"]))
            assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT
            svid, key = attest(stub, node, minted["token"])
            assert svid.spiffe_id == f"spiffe://{TD}/node/{node}"
            bundle = TrustBundle.from_pem(svid.trust_bundle_pem.encode(), TD)
            assert verify_svid(svid.cert_chain_pem, bundle, time.time()) == svid.spiffe_id
            assert svid.expires_at > time.time()

            replay = refused(lambda: attest(stub, node, minted["token"]))
            assert replay.code() == grpc.StatusCode.PERMISSION_DENIED and "already used" in str(replay.details())
            wrong = refused(lambda: attest(stub, node, foreign["token"]))
            assert wrong.code() == grpc.StatusCode.PERMISSION_DENIED and "another node" in str(wrong.details())
            burned = refused(lambda: attest(stub, other.node, foreign["token"]))  # presented elsewhere: burned
            assert "already used" in str(burned.details())
            made_up = refused(lambda: attest(stub, node, "not-a-token"))
            assert made_up.code() == grpc.StatusCode.PERMISSION_DENIED and "unknown" in str(made_up.details())
            # Without the node SVID nothing else is served.
            no_cert = refused(lambda: next(iter(stub.WatchNode(apb.WatchNodeRequest(node=node), timeout=10))))
            assert no_cert.code() == grpc.StatusCode.PERMISSION_DENIED

        with channel(f"127.0.0.1:{agent}", bundle_pem, svid.cert_chain_pem, key) as attested:
            stub = apb_grpc.NodeAgentStub(attested)
            watch = Watch(stub, node)
            try:
                snapshot = watch.next()
                assert snapshot.kind == apb.NodeEvent.SNAPSHOT
                by_id = {w.id: w for w in snapshot.workloads}
                assert db.id in by_id and other.id not in by_id
                assert by_id[db.id].service == "db" and by_id[db.id].port == 5432
                assert by_id[db.id].spiffe_id == db.spiffe_id and by_id[db.id].protocol == "http"
                # A new instance on the node (affinity to db, same node): PLACED; evicted: REMOVED.
                request = pb.PlaceRequest(
                    service="api", constraints=pb.Constraints(affinity=[pb.AffinityTerm(service="db")])
                )
                (api_instance,) = placement.Place(request, timeout=30).workloads
                assert api_instance.node == node
                placed = watch.next()
                assert placed.kind == apb.NodeEvent.PLACED and [w.id for w in placed.workloads] == [api_instance.id]
                assert [(c.service, c.port) for c in placed.workloads[0].calls] == [("db", 5432)]
                placement.Evict(pb.EvictRequest(workload_id=api_instance.id), timeout=30)
                removed = watch.next()
                assert removed.kind == apb.NodeEvent.REMOVED and [w.id for w in removed.workloads] == [api_instance.id]
            finally:
                watch.close()
            foreign_watch = refused(lambda: next(iter(stub.WatchNode(apb.WatchNodeRequest(node=other.node)))))
            assert foreign_watch.code() == grpc.StatusCode.PERMISSION_DENIED
            health = refused(lambda: stub.ReportHealth(apb.HealthReport(workload_id=other.id), timeout=10))
            assert health.code() == grpc.StatusCode.PERMISSION_DENIED
            stub.ReportHealth(apb.HealthReport(workload_id=db.id, healthy=True), timeout=10)
            renewed_csr, _renewed_key = csr_for(node)
            renewed = stub.RenewNodeSvid(apb.RenewRequest(csr_pem=renewed_csr), timeout=20)
            assert renewed.spiffe_id == svid.spiffe_id and renewed.cert_chain_pem != svid.cert_chain_pem

        # xDS with the node SVID: the sidecars of its own node's workloads, no other.
        with channel(f"127.0.0.1:{xds}", bundle_pem, svid.cert_chain_pem, key) as xds_channel:
            served = Conversation(xds_channel)
            try:
                served.send(sotw(LISTENER, node=db.id))
                assert served.receive(timeout=20).resources
            finally:
                served.close()
            denied = Conversation(xds_channel)
            try:
                denied.send(sotw(LISTENER, node=other.id))
                error = denied.error(timeout=20)
                assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            finally:
                denied.close()
        # The Unix socket is mTLS too: plaintext is refused at the handshake.
        with grpc.insecure_channel(f"unix:{socket}") as plain, pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(plain).result(timeout=3)

        # The 10 s token, unused until it expired: refused as expired.
        time.sleep(max(0.0, 10.5 - (time.monotonic() - short_minted_at)))
        with channel(f"127.0.0.1:{agent}", bundle_pem) as anonymous:
            late = refused(lambda: attest(apb_grpc.NodeAgentStub(anonymous), node, short_lived["token"]))
            assert late.code() == grpc.StatusCode.PERMISSION_DENIED and "expired" in str(late.details())

        # The agent API on its Unix socket: the same TLS, the same refusals.
        with channel(f"unix:{agent_socket}", bundle_pem) as local:
            over_unix = refused(lambda: attest(apb_grpc.NodeAgentStub(local), node, "not-a-token"))
            assert over_unix.code() == grpc.StatusCode.PERMISSION_DENIED and "unknown" in str(over_unix.details())

        agents = controller.get_json("/api/v1/agents")["agents"]
        assert [a["node"] for a in agents] == [node]
        log = controller.log()
        assert "already used" in log and "another node" in log
