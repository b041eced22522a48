"""The PKI's side of the control connections: the root CRL made at init (so Envoy can check the whole
chain), the CRLs served with the trust bundle, the control-plane certificate, and PkiService's
authorisation of xDS and placement clients (revoked, not an SVID, someone else's node)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography import x509

from netmodel.state import FabricState
from pki.ca import CertificateAuthority
from pki.policy import host_spiffe_id, operator_spiffe_id
from pki.service import PkiService
from tests.unit.pki.pki_helpers import TD


def test_a_new_ca_has_an_empty_root_crl_valid_as_long_as_the_intermediate(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", TD)
    crl = x509.load_pem_x509_crl(ca.root_crl_pem.encode())
    assert crl.issuer == ca.root.subject and len(crl) == 0
    assert crl.is_signature_valid(ca.root.public_key())  # type: ignore[arg-type]
    assert crl.next_update_utc == ca.intermediate.not_valid_after_utc
    assert (tmp_path / "ca" / "root-crl.pem").read_text() == ca.root_crl_pem
    assert CertificateAuthority.load(tmp_path / "ca").root_crl_pem == ca.root_crl_pem


def test_an_older_ca_without_root_crl_serves_no_crl(tmp_path: Path) -> None:
    CertificateAuthority.init(tmp_path / "ca", TD)
    (tmp_path / "ca" / "root-crl.pem").unlink()
    old = CertificateAuthority.load(tmp_path / "ca")
    assert old.root_crl_pem == ""
    service = PkiService(old, lambda: FabricState(), hosts=lambda _s: ["u1"])
    assert service.trust_crls_pem() == ""  # a CRL for the intermediate alone would fail every chain in Envoy


@pytest.fixture
def service() -> PkiService:
    ca, _root_key = CertificateAuthority.create(TD)
    return PkiService(ca, lambda: FabricState(), hosts=lambda _s: ["u1", "u2"]).start()


def test_trust_crls_hold_the_intermediate_and_the_root_crl(service: PkiService) -> None:
    pem = service.trust_crls_pem()
    assert pem.count("BEGIN X509 CRL") == 2
    issuers = {x509.load_pem_x509_crl(block.encode()).issuer for block in _crl_blocks(pem)}
    assert issuers == {service.issuer.root.subject, service.issuer.intermediate.subject}  # type: ignore[attr-defined]


def test_the_crl_is_the_same_bytes_until_a_revocation_or_half_its_validity(tmp_path: Path) -> None:
    """Signed anew on every call, the CRL (each signature differs) changed the trust bundle, and every
    sidecar's snapshot with it, on every PKI change."""
    now = [time.time()]
    ca = CertificateAuthority.init(tmp_path / "ca", TD)
    service = PkiService(ca, lambda: FabricState(), hosts=lambda _s: ["u1", "u2"], clock=lambda: now[0]).start()
    first = service.trust_crls_pem()
    assert service.trust_crls_pem() == first
    now[0] += 600
    assert service.trust_crls_pem() == first  # young enough
    service.rotate(host_spiffe_id(TD, "u1"))  # a revocation
    revoked = service.trust_crls_pem()
    assert revoked != first and len(x509.load_pem_x509_crl(_crl_blocks(revoked)[0].encode())) == 1
    assert service.trust_crls_pem() == revoked
    now[0] += 86400 / 2  # half the CRL's validity: signed anew
    assert service.trust_crls_pem() != revoked


def _crl_blocks(pem: str) -> list[str]:
    end = "-----END X509 CRL-----"
    return [part + end for part in pem.split(end) if "BEGIN X509 CRL" in part]


def test_control_certificate_is_the_controllers_with_ip_sans(service: PkiService) -> None:
    tls = service.control_tls(ip_addresses=["127.0.0.1", "10.0.0.1"])
    leaf = x509.load_pem_x509_certificate(tls.cert_chain_pem.encode())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{TD}/controller/edgectl"]
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.0.0.1"}
    assert leaf.not_valid_after_utc.timestamp() - time.time() > 6 * 86400
    assert tls.bundle_pem == service.snapshot.bundle_pem and "PRIVATE KEY" in tls.private_key_pem


def test_xds_clients_get_their_own_node_only_and_not_once_revoked(service: PkiService) -> None:
    u1 = service.snapshot.identities["u1"].cert_chain_pem
    assert service.authorize_xds("u1", u1) is None
    refusal = service.authorize_xds("u2", u1)
    assert refusal is not None and host_spiffe_id(TD, "u1") in refusal and host_spiffe_id(TD, "u2") in refusal
    service.rotate(host_spiffe_id(TD, "u1"))
    revoked = service.authorize_xds("u1", u1)
    assert revoked is not None and "revoked" in revoked
    assert service.authorize_xds("u1", service.snapshot.identities["u1"].cert_chain_pem) is None


