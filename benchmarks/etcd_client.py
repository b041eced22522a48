"""The etcd client of the replicated mode (cluster/etcd.py, gRPC stubs from etcd's protos) against etcd3gw
(the HTTP/JSON grpc-gateway client), in the same run, on the same real etcd (EtcdCluster on loopback, data
on /dev/shm), with 1 and 3 members.

Measured for each client: put latency p50/p99 (sequential puts), txn rate (create-only txns, sequential and
from 8 threads: one shared client of ours -- one gRPC channel --, one etcd3gw client per thread since a
requests session is not meant to be shared), watch latency (put -> the event delivered to the watcher's
callback) p50/p99, and the lease keep-alive round trip p50/p99 (ours: one request on the kept-open
LeaseKeepAlive stream; etcd3gw: one POST /v3/lease/keepalive). Both talk to the first member. Prints a table
and a JSON object of figures as the last line. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cluster.etcd import Compare, EtcdClient, Op, WatchEvent  # noqa: E402
from cluster.etcd_process import EtcdCluster  # noqa: E402

THREADS = 8


class Subject(Protocol):
    name: str

    def put(self, key: bytes, value: bytes) -> None: ...
    def create(self, key: bytes, value: bytes) -> bool: ...
    def watch_prefix(self, prefix: bytes, on_value: Callable[[bytes], None]) -> Callable[[], None]: ...
    def lease(self, ttl_s: int) -> Callable[[], int]: ...
    def for_thread(self) -> Subject: ...
    def close(self) -> None: ...


class Ours:
    name = "grpc (ours)"

    def __init__(self, urls: str) -> None:
        self.client = EtcdClient.from_urls(urls, timeout_s=10.0)

    def put(self, key: bytes, value: bytes) -> None:
        self.client.put(key, value)

    def create(self, key: bytes, value: bytes) -> bool:
        return self.client.txn([Compare.create_revision(key, "=", 0)], [Op.put(key, value)]).succeeded

    def watch_prefix(self, prefix: bytes, on_value: Callable[[bytes], None]) -> Callable[[], None]:
        def on_events(events: list[WatchEvent], _revision: int) -> None:
            for event in events:
                on_value(event.kv.value)

        watch = self.client.watch(prefix, prefix=True, on_events=on_events, on_error=print)
        return watch.cancel

    def lease(self, ttl_s: int) -> Callable[[], int]:
        lease_id = self.client.grant(ttl_s)
        return lambda: self.client.keepalive(lease_id)

    def for_thread(self) -> Subject:
        return self  # one channel shared by every thread

    def close(self) -> None:
        self.client.close()


class Gateway:
    name = "etcd3gw (HTTP/JSON)"

    def __init__(self, host: str, port: int) -> None:
        with warnings.catch_warnings():  # futurist, under etcd3gw, warns that eventlet is deprecated
            warnings.simplefilter("ignore")
            import etcd3gw  # the dev extra; imported here so the rest of the project never needs it

        self.host, self.port = host, port
        self.client: Any = etcd3gw.Etcd3Client(host=host, port=port, api_path="/v3/", timeout=10)

    def put(self, key: bytes, value: bytes) -> None:
        self.client.put(key, value)

    def create(self, key: bytes, value: bytes) -> bool:
        return bool(self.client.create(key, value))

    def watch_prefix(self, prefix: bytes, on_value: Callable[[bytes], None]) -> Callable[[], None]:
        events, cancel = self.client.watch_prefix(prefix)

        def drain() -> None:
            for event in events:
                value = event["kv"].get("value", b"")
                on_value(value if isinstance(value, bytes) else str(value).encode())

        threading.Thread(target=drain, daemon=True).start()
        time.sleep(0.5)  # etcd3gw returns before the watch exists; give it time to be created
        return cancel  # type: ignore[no-any-return]

    def lease(self, ttl_s: int) -> Callable[[], int]:
        lease = self.client.lease(ttl_s)
        return lambda: int(lease.refresh())

    def for_thread(self) -> Subject:
        return Gateway(self.host, self.port)

    def close(self) -> None:
        self.client.session.close()


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 3),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
    }


def put_latency(subject: Subject, run: str, n: int) -> dict[str, float]:
    for i in range(10):
        subject.put(f"{run}/warm/{i}".encode(), b"x")
    samples = []
    for i in range(n):
        began = time.perf_counter()
        subject.put(f"{run}/put/{i}".encode(), b"v" * 100)
        samples.append(time.perf_counter() - began)
    return percentiles(samples)


def txn_rate(subject: Subject, run: str, n: int, threads: int) -> float:
    def work(worker: Subject, t: int, count: int) -> None:
        for i in range(count):
            assert worker.create(f"{run}/txn{threads}/{t}/{i}".encode(), b"v" * 100)

    per_thread = max(1, n // threads)
    workers = [subject.for_thread() for _ in range(threads)]
    began = time.perf_counter()
    pool = [threading.Thread(target=work, args=(w, t, per_thread)) for t, w in enumerate(workers)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - began
    for worker in workers:
        if worker is not subject:
            worker.close()
    return round(per_thread * threads / elapsed, 1)


def watch_latency(subject: Subject, run: str, n: int) -> dict[str, float]:
    arrived: dict[int, float] = {}
    signal = threading.Condition()

    def on_value(value: bytes) -> None:
        with signal:
            arrived[int(value)] = time.perf_counter()
            signal.notify_all()

    prefix = f"{run}/watch/".encode()
    cancel = subject.watch_prefix(prefix, on_value)
    samples = []
    try:
        for i in range(n):
            began = time.perf_counter()
            subject.put(prefix + str(i).encode(), str(i).encode())
            with signal:
                if not signal.wait_for(lambda i=i: i in arrived, timeout=10.0):  # type: ignore[misc]
                    raise RuntimeError(f"{subject.name}: watch event {i} not delivered within 10 s")
            samples.append(arrived[i] - began)
    finally:
        cancel()
    return percentiles(samples)


def keepalive_latency(subject: Subject, n: int) -> dict[str, float]:
    keepalive = subject.lease(60)
    for _ in range(10):
        keepalive()
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        assert keepalive() > 0
        samples.append(time.perf_counter() - began)
    return percentiles(samples)


def measure(subject: Subject, run: str, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "put": put_latency(subject, run, args.puts),
        "txn_per_s_sequential": txn_rate(subject, run, args.txns, 1),
        f"txn_per_s_{THREADS}_threads": txn_rate(subject, run, args.txns, THREADS),
        "watch": watch_latency(subject, run, args.watches),
        "keepalive": keepalive_latency(subject, args.keepalives),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--puts", type=int, default=500)
    parser.add_argument("--txns", type=int, default=400)
    parser.add_argument("--watches", type=int, default=200)
    parser.add_argument("--keepalives", type=int, default=300)
    parser.add_argument("--members", type=int, nargs="+", default=[1, 3])
    args = parser.parse_args()

    report: dict[str, Any] = {"benchmark": "etcd_client", "results": {}}
    rows = []
    for members in args.members:
        with tempfile.TemporaryDirectory(prefix="edgectl-etcd-bench-") as directory:
            cluster = EtcdCluster(directory, members, heartbeat_ms=50, election_ms=500)
            cluster.start()
            try:
                first = cluster.client_urls[0].removeprefix("http://")
                host, port = first.rsplit(":", 1)
                subjects: list[Subject] = [Ours(cluster.urls_text), Gateway(host, int(port))]
                for subject in subjects:
                    figures = measure(subject, f"m{members}/{subject.name.split()[0]}", args)
                    subject.close()
                    report["results"][f"{members}_members/{subject.name}"] = figures
                    rows.append((members, subject.name, figures))
            finally:
                cluster.stop()

    header = (
        f"{'members':>7}  {'client':<20} {'put p50':>8} {'put p99':>8} {'txn/s':>7} {f'txn/s x{THREADS}':>9} "
        f"{'watch p50':>9} {'watch p99':>9} {'keepalive p50':>13} {'p99':>7}   (ms unless /s)"
    )
    print(header)
    for members, name, f in rows:
        print(
            f"{members:>7}  {name:<20} {f['put']['p50_ms']:>8.2f} {f['put']['p99_ms']:>8.2f} "
            f"{f['txn_per_s_sequential']:>7.0f} {f[f'txn_per_s_{THREADS}_threads']:>9.0f} "
            f"{f['watch']['p50_ms']:>9.2f} {f['watch']['p99_ms']:>9.2f} "
            f"{f['keepalive']['p50_ms']:>13.2f} {f['keepalive']['p99_ms']:>7.2f}"
        )
    print(json.dumps(report, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
