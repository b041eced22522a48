"""The fabric file's authorization fields: authorization.default, allow_from, protocol, run and env are read
into the spec and the model, and every mistake is a problem at its FILE:LINE and path."""

from __future__ import annotations

import pytest
from netmodel_helpers import example_spec, example_text

from netmodel.desired import merge_desired, object_changes
from netmodel.fabric import build_state
from netmodel.fabric_file import FabricFileError, parse_fabric
from netmodel.fabric_policy import spiffe_id_problem
from netmodel.types import AllowRule, PolicyDefault, Protocol

DB_LINE = next(line for line in example_text().splitlines() if line.startswith("  - {name: db,"))
DB_LINE_NO = 57


def with_db(fields: str) -> str:
    """The example with the db service's allow_from/run replaced by ``fields`` (on its own line 57)."""
    text = example_text()
    assert DB_LINE in text
    db = f"  - {{name: db,  port: 5432, replicas: 1, {fields}, cpu_millis: 2000, memory_mib: 4096}}"
    return text.replace(DB_LINE, db)


def problems(text: str) -> list[str]:
    with pytest.raises(FabricFileError) as info:
        parse_fabric(text, "f.yaml")
    return str(info.value).splitlines()


def test_the_example_declares_who_calls_each_service() -> None:
    spec = example_spec()
    services = {s.name: s for s in spec.services}
    assert spec.default_policy is PolicyDefault.DENY
    assert services["web"].allow_from == (AllowRule(host="u1"), AllowRule(host="u2"), AllowRule(host="u3"))
    assert services["api"].allow_from == (AllowRule(service="web"),)
    assert services["db"].allow_from == (AllowRule(service="api"),)
    assert services["db"].run[:3] == ("{python}", "-m", "mininet_topos.app")
    assert build_state(spec).default_policy is PolicyDefault.DENY


def test_every_rule_form_is_read() -> None:
    spec = parse_fabric(
        with_db(
            "protocol: http, env: {DB_PORT: '{port}', MODE: 'a {{literal}}'}, run: ['{python}', 'db.py'], "
            "allow_from: [api, 'spiffe://example.org/svc/web/', 'spiffe://other.org/job/backup', "
            "{service: web, paths: [/status, /v1/], methods: [get, POST]}, {host: u1}, "
            "{spiffe_id: 'spiffe://example.org/host/u2', methods: [GET]}]"
        )
    )
    db = next(s for s in spec.services if s.name == "db")
    assert db.allow_from == (
        AllowRule(service="api"),
        AllowRule(spiffe_id="spiffe://example.org/svc/web/"),
        AllowRule(spiffe_id="spiffe://other.org/job/backup"),
        AllowRule(service="web", paths=("/status", "/v1/"), methods=("GET", "POST")),
        AllowRule(host="u1"),
        AllowRule(spiffe_id="spiffe://example.org/host/u2", methods=("GET",)),
    )
    assert db.protocol is Protocol.HTTP
    assert db.run == ("{python}", "db.py")
    assert db.env == (("DB_PORT", "{port}"), ("MODE", "a {{literal}}"))


def test_defaults_when_absent() -> None:
    spec = parse_fabric(with_db("protocol: tcp"))
    db = next(s for s in spec.services if s.name == "db")
    assert (db.allow_from, db.run, db.env, db.protocol) == ((), (), (), Protocol.TCP)
    no_section = example_text().replace("authorization: {default: deny}", "")
    assert parse_fabric(no_section).default_policy is PolicyDefault.DENY


def test_authorization_default_allow() -> None:
    text = example_text().replace("authorization: {default: deny}", "authorization: {default: allow}")
    spec = parse_fabric(text)
    assert spec.default_policy is PolicyDefault.ALLOW
    assert build_state(spec).default_policy is PolicyDefault.ALLOW


AUTH_LINE = example_text().splitlines().index("authorization: {default: deny}") + 1


@pytest.mark.parametrize(
    ("section", "path", "fragment"),
    [
        ("authorization: {default: maybe}", "authorization.default", "expected deny or allow, got 'maybe'"),
        ("authorization: {}", "authorization.default", "missing required key"),
        ("authorization: {default: deny, log: true}", "authorization.log", "unknown key (allowed: default)"),
        ("authorization: deny", "authorization", "expected a mapping with keys default"),
        ("authorization: {default: [deny]}", "authorization.default", "expected deny or allow, got ['deny']"),
    ],
)
def test_bad_authorization_section(section: str, path: str, fragment: str) -> None:
    (line,) = problems(example_text().replace("authorization: {default: deny}", section))
    assert line.startswith(f"f.yaml:{AUTH_LINE}: {path}: ") and fragment in line, line


