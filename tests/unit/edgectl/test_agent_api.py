"""The node agent API without a network: what an agent is told of its node (agent_view), the join-token
route, and the servicer's refusals and slow-watch cut-off (a fake bus and gRPC context)."""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from edgectl.agent_api import AgentServicer, Refused
from edgectl.agent_view import node_changes, node_workloads
from edgectl.pki_http import join_token_route
from meshctl.xds_types import workload_outbound_host
from netmodel.events import Event, WorkloadHealthChanged, WorkloadPlaced, WorkloadRemoved, WorkloadStarting
from netmodel.fabric import build_state
from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Protocol, Resources, Workload
from nodeagent._pb import agent_pb2 as pb
from pki.join_token_store import JoinTokenStore
from tests.unit.edgectl.fixtures import example_spec

TD = "edge.test"
NOW = 1_800_000_000.0


def placed(state: FabricState, wid: str, service: str, node: str) -> FabricState:
    workload = Workload(
        WorkloadId(wid),
        ServiceName(service),
        SpiffeId(f"spiffe://{TD}/svc/{service}/w/{wid}"),
        Resources(100, 64),
        NodeId(node),
    )
    return state.apply(WorkloadPlaced(workload))


@pytest.fixture
def state() -> FabricState:
    base = build_state(example_spec())
    return placed(placed(base, "api-1", "api", "ea-n1"), "db-1", "db", "c-n1")


def test_a_nodes_view_holds_its_workloads_with_what_the_agent_needs(state: FabricState) -> None:
    views = node_workloads(state, "ea-n1", "127.0.0.2")
    assert list(views) == ["api-1"]
    api = views["api-1"]
    assert (api.service, api.port, api.address, api.app_host) == ("api", 9090, "10.0.1.10", "127.0.0.2")
    # Its app calls db through its own sidecar's address, the one its snapshot's listeners bind.
    assert api.outbound_host == "127.1.35.130" == workload_outbound_host(9090)
    assert api.spiffe_id == f"spiffe://{TD}/svc/api/w/api-1" and api.protocol == "http"
    assert [(c.service, c.port, c.protocol) for c in api.calls] == [("db", 5432, "http")]
    assert node_workloads(state, "no-such-node", "127.0.0.1") == {}
    # A TCP callee is said so: the agent warms no connection of it (nodeagent.warmup).
    db = state.services[ServiceName("db")]
    tcp = replace(state, services={**state.services, db.name: replace(db, protocol=Protocol.TCP)})
    assert [c.protocol for c in node_workloads(tcp, "ea-n1", "127.0.0.2")["api-1"].calls] == ["tcp"]


def test_changes_are_placed_again_when_changed_and_removed_when_gone(state: FabricState) -> None:
    before = node_workloads(state, "ea-n1", "127.0.0.1")
    moved = placed(state, "api-2", "api", "ea-n1").apply(WorkloadRemoved(WorkloadId("api-1")))
    after = node_workloads(moved, "ea-n1", "127.0.0.1")
    new, gone = node_changes(before, after)
    assert [v.id for v in new] == ["api-2"] and gone == ["api-1"]
    # The service's command changed: the instance is sent again with it.
    api = moved.services[ServiceName("api")]
    rerun = replace(moved, services={**moved.services, api.name: replace(api, run=("{python}", "app.py"))})
    new, gone = node_changes(after, node_workloads(rerun, "ea-n1", "127.0.0.1"))
    assert [v.run for v in new] == [("{python}", "app.py")] and gone == []
    # The node left the fabric: every one of its workloads is removed.
    without_node = replace(moved, nodes={k: v for k, v in moved.nodes.items() if k != "ea-n1"})
    assert node_changes(after, node_workloads(without_node, "ea-n1", "127.0.0.1")) == ([], ["api-2"])


# -- the join-token route ------------------------------------------------------------------------------


