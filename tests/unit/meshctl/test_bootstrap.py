"""Bootstraps (Envoy and proxyless gRPC) and the `edgectl mesh` command functions."""

from __future__ import annotations

import copy
import io
import json
from contextlib import redirect_stderr, redirect_stdout

import pytest
import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401 - registers the Any type
from google.protobuf import json_format

from meshctl import bootstrap as bs


def as_proto(bootstrap: dict) -> bootstrap_pb2.Bootstrap:
    """Parse with Envoy's own schema: an unknown or misspelt field fails here, not in Envoy."""
    return json_format.ParseDict(copy.deepcopy(bootstrap), bootstrap_pb2.Bootstrap())


def endpoint_address(proto: bootstrap_pb2.Bootstrap):
    cluster = proto.static_resources.clusters[0]
    return cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address


@pytest.mark.parametrize("delta", [False, True])
def test_envoy_bootstrap_over_tcp(delta: bool) -> None:
    proto = as_proto(bs.render_bootstrap("web-1", "web", delta, "127.0.0.1:18000", 9901))
    assert (proto.node.id, proto.node.cluster) == ("web-1", "web")
    admin = proto.admin.address.socket_address
    assert (admin.address, admin.port_value) == ("127.0.0.1", 9901)
    ads = proto.dynamic_resources.ads_config
    assert ads.api_type == (ads.DELTA_GRPC if delta else ads.GRPC)
    assert ads.grpc_services[0].envoy_grpc.cluster_name == bs.XDS_CLUSTER
    assert proto.dynamic_resources.cds_config.HasField("ads") and proto.dynamic_resources.lds_config.HasField("ads")
    address = endpoint_address(proto).socket_address
    assert (address.address, address.port_value) == ("127.0.0.1", 18000)
    assert proto.static_resources.clusters[0].type == proto.static_resources.clusters[0].STATIC


def test_envoy_bootstrap_over_a_unix_socket_uses_a_pipe() -> None:
    proto = as_proto(bs.render_bootstrap("u1", "users", xds_address="unix:/run/edgectl/xds.sock"))
    assert endpoint_address(proto).pipe.path == "/run/edgectl/xds.sock"


def test_hostnames_resolve_and_ipv6_is_bracketed() -> None:
    named = as_proto(bs.render_bootstrap("u1", "users", xds_address="controller.local:18000"))
    assert named.static_resources.clusters[0].type == named.static_resources.clusters[0].STRICT_DNS
    v6 = as_proto(bs.render_bootstrap("u1", "users", xds_address="[::1]:18000"))
    assert endpoint_address(v6).socket_address.address == "::1"
    assert bs.parse_xds_address("[::1]:18000").grpc_target == "[::1]:18000"


@pytest.mark.parametrize("bad", ["18000", "host:", "host:0", "host:70000", "unix:relative.sock", ":18000"])
def test_bad_addresses_say_what_is_wrong(bad: str) -> None:
    with pytest.raises(ValueError, match=repr(bad)):
        bs.render_bootstrap("u1", "users", xds_address=bad)


def test_grpc_bootstrap() -> None:
    config = bs.render_grpc_bootstrap("u1", "unix:/run/x.sock")
    assert config["xds_servers"][0]["server_uri"] == "unix:/run/x.sock"
    assert config["node"]["id"] == "u1"


