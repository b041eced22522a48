"""Events and checkpoints as bytes for the replicated log: JSON, typed by the model's own annotations (pure).

Every type the codec writes or builds is listed here (``EVENT_TYPES``, ``_VALUE_TYPES``, ``_ENUMS``, and
``Topology``); decoding builds nothing else, whatever the data says. Each field is written by its declared
type: a dataclass as an object of its fields, tuples and frozensets as arrays, a map keyed by strings as an
object and any other map (keys that are dpids, port numbers, ``LinkId``s) as an array of [key, value] pairs,
in the map's order; enums by value, non-finite floats as "inf", "-inf" or "nan" (the JSON stays strict).
Events carry their type in "$type"; every document carries the codec's version. A checkpoint is compressed
(zlib), and so is an event batch past ``COMPRESS_BATCH_ABOVE`` bytes.

Decoding checks each value against its field's type, so a malformed entry is a ``CodecError`` saying where
(``events[2] SwitchConnected.ports[0].no: expected an integer, got a string '1'``), never a half-built model.
A field absent from the data takes its default when it has one (written before the field existed); a field
the codec does not know is an error (written by a newer codec: better stop than drop it).
"""

from __future__ import annotations

import enum
import json
import numbers
import operator
import types
import typing
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, fields
from functools import cache
from typing import Any

from netmodel import events as ev
from netmodel import types as nt
from netmodel.events import Event
from netmodel.fabric import CableSpec, FabricSpec, HostSpec, NodeSpec, SwitchSpec
from netmodel.ids import SwitchId
from netmodel.state import FabricState
from netmodel.topology import Topology

__all__ = ["EVENT_TYPES", "CodecError", "decode_events", "decode_state", "encode_events", "encode_state"]

FORMAT_VERSION = 1
"""Written into every document; a document of another version is refused, not guessed at."""
COMPRESSION_LEVEL = 1
"""zlib level: on this JSON, level 1 compresses to within a third of level 6's size, more than twice as fast."""
COMPRESS_BATCH_ABOVE = 16 * 1024
"""An event batch larger than this (a latency round over a big fabric, a desired state) is stored compressed:
etcd keeps every revision until compaction and refuses a request over 1.5 MiB. Smaller ones stay readable."""

EVENT_TYPES: tuple[type, ...] = (
    ev.SwitchConnected,
    ev.SwitchDisconnected,
    ev.PortStatusChanged,
    ev.PortDeleted,
    ev.LinkDiscovered,
    ev.LinkWentDown,
    ev.LinkCameUp,
    ev.LinkLatencyMeasured,
    ev.LinkLoadMeasured,
    ev.HostLearned,
    ev.HostsExpired,
    ev.NodeWentDown,
    ev.NodeCameUp,
    ev.WorkloadPlaced,
    ev.WorkloadRemoved,
    ev.WorkloadHealthChanged,
    ev.WorkloadStarting,
    ev.DesiredStateApplied,
)
_VALUE_TYPES: tuple[type, ...] = (
    nt.Site,
    nt.Port,
    nt.Switch,
    nt.LinkId,
    nt.LinkAttrs,
    nt.Attachment,
    nt.Host,
    nt.Resources,
    nt.ComputeNode,
    nt.CallWeight,
    nt.AllowRule,
    nt.Service,
    nt.AffinityTerm,
    nt.PlacementConstraints,
    nt.Workload,
    SwitchSpec,
    CableSpec,
    HostSpec,
    NodeSpec,
    FabricSpec,
    FabricState,
)
_ENUMS: tuple[type[enum.Enum], ...] = (nt.Tier, nt.PolicyDefault, nt.Protocol, nt.AffinityScope)
_FORWARD_REFS = {"FabricSpec": FabricSpec}  # netmodel.events names it only for the type checker

_TAG = "$type"
_NONFINITE = {"inf": float("inf"), "-inf": float("-inf"), "nan": float("nan")}
_ABSENT = object()

Encode = Callable[[Any], Any]
Decode = Callable[[Any], Any]


