"""The `edgectl` command line: validate and topo show, in-process and as the installed command."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgectl.cli import main
from tests.integration.harness import REPO

EXAMPLE = REPO / "examples" / "edge-cloud.yaml"
CORPUS = REPO / "tests" / "data" / "bad-fabrics"
EXPECTED = {
    line.split()[0]: (int(line.split()[1]), line.split()[2])
    for line in (CORPUS / "EXPECTED.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
}


def test_validate_accepts_the_example(capsys) -> None:
    assert main(["validate", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "ok (5 sites, 8 switches, 12 links, 3 hosts, 6 nodes, 3 services)" in out


def test_validate_warns_of_declared_calls_the_policy_refuses(tmp_path, capsys) -> None:
    fabric = tmp_path / "f.yaml"
    fabric.write_text(EXAMPLE.read_text().replace("allow_from: [api]", "allow_from: [web]"))
    assert main(["validate", str(fabric)]) == 0  # a warning, not an error: the document is valid
    err = capsys.readouterr().err
    assert err == (
        f"{fabric}: warning: api calls db, but db's allow_from does not admit api: "
        "with default deny these calls are refused\n"
    )
    fabric.write_text(fabric.read_text().replace("{default: deny}", "{default: allow}"))
    assert main(["validate", str(fabric)]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "authorization: default allow" in out


def test_topo_show_lists_who_may_call_each_service(capsys) -> None:
    assert main(["topo", "show", str(EXAMPLE)]) == 0
    table = capsys.readouterr().out
    assert "host:u1,host:u2,host:u3" in table and table.endswith("authorization: default deny\n")
    assert main(["topo", "show", str(EXAMPLE), "--format", "json"]) == 0
    view = json.loads(capsys.readouterr().out)
    web = next(s for s in view["services"] if s["name"] == "web")
    assert web["allow_from"][0] == {"who": "host:u1", "paths": [], "methods": []} and web["protocol"] == "http"
    assert view["authorization"] == {"default": "deny"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_validate_rejects_each_corrupted_file_with_file_line_field(name: str, capsys) -> None:
    path = CORPUS / name
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines, "no problem printed"
    pattern = re.compile(rf"^{re.escape(str(path))}:(\d+): (\S+): .+$")
    assert all(pattern.match(line) for line in lines), err
    line, field = EXPECTED[name]
    assert f"{path}:{line}: {field}: " in err, err
    assert "Traceback" not in err


def test_validate_of_a_missing_file_is_a_problem_not_a_traceback(tmp_path, capsys) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 1
    assert re.match(r"^.*nope\.yaml:1: <file>: cannot read: ", capsys.readouterr().err)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600))
def test_validate_never_prints_a_traceback_whatever_the_bytes(tmp_path, data: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    try:
        code = main(["validate", str(path)])
    except SystemExit as exc:  # pragma: no cover - argparse only
        code = int(exc.code or 0)
    assert code in (0, 1)


def test_the_installed_command_exits_1_on_a_bad_file_and_0_on_the_example() -> None:
    edgectl = shutil.which("edgectl", path=str(Path(sys.executable).parent))
    assert edgectl, "the console script is not installed in this venv"
    good = subprocess.run([edgectl, "validate", str(EXAMPLE)], capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr
    bad = subprocess.run(
        [edgectl, "validate", str(CORPUS / "binary-garbage.bin")], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert re.match(r"^\S+binary-garbage\.bin:1: <file>: ", bad.stderr)


def test_topo_show_table_json_and_graphml(capsys) -> None:
    assert main(["topo", "show", str(EXAMPLE)]) == 0
    table = capsys.readouterr().out
    assert "switches (8)" in table and "ea1  00000000000000a1  edge-a  edge" in table
    assert "links (12)" in table and "services (3)" in table
    assert main(["topo", "show", str(EXAMPLE), "--format", "json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert len(view["switches"]) == 8 and len(view["links"]) == 24 and view["fabric"] == "edge-cloud"
    assert main(["topo", "show", str(EXAMPLE), "--format", "graphml"]) == 0
    graph = nx.parse_graphml(capsys.readouterr().out)
    assert graph.nodes["ea1"]["kind"] == "switch" and graph.nodes["u1"]["kind"] == "host"
    assert graph.edges["ea1", "m1"]["latency_ms"] == 2.0


def test_topo_show_of_a_bad_file_exits_1(capsys) -> None:
    assert main(["topo", "show", str(CORPUS / "negative-latency.yaml")]) == 1
    assert "latency_ms" in capsys.readouterr().err


def example_as_directory(root: Path) -> Path:
    """The example over two files of a directory."""
    lines = EXAMPLE.read_text().splitlines(keepends=True)
    root.mkdir()
    (root / "fabric.yaml").write_text("".join(lines[:40]))  # name ... links
    (root / "compute.yml").write_text("".join(lines[40:]))  # hosts, nodes, services
    return root


def test_validate_prints_the_revision_and_accepts_a_directory(tmp_path, capsys) -> None:
    root = example_as_directory(tmp_path / "fabric.d")
    assert main(["validate", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    policy = "  authorization: default deny, 5 allow_from rules on 3 of 3 services\n"
    assert re.fullmatch(rf"{re.escape(str(EXAMPLE))}: ok \(.+ 3 services\), revision [0-9a-f]{{12}}\n{policy}", out), (
        out
    )
    assert main(["validate", str(root)]) == 0
    out = capsys.readouterr().out
    ok = f"{root}: ok (5 sites, 8 switches, 12 links, 3 hosts, 6 nodes, 3 services), 2 files, revision "
    first, second = out.splitlines(keepends=True)
    assert first.startswith(ok) and re.fullmatch(r"[0-9a-f]{12}", first[len(ok) :].strip()), out
    assert second == policy
    assert main(["validate", str(root)]) == 0
    assert capsys.readouterr().out == out  # same content, same revision


def test_validate_of_a_bad_directory_names_each_file(tmp_path, capsys) -> None:
    root = example_as_directory(tmp_path / "fabric.d")
    (root / "more.yaml").write_text("switches:\n  - {id: m1, dpid: 0x999, site: metro}\n")
    assert main(["validate", str(root)]) == 1
    err = capsys.readouterr().err
    assert (
        err
        == f"{root}/more.yaml:2: switches[0].id: duplicate id 'm1' (first at {root}/fabric.yaml:18: switches[3].id)\n"
    )


def test_topo_show_accepts_a_directory(tmp_path, capsys) -> None:
    root = example_as_directory(tmp_path / "fabric.d")
    assert main(["topo", "show", str(root), "--format", "json"]) == 0
    from_directory = capsys.readouterr().out
    assert main(["topo", "show", str(EXAMPLE), "--format", "json"]) == 0
    assert from_directory == capsys.readouterr().out


def test_routes_and_mesh_status_read_the_http_address_from_edgectl_http(monkeypatch, capsys) -> None:
    from edgectl.http_api import HttpApi
    from edgectl.metrics import ControllerMetrics
    from netmodel.fabric import build_state
    from tests.unit.edgectl.fixtures import example_spec

    state = build_state(example_spec())
    routes = {"generation": 7, "routes": [{"src": "u1", "dst": "u2", "latency_us": 3000, "path": ["ea1", "m1"]}]}
    clients = {"clients": [], "generation": 7}
    views = {"/api/v1/routes": lambda _s: routes, "/api/v1/xds/clients": lambda _s: clients}
    api = HttpApi("127.0.0.1", 0, lambda: state, ControllerMetrics(), views)
    api.start()
    try:
        monkeypatch.setenv("EDGECTL_HTTP", "{}:{}".format(*api.address))
        assert main(["routes"]) == 0
        assert "routes of generation 7 (1)" in capsys.readouterr().out
        assert main(["mesh", "status", "--output", "json"]) == 0
        assert json.loads(capsys.readouterr().out) == clients
    finally:
        api.stop()
    assert "EDGECTL_HTTP" in main_help() and "EDGECTL_API" in main_help()


def main_help() -> str:
    from edgectl.cli import build_parser

    return build_parser().format_help()


def test_paths_shows_users_request_times_and_where_each_call_goes(monkeypatch, capsys) -> None:
    from edgectl.http_api import HttpApi
    from edgectl.metrics import ControllerMetrics
    from edgectl.views import service_paths_view
    from netmodel.events import WorkloadPlaced
    from netmodel.fabric import build_state
    from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId
    from netmodel.types import Resources, Workload
    from tests.unit.edgectl.fixtures import example_spec

    state = build_state(example_spec())
    for wid, node in (("web-1", "ea-n1"), ("api-1", "m-n1"), ("db-1", "c-n1")):
        service = ServiceName(wid.split("-")[0])
        state = state.apply(
            WorkloadPlaced(Workload(WorkloadId(wid), service, SpiffeId(""), Resources(1, 1), NodeId(node)))
        )
    api = HttpApi("127.0.0.1", 0, lambda: state, ControllerMetrics(), {"/api/v1/service-paths": service_paths_view})
    api.start()
    try:
        monkeypatch.setenv("EDGECTL_HTTP", "{}:{}".format(*api.address))
        assert main(["paths"]) == 0
        out = capsys.readouterr().out
        assert "u1       -> web              28.0 ms" in out and "u2       -> web              38.0 ms" in out
        assert "db               m2            1.00  db-1 on c-n1 (22.0 ms)" in out
        assert main(["paths", "--output", "json"]) == 0
        view = json.loads(capsys.readouterr().out)
        assert [u["request_ms"] for u in view["users"]] == [28.0, 38.0]
    finally:
        api.stop()


def test_run_refuses_an_unknown_placement_profile_or_endpoint_order_naming_the_known_ones(capsys) -> None:
    assert main(["run", "--config", str(EXAMPLE), "--placement-profile", "fastest"]) == 1
    err = capsys.readouterr().err
    assert "unknown --placement-profile 'fastest'" in err
    assert all(name in err for name in ("default", "latency-first", "kube-default-like", "diktyo-like"))
    assert main(["run", "--config", str(EXAMPLE), "--endpoint-order", "random"]) == 1
    err = capsys.readouterr().err
    assert "unknown --endpoint-order 'random'" in err and "nearest, round-robin" in err


def configs_run_would_start(monkeypatch) -> list:
    """The RunConfig of each controller ``edgectl run`` starts from now on (none starts: it fails at once)."""
    import edgectl.controller

    seen = []

    class Stub:
        def __init__(self, config, spec, revision) -> None:
            seen.append(config)

        def reload_config_soon(self) -> None: ...

        def start(self) -> None:
            raise OSError("not in a unit test")

        def stop(self) -> None: ...

    monkeypatch.setattr(edgectl.controller, "Controller", Stub)
    monkeypatch.setattr("signal.signal", lambda *_args: None)
    return seen


def test_run_hands_the_placement_profile_and_endpoint_order_to_the_controller(monkeypatch) -> None:
    seen = configs_run_would_start(monkeypatch)
    assert main(["run", "--config", str(EXAMPLE)]) == 1
    args = ["--placement-profile", "diktyo-like", "--endpoint-order", "round-robin"]
    assert main(["run", "--config", str(EXAMPLE), *args]) == 1
    assert [(c.placement_profile, c.endpoint_order) for c in seen] == [
        ("default", "nearest"),
        ("diktyo-like", "round-robin"),
    ]


def test_apps_listen_by_default_apart_from_the_outbound_listeners_of_callers_beside_them(monkeypatch) -> None:
    """A caller's sidecar takes <outbound host>:PORT for each service it calls; an instance of that service
    on the same node must listen elsewhere, or whichever binds second fails."""
    from edgectl.config import RunConfig
    from meshctl.snapshot import MeshConfig

    seen = configs_run_would_start(monkeypatch)
    assert main(["run", "--config", str(EXAMPLE)]) == 1
    (config,) = seen
    assert config.mesh_app_host == "127.0.0.2" != MeshConfig().outbound_host
    assert RunConfig("fabric.yaml").mesh_app_host == config.mesh_app_host


def test_run_refuses_agent_api_options_it_cannot_honour(capsys) -> None:
    assert main(["run", "--config", str(EXAMPLE), "--agent-unix", "/tmp/agent.sock"]) == 1
    assert "--agent-unix needs --pki-dir" in capsys.readouterr().err
