"""Fabric files from generators: parametric edge-cloud fabrics and topohub graphs. Pure.

Every testbed is still a fabric file (the one thing the controller and Mininet both read), so a
generator only writes the document; ``python -m mininet_topos.generate ... > fabric.yaml`` saves it
and ``mn --topo edgecloud,...`` or ``--topo topohub,...`` builds it directly.

Delay of a topohub link: its ``dist`` (km) or the great-circle distance between its ends' positions,
at about 5 us per km (light in fibre: ~2/3 c), at least 0.05 ms.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from collections.abc import Sequence
from typing import Any

import yaml

US_PER_KM = 5.0
MIN_LATENCY_MS = 0.05
MAX_TOPOHUB_SWITCHES = 250  # a Mininet testbed on 2 cores; the route benchmark takes bigger graphs directly


def edge_cloud(
    edge_sites: int = 3,
    switches_per_site: int = 1,
    metro_switches: int = 3,
    cloud_switches: int = 2,
    *,
    users_per_site: int = 1,
    nodes_per_site: int = 1,
    uplink_ms: tuple[float, float] = (2.0, 5.0),
    metro_ms: float = 1.0,
    cloud_ms: float = 10.0,
) -> dict[str, Any]:
    """N edge sites of M switches (a chain inside the site), each site dual-homed into a metro ring
    (a short primary and a longer backup uplink), and a cloud core reached from two metro switches."""
    if not (1 <= edge_sites <= 100 and 1 <= switches_per_site <= 8 and 1 <= metro_switches <= 16):
        raise ValueError("edge_sites 1-100, switches_per_site 1-8, metro_switches 1-16")
    if not 1 <= cloud_switches <= 8:
        raise ValueError("cloud_switches 1-8")
    sites = [{"id": f"e{i}", "tier": "edge", "region": "r1", "zone": f"e{i}"} for i in range(1, edge_sites + 1)]
    sites += [
        {"id": "metro", "tier": "metro", "region": "r1", "zone": "ring"},
        {"id": "cloud", "tier": "cloud", "region": "r2", "zone": "dc1"},
    ]
    switches, links, hosts, nodes = [], [], [], []
    metro = [f"m{k}" for k in range(1, metro_switches + 1)]
    cloud = [f"c{k}" for k in range(1, cloud_switches + 1)]
    for k, name in enumerate(metro, 1):
        switches.append({"id": name, "dpid": 0x2000 + k, "site": "metro"})
    for k, name in enumerate(cloud, 1):
        switches.append({"id": name, "dpid": 0x3000 + k, "site": "cloud"})
    for i in range(1, edge_sites + 1):
        site_switches = [f"e{i}s{j}" for j in range(1, switches_per_site + 1)]
        for j, name in enumerate(site_switches, 1):
            switches.append({"id": name, "dpid": 0x1000 + i * 16 + j, "site": f"e{i}"})
        for a, b in itertools.pairwise(site_switches):
            links.append({"a": a, "b": b, "latency_ms": 0.2, "bandwidth_mbps": 1000})
        primary, backup = metro[(i - 1) % len(metro)], metro[i % len(metro)]
        links.append({"a": site_switches[0], "b": primary, "latency_ms": uplink_ms[0], "bandwidth_mbps": 100})
        if backup != primary or switches_per_site > 1:
            links.append({"a": site_switches[-1], "b": backup, "latency_ms": uplink_ms[1], "bandwidth_mbps": 100})
        for u in range(1, users_per_site + 1):
            hosts.append({"id": f"e{i}u{u}", "switch": site_switches[0], "ip": f"10.0.{i}.{u}"})
        for n in range(1, nodes_per_site + 1):
            nodes.append(
                {
                    "id": f"e{i}n{n}",
                    "site": f"e{i}",
                    "switch": site_switches[-1],
                    "cpu_millis": 2000,
                    "memory_mib": 2048,
                    "ip": f"10.0.{i}.{100 + n}",
                }
            )
    if len(metro) > 1:
        ring = list(zip(metro, metro[1:] + metro[:1], strict=True)) if len(metro) > 2 else [(metro[0], metro[1])]
        links += [{"a": a, "b": b, "latency_ms": metro_ms, "bandwidth_mbps": 1000} for a, b in ring]
    links.append({"a": metro[0], "b": cloud[0], "latency_ms": cloud_ms, "bandwidth_mbps": 1000})
    links.append({"a": metro[-1], "b": cloud[-1], "latency_ms": cloud_ms * 1.2, "bandwidth_mbps": 1000})
    for a_index, a in enumerate(cloud):
        links += [{"a": a, "b": b, "latency_ms": 0.5, "bandwidth_mbps": 1000} for b in cloud[a_index + 1 :]]
    nodes.append(
        {
            "id": "mn1",
            "site": "metro",
            "switch": metro[len(metro) // 2],
            "cpu_millis": 4000,
            "memory_mib": 8192,
            "ip": "10.0.200.1",
        }
    )
    nodes += [
        {
            "id": f"cn{k}",
            "site": "cloud",
            "switch": name,
            "cpu_millis": 16000,
            "memory_mib": 65536,
            "ip": f"10.0.250.{k}",
        }
        for k, name in enumerate(cloud, 1)
    ]
    near = [h["id"] for h in hosts[: max(1, min(2, len(hosts)))]]
    services = [
        {
            "name": "web",
            "port": 8080,
            "replicas": 2,
            "cpu_millis": 500,
            "memory_mib": 256,
            "max_latency_ms": 5,
            "near": near,
            "calls": ["api"],
            "allow_from": [{"host": h["id"]} for h in hosts],  # every user host may call the entry service
        },
        {
            "name": "api",
            "port": 9090,
            "replicas": 2,
            "cpu_millis": 1000,
            "memory_mib": 512,
            "calls": ["db"],
            "allow_from": ["web"],
        },
        {"name": "db", "port": 5432, "replicas": 1, "cpu_millis": 2000, "memory_mib": 4096, "allow_from": ["api"]},
    ]
    return {
        "name": f"edge-cloud-{edge_sites}x{switches_per_site}",
        "subnet": "10.0.0.0/16",
        "sites": sites,
        "switches": switches,
        "links": links,
        "hosts": hosts,
        "nodes": nodes,
        "services": services,
    }


def haversine_km(a: Sequence[float], b: Sequence[float]) -> float:
    """Great-circle distance between two (longitude, latitude) points."""
    lon1, lat1, lon2, lat2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def from_graph(name: str, graph: dict[str, Any], *, us_per_km: float = US_PER_KM) -> dict[str, Any]:
    """A fabric from a topohub-style node-link document: one switch, one user and one node per
    graph node, in one site each (every site an edge site but the best-connected, the cloud)."""
    ids = [str(n["id"]) for n in graph["nodes"]]
    if not 1 <= len(ids) <= MAX_TOPOHUB_SWITCHES:
        raise ValueError(f"{name}: {len(ids)} switches; a testbed here takes 1-{MAX_TOPOHUB_SWITCHES}")
    position = {str(n["id"]): n.get("pos") for n in graph["nodes"]}
    degree = {i: 0 for i in ids}
    links = []
    for edge in graph["edges"]:
        a, b = str(edge["source"]), str(edge["target"])
        if a == b:
            continue
        km = edge.get("dist")
        if not isinstance(km, int | float) and position.get(a) and position.get(b):
            km = haversine_km(position[a], position[b])
        latency_ms = max(MIN_LATENCY_MS, round(km * us_per_km / 1000, 3)) if isinstance(km, int | float) else 1.0
        links.append({"a": f"s{a}", "b": f"s{b}", "latency_ms": latency_ms, "bandwidth_mbps": 1000})
        degree[a] += 1
        degree[b] += 1
    core = max(ids, key=lambda i: (degree[i], -ids.index(i)))
    sites = [{"id": f"site{i}", "tier": "cloud" if i == core else "edge", "region": "r1", "zone": f"z{i}"} for i in ids]
    switches = [{"id": f"s{i}", "dpid": k + 1, "site": f"site{i}"} for k, i in enumerate(ids)]
    hosts = [{"id": f"u{i}", "switch": f"s{i}", "ip": f"10.{1 + k // 250}.{k % 250}.1"} for k, i in enumerate(ids)]
    nodes = [
        {
            "id": f"n{i}",
            "site": f"site{i}",
            "switch": f"s{i}",
            "cpu_millis": 16000 if i == core else 2000,
            "memory_mib": 65536 if i == core else 2048,
            "ip": f"10.{1 + k // 250}.{k % 250}.10",
        }
        for k, i in enumerate(ids)
    ]
    return {
        "name": name.replace("/", "-"),
        "subnet": "10.0.0.0/8",
        "sites": sites,
        "switches": switches,
        "links": links,
        "hosts": hosts,
        "nodes": nodes,
        "services": [],
    }


def from_topohub(key: str, *, us_per_km: float = US_PER_KM) -> dict[str, Any]:
    import topohub  # the [bench] extra; imported only when asked for

    return from_graph(key, topohub.get(key), us_per_km=us_per_km)


def to_yaml(doc: dict[str, Any]) -> str:
    return "# generated by mininet_topos.generate\n" + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mininet_topos.generate", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    ec = sub.add_parser("edge-cloud", help="N edge sites of M switches, a metro ring, a cloud core")
    ec.add_argument("--edge-sites", type=int, default=3)
    ec.add_argument("--switches-per-site", type=int, default=1)
    ec.add_argument("--metro-switches", type=int, default=3)
    ec.add_argument("--cloud-switches", type=int, default=2)
    hub = sub.add_parser("topohub", help="a topohub graph, e.g. topozoo/Abilene (needs the [bench] extra)")
    hub.add_argument("key")
    hub.add_argument("--us-per-km", type=float, default=US_PER_KM)
    args = parser.parse_args(argv)
    try:
        if args.kind == "edge-cloud":
            doc = edge_cloud(args.edge_sites, args.switches_per_site, args.metro_switches, args.cloud_switches)
        else:
            doc = from_topohub(args.key, us_per_km=args.us_per_km)
    except (ValueError, KeyError, ImportError) as exc:
        print(f"generate: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(to_yaml(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
