"""The scheduler: profiles, replica spread, reasons, candidates, batches."""

from __future__ import annotations

from netmodel.events import NodeWentDown, WorkloadPlaced
from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.types import Resources, Tier, Workload
from placement.scheduler import DEFAULT_PROFILE, LATENCY_FIRST_PROFILE, schedule, schedule_batch, schedule_on
from placement.snapshot import ClusterSnapshot
from placement.synthetic import FabricShape, build_fabric, random_requests
from placement.types import Decision, Unschedulable
from tests.unit.placement.helpers import apply, example_state, request


def nodes_of(outcome: Decision | Unschedulable) -> list[str]:
    assert isinstance(outcome, Decision), outcome
    return [a.node for a in outcome.assignments]


def filler(node: str, cpu: int, memory: int = 1, n: int = 1) -> WorkloadPlaced:
    wid = WorkloadId(f"db-fill-{node}-{n}")
    return WorkloadPlaced(Workload(wid, ServiceName("db"), SpiffeId(""), Resources(cpu, memory), NodeId(node)))


def test_default_profile_takes_the_least_scarce_tier_the_slo_allows() -> None:
    state = example_state()
    assert nodes_of(schedule(state, request(near=("u1",)))) == ["c-n1"]  # no SLO: cloud, the nearer one
    assert nodes_of(schedule(state, request(near=("u1",), slo=5))) == ["m-n1"]  # cloud is 12 ms: metro
    assert nodes_of(schedule(state, request(near=("u1",), slo=2))) == ["ea-n1"]  # only the edge is close enough


def test_latency_first_profile_takes_the_nearest_node() -> None:
    state = example_state()
    assert nodes_of(schedule(state, request(near=("u2",)), LATENCY_FIRST_PROFILE)) == ["eb-n1"]


def test_replicas_spread_across_nodes_then_sites() -> None:
    state = example_state()
    # No SLO: cloud has two nodes in one site; a third replica goes to the next cheapest tier, while a
    # service with fewer declared replicas (web: 2) keeps the extra instance in the cloud.
    assert nodes_of(schedule(state, request("api", replicas=3))) == ["c-n1", "c-n2", "m-n1"]
    assert nodes_of(schedule(state, request("db", replicas=3)))[:2] == ["c-n1", "c-n2"]
    extra = nodes_of(schedule(state, request("web", replicas=2)))
    assert extra == ["c-n1", "c-n2"]
    # SLO 5 from u1 and u2: metro first, then edge nodes, each on its own node and site.
    placed = nodes_of(schedule(state, request(near=("u1", "u2"), slo=5, replicas=3)))
    assert placed[0] == "m-n1" and len(set(placed)) == 3
    assert set(placed[1:]) <= {"ea-n1", "eb-n1", "ec-n1"}


def test_replicas_share_a_node_only_when_nothing_else_fits() -> None:
    state = example_state()
    placed = nodes_of(schedule(state, request(near=("u1",), slo=0.5, replicas=2, cpu=100)))
    assert placed == ["ea-n1", "ea-n1"]


def test_all_replicas_or_none() -> None:
    state = example_state()
    outcome = schedule(state, request(near=("u1",), slo=0.5, replicas=3, cpu=1000))
    assert isinstance(outcome, Unschedulable)
    assert outcome.reasons[0] == "only 2 of 3 replicas fit"
    assert "Insufficient cpu on 1 node (needs 1000m; most free: 0m at ea-n1)" in outcome.message


def test_unschedulable_reasons_read_like_a_sentence() -> None:
    state = apply(example_state(), NodeWentDown(NodeId("eb-n1")))
    outcome = schedule(state, request(near=("u3",), slo=2.5, cpu=1500))
    assert isinstance(outcome, Unschedulable)
    assert outcome.message == (
        "0/6 nodes are available: 1 node down: eb-n1; 4 nodes beyond max_latency_ms=2.5 from host u3; "
        "Insufficient cpu on 1 node (needs 1500m; most free: 1000m at ec-n1)"
    )
    outcome = schedule(state, request(near=("u3",), slo=1, tiers=(Tier.CLOUD,)))
    assert isinstance(outcome, Unschedulable)
    assert outcome.message == (
        "0/6 nodes are available: 1 node down: eb-n1; 3 nodes not in tier cloud: ea-n1, ec-n1, m-n1; "
        "no node satisfies max_latency_ms=1 from host u3: best is 13 ms at c-n1"
    )


