"""Random interleavings of model changes, responses and requests, for both variants: the client never
holds a route to a cluster it does not have, never gets a pile of unanswered responses, and ends on
exactly the server's snapshot (or its last good config while the snapshot is one it rejects)."""

from __future__ import annotations

import dataclasses
import functools
from collections import deque

from hypothesis import example, given, settings
from hypothesis import strategies as st

from meshctl.delta import DeltaStream
from meshctl.snapshot import MeshConfig, build_snapshots
from meshctl.sotw import SotwStream
from meshctl.xds_types import CLUSTER
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
        (base.apply(ev.NodeWentDown(NodeId("ea-n2"))), GOOD),
        (base.apply(ev.WorkloadPlaced(workload("web-1", "web", "c-n1"))), GOOD),
        (_calls(base, "web", ()), GOOD),
        (base, BAD),
    ]


steps = st.lists(
    st.one_of(
        st.just("response"),
        st.just("request"),
        st.just("reconnect"),
        st.integers(min_value=0, max_value=len(worlds()) - 1),
    ),
    max_size=60,
)


def run(make_stream, client, plan, final_world):
    """``reconnect``: the stream breaks (what is on the wire is lost) and the client opens a new one."""
    cache = cache_for(placed_state(), GOOD)
    stream = make_stream(cache)
    first_requests = client.start()
    to_client: deque = deque()
    to_server: deque = deque(first_requests)
    unanswered: dict[str, int] = {}

    def send(responses):
        for response in responses:
            unanswered[response.type_url] = unanswered.get(response.type_url, 0) + 1
            # Never a pile-up: at most one unanswered response of a type on the wire.
            assert unanswered[response.type_url] <= 1, f"{unanswered}"
        to_client.extend(responses)

    reconnected = False

    def receive_one():
        response = to_client.popleft()
        unanswered[response.type_url] -= 1
        if reconnected and isinstance(client, SotwClient):
            # SotW cannot know what a reconnecting client runs (only a version string), so a
            # removal may briefly precede the removal of what names it; never of a kept cluster.
            to_server.extend(client.receive(response))
            serving = cache.snapshot("web-1").of_type(CLUSTER)
            assert all(ref.rsplit(" -> ", 1)[1] not in serving for ref in client.broken_references())
        else:
            to_server.extend(deliver(client, [response]))  # checks make-before-break

    for step in plan:
        if step == "reconnect":
            reconnected = True
            stream.close()
            stream = make_stream(cache)
            to_client.clear()
            to_server.clear()
            unanswered.clear()
            to_server.extend(client.reconnect())
        elif step == "response" and to_client:
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
@given(steps, st.integers(min_value=0, max_value=len(worlds()) - 2), st.booleans())
# Interleavings that broke earlier versions, kept as regression examples:
@example(["request", "response", "request", "request", 2], 0, False)  # a route sent for a cluster going away
@example(["request", "response", "request", "request", 8], 3, False)  # a kept cluster taken from a rejected set
@example([3, "request", 8, "response", "reconnect", "request", "response", "reconnect"], 3, True)  # version lies
def test_sotw_random_interleavings(plan, final_world, partial) -> None:
    run(SotwStream, SotwClient("web-1", reject=reject, partial=partial), plan, final_world)


@settings(max_examples=150, deadline=None)
@given(steps, st.integers(min_value=0, max_value=len(worlds()) - 2), st.booleans())
@example([3, "request", "request", 8, "response", "request"], 0, False)  # a removal in a NACKed response
@example(
    ["request", "response", "reconnect", "request", 3, "response", "reconnect", "request", "request", "response"],
    0,
    False,
)  # a removal before the reconnecting client said which listeners it runs
def test_delta_random_interleavings(plan, final_world, partial) -> None:
    run(DeltaStream, DeltaClient("web-1", reject=reject, partial=partial), plan, final_world)
