"""examples/online-boutique.yaml: Online Boutique's service graph, weighted, on the example's edge-cloud fabric;
and the testbed agent starting its apps with their weighted calls."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from mininet_topos.app import Target, parse_args
from mininet_topos.mesh import MeshTestbed
from netmodel.fabric import FabricSpec
from netmodel.fabric_file import parse_fabric
from netmodel.types import Tier

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


def test_the_agent_starts_each_app_with_its_weighted_calls() -> None:
    net = SimpleNamespace(spec=boutique())
    mesh = MeshTestbed(net, xds_socket="/nonexistent/xds.sock", run_dir=Path("/nonexistent"))
    spec = mesh.spec_of({"id": "checkoutservice-1", "service": "checkoutservice", "node": "m-n1"})
    assert spec.port == 5050
    targets = parse_args(["--workload", "w", "--service", "s", "--listen", "127.0.0.1:0", *spec.call_args()]).call
    assert Target("productcatalogservice", "127.0.0.1", 3550, 2.0, 2048) in targets
    assert Target("emailservice", "127.0.0.1", 5000, 1.0, 1024) in targets
    frontend = mesh.spec_of({"id": "frontend-1", "service": "frontend", "node": "ea-n1"})
    checkout = next(
        t
        for t in parse_args(["--workload", "w", "--service", "s", "--listen", "h:1", *frontend.call_args()]).call
        if t.service == "checkoutservice"
    )
    assert checkout.per_request == 0.1
    assert mesh.spec_of({"id": "adservice-1", "service": "adservice", "node": "c-n1"}).call_args() == []
