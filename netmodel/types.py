"""Value types of the shared model: frozen, hashable, cheap to share between threads."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from netmodel.ids import HostId, NodeId, PortNo, ServiceName, SiteId, SpiffeId, SwitchId, WorkloadId

K = TypeVar("K")
V = TypeVar("V")


def frozen_map(items: Mapping[K, V] | None = None) -> Mapping[K, V]:
    """A read-only view over a private copy: the caller's dict can change, this never does."""
    return MappingProxyType(dict(items or {}))


def map_with(items: Mapping[K, V], key: K, value: V) -> Mapping[K, V]:
    """``items`` with ``key`` set to ``value``, as a new frozen map (``items`` unchanged)."""
    copied = _copy(items)
    copied[key] = value
    return MappingProxyType(copied)


def map_without(items: Mapping[K, V], key: K) -> Mapping[K, V]:
    """``items`` without ``key`` (the very same map when it has none)."""
    if key not in items:
        return items
    copied = _copy(items)
    del copied[key]
    return MappingProxyType(copied)


def dict_copy(items: Mapping[K, V]) -> dict[K, V]:
    """A dict with the entries of ``items``, to change and then freeze (``frozen_map``) as a new map."""
    return _copy(items)


def _copy(items: Mapping[K, V]) -> dict[K, V]:
    # A frozen map's copy() is its dict's: one C-level copy, ~50x faster at 10,000 entries than
    # rebuilding a dict through the mapping protocol (every placement copies the workloads).
    if isinstance(items, (dict, MappingProxyType)):
        return items.copy()
    return dict(items)


class Tier(enum.StrEnum):
    EDGE = "edge"
    METRO = "metro"
    CLOUD = "cloud"


@dataclass(frozen=True, slots=True)
class Site:
    id: SiteId
    tier: Tier
    region: str
    zone: str = ""


@dataclass(frozen=True, slots=True)
class Port:
    no: PortNo
    name: str = ""
    hw_addr: str = ""
    up: bool = True


@dataclass(frozen=True, slots=True)
class Switch:
    """A switch; ``declared`` if the fabric file names it, ``connected`` while its OpenFlow session lives."""

    id: SwitchId
    name: str
    site: SiteId | None = None
    declared: bool = True
    connected: bool = False
    ports: Mapping[PortNo, Port] = field(default_factory=frozen_map)
    connected_at: float | None = None


@dataclass(frozen=True, slots=True, order=True)
class LinkId:
    """One direction of a link, port to port. A cable is two LinkIds."""

    src: SwitchId
    src_port: PortNo
    dst: SwitchId
    dst_port: PortNo

    def reversed(self) -> LinkId:
        return LinkId(self.dst, self.dst_port, self.src, self.src_port)


@dataclass(frozen=True, slots=True)
class LinkAttrs:
    """What the model knows of one link direction.

    ``declared_latency_us`` comes from the fabric file and is the prior; ``measured_latency_us``
    (when present) wins. ``up`` is False only when the link is known to be down.
    ``measured_load_bps`` is what the source port transmits, bits per second, from port-stats polls
    (None: not measured, or no longer: its switch is gone); it never weighs in routing or placement.
    """

    capacity_mbps: float
    declared_latency_us: int | None = None
    measured_latency_us: int | None = None
    measured_at: float | None = None
    up: bool = True
    declared: bool = True
    discovered: bool = False
    measured_load_bps: float | None = None
    load_measured_at: float | None = None

    @property
    def utilization(self) -> float | None:
        """The measured load over the declared capacity (0.1 = 10 %), None when not measured."""
        if self.measured_load_bps is None or self.capacity_mbps <= 0:
            return None
        return self.measured_load_bps / (self.capacity_mbps * 1e6)

    @property
    def latency_us(self) -> int:
        if self.measured_latency_us is not None:
            return self.measured_latency_us
        if self.declared_latency_us is not None:
            return self.declared_latency_us
        return DEFAULT_LATENCY_US


DEFAULT_LATENCY_US = 1000
"""Latency assumed for a discovered, undeclared, not yet measured link."""

DEFAULT_CAPACITY_MBPS = 1000.0


@dataclass(frozen=True, slots=True)
class Attachment:
    """Where an endpoint plugs into the fabric."""

    switch: SwitchId
    port: PortNo


@dataclass(frozen=True, slots=True)
class Host:
    id: HostId
    attachment: Attachment | None
    ip: str
    mac: str = ""
    declared: bool = True
    mac_learned: bool = False  # a declared host's MAC came from the network, not the file: it may change


@dataclass(frozen=True, slots=True)
class Resources:
    cpu_millis: int
    memory_mib: int

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu_millis + other.cpu_millis, self.memory_mib + other.memory_mib)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu_millis - other.cpu_millis, self.memory_mib - other.memory_mib)

    def fits_in(self, other: Resources) -> bool:
        return self.cpu_millis <= other.cpu_millis and self.memory_mib <= other.memory_mib


@dataclass(frozen=True, slots=True)
class ComputeNode:
    id: NodeId
    site: SiteId
    attachment: Attachment
    capacity: Resources
    ip: str = ""
    up: bool = True


