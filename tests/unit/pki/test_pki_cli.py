"""``edgectl pki ...`` through ``register``/``run``, in-process: outputs, files and modes, exit codes,
and one-line refusals (never a traceback)."""

from __future__ import annotations

import argparse
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pki import cli
from tests.unit.pki.pki_helpers import make_csr

WEB1 = "spiffe://example.org/svc/web/w/web-1"
REPO = Path(__file__).resolve().parents[3]


def edgectl(*argv: str) -> int:
    """What edgectl/cli.py will do: its own parser, ``register`` for the pki tree, ``run`` for it."""
    parser = argparse.ArgumentParser(prog="edgectl")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("validate")  # a neighbour, as in edgectl's real tree
    cli.register(sub)
    args = parser.parse_args(list(argv))
    assert args.command == "pki"
    return cli.run(args)


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = edgectl(*argv)
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.fixture
def ca_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert edgectl("pki", "init", "--trust-domain", "example.org", "--dir", str(tmp_path / "ca")) == 0
    capsys.readouterr()
    return tmp_path / "ca"


def test_init_prints_a_summary_and_writes_0600_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert edgectl("pki", "init", "--trust-domain", "example.org", "--dir", str(tmp_path / "ca")) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"CA for spiffe://example.org in {tmp_path / 'ca'}")
    assert "not encrypted, mode 0600" in out
    for key in ("root.key", "intermediate.key"):
        assert stat.S_IMODE((tmp_path / "ca" / key).stat().st_mode) == 0o600


