"""Generated fabrics are valid fabric files with the promised shape."""

from __future__ import annotations

import pytest

from mininet_topos.generate import edge_cloud, from_graph, haversine_km, main, to_yaml
from netmodel.fabric_file import parse_fabric
from netmodel.types import Tier


@pytest.mark.parametrize("sites,per_site,metro,cloud", [(1, 1, 1, 1), (3, 1, 3, 2), (4, 2, 4, 3), (10, 3, 6, 2)])
def test_edge_cloud_is_a_valid_fabric(sites: int, per_site: int, metro: int, cloud: int) -> None:
    spec = parse_fabric(to_yaml(edge_cloud(sites, per_site, metro, cloud)), "gen.yaml")
    assert len(spec.switches) == sites * per_site + metro + cloud
    tiers = {s.id: s.tier for s in spec.sites}
    assert sum(t == Tier.EDGE for t in tiers.values()) == sites
    assert len(spec.hosts) == sites and len(spec.nodes) == sites + 1 + cloud
    # Each edge site is dual-homed into the metro (when there is a second metro switch or site switch).
    uplinks = [c for c in spec.cables if c.a.startswith("e1s") and c.b.startswith("m")]
    assert len(uplinks) == (2 if metro > 1 or per_site > 1 else 1)


def test_edge_cloud_rejects_silly_sizes() -> None:
    with pytest.raises(ValueError):
        edge_cloud(0)
    with pytest.raises(ValueError):
        edge_cloud(3, 1, 3, 0)


def test_from_graph_derives_delay_from_distance() -> None:
    new_york, chicago = (-74.01, 40.71), (-87.63, 41.88)
    graph = {
        "nodes": [{"id": 0, "pos": new_york}, {"id": 1, "pos": chicago}, {"id": 2}],
        "edges": [{"source": 0, "target": 1}, {"source": 1, "target": 2, "dist": 100.0}, {"source": 2, "target": 2}],
    }
    spec = parse_fabric(to_yaml(from_graph("toy", graph)), "toy.yaml")
    by_ends = {(c.a, c.b): c.latency_ms for c in spec.cables}
    km = haversine_km(new_york, chicago)
    assert 1100 < km < 1200
    assert by_ends[("s0", "s1")] == pytest.approx(km * 5 / 1000, abs=0.001)
    assert by_ends[("s1", "s2")] == pytest.approx(0.5)
    assert len(spec.cables) == 2  # the self-loop is dropped
    assert {s.tier for s in spec.sites} == {Tier.EDGE, Tier.CLOUD}


def test_command_line_writes_a_valid_file(capsys) -> None:
    assert main(["edge-cloud", "--edge-sites", "2", "--switches-per-site", "2"]) == 0
    spec = parse_fabric(capsys.readouterr().out, "out.yaml")
    assert len(spec.switches) == 2 * 2 + 3 + 2
    assert main(["edge-cloud", "--edge-sites", "0"]) == 1


def test_mn_topos_build_the_generated_fabric_without_touching_the_system() -> None:
    from mininet_topos import topos

    topo = topos["edgecloud"](2, 2, delay=False)  # a Topo is a plain graph until a Mininet builds it
    assert sorted(topo.switches()) == ["c1", "c2", "e1s1", "e1s2", "e2s1", "e2s2", "m1", "m2", "m3"]
    assert {"e1u1", "e2u1", "e1n1", "cn1", "mn1"} <= set(topo.hosts())
