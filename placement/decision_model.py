"""What a Place decides on, kept from one Place to the next. Adapter-free, no I/O.

A Place needs, of the model it decides on: the cluster snapshot (free room, instances per node), the
ports each node's instances listen on, and each service's highest workload number. Built from the model
each costs a pass over every instance (at 10,000 instances: ~100 ms, under the decision lock). Placements
are mostly followed by nothing but the next placement, so the orchestrator keeps them here and
advances them by the instances it placed itself (``settle``); any other change to the model (an event
from elsewhere between two Places) makes the next ``on`` rebuild them from the model.
"""

from __future__ import annotations

from collections.abc import Sequence

from netmodel.bandwidth import ReservationPlan
from netmodel.ids import NodeId, ServiceName
from netmodel.state import FabricState
from netmodel.types import Workload
from placement.latency import LatencyCache
from placement.naming import workload_number
from placement.snapshot import ClusterSnapshot


def ports_in_use(state: FabricState) -> dict[NodeId, set[int]]:
    """Per node, the ports its instances listen on (``<node address>:<port>``, their sidecars' inbound)."""
    taken: dict[NodeId, set[int]] = {}
    for workload in state.workloads.values():
        port = _port_of(state, workload)
        if workload.node is not None and port:
            taken.setdefault(workload.node, set()).add(port)
    return taken


def highest_numbers(state: FabricState) -> dict[ServiceName, int]:
    """Per service, the highest n of its instances named ``<service>-<n>``."""
    highest: dict[ServiceName, int] = {}
    for workload in state.workloads.values():
        n = workload_number(workload.service, workload.id)
        if n is not None and n > highest.get(workload.service, 0):
            highest[workload.service] = n
    return highest


def _port_of(state: FabricState, workload: Workload) -> int:
    service = state.services.get(workload.service)
    return workload.port or (service.port if service is not None else 0)


class DecisionModel:
    """The snapshot, ports and workload numbers of one model state (``state``), for the decision lock's
    holder only (not thread-safe: the orchestrator's lock serialises every use)."""

    def __init__(
        self,
        state: FabricState,
        latency_cache: LatencyCache | None = None,
        reservations: ReservationPlan | None = None,
        *,
        reserves: bool,
    ) -> None:
        self.state = state
        self.reserves = reserves
        """``netmodel.bandwidth.reserves_anything(state)``, kept: it is a pass over every instance too."""
        self.snapshot = ClusterSnapshot(state, latency_cache, reservations=reservations)
        self._ports: dict[NodeId, set[int]] | None = None
        self._highest: dict[ServiceName, int] | None = None

    def ports(self) -> dict[NodeId, set[int]]:
        """Per node, the ports in use (owned here: copy a set before changing it)."""
        if self._ports is None:
            self._ports = ports_in_use(self.state)
        return self._ports

    def highest(self, service: ServiceName) -> int:
        """The highest workload number of ``service`` in the model (0: none)."""
        if self._highest is None:
            self._highest = highest_numbers(self.state)
        return self._highest.get(service, 0)

    def settle(self, state: FabricState, placed: Sequence[Workload]) -> bool:
        """Advance to ``state``: this model plus ``placed`` (assumed on the snapshot by the decision, then
        published, nothing else in between). False: it cannot be advanced; build a new one."""
        if not self.snapshot.settle(state, placed):
            return False
        self.state = state
        self.reserves = self.reserves or any(w.bandwidth_mbps for w in placed)
        for workload in placed:
            port = _port_of(state, workload)
            if self._ports is not None and workload.node is not None and port:
                self._ports.setdefault(workload.node, set()).add(port)
            n = workload_number(workload.service, workload.id)
            if self._highest is not None and n is not None and n > self._highest.get(workload.service, 0):
                self._highest[workload.service] = n
        return True
