"""Per-caller service paths: each caller's endpoints of a service by priority, nearest instances first
(meshctl/paths.py, and how snapshot.py and the publisher use them)."""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import numpy as np
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from meshctl.cache import SnapshotCache
from meshctl.metrics import XdsMetrics
from meshctl.paths import (
    ENDPOINT_ORDERS,
    NEAREST,
    ROUND_ROBIN,
    PathRules,
    _distances,
    _level_vector,
    holding_rows,
    levels_of_rows,
    priority_levels,
)
from meshctl.publisher import SnapshotPublisher
from meshctl.snapshot import MeshConfig, MeshSnapshot, build_snapshots
from meshctl.xds_types import ENDPOINTS, PUSH_ORDER, ROUTES
from netmodel import events as ev
from netmodel.fabric import build_state
from netmodel.fabric_file import parse_fabric
from netmodel.graph import link_matrix, shortest_distances, usable_latency
from netmodel.ids import PortNo, SwitchId
from netmodel.state import FabricState
from netmodel.types import Attachment, LinkId, frozen_map
from tests.unit.meshctl.mesh_helpers import place, workload

# Two edge sites 2 ms apart, both 10 ms from the cloud.
FABRIC = b"""
name: paths-test
subnet: 10.1.0.0/16
sites:
  - {id: edge-a, tier: edge, region: eu-west, zone: a}
  - {id: edge-b, tier: edge, region: eu-west, zone: b}
  - {id: cloud, tier: cloud, region: eu-central, zone: dc1}
switches:
  - {id: ea1, dpid: 1, site: edge-a}
  - {id: eb1, dpid: 2, site: edge-b}
  - {id: c1, dpid: 3, site: cloud}
links:
  - {a: ea1, b: eb1, latency_ms: 2, bandwidth_mbps: 100}
  - {a: ea1, b: c1, latency_ms: 10, bandwidth_mbps: 100}
  - {a: eb1, b: c1, latency_ms: 10, bandwidth_mbps: 100}
hosts:
  - {id: u1, switch: ea1, ip: 10.1.0.1}
  - {id: u1b, switch: ea1, ip: 10.1.0.5}
  - {id: u2, switch: eb1, ip: 10.1.0.2}
  - {id: u3, switch: c1, ip: 10.1.0.3}
nodes:
  - {id: ea-n1, site: edge-a, switch: ea1, cpu_millis: 4000, memory_mib: 4096, ip: 10.1.1.10}
  - {id: eb-n1, site: edge-b, switch: eb1, cpu_millis: 4000, memory_mib: 4096, ip: 10.1.2.10}
  - {id: c-n1, site: cloud, switch: c1, cpu_millis: 4000, memory_mib: 4096, ip: 10.1.9.10}
services:
  - {name: web, port: 8080, replicas: 2, cpu_millis: 100, memory_mib: 64, calls: [api],
     allow_from: [{host: u1}, {host: u1b}, {host: u2}, {host: u3}]}
  - {name: api, port: 9090, replicas: 1, cpu_millis: 100, memory_mib: 64, allow_from: [web]}
"""
EDGE_A, CLOUD = "10.1.1.10", "10.1.9.10"
EA1, EB1, C1 = SwitchId(1), SwitchId(2), SwitchId(3)


@functools.cache
def base() -> FabricState:
    return build_state(parse_fabric(FABRIC, "paths-test.yaml"))


def two_webs() -> FabricState:
    """web on the edge-a node and in the cloud; api in the cloud."""
    return place(
        base(), workload("web-a", "web", "ea-n1"), workload("web-c", "web", "c-n1"), workload("api-c", "api", "c-n1")
    )


def priorities(snapshot: MeshSnapshot, service: str) -> dict[str, int]:
    """Endpoint ip -> priority, checking that priorities run 0, 1, 2... (gRPC refuses gaps)."""
    cla = snapshot.of_type(ENDPOINTS)[f"svc/{service}"].message
    found = {
        lb.endpoint.address.socket_address.address: group.priority
        for group in cla.endpoints
        for lb in group.lb_endpoints
    }
    assert sorted(set(found.values())) == list(range(len(set(found.values()))))
    assert all(group.load_balancing_weight.value >= 1 and group.HasField("locality") for group in cla.endpoints)
    return found


