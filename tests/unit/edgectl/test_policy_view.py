"""The policy made visible: /api/v1/policy's view, /api/v1/policy/check's decision per layer (the sidecar's
RBAC on the SPIFFE id, the switches' ACL on the address), the HTTP routes, and `edgectl policy`."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace

import pytest

from edgectl.cli import main
from edgectl.http_api import HttpApi
from edgectl.metrics import ControllerMetrics
from edgectl.policy_api import add_policy_routes
from edgectl.policy_denials import DenialLog
from edgectl.policy_view import UnknownName, as_text, check, check_text, policy_view, refused_calls
from netmodel import events as ev
from netmodel.fabric import build_state
from netmodel.fabric_file import parse_fabric
from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import PolicyDefault, Resources, Workload
from tests.unit.edgectl.fixtures import EXAMPLE, example_spec

TD = "example.org"


def placed(state: FabricState, wid: str, service: str, node: str, port: int) -> FabricState:
    workload = Workload(
        WorkloadId(wid),
        ServiceName(service),
        SpiffeId(f"spiffe://{TD}/svc/{service}/w/{wid}"),
        Resources(100, 64),
        NodeId(node),
        port,
    )
    return state.apply(ev.WorkloadPlaced(workload))


def example_state() -> FabricState:
    """web-1 at edge-a (10.0.1.10), api-1 in the metro (10.0.4.10), db-1 in the cloud (10.0.9.10)."""
    state = build_state(example_spec())
    state = placed(state, "web-1", "web", "ea-n1", 8080)
    state = placed(state, "api-1", "api", "m-n1", 9090)
    return placed(state, "db-1", "db", "c-n1", 5432)


STATE = example_state()


def test_the_view_lists_each_services_rules_resolved_and_its_instances() -> None:
    log = DenialLog()
    log.record(layer="envoy", caller=f"spiffe://{TD}/svc/web/w/web-1", service="db", at=5.0, detail="GET /")
    view = policy_view(STATE, TD, [d.as_json() for d in log.recent()], log.totals())
    assert (view["default"], view["trust_domain"]) == ("deny", TD)
    services = {s["service"]: s for s in view["services"]}
    assert list(services) == ["api", "db", "web"]
    assert services["api"]["rules"] == [
        {
            "index": 0,
            "who": "service:web",
            "paths": [],
            "methods": [],
            "principal": f"spiffe://{TD}/svc/web/",
            "prefix": True,
            "source_ips": ["10.0.1.10"],
        }
    ]
    assert [r["principal"] for r in services["web"]["rules"]] == [f"spiffe://{TD}/host/u{n}" for n in (1, 2, 3)]
    assert services["web"]["rules"][2]["source_ips"] == ["10.0.3.1"]
    assert services["db"]["instances"] == [{"id": "db-1", "node": "c-n1", "address": "10.0.9.10", "port": 5432}]
    assert services["db"]["protocol"] == "http"
    assert view["denied_recent"][0]["caller_label"] == "service:web"
    assert view["denied_totals"] == [{"caller": "service:web", "service": "db", "layer": "envoy", "count": 1}]
    json.dumps(view)  # plain JSON


def test_a_declared_caller_is_allowed_by_both_layers() -> None:
    result = check(STATE, TD, caller="web", callee="api")
    assert result["allowed"] and result["reason"] == "allowed by allow_from[0] (service:web)"
    assert result["layers"]["envoy"]["principal"] == f"spiffe://{TD}/svc/web/w/web-1"
    assert result["layers"]["network"] == {
        "allowed": True,
        "reason": "10.0.1.10 may reach api (allowed addresses: 10.0.1.10)",
        "addresses": ["10.0.1.10"],
        "allowed_addresses": ["10.0.1.10"],
    }


def test_an_undeclared_caller_is_denied_by_both_and_each_says_why() -> None:
    result = check(STATE, TD, caller="host:u1", callee="db")
    assert not result["allowed"]
    envoy, network = result["layers"]["envoy"], result["layers"]["network"]
    assert not envoy["allowed"] and "no allow_from rule of db admits spiffe://example.org/host/u1" in envoy["reason"]
    assert network == {
        "allowed": False,
        "reason": "10.0.1.1 is not among the addresses allowed to reach db (10.0.4.10)",
        "addresses": ["10.0.1.1"],
        "allowed_addresses": ["10.0.4.10"],
    }
    assert result["reason"] == envoy["reason"]  # the first layer that denies


def test_the_layers_can_disagree_a_node_address_is_shared_by_its_instances() -> None:
    # api-2 runs on web-1's node: the switches let that node's traffic reach db, the sidecar still refuses web.
    state = placed(STATE, "api-2", "api", "ea-n1", 9090)
    result = check(state, TD, caller="web", callee="db")
    assert result["layers"]["network"]["allowed"] and not result["layers"]["envoy"]["allowed"]
    assert not result["allowed"]


def test_paths_and_methods_of_an_http_rule() -> None:
    spec = parse_fabric(
        EXAMPLE.read_text().replace("allow_from: [api]", "allow_from: [{service: api, paths: [/q], methods: [GET]}]")
    )
    state = placed(placed(build_state(spec), "api-1", "api", "m-n1", 9090), "db-1", "db", "c-n1", 5432)
    assert check(state, TD, caller="api", callee="db", path="/q/1", method="get")["allowed"]
    denied = check(state, TD, caller="api", callee="db", path="/admin", method="GET")
    assert not denied["allowed"] and "admits it only for paths /q and methods GET" in denied["reason"]
    assert denied["layers"]["network"]["allowed"]  # the switches cannot see paths


def test_a_spiffe_id_caller_a_service_not_placed_and_default_allow() -> None:
    by_id = check(STATE, TD, caller=f"spiffe://{TD}/svc/api/w/api-1", callee="db")
    assert by_id["allowed"] and by_id["caller"] == f"spiffe://{TD}/svc/api/w/api-1"
    foreign = check(STATE, TD, caller="spiffe://other.org/svc/api/w/x", callee="db")
    assert not foreign["allowed"]
    assert (
        foreign["layers"]["network"]["reason"]
        == "no workload or host of this fabric holds spiffe://other.org/svc/api/w/x"
    )
    unplaced = check(build_state(example_spec()), TD, caller="web", callee="api")
    assert unplaced["layers"]["envoy"]["allowed"]  # the identity is admitted (spiffe://.../svc/web/w/any)
    assert unplaced["layers"]["network"]["reason"] == "no instance of web is placed: its traffic comes from nowhere yet"
    open_fabric = replace(STATE, default_policy=PolicyDefault.ALLOW)
    result = check(open_fabric, TD, caller="u2", callee="db")
    assert result["allowed"] and result["layers"]["network"]["reason"].startswith("the fabric's default is allow")


@pytest.mark.parametrize(
    ("caller", "callee", "message"),
    [
        ("web", "nope", "unknown service 'nope' (services: api, db, web)"),
        ("nobody", "db", "unknown caller 'nobody': not a service, a host or a spiffe:// id (known: api, db, web, u1"),
        ("node:ea-n1", "db", "unknown caller 'node:ea-n1'"),
        ("host:web", "db", "unknown caller 'host:web'"),
    ],
)
def test_unknown_names_are_refused_with_what_is_known(caller: str, callee: str, message: str) -> None:
    with pytest.raises(UnknownName) as info:
        check(STATE, TD, caller=caller, callee=callee)
    assert message in str(info.value)


def test_declared_calls_the_policy_refuses() -> None:
    spec = example_spec()
    assert refused_calls(spec.services, PolicyDefault.DENY) == []
    open_db = [replace(s, allow_from=()) if s.name == "db" else s for s in spec.services]
    assert refused_calls(open_db, PolicyDefault.DENY) == [
        "api calls db, but db's allow_from does not admit api: with default deny these calls are refused"
    ]
    assert refused_calls(open_db, PolicyDefault.ALLOW) == []


def test_text_renderings() -> None:
    log = DenialLog()
    log.record(layer="network", caller="10.0.3.1", service="db", at=7.0, count=3, detail="c1 port 4")
    text = as_text(policy_view(STATE, TD, [d.as_json() for d in log.recent()], log.totals()))
    assert "authorization: default deny (trust domain example.org)" in text
    assert " 0  service:api -> 10.0.4.10" in text
    assert "network 10.0.3.1 -> db x3 c1 port 4" in text
    result = check_text(check(STATE, TD, caller="u1", callee="db", method="GET", path="/"))
    assert result.startswith("DENIED: host:u1 -> db (GET /): denied: no allow_from rule of db admits")
    assert "\n  network  deny  10.0.1.1 is not among the addresses allowed to reach db (10.0.4.10)\n" in result


# -- over HTTP, and `edgectl policy` ---------------------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[str]:
    denials = DenialLog()
    denials.record(layer="envoy", caller=f"spiffe://{TD}/host/u2", service="db", at=1.0, detail="GET /")
    http = HttpApi("127.0.0.1", 0, lambda: STATE, ControllerMetrics(), {})
    add_policy_routes(http, denials, TD)
    http.start()
    try:
        yield "{}:{}".format(*http.address)
    finally:
        http.stop()


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_http_policy_and_check(api: str) -> None:
    status, view = get(f"http://{api}/api/v1/policy")
    assert status == 200 and view["default"] == "deny" and len(view["services"]) == 3
    assert view["denied_totals"] == [{"caller": "host:u2", "service": "db", "layer": "envoy", "count": 1}]
    status, result = get(f"http://{api}/api/v1/policy/check?from=web&to=api&path=/x&method=GET")
    assert status == 200 and result["allowed"] and result["path"] == "/x"
    status, result = get(f"http://{api}/api/v1/policy/check?from=u1&to=db")
    assert status == 200 and not result["allowed"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=web&to=nope", "unknown service 'nope'"),
        ("from=ghost&to=db", "unknown caller 'ghost'"),
        ("to=db", "give from: ?from=CALLER&to=SERVICE"),
        ("", "give from and to"),
    ],
)
def test_http_check_refuses_unknown_names_with_400(api: str, query: str, message: str) -> None:
    status, body = get(f"http://{api}/api/v1/policy/check?{query}")
    assert status == 400 and message in body["error"], body


def test_cli_policy_check_exit_codes_and_show(api: str, capsys) -> None:
    assert main(["policy", "check", "--from", "web", "--to", "api", "--http", api]) == 0
    assert capsys.readouterr().out.startswith("ALLOWED: service:web -> api: allowed by allow_from[0] (service:web)")
    assert main(["policy", "check", "--from", "u1", "--to", "db", "--http", api]) == 1
    out = capsys.readouterr().out
    assert out.startswith("DENIED: host:u1 -> db") and "  envoy    deny" in out and "  network  deny" in out
    assert main(["policy", "check", "--from", "ghost", "--to", "db", "--http", api]) == 2
    assert "edgectl policy check: unknown caller 'ghost'" in capsys.readouterr().err
    assert main(["policy", "check", "--from", "web", "--to", "api", "--http", api, "--output", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["layers"]["envoy"]["rule"] == 0
    assert main(["policy", "show", "--http", api]) == 0
    shown = capsys.readouterr().out
    assert "authorization: default deny" in shown and "recent denials (1)" in shown


def test_cli_policy_without_a_controller_is_an_error(capsys) -> None:
    assert main(["policy", "show", "--http", "127.0.0.1:9"]) == 2
    assert "cannot reach the controller at 127.0.0.1:9" in capsys.readouterr().err
