"""SPIFFE id parsing and naming: the spec's rules, each refusal's reason, and a fuzzed parser."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pki.errors import InvalidSpiffeId, WrongTrustDomain
from pki.policy import (
    MAX_SPIFFE_ID_BYTES,
    controller_spiffe_id,
    host_spiffe_id,
    parse_leaf_spiffe_id,
    parse_spiffe_id,
    service_of,
    service_spiffe_prefix,
    switch_spiffe_id,
    trust_domain_id,
    workload_spiffe_id,
)


@pytest.mark.parametrize(
    "text",
    [
        "spiffe://example.org",
        "spiffe://example.org/svc/web/w/web-1",
        "spiffe://a/b",
        "spiffe://td_with-chars.1/A.b-C_d/x",
        "spiffe://example.org/..a/.b/c..",  # dots inside a segment are fine
    ],
)
def test_valid_ids_parse_back_to_themselves(text: str) -> None:
    parts = parse_spiffe_id(text)
    assert parts.uri == text == str(parts)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "does not start with 'spiffe://'"),
        ("https://example.org/x", "does not start with 'spiffe://'"),
        ("SPIFFE://example.org/x", "scheme is lowercase"),
        ("spiffe:/example.org/x", "does not start with"),
        ("spiffe://", "no trust domain"),
        ("spiffe:///path", "no trust domain"),
        ("spiffe://Example.org/x", "invalid character 'E'"),
        ("spiffe://exa mple.org/x", "invalid character ' '"),
        ("spiffe://user@example.org/x", "userinfo"),
        ("spiffe://example.org:8443/x", "port"),
        ("spiffe://example.org/x?y=1", "no query"),
        ("spiffe://example.org/x#frag", "no fragment"),
        ("spiffe://example.org/a%20b", "percent-encoding"),
        ("spiffe://example.org/", "empty path segment"),
        ("spiffe://example.org/a//b", "empty path segment"),
        ("spiffe://example.org/a/", "empty path segment"),
        ("spiffe://example.org/./a", "dot segment"),
        ("spiffe://example.org/a/..", "dot segment"),
        ("spiffe://example.org/a b", "invalid character ' '"),
        ("spiffe://example.org/caf\u00e9", "invalid character"),
        ("spiffe://" + "a" * 256 + "/x", "longer than 255 bytes"),
        ("spiffe://example.org/" + "a" * MAX_SPIFFE_ID_BYTES, "longer than 2048 bytes"),
    ],
)
def test_invalid_ids_are_refused_with_the_rule_they_break(text: str, reason: str) -> None:
    with pytest.raises(InvalidSpiffeId) as caught:
        parse_spiffe_id(text)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


def test_non_string_is_refused() -> None:
    with pytest.raises(InvalidSpiffeId, match="is a string"):
        parse_spiffe_id(b"spiffe://x/y")  # type: ignore[arg-type]


def test_leaf_ids_need_a_path_and_the_right_trust_domain() -> None:
    assert parse_leaf_spiffe_id("spiffe://example.org/a", "example.org").path == "/a"
    with pytest.raises(InvalidSpiffeId, match="not a workload"):
        parse_leaf_spiffe_id("spiffe://example.org")
    with pytest.raises(WrongTrustDomain, match=r"in trust domain 'other\.org', not 'example\.org'"):
        parse_leaf_spiffe_id("spiffe://other.org/a", "example.org")


def test_names_edgectl_gives() -> None:
    assert workload_spiffe_id("example.org", "web", "web-1") == "spiffe://example.org/svc/web/w/web-1"
    assert service_spiffe_prefix("example.org", "web") == "spiffe://example.org/svc/web/"
    assert workload_spiffe_id("example.org", "web", "web-1").startswith(service_spiffe_prefix("example.org", "web"))
    assert host_spiffe_id("example.org", "u1") == "spiffe://example.org/host/u1"
    assert switch_spiffe_id("example.org", 0xA1) == "spiffe://example.org/switch/00000000000000a1"
    assert controller_spiffe_id("example.org") == "spiffe://example.org/controller/edgectl"
    assert trust_domain_id("example.org") == "spiffe://example.org"
    assert service_of("spiffe://example.org/svc/web/w/web-1") == "web"
    assert service_of("spiffe://example.org/host/u1") is None
    assert service_of("not an id") is None


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda: workload_spiffe_id("example.org", "my service", "w1"), "service name 'my service'"),
        (lambda: workload_spiffe_id("example.org", "web", ".."), "workload id '..' is a dot segment"),
        (lambda: workload_spiffe_id("example.org", "web", ""), "empty workload id"),
        (lambda: workload_spiffe_id("Example.org", "web", "w"), "trust domain 'Example.org'"),
        (lambda: host_spiffe_id("example.org", "h/1"), "host id 'h/1' has invalid character '/'"),
        (lambda: switch_spiffe_id("example.org", -1), "not a 64-bit"),
        (lambda: switch_spiffe_id("example.org", 1 << 64), "not a 64-bit"),
    ],
)
def test_names_refuse_what_cannot_be_a_path_segment(call, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidSpiffeId) as caught:
        call()
    assert reason in str(caught.value)


# -- fuzzing ---------------------------------------------------------------------------------------

# An independent statement of the grammar (ASCII): the oracle the parser must agree with.
_ORACLE = re.compile(r"spiffe://[a-z0-9._-]{1,255}(/(?!\.\.?(?:/|$))[A-Za-z0-9._-]+)*")

_trust_domains = st.from_regex(r"[a-z0-9._-]{1,40}", fullmatch=True)
_segments = st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True).filter(lambda s: s not in (".", ".."))
_valid_ids = st.builds(
    lambda td, segs: "spiffe://" + td + "".join("/" + s for s in segs), _trust_domains, st.lists(_segments, max_size=6)
)
_id_alphabet = st.sampled_from([*list("spiffe:/abcXYZ019._-@?#%: \t/."), "é", "\x00", "\\"])


@settings(max_examples=300, deadline=None)
@given(_valid_ids)
def test_every_valid_id_parses_to_itself(text: str) -> None:
    parts = parse_spiffe_id(text)
    assert parts.uri == text
    expected_segments = tuple(text.split("/")[3:]) if parts.path else ()
    assert parts.segments == expected_segments


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=80), _valid_ids.flatmap(lambda v: _mutations(v))))
def test_parser_agrees_with_the_grammar_and_only_raises_invalid_spiffe_id(text: str) -> None:
    try:
        parts = parse_spiffe_id(text)
    except InvalidSpiffeId as exc:
        assert str(exc) and "\n" not in str(exc)
        assert not (_ORACLE.fullmatch(text) and len(text.encode()) <= MAX_SPIFFE_ID_BYTES), text
        return
    assert _ORACLE.fullmatch(text), text
    assert parts.uri == text


def _mutations(valid: str) -> st.SearchStrategy[str]:
    """A valid id with one character inserted, replaced or deleted somewhere."""
    positions = st.integers(min_value=0, max_value=len(valid))

    def insert(i: int, ch: str) -> str:
        return valid[:i] + ch + valid[i:]

    def replace(i: int, ch: str) -> str:
        return valid[:i] + ch + valid[i + 1 :]

    def delete(i: int) -> str:
        return valid[:i] + valid[i + 1 :]

    return st.one_of(
        st.builds(insert, positions, _id_alphabet),
        st.builds(replace, positions, _id_alphabet),
        st.builds(delete, positions),
    )
