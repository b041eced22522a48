"""The replicated log's codec (cluster/codec.py): encode and decode times and sizes of event batches and of a
checkpoint of a 500-switch fabric holding 10,000 workloads.

The model: placement/synthetic.py's fabric (486 edge, 10 metro and 4 cloud sites, one switch each, 1,152
compute nodes), every switch connected with 16 ports, every link discovered and measured, every host learned,
and 10,000 placed workloads (a tenth with constraints). Batches: one placement, 100 placements, one latency
round over every link direction, one load round. Each figure is the median of several runs (a shared machine).
Prints a table and a JSON object of figures as the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cluster.codec import decode_events, decode_state, encode_events, encode_state  # noqa: E402
from netmodel import events as ev  # noqa: E402
from netmodel.ids import NodeId, PortNo, ServiceName, SpiffeId, WorkloadId  # noqa: E402
from netmodel.state import FabricState  # noqa: E402
from netmodel.types import (  # noqa: E402
    AffinityTerm,
    PlacementConstraints,
    Port,
    Resources,
    Tier,
    Workload,
    frozen_map,
)
from placement.synthetic import FabricShape, build_fabric  # noqa: E402

PORTS_PER_SWITCH = 16


def workload(n: int, nodes: list[NodeId], services: list[ServiceName]) -> Workload:
    service = services[n % len(services)]
    constraints = None
    if n % 10 == 0:
        constraints = PlacementConstraints(
            tiers=frozenset({Tier.EDGE, Tier.METRO}),
            max_latency_ms=5.0,
            near=("u1",),  # type: ignore[arg-type]
            anti_affinity=(AffinityTerm(service),),
        )
    return Workload(
        id=WorkloadId(f"{service}-{n}"),
        service=service,
        spiffe_id=SpiffeId(f"spiffe://edge.bench/ns/default/sa/{service}/w/{service}-{n}"),
        resources=Resources(250, 256),
        node=nodes[n % len(nodes)],
        port=20000 + n,
        constraints=constraints,
    )


def model(workloads: int = 10_000) -> FabricState:
    """The fabric as a running controller holds it: connected, discovered, measured, hosts seen, placed."""
    state = build_fabric(FabricShape(edge_sites=486, edge_nodes=2, metro_nodes=10, cloud_nodes=20), seed=7)
    for k, switch in enumerate(state.topology.switches, start=1):
        ports = tuple(
            Port(PortNo(p), name=f"s{k}-eth{p}", hw_addr=f"02:00:00:{k >> 8:02x}:{k & 255:02x}:{p:02x}")
            for p in range(1, PORTS_PER_SWITCH + 1)
        )
        state = state.apply(ev.SwitchConnected(switch, ports, at=1000.0 + k / 7))
    for link in list(state.topology.links):
        state = state.apply(ev.LinkDiscovered(link, at=1100.0))
    state = state.apply(latency_round(state))
    for k, host in enumerate(state.hosts.values()):
        assert host.attachment is not None
        state = state.apply(ev.HostLearned(f"02:00:00:aa:{k >> 8:02x}:{k & 255:02x}", host.ip, host.attachment, 1200.0))
    nodes, services = sorted(state.nodes), sorted(state.services)
    placed = {w.id: w for w in (workload(n, nodes, services) for n in range(workloads))}
    return replace(state, workloads=frozen_map(placed))  # 10,000 applies would copy the map 10,000 times


def latency_round(state: FabricState) -> ev.LinkLatencyMeasured:
    return ev.LinkLatencyMeasured(tuple((link, 900 + i % 700) for i, link in enumerate(state.topology.links)), 1300.5)


def load_round(state: FabricState) -> ev.LinkLoadMeasured:
    return ev.LinkLoadMeasured(
        tuple((link, 1e6 * (i % 97) + 0.25) for i, link in enumerate(state.topology.links)), 1301.25
    )


def median_ms(call: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(name: str, encode: Callable[[], bytes], decode: Callable[[bytes], object], runs: int) -> dict[str, object]:
    data = encode()
    return {
        "name": name,
        "bytes": len(data),
        "encode_ms": round(median_ms(encode, runs), 3),
        "decode_ms": round(median_ms(lambda: decode(data), runs), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    state = model(args.workloads)
    built_s = time.perf_counter() - started
    nodes, services = sorted(state.nodes), sorted(state.services)
    one: list[ev.Event] = [ev.WorkloadPlaced(workload(args.workloads + 1, nodes, services))]
    hundred: list[ev.Event] = [ev.WorkloadPlaced(workload(args.workloads + n, nodes, services)) for n in range(100)]
    batches: dict[str, list[ev.Event]] = {
        "1 WorkloadPlaced": one,
        "100 WorkloadPlaced": hundred,
        f"latency round ({len(state.topology.links)} links)": [latency_round(state)],
        f"load round ({len(state.topology.links)} links)": [load_round(state)],
    }
    rows = [
        measure(name, partial(encode_events, batch), decode_events, args.runs * 5) for name, batch in batches.items()
    ]
    label = f"checkpoint ({len(state.topology.switches)} switches, {len(state.workloads)} workloads)"
    rows.append(measure(label, lambda: encode_state(state), decode_state, args.runs))
    assert decode_state(encode_state(state)) == state
    print(
        f"model built in {built_s:.1f} s: {len(state.topology.switches)} switches, {len(state.topology.links)} "
        f"link directions, {len(state.nodes)} nodes, {len(state.workloads)} workloads"
    )
    print(f"{'':45} {'bytes':>10} {'encode ms':>10} {'decode ms':>10}")
    for row in rows:
        print(f"{row['name']:45} {row['bytes']:>10} {row['encode_ms']:>10} {row['decode_ms']:>10}")
    print(json.dumps({"codec": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
