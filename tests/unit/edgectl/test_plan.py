"""The plan of a desired-state document, computed by the cores on a hypothetical state."""

from __future__ import annotations

from dataclasses import replace

from edgectl.plan import PlanInputs, compute_plan
from edgectl.plan_view import plan_json, plan_text
from meshctl.snapshot import MeshConfig
from netmodel import events as ev
from netmodel.fabric import build_state
from netmodel.fabric_file import parse_fabric
from netmodel.ids import NodeId, PortNo, ServiceName, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Port, Workload
from sdnctl.acl import compile_acl, with_acl
from sdnctl.flows import TABLE_ACL, compile_all, diff_switch
from sdnctl.pathing import compute_routes
from tests.unit.edgectl.fixtures import EXAMPLE, example_spec

TEXT = EXAMPLE.read_text()


def _spec(text: str):
    return parse_fabric(text, "desired.yaml")


def _placed() -> FabricState:
    """The example, every switch connected and every link discovered, with its declared replicas placed:
    web at the edge, api and db in the cloud."""
    state = build_state(example_spec())
    for dpid in list(state.topology.switches):
        ports = tuple(Port(PortNo(n), f"p{n}", up=True) for n in range(1, 9))
        state = state.apply(ev.SwitchConnected(dpid, ports, at=1.0))
    for link in list(state.topology.links):
        state = state.apply(ev.LinkDiscovered(link, at=2.0))
    where = {"web-1": "ea-n1", "web-2": "eb-n1", "api-1": "c-n1", "api-2": "c-n2", "db-1": "c-n1"}
    for wid, node in where.items():
        service = ServiceName(wid.rsplit("-", 1)[0])
        declared = state.services[service]
        workload = Workload(
            WorkloadId(wid),
            service,
            SpiffeId(f"spiffe://edgectl.local/svc/{service}/w/{wid}"),
            declared.resources,
            node=NodeId(node),
            port=declared.port,
            declared=True,
        )
        state = state.apply(ev.WorkloadPlaced(workload))
    return state


def _plan(text: str, state: FabricState | None = None, prune: bool = False):
    state = state or _placed()
    inputs = PlanInputs(state=state, applied_spec=example_spec(), mesh_config=MeshConfig())
    return compute_plan(inputs, _spec(text), "r1", prune=prune)


def test_the_running_document_plans_nothing() -> None:
    plan = compute_plan(
        PlanInputs(state=_placed(), applied_spec=example_spec(), mesh_config=MeshConfig()),
        example_spec(),
        "",
        prune=False,
    )
    assert not plan
    assert plan_text(plan_json(plan)).startswith("No changes")


def test_a_new_host_gets_a_route_on_every_switch_and_a_sidecar() -> None:
    state = _placed()
    plan = _plan(
        TEXT.replace(
            "hosts:   # where users sit\n", "hosts:   # where users sit\n  - {id: u4, switch: m1, ip: 10.0.5.1}\n"
        ),
        state,
    )
    assert plan.objects.added == ("host/u4",)
    assert {c.name for c in plan.openflow} == {s.name for s in state.topology.switches.values()}
    assert all(any(("ipv4_dst", "10.0.5.1") in f.match for f in c.delta.add_flows) for c in plan.openflow)
    # No route goes; only table 0's ACL of m1's port of u4, a port without an endpoint until now, turns
    # into u4's source guard.
    assert not any(f.table != TABLE_ACL for c in plan.openflow for f in c.delta.delete_flows)
    assert {c.name for c in plan.openflow if c.delta.delete_flows} == {"m1"}
    # Exactly the route engine's own diff from the old tables to the new ones.
    after = state.apply(ev.DesiredStateApplied(plan.spec, "r1"))
    old_acl, new_acl = compile_acl(state, "edgectl.local"), compile_acl(after, "edgectl.local")
    old = {d: with_acl(c, old_acl.entries.get(d, {}))[0] for d, c in compile_all(compute_routes(state)).items()}
    new = {d: with_acl(c, new_acl.entries.get(d, {}))[0] for d, c in compile_all(compute_routes(after)).items()}
    for change in plan.openflow:
        assert change.delta == diff_switch(old[change.switch].config, new[change.switch].config)
    assert any(x.node == "u4" for x in plan.xds)