def test_authorization_is_a_scalar_section_given_once_in_a_document() -> None:
    from netmodel.fabric_file import parse_desired

    with pytest.raises(FabricFileError, match=rf"b.yaml:1: authorization: given twice: first at a.yaml:{AUTH_LINE} "):
        parse_desired({"a.yaml": example_text(), "b.yaml": "authorization: {default: allow}\n"})


@pytest.mark.parametrize(
    ("fields", "path", "fragment"),
    [
        ("allow_from: [nope]", "services[2].allow_from[0]", "unknown service 'nope'"),
        ("allow_from: [u1]", "services[2].allow_from[0]", "unknown service 'u1' (a host? write {host: u1})"),
        ("allow_from: [{service: nope}]", "services[2].allow_from[0].service", "unknown service 'nope'"),
        ("allow_from: [{host: u9}]", "services[2].allow_from[0].host", "unknown host 'u9'"),
        ("allow_from: [api, {host: 7}]", "services[2].allow_from[1].host", "expected a host name, got 7"),
        ("allow_from: [1.5]", "services[2].allow_from[0]", "a spiffe:// id or a mapping, got 1.5"),
        ("allow_from: ['web frontend']", "services[2].allow_from[0]", "expected a service name or a spiffe:// id"),
        ("allow_from: [[api]]", "services[2].allow_from[0]", "expected a service name, a spiffe:// id or a mapping"),
        ("allow_from: api", "services[2].allow_from", "expected a list of callers"),
        ("allow_from: [{service: api, host: u1}]", "services[2].allow_from[0]", "exactly one of service, host"),
        (
            "allow_from: [{paths: [/x]}]",
            "services[2].allow_from[0]",
            "exactly one of service, host, spiffe_id (got none",
        ),
        ("allow_from: [{service: api, verbs: [GET]}]", "services[2].allow_from[0].verbs", "unknown key"),
        ("allow_from: [{service: api, paths: [status]}]", "services[2].allow_from[0].paths[0]", "starting with '/'"),
        ("allow_from: [{service: api, paths: []}]", "services[2].allow_from[0].paths", "non-empty list of paths"),
        ("allow_from: [{service: api, paths: /x}]", "services[2].allow_from[0].paths", "non-empty list of paths"),
        ("allow_from: [{service: api, paths: [7]}]", "services[2].allow_from[0].paths[0]", "expected a path, got 7"),
        ("allow_from: [{service: api, methods: [GET, 7]}]", "services[2].allow_from[0].methods[1]", "got 7"),
        (
            "allow_from: [{service: api, methods: [FETCH]}]",
            "services[2].allow_from[0].methods[0]",
            "unknown HTTP method",
        ),
        (
            "protocol: tcp, allow_from: [{service: api, paths: [/x]}]",
            "services[2].allow_from[0].paths",
            "paths apply to HTTP services only (this one is protocol: tcp)",
        ),
        (
            "protocol: tcp, allow_from: [{service: api, methods: [GET]}]",
            "services[2].allow_from[0].methods",
            "methods apply to HTTP services only",
        ),
        ("protocol: udp", "services[2].protocol", "expected http or tcp, got 'udp'"),
        ("protocol: [tcp]", "services[2].protocol", "expected http or tcp, got ['tcp']"),
        ("allow_from: ['spiffe:///svc/x']", "services[2].allow_from[0]", "the trust domain is empty"),
        ("allow_from: ['spiffe://Example.org/x']", "services[2].allow_from[0]", "trust domain 'Example.org'"),
        ("allow_from: ['spiffe://example.org']", "services[2].allow_from[0]", "names no workload"),
        ("allow_from: ['spiffe://example.org/a//b']", "services[2].allow_from[0]", "path segment '' is not allowed"),
        ("allow_from: ['spiffe://example.org/a/../b']", "services[2].allow_from[0]", "path segment '..'"),
        ("allow_from: ['spiffe://example.org/a b']", "services[2].allow_from[0]", "path segment 'a b'"),
        ("allow_from: [{spiffe_id: 'https://x/y'}]", "services[2].allow_from[0].spiffe_id", "expected a spiffe:// id"),
        ("run: []", "services[2].run", "expected a non-empty list: the command and its arguments"),
        ("run: ['', app.py]", "services[2].run[0]", "the command is empty"),
        ("run: 'python app.py'", "services[2].run", "expected a non-empty list"),
        ("run: ['{python}', 8080]", "services[2].run[1]", "expected a string, got 8080 (quote it)"),
        ("run: ['{python}', '--at={adress}']", "services[2].run[1]", "unknown placeholder {adress} (known: python,"),
        ("run: ['{port']", "services[2].run[0]", "unclosed '{' at character 1"),
        ("run: ['a}b']", "services[2].run[0]", "single '}' at character 2"),
        ("run: ['{port:>5}']", "services[2].run[0]", "unknown placeholder {port:>5}"),
        ("env: [A, B]", "services[2].env", "expected a mapping of variable names to strings"),
        ("env: {1X: a}", "services[2].env.1X", "not a variable name: '1X'"),
        ("env: {'A B': a}", 'services[2].env."A\\u0020B"', "not a variable name"),
        ("env: {PORT: 8080}", "services[2].env.PORT", "expected a string, got 8080 (quote it)"),
        ("env: {ADDR: '{lisen}'}", "services[2].env.ADDR", "unknown placeholder {lisen}"),
    ],
)
def test_every_mistake_is_named_at_its_line_and_path(fields: str, path: str, fragment: str) -> None:
    found = problems(with_db(fields))
    assert len(found) == 1, found
    assert found[0].startswith(f"f.yaml:{DB_LINE_NO}: {path}: "), found
    assert fragment in found[0], found


