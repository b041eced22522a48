"""A workload moves while a client loops requests through Envoy: no request fails, and the new
endpoint is in Envoy's /clusters within 100 ms of the model change (no debounce)."""

from __future__ import annotations

import threading
import time

import pytest

from tests.integration.harness import free_port
from tests.integration.test_xds_harness import NODE_IPS, backends, cluster_hosts, get, make_workload, mesh, wait_until

pytestmark = pytest.mark.integration


class Loop:
    """Requests through Envoy back to back on a thread; counts answers by backend and failures."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="request-loop", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = get(self.port, timeout=2)
                if status == 200:
                    self.answers.append(body)
                else:
                    self.failures.append(f"{status} {body[:100]}")
            except OSError as exc:
                self.failures.append(repr(exc))

    def __enter__(self) -> Loop:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_moving_a_workload_loses_no_request_and_reaches_envoy_within_100ms(delta: bool) -> None:
    port = free_port()
    old, new = f"{NODE_IPS['n1']}:{port}", f"{NODE_IPS['n2']}:{port}"
    with mesh() as m, backends(("old", NODE_IPS["n1"], port), ("new", NODE_IPS["n2"], port)):
        m.place(make_workload("web-1", "web", "n1", port))
        envoy = m.envoy("u1", "users", delta)
        wait_until(lambda: get(m.web_port)[1] == "old", 10, "traffic to the old endpoint")
        with Loop(m.web_port) as loop:
            time.sleep(0.3)
            changed_at = time.monotonic()
            generation = m.place(make_workload("web-1", "web", "n2", port))
            envoy.wait_for(lambda: cluster_hosts(envoy, "svc/web") == {new}, 2, "the new endpoint", interval=0.001)
            visible_after = time.monotonic() - changed_at
            # What the controller waits for before withdrawing the old endpoint: every sidecar ACKed.
            assert m.server.wait_synced(generation, 2) == set()
            time.sleep(0.5)
        assert loop.failures == [], loop.failures[:5]
        assert visible_after < 0.1, f"new endpoint visible after {visible_after * 1000:.1f} ms"
        assert "old" in loop.answers and loop.answers[-1] == "new"
        assert len(loop.answers) > 50
        assert old not in cluster_hosts(envoy, "svc/web")
        wait_until(lambda: m.node_view("u1")["in_sync"], 5, "u1 in sync")
    print(f"\nendpoint visible in Envoy after {visible_after * 1000:.1f} ms; {len(loop.answers)} requests, 0 failed")
