"""Shared helpers for the meshctl unit tests: a small fabric, and simulated xDS clients that behave
like Envoy (apply, ACK or NACK, follow references with new subscriptions, re-ask for endpoints of a
rebuilt cluster). Imported by name; deliberately not a conftest.py."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from meshctl.cache import SnapshotCache
from meshctl.encoding import EncodedResponse
from meshctl.snapshot import MeshConfig, build_snapshots
from meshctl.xds_types import CLUSTER, ENDPOINTS, LISTENER, PUSH_ORDER, ROUTES, SECRET, WILDCARD_TYPES
from netmodel import events as ev
from netmodel.fabric import build_state
from netmodel.fabric_file import parse_fabric
from netmodel.ids import NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import Resources, Workload

FABRIC = b"""
name: mesh-test
subnet: 10.1.0.0/16
sites:
  - {id: edge-a, tier: edge, region: eu-west, zone: a}
  - {id: cloud, tier: cloud, region: eu-central, zone: dc1}
switches:
  - {id: ea1, dpid: 1, site: edge-a}
  - {id: c1, dpid: 2, site: cloud}
links:
  - {a: ea1, b: c1, latency_ms: 10, bandwidth_mbps: 100}
hosts:
  - {id: u1, switch: ea1, ip: 10.1.0.1}
  - {id: u2, switch: ea1, ip: 10.1.0.2}
nodes:
  - {id: ea-n1, site: edge-a, switch: ea1, cpu_millis: 4000, memory_mib: 4096, ip: 10.1.1.10}
  - {id: ea-n2, site: edge-a, switch: ea1, cpu_millis: 4000, memory_mib: 4096, ip: 10.1.1.11}
  - {id: c-n1, site: cloud, switch: c1, cpu_millis: 4000, memory_mib: 4096, ip: 10.1.9.10}
services:
  - {name: web, port: 8080, replicas: 2, cpu_millis: 100, memory_mib: 64, calls: [api, admin],
     allow_from: [{host: u1}, {host: u2}]}
  - {name: admin, port: 8080, replicas: 1, cpu_millis: 100, memory_mib: 64, allow_from: [web]}
  - {name: api, port: 9090, replicas: 2, cpu_millis: 100, memory_mib: 64, calls: [db], allow_from: [web]}
  - {name: db, port: 5432, replicas: 1, cpu_millis: 100, memory_mib: 64, allow_from: [api]}