class CodecError(ValueError):
    """What is wrong with a value, and where in the document: ``events[0] LinkDiscovered.link.src: ...``."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.message = message
        self.where = where

    def inside(self, outer: str) -> CodecError:
        """The same error seen from the value that holds this one."""
        return CodecError(self.message, outer + self.where)


# -- the four entry points ----------------------------------------------------------------------------


def encode_events(events: Sequence[Event]) -> bytes:
    """One log entry: a batch of events, in order."""
    codecs = _codecs()
    out = []
    for i, event in enumerate(events):
        encode = codecs.event_encoders.get(type(event))
        if encode is None:
            raise CodecError(f"{type(event).__name__} is not a netmodel event", f"events[{i}]")
        try:
            out.append(encode(event))
        except CodecError as e:
            raise e.inside(f"events[{i}] {type(event).__name__}") from None
    data = _dump({"codec": FORMAT_VERSION, "events": out})
    return zlib.compress(data, COMPRESSION_LEVEL) if len(data) > COMPRESS_BATCH_ABOVE else data


def decode_events(data: bytes) -> list[Event]:
    """A batch as ``encode_events`` wrote it, compressed or not (JSON never starts as zlib's header does)."""
    if isinstance(data, bytes | bytearray | memoryview) and bytes(data[:1]) == _ZLIB_HEADER:
        data = _decompressed(data, "an event batch")
    body = _envelope(_parse(data, "an event batch"), "events")
    if type(body) is not list:
        raise CodecError(f"expected an array of events, got {_shown(body)}", "events")
    decoders = _codecs().event_decoders
    out = []
    for i, item in enumerate(body):
        tag = item.get(_TAG) if type(item) is dict else None
        decode = decoders.get(tag) if type(tag) is str else None
        if decode is None:
            if type(item) is not dict:
                raise CodecError(f"expected an event object, got {_shown(item)}", f"events[{i}]")
            raise CodecError(f"unknown event type {tag!r}", f"events[{i}].{_TAG}")
        try:
            out.append(decode(item))
        except CodecError as e:
            raise e.inside(f"events[{i}] {tag}") from None
    return out


def encode_state(state: FabricState) -> bytes:
    """A checkpoint: the whole model, zlib-compressed JSON."""
    try:
        body = _codecs().state[0](state)
    except CodecError as e:
        raise e.inside("state") from None
    return zlib.compress(_dump({"codec": FORMAT_VERSION, "state": body}), COMPRESSION_LEVEL)


def decode_state(data: bytes) -> FabricState:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"a checkpoint must be bytes, got {type(data).__name__}")
    body = _envelope(_parse(_decompressed(data, "a checkpoint"), "a checkpoint"), "state")
    try:
        state: FabricState = _codecs().state[1](body)
    except CodecError as e:
        raise e.inside("state") from None
    return state


# -- documents ------------------------------------------------------------------------------------------


_ZLIB_HEADER = b"x"  # 0x78: deflate with a 32 KiB window, whatever the level


def _decompressed(data: bytes | bytearray | memoryview, what: str) -> bytes:
    try:
        return zlib.decompress(data)
    except zlib.error as e:
        raise CodecError(f"{what} is not zlib-compressed JSON ({e})") from None


def _dump(document: dict[str, Any]) -> bytes:
    try:
        text = json.dumps(document, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:  # a value in no typed field: cannot happen for the registered types
        raise CodecError(f"not encodable: {e}") from None
    return text.encode("ascii")


def _reject_constant(name: str) -> Any:
    raise CodecError(f"{name} is not JSON (non-finite floats are written as strings)")


def _parse(data: bytes, what: str) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"{what} must be bytes, got {type(data).__name__}")
    try:
        return json.loads(bytes(data), parse_constant=_reject_constant)
    except CodecError:
        raise
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise CodecError(f"{what} is not JSON: {e}") from None


def _envelope(document: Any, key: str) -> Any:
    if type(document) is not dict:
        raise CodecError(f"expected a document object, got {_shown(document)}")
    version = document.get("codec")
    if version != FORMAT_VERSION or type(version) is not int:
        raise CodecError(f"codec version {version!r} is not supported (this replica reads {FORMAT_VERSION})", "codec")
    if set(document) != {"codec", key}:
        raise CodecError(f"expected the fields codec and {key}, got {sorted(document)}")
    return document[key]


