"""`edgectl run --etcd ...`: what is refused before anything starts, with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgectl.cli import main

FABRIC = str(Path(__file__).resolve().parents[3] / "examples" / "edge-cloud.yaml")
ETCD = "http://127.0.0.1:2379"


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ([], "--replica-id is required with --etcd"),
        (["--replica-id", "r 1"], "at most 64 letters, digits"),
        (["--replica-id", "r1", "--lease-ttl", "0"], "--lease-ttl must be 1..60"),
        (["--replica-id", "r1", "--state-dir", "/tmp/x"], "placements live in etcd"),
        (["--replica-id", "r1", "--static-role", "master:3"], "the election gives the OpenFlow role"),
        (["--replica-id", "r1", "--http-bind", "0.0.0.0"], "--advertise-host"),
        (["--replica-id", "r1", "--cluster-name", "a/b"], "--cluster-name"),
    ],
)
def test_a_replica_misconfigured_is_refused_with_its_reason(
    extra: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--config", FABRIC, "--etcd", ETCD, *extra]) == 1
    assert problem in capsys.readouterr().err


def test_a_replica_id_without_etcd_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", FABRIC, "--replica-id", "r1"]) == 1
    assert "--replica-id needs --etcd" in capsys.readouterr().err


def test_bad_etcd_urls_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", FABRIC, "--etcd", "ftp://x:1", "--replica-id", "r1"]) == 1
    assert "--etcd:" in capsys.readouterr().err