def link(state: FabricState, a: SwitchId, b: SwitchId) -> list[LinkId]:
    return [x for x in state.topology.links if {x.src, x.dst} == {a, b}]


def measured(state: FabricState, a: SwitchId, b: SwitchId, ms: float) -> FabricState:
    return state.apply(ev.LinkLatencyMeasured(tuple((x, int(ms * 1000)) for x in link(state, a, b)), at=1.0))


def changed_endpoints(before: dict[str, MeshSnapshot], after: dict[str, MeshSnapshot]) -> set[str]:
    assert set(before) == set(after)
    for node in before:  # nothing but endpoints ever changes with the topology
        assert [t for t in PUSH_ORDER if before[node].digest(t) != after[node].digest(t)] in ([], [ENDPOINTS])
    return {node for node in before if before[node].digest(ENDPOINTS) != after[node].digest(ENDPOINTS)}


# -- the levels ---------------------------------------------------------------------------------------


def test_levels_group_what_is_within_the_margin_of_each_levels_nearest() -> None:
    rules = PathRules(margin_us=1000, margin_ratio=0.2)
    distances = {SwitchId(1): 0.0, SwitchId(2): 900.0, SwitchId(3): 5000.0, SwitchId(4): 5900.0, SwitchId(5): math.inf}
    assert priority_levels(distances, rules) == ((1, 2), (3, 4), (5,))
    # Far away the relative margin rules: 20% of 40 ms is 8 ms.
    far = {SwitchId(1): 40_000.0, SwitchId(2): 47_000.0, SwitchId(3): 48_500.0}
    assert priority_levels(far, rules) == ((1, 2), (3,))
    # A level is anchored at its own nearest, not chained: 0, 1.0, 2.0 ms are two levels.
    assert priority_levels({SwitchId(1): 0.0, SwitchId(2): 1000.0, SwitchId(3): 2000.0}, rules) == ((1, 2), (3,))
    assert priority_levels({}, rules) == ()
    assert priority_levels({SwitchId(7): math.inf}, rules) == ((7,),)


distance = st.one_of(st.sampled_from([0.0, 900.0, 1000.0, 1001.0, 5000.0, math.inf]), st.floats(0, 60_000))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(distance, min_size=4, max_size=4), min_size=1, max_size=6),
    st.sampled_from([PathRules(), PathRules(margin_us=0, margin_ratio=0), PathRules(margin_us=math.inf)]),
)
def test_the_vectorised_levels_are_the_levels(rows: list[list[float]], rules: PathRules) -> None:
    switches = (SwitchId(2), SwitchId(5), SwitchId(7), SwitchId(9))
    expected = [priority_levels(dict(zip(switches, row, strict=True)), rules) for row in rows]
    vectors: dict[int, tuple[tuple[tuple[SwitchId, ...], ...], np.ndarray]] = {}
    made = levels_of_rows(np.array(rows, dtype=np.float64), switches, rules, vectors)
    assert made == expected
    column_of = {switch: column for column, switch in enumerate(switches)}
    for levels in made:  # the level of each column, as the hold check reads it
        assert vectors[id(levels)][0] is levels
        assert vectors[id(levels)][1].tolist() == _level_vector(levels, column_of, len(switches)).tolist()