def run(main, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_main_bootstrap_prints_yaml_envoy_reads() -> None:
    code, out, _ = run(bs.main_bootstrap, ["--node-id", "web-1", "--service", "web", "--delta", "--admin-port", "9902"])
    assert code == 0
    proto = as_proto(yaml.safe_load(out))
    assert proto.admin.address.socket_address.port_value == 9902
    assert proto.dynamic_resources.ads_config.api_type == proto.dynamic_resources.ads_config.DELTA_GRPC
    assert "&id" not in out  # no YAML anchors: plain text a person can edit
    code, out, _ = run(bs.main_bootstrap, ["--node-id", "u1", "--service", "users", "--grpc"])
    assert code == 0 and json.loads(out)["node"]["id"] == "u1"
    code, _, err = run(bs.main_bootstrap, ["--node-id", "u1", "--service", "x", "--xds-address", "nope"])
    assert code == 2 and "HOST:PORT" in err


def test_a_sidecar_in_a_namespace_gets_xds_and_admin_over_unix_sockets() -> None:
    args = ["--node-id", "web-1", "--service", "web", "--xds-address", "unix:/run/e/xds.sock"]
    code, out, _ = run(bs.main_bootstrap, [*args, "--admin-socket", "/run/e/web-1.admin", "--format", "json"])
    assert code == 0
    printed = json.loads(out)
    # What the testbed's agent renders in-process is exactly what the command prints.
    assert printed == bs.render_bootstrap(
        "web-1", "web", xds_address="unix:/run/e/xds.sock", admin_socket="/run/e/web-1.admin"
    )
    proto = as_proto(printed)
    assert proto.admin.address.pipe.path == "/run/e/web-1.admin"
    code, _, err = run(bs.main_bootstrap, [*args, "--admin-socket", "relative.sock"])
    assert code == 2 and "absolute" in err


VIEW = {
    "connected": 2,
    "in_sync": 1,
    "nodes": {
        "u1": {
            "streams": 1,
            "mode": "sotw",
            "generation": 7,
            "in_sync": True,
            "problems": [],
            "types": {
                "cds": {"acked": "7-a", "acked_at": 10.0, "pending_nonce": None, "current": True, "last_nack": None},
                "eds": {"acked": "7-b", "acked_at": 10.0, "pending_nonce": "4", "current": False, "last_nack": None},
            },
        },
        "web-1": {
            "streams": 1,
            "mode": "delta",
            "generation": 7,
            "in_sync": False,
            "problems": ["mTLS is on but no certificate is issued for this node yet"],
            "types": {
                "cds": {
                    "acked": "5-c",
                    "acked_at": 10.0,
                    "pending_nonce": None,
                    "current": False,
                    "last_nack": {"version": "7-d", "error": "Invalid duration", "code": 13, "at": 20.0},
                },
            },
        },
        "db-1": {"streams": 0, "mode": None, "generation": 7, "in_sync": False, "problems": [], "types": {}},
    },
}


def test_status_table_shows_each_type_and_every_nack() -> None:
    text = bs.format_status(VIEW)
    lines = text.splitlines()
    assert lines[0] == "xDS clients: 2 connected, 1 in sync"
    row = {line.split()[0]: line.split() for line in lines[2:5]}
    assert row["u1"][1:] == ["sotw", "1", "7", "yes", "-", "ok", "wait", "-", "-"]
    assert row["web-1"][1:] == ["delta", "1", "7", "no", "-", "NACK", "-", "-", "-"]
    assert row["db-1"][1:] == ["-", "0", "7", "no", "-", "-", "-", "-", "-"]
    assert "web-1 cds rejected 7-d at 1970-01-01 00:00:20Z: Invalid duration" in text
    assert "web-1: mTLS is on but no certificate" in text


def test_main_status_reads_the_controller(monkeypatch) -> None:
    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *_):
            return False

    asked = []

    def urlopen(url, timeout):
        asked.append(url)
        return Response(json.dumps(VIEW).encode())

    monkeypatch.setattr(bs.urllib.request, "urlopen", urlopen)
    code, out, _ = run(bs.main_status, ["--http", "10.0.0.1:8080"])
    assert code == 0 and asked == ["http://10.0.0.1:8080/api/v1/xds/clients"] and "web-1" in out
    code, out, _ = run(bs.main_status, ["--output", "json"])
    assert code == 0 and json.loads(out) == VIEW

    def refused(url, timeout):
        raise OSError("connection refused")

    monkeypatch.setattr(bs.urllib.request, "urlopen", refused)
    code, _, err = run(bs.main_status, [])
    assert code == 1 and "cannot reach the controller at 127.0.0.1:8080" in err