def test_more_replicas_are_placed_with_their_identity() -> None:
    plan = _plan(TEXT.replace("{name: api, port: 9090, replicas: 2", "{name: api, port: 9090, replicas: 3"))
    assert [p.service for p in plan.placement.placed] == ["api"] and plan.placement.placed[0].node is not None
    assert plan.identities.issued == ("spiffe://edgectl.local/svc/api/w/api-3",)
    assert not plan.openflow  # a count changes no route


def test_fewer_replicas_drain_one_and_retire_its_identity() -> None:
    plan = _plan(TEXT.replace("{name: api, port: 9090, replicas: 2", "{name: api, port: 9090, replicas: 1"))
    assert [e.service for e in plan.placement.evicted] == ["api"]
    gone = plan.placement.evicted[0].workload
    assert plan.identities.retired == (f"spiffe://edgectl.local/svc/api/w/{gone}",)


def test_a_tightened_slo_moves_the_instance_that_breaks_it() -> None:
    state = _placed()
    # web-2 runs at edge-b; u1 at edge-a is 2 + 1 + 2 ms away from it over the metro: tighten to 3 ms.
    plan = _plan(TEXT.replace("max_latency_ms: 5, near: [u1, u2]", "max_latency_ms: 3, near: [u1, u2]"), state)
    assert plan.objects.changed == ("service/web",)
    # Only m-n1 (metro) is within 3 ms of both u1 and u2: both instances move there, make-before-break.
    assert [(m.workload, m.from_node, m.to_node) for m in plan.placement.moved] == [
        ("web-1", "ea-n1", "m-n1"),
        ("web-2", "eb-n1", "m-n1"),
    ]
    assert plan.identities.retired == (
        "spiffe://edgectl.local/svc/web/w/web-1",
        "spiffe://edgectl.local/svc/web/w/web-2",
    )
    text = plan_text(plan_json(plan))
    assert "~ service/web" in text and "~ web-1 ea-n1 -> m-n1" in text


def test_a_removed_service_is_an_orphan_until_prune() -> None:
    text = "\n".join(line for line in TEXT.splitlines() if "{name: db" not in line).replace("calls: [db]", "")
    kept = _plan(text)
    assert kept.orphans.names == ("service/db",) and not kept.placement and not kept.evicted_by_prune
    pruned = _plan(text, prune=True)
    assert pruned.objects.removed == ("service/db",)
    assert pruned.evicted_by_prune == ("db-1",)
    assert pruned.identities.retired == ("spiffe://edgectl.local/svc/db/w/db-1",)


def test_ports_that_move_are_warned_about() -> None:
    plan = _plan(TEXT.replace("{a: ea1, b: m1, latency_ms: 2", "{a: ea1, b: m1, a_port: 7, latency_ms: 2"))
    # Pinning one cable moves the positional ports of the cables after it on ea1: both are named.
    assert [w.split(":")[0] for w in plan.warnings][:2] == ["link ea1-m1", "link ea1-m2"]
    assert "pin them with a_port/b_port" in plan.warnings[0]


def test_an_undeclared_workload_is_never_counted() -> None:
    state = _placed()
    extra = replace(state.workloads[WorkloadId("api-1")], id=WorkloadId("api-9"), declared=False, node=NodeId("m-n1"))
    state = state.apply(ev.WorkloadPlaced(extra))
    plan = _plan(TEXT.replace("{name: api, port: 9090, replicas: 2", "{name: api, port: 9090, replicas: 1"), state)
    assert [str(e.workload) for e in plan.placement.evicted] != ["api-9"]
    assert plan.placement.evicted and all(str(e.workload) != "api-9" for e in plan.placement.evicted)