def _some_levels(switches: tuple[SwitchId, ...], cuts: list[int], order: list[int]) -> tuple[tuple[SwitchId, ...], ...]:
    """``switches`` in ``order`` (a permutation), cut before the positions in ``cuts``."""
    ordered = [switches[k % len(switches)] for k in order]
    ordered = list(dict.fromkeys(ordered)) + [s for s in switches if s not in ordered]
    bounds = sorted({c % len(ordered) for c in cuts} - {0})
    pieces = [ordered[a:b] for a, b in zip([0, *bounds], [*bounds, len(ordered)], strict=True)]
    return tuple(tuple(sorted(piece)) for piece in pieces if piece)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(distance, min_size=4, max_size=4),
            st.one_of(
                st.none(),
                st.tuples(st.lists(st.integers(0, 3), max_size=3), st.permutations(range(4))),
                st.just("fresh"),
                st.just("other"),
            ),
        ),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from([PathRules(), PathRules(margin_us=0, margin_ratio=0), PathRules(margin_us=math.inf)]),
)
def test_the_vectorised_hold_check_is_the_hold_check(rows: list[tuple[list[float], object]], rules: PathRules) -> None:
    """``holding_rows`` says of every row what ``PathRules.still_holds`` says of it, whatever the kept
    levels: none, arbitrary cuts of any order, the row's own fresh levels, or levels over other switches."""
    switches = (SwitchId(2), SwitchId(5), SwitchId(7), SwitchId(9))
    table = np.array([distances for distances, _ in rows], dtype=np.float64)
    kept: list[tuple[tuple[SwitchId, ...], ...] | None] = []
    for distances, how in rows:
        if how is None:
            kept.append(None)
        elif how == "fresh":
            kept.append(priority_levels(dict(zip(switches, distances, strict=True)), rules))
        elif how == "other":
            kept.append(((SwitchId(2), SwitchId(5)), (SwitchId(11),)))
        else:
            cuts, order = how  # type: ignore[misc]
            kept.append(_some_levels(switches, cuts, list(order)))
    expected = [
        levels is not None and rules.still_holds(levels, dict(zip(switches, distances, strict=True)))
        for levels, (distances, _) in zip(kept, rows, strict=True)
    ]
    assert holding_rows(table, switches, kept, rules).tolist() == expected
    for levels, (distances, how) in zip(kept, rows, strict=True):
        if how == "fresh":  # (what lets compute_paths check the hold before it cuts anew)
            assert levels is not None and rules.still_holds(levels, dict(zip(switches, distances, strict=True)))


def test_distances_are_from_the_caller_whichever_side_dijkstra_starts_from() -> None:
    # One-way latencies differ by direction: edge-b -> edge-a 1 ms, edge-a -> edge-b 7 ms.
    state = base()
    ab = [x for x in link(state, EA1, EB1) if x.src == EA1]
    ba = [x for x in link(state, EA1, EB1) if x.src == EB1]
    state = state.apply(ev.LinkLatencyMeasured(((ab[0], 7000), (ba[0], 1000)), at=1.0))
    matrix, index = link_matrix(state.topology, usable_latency())
    full = shortest_distances(matrix)
    sources, targets = [EA1, EB1, C1], [EA1, EB1]
    expected = full[np.ix_([index[s] for s in sources], [index[t] for t in targets])]
    assert np.array_equal(_distances(state.topology, sources, targets), expected)  # fewer targets: reversed
    assert np.array_equal(_distances(state.topology, sources[:1], targets), expected[:1])  # fewer sources
    assert expected[1, 0] == 1000 and expected[0, 1] == 7000


# -- what each caller gets -----------------------------------------------------------------------------


def test_an_edge_caller_uses_the_edge_instance_first_and_a_cloud_caller_the_cloud_one() -> None:
    snapshots = build_snapshots(two_webs(), MeshConfig())
    assert priorities(snapshots["u1"], "web") == {EDGE_A: 0, CLOUD: 1}
    assert priorities(snapshots["u2"], "web") == {EDGE_A: 0, CLOUD: 1}  # edge-b: 2 ms against 10
    assert priorities(snapshots["u3"], "web") == {CLOUD: 0, EDGE_A: 1}
    # A workload calls from its node's switch: web-a at the edge, web-c in the cloud (api is only there).
    assert priorities(snapshots["web-a"], "api") == {CLOUD: 0}