def test_main_mesh_dispatches() -> None:
    code, out, _ = run(bs.main_mesh, ["bootstrap", "--node-id", "u1", "--service", "users"])
    assert code == 0 and "node:" in out
    code, _, err = run(bs.main_mesh, [])
    assert code == 2 and "bootstrap" in err and "status" in err
    code, out, _ = run(bs.main_mesh, ["--help"])
    assert code == 0 and "usage: edgectl mesh" in out


def test_bootstrap_with_mtls_to_the_control_plane() -> None:
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

    tls = bs.XdsClientTls("/p/u1.crt", "/p/u1.key", "/p/u1.bundle.pem", "spiffe://example.org/controller/edgectl")
    proto = as_proto(bs.render_bootstrap("u1", "users", tls=tls))
    socket = proto.static_resources.clusters[0].transport_socket
    assert socket.name == "envoy.transport_sockets.tls"
    context = tls_pb2.UpstreamTlsContext()
    socket.typed_config.Unpack(context)
    common = context.common_tls_context
    assert common.tls_certificates[0].certificate_chain.filename == "/p/u1.crt"
    assert common.tls_certificates[0].private_key.filename == "/p/u1.key"
    assert common.validation_context.trusted_ca.filename == "/p/u1.bundle.pem"
    assert common.validation_context.match_typed_subject_alt_names[0].matcher.exact.endswith("/controller/edgectl")
    assert list(common.alpn_protocols) == ["h2"]
    plain = as_proto(bs.render_bootstrap("u1", "users"))
    assert not plain.static_resources.clusters[0].HasField("transport_socket")


def test_main_bootstrap_tls_options_go_together() -> None:
    base = ["--node-id", "u1", "--service", "users"]
    files = ["--tls-cert", "a.crt", "--tls-key", "a.key", "--tls-ca", "ca.pem"]
    code, out, _ = run(bs.main_bootstrap, [*base, *files, "--format", "json"])
    assert code == 0 and "transport_socket" in json.loads(out)["static_resources"]["clusters"][0]
    code, _, err = run(bs.main_bootstrap, [*base, "--tls-cert", "a.crt"])
    assert code == 2 and "go together" in err
    code, _, err = run(bs.main_bootstrap, [*base, "--xds-server-id", "spiffe://x/controller/edgectl"])
    assert code == 2 and "needs --tls-cert" in err
    code, _, err = run(bs.main_bootstrap, [*base, *files, "--grpc"])
    assert code == 2 and "not supported" in err


def test_bootstrap_takes_the_xds_client_certificate_from_a_watched_sds_file() -> None:
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

    tls = bs.XdsClientTls("", "", "/p/u1.bundle.pem", sds_file="/p/u1.sds.json")
    proto = as_proto(bs.render_bootstrap("u1", "users", tls=tls))
    context = tls_pb2.UpstreamTlsContext()
    proto.static_resources.clusters[0].transport_socket.typed_config.Unpack(context)
    common = context.common_tls_context
    assert not common.tls_certificates
    (sds,) = common.tls_certificate_sds_secret_configs
    assert sds.name == bs.XDS_CLIENT_SECRET and sds.sds_config.path_config_source.path == "/p/u1.sds.json"
    assert common.validation_context.trusted_ca.filename == "/p/u1.bundle.pem"

    base = ["--node-id", "u1", "--service", "users"]
    code, out, _ = run(
        bs.main_bootstrap, [*base, "--tls-sds", "/p/u1.sds.json", "--tls-ca", "ca.pem", "--format", "json"]
    )
    assert code == 0 and "/p/u1.sds.json" in out
    code, _, err = run(bs.main_bootstrap, [*base, "--tls-sds", "u1.sds.json"])
    assert code == 2 and "needs --tls-ca" in err
    code, _, err = run(bs.main_bootstrap, [*base, "--tls-sds", "s.json", "--tls-cert", "a.crt", "--tls-ca", "ca.pem"])
    assert code == 2 and "one or the other" in err