def _shown(value: Any) -> str:
    """A JSON value as an error message names it: its kind and (the start of) its text."""
    kind = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer"}.get(
        type(value), "a number" if type(value) is float else "null" if value is None else type(value).__name__
    )
    return f"{kind} {_cut(repr(value))}" if value is not None else kind


def _cut(text: str) -> str:
    """At most 60 characters of a value in a message: a log line, not a dump of the entry."""
    return text[:57] + "..." if len(text) > 60 else text


# -- the registry, compiled once on first use ------------------------------------------------------------


class _Codecs:
    def __init__(self) -> None:
        self._dataclasses: dict[type, tuple[Encode, Decode]] = {}
        self.event_encoders: dict[type, Encode] = {}
        self.event_decoders: dict[str, Decode] = {}
        for cls in EVENT_TYPES:
            encode, decode = _dataclass(cls, self, tagged=True)
            self.event_encoders[cls] = encode
            self.event_decoders[cls.__name__] = decode
        self.state = self.dataclass(FabricState)

    def dataclass(self, cls: type) -> tuple[Encode, Decode]:
        if cls not in self._dataclasses:
            self._dataclasses[cls] = _dataclass(cls, self, tagged=False)
        return self._dataclasses[cls]

    def of(self, tp: Any, where: str) -> tuple[Encode, Decode]:
        """The codec of a declared type; a type the registry lacks fails here, at the first use of the codec."""
        while hasattr(tp, "__supertype__"):  # a NewType id: its base type
            tp = tp.__supertype__
        simple = _SIMPLE.get(tp)
        if simple is not None:
            return simple
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (types.UnionType, typing.Union) and len(args) == 2 and type(None) in args:
            return _optional(self.of(next(a for a in args if a is not type(None)), where))
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return _tuple_of(self.of(args[0], where))
        if origin is tuple and args and Ellipsis not in args:
            return _fixed_tuple([self.of(a, where) for a in args])
        if origin is frozenset and len(args) == 1:
            return _frozenset_of(self.of(args[0], where))
        if origin is Mapping and len(args) == 2:
            key = args[0]
            while hasattr(key, "__supertype__"):
                key = key.__supertype__
            value = self.of(args[1], where)
            return _str_map(value) if key is str else _pair_map(self.of(key, where), value)
        if tp in _ENUMS:
            return _enum(tp)
        if tp is Topology:
            return _topology(self)
        if tp in _VALUE_TYPES:
            return self.dataclass(tp)
        raise TypeError(f"{where}: no codec for {tp!r}; add the type to cluster/codec.py's registry")


@cache
def _codecs() -> _Codecs:
    return _Codecs()


def _dataclass(cls: type, codecs: _Codecs, *, tagged: bool) -> tuple[Encode, Decode]:
    hints = typing.get_type_hints(cls, localns=_FORWARD_REFS)
    # Each field with the one JSON type its values may take as they are (a str field's strings, say): those
    # skip the call of the field's codec, which most fields of a checkpoint are.
    encoders: list[tuple[str, type, Encode]] = []
    decoders: list[tuple[str, type, Decode, bool]] = []
    for f in fields(cls):
        hint = hints[f.name]
        encode, decode = codecs.of(hint, f"{cls.__name__}.{f.name}")
        as_is = _as_is(hint)
        encoders.append((f.name, _Never if as_is is float else as_is, encode))  # a float may be inf or nan
        decoders.append((f.name, as_is, decode, f.default is MISSING and f.default_factory is MISSING))
    known = {name for name, _, _ in encoders} | ({_TAG} if tagged else set())
    extra = 1 if tagged else 0
    name_of = cls.__name__

    def encode_dataclass(obj: Any) -> dict[str, Any]:
        if type(obj) is not cls:
            raise CodecError(f"expected a {name_of}, got {type(obj).__name__}")
        out: dict[str, Any] = {_TAG: name_of} if tagged else {}
        name = ""
        try:
            for name, as_is, encode in encoders:
                value = getattr(obj, name)
                out[name] = value if type(value) is as_is else encode(value)
        except CodecError as e:
            raise e.inside(f".{name}") from None
        return out

    def decode_dataclass(data: Any) -> Any:
        if type(data) is not dict:
            raise CodecError(f"expected a {name_of} object, got {_shown(data)}")
        kwargs = {}
        name = ""
        try:
            for name, as_is, decode, required in decoders:
                value = data.get(name, _ABSENT)
                if type(value) is as_is:
                    kwargs[name] = value
                elif value is not _ABSENT:
                    kwargs[name] = decode(value)
                elif required:
                    raise CodecError(f"missing (a {name_of} needs it)")
        except CodecError as e:
            raise e.inside(f".{name}") from None
        if len(data) != len(kwargs) + extra:
            unknown = sorted(set(data) - known)
            raise CodecError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} of {name_of}")
        return cls(**kwargs)

    return encode_dataclass, decode_dataclass


