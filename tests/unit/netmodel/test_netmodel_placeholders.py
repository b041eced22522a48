"""netmodel.placeholders: one scanner decides what validates and what expands."""

from __future__ import annotations

import pytest

from netmodel.placeholders import PLACEHOLDERS, TemplateError, expand, placeholders_in, template_problem


def test_every_placeholder_expands_and_braces_escape() -> None:
    values = {name: f"<{name}>" for name in PLACEHOLDERS}
    template = " ".join(f"{{{name}}}" for name in PLACEHOLDERS)
    assert expand(template, values) == " ".join(f"<{name}>" for name in PLACEHOLDERS)
    assert expand("{{port}} is {port}}}", {"port": "80"}) == "{port} is 80}"
    assert placeholders_in("{host}:{port}") == ("host", "port")
    assert template_problem("plain --flag=1") is None


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{nope}", "unknown placeholder {nope}"),
        ("{}", "unknown placeholder {}"),
        ("{0}", "unknown placeholder {0}"),
        ("{port!r}", "unknown placeholder {port!r}"),
        ("x{port", "unclosed '{' at character 2"),
        ("{{port}", "single '}' at character 7"),
        ("{a{port}", "unclosed '{' at character 1"),
        ("}", "single '}' at character 1"),
    ],
)
def test_malformed_templates_are_named(template: str, fragment: str) -> None:
    problem = template_problem(template)
    assert problem is not None and fragment in problem, problem
    with pytest.raises(TemplateError):
        expand(template, dict.fromkeys(PLACEHOLDERS, ""))


def test_a_missing_value_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        expand("{node}", {})
