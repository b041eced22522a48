"""The wiring proposed for edgectl/controller.py, exactly: the xDS server on the controller's bus and
metrics registry, /api/v1/xds/clients on its HTTP API, and `edgectl mesh status` reading it."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from edgectl.http_api import HttpApi
from edgectl.metrics import ControllerMetrics
from meshctl.bootstrap import main_mesh
from meshctl.xds_grpc import start_mesh
from tests.integration.harness import free_port, http_get
from tests.integration.test_xds_harness import make_workload, mesh, wait_until

pytestmark = pytest.mark.integration


def test_controller_wiring_serves_clients_view_metrics_and_mesh_status() -> None:
    with mesh() as m:
        m.place(make_workload("web-1", "web", "n1", free_port()))
        metrics = ControllerMetrics()
        # -- the lines for Controller.start() ---------------------------------------------------
        server = start_mesh(lambda: m.bus.state, m.bus.subscribe, "127.0.0.1", 0, None, metrics.registry)
        http = HttpApi("127.0.0.1", 0, state=lambda: m.bus.state, metrics=metrics, routes={})
        http.add_route("/api/v1/xds/clients", lambda _state: server.clients_view())
        # ----------------------------------------------------------------------------------------
        http.start()
        try:
            m.server, old = server, m.server  # the Envoy below talks to this server
            old.stop()
            envoy = m.envoy("u1", "users")
            wait_until(lambda: server.clients_view()["nodes"]["u1"]["in_sync"], 10, "u1 in sync")
            host, port = http.address
            status, body = http_get(f"http://{host}:{port}/api/v1/xds/clients")
            assert status == 200 and json.loads(body)["nodes"]["u1"]["types"]["cds"]["acked"]
            _, text = http_get(f"http://{host}:{port}/metrics")
            assert 'edgectl_xds_acks_total{type="cds"}' in text.decode()
            assert "edgectl_model_generation" in text.decode()  # one registry for the controller
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert main_mesh(["status", "--http", f"{host}:{port}"]) == 0
            assert "u1" in out.getvalue() and "sotw" in out.getvalue()
            assert envoy.running()
        finally:
            http.stop()
