"""examples/online-boutique.yaml: Online Boutique's service graph, weighted, on the example's edge-cloud fabric;
and the node agent starting its apps with their weighted calls."""

from __future__ import annotations

from pathlib import Path

from mininet_topos.app import Target, parse_args
from netmodel.fabric import FabricSpec
from netmodel.fabric_file import parse_fabric
from netmodel.types import Tier
from nodeagent.plan import Call, WorkloadSpec, render_command

REPO = Path(__file__).resolve().parents[3]
BOUTIQUE = REPO / "examples" / "online-boutique.yaml"
EDGE_CLOUD = REPO / "examples" / "edge-cloud.yaml"


def boutique() -> FabricSpec:
    return parse_fabric(BOUTIQUE.read_bytes(), str(BOUTIQUE))


def test_it_is_online_boutiques_call_graph() -> None:
    services = {s.name: s for s in boutique().services}
    graph = {name: set(s.calls) for name, s in services.items() if s.calls}
    assert graph == {
        "frontend": {
            "adservice",
            "recommendationservice",
            "productcatalogservice",
            "cartservice",
            "shippingservice",
            "currencyservice",
            "checkoutservice",
        },
        "checkoutservice": {
            "productcatalogservice",
            "cartservice",
            "currencyservice",
            "shippingservice",
            "emailservice",
            "paymentservice",
        },
        "recommendationservice": {"productcatalogservice"},
    }
    assert len(services) == 10
    frontend = services["frontend"]
    assert frontend.near == ("u1", "u2", "u3")
    # A typical request: several currency and catalogue calls, checkout rare.
    assert frontend.call_weight("currencyservice").per_request > 1
    assert frontend.call_weight("productcatalogservice").per_request > 1
    assert frontend.call_weight("checkoutservice").per_request < 0.5
    assert len({s.port for s in services.values()}) == 10  # one node may run several; a caller reaches each


def test_it_runs_on_the_edge_cloud_fabric_whose_edge_cannot_hold_it() -> None:
    spec, edge_cloud = boutique(), parse_fabric(EDGE_CLOUD.read_bytes(), str(EDGE_CLOUD))
    for part in ("sites", "switches", "cables", "hosts", "nodes"):
        assert getattr(spec, part) == getattr(edge_cloud, part), part
    edge_sites = {site.id for site in spec.sites if site.tier is Tier.EDGE}
    edge_cpu = sum(node.cpu_millis for node in spec.nodes if node.site in edge_sites)
    wanted = sum(s.replicas * s.resources.cpu_millis for s in spec.services)
    assert wanted > 1.5 * edge_cpu


def agent_argv(spec: FabricSpec, service_name: str) -> list[str]:
    """The argv the node agent runs for an instance of the service: its ``run`` with the calls the
    controller tells the agent (``edgectl.agent_view``: each callee's port and weight)."""
    services = {s.name: s for s in spec.services}
    service = services[service_name]
    calls = tuple(
        Call(callee, services[callee].port, weight.per_request, weight.bytes_per_call)
        for callee, weight in service.weighted_calls()
    )
    workload = WorkloadSpec(
        f"{service_name}-1", service_name, service.port, app_host="127.0.0.2", run=service.run, calls=calls
    )
    return list(render_command(workload, "m-n1", "python", "/w").argv)


def test_the_agent_starts_each_app_with_its_weighted_calls() -> None:
    spec = boutique()
    checkout = parse_args(agent_argv(spec, "checkoutservice")[3:])
    assert checkout.listen == ("127.0.0.2", 5050)
    assert Target("productcatalogservice", "127.0.0.1", 3550, 2.0, 2048) in checkout.call
    assert Target("emailservice", "127.0.0.1", 5000, 1.0, 1024) in checkout.call
    frontend = parse_args(agent_argv(spec, "frontend")[3:])
    assert next(t for t in frontend.call if t.service == "checkoutservice").per_request == 0.1
    assert parse_args(agent_argv(spec, "adservice")[3:]).call == []