class _Never:
    """The JSON type of a field whose values always go through its codec."""


def _as_is(hint: Any) -> type:
    """The JSON type a field's values are written in as they are: a str field's str, an optional int's int."""
    while hasattr(hint, "__supertype__"):
        hint = hint.__supertype__
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        others = [a for a in typing.get_args(hint) if a is not type(None)]
        return _as_is(others[0]) if len(others) == 1 else _Never
    return hint if hint in _SIMPLE else _Never


# -- scalars ----------------------------------------------------------------------------------------------


def _encode_str(value: Any) -> Any:
    if isinstance(value, str):
        return value
    raise CodecError(f"expected a string, got {type(value).__name__} {value!r}")


def _decode_str(value: Any) -> Any:
    if type(value) is str:
        return value
    raise CodecError(f"expected a string, got {_shown(value)}")


def _encode_int(value: Any) -> Any:
    if type(value) is int:
        return value
    if not isinstance(value, bool):
        try:
            return operator.index(value)  # numpy's integers
        except TypeError:
            pass
    raise CodecError(f"expected an integer, got {type(value).__name__} {value!r}")


def _decode_int(value: Any) -> Any:
    if type(value) is int:
        return value
    raise CodecError(f"expected an integer, got {_shown(value)}")


def _encode_bool(value: Any) -> Any:
    if type(value) is bool:
        return value
    raise CodecError(f"expected a boolean, got {type(value).__name__} {value!r}")


def _decode_bool(value: Any) -> Any:
    if type(value) is bool:
        return value
    raise CodecError(f"expected a boolean, got {_shown(value)}")


def _encode_float(value: Any) -> Any:
    """An int stays an int (a float field may hold one: decoded, it is the same int)."""
    if type(value) is float:
        return value if value - value == 0 else ("nan" if value != value else "inf" if value > 0 else "-inf")
    if type(value) is int:
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):  # numpy's numbers
        return _encode_float(int(value) if isinstance(value, numbers.Integral) else float(value))
    raise CodecError(f"expected a number, got {type(value).__name__} {value!r}")


def _decode_float(value: Any) -> Any:
    kind = type(value)
    if kind is float or kind is int:
        return value
    if kind is str and value in _NONFINITE:
        return _NONFINITE[value]
    raise CodecError(f'expected a number (or "inf", "-inf", "nan"), got {_shown(value)}')


_SIMPLE: dict[Any, tuple[Encode, Decode]] = {
    str: (_encode_str, _decode_str),
    int: (_encode_int, _decode_int),
    bool: (_encode_bool, _decode_bool),
    float: (_encode_float, _decode_float),
}


# -- containers ------------------------------------------------------------------------------------------


def _first_error(check: Callable[[Any], Any], items: Sequence[Any], where: Callable[[int], str]) -> CodecError:
    """After a comprehension failed: which item fails, as an error located there (the fast path keeps no index)."""
    for i, item in enumerate(items):
        try:
            check(item)
        except CodecError as e:
            return e.inside(where(i))
    return CodecError("inconsistent value")  # pragma: no cover - check is deterministic


