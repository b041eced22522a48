"""netmodel.fabric_file.parse_desired: a desired-state document of several files, and its revision."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netmodel_helpers import BAD_FABRICS, example_spec, example_text

from netmodel.fabric_file import (
    MAX_DOCUMENT_BYTES,
    MAX_DOCUMENT_TOTAL_BYTES,
    SECTIONS,
    TOP_LEVEL_KEYS,
    FabricFileError,
    Problem,
    document_revision,
    parse_desired,
    parse_fabric,
)

LINES = example_text().splitlines(keepends=True)


def example_lines(first: int, last: int) -> str:
    """Lines ``first``..``last`` (1-based, inclusive) of examples/edge-cloud.yaml."""
    return "".join(LINES[first - 1 : last])


def split_example() -> dict[str, bytes]:
    """The example over three files, with the switches list itself split between two of them."""
    return {
        "10-core.yaml": example_lines(1, 18).encode(),  # name, subnet, sites, switches ea1..m1
        "20-links.yaml": ("switches:\n" + example_lines(19, 44)).encode(),  # m2..c2, links, hosts
        "30-compute.yaml": example_lines(46, 57).encode(),  # nodes, services
    }


def problems_of(files: dict[str, bytes], document: str | None = None) -> list[str]:
    with pytest.raises(FabricFileError) as info:
        parse_desired(files, document)
    return str(info.value).split("\n")


def test_the_example_split_over_three_files_is_the_same_spec() -> None:
    assert parse_desired(split_example(), "fabric.d") == example_spec()


def test_files_are_concatenated_in_file_name_order_not_mapping_order() -> None:
    files = split_example()
    assert parse_desired(dict(reversed(list(files.items())))) == example_spec()


def test_a_single_file_document_is_the_fabric_file() -> None:
    data = example_text().encode()
    assert parse_desired({"f.yaml": data}) == parse_fabric(data, "f.yaml")
    bad = data.replace(b"b: m2, latency_ms: 5,", b"b: m2, latency_ms: -5,")
    with pytest.raises(FabricFileError) as as_file:
        parse_fabric(bad, "f.yaml")
    with pytest.raises(FabricFileError) as as_document:
        parse_desired({"f.yaml": bad})
    assert str(as_document.value) == str(as_file.value) == "f.yaml:27: links[1].latency_ms: must be >= 0, got -5"
    assert as_document.value.filename == "f.yaml"


def test_each_problem_names_its_file_its_line_and_its_index_within_that_file() -> None:
    files = split_example()
    files["20-links.yaml"] = files["20-links.yaml"].replace(b"latency_ms: 6,", b"latency_ms: -6,")
    files["30-compute.yaml"] = files["30-compute.yaml"].replace(b"switch: m2,", b"switch: m9,")
    assert problems_of(files, "fabric.d") == [
        # links[3]: the 4th link, on this file's 12th line ("switches:", then the example's lines from 19)
        "20-links.yaml:12: links[3].latency_ms: must be >= 0, got -6",
        "30-compute.yaml:5: nodes[3].switch: unknown switch 'm9'",
    ]


def test_problems_are_sorted_by_file_then_line() -> None:
    problems = [Problem(9, "x", "m", "b.yaml"), Problem(3, "x", "m", "b.yaml"), Problem(20, "x", "m", "a.yaml")]
    assert [(p.file, p.line) for p in sorted(problems)] == [("a.yaml", 20), ("b.yaml", 3), ("b.yaml", 9)]
    assert Problem(1, "x", "m") < Problem(2, "a", "a")  # without files: by line, as ever


def test_a_duplicate_id_across_files_names_both_places() -> None:
    files = split_example()
    files["30-compute.yaml"] += b"hosts:\n  - {id: m1, switch: m2, ip: 10.0.7.1}\n"
    assert problems_of(files) == [
        "30-compute.yaml:14: hosts[0].id: duplicate id 'm1' (first at 10-core.yaml:18: switches[3].id)"
    ]


def test_duplicates_within_one_file_read_as_they_always_did() -> None:
    files = split_example()
    files["30-compute.yaml"] = files["30-compute.yaml"].replace(b"name: db,", b"name: api,")
    assert "30-compute.yaml:12: services[2].name: duplicate service 'api' (first at services[1].name)" in problems_of(
        files
    )


def test_a_duplicate_site_dpid_ip_and_port_across_files_name_the_first_file() -> None:
    files = {
        "a.yaml": b"sites: [{id: s, tier: edge, region: r}]\nswitches: [{id: x, dpid: 1, site: s}]\n"
        b"hosts: [{id: h, switch: x, ip: 10.0.0.1, port: 4}]\n",
        "b.yaml": b"sites: [{id: s, tier: edge, region: r}]\nswitches: [{id: y, dpid: 1, site: s}]\n"
        b"hosts: [{id: g, switch: x, ip: 10.0.0.1, port: 4}]\n",
    }
    assert problems_of(files) == [
        "b.yaml:1: sites[0].id: duplicate site id 's' (first at a.yaml:1: sites[0])",
        "b.yaml:2: switches[0].dpid: duplicate dpid '0000000000000001' (first at a.yaml:2: switches[0].dpid)",
        "b.yaml:3: hosts[0].ip: duplicate ip '10.0.0.1' (first at a.yaml:3: hosts[0].ip)",
        "b.yaml:3: hosts[0].port: port 4 of x is already used by a.yaml:3: hosts[0].port",
    ]


@pytest.mark.parametrize("key", ["name: other", "subnet: 10.1.0.0/16"])
def test_a_scalar_key_given_in_a_second_file_names_both(key: str) -> None:
    files = split_example()
    files["30-compute.yaml"] = f"# the second\n{key}\n".encode() + files["30-compute.yaml"]
    field, _ = key.split(":")
    first_line = 4 if field == "name" else 5
    assert problems_of(files) == [
        f"30-compute.yaml:2: {field}: given twice: first at 10-core.yaml:{first_line} (a scalar key is given once)"
    ]


def test_an_unknown_top_level_key_in_any_file_is_an_error() -> None:
    files = split_example()
    files["20-links.yaml"] += b"version: 2\n"
    assert problems_of(files) == [
        f"20-links.yaml:28: version: unknown top-level key (allowed: {', '.join(TOP_LEVEL_KEYS)})"
    ]


def test_the_sections_are_one_registry() -> None:
    assert TOP_LEVEL_KEYS == (
        "name",
        "subnet",
        "sites",
        "switches",
        "links",
        "nodes",
        "hosts",
        "services",
        "authorization",
    )
    assert {s.key for s in SECTIONS if not s.is_list} == {"name", "subnet", "authorization"}


def test_empty_files_are_allowed_among_others_but_not_alone() -> None:
    files = {**split_example(), "00-empty.yaml": b"", "99-comments.yml": b"# later: policies\n"}
    assert parse_desired(files) == example_spec()
    assert problems_of({"a.yaml": b"", "b.yaml": b"# x\n"}, "fabric.d") == [
        "fabric.d:1: <file>: empty document: every file is empty"
    ]
    assert problems_of({"a.yaml": b""}) == [
        "a.yaml:1: <file>: empty file: expected a mapping with sites, switches, links, ..."
    ]
    assert problems_of({}, "fabric.d") == ["fabric.d:1: <file>: no files: a document needs at least one"]


def test_a_file_that_is_not_yaml_stops_the_checks_that_would_cascade() -> None:
    files = split_example()
    files["10-core.yaml"] = files["10-core.yaml"] + b"  - {id: [\n"
    lines = problems_of(files)
    assert len(lines) == 1 and lines[0].startswith("10-core.yaml:20: <file>: not valid YAML"), lines


def test_every_corpus_problem_is_the_same_inside_a_document() -> None:
    """A bad file next to a harmless one gives its problems unchanged, under its own name."""
    for path in sorted(BAD_FABRICS.glob("*.yaml")):
        if path.name in ("deeply-nested.yaml", "empty.yaml", "only-comments.yaml"):
            continue  # slow; and an empty file is fine in a document
        with pytest.raises(FabricFileError) as alone:
            parse_fabric(path.read_bytes(), path.name)
        with pytest.raises(FabricFileError) as together:
            parse_desired({path.name: path.read_bytes(), "zz-note.yaml": b"# nothing yet\n"})
        assert str(together.value) == str(alone.value), path.name


def test_a_file_over_the_limit_is_refused_before_it_is_parsed() -> None:
    big = b"#" * (MAX_DOCUMENT_BYTES + 1)
    assert problems_of({"a.yaml": b"name: x\n", "big.yaml": big}) == [
        f"big.yaml:1: <file>: too large ({MAX_DOCUMENT_BYTES + 1} bytes; at most 8 MiB)"
    ]
    assert parse_desired({"full.yaml": b"name: x\n" + b"#" * (MAX_DOCUMENT_BYTES - 8)}).name == "x"


def test_a_document_over_the_total_limit_is_refused() -> None:
    part = b"#" * (MAX_DOCUMENT_BYTES - 1)  # one object, named five times: the test holds 8 MiB, not 40
    count = MAX_DOCUMENT_TOTAL_BYTES // len(part) + 1
    files = {f"{i}.yaml": part for i in range(count)}
    assert problems_of(files, "fabric.d") == [
        f"fabric.d:1: <file>: too large ({count * len(part)} bytes in all; at most 32 MiB)"
    ]


ALIASES = b"""nodes: &l1 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
hosts: &l2 [*l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1]
links: &l3 [*l2, *l2, *l2, *l2, *l2, *l2, *l2, *l2, *l2, *l2]
sites: &l4 [*l3, *l3, *l3, *l3, *l3, *l3, *l3, *l3, *l3, *l3]
services: [*l4, *l4, *l4, *l4, *l4, *l4, *l4, *l4, *l4, *l4]
"""  # 111,110 YAML values: under the limit of 200,000 alone


def test_the_alias_limit_is_for_the_whole_document_not_per_file() -> None:
    with pytest.raises(FabricFileError) as alone:
        parse_desired({"a.yaml": ALIASES})
    assert "too large" not in str(alone.value)  # its items are not sites, links, ...: but it was read
    assert problems_of({"a.yaml": ALIASES, "b.yaml": ALIASES}) == [
        "b.yaml:1: <file>: too large: more than 200000 YAML values (alias bomb?)"
    ]


def test_the_revision_is_a_stable_content_hash() -> None:
    files = split_example()
    revision = document_revision(files)
    assert re.fullmatch(r"[0-9a-f]{64}", revision)
    assert document_revision(dict(reversed(list(files.items())))) == revision  # order does not matter
    assert document_revision({k: bytes(v) for k, v in files.items()}) == revision
    changed = {**files, "30-compute.yaml": files["30-compute.yaml"].replace(b"replicas: 2", b"replicas: 3")}
    assert document_revision(changed) != revision
    renamed = {("31-compute.yaml" if k == "30-compute.yaml" else k): v for k, v in files.items()}
    assert document_revision(renamed) != revision
    assert document_revision({**files, "40-empty.yaml": b""}) != revision
    # the boundary between a name and its bytes is part of the hash
    assert document_revision({"a": b"bc"}) != document_revision({"ab": b"c"})
    assert document_revision({"a": b"b", "c": b""}) != document_revision({"a": b"bc"})


FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(st.integers(0, len(LINES)), min_size=0, max_size=3), st.data())
def test_fuzz_the_example_cut_into_files_parses_or_names_each_file(cuts: list[int], data: st.DataObject) -> None:
    """Cut anywhere, the example's lines give a spec or problems that each name one of the files."""
    bounds = [0, *sorted(cuts), len(LINES)]
    files = {f"{i}.yaml": "".join(LINES[a:b]).encode() for i, (a, b) in enumerate(itertools.pairwise(bounds))}
    if data.draw(st.booleans()):
        name = data.draw(st.sampled_from(sorted(files)))
        files[name] = files[name].replace(b"5", data.draw(st.sampled_from([b"-5", b"x", b"5]", b"\x00"])), 1)
    try:
        parse_desired(files, "doc")
    except FabricFileError as exc:
        names = "|".join(re.escape(name) for name in [*files, "doc"])
        for line in str(exc).split("\n"):
            assert re.match(rf"^({names}):\d+: \S+: .+$", line), line
        assert all(p.file in files or p.file == "doc" for p in exc.problems)
