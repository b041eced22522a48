"""The agent's side of the controller's NodeAgent API (adapter, grpc).

Attest is the one call made without a client certificate: TLS that trusts the bundle given on the
command line, and the one-time join token as the proof. Every other call presents the node SVID (mTLS);
after each renewal a new channel is made with the new certificate (the agent then opens WatchNode on
it and ends the stream of the old channel). ``unix:/path`` targets work as gRPC knows them.

A replicated controller has several addresses (one per replica): calls go to one of them, and move to
the next when it is UNAVAILABLE (a unary call is tried on each in turn; a WatchNode stream that ends
UNAVAILABLE makes the agent's next stream open on the next one).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
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
        calls=tuple(
            Call(c.service, int(c.port), float(c.per_request), int(c.bytes_per_call), c.protocol or "http")
            for c in message.calls
        ),
        protocol=message.protocol or "http",
        outbound_host=message.outbound_host or "127.0.0.1",
    )


def event_of(message: Any) -> tuple[EventKind, tuple[WorkloadSpec, ...], int]:
    kind = KINDS.get(message.kind, EventKind.REMOVED)
    return kind, tuple(workload_spec(w) for w in message.workloads), int(message.generation)


NodeEvent = tuple[EventKind, tuple[WorkloadSpec, ...], int, frozenset[str]]
"""(kind, workloads, generation, the new ones the controller already holds as starting)."""


def _issued(reply: Any) -> IssuedSvid:
    return IssuedSvid(reply.spiffe_id, reply.cert_chain_pem, reply.trust_bundle_pem, float(reply.expires_at))


class ControllerClient:
    def __init__(self, target: str | Sequence[str], *, server_name: str = "") -> None:
        targets = [target] if isinstance(target, str) else list(target)
        self.targets = tuple(t.strip() for t in targets if t.strip())
        if not self.targets:
            raise ValueError("no controller address given")
        self._server_name = server_name
        self._lock = threading.Lock()
        self._index = 0
        self._credentials: grpc.ChannelCredentials | None = None
        self._channel: grpc.Channel | None = None
        self._stub: Any = None

    @property
    def target(self) -> str:
        """The controller address calls go to now."""
        with self._lock:
            return self.targets[self._index]

    @property
    def _options(self) -> list[tuple[str, str]]:
        return self._options_for(self.target)

    def _options_for(self, target: str) -> list[tuple[str, str]]:
        server_name = self._server_name
        if not server_name and target.startswith("unix:"):
            # gRPC checks a Unix socket's path as the host name; the controller's certificate names localhost.
            server_name = UNIX_SERVER_NAME
        return [("grpc.ssl_target_name_override", server_name)] if server_name else []

    def attest(self, node: str, join_token: str, csr_pem: str, bundle_pem: bytes) -> IssuedSvid:
        """The node SVID for a join token; ``AttestRefused`` (the controller's reason) if the token is no
        good; other ``grpc.RpcError`` (no controller address answers) may be retried with the same token.
        Each address is tried in turn, from the current one, while the one asked is UNAVAILABLE."""
        credentials = grpc.ssl_channel_credentials(root_certificates=bundle_pem)
        request = pb.AttestRequest(node=node, join_token=join_token, csr_pem=csr_pem)
        with self._lock:
            start = self._index
        for step in range(len(self.targets)):
            index = (start + step) % len(self.targets)
            target = self.targets[index]
            with grpc.secure_channel(target, credentials, options=self._options_for(target)) as channel:
                try:
                    issued = _issued(pb_grpc.NodeAgentStub(channel).Attest(request, timeout=CALL_TIMEOUT_S))
                except grpc.RpcError as exc:
                    if exc.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT):
                        raise AttestRefused(exc.details() or str(exc.code())) from None
                    if exc.code() is grpc.StatusCode.UNAVAILABLE and step + 1 < len(self.targets):
                        LOG.warning("controller %s is unavailable: %s; trying the next", target, exc.details())
                        continue
                    raise
            with self._lock:
                self._index = index  # where the identity came from: the other calls go there too
            return issued
        raise AssertionError("unreachable: the last address raises")

    def use_identity(self, cert_chain_pem: str, private_key_pem: str, bundle_pem: bytes) -> None:
        """Make calls with this SVID from now on (a new channel; the old one is closed once unused)."""
        credentials = grpc.ssl_channel_credentials(
            root_certificates=bundle_pem,
            private_key=private_key_pem.encode(),
            certificate_chain=cert_chain_pem.encode(),
        )
        with self._lock:
            self._credentials = credentials
            self._open(self._index)

    def _open(self, index: int) -> None:
        """A channel to ``targets[index]`` with the current identity (the lock is held)."""
        assert self._credentials is not None
        target = self.targets[index]
        channel = grpc.secure_channel(target, self._credentials, options=self._options_for(target))
        self._index, self._channel, self._stub = index, channel, pb_grpc.NodeAgentStub(channel)

    def _current(self) -> tuple[int, Any]:
        with self._lock:
            if self._channel is None:
                raise RuntimeError("no node identity yet: attest first")
            return self._index, self._stub

    def move_on(self, index: int) -> None:
        """``targets[index]`` was UNAVAILABLE: calls go to the next address (unless another call moved
        them already)."""
        with self._lock:
            if self._channel is None or index != self._index or len(self.targets) == 1:
                return
            self._open((index + 1) % len(self.targets))
            LOG.warning(
                "controller %s is unavailable: calls go to %s now", self.targets[index], self.targets[self._index]
            )

    def _unary(self, call: Callable[[Any], Any]) -> Any:
        """``call(stub)`` on the current address, then on each next one while the one asked is UNAVAILABLE."""
        for step in range(len(self.targets)):
            index, stub = self._current()
            try:
                return call(stub)
            except grpc.RpcError as exc:
                if exc.code() is not grpc.StatusCode.UNAVAILABLE or step + 1 == len(self.targets):
                    raise
                self.move_on(index)
        raise AssertionError("unreachable: the last address raises")

    def renew(self, csr_pem: str) -> IssuedSvid:
        request = pb.RenewRequest(csr_pem=csr_pem)
        return _issued(self._unary(lambda stub: stub.RenewNodeSvid(request, timeout=CALL_TIMEOUT_S)))

    def report_health(self, workload_id: str, healthy: bool, reason: str) -> None:
        report = pb.HealthReport(workload_id=workload_id, healthy=healthy, reason=reason)
        self._unary(lambda stub: stub.ReportHealth(report, timeout=CALL_TIMEOUT_S))

    def report_starting(self, workload_id: str, timeout: float = CALL_TIMEOUT_S) -> None:
        """The app of ``workload_id`` is starting beside its sidecar: no endpoint until ``report_health``
        says healthy."""
        report = pb.HealthReport(workload_id=workload_id, starting=True)
        self._unary(lambda stub: stub.ReportHealth(report, timeout=timeout))

    def watch(self, node: str, starts_beside: bool = False) -> tuple[Any, Iterator[NodeEvent]]:
        """Open WatchNode: (the call, to ``cancel()`` it; its events). The call ends with ``grpc.RpcError``;
        when that is UNAVAILABLE the next watch opens on the next controller address. ``starts_beside``:
        this agent starts sidecars beside their apps (the controller may hold new placements as starting)."""
        index, stub = self._current()
        call = stub.WatchNode(pb.WatchNodeRequest(node=node, starts_beside=starts_beside))

        def events() -> Iterator[NodeEvent]:
            try:
                for message in call:
                    yield (*event_of(message), frozenset(message.starting))
            except grpc.RpcError as exc:
                if exc.code() is grpc.StatusCode.UNAVAILABLE:
                    self.move_on(index)
                raise

        return call, events()

    def close(self) -> None:
        with self._lock:
            channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            channel.close()