def _optional(inner: tuple[Encode, Decode]) -> tuple[Encode, Decode]:
    encode, decode = inner

    def encode_optional(value: Any) -> Any:
        return None if value is None else encode(value)

    def decode_optional(value: Any) -> Any:
        return None if value is None else decode(value)

    return encode_optional, decode_optional


def _tuple_of(item: tuple[Encode, Decode]) -> tuple[Encode, Decode]:
    encode, decode = item

    def encode_tuple(value: Any) -> Any:
        if not isinstance(value, tuple | list):
            raise CodecError(f"expected a tuple, got {type(value).__name__}")
        try:
            return [encode(x) for x in value]
        except CodecError:
            raise _first_error(encode, value, "[{}]".format) from None

    def decode_tuple(value: Any) -> Any:
        if type(value) is not list:
            raise CodecError(f"expected an array, got {_shown(value)}")
        try:
            return tuple([decode(x) for x in value])
        except CodecError:
            raise _first_error(decode, value, "[{}]".format) from None

    return encode_tuple, decode_tuple


def _fixed_tuple(items: list[tuple[Encode, Decode]]) -> tuple[Encode, Decode]:
    size = len(items)

    def encode_fixed(value: Any) -> Any:
        if not isinstance(value, tuple | list) or len(value) != size:
            raise CodecError(f"expected a tuple of {size}, got {type(value).__name__} {value!r}")
        out = []
        for i, ((encode, _), x) in enumerate(zip(items, value, strict=True)):
            try:
                out.append(encode(x))
            except CodecError as e:
                raise e.inside(f"[{i}]") from None
        return out

    def decode_fixed(value: Any) -> Any:
        if type(value) is not list or len(value) != size:
            raise CodecError(f"expected an array of {size}, got {_shown(value)}")
        out = []
        for i, ((_, decode), x) in enumerate(zip(items, value, strict=True)):
            try:
                out.append(decode(x))
            except CodecError as e:
                raise e.inside(f"[{i}]") from None
        return tuple(out)

    return encode_fixed, decode_fixed


def _frozenset_of(item: tuple[Encode, Decode]) -> tuple[Encode, Decode]:
    encode, decode = _tuple_of(item)

    def encode_set(value: Any) -> Any:
        if not isinstance(value, frozenset | set):
            raise CodecError(f"expected a frozenset, got {type(value).__name__}")
        return sorted(encode(tuple(value)), key=json.dumps)  # the same bytes whatever the hash seed

    def decode_set(value: Any) -> Any:
        return frozenset(decode(value))

    return encode_set, decode_set