def test_candidates_and_avoid_limit_the_nodes_considered() -> None:
    state = example_state()
    assert nodes_of(schedule(state, request(candidates=frozenset({NodeId("ea-n1")})))) == ["ea-n1"]
    assert nodes_of(schedule(state, request(avoid=frozenset({NodeId("c-n1")})))) == ["c-n2"]
    outcome = schedule(state, request(near=("u1",), slo=1, candidates=frozenset({NodeId("m-n1")})))
    assert isinstance(outcome, Unschedulable)
    assert outcome.message.startswith("0/1 candidate nodes are available: no node satisfies max_latency_ms=1")


def test_schedule_changes_nothing_and_schedule_on_assumes() -> None:
    state = example_state()
    schedule(state, request(cpu=16000))
    assert nodes_of(schedule(state, request(cpu=16000))) == ["c-n1"]
    snapshot = ClusterSnapshot(state)
    assert nodes_of(schedule_on(snapshot, request(cpu=16000))) == ["c-n1"]
    assert nodes_of(schedule_on(snapshot, request(cpu=16000))) == ["c-n2"]
    assert isinstance(schedule_on(snapshot, request(cpu=16000)), Unschedulable)
    assert int(snapshot.used_cpu.sum()) == 32000  # the refused one left nothing behind


def test_site_counts_follow_every_assume_and_forget() -> None:
    """Kept between decisions for speed, a service's count per site is never stale, nor writable."""
    snapshot = ClusterSnapshot(example_state())
    web, resources = ServiceName("web"), Resources(1, 1)
    i = snapshot.index[NodeId("c-n1")]
    sites = snapshot.site_of
    before = snapshot.site_instances_of(web).copy()
    snapshot.assume(web, resources, i)
    after = snapshot.site_instances_of(web)
    assert list(after - before) == [int(s == sites[i]) for s in sites], "one more in c-n1's site, on each of its nodes"
    assert not after.flags.writeable
    snapshot.forget(web, resources, i)
    assert list(snapshot.site_instances_of(web)) == list(before)


def test_batch_places_the_most_constrained_first() -> None:
    state = example_state()
    # Arrival order would give ea-n1 to the first (latency-first, SLO 5) and leave the second
    # (SLO 0.5 from u1: only ea-n1) with nothing.
    loose = request(near=("u1",), slo=5, cpu=2000, memory=100)
    tight = request(near=("u1",), slo=0.5, cpu=2000, memory=100)
    online = ClusterSnapshot(state)
    assert isinstance(schedule_on(online, loose, LATENCY_FIRST_PROFILE), Decision)
    assert isinstance(schedule_on(online, tight, LATENCY_FIRST_PROFILE), Unschedulable)
    result = schedule_batch(ClusterSnapshot(state), [loose, tight], LATENCY_FIRST_PROFILE)
    assert [nodes_of(o) for o in result.outcomes] == [["m-n1"], ["ea-n1"]]


def test_batch_makes_room_by_moving_another_member() -> None:
    state = example_state()
    a = request(near=("u1",), slo=5, cpu=2000, memory=100)  # ea-n1, eb-n1, ec-n1(too small), m-n1
    b = request(near=("u1",), slo=3, cpu=3000, memory=100)  # m-n1 only (ea-n1 too small)
    result = schedule_batch(ClusterSnapshot(state), [a, b], LATENCY_FIRST_PROFILE, improve=False)
    assert [nodes_of(o) for o in result.outcomes] == [["ea-n1"], ["m-n1"]]


def test_batch_reports_what_cannot_go_anywhere() -> None:
    result = schedule_batch(ClusterSnapshot(example_state()), [request(cpu=10**6), request()])
    assert isinstance(result.outcomes[0], Unschedulable)
    assert "Insufficient cpu" in result.outcomes[0].message
    assert nodes_of(result.outcomes[1]) == ["c-n1"]
    assert len(result.decisions) == 1 and len(result.unschedulable) == 1


def test_batch_local_search_never_does_worse_than_greedy() -> None:
    shape = FabricShape(edge_sites=8, edge_nodes=1, metro_sites=2, metro_nodes=1, cloud_sites=1, cloud_nodes=2)
    state = build_fabric(shape, seed=3)
    requests = random_requests(state, 40, seed=5, slo_ms=(2.0, 8.0))

    def total(improve: bool) -> tuple[int, float]:
        result = schedule_batch(ClusterSnapshot(state), requests, LATENCY_FIRST_PROFILE, improve=improve)
        return len(result.decisions), sum(a.score for d in result.decisions for a in d.assignments)

    greedy, improved = total(False), total(True)
    assert improved[0] >= greedy[0]
    if improved[0] == greedy[0]:
        assert improved[1] >= greedy[1] - 1e-6


def test_default_profile_is_the_default() -> None:
    assert DEFAULT_PROFILE.name == "default"