def test_join_tokens_are_minted_for_compute_nodes_only_with_a_bounded_ttl(tmp_path: Path, state: FabricState) -> None:
    route = join_token_route(JoinTokenStore(tmp_path, lambda: NOW), TD, http_host="127.0.0.1")
    code, body = route(state, {"node": "ea-n1", "ttl_s": 60})
    assert code == 201 and body["node"] == "ea-n1" and body["expires_at"] == NOW + 60
    assert body["spiffe_id"] == f"spiffe://{TD}/node/ea-n1" and len(body["token"]) >= 22
    assert route(state, {"node": "ea-n1"})[1]["expires_at"] == NOW + 600  # the default TTL
    code, body = route(state, {"node": "u1"})
    assert code == 400 and "not a compute node" in body["error"]
    code, body = route(state, {"node": "ea-n1", "ttl_s": 86401})
    assert code == 400 and "24 h" in body["error"]
    assert route(state, "junk")[0] == 400
    from edgectl.controller import _no_pki

    code, body = _no_pki(state, {"node": "ea-n1"})  # a controller without --pki-dir
    assert code == 503 and "--pki-dir" in body["error"]
    remote = join_token_route(JoinTokenStore(tmp_path, lambda: NOW), TD, http_host="0.0.0.0")
    code, body = remote(state, {"node": "ea-n1"})
    assert code == 403 and "loopback" in body["error"]


# -- the servicer ----------------------------------------------------------------------------------------


class FakeBus:
    def __init__(self, state: FabricState) -> None:
        self.state = state
        self.published: list[Event] = []

    def publish(self, event: Event) -> Future[FabricState]:
        self.published.append(event)
        self.state = self.state.apply(event)
        future: Future[FabricState] = Future()
        future.set_result(self.state)
        return future

    def subscribe(self, _subscriber: Any) -> None:
        pass


class FakeContext:
    def __init__(self, certificate: str | None) -> None:
        self.certificate = certificate
        self.callbacks: list[Any] = []
        self.active = True

    def add_callback(self, callback: Any) -> None:
        self.callbacks.append(callback)

    def is_active(self) -> bool:
        return self.active

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


def servicer(bus: FakeBus, tmp_path: Path, **kwargs: Any) -> AgentServicer:
    def authorize(certificate: str) -> tuple[str, str | None]:
        node = certificate.removeprefix("NODE ")  # fake certificates: "NODE <node>"
        return (node, None) if certificate.startswith("NODE ") else ("", f"{certificate} is not a node identity")

    return AgentServicer(
        bus,  # type: ignore[arg-type]
        JoinTokenStore(tmp_path, lambda: NOW),
        issuer=None,  # type: ignore[arg-type]  # no SVID is issued in these tests
        trust_domain=TD,
        authorize_node=authorize,
        caller_certificate=lambda context: context.certificate,  # type: ignore[attr-defined]
        clock=lambda: NOW,
        **kwargs,
    )


def refusal(call: Any) -> Refused:
    with pytest.raises(Refused) as caught:
        call()
    return caught.value


