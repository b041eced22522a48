"""OpenFlow messages the controller sent and received, by type, and the errors switches reported (pure).

Types are OpenFlow message class names (``OFPFlowMod``) and error types (``bad_request``): both are
fixed by the protocol, so the label sets stay small whatever the switches send.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class MessageTotals:
    sent: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    errors: dict[tuple[str, int], int] = field(default_factory=dict)
    """(error type, code) -> how many error messages said so."""


class MessageCounts:
    """Counted from several threads (os-ken's event thread, the route engine, the probers): one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: Counter[str] = Counter()
        self._received: Counter[str] = Counter()
        self._errors: Counter[tuple[str, int]] = Counter()

    def sent(self, message_type: str, count: int = 1) -> None:
        with self._lock:
            self._sent[message_type] += count

    def received(self, message_type: str) -> None:
        with self._lock:
            self._received[message_type] += 1

    def error(self, error_type: str, code: int) -> None:
        with self._lock:
            self._errors[(error_type, code)] += 1

    def totals(self) -> MessageTotals:
        with self._lock:
            return MessageTotals(dict(self._sent), dict(self._received), dict(self._errors))
