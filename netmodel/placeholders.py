"""The ``{placeholders}`` of a service's ``run`` command and ``env`` values: which names exist, what is
wrong with a template, and filling one in (pure; one scanner for the fabric file's check and the node
agent's expansion, so what validates is exactly what runs).

``{{`` and ``}}`` are literal braces; ``{name}`` must be one of ``PLACEHOLDERS``; nothing else (no format
specs, no ``{0}``, no attribute access) is a placeholder, so a stray brace is an error, not a surprise.

    template_problem("{python} -m app --port {port}")   # None
    template_problem("--listen {adress}")               # "unknown placeholder {adress} (known: ...)"
    expand("{host}:{port}", {"host": "10.0.0.1", "port": "8080"})   # "10.0.0.1:8080"
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

PLACEHOLDERS = ("python", "workload", "service", "node", "port", "host", "listen", "outbound", "calls", "work_dir")
"""Every name a template may use (docs/fabric-file.md says what each one is)."""


class TemplateError(ValueError):
    """A template with a malformed brace or an unknown placeholder; the message names it."""


def _pieces(template: str) -> Iterator[tuple[bool, str]]:
    """(is_placeholder, text) in order: literal text (braces unescaped) and placeholder names."""
    literal: list[str] = []
    i, end = 0, len(template)
    while i < end:
        char = template[i]
        if char in "{}" and template[i + 1 : i + 2] == char:
            literal.append(char)
            i += 2
            continue
        if char == "}":
            raise TemplateError(f"single '}}' at character {i + 1} (write '}}}}' for a literal brace)")
        if char == "{":
            close = template.find("}", i + 1)
            opening = template.find("{", i + 1)
            if close < 0 or 0 <= opening < close:
                raise TemplateError(f"unclosed '{{' at character {i + 1} (write '{{{{' for a literal brace)")
            name = template[i + 1 : close]
            if name not in PLACEHOLDERS:
                raise TemplateError(f"unknown placeholder {{{name}}} (known: {', '.join(PLACEHOLDERS)})")
            if literal:
                yield False, "".join(literal)
                literal = []
            yield True, name
            i = close + 1
            continue
        literal.append(char)
        i += 1
    if literal:
        yield False, "".join(literal)


def template_problem(template: str) -> str | None:
    """What is wrong with ``template`` (the first thing), or None when it is well formed."""
    try:
        for _ in _pieces(template):
            pass
    except TemplateError as exc:
        return str(exc)
    return None


def placeholders_in(template: str) -> tuple[str, ...]:
    """The placeholder names ``template`` uses, in order (TemplateError when it is malformed)."""
    return tuple(text for is_placeholder, text in _pieces(template) if is_placeholder)


def expand(template: str, values: Mapping[str, str]) -> str:
    """``template`` with every placeholder replaced by its value and ``{{``/``}}`` made single braces.
    TemplateError when the template is malformed; KeyError when ``values`` lacks a name it uses."""
    return "".join(values[text] if is_placeholder else text for is_placeholder, text in _pieces(template))