def test_callers_with_the_same_order_share_one_endpoints_object() -> None:
    snapshots = build_snapshots(two_webs(), MeshConfig())
    edge = snapshots["u1"].of_type(ENDPOINTS)["svc/web"]
    # u1b beside u1, and u2 on another switch that orders the instances the same way: one resource.
    assert snapshots["u1b"].of_type(ENDPOINTS)["svc/web"] is edge
    assert snapshots["u2"].of_type(ENDPOINTS)["svc/web"] is edge
    assert snapshots["u3"].of_type(ENDPOINTS)["svc/web"] is not edge
    # ... and the whole outbound part with it.
    assert snapshots["u1"].of_type(ENDPOINTS) is snapshots["u2"].of_type(ENDPOINTS)


def test_a_thousand_callers_on_a_few_switches_build_a_few_endpoints_resources() -> None:
    state = two_webs()
    for i in range(1000):
        where = Attachment((EA1, EB1, C1)[i % 3], PortNo(100 + i))
        mac, ip = f"02:00:00:00:{i // 256:02x}:{i % 256:02x}", f"10.1.{5 + i // 250}.{i % 250 + 1}"
        state = state.apply(ev.HostLearned(mac, ip, where, 1.0))
    snapshots = build_snapshots(state, MeshConfig())
    assert len(snapshots) > 1000
    objects = {id(s.of_type(ENDPOINTS)["svc/web"]) for s in snapshots.values() if "svc/web" in s.of_type(ENDPOINTS)}
    assert len(objects) == 2  # the edge order and the cloud order


def test_an_instance_at_equal_distance_shares_the_priority() -> None:
    state = place(base(), workload("web-a", "web", "ea-n1"), workload("web-b", "web", "eb-n1"))
    snapshots = build_snapshots(state, MeshConfig())
    assert priorities(snapshots["u3"], "web") == {EDGE_A: 0, "10.1.2.10": 0}  # 10 ms each, from the cloud
    assert priorities(snapshots["u1"], "web") == {EDGE_A: 0, "10.1.2.10": 1}  # 0 against 2 ms


def test_a_caller_whose_switch_is_unknown_gets_one_priority() -> None:
    state = two_webs()
    learned = state.apply(ev.HostLearned("02:00:00:00:00:99", "10.1.0.99", Attachment(EA1, PortNo(99)), 1.0))
    host = next(h for h in learned.hosts.values() if not h.declared)
    unplaced = replace(learned, hosts=frozen_map({**learned.hosts, host.id: replace(host, attachment=None)}))
    assert priorities(build_snapshots(unplaced, MeshConfig())[host.id], "web") == {EDGE_A: 0, CLOUD: 0}


# -- topology changes ---------------------------------------------------------------------------------


def test_a_latency_change_that_reorders_changes_the_endpoints_of_the_affected_callers_only() -> None:
    state = two_webs()
    before = build_snapshots(state, MeshConfig())
    # edge-b <-> edge-a now 30 ms: from edge-b the cloud (10 ms) is nearer than edge-a (20 ms via the cloud).
    after = build_snapshots(measured(state, EA1, EB1, 30), MeshConfig())
    assert changed_endpoints(before, after) == {"u2"}
    assert priorities(after["u2"], "web") == {CLOUD: 0, EDGE_A: 1}


def test_a_latency_change_that_reorders_nothing_changes_no_digest() -> None:
    state = two_webs()
    before = build_snapshots(state, MeshConfig())
    for a, b, ms in ((EA1, C1, 12), (EA1, EB1, 2.5), (EB1, C1, 9)):
        state = measured(state, a, b, ms)
        assert changed_endpoints(before, build_snapshots(state, MeshConfig())) == set()


def test_a_down_link_reorders_and_an_unreachable_instance_comes_last() -> None:
    state = two_webs()
    before = build_snapshots(state, MeshConfig())
    cut = state.apply(ev.LinkWentDown(link(state, EA1, EB1)[0]))
    after = build_snapshots(cut, MeshConfig())
    assert changed_endpoints(before, after) == {"u2"}  # edge-a is 20 ms away now, the cloud 10
    assert priorities(after["u2"], "web") == {CLOUD: 0, EDGE_A: 1}
    # The cloud cut off: still an endpoint for edge callers (the model may be wrong), but last.
    island = cut.apply(ev.LinkWentDown(link(cut, EA1, C1)[0])).apply(ev.LinkWentDown(link(cut, EB1, C1)[0]))
    isolated = build_snapshots(island, MeshConfig())
    assert priorities(isolated["u1"], "web") == {EDGE_A: 0, CLOUD: 1}
    assert priorities(isolated["u2"], "web") == {EDGE_A: 0, CLOUD: 0}  # nothing reachable: one priority