def test_a_client_certificate_read_once_is_still_checked_for_expiry_and_revocation_on_every_call() -> None:
    """The certificate's reading is kept (every xDS message is authorized); its expiry and revocation are
    judged at each call, against the clock and the PKI's current revocations."""
    now = [time.time()]
    ca, _root_key = CertificateAuthority.create(TD)
    service = PkiService(ca, lambda: FabricState(), hosts=lambda _s: ["u1"], clock=lambda: now[0]).start()
    u1 = service.snapshot.identities["u1"]
    assert service.authorize_xds("u1", u1.cert_chain_pem) is None
    assert service.authorize_xds("u1", u1.cert_chain_pem) is None  # (the kept reading)
    now[0] = u1.info.not_after + 1
    expired = service.authorize_xds("u1", u1.cert_chain_pem)
    assert expired is not None and "expired" in expired
    now[0] = u1.info.not_after - 60
    service.rotate(host_spiffe_id(TD, "u1"))
    revoked = service.authorize_xds("u1", u1.cert_chain_pem)
    assert revoked is not None and "revoked" in revoked
    not_an_svid = service.authorize_xds("u1", service.issuer.bundle_pem)
    assert not_an_svid is not None and "not an X.509-SVID" in not_an_svid
    assert service.authorize_xds("u1", service.issuer.bundle_pem) == not_an_svid


def test_operators_only_on_the_placement_api(service: PkiService) -> None:
    operator = service.issuer.issue_with_new_key(operator_spiffe_id(TD, "alice"), time.time())
    assert service.authorize_operator(operator.cert_chain_pem) is None
    refusal = service.authorize_operator(service.snapshot.identities["u1"].cert_chain_pem)
    assert refusal is not None and "not an operator" in refusal
    assert "not an X.509-SVID" in str(service.authorize_operator(service.issuer.bundle_pem))  # a CA certificate


def test_a_node_svid_gets_xds_for_its_nodes_workloads_and_the_agent_api_while_not_revoked(tmp_path: Path) -> None:
    from netmodel.events import WorkloadPlaced
    from netmodel.fabric import build_state
    from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId
    from netmodel.types import Resources, Workload
    from pki.policy import node_spiffe_id
    from tests.unit.edgectl.fixtures import example_spec

    state = build_state(example_spec())
    for wid, node in (("web-1", "ea-n1"), ("web-2", "eb-n1")):
        spiffe_id = SpiffeId(f"spiffe://{TD}/svc/web/w/{wid}")
        workload = Workload(WorkloadId(wid), ServiceName("web"), spiffe_id, Resources(1, 1), NodeId(node))
        state = state.apply(WorkloadPlaced(workload))
    ca, _root_key = CertificateAuthority.create(TD)
    service = PkiService(ca, lambda: state, hosts=lambda _s: []).start()
    node_svid = ca.issue_with_new_key(node_spiffe_id(TD, "ea-n1"), time.time())
    assert service.authorize_xds("web-1", node_svid.cert_chain_pem) is None
    refusal = service.authorize_xds("web-2", node_svid.cert_chain_pem)
    assert refusal is not None and "placed on node eb-n1" in refusal
    assert service.authorize_node(node_svid.cert_chain_pem) == ("ea-n1", None)
    workload_svid = service.snapshot.identities["web-1"].cert_chain_pem
    assert service.authorize_node(workload_svid)[1] is not None  # a workload is no node agent


def test_a_node_identity_is_refused_once_revoked_removed_from_the_fabric_or_expired(tmp_path: Path) -> None:
    """Renewal kept a node SVID alive forever: a node must be cut off by revocation or by its removal, and
    a certificate past its expiry is refused on a connection opened before it expired."""
    from dataclasses import replace

    from netmodel.fabric import build_state
    from pki.policy import node_spiffe_id
    from tests.unit.edgectl.fixtures import example_spec

    states = [build_state(example_spec())]
    now = [time.time()]
    ca, _root_key = CertificateAuthority.create(TD)
    service = PkiService(ca, lambda: states[0], hosts=lambda _s: [], clock=lambda: now[0]).start()
    node_svid = ca.issue_with_new_key(node_spiffe_id(TD, "ea-n1"), now[0], ttl_s=3600)
    assert service.authorize_node(node_svid.cert_chain_pem) == ("ea-n1", None)

    service.revoke_node("ea-n1")
    node, refusal = service.authorize_node(node_svid.cert_chain_pem)
    assert node == "" and refusal is not None and "revoked" in refusal
    renewed = ca.issue_with_new_key(node_spiffe_id(TD, "ea-n1"), now[0], ttl_s=3600)  # a new certificate too
    assert "revoked" in str(service.authorize_node(renewed.cert_chain_pem)[1])
    assert service.node_revoked("ea-n1")
    service.restore_node("ea-n1")
    assert service.authorize_node(renewed.cert_chain_pem) == ("ea-n1", None)

    nodes = {node_id: node for node_id, node in states[0].nodes.items() if node_id != "ea-n1"}
    states[0] = replace(states[0], nodes=nodes)  # the fabric file without ea-n1, applied
    assert "not in the fabric" in str(service.authorize_node(renewed.cert_chain_pem)[1])

    other = ca.issue_with_new_key(node_spiffe_id(TD, "eb-n1"), now[0], ttl_s=3600)
    now[0] += 3601
    assert "expired" in str(service.authorize_node(other.cert_chain_pem)[1])


