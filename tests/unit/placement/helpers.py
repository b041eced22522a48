"""Shared fixtures of the placement tests: the example fabric, links by switch name, a real bus."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cache

from edgectl.bus import EventBus
from netmodel.events import Event
from netmodel.fabric import FabricSpec, build_state
from netmodel.fabric_file import parse_fabric
from netmodel.ids import HostId, NodeId, ServiceName
from netmodel.state import FabricState
from netmodel.types import LinkId, Resources, Tier
from placement.types import AffinityTerm, Constraints, PlacementRequest
from tests.integration.harness import REPO

EXAMPLE = REPO / "examples" / "edge-cloud.yaml"


@cache
def example_spec() -> FabricSpec:
    return parse_fabric(EXAMPLE.read_bytes(), str(EXAMPLE))


def example_state() -> FabricState:
    return build_state(example_spec())


def dpid(name: str) -> int:
    return example_spec().dpid_of(name)


def link(state: FabricState, a: str, b: str) -> LinkId:
    """The one declared link a -> b of the example fabric."""
    (found,) = [lk for lk in state.topology.links if lk.src == dpid(a) and lk.dst == dpid(b)]
    return found


def apply(state: FabricState, *events: Event) -> FabricState:
    for event in events:
        state = state.apply(event)
    return state


def request(
    service: str = "web",
    cpu: int = 500,
    memory: int = 256,
    *,
    slo: float | None = None,
    near: tuple[str, ...] = (),
    tiers: tuple[Tier, ...] = (),
    affinity: tuple[AffinityTerm, ...] = (),
    anti_affinity: tuple[AffinityTerm, ...] = (),
    replicas: int = 1,
    candidates: frozenset[NodeId] | None = None,
    avoid: frozenset[NodeId] = frozenset(),
) -> PlacementRequest:
    return PlacementRequest(
        ServiceName(service),
        Resources(cpu, memory),
        Constraints(frozenset(tiers), slo, tuple(HostId(h) for h in near), affinity, anti_affinity),
        replicas=replicas,
        candidates=candidates,
        avoid=avoid,
    )


@contextlib.contextmanager
def running_bus(state: FabricState | None = None) -> Iterator[EventBus]:
    bus = EventBus(state if state is not None else example_state())
    bus.start()
    try:
        yield bus
    finally:
        bus.stop()


@contextlib.contextmanager
def served_api(state: FabricState | None = None, **options: object) -> Iterator[tuple[EventBus, object, object]]:
    """A real EventBus and the real placement gRPC server on a free 127.0.0.1 port, and a real channel
    to it: (bus, server, stub)."""
    import grpc

    from placement._pb import placement_pb2_grpc
    from placement.grpc_api import start_placement_api

    with running_bus(state) as bus:
        server = start_placement_api(bus, "127.0.0.1", 0, **options)  # type: ignore[arg-type]
        channel = grpc.insecure_channel(server.address)
        try:
            yield bus, server, placement_pb2_grpc.PlacementStub(channel)
        finally:
            channel.close()
            server.stop()
