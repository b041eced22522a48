"""Events: facts that happened, named in the past tense. The only way the model changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from netmodel.ids import NodeId, PortNo, SwitchId, WorkloadId
from netmodel.types import Attachment, LinkId, Port, Workload

if TYPE_CHECKING:  # netmodel.fabric builds states, and states apply events
    from netmodel.fabric import FabricSpec


@dataclass(frozen=True, slots=True)
class SwitchConnected:
    switch: SwitchId
    ports: tuple[Port, ...]
    at: float


@dataclass(frozen=True, slots=True)
class SwitchDisconnected:
    """The OpenFlow session ended; every link of the switch goes down with it."""

    switch: SwitchId
    at: float


@dataclass(frozen=True, slots=True)
class PortStatusChanged:
    """A port was added or changed; a port going down takes its links down at once."""

    switch: SwitchId
    port: Port


@dataclass(frozen=True, slots=True)
class PortDeleted:
    switch: SwitchId
    port: PortNo


@dataclass(frozen=True, slots=True)
class LinkDiscovered:
    """An LLDP probe crossed this link direction."""

    link: LinkId
    at: float


@dataclass(frozen=True, slots=True)
class LinkWentDown:
    """The cable is down: both directions."""

    link: LinkId


@dataclass(frozen=True, slots=True)
class LinkCameUp:
    link: LinkId


@dataclass(frozen=True, slots=True)
class LinkLatencyMeasured:
    """A batch of smoothed one-way latencies, one per link direction."""

    latencies_us: tuple[tuple[LinkId, int], ...]
    at: float


@dataclass(frozen=True, slots=True)
class LinkLoadMeasured:
    """A round of port-stats polls: what each link direction's source port transmits, bits per second.

    Only the directions whose load changed enough to matter (``sdnctl.port_stats.load_changed``); None:
    the direction is no longer measured (its switch is gone)."""

    loads_bps: tuple[tuple[LinkId, float | None], ...]
    at: float


@dataclass(frozen=True, slots=True)
class HostLearned:
    """A host was seen sending from ``attachment`` (ARP or IP)."""

    mac: str
    ip: str
    attachment: Attachment
    at: float


@dataclass(frozen=True, slots=True)
class HostsExpired:
    """Time passed: learned, undeclared hosts not seen for ``state.HOST_TTL_S`` before ``at`` are gone."""

    at: float


@dataclass(frozen=True, slots=True)
class NodeWentDown:
    node: NodeId


@dataclass(frozen=True, slots=True)
class NodeCameUp:
    node: NodeId


@dataclass(frozen=True, slots=True)
class WorkloadPlaced:
    """A workload was placed (or moved: same id, new node)."""

    workload: Workload


@dataclass(frozen=True, slots=True)
class WorkloadRemoved:
    workload: WorkloadId


@dataclass(frozen=True, slots=True)
class WorkloadHealthChanged:
    """An instance was seen unhealthy (its app or sidecar died on a node that stays up), or healthy again.

    An unhealthy instance is no endpoint for anyone, and failover re-places it."""

    workload: WorkloadId
    healthy: bool
    reason: str = ""
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class WorkloadStarting:
    """A node agent is starting an instance's app with its sidecar beside it: the sidecar may serve
    before the app listens, so the instance is no endpoint until a healthy report says the app listens.

    Not a failure: failover leaves a starting instance alone (its start-up is what it waits for)."""

    workload: WorkloadId
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class DesiredStateApplied:
    """An operator's declaration (a fabric file, a directory, a git commit) replaced the previous one.

    What is declared (sites, switches, links with their latency prior and capacity, hosts, nodes,
    services) becomes ``spec``'s; what was observed (connections, ports, measured latency, learned
    hosts, placements) stays: see ``netmodel.desired.merge_desired``."""

    spec: FabricSpec
    revision: str


Event = (
    SwitchConnected
    | SwitchDisconnected
    | PortStatusChanged
    | PortDeleted
    | LinkDiscovered
    | LinkWentDown
    | LinkCameUp
    | LinkLatencyMeasured
    | LinkLoadMeasured
    | HostLearned
    | HostsExpired
    | NodeWentDown
    | NodeCameUp
    | WorkloadPlaced
    | WorkloadRemoved
    | WorkloadHealthChanged
    | WorkloadStarting
    | DesiredStateApplied
)


def workloads_touched(event: Event) -> frozenset[WorkloadId] | None:
    """The workloads whose placement or health ``event`` can change; None: the event's type does not
    say (a reader that needs to know compares the workloads instead)."""
    if isinstance(event, WorkloadPlaced):
        return frozenset({event.workload.id})
    if isinstance(event, WorkloadRemoved | WorkloadHealthChanged | WorkloadStarting):
        return frozenset({event.workload})
    return None
