"""Protocol buffer wire format, by hand, for messages assembled from bytes encoded once. Pure.

Only what the xDS encoders need: varints, length-delimited fields and varint fields. Each function
writes what ``SerializeToString(deterministic=True)`` writes for the same field, so bytes assembled
here and bytes serialized by protobuf are equal (the unit tests hold both to that).
"""

from __future__ import annotations


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited scalar field (string, bytes); an empty one is left out, as proto3 does."""
    if not payload:
        return b""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def message_field(number: int, payload: bytes) -> bytes:
    """A submessage that is set: written even when empty (its presence is the information)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def text(number: int, value: str) -> bytes:
    return field(number, value.encode())


def element(number: int, value: str) -> bytes:
    """One element of a repeated string field: kept even when empty."""
    return message_field(number, value.encode())


def uint_field(number: int, value: int) -> bytes:
    """A varint field (uint32, enum); zero is left out, as proto3 does."""
    if not value:
        return b""
    return varint(number << 3) + varint(value)


def set_uint_field(number: int, value: int) -> bytes:
    """A varint field with presence (a oneof member, e.g. ``SocketAddress.port_value``): written even when 0."""
    return varint(number << 3) + varint(value)