def test_a_wide_margin_puts_every_instance_in_one_priority() -> None:
    snapshots = build_snapshots(two_webs(), MeshConfig(paths=PathRules(margin_us=math.inf)))
    assert priorities(snapshots["u1"], "web") == {EDGE_A: 0, CLOUD: 0}


def test_the_round_robin_endpoint_order_gives_every_caller_every_reachable_instance_in_one_priority() -> None:
    state = two_webs()
    nearest = build_snapshots(state, MeshConfig(paths=ENDPOINT_ORDERS[NEAREST]))
    assert priorities(nearest["u1"], "web") == {EDGE_A: 0, CLOUD: 1}
    round_robin = build_snapshots(state, MeshConfig(paths=ENDPOINT_ORDERS[ROUND_ROBIN]))
    for caller in ("u1", "u1b", "u2", "u3"):
        assert priorities(round_robin[caller], "web") == {EDGE_A: 0, CLOUD: 0}, caller
    # What a caller cannot reach still comes last: edge-a cut off from the cloud.
    island = state.apply(ev.LinkWentDown(link(state, EA1, EB1)[0])).apply(ev.LinkWentDown(link(state, EA1, C1)[0]))
    assert priorities(build_snapshots(island, MeshConfig(paths=ENDPOINT_ORDERS[ROUND_ROBIN]))["u1"], "web") == {
        EDGE_A: 0,
        CLOUD: 1,
    }


# -- the publisher ------------------------------------------------------------------------------------


def builds(metrics: XdsMetrics) -> float:
    return float(metrics.registry.get_sample_value("edgectl_xds_snapshot_builds_total", {"outcome": "ok"}) or 0)


def test_the_publisher_rebuilds_on_a_reordering_topology_change_only() -> None:
    state = two_webs()
    cache, metrics = SnapshotCache(), XdsMetrics()
    publisher = SnapshotPublisher(lambda: state, MeshConfig(), cache, metrics)
    publisher.build_now()
    assert builds(metrics) == 1
    first = cache.snapshot("u2")
    assert first is not None

    state = measured(state, EA1, C1, 12)  # reorders nothing: no rebuild at all
    publisher.build_now()
    assert builds(metrics) == 1 and publisher.last_generation == state.generation

    state = measured(state, EA1, EB1, 30)  # edge-b now prefers the cloud
    publisher.build_now()
    assert builds(metrics) == 2
    after = cache.snapshot("u2")
    assert after is not None and after.digest(ENDPOINTS) != first.digest(ENDPOINTS)
    assert priorities(after, "web") == {CLOUD: 0, EDGE_A: 1}

    state = state.apply(ev.LinkWentDown(link(state, EA1, EB1)[0]))  # down: the same order as at 30 ms
    publisher.build_now()
    assert builds(metrics) == 2


def test_a_reordering_latency_rebuilds_the_callers_behind_the_moved_switch_only() -> None:
    """edge-b's order of web moves; web's other callers (u1 and u1b on edge-a, u3 in the cloud) keep
    theirs, and with it their snapshots: not rebuilt, not even to equal content."""
    from meshctl.mesh_builder import MeshBuilder

    state = two_webs()
    builder = MeshBuilder()
    first = builder.update(state, MeshConfig(), None)
    assert first is not None and first.complete
    state = measured(state, EA1, EB1, 30)
    update = builder.update(state, MeshConfig(), None)
    assert update is not None and not update.complete
    assert set(update.snapshots) == {"u2"}
    assert priorities(update.snapshots["u2"], "web") == {CLOUD: 0, EDGE_A: 1}
    assert builder.update(state, MeshConfig(), None) is None