def _str_map(value_codec: tuple[Encode, Decode]) -> tuple[Encode, Decode]:
    """A map keyed by strings (ids): a JSON object, in the map's order."""
    encode, decode = value_codec

    def encode_map(value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise CodecError(f"expected a mapping, got {type(value).__name__}")
        try:
            return {k if type(k) is str else _str_key(k): encode(v) for k, v in value.items()}
        except CodecError:
            pairs = list(value.items())
            raise _first_error(lambda kv: (_str_key(kv[0]), encode(kv[1])), pairs, _key_at(pairs)) from None

    def decode_map(value: Any) -> Any:
        if type(value) is not dict:
            raise CodecError(f"expected an object, got {_shown(value)}")
        try:
            return nt.frozen_map({k: decode(v) for k, v in value.items()})
        except CodecError:
            pairs = list(value.items())
            raise _first_error(lambda kv: decode(kv[1]), pairs, _key_at(pairs)) from None

    return encode_map, decode_map


def _str_key(key: Any) -> Any:
    if type(key) is str:
        return key
    raise CodecError(f"expected a string key, got {type(key).__name__} {key!r}")


def _key_at(pairs: list[tuple[Any, Any]]) -> Callable[[int], str]:
    return lambda i: f"[{_cut(repr(pairs[i][0]))}]"


def _pair_map(key_codec: tuple[Encode, Decode], value_codec: tuple[Encode, Decode]) -> tuple[Encode, Decode]:
    """A map keyed by anything else (dpids, port numbers, LinkIds): [[key, value], ...], in the map's order."""
    encode_key, decode_key = key_codec
    encode_value, decode_value = value_codec

    def encode_pair(kv: tuple[Any, Any]) -> list[Any]:
        try:
            key = encode_key(kv[0])
        except CodecError as e:
            raise e.inside(".key") from None
        try:
            return [key, encode_value(kv[1])]
        except CodecError as e:
            raise e.inside(".value") from None

    def encode_map(value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise CodecError(f"expected a mapping, got {type(value).__name__}")
        try:
            return [[encode_key(k), encode_value(v)] for k, v in value.items()]
        except CodecError:
            pairs = list(value.items())
            raise _first_error(encode_pair, pairs, _key_at(pairs)) from None

    def decode_pair(pair: Any) -> tuple[Any, Any]:
        if type(pair) is not list or len(pair) != 2:
            raise CodecError(f"expected a [key, value] pair, got {_shown(pair)}")
        try:
            key = decode_key(pair[0])
        except CodecError as e:
            raise e.inside(".key") from None
        try:
            return key, decode_value(pair[1])
        except CodecError as e:
            raise e.inside(".value") from None

    def decode_map(value: Any) -> Any:
        if type(value) is not list:
            raise CodecError(f"expected an array of [key, value] pairs, got {_shown(value)}")
        try:
            out = dict([decode_pair(pair) for pair in value])
        except CodecError:
            raise _first_error(decode_pair, value, "[{}]".format) from None
        if len(out) != len(value):
            seen: set[Any] = set()
            for i, pair in enumerate(value):
                key = decode_pair(pair)[0]
                if key in seen:
                    raise CodecError(f"the key {key!r} appears twice", f"[{i}]")
                seen.add(key)
        return nt.frozen_map(out)

    return encode_map, decode_map


def _enum(cls: type[enum.Enum]) -> tuple[Encode, Decode]:
    allowed = ", ".join(repr(m.value) for m in cls)

    def encode_enum(value: Any) -> Any:
        if type(value) is cls:
            return value.value
        try:
            return cls(value).value  # its value as a plain string: the same member
        except (ValueError, TypeError):
            raise CodecError(f"expected a {cls.__name__} ({allowed}), got {value!r}") from None

    def decode_enum(value: Any) -> Any:
        if type(value) is str:
            try:
                return cls(value)
            except ValueError:
                pass
        raise CodecError(f"expected a {cls.__name__} ({allowed}), got {_shown(value)}")

    return encode_enum, decode_enum


def _topology(codecs: _Codecs) -> tuple[Encode, Decode]:
    """Switches and links; the graph is rebuilt from them, in their order (the order it was built in)."""
    encode_switches, decode_switches = codecs.of(Mapping[SwitchId, nt.Switch], "Topology.switches")
    encode_links, decode_links = codecs.of(Mapping[nt.LinkId, nt.LinkAttrs], "Topology.links")

    def encode_topology(value: Any) -> Any:
        if type(value) is not Topology:
            raise CodecError(f"expected a Topology, got {type(value).__name__}")
        try:
            switches = encode_switches(value.switches)
        except CodecError as e:
            raise e.inside(".switches") from None
        try:
            return {"switches": switches, "links": encode_links(value.links)}
        except CodecError as e:
            raise e.inside(".links") from None

    def decode_topology(value: Any) -> Any:
        if type(value) is not dict or set(value) != {"switches", "links"}:
            raise CodecError(f"expected a Topology object (switches, links), got {_shown(value)}")
        try:
            switches = decode_switches(value["switches"])
        except CodecError as e:
            raise e.inside(".switches") from None
        try:
            links = decode_links(value["links"])
        except CodecError as e:
            raise e.inside(".links") from None
        for i, link in enumerate(links):
            if link.src not in switches or link.dst not in switches:
                raise CodecError(f"the link {link} names a switch the topology does not have", f".links[{i}]")
        return Topology(switches, links)

    return encode_topology, decode_topology