def test_init_refuses_to_overwrite(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = refused(capsys, "pki", "init", "--trust-domain", "example.org", "--dir", str(ca_dir))
    assert message.startswith(f"edgectl pki init: {ca_dir} already holds a CA")


def test_init_refuses_a_bad_trust_domain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = refused(capsys, "pki", "init", "--trust-domain", "Example.ORG", "--dir", str(tmp_path / "x"))
    assert "invalid character 'E'" in message
    assert not (tmp_path / "x").exists()


def test_passphrase_from_file_and_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    assert edgectl("pki", "init", "--trust-domain", "example.org", "--dir", str(tmp_path / "ca"),
                   "--passphrase-file", str(tmp_path / "pw")) == 0  # fmt: skip
    assert "encrypted with the passphrase" in capsys.readouterr().out
    out = str(tmp_path / "w")
    message = refused(capsys, "pki", "issue", "--dir", str(tmp_path / "ca"), "--spiffe-id", WEB1, "--out", out)
    assert "is encrypted: give the passphrase" in message
    monkeypatch.setenv("EDGECTL_CA_PASS", "wrong")
    assert "wrong passphrase" in refused(
        capsys, "pki", "issue", "--dir", str(tmp_path / "ca"), "--spiffe-id", WEB1, "--out", out,
        "--passphrase-env", "EDGECTL_CA_PASS",
    )  # fmt: skip
    monkeypatch.setenv("EDGECTL_CA_PASS", "s3cret")
    assert edgectl("pki", "issue", "--dir", str(tmp_path / "ca"), "--spiffe-id", WEB1, "--out", out,
                   "--passphrase-env", "EDGECTL_CA_PASS") == 0  # fmt: skip
    monkeypatch.delenv("EDGECTL_CA_PASS")
    assert "EDGECTL_CA_PASS (the passphrase) is not set" in refused(
        capsys, "pki", "issue", "--dir", str(tmp_path / "ca"), "--spiffe-id", WEB1, "--out", out,
        "--passphrase-env", "EDGECTL_CA_PASS",
    )  # fmt: skip
    (tmp_path / "empty").write_text("")
    assert "the passphrase is empty" in refused(
        capsys, "pki", "init", "--trust-domain", "example.org", "--dir", str(tmp_path / "ca2"),
        "--passphrase-file", str(tmp_path / "empty"),
    )  # fmt: skip


def test_issue_with_a_key_made_here_writes_files(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = tmp_path / "out" / "web-1"
    prefix.parent.mkdir()
    assert edgectl("pki", "issue", "--dir", str(ca_dir), "--spiffe-id", WEB1, "--out", str(prefix), "--ttl", "600") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"issued {WEB1}") and "(0600)" in out
    assert stat.S_IMODE(Path(f"{prefix}.key").stat().st_mode) == 0o600
    assert Path(f"{prefix}.crt").read_text().count("BEGIN CERTIFICATE") == 2
    assert Path(f"{prefix}.bundle.pem").read_text() == (ca_dir / "bundle.pem").read_text()
    assert "BEGIN" not in out  # no key (nor certificate) on stdout


def test_issue_without_out_writes_next_to_the_caller_and_says_where(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert edgectl("pki", "issue", "--dir", str(ca_dir), "--spiffe-id", WEB1) == 0
    out = capsys.readouterr().out
    assert "BEGIN" not in out  # a key made here is never printed
    for name in ("svc-web-w-web-1.crt", "svc-web-w-web-1.key (0600)", "svc-web-w-web-1.bundle.pem"):
        assert name in out
    assert stat.S_IMODE((tmp_path / "svc-web-w-web-1.key").stat().st_mode) == 0o600
    assert (tmp_path / "svc-web-w-web-1.crt").read_text().count("BEGIN CERTIFICATE") == 2


def test_the_readme_line_works_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import shlex

    line = next(x for x in (REPO / "README.md").read_text().splitlines() if "pki issue --dir ca/" in x)
    monkeypatch.chdir(tmp_path)
    for command in line.split("#")[0].split("&&"):
        words = shlex.split(command)
        assert words[0].endswith("edgectl"), words
        assert edgectl(*words[1:]) == 0, capsys.readouterr().err
    assert stat.S_IMODE((tmp_path / "x.key").stat().st_mode) == 0o600
    assert "x.crt" in capsys.readouterr().out


def test_issue_with_sds_writes_an_envoy_sds_file(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    prefix = tmp_path / "u1"
    host = "spiffe://example.org/host/u1"
    assert edgectl("pki", "issue", "--dir", str(ca_dir), "--spiffe-id", host, "--out", str(prefix), "--sds") == 0
    assert f"{prefix}.sds.json (0600)" in capsys.readouterr().out
    (resource,) = json.loads(Path(f"{prefix}.sds.json").read_text())["resources"]
    assert resource["tls_certificate"]["certificate_chain"]["inline_string"] == Path(f"{prefix}.crt").read_text()
    assert resource["tls_certificate"]["private_key"]["inline_string"] == Path(f"{prefix}.key").read_text()
    assert stat.S_IMODE(Path(f"{prefix}.sds.json").stat().st_mode) == 0o600
    csr, _key = make_csr(uris=[host])
    (tmp_path / "req.csr").write_bytes(csr)
    message = refused(
        capsys, "pki", "issue", "--dir", str(ca_dir), "--spiffe-id", host, "--csr", str(tmp_path / "req.csr"), "--sds"
    )
    assert "--sds needs the key" in message


def test_issue_from_a_csr_prints_the_chain(ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csr, _key = make_csr(uris=[WEB1])
    (tmp_path / "req.csr").write_bytes(csr)
    assert edgectl("pki", "issue", "--dir", str(ca_dir), "--spiffe-id", WEB1, "--csr", str(tmp_path / "req.csr")) == 0
    chain = capsys.readouterr().out
    assert chain.startswith("-----BEGIN CERTIFICATE-----") and chain.count("BEGIN CERTIFICATE") == 2
    (tmp_path / "chain.pem").write_text(chain)
    assert edgectl("pki", "inspect", str(tmp_path / "chain.pem"), "--dir", str(ca_dir)) == 0
    assert "chain:       ok (trust domain example.org)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("uris", "reason"),
    [
        (["spiffe://evil.org/svc/web/w/web-1"], "in trust domain 'evil.org'; this CA issues for 'example.org'"),
        (["spiffe://example.org/svc/db/w/db-1"], "but the identity being issued is"),
    ],
)
def test_issue_refuses_a_lying_csr(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], uris: list[str], reason: str
) -> None:
    csr, _key = make_csr(uris=uris)
    (tmp_path / "req.csr").write_bytes(csr)
    message = refused(
        capsys, "pki", "issue", "--dir", str(ca_dir), "--spiffe-id", WEB1, "--csr", str(tmp_path / "req.csr")
    )
    assert reason in message


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--spiffe-id", "spiffe://other.org/x", "--out", "X"], "'other.org', not 'example.org'"),
        (["--spiffe-id", WEB1, "--out", "X", "--ttl", "0"], "TTL must be positive"),
        (["--spiffe-id", WEB1, "--out", "X", "--ip", "nope"], "'nope' is not an IP address"),
        (["--spiffe-id", WEB1, "--csr", "/does/not/exist"], "/does/not/exist: No such file or directory"),
    ],
)
def test_issue_refusals(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], reason: str
) -> None:
    args = [a.replace("X", str(tmp_path / "x")) if a == "X" else a for a in args]
    assert reason in refused(capsys, "pki", "issue", "--dir", str(ca_dir), *args)


def test_issue_with_no_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = refused(capsys, "pki", "issue", "--dir", str(tmp_path / "none"), "--spiffe-id", WEB1, "--out", "x")
    assert "is not a directory (create a CA with `edgectl pki init`)" in message