def test_a_retry_leaves_the_priority_it_tried() -> None:
    """The nearest priority may hold one instance: a retry that stayed there would meet it again."""
    routes = build_snapshots(two_webs(), MeshConfig())["u1"].of_type(ROUTES)["out/8080"].message
    for route in routes.virtual_hosts[0].routes:
        priority = route.route.retry_policy.retry_priority
        assert priority.name == "envoy.retry_priorities.previous_priorities"
        config = previous_priorities_config_pb2.PreviousPrioritiesConfig()
        assert priority.typed_config.Unpack(config) and config.update_frequency == 1  # after every try


def test_levels_hold_within_the_hysteresis_band_either_way() -> None:
    rules = PathRules()  # margin 1 ms (1000 us) near the nearest; hysteresis a quarter of it either way
    a, b = SwitchId(1), SwitchId(2)
    together, apart = ((a, b),), ((a,), (b,))
    assert priority_levels({a: 0.0, b: 990.0}, rules) == together
    assert priority_levels({a: 0.0, b: 1050.0}, rules) == apart  # fresh: over the margin
    assert rules.still_holds(together, {a: 0.0, b: 1050.0})  # ... but within (1 + 1/4) margins: no flip
    assert not rules.still_holds(together, {a: 0.0, b: 1300.0})
    assert rules.still_holds(apart, {a: 0.0, b: 980.0})  # back under the margin, not under (1 - 1/4) of it
    assert not rules.still_holds(apart, {a: 0.0, b: 700.0})
    assert not rules.still_holds(apart, {a: 900.0, b: 0.0})  # the order itself changed
    assert not rules.still_holds(together, {a: 0.0, b: 10.0, SwitchId(3): 5.0})  # another instance set
    assert rules.still_holds(((a,), (b,)), {a: 0.0, b: math.inf})  # unreachable, last on its own: as before
    assert not rules.still_holds(together, {a: 0.0, b: math.inf})


def test_a_latency_jittering_at_a_level_bound_pushes_nothing() -> None:
    """u2 (edge-b) sees web at edge-a 2 ms away; the cloud web measured at 2.9 ms shares its level (within
    2 + 1 ms). Measured at 3.1 ms it would not, freshly computed; within the band it stays: no rebuild.
    At 3.4 ms it leaves."""
    state = measured(two_webs(), EB1, C1, 2.9)
    cache, metrics = SnapshotCache(), XdsMetrics()
    publisher = SnapshotPublisher(lambda: state, MeshConfig(), cache, metrics)
    publisher.build_now()
    snapshot = cache.snapshot("u2")
    assert snapshot is not None and priorities(snapshot, "web") == {EDGE_A: 0, CLOUD: 0}
    built = builds(metrics)
    for jitter in (3.1, 2.95, 3.2, 2.9):
        state = measured(state, EB1, C1, jitter)
        publisher.build_now()
        assert builds(metrics) == built, jitter
    state = measured(state, EB1, C1, 3.4)
    publisher.build_now()
    assert builds(metrics) == built + 1
    snapshot = cache.snapshot("u2")
    assert snapshot is not None and priorities(snapshot, "web") == {EDGE_A: 0, CLOUD: 1}


def test_a_load_measurement_costs_the_publisher_no_path_computation(monkeypatch) -> None:
    """Link load weighs nowhere in the levels: not even one Dijkstra per caller, and no rebuild."""
    import meshctl.mesh_builder as builder_module

    state = two_webs()
    cache, metrics = SnapshotCache(), XdsMetrics()
    publisher = SnapshotPublisher(lambda: state, MeshConfig(), cache, metrics)
    publisher.build_now()
    computed: list[int] = []
    real = builder_module.service_paths
    monkeypatch.setattr(builder_module, "service_paths", lambda *args: computed.append(1) or real(*args))
    state = state.apply(ev.LinkLoadMeasured(tuple((x, 50e6) for x in state.topology.links), at=2.0))
    publisher.build_now()
    assert computed == [] and builds(metrics) == 1 and publisher.last_generation == state.generation
    state = measured(state, EA1, C1, 12)  # a latency change still is looked at
    publisher.build_now()
    assert computed == [1]