def csr_pem(node: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_attest_refusals_and_a_bad_csr_does_not_cost_the_token(tmp_path: Path, state: FabricState) -> None:
    from pki.ca import CertificateAuthority

    ca, _root_key = CertificateAuthority.create(TD)
    agents = servicer(FakeBus(state), tmp_path)
    agents.issuer = ca
    agents._clock = time.time  # the CA's certificates are valid now, not at NOW
    token, _expires_at = agents.tokens.mint("ea-n1", 600)
    unknown = refusal(lambda: agents.attest(pb.AttestRequest(node="nope", join_token=token), FakeContext(None)))
    assert unknown.code is grpc.StatusCode.INVALID_ARGUMENT
    made_up = pb.AttestRequest(node="ea-n1", join_token="x", csr_pem=csr_pem("ea-n1"))
    denied = refusal(lambda: agents.attest(made_up, FakeContext(None)))
    assert denied.code is grpc.StatusCode.PERMISSION_DENIED and "unknown join token" in denied.reason
    garbage = refusal(lambda: agents.attest(pb.AttestRequest(node="ea-n1", join_token=token, csr_pem="junk"), None))
    assert garbage.code is grpc.StatusCode.INVALID_ARGUMENT and "CSR" in garbage.reason
    svid = agents.attest(pb.AttestRequest(node="ea-n1", join_token=token, csr_pem=csr_pem("ea-n1")), None)
    assert svid.spiffe_id == f"spiffe://{TD}/node/ea-n1" and svid.trust_bundle_pem == ca.bundle_pem
    assert agents.attested_view(state)["agents"][0]["node"] == "ea-n1"


def test_every_other_call_needs_a_node_svid_and_concerns_its_own_node(tmp_path: Path, state: FabricState) -> None:
    bus = FakeBus(state)
    agents = servicer(bus, tmp_path)
    for context in (FakeContext(None), FakeContext("HOST u1")):
        denied = refusal(lambda c=context: next(agents.watch_node(pb.WatchNodeRequest(node="ea-n1"), c)))
        assert denied.code is grpc.StatusCode.PERMISSION_DENIED
    other = refusal(lambda: next(agents.watch_node(pb.WatchNodeRequest(node="c-n1"), FakeContext("NODE ea-n1"))))
    assert other.code is grpc.StatusCode.PERMISSION_DENIED and "only its own" in other.reason
    report = pb.HealthReport(workload_id="db-1", healthy=False, reason="app exited")
    foreign = refusal(lambda: agents.report_health(report, FakeContext("NODE ea-n1")))
    assert foreign.code is grpc.StatusCode.PERMISSION_DENIED and bus.published == []
    agents.report_health(report, FakeContext("NODE c-n1"))
    assert bus.published == [WorkloadHealthChanged(WorkloadId("db-1"), False, "app exited", NOW)]
    assert WorkloadId("db-1") in bus.state.unhealthy
    agents.report_health(pb.HealthReport(workload_id="db-1", starting=True), FakeContext("NODE c-n1"))
    assert bus.published[-1] == WorkloadStarting(WorkloadId("db-1"), NOW)
    assert WorkloadId("db-1") in bus.state.starting


def test_a_watch_sends_a_snapshot_then_changes_and_a_slow_one_is_cut_off(tmp_path: Path, state: FabricState) -> None:
    bus = FakeBus(state)
    agents = servicer(bus, tmp_path, max_pending=3)
    context = FakeContext("NODE ea-n1")
    stream = agents.watch_node(pb.WatchNodeRequest(node="ea-n1"), context)
    snapshot = next(stream)
    assert snapshot.kind == pb.NodeEvent.SNAPSHOT and [w.id for w in snapshot.workloads] == ["api-1"]
    bus.publish(WorkloadRemoved(WorkloadId("api-1")))
    agents.on_model_change(bus.published[-1], bus.state)
    removed = next(stream)
    assert removed.kind == pb.NodeEvent.REMOVED and [w.id for w in removed.workloads] == ["api-1"]
    # The agent stops reading; the model moves on: the writer never waits, the watch is ended.
    for healthy in (False, True, False, True, False):
        bus.publish(WorkloadHealthChanged(WorkloadId("db-1"), healthy, "flapping", NOW))
        agents.on_model_change(bus.published[-1], bus.state)
    cut = refusal(lambda: list(stream))
    assert cut.code is grpc.StatusCode.RESOURCE_EXHAUSTED and "watch again" in cut.reason


@pytest.mark.parametrize("starts_beside", [True, False], ids=["starts-beside", "sidecar-after-app"])
def test_a_new_placement_is_held_as_starting_before_an_agent_that_starts_beside_hears_of_it(
    tmp_path: Path, state: FabricState, starts_beside: bool
) -> None:
    bus = FakeBus(state)
    agents = servicer(bus, tmp_path)
    request = pb.WatchNodeRequest(node="ea-n1", starts_beside=starts_beside)
    stream = agents.watch_node(request, FakeContext("NODE ea-n1"))
    assert list(next(stream).starting) == []  # what a SNAPSHOT holds runs already, or starts on its own report
    bus.state = placed(bus.state, "api-2", "api", "ea-n1")
    agents.on_model_change(WorkloadPlaced(bus.state.workloads[WorkloadId("api-2")]), bus.state)
    event = next(stream)
    assert event.kind == pb.NodeEvent.PLACED and [w.id for w in event.workloads] == ["api-2"]
    if starts_beside:
        assert list(event.starting) == ["api-2"]
        assert WorkloadStarting(WorkloadId("api-2"), NOW) in bus.published
        assert WorkloadId("api-2") in bus.state.starting  # before the agent heard of it
    else:
        assert list(event.starting) == [] and WorkloadId("api-2") not in bus.state.starting


def test_a_node_is_cut_off_when_revoked_removed_from_the_fabric_or_its_svid_expires(
    tmp_path: Path, state: FabricState
) -> None:
    """Renewal, watches and reports are refused for a revoked node or one no longer in the model; an open
    watch ends when its caller's certificate expires or its identity is revoked."""
    revoked: set[str] = set()
    now = [NOW]

    def authorize(certificate: str) -> tuple[str, str | None]:
        node = certificate.removeprefix("NODE ")
        return ("", f"identity of {node} is revoked") if node in revoked else (node, None)

    bus = FakeBus(state)
    agents = AgentServicer(
        bus,  # type: ignore[arg-type]
        JoinTokenStore(tmp_path, lambda: NOW),
        issuer=None,  # type: ignore[arg-type]
        trust_domain=TD,
        authorize_node=authorize,
        caller_certificate=lambda context: context.certificate,  # type: ignore[attr-defined]
        clock=lambda: now[0],
        certificate_expiry=lambda _certificate: NOW + 60,
        node_revoked=lambda node: node in revoked,
    )
    watch = agents.watch_node(pb.WatchNodeRequest(node="ea-n1"), FakeContext("NODE ea-n1"))
    assert next(watch).kind == pb.NodeEvent.SNAPSHOT
    now[0] = NOW + 61  # the certificate the stream was opened with has expired
    expired = refusal(lambda: next(watch))
    assert expired.code is grpc.StatusCode.UNAUTHENTICATED and "expired" in expired.reason and "renew" in expired.reason
    assert refusal(lambda: agents.report_health(pb.HealthReport(), FakeContext("NODE ea-n1"))).code is (
        grpc.StatusCode.UNAUTHENTICATED
    )
    now[0] = NOW

    watch = agents.watch_node(pb.WatchNodeRequest(node="ea-n1"), FakeContext("NODE ea-n1"))
    assert next(watch).kind == pb.NodeEvent.SNAPSHOT
    revoked.add("ea-n1")
    agents.recheck_watches()  # what the revocation route does
    ended = refusal(lambda: next(watch))
    assert ended.code is grpc.StatusCode.PERMISSION_DENIED and "revoked" in ended.reason
    renew = refusal(lambda: agents.renew_node_svid(pb.RenewRequest(), FakeContext("NODE ea-n1")))
    assert renew.code is grpc.StatusCode.PERMISSION_DENIED and "revoked" in renew.reason
    again = refusal(lambda: agents.attest(pb.AttestRequest(node="ea-n1", join_token="t", csr_pem="x"), None))
    assert again.code is grpc.StatusCode.PERMISSION_DENIED and "revoked" in again.reason

    # c-n1 removed from the fabric: its open watch ends at the model change, its renewal is refused.
    watch = agents.watch_node(pb.WatchNodeRequest(node="c-n1"), FakeContext("NODE c-n1"))
    assert next(watch).kind == pb.NodeEvent.SNAPSHOT
    bus.state = replace(
        bus.state,
        nodes={n: v for n, v in bus.state.nodes.items() if n != "c-n1"},
        generation=bus.state.generation + 1,
    )
    agents.on_model_change(WorkloadRemoved(WorkloadId("db-1")), bus.state)
    gone = refusal(lambda: next(watch))
    assert gone.code is grpc.StatusCode.PERMISSION_DENIED and "not in the fabric" in gone.reason
    renew = refusal(lambda: agents.renew_node_svid(pb.RenewRequest(), FakeContext("NODE c-n1")))
    assert renew.code is grpc.StatusCode.PERMISSION_DENIED and "not in the fabric" in renew.reason


def test_attest_checks_the_token_before_the_ca_signs_anything(tmp_path: Path, state: FabricState) -> None:
    """An unauthenticated caller with no good token makes the CA do no work; a token for another node is
    still burned, and a good one is used only once its certificate is made."""

    class CountingIssuer:
        bundle_pem = "BUNDLE"

        def __init__(self) -> None:
            self.calls = 0

        def issue_from_csr(self, *_args: Any, **_kwargs: Any) -> Any:
            self.calls += 1
            from pki.errors import CsrRejected

            raise CsrRejected("no such CSR")

    issuer = CountingIssuer()
    agents = servicer(FakeBus(state), tmp_path)
    agents.issuer = issuer
    token, _expires_at = agents.tokens.mint("ea-n1", 600)
    for made_up in ("", "x", "y" * 600):
        denied = refusal(lambda t=made_up: agents.attest(pb.AttestRequest(node="ea-n1", join_token=t), None))
        assert denied.code is grpc.StatusCode.PERMISSION_DENIED and "unknown join token" in denied.reason
    assert issuer.calls == 0
    bad_csr = refusal(lambda: agents.attest(pb.AttestRequest(node="ea-n1", join_token=token, csr_pem="x"), None))
    assert bad_csr.code is grpc.StatusCode.INVALID_ARGUMENT and issuer.calls == 1
    assert agents.tokens.check(token, "ea-n1") is None  # a CSR the CA refused did not cost the token
    foreign = refusal(lambda: agents.attest(pb.AttestRequest(node="c-n1", join_token=token, csr_pem="x"), None))
    assert "another node" in foreign.reason and issuer.calls == 1
    again = refusal(lambda: agents.attest(pb.AttestRequest(node="ea-n1", join_token=token, csr_pem="x"), None))
    assert "already used" in again.reason and issuer.calls == 1  # burned, on disk
    assert "already used" in str(JoinTokenStore(tmp_path, lambda: NOW).check(token, "ea-n1"))


def test_refusals_are_logged_once_per_source_per_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    from edgectl.agent_api import RefusalLog

    now = [100.0]
    log = RefusalLog(interval_s=10.0, clock=lambda: now[0], max_sources=3)
    with caplog.at_level("WARNING", logger="edgectl.agent_api"):
        for port in range(5):  # a client retrying in a loop, from new ports, with other node names
            log.refused(f"10.0.0.9:{4000 + port}", "Attest", f"node n{port}: unknown join token", "token unknown")
        log.refused("10.0.0.7:1", "Attest", "node n1: unknown join token", "token unknown")
        log.refused("10.0.0.9:4100", "Attest", "node n1: join token already used", "token used")  # another kind
        now[0] += 10
        log.refused("10.0.0.9:5000", "Attest", "node n1: unknown join token", "token unknown")
        for n in range(10):  # more sources than it remembers: still one line each, memory bounded
            log.refused(f"10.1.0.{n}:1", "WatchNode", "x")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:4] == [
        "agent API: refusing Attest from 10.0.0.9:4000: node n0: unknown join token",
        "agent API: refusing Attest from 10.0.0.7:1: node n1: unknown join token",
        "agent API: refusing Attest from 10.0.0.9:4100: node n1: join token already used",
        "agent API: refusing Attest from 10.0.0.9:5000: node n1: unknown join token (4 more like it from 10.0.0.9 "
        "since the last such line)",
    ]
    assert len(lines) == 14 and len(log._by_source) <= 3


