"""An invalid resource is NACKed by the real Envoy: the control plane reports the error, traffic keeps
flowing on the last good config, and the corrected config is ACKed (its rebuilt clusters warm at
once: endpoints are resent)."""

from __future__ import annotations

import json

import pytest

from meshctl.snapshot import MeshConfig
from tests.integration.harness import free_port
from tests.integration.test_xds_harness import NODE_IPS, backends, get, make_workload, mesh, replace_config, wait_until

pytestmark = pytest.mark.integration


def warming_clusters(envoy) -> list[str]:
    dump = envoy.config_dump(include_eds=False)
    clusters = next(c for c in dump["configs"] if c["@type"].endswith("ClustersConfigDump"))
    return [c["cluster"]["name"] for c in clusters.get("dynamic_warming_clusters", [])]


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_a_nacked_config_is_reported_traffic_keeps_flowing_and_the_fix_is_acked(delta: bool) -> None:
    port = free_port()
    with mesh(MeshConfig()) as m, backends(("web", NODE_IPS["n1"], port)):
        m.place(make_workload("web-1", "web", "n1", port))
        envoy = m.envoy("u1", "users", delta)
        wait_until(lambda: m.node_view("u1").get("in_sync"), 10, "u1 in sync")
        assert get(m.web_port) == (200, "web")
        good = m.node_view("u1")["types"]["cds"]["acked"]
        running = envoy.dynamic_versions()["clusters"]["svc/web"]  # per type (SotW) or per resource (delta)

        m.set_config(replace_config(m.config, connect_timeout_ms=-1000))  # Envoy wants a positive duration
        nack = wait_until(lambda: m.node_view("u1")["types"]["cds"]["last_nack"], 5, "the NACK")
        assert "duration" in nack["error"], nack
        view = m.node_view("u1")
        assert not view["in_sync"] and not view["types"]["cds"]["current"]
        assert view["types"]["cds"]["acked"] == good  # the server knows the client runs the old config
        assert m.metric("edgectl_xds_nacks_total", type="cds") >= 1
        # Placement's convergence probe: a sidecar that rejected its config has not converged.
        assert not m.server.converged(m.bus.state.generation)
        for _ in range(20):  # the last good config keeps serving
            assert get(m.web_port) == (200, "web")
        assert envoy.dynamic_versions()["clusters"]["svc/web"] == running
        status = json.dumps(m.server.clients_view())
        assert "Expected positive duration" in status  # what /api/v1/xds/clients shows

        m.set_config(replace_config(m.config, connect_timeout_ms=1500))  # corrected, and different
        wait_until(lambda: m.node_view("u1")["in_sync"], 5, "the corrected config ACKed")
        assert m.node_view("u1")["types"]["cds"]["acked"] != good
        assert m.server.converged(m.bus.state.generation)
        # The rebuilt cluster got its endpoints again: it is not left warming (Envoy's 15 s trap).
        envoy.wait_for(lambda: warming_clusters(envoy) == [], 1, "no warming clusters")
        assert get(m.web_port) == (200, "web")
        assert m.metric("edgectl_xds_acks_total", type="cds") >= 2
        assert m.metric("edgectl_xds_push_to_ack_seconds_count", type="cds") >= 2
