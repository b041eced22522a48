"""``edgectl run --state-dir`` killed with SIGKILL in the middle of a burst of placements: every Place
answered OK is there after a restart on the same directory, with the same id and node, and no id
given before the kill is given again. Real processes, real gRPC clients; each process stopped by PID."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import grpc
import pytest

from placement._pb import placement_pb2 as pb
from placement._pb import placement_pb2_grpc as pb_grpc
from tests.integration.harness import REPO, edgectl_run, free_port, wait_until

pytestmark = pytest.mark.integration

FABRIC = REPO / "examples" / "edge-cloud.yaml"
CLIENTS = 8
KILL_AFTER = 60  # answered placements per round before the kill: the burst is well under way
ROUNDS = 3  # each kill loses in-flight placements with some chance; three make a miss unlikely
SERVICES = ("db", "api")


def number(workload_id: str) -> tuple[str, int]:
    match = re.fullmatch(r"(.+)-(\d+)", workload_id)
    assert match, workload_id
    return match.group(1), int(match.group(2))


class Burst:
    """CLIENTS threads, one channel each, placing small instances until their calls fail."""

    def __init__(self, api_port: int) -> None:
        self.answered: dict[str, str] = {}  # workload id -> node, for every Place answered OK
        self.failures: list[grpc.StatusCode] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(api_port, k)) for k in range(CLIENTS)]
        for thread in self._threads:
            thread.start()

    def _client(self, port: int, k: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.PlacementStub(channel)
            request = pb.PlaceRequest(service=SERVICES[k % 2], cpu_millis=1, memory_mib=1)
            while not self._stop.is_set():
                try:
                    response = stub.Place(request, timeout=20)
                except grpc.RpcError as exc:
                    with self._lock:
                        self.failures.append(exc.code())
                    return  # the controller is gone
                with self._lock:
                    self.answered.update((w.id, w.node) for w in response.workloads)

    def count(self) -> int:
        with self._lock:
            return len(self.answered)

    def join(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        assert not any(t.is_alive() for t in self._threads)


def workloads(api_port: int) -> dict[str, str]:
    with grpc.insecure_channel(f"127.0.0.1:{api_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        listed = pb_grpc.PlacementStub(channel).List(pb.ListRequest(), timeout=20)
    return {w.id: w.node for w in listed.workloads}


def test_placements_answered_ok_survive_sigkill_and_ids_are_never_reused(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    api = free_port()
    extra = ("--state-dir", str(state_dir), "--api-port", str(api))
    answered: dict[str, str] = {}  # every placement answered OK, over every round
    for round_ in range(ROUNDS):
        with edgectl_run(FABRIC, *extra) as controller:
            present = workloads(api)
            lost = {w: node for w, node in answered.items() if present.get(w) != node}
            assert not lost, f"round {round_}: {len(lost)} of {len(answered)} answered placements lost: {sorted(lost)}"
            burst = Burst(api)
            try:
                wait_until(lambda: burst.count() >= KILL_AFTER, 60, what=f"{KILL_AFTER} placements")  # noqa: B023
                controller.process.kill()  # SIGKILL: nothing gets to flush
                controller.process.wait(10)
            finally:
                burst.join()
            assert burst.failures, "the kill came after the burst had ended: it proves nothing"
            reused = set(burst.answered) & set(answered)
            assert not reused, f"round {round_}: ids given again after a restart: {sorted(reused)}"
            answered.update(burst.answered)

    with edgectl_run(FABRIC, *extra) as restarted:
        after = workloads(api)
        lost = {w: node for w, node in answered.items() if after.get(w) != node}
        assert not lost, f"{len(lost)} of {len(answered)} answered placements lost or changed: {sorted(lost)[:10]}"
        # New ids go above every id given before, also of instances lost in flight (never answered).
        highest: dict[str, int] = {}
        for workload_id in [*answered, *after]:
            service, n = number(workload_id)
            highest[service] = max(n, highest.get(service, 0))
        with grpc.insecure_channel(f"127.0.0.1:{api}") as channel:
            stub = pb_grpc.PlacementStub(channel)
            for service in SERVICES:
                (new,) = stub.Place(pb.PlaceRequest(service=service, cpu_millis=1, memory_mib=1), timeout=20).workloads
                assert number(new.id)[1] > highest[service], (new.id, highest)
        assert "ignoring unreadable" not in restarted.log()
