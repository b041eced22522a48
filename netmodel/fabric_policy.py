"""The fabric file's authorization and process fields, checked (pure; called by ``fabric_file._check``):
the top-level ``authorization: {default: deny|allow}`` and, per service, ``allow_from``, ``protocol``,
``run`` and ``env``. Problems go to the file's checker, each at its line and path like every other field.

A service's ``allow_from`` entry is a service name, a ``spiffe://`` id (one identity, or every identity
under a prefix ending with "/"), or a mapping with exactly one of ``service``, ``host``, ``spiffe_id`` and,
for an HTTP service, ``paths`` (prefixes, each starting with "/") and ``methods`` (HTTP methods). The
names it refers to are checked once every service is known (``reference_problems``).

SPIFFE ids are checked here with a few rules of their grammar (scheme ``spiffe://``, a non-empty trust
domain of lower-case letters, digits, ".", "-" and "_", no empty, "." or ".." path segment, path
characters letters, digits, ".", "-" and "_"): enough to catch a typo at FILE:LINE, kept simple on purpose
(netmodel imports nothing of the PKI, which checks certificates' ids in full).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from netmodel.ids import HostId, ServiceName
from netmodel.placeholders import template_problem
from netmodel.types import AllowRule, PolicyDefault, Protocol

if TYPE_CHECKING:  # fabric_file imports this module: the checker's types only for the type checker
    from netmodel.fabric_file import Located, _Checker

RULE_KEYS = ("service", "host", "spiffe_id", "paths", "methods")
WHO_KEYS = ("service", "host", "spiffe_id")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRUST_DOMAIN_RE = re.compile(r"^[a-z0-9._-]+$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")  # fabric_file.NAME_RE (a service name)
_PATH_RE = re.compile(r"^/[!-~]*$")  # printable ASCII, no spaces


def default_policy(c: _Checker, located: Located) -> PolicyDefault:
    """``authorization: {default: deny|allow}``; deny (and a problem) when it is malformed."""
    if not c.mapping(located, "authorization", ("default",), ("default",)):
        return PolicyDefault.DENY
    value = located.value["default"]
    if not isinstance(value.value, str) or value.value not in {d.value for d in PolicyDefault}:
        c.error(value, "authorization.default", f"expected deny or allow, got {value.value!r}")
        return PolicyDefault.DENY
    return PolicyDefault(value.value)


def spiffe_id_problem(text: str) -> str | None:
    """Why ``text`` is not a SPIFFE id (or an id prefix ending with "/"), or None."""
    if not text.startswith("spiffe://"):
        return "expected a spiffe:// id"
    trust_domain, slash, path = text[len("spiffe://") :].partition("/")
    if not trust_domain:
        return "the trust domain is empty"
    if not _TRUST_DOMAIN_RE.match(trust_domain):
        return f"trust domain {trust_domain!r}: only lower-case letters, digits, '.', '-' and '_'"
    if not slash:
        return "names no workload: add a path (spiffe://DOMAIN/...), or end it with '/' for every id of the domain"
    segments = path.split("/")
    if segments[-1] == "":  # a prefix: spiffe://td/svc/web/
        segments = segments[:-1]
    for segment in segments:
        if segment in ("", ".", ".."):
            return f"path segment {segment!r} is not allowed (no empty, '.' or '..' segments)"
        if not _SEGMENT_RE.match(segment):
            return f"path segment {segment!r}: only letters, digits, '.', '-' and '_'"
    return None


@dataclass(slots=True)
class RuleRef:
    """An ``allow_from`` entry naming a service or host, kept until every name is known."""

    kind: str  # "service" or "host"
    name: str
    located: Located
    path: str


@dataclass(slots=True)
class ServiceExtras:
    """What this module reads of one service entry."""

    protocol: Protocol = Protocol.HTTP
    allow_from: list[AllowRule] = field(default_factory=list)
    refs: list[RuleRef] = field(default_factory=list)
    run: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


def service_extras(c: _Checker, entry: Mapping[str, Located], path: str) -> ServiceExtras:
    extras = ServiceExtras()
    protocol = entry.get("protocol")
    if protocol is not None:
        if isinstance(protocol.value, str) and protocol.value in {p.value for p in Protocol}:
            extras.protocol = Protocol(protocol.value)
        else:
            c.error(protocol, f"{path}.protocol", f"expected http or tcp, got {protocol.value!r}")
    _allow_from(c, entry, path, extras)
    extras.run = _run(c, entry.get("run"), f"{path}.run")
    extras.env = _env(c, entry.get("env"), f"{path}.env")
    return extras


def reference_problems(
    c: _Checker, extras: ServiceExtras, services: Mapping[str, object], hosts: Mapping[str, object] | set[str]
) -> None:
    """Every service or host an ``allow_from`` entry names must be declared."""
    for ref in extras.refs:
        if ref.kind == "service" and ref.name not in services:
            hint = f" (a host? write {{host: {ref.name}}})" if ref.name in hosts else ""
            c.error(ref.located, ref.path, f"unknown service {ref.name!r}{hint}")
        elif ref.kind == "host" and ref.name not in hosts:
            c.error(ref.located, ref.path, f"unknown host {ref.name!r}")


def _allow_from(c: _Checker, entry: Mapping[str, Located], path: str, extras: ServiceExtras) -> None:
    located = entry.get("allow_from")
    if located is None or located.value is None:
        return
    if not isinstance(located.value, list):
        c.error(located, f"{path}.allow_from", "expected a list of callers: service names, spiffe:// ids or mappings")
        return
    for i, item in enumerate(located.value):
        where = f"{path}.allow_from[{i}]"
        if isinstance(item.value, str):
            rule = _caller(c, item, where, "service" if not item.value.startswith("spiffe://") else "spiffe_id", extras)
        elif isinstance(item.value, dict):
            rule = _rule_mapping(c, item, where, extras)
        else:
            c.error(item, where, f"expected a service name, a spiffe:// id or a mapping, got {item.value!r}")
            rule = None
        if rule is not None:
            extras.allow_from.append(rule)


def _caller(c: _Checker, located: Located, where: str, kind: str, extras: ServiceExtras) -> AllowRule | None:
    """One caller named by ``kind`` (service, host or spiffe_id) at ``located``."""
    value = located.value
    if kind == "spiffe_id":
        problem = spiffe_id_problem(value) if isinstance(value, str) else "expected a spiffe:// id"
        if problem is not None:
            c.error(located, where, f"{problem}, got {value!r}")
            return None
        return AllowRule(spiffe_id=value)
    if not isinstance(value, str) or not _NAME_RE.match(value):
        what = "a service name or a spiffe:// id" if where.endswith("]") else f"a {kind} name"
        c.error(located, where, f"expected {what}, got {value!r}")
        return None
    extras.refs.append(RuleRef(kind, value, located, where))
    return AllowRule(service=ServiceName(value)) if kind == "service" else AllowRule(host=HostId(value))


def _rule_mapping(c: _Checker, item: Located, where: str, extras: ServiceExtras) -> AllowRule | None:
    e = item.value
    who = [key for key in WHO_KEYS if key in e]
    if len(who) != 1:
        got = ", ".join(who) or "none of them"
        c.error(item, where, f"expected exactly one of service, host, spiffe_id (got {got})")
        c.mapping(item, where, RULE_KEYS, ())  # still name unknown keys
        return None
    if not c.mapping(item, where, RULE_KEYS, ()):
        return None
    rule = _caller(c, e[who[0]], f"{where}.{who[0]}", who[0], extras)
    paths = _strings(c, e.get("paths"), f"{where}.paths", "path")
    methods = _strings(c, e.get("methods"), f"{where}.methods", "method")
    for i, text, located in paths:
        if not _PATH_RE.match(text):
            c.error(located, f"{where}.paths[{i}]", f"expected a path starting with '/' (no spaces), got {text!r}")
    upper = []
    for i, text, located in methods:
        if text.upper() not in HTTP_METHODS:
            c.error(
                located, f"{where}.methods[{i}]", f"unknown HTTP method {text!r} (one of {', '.join(HTTP_METHODS)})"
            )
        upper.append(text.upper())
    if (paths or methods) and extras.protocol is Protocol.TCP:
        key = "paths" if paths else "methods"
        c.error(e[key], f"{where}.{key}", f"{key} apply to HTTP services only (this one is protocol: tcp)")
    if rule is None:
        return None
    return AllowRule(
        rule.service, rule.host, rule.spiffe_id, tuple(text for _, text, _ in paths), tuple(dict.fromkeys(upper))
    )


def _strings(c: _Checker, located: Located | None, where: str, what: str) -> list[tuple[int, str, Located]]:
    """A non-empty list of strings (``paths``, ``methods``), each with its index; leave the key out for "any"."""
    if located is None:
        return []
    if not isinstance(located.value, list) or not located.value:
        c.error(located, where, f"expected a non-empty list of {what}s (leave it out for any {what})")
        return []
    out = []
    for i, item in enumerate(located.value):
        if isinstance(item.value, str):
            out.append((i, item.value, item))
        else:
            c.error(item, f"{where}[{i}]", f"expected a {what}, got {item.value!r}")
    return out


def _template(c: _Checker, located: Located, where: str) -> str | None:
    if not isinstance(located.value, str):
        c.error(located, where, f"expected a string, got {located.value!r} (quote it)")
        return None
    problem = template_problem(located.value)
    if problem is not None:
        c.error(located, where, problem)
        return None
    return located.value


def _run(c: _Checker, located: Located | None, where: str) -> tuple[str, ...]:
    """``run``: the command and its arguments, each a template."""
    if located is None:
        return ()
    if not isinstance(located.value, list) or not located.value:
        c.error(located, where, 'expected a non-empty list: the command and its arguments, e.g. ["{python}", "app.py"]')
        return ()
    argv = [_template(c, item, f"{where}[{i}]") for i, item in enumerate(located.value)]
    if argv[0] is not None and not argv[0].strip():
        c.error(located.value[0], f"{where}[0]", "the command is empty")
    return tuple(arg for arg in argv if arg is not None)


def _key_segment(key: str) -> str:
    """A key as one path segment, quoted as ``fabric_file`` quotes odd keys (a path never holds whitespace)."""
    if re.fullmatch(r"[^\s.\[\]\"]+", key):
        return key
    return json.dumps(key).replace(" ", "\\u0020")


def _env(c: _Checker, located: Located | None, where: str) -> tuple[tuple[str, str], ...]:
    """``env``: NAME -> template, sorted by name."""
    if located is None or located.value is None:
        return ()
    if not isinstance(located.value, dict):
        c.error(located, where, "expected a mapping of variable names to strings")
        return ()
    out = []
    for name, value in located.value.items():
        if not ENV_NAME_RE.match(name):
            c.error(
                value,
                f"{where}.{_key_segment(name)}",
                f"not a variable name: {name!r} (letters, digits and '_', not first a digit)",
            )
            continue
        text = _template(c, value, f"{where}.{name}")
        if text is not None:
            out.append((name, text))
    return tuple(sorted(out))
