"""Place throughput through the real gRPC API of a real ``edgectl run`` process.

Several client threads (one channel each) send ``Place`` calls as fast as they are answered, on the
example fabric (small requests, so capacity is never the limit), once without ``--state-dir``
(placements in memory) and once with it (each answered placement on disk first). Prints one JSON line:
placements per second, and each call's latency p50/p99, for both.

    python -m benchmarks.placement_api [--clients 8] [--calls 150]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the testbed's launcher is in the checkout, not in the installed package

from mininet_topos.controller_process import ControllerProcess, free_port, start_edgectl  # noqa: E402
from placement._pb import placement_pb2 as pb  # noqa: E402
from placement._pb import placement_pb2_grpc as pb_grpc  # noqa: E402

FABRIC = REPO / "examples" / "edge-cloud.yaml"


def run_controller(state_dir: str | None, log: Path) -> tuple[ControllerProcess, int]:
    """``edgectl run`` on free ports (the one launcher tests, benchmarks and the demo share)."""
    api_port = free_port()
    extra = ["--api-port", str(api_port), *(["--state-dir", state_dir] if state_dir else [])]
    controller = start_edgectl(FABRIC, *extra, log_path=log, ready_timeout=30)
    channel = grpc.insecure_channel(f"127.0.0.1:{api_port}")
    grpc.channel_ready_future(channel).result(timeout=30)
    channel.close()
    return controller, api_port


def burst(api_port: int, clients: int, calls: int) -> dict[str, float]:
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    go = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{api_port}") as channel:
            stub = pb_grpc.PlacementStub(channel)
            go.wait()
            for _ in range(calls):
                service = ("db", "api")[k % 2]
                started = time.perf_counter()
                try:
                    stub.Place(pb.PlaceRequest(service=service, cpu_millis=1, memory_mib=1), timeout=30)
                except grpc.RpcError as exc:
                    with lock:
                        failures.append(f"{exc.code()}: {exc.details()}")
                    continue
                with lock:
                    latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    go.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} Place calls failed, e.g. {failures[0]}")
    latencies.sort()
    return {
        "placements_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 2),
    }


def measure(state_dir: str | None, clients: int, calls: int, workdir: Path) -> dict[str, float]:
    controller, api_port = run_controller(state_dir, workdir / ("durable.log" if state_dir else "memory.log"))
    try:
        return burst(api_port, clients, calls)
    finally:
        controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--calls", type=int, default=150, help="Place calls per client")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="placement-api-") as tmp:
        workdir = Path(tmp)
        memory = measure(None, args.clients, args.calls, workdir)
        durable = measure(str(workdir / "state"), args.clients, args.calls, workdir)
    figures = {
        "benchmark": "placement_api",
        "clients": args.clients,
        "placements": args.clients * args.calls,
        "in_memory": memory,
        "state_dir": durable,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
