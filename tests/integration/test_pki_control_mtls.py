"""mTLS on the control connections with edgectl's PKI: the xDS server's TCP listener and the placement
API accept only clients with a certificate from this CA; an xDS stream is bound to the identity in the
client certificate (A's certificate asking for B's node: PERMISSION_DENIED, B's key never sent); a
foreign-CA, expired or missing client certificate fails the handshake; a real Envoy connects over mTLS
with a bootstrap from ``render_bootstrap(..., tls=...)``. Loopback only; every server is stopped here."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from edgectl.bus import EventBus
from meshctl.bootstrap import XdsClientTls, render_bootstrap
from meshctl.sidecar import EnvoySidecar
from meshctl.xds_grpc import SERVICE, XdsTls, start_mesh
from netmodel import events as ev
from netmodel.fabric import build_state
from netmodel.fabric_file import parse_fabric
from tests.integration.harness import free_port
from tests.integration.test_xds_harness import fabric_text, make_workload, wait_until

pytestmark = pytest.mark.integration

TD = "edgectl.local"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
WEB = f"spiffe://{TD}/svc/web/w/web-1"


@dataclasses.dataclass
class World:
    ca: Any
    pki: Any
    bus: EventBus
    xds_port: int
    api_port: int


@contextlib.contextmanager
def world() -> Iterator[World]:
    from pki.ca import CertificateAuthority
    from pki.service import PkiService
    from placement.grpc_api import ApiTls, start_placement_api

    ca, _root_key = CertificateAuthority.create(TD)
    spec = parse_fabric(fabric_text(free_port(), free_port()).encode(), "control-mtls.yaml")
    bus = EventBus(build_state(spec))
    bus.start()
    bus.publish(
        ev.WorkloadPlaced(dataclasses.replace(make_workload("web-1", "web", "n1", free_port()), spiffe_id=WEB))
    ).result(timeout=5)
    pki = PkiService(ca, lambda: bus.state, hosts=lambda _s: ["u1"]).start()
    control = pki.control_tls()
    mesh = start_mesh(
        lambda: bus.state,
        bus.subscribe,
        "127.0.0.1",
        0,
        tls=XdsTls(control.cert_chain_pem, control.private_key_pem, control.bundle_pem, pki.authorize_xds),
    )
    mesh.use_identities(pki.snapshot, mtls=True)
    api = start_placement_api(
        bus,
        "127.0.0.1",
        0,
        failover=False,
        tls=ApiTls(control.cert_chain_pem, control.private_key_pem, control.bundle_pem, pki.authorize_operator),
    )
    try:
        yield World(ca, pki, bus, mesh.address[1], api.port)
    finally:
        api.stop(0)
        mesh.stop()
        pki.stop()
        bus.stop()


def credentials(ca: Any, bundle_pem: str, spiffe_id: str | None, **issue: Any) -> grpc.ChannelCredentials:
    if spiffe_id is None:
        return grpc.ssl_channel_credentials(root_certificates=bundle_pem.encode())
    svid = ca.issue_with_new_key(spiffe_id, issue.pop("now", time.time()), **issue)
    return grpc.ssl_channel_credentials(
        root_certificates=bundle_pem.encode(),
        private_key=svid.private_key_pem.encode(),
        certificate_chain=svid.cert_chain_pem.encode(),
    )


def ask_secrets(port: int, creds: grpc.ChannelCredentials, node_id: str) -> Any:
    """One SotW request for every secret of ``node_id``; the first response (or the RpcError)."""
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        call = channel.stream_stream(
            f"/{SERVICE}/StreamAggregatedResources",
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )
        request = discovery_pb2.DiscoveryRequest(
            node=base_pb2.Node(id=node_id, cluster="x"), type_url=SECRET_TYPE, resource_names=["identity"]
        )
        done = threading.Event()

        def requests() -> Iterator[Any]:
            yield request
            done.wait(5)  # keep the stream open until the answer is read

        responses = call(requests(), timeout=5)
        try:
            return next(responses)
        except grpc.RpcError as exc:
            return exc
        finally:
            done.set()
            responses.cancel()


def switch_node_mid_stream(port: int, creds: grpc.ChannelCredentials, first: str, second: str) -> list[Any]:
    """A stream that starts as ``first`` and then claims to be ``second``: every response, then the error."""
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        call = channel.stream_stream(
            f"/{SERVICE}/StreamAggregatedResources",
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )
        answered = threading.Event()

        def requests() -> Iterator[Any]:
            yield discovery_pb2.DiscoveryRequest(
                node=base_pb2.Node(id=first), type_url=SECRET_TYPE, resource_names=["identity"]
            )
            answered.wait(5)
            yield discovery_pb2.DiscoveryRequest(
                node=base_pb2.Node(id=second), type_url=SECRET_TYPE, resource_names=["identity", "x"]
            )
            time.sleep(5)

        seen: list[Any] = []
        try:
            for response in call(requests(), timeout=5):
                seen.append(response)
                answered.set()
        except grpc.RpcError as exc:
            seen.append(exc)
        return seen


def list_workloads(port: int, creds: grpc.ChannelCredentials) -> Any:
    from placement._pb import placement_pb2 as pb
    from placement._pb import placement_pb2_grpc as pb_grpc

    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        try:
            return pb_grpc.PlacementStub(channel).List(pb.ListRequest(), timeout=5)
        except grpc.RpcError as exc:
            return exc


def test_xds_stream_is_bound_to_the_client_certificate(caplog: pytest.LogCaptureFixture) -> None:
    with world() as w:
        bundle = w.ca.bundle_pem
        own = ask_secrets(w.xds_port, credentials(w.ca, bundle, WEB), "web-1")
        assert isinstance(own, discovery_pb2.DiscoveryResponse), own
        assert {r.type_url for r in own.resources} == {SECRET_TYPE} and len(own.resources) >= 1

        # A's certificate (web-1) asking for B's node (u1): refused, and u1's key never leaves.
        with caplog.at_level("WARNING", logger="edgectl.mesh"):
            other = ask_secrets(w.xds_port, credentials(w.ca, bundle, WEB), "u1")
        assert isinstance(other, grpc.RpcError) and other.code() == grpc.StatusCode.PERMISSION_DENIED, other
        assert WEB in other.details() and f"spiffe://{TD}/host/u1" in other.details()
        assert any("u1" in r.getMessage() and WEB in r.getMessage() for r in caplog.records)

        # Starting as its own node and then claiming another: the stream ends, nothing of u1 is sent.
        seen = switch_node_mid_stream(w.xds_port, credentials(w.ca, bundle, WEB), "web-1", "u1")
        assert isinstance(seen[-1], grpc.RpcError) and seen[-1].code() == grpc.StatusCode.INVALID_ARGUMENT
        u1_key = w.pki.snapshot.identities["u1"].private_key_pem
        web_key = w.pki.snapshot.identities["web-1"].private_key_pem
        assert len(seen) == 2 and web_key.encode() in seen[0].SerializeToString()  # its own key, once
        assert u1_key.encode() not in seen[0].SerializeToString()

        # A node the PKI has no identity for, an operator certificate asking for a node: refused too.
        stranger = ask_secrets(w.xds_port, credentials(w.ca, bundle, f"spiffe://{TD}/svc/web/w/web-9"), "web-9")
        assert isinstance(stranger, grpc.RpcError) and stranger.code() == grpc.StatusCode.PERMISSION_DENIED


def test_xds_refuses_foreign_expired_missing_and_revoked_client_certificates() -> None:
    from pki.ca import CertificateAuthority

    with world() as w:
        bundle = w.ca.bundle_pem
        foreign, _key = CertificateAuthority.create(TD)  # same trust domain and names, other keys
        now = time.time()
        cases = {
            "foreign CA": credentials(foreign, bundle, WEB),
            "expired": credentials(w.ca, bundle, WEB, now=now - 3000, ttl_s=60),
            "no certificate": credentials(w.ca, bundle, None),
        }
        for what, creds in cases.items():
            result = ask_secrets(w.xds_port, creds, "web-1")
            assert isinstance(result, grpc.RpcError), what
            assert result.code() == grpc.StatusCode.UNAVAILABLE, (what, result)

        # The sidecar's own (served) certificate works until it is rotated; then it is revoked.
        served = w.pki.snapshot.identities["web-1"]
        held = grpc.ssl_channel_credentials(
            bundle.encode(), served.private_key_pem.encode(), served.cert_chain_pem.encode()
        )
        assert isinstance(ask_secrets(w.xds_port, held, "web-1"), discovery_pb2.DiscoveryResponse)
        w.pki.rotate(WEB)
        revoked = ask_secrets(w.xds_port, held, "web-1")
        assert isinstance(revoked, grpc.RpcError) and revoked.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "revoked" in revoked.details()


def test_placement_api_accepts_operators_only() -> None:
    from pki.ca import CertificateAuthority
    from pki.policy import operator_spiffe_id

    with world() as w:
        bundle = w.ca.bundle_pem
        ok = list_workloads(w.api_port, credentials(w.ca, bundle, operator_spiffe_id(TD, "alice")))
        assert not isinstance(ok, grpc.RpcError), ok
        assert [x.id for x in ok.workloads] == ["web-1"]

        wrong_san = list_workloads(w.api_port, credentials(w.ca, bundle, WEB))
        assert isinstance(wrong_san, grpc.RpcError) and wrong_san.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "not an operator" in wrong_san.details()

        foreign, _key = CertificateAuthority.create(TD)
        for what, creds in {
            "foreign CA": credentials(foreign, bundle, operator_spiffe_id(TD, "alice")),
            "expired": credentials(w.ca, bundle, operator_spiffe_id(TD, "alice"), now=time.time() - 3000, ttl_s=60),
            "no certificate": credentials(w.ca, bundle, None),
        }.items():
            result = list_workloads(w.api_port, creds)
            assert isinstance(result, grpc.RpcError) and result.code() == grpc.StatusCode.UNAVAILABLE, (what, result)


def test_envoy_connects_over_mtls_with_the_bootstrap_files(tmp_path: Path) -> None:
    from pki.cli import write_svid
    from pki.policy import controller_spiffe_id

    with world() as w:
        svid = w.ca.issue_with_new_key(f"spiffe://{TD}/host/u1", time.time())
        files = write_svid(str(tmp_path / "u1"), svid, w.ca.bundle_pem)
        tls = XdsClientTls(str(files.chain), str(files.key), str(files.bundle), controller_spiffe_id(TD))
        bootstrap = render_bootstrap("u1", "users", False, f"127.0.0.1:{w.xds_port}", free_port(), tls)
        sidecar = EnvoySidecar(bootstrap, "warning").start()
        try:
            wait_until(lambda: "identity" in sidecar.dynamic_versions().get("secrets", {}), 10, "SDS over mTLS")
        finally:
            sidecar.stop()