def endpoint_addresses(proto: bootstrap_pb2.Bootstrap) -> list:
    cluster = proto.static_resources.clusters[0]
    assert len(cluster.load_assignment.endpoints) == 1  # one priority: no replica is preferred
    return [e.endpoint.address for e in cluster.load_assignment.endpoints[0].lb_endpoints]


def test_several_xds_addresses_are_all_in_the_xds_cluster() -> None:
    as_list = as_proto(bs.render_bootstrap("u1", "users", xds_address=["127.0.0.1:18000", "unix:/run/b.sock"]))
    as_text = as_proto(bs.render_bootstrap("u1", "users", xds_address="127.0.0.1:18000, unix:/run/b.sock"))
    assert as_list == as_text
    first, second = endpoint_addresses(as_list)
    assert (first.socket_address.address, first.socket_address.port_value) == ("127.0.0.1", 18000)
    assert second.pipe.path == "/run/b.sock"
    assert as_list.static_resources.clusters[0].type == as_list.static_resources.clusters[0].STATIC
    named = as_proto(bs.render_bootstrap("u1", "users", xds_address="a.local:18000,10.0.0.2:18000"))
    assert named.static_resources.clusters[0].type == named.static_resources.clusters[0].STRICT_DNS
    assert [a.socket_address.address for a in endpoint_addresses(named)] == ["a.local", "10.0.0.2"]


def test_one_xds_address_renders_as_before() -> None:
    assert bs.render_bootstrap("u1", "users", xds_address="127.0.0.1:18000") == bs.render_bootstrap(
        "u1", "users", xds_address=["127.0.0.1:18000"]
    )
    assert len(endpoint_addresses(as_proto(bs.render_bootstrap("u1", "users")))) == 1


@pytest.mark.parametrize(
    ("addresses", "message"),
    [
        ("127.0.0.1:1,127.0.0.1:1", "listed twice"),
        ("127.0.0.1:1,nope", "'nope'"),
        (" , ", "no xDS address"),
        ([], "no xDS address"),
        ("a.local:1,unix:/run/x.sock", "host name and a Unix socket"),
    ],
)
def test_bad_address_lists_say_what_is_wrong(addresses, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bs.render_bootstrap("u1", "users", xds_address=addresses)


def test_grpc_bootstrap_lists_every_xds_server() -> None:
    config = bs.render_grpc_bootstrap("u1", "unix:/run/a.sock,[::1]:18000")
    assert [s["server_uri"] for s in config["xds_servers"]] == ["unix:/run/a.sock", "[::1]:18000"]


def test_main_bootstrap_takes_the_flag_repeated_or_comma_separated() -> None:
    base = ["--node-id", "u1", "--service", "users", "--format", "json"]
    code, repeated, _ = run(bs.main_bootstrap, [*base, "--xds-address", "127.0.0.1:1", "--xds-address", "127.0.0.2:1"])
    assert code == 0
    code, joined, _ = run(bs.main_bootstrap, [*base, "--xds-address", "127.0.0.1:1,127.0.0.2:1"])
    assert code == 0 and json.loads(repeated) == json.loads(joined)
    assert len(endpoint_addresses(as_proto(json.loads(joined)))) == 2
    code, default, _ = run(bs.main_bootstrap, base)
    (only,) = endpoint_addresses(as_proto(json.loads(default)))
    assert code == 0 and only.socket_address.port_value == 18000
    code, grpc_out, _ = run(bs.main_bootstrap, [*base, "--grpc", "--xds-address", "127.0.0.1:1,127.0.0.2:1"])
    assert code == 0 and len(json.loads(grpc_out)["xds_servers"]) == 2
    code, _, err = run(bs.main_bootstrap, [*base, "--xds-address", "127.0.0.1:1", "--xds-address", "127.0.0.1:1"])
    assert code == 2 and "listed twice" in err
