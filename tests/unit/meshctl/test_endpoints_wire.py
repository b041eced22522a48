"""Endpoints assembled as bytes are the bytes protobuf serializes for the same message."""

from __future__ import annotations

import random

import pytest

from meshctl import envoy_config as ec
from meshctl.endpoints_wire import LoadAssignmentEncoder, assignment_digest, join_groups
from meshctl.wire_format import element, field, message_field, set_uint_field, text, uint_field, varint


def random_localities(rng: random.Random) -> list[ec.LocalityEndpoints]:
    groups = []
    for _ in range(rng.randint(0, 5)):
        endpoints = tuple(
            sorted(
                (
                    f"10.{rng.randint(0, 255)}.0.{rng.randint(0, 255)}" if rng.random() > 0.1 else "",
                    rng.choice([0, 1, 80, 65535]),  # port 0 is still written: port_value is in a oneof
                    rng.choice([0, 1, 2, 300]),
                )
                for _ in range(rng.randint(0, 4))
            )
        )
        groups.append(
            ec.LocalityEndpoints(
                rng.choice(["", "r1", "région"]),
                rng.choice(["", "z"]),
                rng.choice(["", "s" * 200]),  # a long name: a two-byte length
                endpoints,
                rng.choice([0, 1, 2, 200]),
            )
        )
    return groups


@pytest.mark.parametrize("seed", range(5))
def test_assembled_bytes_equal_protobufs_serialization(seed: int) -> None:
    rng = random.Random(seed)
    encoder = LoadAssignmentEncoder(max_entries=7, max_body_bytes=600)  # small: both caches start over on the way
    for _ in range(100):
        groups = random_localities(rng)
        name = rng.choice(["", "svc/a"])
        joined = join_groups(name, [encoder.group_field(group)[0] for group in groups if group.endpoints])
        assert joined == ec.load_assignment(name, groups).SerializeToString(deterministic=True)


def test_the_digest_follows_the_content() -> None:
    encoder = LoadAssignmentEncoder()
    one = ec.LocalityEndpoints("r", "z", "s", (("10.0.0.1", 80, 1),), 0)
    two = ec.LocalityEndpoints("r", "z", "s", (("10.0.0.2", 80, 1),), 0)
    digest = assignment_digest("svc/a", [encoder.group_field(one)[1]])
    assert digest == assignment_digest("svc/a", [encoder.group_field(one)[1]])
    assert digest != assignment_digest("svc/a", [encoder.group_field(two)[1]])
    assert digest != assignment_digest("svc/b", [encoder.group_field(one)[1]])
    assert digest != assignment_digest("svc/a", [encoder.group_field(one)[1], encoder.group_field(two)[1]])


def test_wire_primitives() -> None:
    assert varint(0) == b"\x00" and varint(300) == b"\xac\x02"
    assert field(1, b"") == b"" and message_field(1, b"") == b"\x0a\x00"
    assert text(2, "ab") == b"\x12\x02ab" and element(2, "") == b"\x12\x00"
    assert uint_field(3, 0) == b"" and uint_field(3, 5) == b"\x18\x05" and set_uint_field(3, 0) == b"\x18\x00"


def test_a_group_at_another_priority_reuses_its_bytes_but_its_priority() -> None:
    encoder = LoadAssignmentEncoder()
    endpoints = (("10.0.0.1", 80, 1), ("10.0.0.2", 80, 1))
    for priority in (0, 3, 0, 1):
        group = ec.LocalityEndpoints("r", "z", "s", endpoints, priority)
        assert join_groups("svc/a", [encoder.group_field(group)[0]]) == ec.load_assignment(
            "svc/a", [group]
        ).SerializeToString(deterministic=True)
    assert (
        encoder.group_field(ec.LocalityEndpoints("r", "z", "s", endpoints, 0))[1]
        != encoder.group_field(ec.LocalityEndpoints("r", "z", "s", endpoints, 1))[1]
    )  # the hash covers the priority