@dataclass(frozen=True, slots=True)
class CallWeight:
    """What one request to a service asks of one service it calls: ``per_request`` calls (each a request and
    its response, made one after another), each moving ``bytes_per_call`` bytes (both directions)."""

    per_request: float = 1.0
    bytes_per_call: int = 0


DEFAULT_CALL_WEIGHT = CallWeight()


class PolicyDefault(enum.StrEnum):
    """What a call no ``allow_from`` rule admits gets: the fabric-wide default (``authorization.default``)."""

    DENY = "deny"
    ALLOW = "allow"


class Protocol(enum.StrEnum):
    """What a service speaks on its port: HTTP (rules may name paths and methods; a denied call gets 403)
    or plain TCP (a denied connection is closed)."""

    HTTP = "http"
    TCP = "tcp"


@dataclass(frozen=True, slots=True)
class AllowRule:
    """One entry of a service's ``allow_from``: who may call it (exactly one of ``service``, ``host``,
    ``spiffe_id``) and, for an HTTP service, what (``paths``: path prefixes, ``methods``: upper-case HTTP
    methods; empty: any). ``spiffe_id`` is one identity, or a prefix of identities when it ends with "/"."""

    service: ServiceName | None = None
    host: HostId | None = None
    spiffe_id: str | None = None
    paths: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()

    @property
    def who(self) -> str:
        """The caller as written: ``service:web``, ``host:u1`` or the SPIFFE id (for messages and views)."""
        if self.service is not None:
            return f"service:{self.service}"
        if self.host is not None:
            return f"host:{self.host}"
        return str(self.spiffe_id)


@dataclass(frozen=True, slots=True)
class Service:
    """A service as declared. ``max_latency_ms``: one-way latency from each ``near`` host to an instance.
    ``max_request_latency_ms``: the whole request of a ``near`` host, end to end: the network round trips of
    every call down the call tree (``calls``, weighted by ``call_weights``), to the instances each caller uses.
    """

    name: ServiceName
    port: int
    replicas: int
    resources: Resources
    max_latency_ms: float | None = None
    near: tuple[HostId, ...] = ()
    calls: tuple[ServiceName, ...] = ()
    call_weights: tuple[tuple[ServiceName, CallWeight], ...] = ()
    """The calls declared with a weight, sorted by callee (a tuple: services are hashable values);
    ``call_weight`` answers for every call."""
    max_request_latency_ms: float | None = None
    allow_from: tuple[AllowRule, ...] = ()
    """Who may call it; everyone else gets the fabric's ``default_policy`` (deny unless declared otherwise)."""
    protocol: Protocol = Protocol.HTTP
    run: tuple[str, ...] = ()
    """The command a node agent runs for an instance, with ``{placeholders}`` (``nodeagent``); empty: the
    instance's process is not started by an agent."""
    env: tuple[tuple[str, str], ...] = ()
    """Extra environment of that command, sorted by name (values may hold placeholders too)."""
    bandwidth_mbps: float | None = None
    """Reserved by every instance, each direction, between it and each ``near`` host (``netmodel.bandwidth``)."""
    call_bandwidth: tuple[tuple[ServiceName, float], ...] = ()
    """Reserved per declared call, each direction, between each instance and the callee instance nearest to it,
    sorted by callee."""

    def call_weight(self, callee: ServiceName) -> CallWeight:
        for name, weight in self.call_weights:
            if name == callee:
                return weight
        return DEFAULT_CALL_WEIGHT

    def weighted_calls(self) -> tuple[tuple[ServiceName, CallWeight], ...]:
        return tuple((callee, self.call_weight(callee)) for callee in self.calls)


class AffinityScope(enum.StrEnum):
    """Where an affinity term looks for the other service: on the same node, or in the same site."""

    NODE = "node"
    SITE = "site"


@dataclass(frozen=True, slots=True)
class AffinityTerm:
    service: ServiceName
    scope: AffinityScope = AffinityScope.NODE

    def __str__(self) -> str:
        return f"{self.service} (same {self.scope.value})"


@dataclass(frozen=True, slots=True)
class PlacementConstraints:
    """Hard rules for where an instance may run, kept on the workload so they survive a restart.

    ``tiers``: allowed tiers (empty: any). ``max_latency_ms``: the SLO, one-way over the route, from
    every host in ``near``; with ``near`` and no SLO, the node must merely be reachable from them.
    ``affinity``: must share a node (or site) with an instance of each named service;
    ``anti_affinity``: must not.
    """

    tiers: frozenset[Tier] = frozenset()
    max_latency_ms: float | None = None
    near: tuple[HostId, ...] = ()
    affinity: tuple[AffinityTerm, ...] = ()
    anti_affinity: tuple[AffinityTerm, ...] = ()


@dataclass(frozen=True, slots=True)
class Workload:
    """One instance of a service; ``node`` is None until placed. ``constraints`` None: the ones its
    service declares in the fabric file. ``declared``: placed by the controller for the replicas the
    desired state declares (kept at that count), not by a Place call (kept until evicted)."""

    id: WorkloadId
    service: ServiceName
    spiffe_id: SpiffeId
    resources: Resources
    node: NodeId | None = None
    port: int = 0
    constraints: PlacementConstraints | None = None
    declared: bool = False
    bandwidth_mbps: float | None = None
    """This instance's reservation, overriding its service's ``bandwidth_mbps`` (None: the service's)."""