def test_the_node_revocation_route_is_loopback_only_and_revokes_and_restores(service: PkiService) -> None:
    from edgectl.pki_http import node_revocation_route

    told: list[frozenset[str]] = []  # what listeners (the agent API's open watches, the mesh) hear
    service.subscribe(lambda snapshot: told.append(snapshot.revocations.identities))
    route = node_revocation_route(service, http_host="127.0.0.1")
    assert route(FabricState(), {"nope": 1})[0] == 400
    assert route(FabricState(), {"node": "a/b"})[0] == 400  # not a SPIFFE path segment
    code, body = route(FabricState(), {"node": "ea-n1"})
    assert code == 200 and body["revoked"] is True and body["spiffe_id"] == f"spiffe://{TD}/node/ea-n1"
    assert body["stored"] is True  # (nothing to store it in here: in memory, which nothing failed to do)
    assert service.node_revoked("ea-n1") and told == [{f"spiffe://{TD}/node/ea-n1"}]
    code, body = route(FabricState(), {"node": "ea-n1", "restore": True})
    assert code == 200 and body["revoked"] is False and not service.node_revoked("ea-n1")
    code, body = node_revocation_route(service, http_host="0.0.0.0")(FabricState(), {"node": "ea-n1"})
    assert code == 403 and not service.node_revoked("ea-n1")


def test_edgectl_pki_revoke_node_asks_the_controller(service: PkiService, capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from edgectl.pki_http import NODE_REVOCATIONS_PATH, node_revocation_route
    from pki.cli import main

    route = node_revocation_route(service, http_host="127.0.0.1")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            code, reply = route(FabricState(), body) if self.path == NODE_REVOCATIONS_PATH else (404, {})
            data = json.dumps(reply).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    try:
        assert main(["revoke-node", "--node", "ea-n1", "--http", address]) == 0
        assert service.node_revoked("ea-n1") and "revoked" in capsys.readouterr().out
        assert main(["revoke-node", "--node", "ea-n1", "--restore", "--http", address]) == 0
        assert not service.node_revoked("ea-n1") and "accepted again" in capsys.readouterr().out
        assert main(["revoke-node", "--node", "a/b", "--http", address]) == 1
        assert "refused" in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()


def test_the_cli_warns_when_the_controller_could_not_store_a_revocation(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pki import cli

    replies = {"/api/v1/pki/node-revocations": {"node": "ea-n1", "revoked": True, "stored": False}}
    monkeypatch.setattr(cli, "_post_to_controller", lambda _address, path, _body, *_rest: replies[path])
    assert cli.main(["revoke-node", "--node", "ea-n1"]) == 0
    captured = capsys.readouterr()
    assert "revoked" in captured.out and "could not store its revocation list" in captured.err
    replies["/api/v1/pki/node-revocations"]["stored"] = True
    assert cli.main(["revoke-node", "--node", "ea-n1"]) == 0
    assert capsys.readouterr().err == ""


def test_an_event_that_names_its_workloads_is_reconciled_for_them_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A placement or a removal issues or drops its own subject's SVID without a pass over every subject
    the model asks for (10,000 at scale); a change of the hosts, or an event that names no workload, is
    reconciled in full."""
    from netmodel.events import HostsExpired, WorkloadPlaced, WorkloadRemoved
    from netmodel.fabric import build_state
    from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId
    from netmodel.types import Resources, Workload
    from pki import service as pki_service
    from tests.unit.edgectl.fixtures import example_spec

    full_passes: list[int] = []
    desired = pki_service.desired_identities

    def counted(*args: object, **kwargs: object) -> dict[str, SpiffeId]:
        full_passes.append(1)
        return desired(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pki_service, "desired_identities", counted)
    model = {"state": build_state(example_spec())}
    ca, _root_key = CertificateAuthority.create(TD)
    service = PkiService(ca, lambda: model["state"], hosts=lambda _s: ["u1"]).start()
    full_passes.clear()

    def apply(event: object) -> None:
        model["state"] = model["state"].apply(event)  # type: ignore[arg-type]
        service.on_model_change(event, model["state"])  # type: ignore[arg-type]

    web = Workload(
        WorkloadId("web-1"),
        ServiceName("web"),
        SpiffeId(f"spiffe://{TD}/svc/web/w/web-1"),
        Resources(1, 1),
        NodeId("ea-n1"),
    )
    version = service.snapshot.version
    apply(WorkloadPlaced(web))
    assert service.snapshot.identities["web-1"].spiffe_id == web.spiffe_id
    assert service.snapshot.changed_from == (version, frozenset({"web-1"}))
    apply(WorkloadRemoved(WorkloadId("web-1")))
    assert "web-1" not in service.snapshot.identities and "u1" in service.snapshot.identities
    assert full_passes == []
    apply(HostsExpired(0.0))  # names no workload: in full
    assert full_passes == [1]
