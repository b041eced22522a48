"""examples/bandwidth.yaml, the bandwidth lab: what the lab and its demo step rely on, checked on the model."""

from __future__ import annotations

from pathlib import Path

from netmodel.bandwidth import Reservation, admission, link_label, plan_reservations
from netmodel.events import WorkloadPlaced
from netmodel.fabric import build_state
from netmodel.fabric_file import parse_fabric
from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Resources, Workload

REPO = Path(__file__).resolve().parents[3]
LAB = REPO / "examples" / "bandwidth.yaml"


def lab() -> FabricState:
    return build_state(parse_fabric(LAB.read_bytes(), str(LAB)))


def place(state: FabricState, n: int, node: str, bandwidth_mbps: float | None = None) -> FabricState:
    workload = Workload(
        WorkloadId(f"video-{n}"),
        ServiceName("video"),
        SpiffeId("spiffe://t/video"),
        Resources(500, 256),
        NodeId(node),
        8554,
        bandwidth_mbps=bandwidth_mbps,
    )
    return state.apply(WorkloadPlaced(workload))


def test_the_edge_has_a_short_primary_and_a_longer_backup_uplink_of_20_mbit() -> None:
    state = lab()
    uplinks = {
        link_label(state, link): (attrs.latency_us, attrs.capacity_mbps)
        for link, attrs in state.topology.links.items()
        if state.topology.switches[link.src].name == "e1"
    }
    assert uplinks == {"e1:1->m1:1": (2000, 20.0), "e1:2->m2:1": (5000, 20.0)}
    assert {h: state.hosts[h].attachment.switch for h in state.hosts} == {"u1": 0xE1, "u2": 0xE1, "h9": 0x201}  # type: ignore[union-attr]


def test_video_in_the_cloud_reserves_8_mbit_each_way_over_the_primary_uplink() -> None:
    state = place(lab(), 1, "c-n1")
    video = state.services[ServiceName("video")]
    assert (video.bandwidth_mbps, video.near, video.port) == (8.0, ("u1",), 8554)
    plan = plan_reservations(state)
    assert not plan.unreserved
    paths = sorted(
        " ".join(link_label(state, link) for link in r.links) for r in plan.reservations if isinstance(r, Reservation)
    )
    assert paths == ["c1:1->m1:3 m1:1->e1:1", "e1:1->m1:1 m1:3->c1:1"]
    assert {link_label(state, link): mbps for link, mbps in plan.links().items() if link.src == 0xE1} == {
        "e1:1->m1:1": 8.0
    }


def test_when_the_primary_is_full_an_instance_detours_over_the_backup_and_one_too_big_is_refused() -> None:
    state = place(lab(), 1, "c-n1")
    state = place(state, 2, "c-n2", bandwidth_mbps=12)  # the primary's 20 Mbit/s all reserved
    plan = plan_reservations(state)
    assert plan.residual_mbps(next(link for link in plan.links() if link_label(state, link) == "e1:1->m1:1")) == 0
    third = place(state, 3, "c-n3")
    after = plan_reservations(third, plan)
    assert admission(plan, after) is None
    outcomes = after.of_owner(WorkloadId("video-3"))
    links = {link_label(third, link) for o in outcomes if isinstance(o, Reservation) for link in o.links}
    assert len(outcomes) == 2 and {"e1:2->m2:1", "m2:1->e1:2"} <= links and "e1:1->m1:1" not in links
    too_big = place(state, 3, "c-n3", bandwidth_mbps=21)
    refusal = admission(plan, plan_reservations(too_big, plan))
    assert refusal is not None and "e1:1->m1:1" in refusal.message