"""

TYPE_CLASSES = {
    SECRET: secret_pb2.Secret,
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINTS: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTES: route_pb2.RouteConfiguration,
}


@functools.cache
def base_state() -> FabricState:
    return build_state(parse_fabric(FABRIC, "mesh-test.yaml"))


def workload(wid: str, service: str, node: str | None, port: int = 0) -> Workload:
    return Workload(
        id=WorkloadId(wid),
        service=ServiceName(service),
        spiffe_id=SpiffeId(f"spiffe://edgectl.local/svc/{service}"),
        resources=Resources(100, 64),
        node=NodeId(node) if node is not None else None,
        port=port,
    )


def place(state: FabricState, *workloads: Workload) -> FabricState:
    for w in workloads:
        state = state.apply(ev.WorkloadPlaced(w))
    return state


def placed_state() -> FabricState:
    """web x2 (edge), admin, api x2 (edge and cloud), db (cloud)."""
    return place(
        base_state(),
        workload("web-1", "web", "ea-n1"),
        workload("web-2", "web", "ea-n2", port=18080),
        workload("admin-1", "admin", "ea-n1", port=28080),
        workload("api-1", "api", "ea-n2"),
        workload("api-2", "api", "c-n1"),
        workload("db-1", "db", "c-n1"),
    )


def cache_for(state: FabricState, config: MeshConfig | None = None) -> SnapshotCache:
    cache = SnapshotCache(clock=lambda: 1000.0)
    cache.set_snapshots(build_snapshots(state, config or MeshConfig()))
    return cache


def node(node_id: str) -> Any:
    return base_pb2.Node(id=node_id)


def sotw_request(
    type_url: str, names: Iterable[str] = (), nonce: str = "", version: str = "", node_id: str | None = None, error=None
) -> Any:
    request = discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=list(names), response_nonce=nonce, version_info=version
    )
    if node_id is not None:
        request.node.CopyFrom(node(node_id))
    if error is not None:
        request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return request


def delta_request(
    type_url: str,
    subscribe: Iterable[str] = (),
    unsubscribe: Iterable[str] = (),
    nonce: str = "",
    node_id: str | None = None,
    initial: dict[str, str] | None = None,
    error=None,
) -> Any:
    request = discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url,
        resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe),
        response_nonce=nonce,
        initial_resource_versions=initial or {},
    )
    if node_id is not None:
        request.node.CopyFrom(node(node_id))
    if error is not None:
        request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return request


def unpack(type_url: str, packed: Any) -> Any:
    message = TYPE_CLASSES[type_url]()
    assert packed.Unpack(message), f"cannot unpack {packed.type_url} as {type_url}"
    return message


def resource_name(type_url: str, message: Any) -> str:
    return str(message.cluster_name if type_url == ENDPOINTS else message.name)


def names_of(response: Any) -> list[str]:
    response = response.message() if isinstance(response, EncodedResponse) else response
    if isinstance(response, discovery_pb2.DeltaDiscoveryResponse):
        return [r.name for r in response.resources]
    return [resource_name(response.type_url, unpack(response.type_url, r)) for r in response.resources]


# -- what a resource refers to (read from the messages, as Envoy would) ------------------------------


def _managers(listener: Any) -> list[Any]:
    managers = []
    if listener.HasField("api_listener"):
        manager = hcm_pb2.HttpConnectionManager()
        listener.api_listener.api_listener.Unpack(manager)
        managers.append(manager)
    for chain in listener.filter_chains:
        for f in chain.filters:
            if f.typed_config.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                manager = hcm_pb2.HttpConnectionManager()
                f.typed_config.Unpack(manager)
                managers.append(manager)
    return managers


def rds_names(listener: Any) -> set[str]:
    return {m.rds.route_config_name for m in _managers(listener) if m.HasField("rds")}


def tcp_clusters(listener: Any) -> set[str]:
    clusters = set()
    for chain in listener.filter_chains:
        for f in chain.filters:
            if f.typed_config.Is(tcp_proxy_pb2.TcpProxy.DESCRIPTOR):
                proxy = tcp_proxy_pb2.TcpProxy()
                f.typed_config.Unpack(proxy)
                clusters.add(proxy.cluster)
    return clusters


def route_clusters(routes: Any) -> set[str]:
    return {r.route.cluster for vh in routes.virtual_hosts for r in vh.routes}


def eds_name(cluster: Any) -> str | None:
    if cluster.type != cluster_pb2.Cluster.EDS:
        return None
    return cluster.eds_cluster_config.service_name or cluster.name


# -- simulated clients -------------------------------------------------------------------------------


Rejector = Callable[[str, Any], str | None]  # (type_url, message) -> error text to NACK with, or None


@dataclass
class _ClientBase:
    """What an Envoy-like client holds: per type, name -> message (and the bytes it came as)."""

    node_id: str
    reject: Rejector = lambda _t, _m: None
    have: dict[str, dict[str, Any]] = field(default_factory=lambda: {t: {} for t in PUSH_ORDER})
    applied: list[str] = field(default_factory=list)  # type urls in the order responses were applied
    nacks: list[tuple[str, str]] = field(default_factory=list)

    def wanted_names(self, type_url: str) -> set[str]:
        """The named subscription Envoy derives from what it has: endpoints of its EDS clusters, routes
        of its listeners."""
        if type_url == ENDPOINTS:
            return {n for c in self.have[CLUSTER].values() if (n := eds_name(c)) is not None}
        if type_url == ROUTES:
            return {n for listener in self.have[LISTENER].values() for n in rds_names(listener)}
        return set()

    def broken_references(self) -> list[str]:
        """References that are not warmed by Envoy and must never dangle (routes, TCP proxies)."""
        clusters = self.have[CLUSTER]
        broken = [
            f"route {name} -> {c}"
            for name, routes in self.have[ROUTES].items()
            for c in route_clusters(routes)
            if c not in clusters
        ]
        broken += [
            f"listener {name} -> {c}"
            for name, listener in self.have[LISTENER].items()
            for c in tcp_clusters(listener)
            if c not in clusters
        ]
        return broken

    partial: bool = False
    """Like Envoy: apply the valid resources of a response and NACK it for the invalid ones. Else a
    response with one bad resource is rejected as a whole."""

    def _accept(self, type_url: str, messages: Iterable[Any]) -> tuple[list[Any], str | None]:
        accepted, errors = [], []
        for message in messages:
            error = self.reject(type_url, message)
            if error:
                errors.append(error)
            else:
                accepted.append(message)
        return accepted, (errors[0] if errors else None)


@dataclass
class SotwClient(_ClientBase):
    """Subscribes wildcard to clusters and listeners, by name to the rest; ACKs or NACKs every response."""

    version: dict[str, str] = field(default_factory=dict)
    nonce: dict[str, str] = field(default_factory=dict)
    subscribed: dict[str, set[str]] = field(default_factory=dict)
    sent_node: bool = False
    reask_endpoints: bool = True

    def start(self) -> list[Any]:
        return [self._request(CLUSTER, ()), self._request(LISTENER, ())]

    def _request(self, type_url: str, names: Iterable[str], error: str | None = None) -> Any:
        names = sorted(names)
        self.subscribed[type_url] = set(names)
        node_id = None if self.sent_node else self.node_id
        self.sent_node = True
        return sotw_request(
            type_url,
            names,
            nonce=self.nonce.get(type_url, ""),
            version=self.version.get(type_url, ""),
            node_id=node_id,
            error=error,
        )

    def receive(self, response: Any) -> list[Any]:
        type_url = response.type_url
        messages = [unpack(type_url, r) for r in response.resources]
        self.nonce[type_url] = response.nonce
        names = sorted(self.subscribed.get(type_url, ()))
        accepted, error = self._accept(type_url, messages)
        if error is not None and not self.partial:
            self.nacks.append((type_url, error))
            return [self._request(type_url, names, error)]
        before_clusters = dict(self.have[CLUSTER])
        named = {resource_name(type_url, m): m for m in accepted}
        if type_url in WILDCARD_TYPES:
            rejected = {resource_name(type_url, m) for m in messages} - set(named)
            kept = {n: m for n, m in self.have[type_url].items() if n in rejected}
            self.have[type_url] = {**kept, **named}  # what the response leaves out is deleted
        else:  # Envoy ignores what it did not ask for, and keeps what a response leaves out
            self.have[type_url].update({n: m for n, m in named.items() if n in self.subscribed.get(type_url, ())})
        if error is None:
            self.version[type_url] = response.version_info
            self.applied.append(type_url)
            requests = [self._request(type_url, names)]
        else:
            self.nacks.append((type_url, error))
            requests = [self._request(type_url, names, error)]
        for dependent in (ENDPOINTS, ROUTES):
            wanted = self.wanted_names(dependent)
            if wanted != self.subscribed.get(dependent, set()):
                for gone in self.subscribed.get(dependent, set()) - wanted:
                    self.have[dependent].pop(gone, None)
                requests.append(self._request(dependent, wanted))
        rebuilt = [
            n for n, c in self.have[CLUSTER].items() if n in before_clusters and before_clusters[n] != c and eds_name(c)
        ]
        if type_url == CLUSTER and rebuilt and self.reask_endpoints and ENDPOINTS in self.subscribed:
            # Envoy re-asks for endpoints of a rebuilt cluster with the nonce it already ACKed.
            requests.append(self._request(ENDPOINTS, self.subscribed[ENDPOINTS]))
        return requests

    def reconnect(self) -> list[Any]:
        """A new stream: every subscription again, with the versions it runs and no nonce."""
        self.nonce.clear()
        self.sent_node = False
        return [
            self._request(t, sorted(self.subscribed[t]) if t not in WILDCARD_TYPES else ())
            for t in (CLUSTER, LISTENER, ENDPOINTS, ROUTES)
            if t in self.subscribed
        ]


@dataclass
class DeltaClient(_ClientBase):
    subscribed: dict[str, set[str]] = field(default_factory=dict)
    versions: dict[str, dict[str, str]] = field(default_factory=lambda: {t: {} for t in PUSH_ORDER})
    sent_node: bool = False

    def start(self, initial: dict[str, dict[str, str]] | None = None) -> list[Any]:
        initial = initial or {}
        return [
            self._request(CLUSTER, initial=initial.get(CLUSTER)),
            self._request(LISTENER, initial=initial.get(LISTENER)),
        ]

    def reconnect(self) -> list[Any]:
        """A new stream: every subscription again, with the versions it has."""
        self.sent_node = False
        subscribed, self.subscribed = self.subscribed, {}
        return [
            self._request(t, () if t in WILDCARD_TYPES else sorted(subscribed[t]), initial=dict(self.versions[t]))
            for t in (CLUSTER, LISTENER, ENDPOINTS, ROUTES)
            if t in subscribed
        ]

    def _request(self, type_url: str, subscribe=(), unsubscribe=(), nonce="", error=None, initial=None) -> Any:
        self.subscribed.setdefault(type_url, set()).update(subscribe)
        self.subscribed[type_url].difference_update(unsubscribe)
        node_id = None if self.sent_node else self.node_id
        self.sent_node = True
        return delta_request(type_url, subscribe, unsubscribe, nonce, node_id, initial, error)

    def receive(self, response: Any) -> list[Any]:
        type_url = response.type_url
        messages = {r.name: unpack(type_url, r.resource) for r in response.resources}
        accepted, error = self._accept(type_url, messages.values())
        if error is not None and not self.partial:
            self.nacks.append((type_url, error))
            return [self._request(type_url, nonce=response.nonce, error=error)]
        good = {id(m) for m in accepted}
        for r in response.resources:
            if type_url not in WILDCARD_TYPES and r.name not in self.subscribed.get(type_url, ()):
                continue  # like Envoy: what it did not ask for (any more) is ignored
            if id(messages[r.name]) in good:
                self.have[type_url][r.name] = messages[r.name]
                self.versions[type_url][r.name] = r.version
        for name in response.removed_resources:
            self.have[type_url].pop(name, None)
            self.versions[type_url].pop(name, None)
        if error is None:
            self.applied.append(type_url)
            requests = [self._request(type_url, nonce=response.nonce)]
        else:
            self.nacks.append((type_url, error))
            requests = [self._request(type_url, nonce=response.nonce, error=error)]
        for dependent in (ENDPOINTS, ROUTES):
            wanted = self.wanted_names(dependent)
            current = self.subscribed.get(dependent, set())
            if wanted != current:
                for gone in current - wanted:
                    self.have[dependent].pop(gone, None)
                    self.versions[dependent].pop(gone, None)
                requests.append(self._request(dependent, sorted(wanted - current), sorted(current - wanted)))
        return requests


def converse(stream: Any, client: Any, first: list[Any], limit: int = 200) -> list[Any]:
    """Run the conversation to quiet: every response to the client, every request to the stream.
    Returns every response the stream sent. After each response the client applies, no route or TCP
    proxy may name a cluster the client does not have (make-before-break)."""
    sent: list[Any] = []
    requests = list(first)
    for _ in range(limit):
        if not requests:
            return sent
        responses = stream.on_request(requests.pop(0))
        sent.extend(responses)
        requests.extend(deliver(client, responses))
    raise AssertionError("the conversation did not settle")


def deliver(client: Any, responses: Iterable[Any]) -> list[Any]:
    """Hand responses to the client in order, checking make-before-break after each; its requests."""
    requests: list[Any] = []
    for response in responses:
        requests.extend(client.receive(response))
        assert client.broken_references() == [], f"after {response.type_url}: {client.broken_references()}"
    return requests


def expected_state(cache: SnapshotCache, client: Any, node_id: str) -> dict[str, dict[str, bytes]]:
    """What the client should hold per type (name -> the resource's serialized content) once settled."""
    snapshot = cache.snapshot(node_id)
    assert snapshot is not None
    expected: dict[str, dict[str, bytes]] = {}
    for type_url in PUSH_ORDER:
        serving = snapshot.of_type(type_url)
        if type_url in WILDCARD_TYPES:
            names = {n for n in serving if n not in snapshot.wildcard_excluded}
        else:
            names = {n for n in client.wanted_names(type_url) if n in serving}
        expected[type_url] = {n: serving[n].packed.value for n in names}
    return expected


def client_state(client: Any) -> dict[str, dict[str, bytes]]:
    return {t: {n: m.SerializeToString(deterministic=True) for n, m in client.have[t].items()} for t in PUSH_ORDER}
