"""Desired state on observed state: a new document replaces declarations and keeps every observation."""

from __future__ import annotations

from dataclasses import replace

from netmodel import events as ev
from netmodel.desired import effective_spec, evicted_by, merge_desired, object_changes
from netmodel.fabric_file import parse_fabric
from netmodel.ids import HostId, NodeId, PortNo, ServiceName, SpiffeId, SwitchId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Attachment, Port, Resources, Workload
from tests.unit.netmodel.netmodel_helpers import EA1, M1, example_spec, example_state, example_text


def _spec(text: str):
    return parse_fabric(text, "desired.yaml")


def _observed() -> FabricState:
    """The example after the network was seen: switches connected, a link measured and down, a host learned,
    a node down, one workload placed."""
    state = example_state()
    for dpid in state.topology.switches:
        ports = tuple(Port(PortNo(n), f"p{n}", up=True) for n in range(1, 6))
        state = state.apply(ev.SwitchConnected(SwitchId(dpid), ports, at=1.0))
    link = next(link for link in state.topology.links if link.src == EA1 and link.dst == M1)
    state = state.apply(ev.LinkDiscovered(link, at=2.0))
    state = state.apply(ev.LinkLatencyMeasured(((link, 2345),), at=3.0))
    other = next(link for link in state.topology.links if link.src == M1 and link.dst != EA1)
    state = state.apply(ev.LinkWentDown(other))
    state = state.apply(ev.HostLearned("02:00:00:00:09:99", "10.0.7.7", Attachment(SwitchId(EA1), PortNo(5)), 4.0))
    state = state.apply(ev.NodeWentDown(NodeId("eb-n1")))
    workload = Workload(
        WorkloadId("web-1"), ServiceName("web"), SpiffeId("spiffe://edgectl.local/svc/web/w/web-1"), Resources(1, 1)
    )
    return state.apply(ev.WorkloadPlaced(replace(workload, node=NodeId("ea-n1"), port=8080)))


def test_the_same_document_changes_nothing() -> None:
    state = _observed()
    assert merge_desired(state, example_spec()) is state


def test_observations_survive_a_new_declaration() -> None:
    state = _observed()
    spec = _spec(
        example_text().replace("latency_ms: 2, bandwidth_mbps: 100}", "latency_ms: 3, bandwidth_mbps: 150}", 1)
    )
    merged = merge_desired(state, spec)
    link = next(link for link in state.topology.links if link.src == EA1 and link.dst == M1)
    before, after = state.topology.links[link], merged.topology.links[link]
    assert (after.declared_latency_us, after.capacity_mbps) == (3000, 150)
    assert (after.measured_latency_us, after.discovered, after.up) == (before.measured_latency_us, True, True)
    down = [x for x, attrs in state.topology.links.items() if not attrs.up]
    assert down and all(not merged.topology.links[x].up for x in down)
    assert all(s.connected for s in merged.topology.switches.values())
    assert merged.nodes[NodeId("eb-n1")].up is False
    assert HostId("02:00:00:00:09:99") in merged.hosts
    assert merged.workloads == state.workloads
    assert merged.hosts is state.hosts and merged.workloads is state.workloads  # unchanged parts are shared


def test_a_tightened_slo_is_a_declaration_change_only() -> None:
    state = _observed()
    spec = _spec(example_text().replace("max_latency_ms: 5", "max_latency_ms: 3"))
    merged = merge_desired(state, spec)
    assert merged.services[ServiceName("web")].max_latency_ms == 3
    assert merged.topology is state.topology
    assert object_changes(example_spec(), spec).changed == ("service/web",)


def test_applied_through_the_model_bumps_the_generation_and_records_the_revision() -> None:
    state = _observed()
    same = state.apply(ev.DesiredStateApplied(example_spec(), ""))
    assert same is state
    spec = _spec(example_text().replace("max_latency_ms: 5", "max_latency_ms: 4"))
    new = state.apply(ev.DesiredStateApplied(spec, "abc123"))
    assert (new.generation, new.desired_revision) == (state.generation + 1, "abc123")


def test_an_undeclared_connected_switch_stays_and_an_unconnected_one_goes() -> None:
    state = _observed()
    text = example_text()
    without_c2 = "\n".join(line for line in text.splitlines() if "c2" not in line)
    spec = _spec(without_c2)
    merged = merge_desired(state, spec)
    c2 = merged.topology.switches[SwitchId(0x202)]
    assert (c2.declared, c2.connected) == (False, True)
    # Not connected: gone with its declaration.
    unconnected = merge_desired(example_state(), spec)
    assert SwitchId(0x202) not in unconnected.topology.switches
    assert not any(SwitchId(0x202) in (x.src, x.dst) for x in unconnected.topology.links)


def test_prune_off_keeps_removed_objects_as_orphans() -> None:
    text = example_text()
    spec = _spec(text.replace("  - {name: db,", "  - {name: db2,").replace("calls: [db]", "calls: [db2]"))
    kept, orphans = effective_spec(example_spec(), spec, prune=False)
    assert orphans.names == ("service/db",)
    assert {s.name for s in kept.services} >= {"db", "db2"}
    pruned, none = effective_spec(example_spec(), spec, prune=True)
    assert not none and pruned is spec


def test_pruning_a_service_evicts_its_instances() -> None:
    state = _observed()
    lines = (line for line in example_text().splitlines() if "{name: web" not in line)
    spec = _spec("\n".join(lines).replace("allow_from: [web]", "allow_from: []"))  # nothing may name web
    assert evicted_by(state, spec) == (WorkloadId("web-1"),)
    merged = merge_desired(state, spec)
    assert WorkloadId("web-1") not in merged.workloads


def test_a_link_on_another_port_is_a_changed_link_and_no_orphan() -> None:
    text = example_text().replace("{a: ea1, b: m1, latency_ms: 2", "{a: ea1, b: m1, a_port: 9, latency_ms: 2")
    spec = _spec(text)
    changes = object_changes(example_spec(), spec)
    assert "link/ea1-m1" in changes.changed
    kept, orphans = effective_spec(example_spec(), spec, prune=False)
    assert not orphans
    assert len(kept.cables) == len(spec.cables)
    before = [x for x in example_state().topology.links if x.src == EA1 and x.dst == M1]
    after = [x for x in merge_desired(example_state(), kept).topology.links if x.src == EA1 and x.dst == M1]
    assert [x.src_port for x in before] != [9] and [x.src_port for x in after] == [9]


def test_an_orphan_node_whose_address_a_new_node_took_goes() -> None:
    # c-n1 and c-n2 without fixed addresses: removing c-n1 moves c-n2 onto the address c-n1 had.
    text = example_text().replace(", ip: 10.0.9.10}", "}").replace(", ip: 10.0.9.11}", "}")
    before = _spec(text)
    after = _spec("\n".join(line for line in text.splitlines() if "id: c-n1," not in line))
    c_n2 = next(n for n in after.nodes if n.id == "c-n2")
    assert c_n2.ip in {n.ip for n in before.nodes if n.id == "c-n1"}
    kept, orphans = effective_spec(before, after, prune=False)
    assert "node/c-n1" not in orphans.names
    assert len({n.ip for n in kept.nodes}) == len(kept.nodes)
