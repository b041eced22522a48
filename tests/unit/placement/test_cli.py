"""`edgectl place | workloads | migrate | evict` against the real gRPC API (in-process server)."""

from __future__ import annotations

import argparse
import json

import pytest

from placement.cli import register
from tests.unit.placement.helpers import served_api


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgectl")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.placement_handler(args))


def test_place_list_migrate_evict(capsys: pytest.CaptureFixture[str]) -> None:
    with served_api() as (bus, server, _stub):
        api = ["--api", server.address]
        assert run(["place", "--service", "web", "--cpu-millis", "250", "--memory-mib", "128", *api]) == 0
        out = capsys.readouterr().out
        assert "placed (generation" in out and "web-1" in out and "m-n1" in out and "3.00 ms" in out
        assert (
            run(["place", "--service", "api", "--near", "u3", "--max-latency-ms", "1", "--output", "json", *api]) == 0
        )
        placed = json.loads(capsys.readouterr().out)
        assert placed["workloads"][0]["node"] == "ec-n1"
        assert run(["workloads", "--output", "json", *api]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [w["id"] for w in listed["workloads"]] == ["api-1", "web-1"]
        assert run(["migrate", "web-1", "--to", "edge-a", *api]) == 0
        assert "web-1 -> web-2 on ea-n1 (edge-a)" in capsys.readouterr().out
        assert run(["migrate", "web-2", "--to", "best", *api]) == 0
        capsys.readouterr()
        assert run(["evict", "api-1", *api]) == 0
        assert "evicted api-1 from ec-n1" in capsys.readouterr().out
        assert run(["workloads", *api]) == 0
        assert "web-3" in capsys.readouterr().out
        assert set(bus.state.workloads) == {"web-3"}


@pytest.mark.parametrize(
    ("argv", "stderr"),
    [
        (
            ["place", "--service", "web", "--cpu-millis", "-1"],
            "edgectl place: INVALID_ARGUMENT: cpu_millis must be >= 0",
        ),
        (
            ["place", "--service", "web", "--near", "u1", "--near", "u3", "--max-latency-ms", "2"],
            "edgectl place: RESOURCE_EXHAUSTED: 0/6 nodes are available: no node satisfies max_latency_ms=2",
        ),
        (["evict", "web-9"], "edgectl evict: NOT_FOUND: no workload 'web-9'"),
        (["migrate", "web-9", "--to", "best"], "edgectl migrate: NOT_FOUND: no workload 'web-9'"),
    ],
)
def test_refusals_exit_non_zero_with_the_servers_reason(
    argv: list[str], stderr: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with served_api() as (_bus, server, _stub):
        assert run([*argv, "--api", server.address]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(stderr), captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_unreachable_api(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.integration.harness import free_port

    assert run(["workloads", "--api", f"127.0.0.1:{free_port()}", "--rpc-timeout", "1"]) == 1
    assert "cannot reach the placement API at 127.0.0.1:" in capsys.readouterr().err


def test_bad_api_address_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exited:
        run(["workloads", "--api", "nowhere"])
    assert exited.value.code == 2


def test_tls_options_make_channel_credentials(tmp_path) -> None:
    import argparse

    import grpc

    from placement.cli import channel_credentials

    for name in ("a.crt", "a.key", "ca.pem"):
        (tmp_path / name).write_text("x")
    none = argparse.Namespace(tls_cert=None, tls_key=None, tls_ca=None)
    assert channel_credentials(none) is None
    full = argparse.Namespace(tls_cert=tmp_path / "a.crt", tls_key=tmp_path / "a.key", tls_ca=tmp_path / "ca.pem")
    assert isinstance(channel_credentials(full), grpc.ChannelCredentials)
    with pytest.raises(ValueError, match="go together"):
        channel_credentials(argparse.Namespace(tls_cert=tmp_path / "a.crt", tls_key=None, tls_ca=None))
