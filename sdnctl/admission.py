"""Which OpenFlow connections the controller keeps: pure rules, no sockets, no clock of their own.

A peer costs three threads from the moment it connects, before it has proved to be a switch. So the
connections still in their handshake (HELLO, FEATURES, port description) are bounded in number and in
time, and a connection is dropped once it leaves too many echo requests unanswered. The adapter
(``sdnctl.connections``) asks these rules and acts; every answer depends only on its arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

OFP_HEADER_SIZE = 8

ECHO_TIMEOUT = "echo timeout"
HANDSHAKE_TIMEOUT = "handshake timeout"


def header_length_problem(declared_length: int, available: int) -> str | None:
    """Why an OpenFlow message whose header declares ``declared_length`` bytes is malformed, or None.

    A header's length counts the header itself: below 8 it says nothing (os-ken would read 8 bytes and
    take whatever type they name, a length-0 HELLO included); ``available`` is what arrived for it.
    """
    if declared_length < OFP_HEADER_SIZE:
        return f"header declares length {declared_length}, below the {OFP_HEADER_SIZE}-byte header itself"
    if available < declared_length:
        return f"message of {available} bytes claims {declared_length}"
    return None


def overdue(
    *,
    now: float,
    connected_at: float,
    handshake_done: bool,
    handshake_timeout_s: float | None,
    unreplied_echoes: int,
    max_unreplied_echoes: int,
    unread_bytes: int = 0,
) -> str | None:
    """Why a connection must be dropped now, or None: echo requests unanswered, or a handshake too long.
    Echoes count as unanswered only while nothing the switch sent waits unread (``unread_bytes``): a
    controller behind on its reads is not a dead switch, and dropping switches that answered in time made a
    busy controller busier still (each reconnects, sends its ports, has its tables read back: at 500
    switches one drop led to thousands)."""
    if max_unreplied_echoes and unreplied_echoes > max_unreplied_echoes and unread_bytes == 0:
        return ECHO_TIMEOUT
    if not handshake_done and handshake_timeout_s is not None and now - connected_at >= handshake_timeout_s:
        return HANDSHAKE_TIMEOUT
    return None


class HandshakeSlots:
    """At most ``limit`` connections in their handshake at once. Not thread-safe: the caller locks."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the limit of connections in their handshake must be at least 1, not {limit}")
        self.limit = limit
        self.taken = 0

    def take(self) -> bool:
        """A slot for a new connection, or False when all are taken (the connection is refused)."""
        if self.taken >= self.limit:
            return False
        self.taken += 1
        return True

    def give_back(self) -> None:
        """The connection finished its handshake or ended: its slot is free again."""
        if self.taken <= 0:
            raise RuntimeError("a handshake slot given back that was never taken")
        self.taken -= 1


@dataclass
class Throttle:
    """One log line per ``interval_s`` for a repeated event, with the count of those not logged.

    ``note(now)`` returns None while quiet, else how many events the line stands for (this one and the
    ones swallowed since the last line). Not thread-safe: the caller locks.
    """

    interval_s: float
    _last_line_at: float | None = None
    _swallowed: int = 0

    def note(self, now: float) -> int | None:
        if self._last_line_at is not None and now - self._last_line_at < self.interval_s:
            self._swallowed += 1
            return None
        count = self._swallowed + 1
        self._last_line_at = now
        self._swallowed = 0
        return count

    def flush_due_at(self) -> float | None:
        """When ``flush`` will report the events swallowed so far, or None if there are none."""
        if not self._swallowed or self._last_line_at is None:
            return None
        return self._last_line_at + self.interval_s

    def flush(self, now: float) -> int | None:
        """Once the interval has passed: how many events were swallowed since the last line, if any."""
        if not self._swallowed or (self._last_line_at is not None and now - self._last_line_at < self.interval_s):
            return None
        count = self._swallowed
        self._last_line_at = now
        self._swallowed = 0
        return count


@dataclass(frozen=True)
class ConnectionLimits:
    """How long and how many OpenFlow connections may stay in their handshake (see the module doc)."""

    max_handshaking: int = 256
    handshake_timeout_s: float | None = 10.0
    refusal_log_interval_s: float = 10.0