class CancellableContext(FakeContext):
    def __init__(self, certificate: str | None) -> None:
        super().__init__(certificate)
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.active = False


def test_watch_slots_two_per_node_a_third_replaces_the_oldest_and_a_stuck_one_is_cancelled(
    tmp_path: Path, state: FabricState
) -> None:
    now = [NOW]
    agents = servicer(FakeBus(state), tmp_path, max_watches=3, send_timeout_s=30.0)
    agents._clock = lambda: now[0]

    def watch(node: str) -> tuple[Any, CancellableContext]:
        context = CancellableContext(f"NODE {node}")
        stream = agents.watch_node(pb.WatchNodeRequest(node=node), context)
        assert next(stream).kind == pb.NodeEvent.SNAPSHOT
        return stream, context

    first, _ = watch("ea-n1")
    second, _ = watch("ea-n1")
    other, _ = watch("c-n1")
    full = refusal(lambda: next(agents.watch_node(pb.WatchNodeRequest(node="eb-n1"), FakeContext("NODE eb-n1"))))
    assert full.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as reader:  # the first one's client reads on: its stream waits for changes
        waiting = reader.submit(lambda: refusal(lambda: next(first)))
        deadline = time.monotonic() + 10
        while agents._watches[0].sending_since is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        third, _ = watch("ea-n1")  # the node's own oldest watch makes room: one node cannot take every slot
        replaced = waiting.result(timeout=10)
    assert replaced.code is grpc.StatusCode.ABORTED and "replaced by a newer watch" in replaced.reason
    assert len(agents._watches) == 3

    # The clients stop reading: each generator stays suspended in its send. After the timeout they are cancelled.
    now[0] += 29
    assert agents.end_stuck_watches() == 0
    now[0] += 2
    assert agents.end_stuck_watches() == 3
    assert agents.end_stuck_watches() == 0  # told once
    for stream in (second, third, other):
        stream.close()  # what gRPC does to a cancelled stream's generator
    assert agents._watches == []


