"""TLS files for OpenFlow (what os-ken and OVS load), and the line between pure and adapter modules."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509

from pki.ca import CertificateAuthority
from pki.tls import openflow_controller_tls, peer_uri_sans, switch_tls, write_tls_files
from tests.unit.pki.pki_helpers import NOW, TD
from tests.unit.purity_rule import check_pure, pure_paths
from tests.unit.test_import_direction import imported_modules

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(TD, now=NOW)[0]


def test_controller_files_carry_its_identity_and_an_intermediate_aware_ca_file(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    files = openflow_controller_tls(ca, tmp_path, NOW, ip_addresses=["127.0.0.1", "10.0.0.1"])
    assert stat.S_IMODE(files.private_key.stat().st_mode) == 0o600
    chain = x509.load_pem_x509_certificates(files.certificate.read_bytes())
    leaf = chain[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org/controller/edgectl"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "10.0.0.1"]
    assert int(leaf.not_valid_after_utc.timestamp()) == int(NOW) + 7 * 86400
    # OVS presents its leaf alone: the controller must know the intermediate as well as the root.
    ca_file = x509.load_pem_x509_certificates(files.ca_certs.read_bytes())
    assert [c.subject for c in ca_file] == [ca.root.subject, ca.intermediate.subject]
    assert ca.verify(files.certificate.read_text(), NOW) == "spiffe://example.org/controller/edgectl"


def test_switch_files(ca: CertificateAuthority, tmp_path: Path) -> None:
    files = switch_tls(ca, tmp_path, 0xA1, NOW)
    assert files.private_key.name == "switch-00000000000000a1.key"
    assert stat.S_IMODE(files.private_key.stat().st_mode) == 0o600
    assert files.ca_certs.read_text() == ca.bundle_pem
    assert ca.verify(files.certificate.read_text(), NOW) == "spiffe://example.org/switch/00000000000000a1"


def test_a_csr_issued_svid_has_no_key_to_write(ca: CertificateAuthority, tmp_path: Path) -> None:
    from tests.unit.pki.pki_helpers import make_csr

    svid = ca.issue_from_csr(make_csr()[0], "spiffe://example.org/a", NOW)
    with pytest.raises(ValueError, match="carries no private key"):
        write_tls_files(tmp_path, "a", svid, ca.bundle_pem)


def test_peer_uri_sans_from_getpeercert() -> None:
    peercert = {"subjectAltName": (("URI", "spiffe://example.org/switch/00000000000000a1"), ("DNS", "sw1"))}
    assert peer_uri_sans(peercert) == ["spiffe://example.org/switch/00000000000000a1"]
    assert peer_uri_sans(None) == [] and peer_uri_sans({}) == []


PURE = [path for path in pure_paths() if path.startswith("pki/")]


def test_pki_has_its_pure_cores() -> None:
    assert {"pki/policy.py", "pki/errors.py", "pki/identities.py", "pki/authz.py"} <= set(PURE)


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_import_no_adapter_library_and_do_no_io(name: str) -> None:
    check_pure(name)  # the purity rule: also, the pki modules it imports are pure
    roots = {module.split(".")[0] for _line, module in imported_modules((REPO / name).read_text(), name)}
    # pki's pure modules lean only on each other and on the pure model.
    local = {r for r in roots if r in ("pki", "netmodel")}
    assert roots - local <= {
        "__future__",
        "base64",  # join tokens' text (an encoding: pure)
        "collections",
        "dataclasses",
        "datetime",
        "hashlib",  # join tokens are kept as their SHA-256 (a pure function of the text)
        "heapq",  # certificates in the order they come due (a data structure: pure)
        "ipaddress",
        "re",
        "threading",
        "typing",
    }
