"""Reading a fabric file: YAML text in, ``FabricSpec`` out, or every problem with its line.

Each problem reads ``FILE:LINE: path.to.field: message``. Any bytes give problems, never a
traceback: the file is parsed with PyYAML's composer (which keeps line numbers) and each value is
checked against a small schema before anything is built.

A desired-state document is one file or several (``parse_desired``): each holds any of the top-level
sections; list sections are concatenated in file-name order, a scalar key is given in one file only.
Every problem names its own file, and paths such as ``switches[3]`` count within that file.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from netmodel import fabric_policy
from netmodel.fabric import CableSpec, FabricSpec, HostSpec, NodeSpec, SwitchSpec
from netmodel.ids import HostId, NodeId, PortNo, ServiceName, SiteId, SwitchId
from netmodel.types import CallWeight, PolicyDefault, Resources, Service, Site, Tier

MAX_NODES = 200_000  # YAML aliases can make a small file expand enormously: stop early.
MAX_PORT = 0xFFFFFF00  # OpenFlow 1.3 OFPP_MAX
MAX_DPID = (1 << 64) - 1
MIN_LATENCY_SLO_MS = 0.001  # 1 us: the model counts latency in whole microseconds
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
_HEX_RE = re.compile(r"[0-9a-fA-F]{1,16}")
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
MIB = 1 << 20
MAX_DOCUMENT_BYTES = 8 * MIB  # one file of a document: checked before it is read, and never read past
MAX_DOCUMENT_TOTAL_BYTES = 32 * MIB  # all files of a document together


@dataclass(frozen=True, slots=True)
class Section:
    """A top-level key. A list section may appear in several files of a document (concatenated in
    file-name order); a scalar one in one file only. A new section is one entry in ``SECTIONS`` (and
    its checks in ``_check``)."""

    key: str
    is_list: bool


SECTIONS = (
    Section("name", is_list=False),
    Section("subnet", is_list=False),
    Section("sites", is_list=True),
    Section("switches", is_list=True),
    Section("links", is_list=True),
    Section("nodes", is_list=True),
    Section("hosts", is_list=True),
    Section("services", is_list=True),
    Section("authorization", is_list=False),
)
TOP_LEVEL_KEYS = tuple(section.key for section in SECTIONS)
_SECTION_BY_KEY = {section.key: section for section in SECTIONS}


@functools.total_ordering
@dataclass(frozen=True, slots=True)
class Problem:
    line: int
    path: str
    message: str
    file: str = ""  # the file it is in; "" for a problem of the one file being read (named by the caller)

    def format(self, filename: str = "") -> str:
        return f"{self.file or filename}:{self.line}: {self.path}: {self.message}"

    def _key(self) -> tuple[str, int, str, str]:
        return (self.file, self.line, self.path, self.message)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Problem):
            return NotImplemented
        return self._key() < other._key()


class FabricFileError(ValueError):
    """Every problem of a file or document. ``filename`` names the file or the whole document; each
    problem names its own file (``Problem.file``) when the document has several."""

    def __init__(self, filename: str, problems: list[Problem]) -> None:
        self.filename = filename
        self.problems = sorted(problems)
        super().__init__("\n".join(p.format(filename) for p in self.problems))


# -- YAML with line numbers ----------------------------------------------------------------------


@dataclass(slots=True)
class Located:
    """A YAML value with the (1-based) line it starts on (and a scalar's source text)."""

    value: Any
    line: int
    text: str | None = None
    file: str = ""

    def __repr__(self) -> str:  # messages quote values with !r: show the YAML value, not the wrapper
        return repr(self.value)


@dataclass(slots=True)
class _Budget:
    left: int = MAX_NODES


class _TooBig(Exception):
    pass


def _key_segment(key: str) -> str:
    """A mapping key as one path segment; odd keys are quoted so a path never holds whitespace."""
    if re.fullmatch(r"[^\s.\[\]\"]+", key):
        return key
    return json.dumps(key).replace(" ", "\\u0020")


def _to_located(
    node: yaml.Node,
    path: str,
    problems: list[Problem],
    budget: _Budget,
    scalars: yaml.constructor.SafeConstructor,
    file: str,
) -> Located:
    budget.left -= 1
    if budget.left < 0:
        raise _TooBig
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        mapping: dict[str, Located] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(Problem(key_line, path or "<top>", "keys must be plain names", file))
                continue
            key = str(key_node.value)
            segment = _key_segment(key)
            child = f"{path}.{segment}" if path else segment
            if key in mapping:
                problems.append(Problem(key_line, child, "duplicate key", file))
                continue
            mapping[key] = _to_located(value_node, child, problems, budget, scalars, file)
            # The key's line, not the value's: a block or aliased value starts elsewhere.
            mapping[key].line = key_line
        return Located(mapping, line, file=file)
    if isinstance(node, yaml.SequenceNode):
        items = [
            _to_located(item, f"{path}[{i}]", problems, budget, scalars, file) for i, item in enumerate(node.value)
        ]
        return Located(items, line, file=file)
    try:
        value = scalars.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError):
        value = str(node.value)  # e.g. an unparsable timestamp: keep the text, the schema will object
    return Located(value, line, str(node.value), file)


