"""The agent's side of the controller's NodeAgent API (adapter, grpc).

Attest is the one call made without a client certificate: TLS that trusts the bundle given on the
command line, and the one-time join token as the proof. Every other call presents the node SVID (mTLS);
after each renewal a new channel is made with the new certificate (the agent then opens WatchNode on
it and ends the stream of the old channel). ``unix:/path`` targets work as gRPC knows them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from nodeagent._pb import agent_pb2 as pb
from nodeagent._pb import agent_pb2_grpc as pb_grpc
from nodeagent.plan import Call, EventKind, WorkloadSpec

LOG = logging.getLogger("edgectl.agent")

CALL_TIMEOUT_S = 10.0
UNIX_SERVER_NAME = "localhost"
KINDS = {pb.NodeEvent.SNAPSHOT: EventKind.SNAPSHOT, pb.NodeEvent.PLACED: EventKind.PLACED}


class AttestRefused(Exception):
    """The controller refused the join token (PERMISSION_DENIED): retrying cannot help."""


@dataclass(frozen=True, slots=True)
class IssuedSvid:
    spiffe_id: str
    cert_chain_pem: str
    trust_bundle_pem: str
    expires_at: float


def workload_spec(message: Any) -> WorkloadSpec:
    """A ``NodeWorkload`` message as the plan reads it."""
    return WorkloadSpec(
        id=message.id,
        service=message.service,
        port=int(message.port),
        address=message.address,
        app_host=message.app_host or "127.0.0.1",
        run=tuple(message.run),
        env=tuple(sorted(message.env.items())),
        spiffe_id=message.spiffe_id,
        calls=tuple(Call(c.service, int(c.port), float(c.per_request), int(c.bytes_per_call)) for c in message.calls),
        protocol=message.protocol or "http",
    )


def event_of(message: Any) -> tuple[EventKind, tuple[WorkloadSpec, ...], int]:
    kind = KINDS.get(message.kind, EventKind.REMOVED)
    return kind, tuple(workload_spec(w) for w in message.workloads), int(message.generation)


def _issued(reply: Any) -> IssuedSvid:
    return IssuedSvid(reply.spiffe_id, reply.cert_chain_pem, reply.trust_bundle_pem, float(reply.expires_at))


class ControllerClient:
    def __init__(self, target: str, *, server_name: str = "") -> None:
        self.target = target
        if not server_name and target.startswith("unix:"):
            # gRPC checks a Unix socket's path as the host name; the controller's certificate names localhost.
            server_name = UNIX_SERVER_NAME
        self._options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._stub: Any = None

    def attest(self, node: str, join_token: str, csr_pem: str, bundle_pem: bytes) -> IssuedSvid:
        """The node SVID for a join token; ``AttestRefused`` (the controller's reason) if the token is no
        good; other ``grpc.RpcError`` (the controller is away) may be retried with the same token."""
        credentials = grpc.ssl_channel_credentials(root_certificates=bundle_pem)
        with grpc.secure_channel(self.target, credentials, options=self._options) as channel:
            stub = pb_grpc.NodeAgentStub(channel)
            request = pb.AttestRequest(node=node, join_token=join_token, csr_pem=csr_pem)
            try:
                return _issued(stub.Attest(request, timeout=CALL_TIMEOUT_S))
            except grpc.RpcError as exc:
                if exc.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT):
                    raise AttestRefused(exc.details() or str(exc.code())) from None
                raise

    def use_identity(self, cert_chain_pem: str, private_key_pem: str, bundle_pem: bytes) -> None:
        """Make calls with this SVID from now on (a new channel; the old one is closed once unused)."""
        credentials = grpc.ssl_channel_credentials(
            root_certificates=bundle_pem,
            private_key=private_key_pem.encode(),
            certificate_chain=cert_chain_pem.encode(),
        )
        channel = grpc.secure_channel(self.target, credentials, options=self._options)
        with self._lock:
            self._channel, self._stub = channel, pb_grpc.NodeAgentStub(channel)

    def _current(self) -> tuple[grpc.Channel, Any]:
        with self._lock:
            if self._channel is None:
                raise RuntimeError("no node identity yet: attest first")
            return self._channel, self._stub

    def renew(self, csr_pem: str) -> IssuedSvid:
        _, stub = self._current()
        return _issued(stub.RenewNodeSvid(pb.RenewRequest(csr_pem=csr_pem), timeout=CALL_TIMEOUT_S))

    def report_health(self, workload_id: str, healthy: bool, reason: str) -> None:
        _, stub = self._current()
        report = pb.HealthReport(workload_id=workload_id, healthy=healthy, reason=reason)
        stub.ReportHealth(report, timeout=CALL_TIMEOUT_S)

    def watch(self, node: str) -> tuple[Any, Iterator[tuple[EventKind, tuple[WorkloadSpec, ...], int]]]:
        """Open WatchNode: (the call, to ``cancel()`` it; its events). The call ends with ``grpc.RpcError``."""
        _, stub = self._current()
        call = stub.WatchNode(pb.WatchNodeRequest(node=node))

        def events() -> Iterator[tuple[EventKind, tuple[WorkloadSpec, ...], int]]:
            for message in call:
                yield event_of(message)

        return call, events()

    def close(self) -> None:
        with self._lock:
            channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            channel.close()
