"""Checking what a caller asks for, field by field, against the model. Pure.

Everything is checked before anything is published, so a refused request leaves the model as it was.
The adapter (``grpc_api``) turns protobuf messages into these plain inputs (and refuses enum values it
does not know); this module turns them into a ``PlacementRequest`` or a ``PlacementRefused``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from netmodel.fabric_file import MIN_LATENCY_SLO_MS
from netmodel.ids import HostId, ServiceName, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Resources, Tier
from placement.baseline_profiles import all_profiles
from placement.errors import PlacementRefused, Refusal
from placement.scheduler import DEFAULT_PROFILE, Profile
from placement.types import AffinityTerm, Constraints, PlacementRequest, Scope

MAX_CPU_MILLIS = 10**9
MAX_MEMORY_MIB = 10**9
MAX_LATENCY_MS = 60_000.0
MAX_REPLICAS = 100
MAX_NEAR_HOSTS = 64
MAX_AFFINITY_TERMS = 16
MAX_NAME_LENGTH = 253
MAX_BANDWIDTH_MBPS = 1e6


@dataclass(frozen=True, slots=True)
class PlaceInput:
    """A Place request as plain values. None / empty: take the service's declared value."""

    service: str
    cpu_millis: int | None = None
    memory_mib: int | None = None
    max_latency_ms: float | None = None
    near: tuple[str, ...] = ()
    tiers: tuple[Tier, ...] = ()
    affinity: tuple[tuple[str, Scope], ...] = ()
    anti_affinity: tuple[tuple[str, Scope], ...] = ()
    replicas: int = 0
    profile: str = ""
    bandwidth_mbps: float | None = None


def invalid(reason: str) -> PlacementRefused:
    return PlacementRefused(Refusal.INVALID_ARGUMENT, reason)


def shown(text: str) -> str:
    """A caller's string, quoted and cut short, safe to put in a message."""
    return repr(text if len(text) <= 64 else text[:61] + "...")


def _known(kind: str, names: list[str]) -> str:
    listed = ", ".join(sorted(names)[:12])
    return f" (known {kind}: {listed}{', ...' if len(names) > 12 else ''})" if names else f" (there are no {kind})"


def check_name(field: str, value: str) -> str:
    if not value:
        raise invalid(f"{field} is required")
    if len(value) > MAX_NAME_LENGTH:
        raise invalid(f"{field} is longer than {MAX_NAME_LENGTH} characters")
    if not value.isprintable():
        raise invalid(f"{field} {shown(value)} has non-printable characters")
    return value


def check_workload_id(value: str) -> WorkloadId:
    return WorkloadId(check_name("workload_id", value))


def _count(field: str, value: int | None, maximum: int) -> int | None:
    if value is None:
        return None
    if value < 0:
        raise invalid(f"{field} must be >= 0, got {value}")
    if value > maximum:
        raise invalid(f"{field} must be <= {maximum}, got {value}")
    return value


def check_bandwidth(field: str, value: float | None) -> float | None:
    """Mbit/s: finite, >= 0 (0: no reservation) and at most ``MAX_BANDWIDTH_MBPS``; None: not given."""
    if value is None:
        return None
    if not math.isfinite(value) or not 0 <= value <= MAX_BANDWIDTH_MBPS:
        raise invalid(f"{field} must be >= 0 and <= {MAX_BANDWIDTH_MBPS:g} Mbit/s, got {value!r}")
    return value


def _service(state: FabricState, name: str, field: str) -> ServiceName:
    check_name(field, name)
    if name not in state.services:
        raise invalid(f"{field}: unknown service {shown(name)}" + _known("services", list(state.services)))
    return ServiceName(name)


def _terms(state: FabricState, field: str, terms: tuple[tuple[str, Scope], ...]) -> tuple[AffinityTerm, ...]:
    if len(terms) > MAX_AFFINITY_TERMS:
        raise invalid(f"{field}: at most {MAX_AFFINITY_TERMS} terms, got {len(terms)}")
    return tuple(AffinityTerm(_service(state, name, f"{field}.service"), scope) for name, scope in terms)


def build_place_request(state: FabricState, data: PlaceInput) -> tuple[PlacementRequest, Profile]:
    """The request the scheduler will see, with the service's declared values filled in."""
    service_name = _service(state, data.service, "service")
    service = state.services[service_name]
    cpu = _count("cpu_millis", data.cpu_millis, MAX_CPU_MILLIS)
    memory = _count("memory_mib", data.memory_mib, MAX_MEMORY_MIB)
    resources = Resources(
        service.resources.cpu_millis if cpu is None else cpu,
        service.resources.memory_mib if memory is None else memory,
    )
    slo = data.max_latency_ms
    if slo is not None and (math.isnan(slo) or not MIN_LATENCY_SLO_MS <= slo <= MAX_LATENCY_MS):
        # The model counts latency in whole microseconds: a smaller SLO could never be met or shown.
        raise invalid(f"max_latency_ms must be >= {MIN_LATENCY_SLO_MS:g} and <= {MAX_LATENCY_MS:g}, got {slo!r}")
    if len(data.near) > MAX_NEAR_HOSTS:
        raise invalid(f"near: at most {MAX_NEAR_HOSTS} hosts, got {len(data.near)}")
    near: list[HostId] = []
    for host in data.near:
        check_name("near", host)
        if host not in state.hosts:
            raise invalid(f"near: unknown host {shown(host)}" + _known("hosts", list(state.hosts)))
        if state.hosts[HostId(host)].attachment is None:
            raise PlacementRefused(Refusal.FAILED_PRECONDITION, f"near: where host {host} attaches is not known yet")
        if host not in near:
            near.append(HostId(host))
    constraints = Constraints(
        tiers=frozenset(data.tiers),
        max_latency_ms=service.max_latency_ms if slo is None else slo,
        near=tuple(near) if near else service.near,
        affinity=_terms(state, "affinity", data.affinity),
        anti_affinity=_terms(state, "anti_affinity", data.anti_affinity),
    )
    if constraints.max_latency_ms is not None and not constraints.near:
        raise invalid(f"max_latency_ms needs at least one near host (service {service_name} declares none)")
    replicas = _count("replicas", data.replicas, MAX_REPLICAS) or 1
    bandwidth = check_bandwidth("bandwidth_mbps", data.bandwidth_mbps)
    profiles = all_profiles()
    if data.profile and data.profile not in profiles:
        raise invalid(f"unknown profile {shown(data.profile)}" + _known("profiles", list(profiles)))
    profile = profiles[data.profile] if data.profile else DEFAULT_PROFILE
    placement = PlacementRequest(service_name, resources, constraints, replicas=replicas, bandwidth_mbps=bandwidth)
    return placement, profile
