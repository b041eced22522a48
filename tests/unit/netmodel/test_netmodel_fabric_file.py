"""netmodel.fabric_file: the example parses; corrupted files give located problems; fuzzing never crashes."""

from __future__ import annotations

import copy
import os
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netmodel_helpers import BAD_FABRICS, example_spec, example_text

from netmodel.fabric import FabricSpec, build_state
from netmodel.fabric_file import FabricFileError, Problem, parse_fabric
from netmodel.ids import ServiceName
from netmodel.types import CallWeight

# (file, line, path of the first problem, a fragment of its message, how many problems in all)
CORPUS = [
    ("alias-bomb.yaml", 1, "<file>", "too large", 1),
    ("bad-ip.yaml", 44, "hosts[2].ip", "expected an IPv4 address, got '10.0.3.300'", 1),
    ("bad-mac.yaml", 42, "hosts[0].mac", "expected a MAC address", 1),
    ("bad-name.yaml", 18, "switches[3].id", "expected a name", None),  # references to m1 dangle too
    ("bad-subnet.yaml", 5, "subnet", "expected an IPv4 network", 1),
    ("binary-garbage.bin", 1, "<file>", "not UTF-8", 1),
    (
        "call-not-a-name.yaml",
        56,
        "services[1].calls[0]",
        "expected a name or a weighted call {service, per_request, bytes_per_call}, got keys db",
        2,
    ),
    ("control-character.yaml", 20, "<file>", "unacceptable character #x0007", 1),
    ("dangling-host-switch.yaml", 43, "hosts[1].switch", "unknown switch 'eb9'", 1),
    ("dangling-link-end.yaml", 38, "links[10].b", "unknown switch 'c9'", 1),
    ("deeply-nested.yaml", 1, "<file>", "nested too deeply", 1),
    ("dpid-out-of-range.yaml", 22, "switches[7].dpid", "between 1 and 2^64-1", 1),
    ("dpid-without-base.yaml", 15, "switches[0].dpid", 'expected a datapath id: an integer, "0x..." hex', 1),
    ("duplicate-dpid.yaml", 23, "switches[8].dpid", "duplicate dpid '0000000000000202'", 1),
    ("duplicate-ip.yaml", 52, "nodes[5].ip", "duplicate ip '10.0.9.10'", 1),
    ("duplicate-mapping-key.yaml", 16, "switches[1].dpid", "duplicate key", 1),
    ("duplicate-site-id.yaml", 10, "sites[2].id", "duplicate site id 'edge-b'", None),
    ("duplicate-switch-id.yaml", 23, "switches[8].id", "duplicate id 'c2'", 1),
    ("duplicate-top-level-key.yaml", 58, "name", "duplicate key", 1),
    ("empty.yaml", 1, "<file>", "empty file", 1),
    ("host-port-used-by-link.yaml", 42, "hosts[0].port", "port 3 of ea1 is already used by links[0].a_port", 1),
    ("huge-integer-latency.yaml", 39, "links[11].latency_ms", "expected a finite number", 1),
    ("ip-outside-subnet.yaml", 51, "nodes[4].ip", "outside the fabric subnet", 1),
    ("key-with-space.yaml", 47, 'nodes[0]."cpu\\u0020millis"', "unknown key", 2),
    ("link-to-itself.yaml", 35, "links[8].b", "two different switches", 1),
    ("list-not-mapping.yaml", 2, "<top>", "expected a mapping", 1),
    ("missing-required-key.yaml", 37, "links[9].bandwidth_mbps", "missing required key", 1),
    ("multiple-documents.yaml", 58, "<file>", "expected a single document", 1),
    ("negative-latency.yaml", 33, "links[6].latency_ms", "must be >= 0, got -1", 1),
    ("non-numeric-latency.yaml", 27, "links[1].latency_ms", "expected a number, got 'fast'", 1),
    ("not-utf8.yaml", 25, "<file>", "not UTF-8", 1),
    ("not-yaml.yaml", 3, "<file>", "not valid YAML", 1),
    ("node-site-mismatch.yaml", 47, "nodes[0].site", "site 'edge-b' is not its switch ea1's site 'edge-a'", 1),
    ("nul-byte.yaml", 30, "<file>", "NUL", 1),
    ("only-comments.yaml", 1, "<file>", "empty file", 1),
    ("port-used-twice.yaml", 27, "links[1].a_port", "port 1 of ea1 is already used by links[0].a_port", 1),
    ("scalar-not-mapping.yaml", 2, "<top>", "expected a mapping", 1),
    ("section-not-a-list.yaml", 24, "links", "expected a list", 1),
    ("slo-without-near.yaml", 55, "services[0].max_latency_ms", "needs near", 1),
    ("subnet-exhausted.yaml", 9, "nodes[2].ip", "no free address", 1),
    ("subnet-host-bits.yaml", 5, "subnet", "10.20.1.0/16 has host bits set; did you mean 10.20.0.0/16?", 1),
    ("tab-indentation.yaml", 26, "<file>", "found character '\\t'", 1),
    ("text-then-binary.bin", 5, "<file>", "not UTF-8", 1),
    ("tier-not-a-string.yaml", 12, "sites[4].tier", "unknown tier ['cloud']", 1),
    ("tiny-slo.yaml", 55, "services[0].max_latency_ms", "must be >= 0.001, got 5e-324", 1),
    ("unclosed-flow-mapping.yaml", 16, "<file>", "while parsing a flow mapping", 1),
    ("unknown-host-in-near.yaml", 55, "services[0].near[1]", "unknown host 'u9'", 1),
    ("unknown-key.yaml", 47, "nodes[0].gpu", "unknown key", 1),
    ("unknown-service-in-allow-from.yaml", 56, "services[1].allow_from[0]", "unknown service 'website'", 1),
    ("unknown-service-in-calls.yaml", 56, "services[1].calls[0]", "unknown service 'database'", 1),
    ("unknown-tier.yaml", 11, "sites[3].tier", "unknown tier 'regional'", 1),
    ("unknown-top-level-key.yaml", 6, "version", "unknown top-level key", 1),
    ("zero-bandwidth.yaml", 34, "links[7].bandwidth_mbps", "must be greater than 0", 1),
]