def test_an_address_that_moves_is_warned_about() -> None:
    text = TEXT.replace(", ip: 10.0.9.10}", "}").replace(", ip: 10.0.9.11}", "}")
    old = _spec(text)
    new = _spec("\n".join(line for line in text.splitlines() if "id: c-n1," not in line))
    inputs = PlanInputs(state=build_state(old), applied_spec=old, mesh_config=MeshConfig())
    plan = compute_plan(inputs, new, "r1", prune=True)
    assert any(w.startswith("node c-n2: address changes") for w in plan.warnings), plan.warnings


def test_a_document_changing_only_the_authorization_default_is_a_change() -> None:
    plan = _plan(TEXT.replace("authorization: {default: deny}", "authorization: {default: allow}"))
    assert plan and plan.objects.changed == ("authorization/default",) and not plan.objects.added
    assert "  ~ authorization/default" in plan_text(plan_json(plan))
    assert not _plan(TEXT)  # the same document: nothing


# -- bandwidth reservations: the plan names the meters and reservation flows the engine would send ------

RESERVING = TEXT.replace("near: [u1, u2], calls: [api]}", "near: [u1, u2], calls: [api], bandwidth_mbps: 5}")


def _reserving_state() -> FabricState:
    state = _placed()
    spec = _spec(RESERVING)
    web = next(s for s in spec.services if s.name == "web")
    services = dict(state.services)
    services[ServiceName("web")] = replace(services[ServiceName("web")], bandwidth_mbps=web.bandwidth_mbps)
    return replace(state, services=services)


def _engine_tables(state: FabricState):
    """The tables the route engine holds for ``state``: routes, ACL and reservations."""
    from netmodel.bandwidth import plan_reservations
    from sdnctl.meters import EMPTY_PART, compile_reservations, with_reservations

    routes = compute_routes(state)
    acl = compile_acl(state, "edgectl.local")
    parts = compile_reservations(plan_reservations(state))
    assert parts, "the example reserves something"
    tables = {
        dpid: with_reservations(with_acl(c, acl.entries.get(dpid, {}))[0], parts.get(dpid, EMPTY_PART))[0]
        for dpid, c in compile_all(routes).items()
    }
    return routes, tables


def test_a_plan_keeps_the_reservations_the_engine_holds() -> None:
    state = _reserving_state()
    routes, tables = _engine_tables(state)
    inputs = PlanInputs(
        state=state, applied_spec=_spec(RESERVING), mesh_config=MeshConfig(), routes=routes, compiled=tables
    )
    document = RESERVING.replace(
        "hosts:   # where users sit\n", "hosts:   # where users sit\n  - {id: u4, switch: m1, ip: 10.0.5.1}\n"
    )
    plan = compute_plan(inputs, _spec(document), "r1", prune=False)
    assert plan.openflow, "a new host: routes to it everywhere"
    for change in plan.openflow:
        metered = {f.key for f in tables[change.switch].config.flows if any(a[0] == "meter" for a in f.actions)}
        assert not change.delta.delete_meters, change.name
        assert not [f for f in change.delta.delete_flows if f.cookie >> 48 == 0xEC04], change.name
        assert not [
            f for f in change.delta.modify_flows if f.key in metered and all(a[0] != "meter" for a in f.actions)
        ], f"{change.name}: a route flow loses its best-effort meter"


def test_a_changed_reservation_is_planned_as_meter_changes() -> None:
    state = _reserving_state()
    routes, tables = _engine_tables(state)
    inputs = PlanInputs(
        state=state, applied_spec=_spec(RESERVING), mesh_config=MeshConfig(), routes=routes, compiled=tables
    )
    plan = compute_plan(inputs, _spec(RESERVING.replace("bandwidth_mbps: 5}", "bandwidth_mbps: 8}")), "r1", prune=False)
    modified = [m for change in plan.openflow for m in change.delta.modify_meters]
    assert modified and {m.rate_kbps for m in modified if m.meter_id < 0x30000} == {8000}
