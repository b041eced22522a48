"""xDS authorization follows the model, not just a stream's first request: on a real ``edgectl run
--pki-dir``, a node agent (node SVID over mTLS) holding SotW and delta ADS streams open for a workload
placed on its node loses both -- PERMISSION_DENIED -- when that workload is evicted, and is served
nothing for it after (no snapshot, no secret). One controller process, stopped by PID."""

from __future__ import annotations

import queue
from pathlib import Path

import grpc
import pytest

from meshctl.xds_types import LISTENER, SECRET
from nodeagent._pb import agent_pb2_grpc as apb_grpc
from placement._pb import placement_pb2 as pb
from placement._pb import placement_pb2_grpc as pb_grpc
from tests.integration.harness import edgectl_run, free_port, wait_until
from tests.integration.test_node_attestation import FABRIC, TD, attest, channel, mint
from tests.integration.test_trust_domain import edgectl, operator_channel
from tests.integration.test_xds_malformed import Conversation, delta, sotw

pytestmark = pytest.mark.integration


def quiet(stream: Conversation, for_s: float = 2.0) -> None:
    """Read (and drop) responses until none came for ``for_s``."""
    while True:
        try:
            stream.receive(timeout=for_s)
        except queue.Empty:
            return


def until_error(stream: Conversation, timeout: float = 30.0) -> tuple[list[object], grpc.RpcError]:
    """The responses received before the stream ended, and how it ended."""
    served: list[object] = []
    while True:
        try:
            served.append(stream.receive(timeout=timeout))
        except grpc.RpcError as exc:
            return served, exc


def test_a_node_svid_stream_ends_when_its_workload_leaves_the_node(tmp_path: Path) -> None:
    ca_dir, operator = tmp_path / "ca", tmp_path / "alice"
    edgectl("pki", "init", "--trust-domain", TD, "--dir", str(ca_dir))
    edgectl(
        "pki", "issue", "--dir", str(ca_dir), "--spiffe-id", f"spiffe://{TD}/operator/alice", "--out", str(operator)
    )
    bundle_pem = (ca_dir / "bundle.pem").read_bytes()
    api, agent, xds = free_port(), free_port(), free_port()
    extra = ["--pki-dir", str(ca_dir), "--api-port", str(api), "--agent-port", str(agent), "--xds-port", str(xds)]
    with edgectl_run(FABRIC, *extra) as controller, operator_channel(operator, api) as placement_channel:
        grpc.channel_ready_future(placement_channel).result(timeout=30)
        placement = pb_grpc.PlacementStub(placement_channel)
        db = wait_until(
            lambda: next(iter(placement.List(pb.ListRequest(service="db"), timeout=10).workloads), None),
            30,
            what="the declared db instance",
        )
        node = db.node
        _, minted = mint(controller.http, node)
        with channel(f"127.0.0.1:{agent}", bundle_pem) as anonymous:
            grpc.channel_ready_future(anonymous).result(timeout=30)
            svid, key = attest(apb_grpc.NodeAgentStub(anonymous), node, minted["token"])
        request = pb.PlaceRequest(service="api", constraints=pb.Constraints(affinity=[pb.AffinityTerm(service="db")]))
        (instance,) = placement.Place(request, timeout=30).workloads
        assert instance.node == node

        with channel(f"127.0.0.1:{xds}", bundle_pem, svid.cert_chain_pem, key) as xds_channel:
            listeners = Conversation(xds_channel)
            secrets = Conversation(xds_channel)
            incremental = Conversation(xds_channel, delta=True)
            try:
                listeners.send(sotw(LISTENER, node=instance.id))
                first = listeners.receive(timeout=30)
                assert first.resources
                secrets.send(sotw(SECRET, node=instance.id, names=("identity",)))
                assert secrets.receive(timeout=30).resources, "the workload's own SVID by SDS"
                incremental.send(delta(LISTENER, node=instance.id))
                assert incremental.receive(timeout=30).resources
                # ACK what came, and let anything still due arrive: what follows is the eviction's.
                listeners.send(sotw(LISTENER, node=instance.id, nonce=first.nonce))
                for stream in (listeners, secrets, incremental):
                    quiet(stream)

                placement.Evict(pb.EvictRequest(workload_id=instance.id), timeout=30)

                for stream in (listeners, secrets, incremental):
                    served, error = until_error(stream)
                    assert served == [], "a response for the evicted workload before the stream ended"
                    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
                    assert instance.id in str(error.details())
            finally:
                for stream in (listeners, secrets, incremental):
                    stream.close()
            # A new stream for it is refused too.
            again = Conversation(xds_channel)
            try:
                again.send(sotw(SECRET, node=instance.id, names=("identity",)))
                assert again.error(timeout=30).code() == grpc.StatusCode.PERMISSION_DENIED
            finally:
                again.close()
        assert "no longer authorized" in controller.log()