def test_the_default_watch_slots_fit_every_node_of_a_large_fabric() -> None:
    from edgectl.agent_api import MAX_WATCHES, MAX_WATCHES_PER_NODE

    assert MAX_WATCHES >= 4096 and MAX_WATCHES_PER_NODE == 2


def test_a_watch_whose_client_stops_reading_frees_its_thread(tmp_path: Path, state: FabricState) -> None:
    """Over real gRPC: the client opens WatchNode and reads nothing; the server's send blocks on flow
    control (no deadline in gRPC) until the watch is cancelled, which frees the thread."""
    from concurrent import futures

    from edgectl.agent_api import handlers
    from netmodel.ids import ServiceName

    api = state.services[ServiceName("api")]
    big = replace(state, services={**state.services, ServiceName("api"): replace(api, env=(("BIG", "x" * 8_000_000),))})
    agents = servicer(FakeBus(big), tmp_path, send_timeout_s=1.0)
    agents._caller_certificate = lambda _context: "NODE ea-n1"
    agents._clock = time.time
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((handlers(agents),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1)])
    try:
        call = channel.unary_stream("/edgectl.agent.v1.NodeAgent/WatchNode")(
            pb.WatchNodeRequest(node="ea-n1").SerializeToString()
        )
        deadline = time.monotonic() + 30
        ended = 0
        generation = big.generation
        while not ended and time.monotonic() < deadline:
            time.sleep(0.2)
            generation += 1  # the service's env changes: a big PLACED for each change
            env = (("BIG", str(generation) * 4_000_000),)
            changed = replace(big, services={**big.services, ServiceName("api"): replace(api, env=env)})
            agents.on_model_change(WorkloadRemoved(WorkloadId("none")), replace(changed, generation=generation))
            ended = agents.end_stuck_watches()
        assert ended == 1
        while agents._watches and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agents._watches == []  # the stream's thread left the send
        call.cancel()
    finally:
        channel.close()
        server.stop(0)