EMPTY_FILE = "empty file: expected a mapping with sites, switches, links, ..."


def read_yaml(text: str, file: str = "", budget: _Budget | None = None) -> tuple[Located | None, list[Problem]]:
    """The text's one YAML document with lines, or its problems; (None, []) when it holds no document
    (empty, or only comments). ``budget`` bounds the values built (shared by a document's files)."""
    problems: list[Problem] = []
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.reader.ReaderError as exc:
        # Its str() spans two lines and names a character position: report the line instead.
        line = text[: exc.position].count("\n") + 1
        message = f"not valid YAML: unacceptable character #x{exc.character:04x}"
        return None, [Problem(line, "<file>", message, file)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        # "while parsing a flow mapping, expected ',' or '}', but got '{'": the context, then the problem.
        what = ", ".join(part for part in (exc.context, exc.problem) if part) or "syntax error"
        return None, [Problem(line, "<file>", f"not valid YAML: {what}", file)]
    except yaml.YAMLError as exc:
        return None, [Problem(1, "<file>", f"not valid YAML: {exc}", file)]
    except RecursionError:
        return None, [Problem(1, "<file>", "not valid YAML: nested too deeply", file)]
    if node is None:
        return None, []
    try:
        # A fresh constructor per file: it caches every node it builds (a leak if shared).
        scalars = yaml.constructor.SafeConstructor()
        return _to_located(node, "", problems, budget or _Budget(), scalars, file), problems
    except _TooBig:
        return None, [Problem(1, "<file>", f"too large: more than {MAX_NODES} YAML values (alias bomb?)", file)]
    except RecursionError:
        return None, [Problem(1, "<file>", "nested too deeply", file)]


# -- schema checks ---------------------------------------------------------------------------------


_Place = tuple[str, int, str]  # (file, line, path) where something was first declared


def _first_at(place: _Place, here: Located) -> str:
    """Where a duplicate was first declared, as seen from ``here``: its path in the same file, else
    ``FILE:LINE: path``."""
    file, line, path = place
    return path if file == here.file else f"{file}:{line}: {path}"


@dataclass(slots=True)
class _Checker:
    problems: list[Problem] = field(default_factory=list)

    def error(self, located: Located, path: str, message: str) -> None:
        self.problems.append(Problem(located.line, path, message, located.file))

    def mapping(self, located: Located, path: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> bool:
        if not isinstance(located.value, dict):
            self.error(located, path, f"expected a mapping with keys {', '.join(required)}")
            return False
        for key, value in located.value.items():
            if key not in allowed:
                self.error(value, f"{path}.{_key_segment(key)}", f"unknown key (allowed: {', '.join(allowed)})")
        ok = True
        for key in required:
            if key not in located.value:
                self.error(located, f"{path}.{key}", "missing required key")
                ok = False
        return ok

    def items(self, sections: dict[str, list[Located]], key: str) -> Iterator[tuple[str, Located]]:
        """The items of a list section, file after file; a path's index counts within its file."""
        for section in sections.get(key, ()):
            if section.value is None:
                continue
            if not isinstance(section.value, list):
                self.error(section, key, "expected a list")
                continue
            for i, item in enumerate(section.value):
                yield f"{key}[{i}]", item

    def name(self, entry: dict[str, Located], key: str, path: str) -> str | None:
        located = entry.get(key)
        if located is None:
            return None
        value = located.value
        if not isinstance(value, str) or not NAME_RE.match(value):
            self.error(
                located,
                f"{path}.{key}" if path else key,
                f"expected a name (a letter, then letters, digits, '-' or '_'), got {value!r}",
            )
            return None
        return value

    def number(
        self,
        entry: dict[str, Located],
        key: str,
        path: str,
        *,
        minimum: float,
        exclusive: bool = False,
        integer: bool = False,
        maximum: float | None = None,
    ) -> float | None:
        located = entry.get(key)
        if located is None:
            return None
        value = located.value
        kind = "an integer" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
            self.error(located, f"{path}.{key}", f"expected {kind}, got {value!r}")
            return None
        if value != value or value in (float("inf"), float("-inf")) or not (integer or _fits_float(value)):
            self.error(located, f"{path}.{key}", f"expected a finite number, got {value!r}")
            return None
        if value < minimum or (exclusive and value == minimum):
            bound = f"greater than {minimum:g}" if exclusive else f">= {minimum:g}"
            self.error(located, f"{path}.{key}", f"must be {bound}, got {value!r}")
            return None
        if maximum is not None and value > maximum:
            self.error(located, f"{path}.{key}", f"must be <= {maximum:g}, got {value!r}")
            return None
        return value

    def ref(self, entry: dict[str, Located], key: str, path: str, known: dict[str, Any], what: str) -> str | None:
        located = entry.get(key)
        if located is None:
            return None
        if not isinstance(located.value, str) or located.value not in known:
            self.error(located, f"{path}.{key}", f"unknown {what} {located.value!r}")
            return None
        return str(located.value)

    def unique(self, seen: dict[str, _Place], value: str | None, located: Located, path: str, what: str) -> None:
        if value is None:
            return
        if value in seen:
            self.error(located, path, f"duplicate {what} {value!r} (first at {_first_at(seen[value], located)})")
        else:
            seen[value] = (located.file, located.line, path)


def _fits_float(value: float) -> bool:
    try:
        float(value)
    except OverflowError:  # an integer with hundreds of digits
        return False
    return True


def _colon_text(located: Located) -> Any:
    """YAML 1.1 reads ``10:00:00:01`` as a base-60 integer: colon-separated ids keep their text."""
    if isinstance(located.value, int) and located.text is not None and ":" in located.text:
        return located.text
    return located.value


def _dpid(checker: _Checker, located: Located, path: str) -> int | None:
    """Integers are taken as written (``102`` is decimal, ``0x66`` hex). Strings say their base: "0x66"
    and the colon form "00:00:00:00:00:00:00:66" are hex, plain digits ("102") are decimal like the
    integer; anything else is refused rather than guessed at."""
    value = _colon_text(located)
    if isinstance(value, str):
        text = value.strip()
        if text.lower().startswith("0x") and _HEX_RE.fullmatch(text[2:]):
            value = int(text[2:], 16)
        elif ":" in text and all(_HEX_RE.fullmatch(part) for part in text.split(":")):
            value = int(text.replace(":", ""), 16)
        elif text.isascii() and text.isdigit():
            value = int(text, 10)
        else:
            checker.error(
                located,
                path,
                f'expected a datapath id: an integer, "0x..." hex or "00:00:00:00:00:00:00:a1", got {located.value!r}',
            )
            return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DPID:
        checker.error(located, path, f"expected a datapath id between 1 and 2^64-1, got {located.value!r}")
        return None
    return value


def _ip(checker: _Checker, entry: dict[str, Located], path: str, network: ipaddress.IPv4Network | None) -> str | None:
    """The entry's address; ``network`` None means the subnet is bad (reported once): no check against it."""
    located = entry.get("ip")
    if located is None:
        return None
    try:
        address = ipaddress.IPv4Address(str(located.value))
    except ValueError:
        checker.error(located, f"{path}.ip", f"expected an IPv4 address, got {located.value!r}")
        return None
    if network is not None and address not in network:
        checker.error(located, f"{path}.ip", f"{address} is outside the fabric subnet {network}")
        return None
    return str(address)


def _subnet(checker: _Checker, located: Located) -> ipaddress.IPv4Network | None:
    """The fabric subnet, or None (reported here, once: addresses are then not checked against it)."""
    text = str(located.value)
    try:
        return ipaddress.IPv4Network(text)
    except ValueError:
        pass
    try:
        meant = ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        checker.error(located, "subnet", f"expected an IPv4 network like 10.0.0.0/16, got {located.value!r}")
    else:
        checker.error(located, "subnet", f"{text} has host bits set; did you mean {meant}?")
    return None


def _mac(checker: _Checker, entry: dict[str, Located], path: str) -> str:
    located = entry.get("mac")
    if located is None:
        return ""
    value = _colon_text(located)
    if not isinstance(value, str) or not MAC_RE.match(value):
        checker.error(located, f"{path}.mac", f"expected a MAC address like 02:00:00:00:00:01, got {value!r}")
        return ""
    return value.lower()


def _names(checker: _Checker, entry: dict[str, Located], key: str, path: str) -> list[tuple[int, str, Located]]:
    """The string items of a list of names, each with its index in the list (for the path)."""
    located = entry.get(key)
    if located is None or located.value is None:
        return []
    if not isinstance(located.value, list):
        checker.error(located, f"{path}.{key}", "expected a list of names")
        return []
    out = []
    for i, item in enumerate(located.value):
        if not isinstance(item.value, str):
            checker.error(item, f"{path}.{key}[{i}]", f"expected a name, got {item.value!r}")
        else:
            out.append((i, item.value, item))
    return out


CALL_KEYS = ("service", "per_request", "bytes_per_call", "bandwidth_mbps")
MAX_BANDWIDTH_MBPS = 1_000_000.0  # 1 Tbit/s: a reservation beyond any link is a typo
MAX_CALLS_PER_REQUEST = 1000.0


def _calls(
    checker: _Checker, entry: dict[str, Located], path: str
) -> list[tuple[int, str, Located, CallWeight | None, float | None]]:
    """A service's ``calls``: each a name, or ``{service, per_request, bytes_per_call, bandwidth_mbps}`` (a
    weighted call, and what each caller instance reserves toward its nearest callee instance, each way)."""
    located = entry.get("calls")
    if located is None or located.value is None:
        return []
    if not isinstance(located.value, list):
        checker.error(
            located, f"{path}.calls", "expected a list of service names or {service, per_request, bytes_per_call}"
        )
        return []
    out: list[tuple[int, str, Located, CallWeight | None, float | None]] = []
    seen: set[str] = set()
    for i, item in enumerate(located.value):
        where = f"{path}.calls[{i}]"
        if isinstance(item.value, str):
            name, name_at, weight, bandwidth = item.value, item, None, None
        elif isinstance(item.value, dict):
            if "service" not in item.value:
                keys = ", ".join(map(str, item.value)) or "none"
                message = (
                    f"expected a name or a weighted call {{service, per_request, bytes_per_call}}, got keys {keys}"
                )
                checker.error(item, where, message)
                continue
            if not checker.mapping(item, where, CALL_KEYS, ("service",)):
                continue
            e = item.value
            name_at = e["service"]
            if not isinstance(name_at.value, str):
                checker.error(name_at, f"{where}.service", f"expected a name, got {name_at.value!r}")
                continue
            name = name_at.value
            per_request = checker.number(e, "per_request", where, minimum=0, maximum=MAX_CALLS_PER_REQUEST)
            size = checker.number(e, "bytes_per_call", where, minimum=0, integer=True, maximum=2**40)
            bandwidth = checker.number(
                e, "bandwidth_mbps", where, minimum=0, exclusive=True, maximum=MAX_BANDWIDTH_MBPS
            )
            if per_request is None and size is None:
                weight = None  # a call that only reserves bandwidth keeps the default weight
            else:
                weight = CallWeight(
                    1.0 if per_request is None else float(per_request), 0 if size is None else int(size)
                )
        else:
            checker.error(item, where, f"expected a service name or a mapping with key service, got {item.value!r}")
            continue
        if name in seen:
            checker.error(name_at, where, f"calls {name!r} twice (give one entry a per_request count)")
            continue
        seen.add(name)
        out.append((i, name, name_at, weight, None if bandwidth is None else float(bandwidth)))
    return out


def _free_addresses(network: ipaddress.IPv4Network, used: Mapping[str, object]) -> Iterator[str]:
    """The subnet's host addresses not in ``used``, highest first, without listing the subnet."""
    if network.prefixlen >= 31:  # /31 and /32: every address is a host address
        candidates: Iterator[int] = iter(range(int(network.broadcast_address), int(network.network_address) - 1, -1))
    else:
        candidates = iter(range(int(network.broadcast_address) - 1, int(network.network_address), -1))
    for number in candidates:
        address = str(ipaddress.IPv4Address(number))
        if address not in used:
            yield address


class _Ports:
    """Port numbers per switch: explicit ones are reserved first, the rest assigned in file order."""

    def __init__(self, checker: _Checker) -> None:
        self.checker = checker
        self.used: dict[str, dict[int, _Place]] = {}

    def reserve(self, switch: str | None, port: float | None, located: Located | None, path: str) -> None:
        if switch is None or port is None or located is None:
            return
        owners = self.used.setdefault(switch, {})
        if int(port) in owners:
            owner = _first_at(owners[int(port)], located)
            self.checker.error(located, path, f"port {int(port)} of {switch} is already used by {owner}")
        else:
            owners[int(port)] = (located.file, located.line, path)

    def assign(self, switch: str, port: float | None, owner: str) -> PortNo:
        if port is not None:
            return PortNo(int(port))
        owners = self.used.setdefault(switch, {})
        number = 1
        while number in owners:
            number += 1
        owners[number] = ("", 0, owner)
        return PortNo(number)


def _merge(c: _Checker, tops: list[Located]) -> dict[str, list[Located]] | None:
    """The top-level sections of a document's files (in file order): each list section's value in every
    file that has it; a scalar key's value once (a second one is a problem naming the first). None when
    a file is not a mapping (its sections are unknown: checking the rest would only cascade)."""
    not_mappings = [top for top in tops if not isinstance(top.value, dict)]
    for top in not_mappings:
        c.error(top, "<top>", "expected a mapping with sites, switches, links, nodes, hosts, services")
    if not_mappings:
        return None
    sections: dict[str, list[Located]] = {}
    for top in tops:
        for key, value in top.value.items():
            section = _SECTION_BY_KEY.get(key)
            if section is None:
                c.error(value, _key_segment(key), f"unknown top-level key (allowed: {', '.join(TOP_LEVEL_KEYS)})")
            elif section.is_list or key not in sections:
                sections.setdefault(key, []).append(value)
            else:
                first = sections[key][0]
                c.error(value, key, f"given twice: first at {first.file}:{first.line} (a scalar key is given once)")
    return sections


def _check(tops: list[Located]) -> tuple[FabricSpec | None, list[Problem]]:
    c = _Checker()
    root = _merge(c, tops)
    if root is None:
        return None, c.problems

    fabric_name = "fabric"
    if "name" in root:
        name_value = root["name"][0]
        fabric_name = c.name({"name": name_value}, "name", "") or fabric_name
    network: ipaddress.IPv4Network | None = ipaddress.IPv4Network("10.0.0.0/16")
    if "subnet" in root:
        network = _subnet(c, root["subnet"][0])

    ids: dict[str, _Place] = {}  # switches, hosts and nodes share one namespace (Mininet names)

    sites: dict[str, Site] = {}
    site_ids: dict[str, _Place] = {}  # every declared id, valid or not, so one bad field does not cascade
    for path, item in c.items(root, "sites"):
        if not c.mapping(item, path, ("id", "tier", "region", "zone"), ("id", "tier", "region")):
            continue
        e = item.value
        site_id = c.name(e, "id", path)
        if site_id in site_ids:
            first = _first_at(site_ids[site_id], e["id"])
            c.error(e["id"], f"{path}.id", f"duplicate site id {site_id!r} (first at {first})")
            site_id = None
        elif site_id:
            site_ids[site_id] = (e["id"].file, e["id"].line, path)
        tier_value = e["tier"].value
        tier = Tier(tier_value) if isinstance(tier_value, str) and tier_value in {t.value for t in Tier} else None
        if tier is None:
            c.error(e["tier"], f"{path}.tier", f"unknown tier {tier_value!r} (one of edge, metro, cloud)")
        region = e["region"].value
        if not isinstance(region, str) or not region:
            c.error(e["region"], f"{path}.region", f"expected a region name, got {region!r}")
            region = None
        zone = e["zone"].value if "zone" in e else ""
        if not isinstance(zone, str):
            c.error(e["zone"], f"{path}.zone", f"expected a zone name, got {zone!r}")
            zone = ""
        if site_id and tier and region:
            sites[site_id] = Site(SiteId(site_id), tier, region, zone)

    switches: dict[str, tuple[int, str]] = {}
    switch_names: dict[str, str] = {}
    dpids: dict[str, _Place] = {}
    for path, item in c.items(root, "switches"):
        if not c.mapping(item, path, ("id", "dpid", "site"), ("id", "dpid", "site")):
            continue
        e = item.value
        name = c.name(e, "id", path)
        c.unique(ids, name, e["id"], f"{path}.id", "id")
        if name:
            switch_names.setdefault(name, path)
        dpid = _dpid(c, e["dpid"], f"{path}.dpid")
        if dpid is not None:
            c.unique(dpids, f"{dpid:016x}", e["dpid"], f"{path}.dpid", "dpid")
        site = c.ref(e, "site", path, site_ids, "site")
        if name and dpid is not None and site and name not in switches:
            switches[name] = (dpid, site)

    ports = _Ports(c)
    # Entries hold Optional values until every problem is known; only a problem-free file is built below.
    raw_links: list[tuple[Any, ...]] = []
    for path, item in c.items(root, "links"):
        allowed: tuple[str, ...] = ("a", "b", "latency_ms", "bandwidth_mbps", "a_port", "b_port")
        if not c.mapping(item, path, allowed, ("a", "b", "latency_ms", "bandwidth_mbps")):
            continue
        e = item.value
        a = c.ref(e, "a", path, switch_names, "switch")
        b = c.ref(e, "b", path, switch_names, "switch")
        if a is not None and a == b:
            c.error(e["b"], f"{path}.b", f"a link must join two different switches, both ends are {a!r}")
        latency = c.number(e, "latency_ms", path, minimum=0)
        bandwidth = c.number(e, "bandwidth_mbps", path, minimum=0, exclusive=True, maximum=MAX_BANDWIDTH_MBPS)
        a_port = c.number(e, "a_port", path, minimum=1, integer=True, maximum=MAX_PORT)
        b_port = c.number(e, "b_port", path, minimum=1, integer=True, maximum=MAX_PORT)
        ports.reserve(a, a_port, e.get("a_port"), f"{path}.a_port")
        ports.reserve(b, b_port, e.get("b_port"), f"{path}.b_port")
        raw_links.append((path, a, b, latency, bandwidth, a_port, b_port))

    raw_hosts: list[tuple[Any, ...]] = []
    ips: dict[str, _Place] = {}
    for path, item in c.items(root, "hosts"):
        if not c.mapping(item, path, ("id", "switch", "ip", "mac", "port"), ("id", "switch", "ip")):
            continue
        e = item.value
        name = c.name(e, "id", path)
        c.unique(ids, name, e["id"], f"{path}.id", "id")
        switch = c.ref(e, "switch", path, switch_names, "switch")
        ip = _ip(c, e, path, network)
        c.unique(ips, ip, e["ip"], f"{path}.ip", "ip")
        port = c.number(e, "port", path, minimum=1, integer=True, maximum=MAX_PORT)
        ports.reserve(switch, port, e.get("port"), f"{path}.port")
        raw_hosts.append((path, name, switch, ip, _mac(c, e, path), port))

    raw_nodes: list[tuple[Any, ...]] = []
    for path, item in c.items(root, "nodes"):
        allowed = ("id", "site", "switch", "cpu_millis", "memory_mib", "ip", "mac", "port")
        if not c.mapping(item, path, allowed, ("id", "site", "switch", "cpu_millis", "memory_mib")):
            continue
        e = item.value
        name = c.name(e, "id", path)
        c.unique(ids, name, e["id"], f"{path}.id", "id")
        site = c.ref(e, "site", path, site_ids, "site")
        switch = c.ref(e, "switch", path, switch_names, "switch")
        if site is not None and switch in switches and switches[switch][1] != site:
            switch_site = switches[switch][1]
            c.error(e["site"], f"{path}.site", f"site {site!r} is not its switch {switch}'s site {switch_site!r}")
        cpu = c.number(e, "cpu_millis", path, minimum=0, exclusive=True, integer=True)
        memory = c.number(e, "memory_mib", path, minimum=0, exclusive=True, integer=True)
        ip = _ip(c, e, path, network)
        if "ip" in e:
            c.unique(ips, ip, e["ip"], f"{path}.ip", "ip")
        port = c.number(e, "port", path, minimum=1, integer=True, maximum=MAX_PORT)
        ports.reserve(switch, port, e.get("port"), f"{path}.port")
        raw_nodes.append((path, name, site, switch, cpu, memory, ip, _mac(c, e, path), port, "ip" in e, item))

    host_ids = {r[1] for r in raw_hosts if r[1]}
    service_names: dict[str, _Place] = {}
    raw_services: list[tuple[Any, ...]] = []
    for path, item in c.items(root, "services"):
        allowed = (
            "name",
            "port",
            "replicas",
            "cpu_millis",
            "memory_mib",
            "max_latency_ms",
            "max_request_latency_ms",
            "near",
            "calls",
            "allow_from",
            "protocol",
            "run",
            "env",
            "bandwidth_mbps",
        )
        if not c.mapping(item, path, allowed, ("name", "port", "replicas", "cpu_millis", "memory_mib")):
            continue
        e = item.value
        name = c.name(e, "name", path)
        c.unique(service_names, name, e["name"], f"{path}.name", "service")
        port = c.number(e, "port", path, minimum=1, integer=True, maximum=65535)
        replicas = c.number(e, "replicas", path, minimum=0, integer=True, maximum=10_000)
        cpu = c.number(e, "cpu_millis", path, minimum=0, exclusive=True, integer=True)
        memory = c.number(e, "memory_mib", path, minimum=0, exclusive=True, integer=True)
        max_latency = c.number(e, "max_latency_ms", path, minimum=MIN_LATENCY_SLO_MS)
        near = []
        for i, host, located in _names(c, e, "near", path):
            if host not in host_ids:
                c.error(located, f"{path}.near[{i}]", f"unknown host {host!r}")
            else:
                near.append(HostId(host))
        max_request = c.number(e, "max_request_latency_ms", path, minimum=MIN_LATENCY_SLO_MS)
        for key in ("max_latency_ms", "max_request_latency_ms"):
            if key in e and (e.get("near") is None or e["near"].value in (None, [])):
                message = "needs near: the SLO is the latency from the near hosts (list them)"
                c.error(e[key], f"{path}.{key}", message)
        bandwidth = c.number(e, "bandwidth_mbps", path, minimum=0, exclusive=True, maximum=MAX_BANDWIDTH_MBPS)
        if bandwidth is not None and not near:
            message = "needs near: each instance reserves it between the near hosts and itself (list them)"
            c.error(e["bandwidth_mbps"], f"{path}.bandwidth_mbps", message)
        calls = _calls(c, e, path)
        extras = fabric_policy.service_extras(c, e, path)
        raw_services.append(
            (path, name, port, replicas, cpu, memory, max_latency, tuple(near), calls, max_request, extras, bandwidth)
        )
    for path, _name, *_, calls, _max_request, extras, _bandwidth in raw_services:
        for i, callee, located, _weight, _call_bandwidth in calls:
            if callee not in service_names:
                c.error(located, f"{path}.calls[{i}]", f"unknown service {callee!r}")
        fabric_policy.reference_problems(c, extras, service_names, host_ids)
    default_policy = PolicyDefault.DENY
    if "authorization" in root:
        default_policy = fabric_policy.default_policy(c, root["authorization"][0])

    # Nodes without an ip get the highest free addresses of the subnet, in file order. Walk the
    # subnet lazily (a /8 holds 16M addresses) and report running out instead of raising.
    # (With a bad subnet, already reported, there is nothing to assign from.)
    free_ips = _free_addresses(network, ips) if network is not None else iter(())
    node_ips: list[str | None] = []
    for row in raw_nodes:
        path, ip, has_ip, item = row[0], row[6], row[9], row[10]
        if not has_ip and network is not None:
            ip = next(free_ips, None)
            if ip is None:
                c.error(item, f"{path}.ip", f"no ip given and no free address left in the subnet {network}")
        node_ips.append(ip)

    if c.problems or network is None:
        return None, c.problems

    # Everything checked: resolve ports and addresses deterministically, in file order.
    cables = tuple(
        CableSpec(a, ports.assign(a, ap, path), b, ports.assign(b, bp, path), float(lat), float(bw))
        for path, a, b, lat, bw, ap, bp in raw_links
    )
    hosts = tuple(
        HostSpec(HostId(name), sw, ports.assign(sw, port, path), ip, mac) for path, name, sw, ip, mac, port in raw_hosts
    )
    nodes = tuple(
        NodeSpec(
            NodeId(name),
            SiteId(site),
            sw,
            ports.assign(sw, port, path),
            str(node_ip),
            mac,
            int(cpu),
            int(memory),
        )
        for (path, name, site, sw, cpu, memory, _ip, mac, port, _has_ip, _item), node_ip in zip(
            raw_nodes, node_ips, strict=True
        )
    )
    services = tuple(
        Service(
            name=ServiceName(name),
            port=int(port),
            replicas=int(replicas),
            resources=Resources(int(cpu), int(memory)),
            max_latency_ms=None if max_latency is None else float(max_latency),
            near=near,
            calls=tuple(ServiceName(callee) for _, callee, _, _, _ in calls),
            call_weights=tuple(
                sorted((ServiceName(callee), weight) for _, callee, _, weight, _ in calls if weight is not None)
            ),
            max_request_latency_ms=None if max_request is None else float(max_request),
            allow_from=tuple(extras.allow_from),
            protocol=extras.protocol,
            run=extras.run,
            env=extras.env,
            bandwidth_mbps=None if bandwidth is None else float(bandwidth),
            call_bandwidth=tuple(
                sorted((ServiceName(callee), mbps) for _, callee, _, _, mbps in calls if mbps is not None)
            ),
        )
        for _path, name, port, replicas, cpu, memory, max_latency, near, calls, max_request, extras, bandwidth in (
            raw_services
        )
    )
    spec = FabricSpec(
        name=fabric_name,
        prefix_len=network.prefixlen,
        sites=tuple(sites.values()),
        switches=tuple(SwitchSpec(name, SwitchId(dpid), SiteId(site)) for name, (dpid, site) in switches.items()),
        cables=cables,
        hosts=hosts,
        nodes=nodes,
        services=services,
        default_policy=default_policy,
    )
    return spec, []


def _read_file(file: str, data: bytes | str, budget: _Budget) -> tuple[Located | None, list[Problem]]:
    """One file of a document: its YAML with lines, (None, []) when it holds nothing, or its problems."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            return None, [Problem(line, "<file>", "not UTF-8 text", file)]
    else:
        text = data
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        return None, [Problem(line, "<file>", "not valid YAML: contains a NUL byte", file)]
    return read_yaml(text, file, budget)


def _byte_count(data: bytes | str) -> int:
    return len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "replace"))


def too_large(file: str, size: int | None, limit: int = MAX_DOCUMENT_BYTES, what: str = "") -> Problem:
    """``FILE:1: <file>: too large (N bytes; at most 8 MiB)``; ``size`` None: more than ``limit`` (a file
    read no further than that). ``what``: e.g. " in all" for a whole document."""
    count = f"more than {limit}" if size is None else str(size)
    return Problem(1, "<file>", f"too large ({count} bytes{what}; at most {limit // MIB} MiB)", file)


def size_problems(files: Mapping[str, bytes | str], document: str) -> list[Problem]:
    """Files over ``MAX_DOCUMENT_BYTES``, and a document over ``MAX_DOCUMENT_TOTAL_BYTES``."""
    sizes = {name: _byte_count(data) for name, data in files.items()}
    problems = [too_large(name, size) for name, size in sorted(sizes.items()) if size > MAX_DOCUMENT_BYTES]
    total = sum(sizes.values())
    if total > MAX_DOCUMENT_TOTAL_BYTES and not problems:  # one line for one big file
        problems.append(too_large(document, total, MAX_DOCUMENT_TOTAL_BYTES, " in all"))
    return problems


def parse_desired(files: Mapping[str, bytes | str], document: str | None = None) -> FabricSpec:
    """Parse and check a document of one or more files (name -> contents; names appear in problems).

    Raise ``FabricFileError`` listing every problem, each naming its file. ``document`` names the whole
    in the error and in problems of no one file (default: the only file's name, else "<document>")."""
    names = sorted(files)
    if document is None:
        document = names[0] if len(names) == 1 else "<document>"
    if not names:
        raise FabricFileError(document, [Problem(1, "<file>", "no files: a document needs at least one", document)])
    problems = size_problems(files, document)
    if problems:
        raise FabricFileError(document, problems)
    budget = _Budget()  # one for the document: an alias bomb split over files is still one bomb
    tops: list[Located] = []
    unreadable = False  # a file that is not YAML: checking the others would only cascade (missing ids)
    for name in names:
        located, more = _read_file(name, files[name], budget)
        problems += more  # with a document: e.g. a duplicate key, reported along with the schema's problems
        if located is not None:
            tops.append(located)
        elif more:
            unreadable = True
    if not unreadable and not tops:  # one empty file says so as it always did; empty files among others are fine
        message = EMPTY_FILE if len(names) == 1 else "empty document: every file is empty"
        problems.append(Problem(1, "<file>", message, names[0] if len(names) == 1 else document))
    elif not unreadable:
        spec, more = _check(tops)
        problems += more
        if spec is not None and not problems:
            return spec
    raise FabricFileError(document, problems or [Problem(1, "<file>", "not a fabric file", document)])


def parse_fabric(data: bytes | str, filename: str = "<fabric>") -> FabricSpec:
    """Parse and check a fabric file's contents; raise ``FabricFileError`` listing every problem."""
    return parse_desired({filename: data}, filename)


def document_revision(files: Mapping[str, bytes]) -> str:
    """A document's content hash (sha256, hex): the same names and bytes give the same revision, whatever
    the files' times or order. Show its first 12 characters; keep the whole to compare."""
    digest = hashlib.sha256(b"edgectl desired document v1\n")
    for name in sorted(files):
        encoded = name.encode("utf-8", "surrogateescape")
        data = files[name]
        # Lengths first: ("a", b"bc") and ("ab", b"c") must not hash alike.
        digest.update(f"{len(encoded)}:{len(data)}\n".encode())
        digest.update(encoded)
        digest.update(data)
    return digest.hexdigest()
