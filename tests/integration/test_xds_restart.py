"""The control plane restarts: Envoy keeps serving meanwhile, reconnects (over the Unix socket), and
ends on the same versions, though the new controller's model has another generation."""

from __future__ import annotations

import time

import pytest

from netmodel import events as ev
from netmodel.ids import WorkloadId
from tests.integration.harness import free_port
from tests.integration.test_xds_harness import (
    NODE_IPS,
    backends,
    cluster_hosts,
    get,
    make_workload,
    mesh,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_envoy_rides_out_a_control_plane_restart_and_ends_on_the_same_versions(delta: bool) -> None:
    port = free_port()
    web = make_workload("web-1", "web", "n1", port)
    with mesh() as m, backends(("one", NODE_IPS["n1"], port), ("two", NODE_IPS["n2"], port)):
        m.place(web)
        envoy = m.envoy("u1", "users", delta, unix=True)
        wait_until(lambda: m.node_view("u1").get("in_sync"), 10, "u1 in sync")
        before = envoy.dynamic_versions()
        generation = m.bus.state.generation

        m.stop_controller()
        down_since = time.monotonic()
        while time.monotonic() - down_since < 1.0:  # no control plane: the sidecar keeps serving
            assert get(m.web_port) == (200, "one")
        # The new controller replays its state in another order: another generation, same content.
        decoy = make_workload("decoy", "hello", "n3", free_port())
        m.start_controller(ev.WorkloadPlaced(decoy), ev.WorkloadPlaced(web), ev.WorkloadRemoved(WorkloadId("decoy")))
        assert m.bus.state.generation != generation

        wait_until(lambda: m.node_view("u1").get("streams") == 1, 15, "Envoy to reconnect")
        wait_until(lambda: m.node_view("u1").get("in_sync"), 5, "u1 in sync again")
        assert envoy.dynamic_versions() == before
        assert get(m.web_port) == (200, "one")

        # The new stream works: a model change still reaches Envoy.
        m.place(make_workload("web-1", "web", "n2", port))
        new = f"{NODE_IPS['n2']}:{port}"
        envoy.wait_for(lambda: cluster_hosts(envoy, "svc/web") == {new}, 2, "the moved endpoint")
        wait_until(lambda: get(m.web_port) == (200, "two"), 2, "traffic to the new endpoint")
