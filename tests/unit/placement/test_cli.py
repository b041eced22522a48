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


def test_json_output_has_numbers_and_the_tables_enum_names(capsys: pytest.CaptureFixture[str]) -> None:
    with served_api() as (_bus, server, _stub):
        api = ["--api", server.address, "--output", "json"]
        assert (
            run(["place", "--service", "web", "--near", "u1", "--tier", "metro", "--anti-affinity", "db:site", *api])
            == 0
        )
        placed = json.loads(capsys.readouterr().out)
        (web,) = placed["workloads"]
        assert isinstance(placed["generation"], int) and placed["generation"] > 0
        assert isinstance(web["cpu_millis"], int) and isinstance(web["memory_mib"], int)
        assert web["tier"] == "metro" and web["node"] == "m-n1"
        assert web["constraints"]["tiers"] == ["metro"]
        assert web["constraints"]["anti_affinity"] == [{"service": "db", "scope": "site"}]
        assert web["latency_ms"] == {"u1": 3.0}
        assert run(["workloads", *api]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert listed["generation"] == placed["generation"] and listed["workloads"][0]["port"] == web["port"]
        assert run(["place", "--service", "api", *api]) == 0
        (other,) = json.loads(capsys.readouterr().out)["workloads"]
        assert run(["migrate", other["id"], "--to", "edge-a", *api]) == 0
        moved = json.loads(capsys.readouterr().out)
        assert isinstance(moved["placed_generation"], int) and isinstance(moved["removed_generation"], int)
        assert moved["workload"]["tier"] == "edge"


def test_the_api_address_defaults_to_edgectl_api(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with served_api() as (_bus, server, _stub):
        monkeypatch.setenv("EDGECTL_API", server.address)
        assert run(["workloads"]) == 0
        assert "workloads at generation" in capsys.readouterr().out
        monkeypatch.setenv("EDGECTL_API", "nowhere")
        with pytest.raises(SystemExit):
            run(["workloads"])
        assert "(from $EDGECTL_API)" in capsys.readouterr().err
        assert run(["workloads", "--api", server.address]) == 0  # the flag wins over the environment


def test_migrate_to_best_refuses_a_move_that_gains_nothing_unless_forced(capsys: pytest.CaptureFixture[str]) -> None:
    with served_api() as (bus, server, _stub):
        api = ["--api", server.address]
        assert run(["place", "--service", "web", "--near", "u1", "--max-latency-ms", "5", *api]) == 0
        assert "web-1" in capsys.readouterr().out and bus.state.workloads["web-1"].node == "m-n1"
        assert run(["migrate", "web-1", "--to", "best", *api]) == 1
        err = capsys.readouterr().err
        assert err.startswith("edgectl migrate: FAILED_PRECONDITION: web-1 is already on the best node m-n1"), err
        assert set(bus.state.workloads) == {"web-1"}
        assert run(["migrate", "web-1", "--to", "best", "--force", *api]) == 0
        assert "web-1 -> web-2" in capsys.readouterr().out


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A CA, the controller's certificate from it, an operator's and a stranger's (another CA) on disk."""
    import time

    from pki.ca import CertificateAuthority
    from pki.policy import controller_spiffe_id

    td = "edgectl.local"
    ca, _ = CertificateAuthority.create(td)
    stranger_ca, _ = CertificateAuthority.create(td)
    now = time.time()
    server = ca.issue_with_new_key(controller_spiffe_id(td), now, ip_addresses=("127.0.0.1",), dns_names=("localhost",))
    directory = tmp_path_factory.mktemp("tls")
    files: dict[str, object] = {"ca": ca, "server": server}
    for name, issuer in (("operator", ca), ("stranger", stranger_ca)):
        svid = issuer.issue_with_new_key(f"spiffe://{td}/operator/{name}", now)
        (directory / f"{name}.crt").write_text(svid.cert_chain_pem)
        (directory / f"{name}.key").write_text(svid.private_key_pem)
        files[name] = ["--tls-cert", str(directory / f"{name}.crt"), "--tls-key", str(directory / f"{name}.key")]
    (directory / "bundle.pem").write_text(ca.bundle_pem)
    files["bundle"] = ["--tls-ca", str(directory / "bundle.pem")]
    return files


def test_a_client_without_a_certificate_is_told_which_flags_it_needs(
    tls_files: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    from placement.grpc_api import ApiTls

    server_svid: object = tls_files["server"]
    tls = ApiTls(server_svid.cert_chain_pem, server_svid.private_key_pem, tls_files["ca"].bundle_pem)  # type: ignore[attr-defined]
    with served_api(tls=tls, failover=False) as (_bus, server, _stub):
        api = ["--api", server.address, "--rpc-timeout", "5"]
        assert run(["workloads", *api]) == 1
        err = capsys.readouterr().err
        assert "cannot reach the placement API" in err and "Socket closed" in err
        assert "hint: a controller run with --pki-dir accepts only clients with a certificate from its CA" in err
        assert "--tls-cert, --tls-key and --tls-ca" in err
        assert run(["workloads", *api, *tls_files["stranger"], *tls_files["bundle"]]) == 1  # type: ignore[misc]
        assert (
            "hint: the TLS handshake failed: --tls-cert/--tls-key must be a certificate from" in capsys.readouterr().err
        )
        assert run(["workloads", *api, *tls_files["operator"], *tls_files["bundle"]]) == 0  # type: ignore[misc]
        assert "workloads at generation" in capsys.readouterr().out


def test_no_certificate_hint_when_nothing_listens() -> None:
    from placement.cli import tls_hint

    refused = "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:9: Connection refused"
    assert tls_hint(refused, tls_given=False) is None
    assert tls_hint("last error: UNAVAILABLE: ipv4:127.0.0.1:9: Socket closed", tls_given=False)
    assert tls_hint("Tls handshake failed (TSI_PROTOCOL_FAILURE): WRONG_VERSION_NUMBER", tls_given=True)


# -- several replicas: --api A,B,C ----------------------------------------------------------------------


def test_the_next_address_is_tried_while_one_is_unavailable(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.integration.harness import free_port

    dead = f"127.0.0.1:{free_port()}"
    with served_api() as (bus, server, _stub):
        assert run(["place", "--service", "web", "--api", f"{dead},{server.address}"]) == 0
        captured = capsys.readouterr()
        assert "web-1" in captured.out and f"answered by {server.address}" in captured.err
        assert set(bus.state.workloads) == {"web-1"}
        assert run(["workloads", "--api", f"{dead}, {server.address}"]) == 0  # reads too
        assert "web-1" in capsys.readouterr().out
        assert run(["evict", "web-9", "--api", f"{dead},{server.address}"]) == 1
        assert capsys.readouterr().err.endswith(f"NOT_FOUND: no workload 'web-9' (answered by {server.address})\n")


def test_when_every_address_is_unavailable_each_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.integration.harness import free_port

    first, second = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    assert run(["workloads", "--api", f"{first},{second}", "--rpc-timeout", "5"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach the placement API at {first}: " in err and f"; at {second}: " in err


def test_a_follower_whose_leader_is_gone_sends_the_client_to_the_next_replica(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from placement.grpc_api import start_placement_api
    from tests.integration.harness import free_port

    with served_api() as (bus, leader, _stub):
        follower = start_placement_api(bus, "127.0.0.1", 0, failover=False)
        try:
            follower.forward_writes_to(f"127.0.0.1:{free_port()}")  # the old leader, gone
            assert run(["place", "--service", "web", "--api", f"{follower.address},{leader.address}"]) == 0
            err = capsys.readouterr().err
            assert f"answered by {leader.address}" in err
            assert set(bus.state.workloads) == {"web-1"}  # placed once
        finally:
            follower.stop()


def test_an_unavailable_the_api_decided_is_not_retried_elsewhere(capsys: pytest.CaptureFixture[str]) -> None:
    """The change is applied but not saved: asking another replica would place a second instance."""
    with (
        served_api(durable=lambda _generation: "disk full") as (bus, first, _stub),
        served_api(bus.state) as (other_bus, second, _other_stub),
    ):
        assert run(["place", "--service", "db", "--api", f"{first.address},{second.address}"]) == 1
        err = capsys.readouterr().err
        assert "UNAVAILABLE: the placement of db-1 is applied but not saved: disk full" in err
        assert f"answered by {first.address}" in err
        assert set(bus.state.workloads) == {"db-1"} and not other_bus.state.workloads


def test_api_lists_are_checked_address_by_address() -> None:
    with pytest.raises(SystemExit) as exited:
        run(["workloads", "--api", "127.0.0.1:1,nowhere"])
    assert exited.value.code == 2
    with pytest.raises(SystemExit):
        run(["workloads", "--api", " , "])


def test_an_unavailable_after_the_call_reached_a_server_is_not_retried_elsewhere() -> None:
    """A connection that broke mid-call (a leader killed while deciding) may have made the change."""
    from placement.cli import _decided

    class Broken:
        def __init__(self, details: str, trailing: tuple[tuple[str, str], ...] = ()) -> None:
            self._details, self._trailing = details, trailing

        def details(self) -> str:
            return self._details

        def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
            return self._trailing

    assert _decided(Broken("Socket closed"))
    assert _decided(Broken("recvmsg:Connection reset by peer"))
    assert not _decided(Broken("failed to connect to all addresses; last error: Connection refused"))
    assert _decided(Broken("the leader went away", (("edgectl-placement-decided", "maybe"),)))
    assert not _decided(Broken("the leader is unreachable; retry", (("edgectl-placement-decided", "forwarded"),)))
