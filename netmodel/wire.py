"""Decoding request bytes for the gRPC servers (xDS and placement) without ever raising. Pure.

grpcio turns an exception in a request deserializer into an opaque INTERNAL error, so the servers'
deserializers return an ``Undecodable`` instead, which the handler answers with a clear reason. A known
field sent with a wire type its type does not use is undecodable too: protobuf would keep it among the
unknown fields, where it looks absent. Field numbers the proto lacks are listed by ``unknown_fields``;
what to do with them is each server's policy (xDS tolerates them: a newer Envoy sends them; placement
refuses them: a newer client's constraint must not be dropped).

Only protobuf's pure message API is used: no grpc, no I/O (this is why it can live in netmodel, which
both servers already import, rather than in either server's package).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

WIRE_TYPES = {0: "varint", 1: "64-bit", 2: "length-delimited", 3: "group start", 4: "group end", 5: "32-bit"}
WIRE_TYPE_OF = dict(enumerate((1, 5, 0, 0, 0, 1, 5, 0, 2, 3, 2, 2, 0, 0, 5, 1, 0, 0), start=1))
"""Wire type of each ``FieldDescriptor.type``, 1 (double) to 18 (sint64)."""


class Undecodable:
    """What a ``safe_parser`` returns for bytes that are not a valid ``type_name``."""

    def __init__(self, type_name: str, error: str) -> None:
        self.type_name = type_name
        self.error = error

    @property
    def reason(self) -> str:
        return f"request is not a valid {self.type_name}: {self.error}"


@dataclass(frozen=True, slots=True)
class FieldProblems:
    """Fields of a decoded message (or of messages in it), each named by its path."""

    unknown: tuple[str, ...]
    """Field numbers the proto lacks, as ``path.number``."""
    wrong_wire_type: tuple[str, ...]
    """Known fields sent with another wire type than their type's, described."""


def field_problems(message: Message) -> FieldProblems:
    unknown: list[str] = []
    wrong: list[str] = []
    _walk(message, "", unknown, wrong)
    return FieldProblems(tuple(unknown), tuple(wrong))


def _walk(message: Message, path: str, unknown: list[str], wrong: list[str]) -> None:
    for field in UnknownFieldSet(message):
        known = message.DESCRIPTOR.fields_by_number.get(field.field_number)
        if known is None:
            unknown.append(f"{path}{field.field_number}")
        else:
            expected = WIRE_TYPE_OF.get(known.type, -1)
            wrong.append(
                f"wrong wire type for field {field.field_number} ({path}{known.name}): "
                f"{WIRE_TYPES.get(field.wire_type, str(field.wire_type))}, "
                f"expected {WIRE_TYPES.get(expected, str(expected))}"
            )
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None or descriptor.message_type.GetOptions().map_entry:
            continue
        values = value if descriptor.is_repeated else [value]
        for k, item in enumerate(values):
            where = f"{descriptor.name}[{k}]." if descriptor.is_repeated else f"{descriptor.name}."
            _walk(item, path + where, unknown, wrong)


def nothing_unknown(message: Message, encoded_size: int) -> bool:
    """True if ``message``, decoded from ``encoded_size`` bytes, holds no unknown field at any depth.
    Drops unknown fields from ``message`` (decode it again to see them).

    Walking every nested message in Python costs ~0.5 ms for an Envoy's node (hundreds of extensions),
    and almost every request has nothing unknown: protobuf's own C code decides that instead. The known
    fields re-encode to at most the bytes they came from, and unknown fields are bytes they came from
    too, so after dropping the unknown ones the size equals the input only if there were none (a
    request encoded unusually, e.g. with a field twice, merely takes the slow path)."""
    message.DiscardUnknownFields()
    return bool(message.ByteSize() == encoded_size)


def safe_parser(message_class: Any) -> Callable[[bytes], Any]:
    """A gRPC request deserializer: the decoded message, or an ``Undecodable`` saying why not
    (protobuf's decode error, or every known field sent with the wrong wire type)."""
    type_name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Any:
        try:
            message = message_class.FromString(data)
        except (DecodeError, ValueError, RuntimeError, RecursionError) as exc:
            return Undecodable(type_name, str(exc) or type(exc).__name__)
        if nothing_unknown(message, len(data)):
            return message
        message = message_class.FromString(data)  # the check dropped what was unknown: name it
        wrong = field_problems(message).wrong_wire_type
        return Undecodable(type_name, "; ".join(wrong)) if wrong else message

    return parse
