"""Random interleavings of model changes, responses and requests, for both variants: the client never
holds a route to a cluster it does not have, never gets a pile of unanswered responses, and ends on
exactly the server's snapshot (or its last good config while the snapshot is one it rejects)."""

from __future__ import annotations

import dataclasses
import functools
from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from meshctl.protocol import DeltaStream, SotwStream
from meshctl.snapshot import MeshConfig, build_snapshots
from netmodel import events as ev
from netmodel.ids import NodeId
from tests.unit.meshctl.mesh_helpers import (
    DeltaClient,
    SotwClient,
    cache_for,
    client_state,
    deliver,
    expected_state,
    placed_state,
    workload,
)

GOOD = MeshConfig(tcp_services=frozenset({"db"}))
BAD = dataclasses.replace(GOOD, connect_timeout_ms=-1000)


def reject(type_url, message):
    has_timeout = getattr(message, "connect_timeout", None) is not None and message.HasField("connect_timeout")
    if has_timeout and message.connect_timeout.ToMilliseconds() <= 0:
        return "connect_timeout must be greater than 0"
    return None


def _calls(state, service, calls):
    services = dict(state.services)
    services[service] = dataclasses.replace(services[service], calls=calls)
    return dataclasses.replace(state, services=services)


@functools.cache
def worlds():
    base = placed_state()
    return [
        (base, GOOD),
        (base.apply(ev.WorkloadPlaced(workload("api-2", "api", "ea-n1"))), GOOD),
        (_calls(base, "web", ("api",)), GOOD),
        (_calls(base, "web", ("api", "db")), GOOD),
        (base, dataclasses.replace(GOOD, connect_timeout_ms=2500)),
        (base.apply(ev.NodeDown(NodeId("ea-n2"))), GOOD),
        (base.apply(ev.WorkloadPlaced(workload("web-1", "web", "c-n1"))), GOOD),
        (_calls(base, "web", ()), GOOD),
        (base, BAD),
    ]


steps = st.lists(
    st.one_of(st.just("response"), st.just("request"), st.integers(min_value=0, max_value=len(worlds()) - 1)),
    max_size=60,
)


def run(stream, client, first_requests, plan, final_world):
    cache = stream._cache
    to_client: deque = deque()
    to_server: deque = deque(first_requests)
    unanswered: dict[str, int] = {}

    def send(responses):
        for response in responses:
            unanswered[response.type_url] = unanswered.get(response.type_url, 0) + 1
            # Never a pile-up: at most one update and one removal response of a type on the wire.
            assert unanswered[response.type_url] <= 2, f"{unanswered}"
        to_client.extend(responses)

    def receive_one():
        response = to_client.popleft()
        unanswered[response.type_url] -= 1
        to_server.extend(deliver(client, [response]))  # checks make-before-break

    for step in plan:
        if step == "response" and to_client:
            receive_one()
        elif step == "request" and to_server:
            send(stream.on_request(to_server.popleft()))
        elif isinstance(step, int):
            state, config = worlds()[step]
            cache.set_snapshots(build_snapshots(state, config))
            send(stream.on_change())
    state, config = worlds()[final_world]
    cache.set_snapshots(build_snapshots(state, config))
    send(stream.on_change())
    for _ in range(500):
        if to_client:
            receive_one()
        elif to_server:
            send(stream.on_request(to_server.popleft()))
        else:
            break
    assert not to_client and not to_server, "did not settle"
    assert client_state(client) == expected_state(cache, client, "web-1")
    assert cache.is_synced("web-1")


@settings(max_examples=150, deadline=None)
@given(steps, st.integers(min_value=0, max_value=len(worlds()) - 2))
def test_sotw_random_interleavings(plan, final_world) -> None:
    cache = cache_for(placed_state(), GOOD)
    client = SotwClient("web-1", reject=reject)
    run(SotwStream(cache), client, client.start(), plan, final_world)


@settings(max_examples=150, deadline=None)
@given(steps, st.integers(min_value=0, max_value=len(worlds()) - 2))
def test_delta_random_interleavings(plan, final_world) -> None:
    cache = cache_for(placed_state(), GOOD)
    client = DeltaClient("web-1", reject=reject)
    run(DeltaStream(cache), client, client.start(), plan, final_world)
