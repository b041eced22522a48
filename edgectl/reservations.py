"""The reservation plan of the newest model for the readers that need it between engine rounds (``GET
/api/v1/links``, the metrics): the route engine's own plan when it is of that model, else computed once
per model change, incrementally from the last."""

from __future__ import annotations

import threading
from collections.abc import Callable

from netmodel.bandwidth import ReservationPlan, plan_reservations
from netmodel.state import FabricState


class ReservationCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plan: ReservationPlan | None = None
        self._state: FabricState | None = None
        self._engine: Callable[[], ReservationPlan] | None = None

    def follow(self, engine_plan: Callable[[], ReservationPlan]) -> None:
        """Use the route engine's plan (``RouteEngine.reservation_plan``) whenever it is of the model asked
        about: the same plan, not a second computation of it."""
        self._engine = engine_plan

    def plan_for(self, state: FabricState) -> ReservationPlan:
        if self._engine is not None:
            plan = self._engine()
            if plan.generation == state.generation:
                return plan
        with self._lock:
            if self._plan is None or self._state is not state:
                self._plan = plan_reservations(state, self._plan)
                self._state = state
            return self._plan
