"""The xDS snapshot rebuild after one placement at 10,000 workloads, end to end through the publisher.

Model: the API path's of ``benchmarks/placement_throughput.py`` (``placement.synthetic``: 1,000 nodes,
100 user hosts, 20 services; 10,000 requests placed as the scheduler decides them, as declared by
``benchmarks/place_api_path.with_placed_declared``), so about 10,100 sidecar nodes (a snapshot each).

Measured, same run, for each of two configurations (plaintext ``MeshConfig()``; mTLS with an identity
for every node, a trust bundle and the RBAC the fabric's deny-by-default policy asks for):
  * baseline, what the publisher did on every model change before it was incremental: one placement,
    then ``build_snapshots`` of the whole model (the service paths included) and ``set_snapshots`` into a
    cache that holds the previous build (best and median of ``--rounds``);
  * ``--changes`` single model changes of each kind, taken in turn (so the model stays at ~10,000
    workloads), each applied to the model and told to the publisher (``note``, as the bus tells the xDS
    server of every event) before the timer starts, then one timed ``SnapshotPublisher.build_now()`` (the
    publisher and cache of a ``MeshServer`` that is not started; no readiness gate):
    a new workload placed (``WorkloadPlaced``, services in turn, on a random node: the mesh does not
    check resources), one evicted (``WorkloadRemoved``), one moved to another node (``WorkloadPlaced``
    of the same id). Under mTLS the PKI's snapshot that a placement or an eviction makes (an identity
    issued, or dropped and revoked; made as ``IdentityManager`` makes it, without the signing, before the
    timer) is handed to ``MeshServer.use_identities``, the PKI's listener, with the CRLs appended to the
    trust bundle as ``edgectl run`` hands them (new text after each revocation): that call is timed with
    the build, as one change.
    p50/p99/max per kind, and how many nodes' snapshots each build replaced (counted outside the timer, on
    one change in ten);
  * ``build_now()`` when nothing changed.
After the changes, the cache is compared with a full rebuild of the final model: every node's resources
(names and content hashes) must be the same ("nodes_differing_from_full_rebuild": 0).

Pure computation in this process (no sockets, no Envoy); the garbage collector stays on (collected once
before each timed loop; before the publisher's, what the first build made is frozen, as ``edgectl run``
freezes what it built at start-up). Goal: < 2 ms per placement. Prints a table, then one JSON line (the last).
Run: .venv/bin/python benchmarks/xds_rebuild.py [--changes 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.place_api_path import with_placed_declared  # noqa: E402
from meshctl.cache import SnapshotCache  # noqa: E402
from meshctl.paths import ServicePaths  # noqa: E402
from meshctl.snapshot import MeshConfig, MeshSnapshot, TlsIdentity, build_snapshots  # noqa: E402
from meshctl.xds_grpc import MeshServer  # noqa: E402
from netmodel import events as ev  # noqa: E402
from netmodel.ids import NodeId, WorkloadId  # noqa: E402
from netmodel.state import FabricState  # noqa: E402
from netmodel.types import Resources, Workload, frozen_map, map_with, map_without  # noqa: E402
from placement.naming import DEFAULT_TRUST_DOMAIN, workload_spiffe_id  # noqa: E402
from placement.synthetic import FabricShape, build_fabric, random_requests  # noqa: E402

WORKLOADS = 10_000
GOAL_MS = 2.0
KINDS = ("placed", "evicted", "migrated")
NEW_WORKLOAD = Resources(100, 128)
FAKE_BUNDLE = "-----BEGIN CERTIFICATE-----\nbenchmark trust bundle\n-----END CERTIFICATE-----\n"
"""meshctl passes PEM text to Envoy as it is (``envoy_config.identity_secret``): it never parses it."""
FAKE_CRL = "-----BEGIN X509 CRL-----\nbenchmark CRL, {} revoked\n-----END X509 CRL-----\n"
"""What ``PkiService.trust_crls_pem`` gives (appended to the trust bundle): new text with every revocation."""


def build_model(shape: FabricShape, workloads: int) -> FabricState:
    generated = build_fabric(shape, seed=1)
    return with_placed_declared(generated, random_requests(generated, workloads, seed=2))


def fake_identity(node: str) -> TlsIdentity:
    return TlsIdentity(
        f"-----BEGIN CERTIFICATE-----\n{node}\n-----END CERTIFICATE-----\n",
        f"-----BEGIN PRIVATE KEY-----\n{node}\n-----END PRIVATE KEY-----\n",
    )


def mtls_config(state: FabricState) -> MeshConfig:
    """mTLS on, an identity for every sidecar node (each host and each workload)."""
    nodes = [*state.hosts, *state.workloads]
    identities = frozen_map({node: fake_identity(node) for node in nodes})
    return MeshConfig(mtls=True, trust_bundle_pem=FAKE_BUNDLE, identities=identities)


class ChangeDraw:
    """The single changes, drawn from a seed: new workloads (services in turn, on random nodes), random
    evictions, random moves to another node."""

    def __init__(self, state: FabricState, seed: int) -> None:
        self._rng = random.Random(seed)
        self._services = sorted(state.services)
        self._nodes = sorted(state.nodes)
        self._placed = 0

    def event(self, kind: str, state: FabricState) -> ev.Event:
        if kind == "placed":
            service = self._services[self._placed % len(self._services)]
            self._placed += 1
            wid = WorkloadId(f"bench-{service}-{self._placed}")
            spiffe = workload_spiffe_id(DEFAULT_TRUST_DOMAIN, service, wid)
            return ev.WorkloadPlaced(Workload(wid, service, spiffe, NEW_WORKLOAD, self._rng.choice(self._nodes)))
        placed = sorted(wid for wid, w in state.workloads.items() if w.node is not None)
        workload = state.workloads[self._rng.choice(placed)]
        if kind == "evicted":
            return ev.WorkloadRemoved(workload.id)
        if kind == "migrated":
            target = self._rng.choice([n for n in self._nodes if n != workload.node])
            return ev.WorkloadPlaced(replace(workload, node=NodeId(target)))
        raise ValueError(f"unknown change kind {kind!r}")


def snapshots_of(cache: SnapshotCache) -> dict[str, MeshSnapshot | None]:
    return {node: cache.snapshot(node) for node in cache.nodes()}


def replaced(before: Mapping[str, MeshSnapshot | None], cache: SnapshotCache) -> int:
    """Nodes whose snapshot the cache replaced (or added, or dropped) since ``before``: the cache keeps
    the object of a node whose content did not change."""
    after = snapshots_of(cache)
    gone = sum(1 for node in before if node not in after)
    return gone + sum(1 for node, snapshot in after.items() if snapshot is not before.get(node))


def percentiles(times_ms: list[float]) -> dict[str, float]:
    ordered = sorted(times_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 3),
        "max_ms": round(ordered[-1], 3),
    }


def content(snapshot: MeshSnapshot) -> dict[str, dict[str, str]]:
    """What a node is served: per type, resource name -> content hash (versions left out)."""
    return {
        type_url: {name: resource.digest for name, resource in resources.items()}
        for type_url, resources in snapshot.resources.items()
        if resources
    }


def differing_from_full_rebuild(
    cache: SnapshotCache, state: FabricState, config: MeshConfig, paths: ServicePaths | None = None
) -> int:
    """Nodes whose served resources (names and content hashes) differ from a full build (with ``paths``:
    with those levels)."""
    full = build_snapshots(state, config, None, paths)
    served = snapshots_of(cache)
    nodes = set(full) | set(served)
    differing = 0
    for node in nodes:
        mine, theirs = served.get(node), full.get(node)
        if mine is None or theirs is None or content(mine) != content(theirs):
            differing += 1
    return differing


def measure_baseline(state: FabricState, config: MeshConfig, rounds: int, seed: int) -> dict[str, Any]:
    """The full rebuild after one placement, into a cache holding the previous build."""
    cache = SnapshotCache()
    cache.set_snapshots(build_snapshots(state, config))
    draw = ChangeDraw(state, seed)
    times: list[float] = []
    changed: list[int] = []
    gc.collect()
    for _ in range(rounds):
        event = draw.event("placed", state)
        state = state.apply(event)
        if config.mtls:
            assert isinstance(event, ev.WorkloadPlaced)
            wid = event.workload.id
            config = replace(config, identities=map_with(config.identities, wid, fake_identity(wid)))
        before = snapshots_of(cache)
        started = time.perf_counter()
        cache.set_snapshots(build_snapshots(state, config))
        times.append((time.perf_counter() - started) * 1000)
        changed.append(replaced(before, cache))
    return {
        "best_ms": round(min(times), 2),
        "median_ms": round(statistics.median(times), 2),
        "changed_nodes_median": statistics.median(changed),
    }


@dataclass(frozen=True, slots=True)
class PkiSnapshot:
    """What ``MeshServer.use_identities`` reads of ``pki.identities.IdentitySnapshot``."""

    version: int
    identities: Mapping[str, TlsIdentity]
    """(``use_identities`` reads an SVID's ``cert_chain_pem`` and ``private_key_pem``: a ``TlsIdentity`` has both.)"""
    bundle_pem: str
    revocations: object
    changed_from: tuple[int, frozenset[str]] | None


class FakePki:
    """The PKI's snapshots as ``IdentityManager`` makes them (an identity per sidecar node; a placement
    issues one, an eviction drops and revokes one, a move changes none), without the signing: what is
    timed is the mesh's side of each, ``use_identities``."""

    def __init__(self, state: FabricState) -> None:
        nodes = [*state.hosts, *state.workloads]
        identities = frozen_map({node: fake_identity(node) for node in nodes})
        self.snapshot = PkiSnapshot(1, identities, FAKE_BUNDLE, object(), None)
        self.revoked = 0

    def crl_pem(self) -> str:
        """The CRLs appended to the trust bundle (``PkiService.trust_crls_pem``)."""
        return FAKE_CRL.format(self.revoked)

    def after(self, event: ev.Event) -> PkiSnapshot | None:
        """The snapshot ``event`` makes (None: it changes no identity)."""
        old = self.snapshot
        if isinstance(event, ev.WorkloadPlaced) and event.workload.id not in old.identities:
            subject = event.workload.id
            identities, revocations = map_with(old.identities, subject, fake_identity(subject)), old.revocations
        elif isinstance(event, ev.WorkloadRemoved) and event.workload in old.identities:
            subject = event.workload
            identities, revocations = map_without(old.identities, subject), object()  # its certificate revoked
            self.revoked += 1
        else:
            return None
        self.snapshot = PkiSnapshot(
            old.version + 1, identities, FAKE_BUNDLE, revocations, (old.version, frozenset({subject}))
        )
        return self.snapshot


def measure_publisher(state: FabricState, config: MeshConfig, changes: int, seed: int) -> dict[str, Any]:
    current = {"state": state}
    # A MeshServer, not started (no sockets): its publisher and cache, and under mTLS its PKI listener.
    server = MeshServer(lambda: current["state"], registry=CollectorRegistry(), config=MeshConfig())
    pki = FakePki(state) if config.mtls else None
    if pki is not None:
        server.use_identities(pki.snapshot, mtls=True, crl_pem=pki.crl_pem())
    try:
        return _measure_publisher(server, current, pki, changes, seed)
    finally:
        server.metrics.unregister()


def _measure_publisher(
    server: MeshServer, current: dict[str, FabricState], pki: FakePki | None, changes: int, seed: int
) -> dict[str, Any]:
    publisher, cache, state = server.publisher, server.cache, current["state"]
    publisher.build_now()  # the first build: every node
    draw = ChangeDraw(state, seed)
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    changed: dict[str, list[int]] = {kind: [] for kind in KINDS}
    gc.collect()
    gc.freeze()  # as `edgectl run` does once started: the long-lived model out of the collector's way
    for k in range(changes * len(KINDS)):
        kind = KINDS[k % len(KINDS)]
        event = draw.event(kind, current["state"])
        current["state"] = current["state"].apply(event)
        publisher.note(event, current["state"])  # as the bus tells the xDS server of every event
        identities = pki.after(event) if pki is not None else None  # the PKI's own work: not timed
        # Counting the replaced snapshots takes two 10,000-node maps: done on one change in ten, so the
        # benchmark's own garbage does not bring the collector into the timed builds.
        counted = k % (10 * len(KINDS)) < len(KINDS)
        before = snapshots_of(cache) if counted else {}
        started = time.perf_counter()
        if identities is not None and pki is not None:
            # The PKI's listener, on the model writer (as `edgectl run` subscribes it: with the CRLs).
            server.use_identities(identities, crl_pem=pki.crl_pem())
        publisher.build_now()
        times[kind].append((time.perf_counter() - started) * 1000)
        if counted:
            changed[kind].append(replaced(before, cache))
    figures: dict[str, Any] = {
        kind: {
            **percentiles(times[kind]),
            "changed_nodes_p50": statistics.median(changed[kind]),
            "changed_nodes_max": max(changed[kind]),
        }
        for kind in KINDS
    }
    gc.collect()
    quiet: list[float] = []
    for _ in range(changes):
        started = time.perf_counter()
        publisher.build_now()
        quiet.append((time.perf_counter() - started) * 1000)
    figures["nothing_changed"] = percentiles(quiet)
    figures["nodes_differing_from_full_rebuild"] = differing_from_full_rebuild(
        cache, current["state"], publisher.config
    )
    gc.unfreeze()
    return figures


def run(shape: FabricShape, workloads: int, changes: int, rounds: int) -> dict[str, Any]:
    state = build_model(shape, workloads)
    configs: dict[str, Callable[[FabricState], MeshConfig]] = {
        "plaintext": lambda _state: MeshConfig(),
        "mtls": mtls_config,
    }
    results: dict[str, Any] = {}
    for name, config_of in configs.items():
        config = config_of(state)
        results[name] = {
            "baseline_full_rebuild": measure_baseline(state, config, rounds, seed=3),
            **measure_publisher(state, config, changes, seed=4),
        }
        placed_ms = results[name]["placed"]
        results[name]["goal_met_p50"] = placed_ms["p50_ms"] < GOAL_MS
        results[name]["goal_met_p99"] = placed_ms["p99_ms"] < GOAL_MS
    return {
        "benchmark": "xds_rebuild",
        "nodes": len(state.nodes),
        "hosts": len(state.hosts),
        "services": len(state.services),
        "workloads": len(state.workloads),
        "sidecar_nodes": len(state.hosts) + sum(1 for w in state.workloads.values() if w.node is not None),
        "changes_per_kind": changes,
        "rounds": rounds,
        "gc": "enabled",
        "goal_ms_per_placement": GOAL_MS,
        **results,
    }


def print_table(figures: Mapping[str, Any]) -> None:
    print(
        f"xDS rebuild through SnapshotPublisher.build_now: {figures['workloads']:,} workloads on "
        f"{figures['nodes']:,} nodes, {figures['sidecar_nodes']:,} sidecar nodes, "
        f"{figures['changes_per_kind']} changes per kind, gc on, Python {platform.python_version()}"
    )
    for name in ("plaintext", "mtls"):
        config = figures[name]
        base = config["baseline_full_rebuild"]
        print(f"  {name}")
        print(
            f"    {'baseline: full rebuild + set_snapshots':<40} best {base['best_ms']:>9.2f} ms  "
            f"median {base['median_ms']:>9.2f} ms  nodes replaced {base['changed_nodes_median']:g}"
        )
        for kind in (*KINDS, "nothing_changed"):
            row = config[kind]
            replaced_nodes = ""
            if kind in KINDS:
                replaced_nodes = f"  nodes replaced p50 {row['changed_nodes_p50']:g} max {row['changed_nodes_max']}"
            print(
                f"    {'build_now after ' + kind.replace('_', ' '):<40} p50 {row['p50_ms']:>10.3f} ms  "
                f"p99 {row['p99_ms']:>9.3f} ms  max {row['max_ms']:>9.3f} ms"
                f"{replaced_nodes}"
            )
        print(
            f"    goal < {GOAL_MS:g} ms per placement: p50 {'met' if config['goal_met_p50'] else 'missed'}, "
            f"p99 {'met' if config['goal_met_p99'] else 'missed'}; nodes differing from a full rebuild: "
            f"{config['nodes_differing_from_full_rebuild']}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200, help="changes of each kind (200)")
    parser.add_argument("--rounds", type=int, default=5, help="full rebuilds of the baseline (5)")
    parser.add_argument("--workloads", type=int, default=WORKLOADS, help=f"placement requests ({WORKLOADS:,})")
    args = parser.parse_args()
    if args.changes < 1 or args.rounds < 1:
        parser.error("--changes and --rounds must be at least 1")
    # The plaintext run warns once that sidecars enforce no RBAC without mTLS: true, and not measured here.
    logging.getLogger("edgectl.mesh").setLevel(logging.ERROR)
    figures = run(FabricShape(), args.workloads, args.changes, args.rounds)
    print_table(figures)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
