"""GET /api/v1/routes/changes?since_generation=N: the deltas the route engine sent, rendered by
sdnctl.flow_text.delta_json; a bad parameter is a 400 naming it. And `run --drift-interval`."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from edgectl.cli import build_parser
from edgectl.controller import _since_generation
from edgectl.http_api import HttpApi
from edgectl.metrics import ControllerMetrics
from edgectl.views import changes_view, routes_view
from netmodel.fabric import build_state
from netmodel.ids import SwitchId
from sdnctl.engine import AppliedChange, SwitchStatus
from sdnctl.flow_text import delta_json
from sdnctl.flows import SwitchDelta, base_flows
from tests.unit.edgectl.fixtures import example_spec

STATE = build_state(example_spec())
M1 = next(s for s in STATE.topology.switches.values() if s.name == "m1")
DELTA = SwitchDelta(add_flows=tuple(sorted(base_flows())))
CHANGES = [
    AppliedChange(1, 3, M1.id, "plan", 100.0, DELTA, True),
    AppliedChange(2, 5, SwitchId(0xABC), "drift", 101.0, DELTA, False),
]


def get(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.fixture
def api():
    api = HttpApi("127.0.0.1", 0, lambda: STATE, ControllerMetrics(), {})
    api.add_query_route(
        "/api/v1/routes/changes",
        lambda state, query: changes_view([c for c in CHANGES if c.generation > _since_generation(query)], state),
    )
    api.start()
    yield "http://{}:{}/api/v1/routes/changes".format(*api.address)
    api.stop()


def test_changes_are_listed_with_switch_names_and_the_shared_rendering(api) -> None:
    status, body = get(api)
    assert status == 200 and isinstance(body, list) and len(body) == 2
    first = body[0]
    assert {k: first[k] for k in ("seq", "generation", "switch", "reason", "confirmed")} == {
        "seq": 1,
        "generation": 3,
        "switch": "m1",
        "reason": "plan",
        "confirmed": True,
    }
    assert first["mods"] == delta_json(DELTA)["mods"] and first["size"] == len(base_flows())
    assert body[1]["switch"] == "0000000000000abc"  # a switch the model does not name


def test_since_generation_filters_and_a_bad_value_is_a_400(api) -> None:
    assert [c["seq"] for c in get(api + "?since_generation=3")[1]] == [2]
    assert get(api + "?since_generation=5")[1] == []
    status, body = get(api + "?since_generation=three")
    assert status == 400 and "since_generation must be an integer" in body["error"]


def test_routes_view_shows_each_switch_drift_record() -> None:
    class Plan:
        generation = 3

        def routes(self) -> list:
            return []

    status = SwitchStatus()
    status.drift.heals = 2
    view = routes_view(Plan(), {M1.id: status}, STATE)
    assert view["switches"][0]["drift"] == {"last_check_at": None, "last_found": None, "heals": 2}


def test_run_takes_a_drift_interval_and_refuses_a_negative_one(capsys) -> None:
    parser = build_parser()
    base = ["run", "--config", "x.yaml"]
    assert parser.parse_args(base).drift_interval == 10.0
    assert parser.parse_args([*base, "--drift-interval", "0"]).drift_interval == 0.0
    assert parser.parse_args([*base, "--drift-interval", "1.5"]).drift_interval == 1.5
    for bad in ("-1", "soon", "nan"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--drift-interval", bad])
        assert "--drift-interval" in capsys.readouterr().err


def test_run_takes_a_static_openflow_role_and_refuses_a_malformed_one(capsys) -> None:
    from sdnctl.roles import Mastership

    parser = build_parser()
    base = ["run", "--config", "x.yaml"]
    assert parser.parse_args(base).static_role is None, "embedded mode: no role asked for"
    assert parser.parse_args([*base, "--static-role", "master:2"]).static_role == Mastership(True, 2)
    assert parser.parse_args([*base, "--static-role", "slave:18446744073709551615"]).static_role == Mastership(
        False, 2**64 - 1
    )
    for bad in ("master", "boss:1", "slave:x", "master:-1", "master:18446744073709551616"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--static-role", bad])
        assert "--static-role" in capsys.readouterr().err
    assert "--static-role" not in parser.format_help()