# NETMODEL_FUZZ_EXAMPLES=5000 pytest ... for a deeper run; the default keeps the suite fast.
FUZZ_EXAMPLES = int(os.environ.get("NETMODEL_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def line_re(filename: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(filename)}:\d+: \S+: .+$")


def read_expected() -> dict[str, tuple[int, str]]:
    expected = {}
    for row in (BAD_FABRICS / "EXPECTED.txt").read_text(encoding="utf-8").splitlines():
        name, line, path = row.split(" ", 2)
        expected[name] = (int(line), path)
    return expected


def line_count(data: bytes | str) -> int:
    """The most lines any reading of ``data`` can find (every line-break convention counts)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            return data.count(b"\n") + 1
    return len(data.splitlines())


def check_outcome(data: bytes | str, filename: str = "fuzz.yaml") -> FabricSpec | FabricFileError:
    """parse_fabric returns a spec or raises FabricFileError with well-formed, located problems."""
    try:
        spec = parse_fabric(data, filename)
    except FabricFileError as exc:
        assert exc.problems, "an error must say what is wrong"
        assert exc.filename == filename
        limit = line_count(data) + 1
        for problem in exc.problems:
            assert isinstance(problem, Problem)
            assert 1 <= problem.line <= limit, (problem, limit)
            assert problem.message
        lines = str(exc).split("\n")
        assert len(lines) == len(exc.problems), "one problem per line: no newline inside a message"
        pattern = line_re(filename)
        for text in lines:
            assert pattern.match(text), text
        assert exc.problems == sorted(exc.problems)
        return exc
    assert isinstance(spec, FabricSpec)
    state = build_state(spec)  # anything that parses must build
    for link in state.topology.links:
        assert link.src in state.topology.switches and link.dst in state.topology.switches
    return spec


# -- the example -------------------------------------------------------------------------------------


def test_example_parses() -> None:
    spec = parse_fabric(example_text(), "edge-cloud.yaml")
    assert spec == example_spec()
    assert len(spec.switches) == 8 and len(spec.cables) == 12
    assert len(spec.hosts) == 3 and len(spec.nodes) == 6 and len(spec.services) == 3


def test_minimal_files_parse() -> None:
    assert parse_fabric("name: x\n").switches == ()
    assert parse_fabric("sites:\nswitches:\nlinks: []\n").cables == ()
    assert parse_fabric("name: x\n").name == "x"
    assert parse_fabric("subnet: 10.0.0.0/8\n").prefix_len == 8


# -- the corpus of corrupted files ---------------------------------------------------------------------


def test_corpus_table_matches_expected_txt() -> None:
    """EXPECTED.txt (shared with the CLI tests) and this table say the same, and list every file."""
    expected = read_expected()
    assert expected == {name: (line, path) for name, line, path, _, _ in CORPUS}
    on_disk = {p.name for p in BAD_FABRICS.iterdir()} - {"EXPECTED.txt", "README.md"}
    assert on_disk == set(expected)
    assert len(expected) >= 18


@pytest.mark.parametrize(("name", "line", "path", "fragment", "count"), CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_fabric(name: str, line: int, path: str, fragment: str, count: int | None) -> None:
    data = (BAD_FABRICS / name).read_bytes()
    error = check_outcome(data, name)  # well-formed lines, sane line numbers
    assert isinstance(error, FabricFileError)
    first = error.problems[0]
    assert (first.line, first.path) == (line, path), str(error)
    assert fragment in first.message, str(error)
    if count is not None:
        assert len(error.problems) == count, str(error)
    assert str(error).split("\n")[0].startswith(f"{name}:{line}: {path}: ")


@pytest.mark.parametrize("name", [c[0] for c in CORPUS if c[0].endswith(".yaml") and c[0] != "empty.yaml"])
def test_bad_fabric_first_line_comment_agrees(name: str) -> None:
    first = (BAD_FABRICS / name).read_bytes().split(b"\n", 1)[0].decode()
    line, path = read_expected()[name]
    assert first == f"# expect: {line} {path}"


def one_switch_with_dpid(written: str) -> str:
    return f"sites: [{{id: s, tier: edge, region: r}}]\nswitches:\n  - {{id: a, dpid: {written}, site: s}}\n"


@pytest.mark.parametrize(
    ("written", "dpid"),
    [
        ("201", 201),  # an integer is what it says
        ('"201"', 201),  # and so are its digits quoted: not hex
        ("0x201", 0x201),
        ('"0x201"', 0x201),
        ('"0X00ff"', 0xFF),
        ('"00:00:00:00:00:00:02:01"', 0x201),
        ("00:00:00:00:00:00:02:01", 0x201),  # unquoted: YAML 1.1 would read base 60
    ],
)
def test_dpid_forms_are_read_consistently(written: str, dpid: int) -> None:
    spec = parse_fabric(one_switch_with_dpid(written))
    assert spec.switches[0].dpid == dpid


@pytest.mark.parametrize("written", ['"a1"', '"0xg1"', '"1.5"', '""', '"0x"', '"00:zz"'])
def test_dpid_strings_that_do_not_say_their_base_are_refused(written: str) -> None:
    with pytest.raises(FabricFileError, match=r"switches\[0\]\.dpid: expected a datapath id"):
        parse_fabric(one_switch_with_dpid(written))


def test_a_bad_subnet_is_one_problem_and_addresses_are_not_checked_against_another() -> None:
    text = example_text().replace("10.0.", "10.20.").replace("subnet: 10.20.0.0/16", "subnet: 10.20.1.0/16")
    with pytest.raises(FabricFileError) as info:
        parse_fabric(text, "f.yaml")
    assert [p.path for p in info.value.problems] == ["subnet"]
    text = example_text().replace("subnet: 10.0.0.0/16", "subnet: ten")
    with pytest.raises(FabricFileError) as info:
        parse_fabric(text.replace(", ip: 10.0.9.11}", "}"), "f.yaml")  # nothing to assign c-n2's ip from
    assert [p.path for p in info.value.problems] == ["subnet"]


def test_slo_rules() -> None:
    with pytest.raises(FabricFileError, match="needs near"):
        parse_fabric(example_text().replace("near: [u1, u2]", "near: []"))
    spec = parse_fabric(example_text().replace("max_latency_ms: 5,", "max_latency_ms: 0.001,"))
    assert spec.services[0].max_latency_ms == 0.001  # 1 us: the smallest SLO the model can tell apart


def test_weighted_calls_and_the_request_slo() -> None:
    text = example_text().replace(
        "calls: [api]}", "calls: [{service: api, per_request: 2.5, bytes_per_call: 4096}], max_request_latency_ms: 40}"
    )
    web = parse_fabric(text).services[0]
    assert web.calls == ("api",) and web.max_request_latency_ms == 40
    assert web.call_weight(ServiceName("api")) == CallWeight(2.5, 4096)
    api = parse_fabric(text).services[1]
    assert api.call_weights == () and api.call_weight(ServiceName("db")) == CallWeight(1.0, 0)
    assert web != parse_fabric(example_text()).services[0]  # a weight is part of the declaration
    hash(web)


@pytest.mark.parametrize(
    ("calls", "path", "fragment"),
    [
        ("[api, api]", "services[0].calls[1]", "calls 'api' twice"),
        ("[{service: api, per_request: -1}]", "services[0].calls[0].per_request", "must be >= 0"),
        ("[{service: api, bytes_per_call: 1.5}]", "services[0].calls[0].bytes_per_call", "expected an integer"),
        ("[{service: api, rate: 1}]", "services[0].calls[0].rate", "unknown key"),
        ("[{service: 7}]", "services[0].calls[0].service", "expected a name"),
        ("[{service: nope}]", "services[0].calls[0]", "unknown service 'nope'"),
        ("[[api]]", "services[0].calls[0]", "expected a service name or a mapping"),
    ],
)
def test_bad_weighted_calls_name_the_field(calls: str, path: str, fragment: str) -> None:
    with pytest.raises(FabricFileError) as caught:
        parse_fabric(example_text().replace("calls: [api]}", f"calls: {calls}}}"))
    first = caught.value.problems[0]
    assert first.path == path and fragment in first.message and first.line == 55, str(caught.value)


def test_a_request_slo_needs_near_hosts() -> None:
    text = example_text().replace(
        "memory_mib: 512, calls: [db]}", "memory_mib: 512, calls: [db], max_request_latency_ms: 9}"
    )
    with pytest.raises(FabricFileError, match=r"services\[1\].max_request_latency_ms: needs near"):
        parse_fabric(text)


def test_every_problem_is_reported_not_only_the_first() -> None:
    text = example_text().replace("b: m2, latency_ms: 5,", "b: m2, latency_ms: fast,")
    text = text.replace("tier: metro", "tier: regional")
    text = text.replace("calls: [db]", "calls: [database]")
    with pytest.raises(FabricFileError) as info:
        parse_fabric(text, "f.yaml")
    assert [(p.line, p.path) for p in info.value.problems] == [
        (11, "sites[3].tier"),
        (27, "links[1].latency_ms"),
        (56, "services[1].calls[0]"),
    ]


def test_names_index_counts_every_item() -> None:
    text = example_text().replace("near: [u1, u2]", "near: [7, u9]")
    with pytest.raises(FabricFileError) as info:
        parse_fabric(text, "f.yaml")
    assert [p.path for p in info.value.problems] == ["services[0].near[0]", "services[0].near[1]"]


def test_top_level_name_path_has_no_leading_dot() -> None:
    with pytest.raises(FabricFileError) as info:
        parse_fabric("name: 5\n", "f.yaml")
    assert str(info.value) == "f.yaml:1: name: expected a name (a letter, then letters, digits, '-' or '_'), got 5"


def test_unknown_key_with_block_value_points_at_the_key() -> None:
    text = "name: x\nextras:\n  - a\n  - b\n"
    with pytest.raises(FabricFileError) as info:
        parse_fabric(text, "f.yaml")
    assert [(p.line, p.path) for p in info.value.problems] == [(2, "extras")]


def test_messages_show_yaml_values_not_internal_wrappers() -> None:
    with pytest.raises(FabricFileError) as info:
        parse_fabric("sites: [{id: a, tier: edge, region: r, zone: [1, 2]}]\n", "f.yaml")
    assert "Located" not in str(info.value)
    assert "got [1, 2]" in str(info.value)


@pytest.mark.parametrize(
    "key",
    ["", "a b", "tab\there", "new\nline", "dot.ted", "br[ack]et", 'quo"te', "\u3000wide", "ünï", "x" * 300],
)
def test_odd_keys_keep_the_problem_on_one_well_formed_line(key: str) -> None:
    text = yaml.safe_dump({"name": "x", key: 1}, allow_unicode=True)
    outcome = check_outcome(text, "f.yaml")
    assert isinstance(outcome, FabricFileError)


def test_whole_file_problems() -> None:
    assert isinstance(check_outcome(b""), FabricFileError)
    assert isinstance(check_outcome("   \n\n"), FabricFileError)
    assert isinstance(check_outcome("---\n...\n"), FabricFileError)
    assert isinstance(check_outcome(b"\xff"), FabricFileError)
    assert isinstance(check_outcome("a: &x [*x]\n"), FabricFileError)  # a recursive alias


def test_parse_is_repeatable_and_shares_no_state() -> None:
    """Parsing many files in a row gives the same answers (the YAML constructor is per call)."""
    first = parse_fabric(example_text())
    for name, *_ in CORPUS[:10]:
        with pytest.raises(FabricFileError):
            parse_fabric((BAD_FABRICS / name).read_bytes(), name)
    assert parse_fabric(example_text()) == first


# -- fuzzing -----------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    check_outcome(data)


@FUZZ
@given(st.text(max_size=2000))
def test_fuzz_arbitrary_text(text: str) -> None:
    check_outcome(text)


YAMLISH = st.text(
    alphabet=st.sampled_from(list("\n\n\n  \t-:,[]{}&*!|>'\"%@`#?.01239abcxyz_\r\x85\u2028\ufeff\x00\x07")),
    max_size=300,
)


@FUZZ
@given(YAMLISH)
def test_fuzz_yaml_punctuation(text: str) -> None:
    check_outcome(text)


LINES = example_text().splitlines(keepends=True)

mutation = st.one_of(
    st.tuples(st.just("delete"), st.integers(0, len(LINES) - 1)),
    st.tuples(st.just("duplicate"), st.integers(0, len(LINES) - 1)),
    st.tuples(st.just("replace"), st.integers(0, len(LINES) - 1), st.integers(0, len(LINES) - 1)),
    st.tuples(st.just("swap"), st.integers(0, len(example_text()) - 2)),
    st.tuples(st.just("insert"), st.integers(0, len(example_text())), st.text(min_size=1, max_size=5)),
    st.tuples(st.just("truncate"), st.integers(0, len(example_text()))),
)


def mutate(ops: list[tuple]) -> str:
    lines = list(LINES)
    for op in ops:
        kind = op[0]
        if kind in ("delete", "duplicate", "replace") and not lines:
            continue
        if kind == "delete":
            del lines[op[1] % len(lines)]
        elif kind == "duplicate":
            i = op[1] % len(lines)
            lines.insert(i, lines[i])
        elif kind == "replace":
            lines[op[1] % len(lines)] = LINES[op[2]]
        else:
            text = "".join(lines)
            pos = op[1] % (len(text) + 1)
            if kind == "swap" and pos + 1 < len(text):
                text = text[:pos] + text[pos + 1] + text[pos] + text[pos + 2 :]
            elif kind == "insert":
                text = text[:pos] + op[2] + text[pos:]
            elif kind == "truncate":
                text = text[:pos]
            lines = text.splitlines(keepends=True)
    return "".join(lines)


@FUZZ
@given(st.lists(mutation, min_size=1, max_size=4))
def test_fuzz_mutated_example(ops: list[tuple]) -> None:
    text = mutate(ops)
    check_outcome(text)
    check_outcome(text.encode("utf-8"))


# Random values under the fabric's own keys: reaches the schema checks with every type in every field.
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.sampled_from([10**400, -(10**400), 2**64, 0, 1, 0.5]),
    st.floats(),
    st.sampled_from(["edge", "metro", "ea1", "m1", "u1", "web", "db", "edge-a", "10.0.1.1", "02:00:00:00:00:01"]),
    st.sampled_from(["0xa1", "10.0.0.0/30", "0.0.0.0/0", "-1", "fast", "", "00:00:00:00:00:00:00:01"]),
    st.text(max_size=8),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)
FIELDS = [
    "id", "tier", "region", "zone", "dpid", "site", "a", "b", "latency_ms", "bandwidth_mbps", "a_port", "b_port",
    "switch", "ip", "mac", "port", "cpu_millis", "memory_mib", "name", "replicas", "max_latency_ms", "near", "calls",
    "allow_from", "protocol", "run", "env", "paths", "methods", "host", "service", "spiffe_id", "default",
]  # fmt: skip
entries = st.dictionaries(st.sampled_from(FIELDS), st.one_of(leaves, values), max_size=6)
documents = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.just("f"), leaves),
        "subnet": st.one_of(st.sampled_from(["10.0.0.0/16", "10.0.0.0/30", "0.0.0.0/0"]), leaves),
        **{key: st.one_of(st.lists(entries, max_size=4), values) for key in ("sites", "switches", "links")},
        **{key: st.one_of(st.lists(entries, max_size=4), values) for key in ("hosts", "nodes", "services")},
        "authorization": st.one_of(entries, values),
    },
)


@FUZZ
@given(documents)
def test_fuzz_fabric_shaped_documents(document: dict) -> None:
    check_outcome(yaml.safe_dump(document, allow_unicode=True))


# The example as data, with a few fields replaced, dropped or added: every check is reached with
# the rest of the file valid (so the spec is built whenever the new values happen to be valid).
EXAMPLE_DATA = yaml.safe_load(example_text())
FIELD_PATHS = sorted(
    [(key, None, None) for key in EXAMPLE_DATA]
    + [(key, None, "extra") for key in EXAMPLE_DATA if isinstance(EXAMPLE_DATA[key], list)]
    + [
        (section, i, field)
        for section, items in EXAMPLE_DATA.items()
        if isinstance(items, list)
        for i, item in enumerate(items)
        for field in [*item, *FIELDS]
    ],
    key=repr,
)
MISSING = object()
edits = st.lists(st.tuples(st.sampled_from(FIELD_PATHS), st.one_of(st.just(MISSING), leaves, values)), max_size=3)


def edited_example(changes: list[tuple[tuple, object]]) -> dict:
    data = copy.deepcopy(EXAMPLE_DATA)
    for (section, index, field), value in changes:
        if index is None and field is None:
            target, key = data, section
        elif index is None:  # a new item appended to the section
            if isinstance(data.get(section), list) and value is not MISSING:
                data[section].append(value)
            continue
        elif (
            isinstance(data.get(section), list)
            and index < len(data[section])
            and isinstance(data[section][index], dict)
        ):
            target, key = data[section][index], field
        else:
            continue
        if value is MISSING:
            target.pop(key, None)
        else:
            target[key] = value
    return data


@settings(max_examples=FUZZ_EXAMPLES * 2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits)
def test_fuzz_example_with_fields_replaced(changes: list[tuple[tuple, object]]) -> None:
    check_outcome(yaml.safe_dump(edited_example(changes), allow_unicode=True, sort_keys=False))


@FUZZ
@given(st.lists(st.integers(0, len(LINES) - 1), min_size=1, max_size=12))
def test_fuzz_example_with_sections_reordered(order: list[int]) -> None:
    """Any selection of the example's own lines, in any order."""
    check_outcome("".join(LINES[i] for i in order))


def test_str_and_bytes_input_agree_on_the_corpus() -> None:
    """Bytes and str input give the same first problem for every decodable corpus file."""
    for name, line, path, _, _ in CORPUS:
        if name == "deeply-nested.yaml":
            continue  # slow in PyYAML (~0.5 s) and already covered
        data = (BAD_FABRICS / name).read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        with pytest.raises(FabricFileError) as from_text:
            parse_fabric(text, name)
        assert (from_text.value.problems[0].line, from_text.value.problems[0].path) == (line, path)
