"""nodeagent/identity.py and the message conversions of nodeagent/client.py: the node's key, CSR and SVID
files (modes, atomic SDS document, read back after a restart), and NodeWorkload -> WorkloadSpec."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cryptography import x509

from nodeagent._pb import agent_pb2 as pb
from nodeagent.client import ControllerClient, event_of, workload_spec
from nodeagent.identity import IdentityError, NodeIdentityFiles, new_key_and_csr, svid_from
from nodeagent.main import default_xds
from nodeagent.plan import Call, EventKind
from pki.ca import CertificateAuthority

TD = "example.org"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(TD)[0]


def test_a_csr_is_p256_without_names_and_the_ca_signs_it_as_the_node(ca: CertificateAuthority) -> None:
    key_pem, csr_pem = new_key_and_csr("ea-n1")
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    assert csr.is_signature_valid and csr.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    issued = ca.issue_from_csr(csr_pem, f"spiffe://{TD}/node/ea-n1", time.time(), ttl_s=600)
    svid = svid_from(issued.cert_chain_pem, key_pem)
    assert svid.spiffe_id == f"spiffe://{TD}/node/ea-n1"
    assert svid.valid(time.time()) and not svid.valid(svid.not_after)
    assert svid.not_before < svid.renew_at() < svid.not_after
    assert abs(svid.renew_at() - (svid.not_before + svid.not_after) / 2) < 1


def test_a_chain_for_another_key_is_refused(ca: CertificateAuthority) -> None:
    _, csr_pem = new_key_and_csr("ea-n1")
    other_key, _ = new_key_and_csr("ea-n1")
    issued = ca.issue_from_csr(csr_pem, f"spiffe://{TD}/node/ea-n1", time.time(), ttl_s=600)
    with pytest.raises(IdentityError, match="not for this node's key"):
        svid_from(issued.cert_chain_pem, other_key)
    with pytest.raises(IdentityError, match="unreadable"):
        svid_from("not a certificate", other_key)


def test_stored_files_have_their_modes_and_are_read_back(ca: CertificateAuthority, tmp_path: Path) -> None:
    key_pem, csr_pem = new_key_and_csr("ea-n1")
    issued = ca.issue_from_csr(csr_pem, f"spiffe://{TD}/node/ea-n1", time.time(), ttl_s=600)
    files = NodeIdentityFiles(tmp_path)
    assert files.load() is None
    svid = svid_from(issued.cert_chain_pem, key_pem)
    files.store(svid, ca.bundle_pem)
    assert files.load() == svid
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {
        "node.sds.json": "0o600",
        "node.key": "0o600",
        "node.crt": "0o644",
        "bundle.pem": "0o644",
    }
    document = json.loads(files.sds.read_text())
    assert document["resources"][0]["tls_certificate"]["private_key"]["inline_string"] == key_pem
    assert files.bundle_pem() == ca.bundle_pem.encode()


def test_a_damaged_sds_file_means_no_kept_identity(tmp_path: Path) -> None:
    files = NodeIdentityFiles(tmp_path)
    files.sds.write_text("{not json")
    assert files.load() is None
    files.sds.write_text(json.dumps({"resources": []}))
    assert files.load() is None


def test_a_node_workload_message_becomes_a_spec() -> None:
    message = pb.NodeWorkload(
        id="web-1",
        service="web",
        port=8080,
        address="10.0.1.10",
        app_host="127.0.0.2",
        run=["{python}", "-m", "app"],
        env={"B": "2", "A": "1"},
        spiffe_id=f"spiffe://{TD}/svc/web/w/web-1",
        calls=[
            pb.Call(service="api", port=9090, per_request=2.0, bytes_per_call=10),
            pb.Call(service="cache", port=6379, protocol="tcp"),
        ],
        protocol="tcp",
        outbound_host="127.1.31.144",
    )
    spec = workload_spec(message)
    assert spec.run == ("{python}", "-m", "app") and spec.env == (("A", "1"), ("B", "2"))
    # A callee's protocol: "http" unless said (a controller from before it was sent says nothing).
    assert spec.calls == (Call("api", 9090, 2.0, 10, "http"), Call("cache", 6379, 0.0, 0, "tcp"))
    assert spec.protocol == "tcp" and spec.app_host == "127.0.0.2"
    assert spec.outbound_host == "127.1.31.144"
    # A controller from before outbound addresses: both on 127.0.0.1.
    assert workload_spec(pb.NodeWorkload(id="w", service="s", port=1)).app_host == "127.0.0.1"
    assert workload_spec(pb.NodeWorkload(id="w", service="s", port=1)).outbound_host == "127.0.0.1"
    kinds = [
        event_of(pb.NodeEvent(kind=kind, workloads=[message], generation=7))[0]
        for kind in (pb.NodeEvent.SNAPSHOT, pb.NodeEvent.PLACED, pb.NodeEvent.REMOVED)
    ]
    assert kinds == [EventKind.SNAPSHOT, EventKind.PLACED, EventKind.REMOVED]


def test_xds_defaults_to_the_controllers_host_and_a_unix_controller_needs_it_given() -> None:
    assert default_xds("10.0.0.254:50052") == "10.0.0.254:18000"
    assert default_xds("[fd00::1]:50052") == "[fd00::1]:18000"
    with pytest.raises(ValueError, match="give --xds"):
        default_xds("unix:/run/edgectl-agent.sock")


def test_controller_addresses_are_comma_separated() -> None:
    from nodeagent.main import controller_addresses

    assert controller_addresses("10.0.0.1:50052") == ["10.0.0.1:50052"]
    assert controller_addresses("10.0.0.1:50052, unix:/run/a.sock,") == ["10.0.0.1:50052", "unix:/run/a.sock"]
    with pytest.raises(ValueError, match="--controller"):
        controller_addresses(" , ")
    client = ControllerClient(["10.0.0.1:50052", "unix:/run/a.sock"])
    assert client.target == "10.0.0.1:50052" and client._options == []
    assert client._options_for("unix:/run/a.sock") == [("grpc.ssl_target_name_override", "localhost")]


def test_xds_defaults_to_every_controller_replicas_host() -> None:
    assert default_xds("10.0.0.1:50052, 10.0.0.2:50052") == "10.0.0.1:18000,10.0.0.2:18000"
    with pytest.raises(ValueError, match="give --xds"):
        default_xds("10.0.0.1:50052,unix:/run/edgectl-agent.sock")


def test_a_unix_controller_is_checked_as_localhost() -> None:
    assert ControllerClient("unix:/run/a.sock")._options == [("grpc.ssl_target_name_override", "localhost")]
    assert ControllerClient("10.0.0.1:50052")._options == []
    assert ControllerClient("10.0.0.1:50052", server_name="ctl")._options == [("grpc.ssl_target_name_override", "ctl")]
