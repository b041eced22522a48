"""sdnctl.admission: which OpenFlow connections are kept, decided from numbers alone."""

from __future__ import annotations

import pytest

from sdnctl.admission import (
    ECHO_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    HandshakeSlots,
    Throttle,
    header_length_problem,
    overdue,
)


@pytest.mark.parametrize("declared", [0, 1, 7])
def test_a_header_declaring_less_than_itself_is_malformed(declared: int) -> None:
    problem = header_length_problem(declared, available=8)
    assert problem is not None and f"length {declared}" in problem


def test_a_message_shorter_than_declared_is_malformed_and_a_whole_one_is_not() -> None:
    assert header_length_problem(16, available=12) == "message of 12 bytes claims 16"
    assert header_length_problem(8, available=8) is None
    assert header_length_problem(16, available=16) is None


def kept(**changes: object) -> str | None:
    args: dict[str, object] = {
        "now": 100.0,
        "connected_at": 95.0,
        "handshake_done": False,
        "handshake_timeout_s": 10.0,
        "unreplied_echoes": 0,
        "max_unreplied_echoes": 3,
    }
    args.update(changes)
    return overdue(**args)  # type: ignore[arg-type]


def test_echo_timeout_after_more_than_the_allowed_unanswered_echoes() -> None:
    assert kept(unreplied_echoes=3) is None
    assert kept(unreplied_echoes=4) == ECHO_TIMEOUT
    assert kept(unreplied_echoes=4, handshake_done=True) == ECHO_TIMEOUT
    assert kept(unreplied_echoes=40, max_unreplied_echoes=0) is None  # echo disabled


def test_echoes_unanswered_while_the_switchs_bytes_wait_unread_keep_the_switch() -> None:
    """The replies may be among them: this controller is behind on its reads, the switch is alive."""
    assert kept(unreplied_echoes=40, unread_bytes=16) is None
    assert kept(unreplied_echoes=40, unread_bytes=0) == ECHO_TIMEOUT
    assert kept(now=105.0, unread_bytes=16) == HANDSHAKE_TIMEOUT, "a handshake still has its deadline"


def test_handshake_deadline_counts_from_the_connection() -> None:
    assert kept(now=104.9) is None
    assert kept(now=105.0) == HANDSHAKE_TIMEOUT
    assert kept(now=500.0, handshake_done=True) is None
    assert kept(now=500.0, handshake_timeout_s=None) is None


def test_slots_bound_connections_in_their_handshake() -> None:
    slots = HandshakeSlots(2)
    assert slots.take() and slots.take()
    assert not slots.take()
    slots.give_back()
    assert slots.take()
    assert slots.taken == 2


def test_slots_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        HandshakeSlots(0)
    with pytest.raises(RuntimeError):
        HandshakeSlots(1).give_back()


def test_throttle_logs_once_per_interval_with_the_swallowed_count() -> None:
    throttle = Throttle(interval_s=10.0)
    assert throttle.note(0.0) == 1
    assert throttle.note(1.0) is None
    assert throttle.note(9.9) is None
    assert throttle.note(10.0) == 3  # this one and the two swallowed
    assert throttle.note(25.0) == 1


def test_throttle_flush_reports_what_was_swallowed_once_the_interval_passed() -> None:
    throttle = Throttle(interval_s=10.0)
    assert throttle.flush(0.0) is None  # nothing swallowed
    assert throttle.note(0.0) == 1
    assert throttle.note(1.0) is None
    assert throttle.note(2.0) is None
    assert throttle.flush_due_at() == 10.0
    assert throttle.flush(5.0) is None  # too early
    assert throttle.flush(10.0) == 2
    assert throttle.flush(30.0) is None
    assert throttle.flush_due_at() is None
    assert throttle.note(30.0) == 1
