"""The reservation plan of the newest model, computed once per model change and shared by the readers that
need it between engine rounds (``GET /api/v1/links``, the metrics). Incremental from the last plan."""

from __future__ import annotations

import threading

from netmodel.bandwidth import ReservationPlan, plan_reservations
from netmodel.state import FabricState


class ReservationCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plan: ReservationPlan | None = None
        self._state: FabricState | None = None

    def plan_for(self, state: FabricState) -> ReservationPlan:
        with self._lock:
            if self._plan is None or self._state is not state:
                self._plan = plan_reservations(state, self._plan)
                self._state = state
            return self._plan
