"""A sidecar bootstrapped with two control-plane replicas: when the one its stream is on stops, Envoy
reconnects to the other, keeps serving its last config meanwhile, and then follows the other's updates.

Each replica is a model behind its own bus (replicas apply the same events) and its own xDS server, as
``edgectl run`` on two machines would be. Loopback only; everything started here is stopped here."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from edgectl.bus import EventBus
from meshctl.bootstrap import render_bootstrap
from meshctl.sidecar import EnvoySidecar
from meshctl.snapshot import MeshConfig
from meshctl.xds_grpc import MeshServer, start_mesh
from netmodel import events as ev
from netmodel.fabric_file import parse_fabric
from netmodel.types import PolicyDefault, Workload
from tests.integration.harness import free_port
from tests.integration.test_xds_harness import (
    NODE_IPS,
    backends,
    cluster_hosts,
    fabric_text,
    get,
    initial_state,
    make_workload,
    wait_until,
)

pytestmark = pytest.mark.integration


@dataclass
class Replica:
    bus: EventBus
    server: MeshServer
    stopped: bool = False

    unix_path: str | None = None

    @property
    def address(self) -> str:
        return f"unix:{self.unix_path}" if self.unix_path else f"127.0.0.1:{self.server.address[1]}"

    def streams(self, node_id: str) -> int:
        if self.stopped:
            return 0
        return int(self.server.clients_view()["nodes"].get(node_id, {}).get("streams", 0))

    def in_sync(self, node_id: str) -> bool:
        return bool(self.server.clients_view()["nodes"].get(node_id, {}).get("in_sync"))

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.server.stop()
            self.bus.stop()


@contextlib.contextmanager
def replicas(count: int, web_port: int, unix: bool) -> Iterator[list[Replica]]:
    """``unix``: the sidecar reaches each replica on its own Unix socket (as in the Mininet testbed)."""
    spec = parse_fabric(fabric_text(web_port, free_port()).encode(), "xds-replicas.yaml")
    socket_dir = tempfile.mkdtemp(prefix="edgectl-xds-replicas-")
    started: list[Replica] = []
    try:
        for k in range(count):
            bus = EventBus(initial_state(spec, PolicyDefault.ALLOW))
            bus.start()
            unix_path = str(Path(socket_dir) / f"xds-{k}.sock") if unix else None
            try:
                server = start_mesh(
                    lambda b=bus: b.state, bus.subscribe, "127.0.0.1", 0, unix_path, CollectorRegistry(), MeshConfig()
                )
            except BaseException:
                bus.stop()
                raise
            started.append(Replica(bus, server, unix_path=unix_path))
        yield started
    finally:
        for replica in started:
            replica.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


def apply_everywhere(group: list[Replica], event: ev.Event) -> None:
    """What the replicated log does: every live replica applies the event."""
    for replica in group:
        if not replica.stopped:
            replica.bus.publish(event).result(timeout=5)


class Caller:
    """Requests through the sidecar in a loop, from start to stop: every answer kept."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="caller", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.answers.append(get(self.port, timeout=5))
            except OSError as exc:
                self.answers.append((0, repr(exc)))
            time.sleep(0.02)

    def __enter__(self) -> Caller:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.mark.parametrize(("delta", "unix"), [(False, False), (True, True)], ids=["sotw-tcp", "delta-unix"])
def test_envoy_moves_to_the_other_replica_and_keeps_serving(delta: bool, unix: bool) -> None:
    web_port, port = free_port(), free_port()
    web: Workload = make_workload("web-1", "web", "n1", port)
    with (
        replicas(2, web_port, unix) as group,
        backends(("one", NODE_IPS["n1"], port), ("two", NODE_IPS["n2"], port)),
    ):
        apply_everywhere(group, ev.WorkloadPlaced(web))
        addresses = [r.address for r in group]
        envoy = EnvoySidecar(render_bootstrap("u1", "users", delta, addresses, free_port()), "warning").start()
        try:
            # The stream is on exactly one replica (round robin picks it); the other has none.
            wait_until(lambda: sum(r.streams("u1") for r in group) == 1, 15, "Envoy's stream to one replica")
            first = next(r for r in group if r.streams("u1") == 1)
            survivor = next(r for r in group if r is not first)
            wait_until(lambda: first.in_sync("u1"), 10, "u1 in sync with its replica")
            wait_until(lambda: get(web_port) == (200, "one"), 5, "traffic through the sidecar")
            before = envoy.dynamic_versions()

            with Caller(web_port) as caller:
                first.stop()
                wait_until(lambda: survivor.streams("u1") == 1, 30, "Envoy to reconnect to the other replica")
                wait_until(lambda: survivor.in_sync("u1"), 10, "u1 in sync with the other replica")
                time.sleep(0.3)  # a few requests after the switch too
            assert caller.answers, "no request was made"
            failed = [a for a in caller.answers if a != (200, "one")]
            assert not failed, f"{len(failed)} of {len(caller.answers)} requests failed during the switch: {failed[:3]}"
            assert envoy.dynamic_versions() == before  # same model, same versions: nothing re-pushed

            # Its updates now come from the survivor: a change only the survivor applies reaches Envoy.
            survivor.bus.publish(ev.WorkloadPlaced(make_workload("web-1", "web", "n2", port))).result(timeout=5)
            new = f"{NODE_IPS['n2']}:{port}"
            envoy.wait_for(lambda: cluster_hosts(envoy, "svc/web") == {new}, 10, "the moved endpoint")
            wait_until(lambda: get(web_port) == (200, "two"), 5, "traffic to the new endpoint")
        finally:
            envoy.stop()