def test_a_reference_to_a_service_declared_later_is_fine_and_problems_are_all_reported() -> None:
    text = (
        example_text()
        .replace("allow_from: [web]", "allow_from: [db, nope1]")
        .replace("allow_from: [api]", "allow_from: [{host: nope2}]")
    )
    assert problems(text) == [
        "f.yaml:56: services[1].allow_from[1]: unknown service 'nope1'",
        "f.yaml:57: services[2].allow_from[0].host: unknown host 'nope2'",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("spiffe://example.org/svc/web/w/web-1", None),
        ("spiffe://example.org/svc/web/", None),
        ("spiffe://example.org/", None),
        ("spiffe://example.org", "names no workload"),
        ("spiffe://", "the trust domain is empty"),
        ("SPIFFE://example.org/x", "expected a spiffe:// id"),
        ("spiffe://example.org/./x", "path segment '.'"),
    ],
)
def test_spiffe_id_rules(text: str, problem: str | None) -> None:
    found = spiffe_id_problem(text)
    assert (found is None) if problem is None else (found is not None and problem in found), found


def test_desired_state_carries_the_default_and_a_document_changing_only_it_is_a_change() -> None:
    spec = example_spec()
    state = build_state(spec)
    allow = parse_fabric(example_text().replace("authorization: {default: deny}", "authorization: {default: allow}"))
    merged = merge_desired(state, allow)
    assert merged is not state and merged.default_policy is PolicyDefault.ALLOW
    assert merge_desired(state, spec) is state  # the same document: nothing changes
    changes = object_changes(spec, allow)
    assert changes and changes.changed == ("authorization/default",) and not changes.added
    assert object_changes(None, spec).changed == ()


def test_a_changed_allow_from_is_a_changed_service() -> None:
    spec = example_spec()
    other = parse_fabric(example_text().replace("allow_from: [web]", "allow_from: [web, db]"))
    assert object_changes(spec, other).changed == ("service/api",)
    merged = merge_desired(build_state(spec), other)
    assert merged.services["api"].allow_from == (AllowRule(service="web"), AllowRule(service="db"))


def test_an_item_after_a_bad_one_keeps_its_own_index() -> None:
    assert problems(with_db("allow_from: [{service: api, paths: [7, x], methods: [1, FETCH]}]")) == [
        "f.yaml:57: services[2].allow_from[0].methods[0]: expected a method, got 1",
        "f.yaml:57: services[2].allow_from[0].methods[1]: unknown HTTP method 'FETCH' (one of GET, HEAD, POST, PUT, "
        "DELETE, CONNECT, OPTIONS, TRACE, PATCH)",
        "f.yaml:57: services[2].allow_from[0].paths[0]: expected a path, got 7",
        "f.yaml:57: services[2].allow_from[0].paths[1]: expected a path starting with '/' (no spaces), got 'x'",
    ]
