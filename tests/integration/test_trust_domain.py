"""``edgectl run --pki-dir`` with a CA of a trust domain other than the default: every SPIFFE id the
controller makes is in the CA's domain (a workload placed through the real gRPC API, its SVID, and the
mesh's caller and server identities over xDS). One controller process, stopped by PID."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshctl.xds_types import CLUSTER, LISTENER
from placement._pb import placement_pb2 as pb
from placement._pb import placement_pb2_grpc as pb_grpc
from tests.integration.harness import REPO, edgectl_run, free_port, wait_until
from tests.integration.test_xds_malformed import Conversation, sotw

pytestmark = pytest.mark.integration

FABRIC = REPO / "examples" / "edge-cloud.yaml"
TD = "example.org"


def edgectl(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edgectl.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.returncode == 0, done.stderr


def operator_channel(operator: Path, port: int) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(f"{operator}.bundle.pem").read_bytes(),
        private_key=Path(f"{operator}.key").read_bytes(),
        certificate_chain=Path(f"{operator}.crt").read_bytes(),
    )
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)


def xds_resources(socket: Path, node: str, type_url: str, client: Path) -> bytes:
    """The serialized resources of one SotW answer to ``node`` over the Unix socket (sidecars' way in),
    mTLS with ``client``'s certificate (PREFIX.crt/.key/.bundle.pem): with the PKI on, the socket has no
    plaintext way in."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(f"{client}.bundle.pem").read_bytes(),
        private_key=Path(f"{client}.key").read_bytes(),
        certificate_chain=Path(f"{client}.crt").read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", "localhost")]  # a Unix socket has no host name to check
    with grpc.secure_channel(f"unix:{socket}", credentials, options=options) as channel:
        conversation = Conversation(channel)
        try:
            conversation.send(sotw(type_url, node=node))
            response: Any = conversation.receive(timeout=10)
            return b"".join(resource.value for resource in response.resources)
        finally:
            conversation.close()


def test_workloads_get_identities_of_the_cas_trust_domain(tmp_path: Path) -> None:
    ca_dir, operator = tmp_path / "ca", tmp_path / "alice"
    edgectl("pki", "init", "--trust-domain", TD, "--dir", str(ca_dir))
    edgectl(
        "pki", "issue", "--dir", str(ca_dir), "--spiffe-id", f"spiffe://{TD}/operator/alice", "--out", str(operator)
    )
    api, socket = free_port(), tmp_path / "xds.sock"
    extra = ["--pki-dir", str(ca_dir), "--api-port", str(api), "--xds-unix", str(socket)]
    with edgectl_run(FABRIC, *extra) as controller, operator_channel(operator, api) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = pb_grpc.PlacementStub(channel)
        (web,) = stub.Place(pb.PlaceRequest(service="web"), timeout=30).workloads
        assert web.spiffe_id == f"spiffe://{TD}/svc/web/w/{web.id}"

        def issued() -> dict[str, Any] | None:
            rows = controller.get_json("/api/v1/identities")["identities"]
            return next((r for r in rows if r["subject"] == web.id), None)

        row = wait_until(issued, 15, what=f"an SVID for {web.id}")
        assert row["spiffe_id"] == web.spiffe_id
        assert f"no identity for {web.id}" not in controller.log()

        # The mesh speaks the same domain: the web instance's inbound listener admits identities of the
        # CA's trust domain (its RBAC decides which: the fabric declares no allow_from, so none here),
        # and u1's cluster for web checks the servers' identities by the service's prefix.
        # The sidecars' certificates: web's node agent holds its node's SVID, u1's client sidecar its host's.
        node_svid, host_svid = tmp_path / "node", tmp_path / "u1"
        for spiffe_id, out in ((f"spiffe://{TD}/node/{web.node}", node_svid), (f"spiffe://{TD}/host/u1", host_svid)):
            edgectl("pki", "issue", "--dir", str(ca_dir), "--spiffe-id", spiffe_id, "--out", str(out))
        listener = xds_resources(socket, web.id, LISTENER, node_svid)
        assert f"spiffe://{TD}/".encode() in listener
        cluster = xds_resources(socket, "u1", CLUSTER, host_svid)
        assert f"spiffe://{TD}/svc/web/".encode() in cluster
        assert b"edgectl.local" not in listener + cluster
