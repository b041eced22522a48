"""Drift: how a switch's tables differ from what edgectl last installed on it. Pure.

Only what edgectl owns is compared: the flows whose cookie is in edgectl's space (any table), and
the group and meter tables (edgectl's alone, as reconciliation already treats them). Flows with other cookies are
never read, so they are never reported nor touched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sdnctl.flows import SwitchConfig, SwitchDelta, diff_switch

K = TypeVar("K", bound=int)


@dataclass(frozen=True, slots=True)
class Drift:
    """What differs, as the delta that heals it (the switch's tables back to what was installed)."""

    heal: SwitchDelta

    @property
    def flows_missing(self) -> int:
        """Flows installed but absent (or present with other actions or cookie: the installed one is gone)."""
        return len(self.heal.add_flows) + len(self.heal.modify_flows)

    @property
    def flows_unexpected(self) -> int:
        """Flows in edgectl's cookie space that edgectl did not install."""
        return len(self.heal.delete_flows)

    @property
    def groups_differ(self) -> int:
        """Groups missing, changed or not installed by edgectl."""
        return len(self.heal.add_groups) + len(self.heal.modify_groups) + len(self.heal.delete_groups)

    @property
    def meters_differ(self) -> int:
        """Meters missing, changed or not installed by edgectl."""
        return len(self.heal.add_meters) + len(self.heal.modify_meters) + len(self.heal.delete_meters)

    def counts(self) -> dict[str, int]:
        return {
            "flows_missing": self.flows_missing,
            "flows_unexpected": self.flows_unexpected,
            "groups_differ": self.groups_differ,
            "meters_differ": self.meters_differ,
        }


def find_drift(installed: SwitchConfig, read: SwitchConfig) -> Drift | None:
    """None when the switch holds exactly what was installed; else the drift and its heal."""
    heal = diff_switch(read, installed)
    return Drift(heal) if heal else None


def drift_turn(sizes: Mapping[K, int], asked_at: Mapping[K, float], budget: int) -> list[K]:
    """The switches a drift check reads this time: of ``sizes`` (switch -> entries it holds), those
    asked longest ago first (never asked: first of all; ties in key order), while their entries fit in
    ``budget``, and always at least one. Every switch is read within ``sum(sizes) / budget + 1`` checks."""
    order = sorted(sizes, key=lambda k: (asked_at.get(k, -math.inf), k))
    turn: list[K] = []
    total = 0
    for key in order:
        total += sizes[key]
        if turn and total > budget:
            break
        turn.append(key)
    return turn


def drift_message(switch_name: str, dpid: int, drift: Drift) -> str:
    """The one log line of a drift found."""
    meters = f", {drift.meters_differ} meters differ" if drift.meters_differ else ""
    return (
        f"drift on switch {switch_name} (dpid {dpid:#x}): {drift.flows_missing} flows missing, "
        f"{drift.flows_unexpected} unexpected, {drift.groups_differ} groups differ{meters}; healing"
    )


@dataclass(slots=True)
class DriftRecord:
    """A switch's drift checks, for ``GET /api/v1/routes``: last check, last drift found, heals done."""

    checked_at: float | None = None
    found_at: float | None = None
    found: dict[str, int] | None = None
    heals: int = 0

    def checked(self, now: float, drift: Drift | None) -> None:
        self.checked_at = now
        if drift is not None:
            self.found_at = now
            self.found = drift.counts()

    def view(self) -> dict[str, Any]:
        return {
            "last_check_at": self.checked_at,
            "last_found": None if self.found_at is None else {"at": self.found_at, **(self.found or {})},
            "heals": self.heals,
        }