def test_inspect_reports_and_fails_on_a_foreign_chain(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edgectl("pki", "init", "--trust-domain", "example.org", "--dir", str(tmp_path / "other")) == 0
    assert (
        edgectl("pki", "issue", "--dir", str(tmp_path / "other"), "--spiffe-id", WEB1, "--out", str(tmp_path / "f"))
        == 0
    )
    capsys.readouterr()
    assert edgectl("pki", "inspect", str(tmp_path / "f.crt")) == 0
    out = capsys.readouterr().out
    assert f"spiffe id:   {WEB1}" in out and "not checked" in out and "ECDSA secp256r1" in out
    assert edgectl("pki", "inspect", str(tmp_path / "f.crt"), "--bundle", str(ca_dir / "bundle.pem")) == 1
    assert "chain:       FAILED: the signature on CA certificate" in capsys.readouterr().out


def test_inspect_refuses_a_non_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "note.txt").write_text("hello")
    message = refused(capsys, "pki", "inspect", str(tmp_path / "note.txt"))
    assert message.endswith("holds no PEM certificate ('-----BEGIN CERTIFICATE-----')")


def test_bundle_prints_the_roots(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert edgectl("pki", "bundle", "--dir", str(ca_dir)) == 0
    assert capsys.readouterr().out == (ca_dir / "bundle.pem").read_text()


def test_rotate_revokes_what_was_issued_and_issues_anew(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = str(tmp_path / "old"), str(tmp_path / "new")
    assert edgectl("pki", "issue", "--dir", str(ca_dir), "--spiffe-id", WEB1, "--out", old) == 0
    capsys.readouterr()
    assert edgectl("pki", "rotate", "--dir", str(ca_dir), "--spiffe-id", WEB1, "--out", new) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"revoked 1 certificate(s) of {WEB1}") and f"issued {WEB1}" in out
    assert (ca_dir / "crl.pem").read_text().startswith("-----BEGIN X509 CRL-----")
    assert edgectl("pki", "inspect", f"{old}.crt", "--dir", str(ca_dir)) == 1
    assert "is revoked" in capsys.readouterr().out
    assert edgectl("pki", "inspect", f"{new}.crt", "--dir", str(ca_dir)) == 0
    assert edgectl("pki", "rotate", "--dir", str(ca_dir), "--spiffe-id", "spiffe://example.org/svc/x/w/none") == 0
    assert "no unrevoked, unexpired certificate" in capsys.readouterr().out


def test_usage_errors_exit_2_from_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        edgectl("pki", "issue", "--dir", "x")
    assert caught.value.code == 2
    assert "--spiffe-id" in capsys.readouterr().err


def test_run_options() -> None:
    parser = argparse.ArgumentParser()
    cli.add_run_options(parser)
    assert cli.run_options(parser.parse_args([])) is None
    options = cli.run_options(parser.parse_args(["--pki-dir", "D", "--svid-ttl", "60", "--openflow-tls"]))
    assert options == cli.PkiRunOptions("D", None, 60, True)
    with pytest.raises(ValueError, match="--openflow-tls needs --pki-dir"):
        cli.run_options(parser.parse_args(["--openflow-tls"]))
    with pytest.raises(ValueError, match="TTL must be positive"):
        cli.run_options(parser.parse_args(["--pki-dir", "D", "--svid-ttl", "0"]))


def test_standalone_module_runs_without_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pki.cli", "issue", "--dir", str(tmp_path), "--spiffe-id", WEB1, "--out", "x"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("edgectl pki issue: ") and "Traceback" not in result.stderr


def test_importing_the_cli_loads_no_cryptography() -> None:
    code = "import sys, pki.cli; print('cryptography' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "False", result.stderr


def test_rotate_needs_a_directory_or_a_controller(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--controller" in refused(capsys, "pki", "rotate", "--spiffe-id", WEB1)


def test_rotate_on_a_controller_without_the_pki_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    from edgectl.http_api import HttpApi
    from edgectl.metrics import ControllerMetrics
    from netmodel.state import FabricState

    api = HttpApi("127.0.0.1", 0, lambda: FabricState(), ControllerMetrics(), {})
    api.start()
    try:
        address = "{}:{}".format(*api.address)
        reason = refused(capsys, "pki", "rotate", "--controller", address, "--spiffe-id", WEB1)
        assert "refused" in reason and "--pki-dir" in reason
    finally:
        api.stop()
    assert "cannot reach" in refused(capsys, "pki", "rotate", "--controller", address, "--spiffe-id", WEB1)
