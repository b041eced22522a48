"""Per-node xDS snapshots built from the model. Pure: ``FabricState`` in, one ``MeshSnapshot`` per node out.

Nodes (an Envoy's ``node.id``): the sidecar of every placed workload (node id = workload id) and a
client sidecar for every host where users sit (node id = host id). Resource names are stable and
deterministic, so a rebuild of an unchanged model yields byte-identical resources:

==========================  ===================  ==============================================
type                        name                 what
==========================  ===================  ==============================================
Cluster, LoadAssignment     ``svc/<service>``    the service's placed, healthy workloads (EDS);
                                                 outlier detection, a retry budget
Cluster                     ``local/<workload>`` the app behind the workload's inbound listener
Listener                    ``in/<workload>``    ``<node ip>:<workload port>``, mTLS when on
Listener, RouteConfig       ``out/<port>``       ``<outbound_host>:<port>``: a virtual host per
                                                 called service on that port; retries
Listener                    ``<service>``        gRPC api listener (``xds:///<service>``), served
                                                 only when asked for by name
Secret                      ``identity``,        mTLS only: the node's own certificate and key,
                            ``trust-bundle``     and the CA bundle
==========================  ===================  ==============================================

Outbound listeners are per port, not per service: two called services on one port would otherwise
be two listeners on one address, which Envoy rejects. HTTP services sharing a port are told apart by
the Host header (``<service>`` or ``<service>:<port>``); a port with a single service also answers
any host, so ``curl 127.0.0.1:<port>`` works.

Versions: each type's version is ``<generation>-<digest>``, the digest a hash of the (name, content
hash) pairs. Delta xDS uses each resource's content hash as its version, which survives restarts.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from meshctl import envoy_config as ec
from meshctl.serving import serving_node
from meshctl.xds_types import CLUSTER, ENDPOINTS, LISTENER, PUSH_ORDER, ROUTES, SECRET
from netmodel.ids import HostId, ServiceName
from netmodel.state import FabricState
from netmodel.types import ComputeNode, Workload, frozen_map


@dataclass(frozen=True, slots=True)
class TlsIdentity:
    """A sidecar's certificate chain and private key (PEM), from the PKI (``MeshServer.use_identities``)."""

    cert_chain_pem: str
    private_key_pem: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class MeshConfig:
    """How the model becomes Envoy configuration. The defaults serve plaintext HTTP."""

    mtls: bool = False
    """Inbound listeners terminate mTLS (callers restricted by SPIFFE id) and clusters originate it."""
    trust_domain: str = "edgectl.local"
    trust_bundle_pem: str = field(default="", repr=False)
    identities: Mapping[str, TlsIdentity] = field(default_factory=frozen_map, repr=False)
    """Node id -> its certificate; a node gets only its own, as the secret named ``identity``."""
    outbound_host: str = "127.0.0.1"
    """Where apps beside a sidecar reach the services they call (``<outbound_host>:<service port>``)."""
    app_host: str = "127.0.0.1"
    """Where a workload's app listens (on the workload port) behind its sidecar's inbound listener."""
    connect_timeout_ms: int = 1000
    request_timeout_ms: int = 15000
    retries: ec.RetryRules = field(default_factory=ec.RetryRules)
    """How callers retry: idempotent methods per try (``per_try_timeout_ms``) on any failure of the way,
    others only when the request never reached an app (docs/meshctl.md, "Failures")."""
    tcp_services: frozenset[str] = frozenset()
    """Services proxied as plain TCP (no HTTP routing); every other service is HTTP/1.1 or h2c."""
    host_calls: Mapping[str, tuple[str, ...]] | None = None
    """Host id -> the services its users call. None: every host calls the entry services (those no
    service calls)."""

    def host_spiffe_id(self, host: str) -> str:
        return f"spiffe://{self.trust_domain}/host/{host}"


@dataclass(frozen=True, slots=True)
class Resource:
    """One named resource, packed once and shared by every node that gets it."""

    name: str
    message: Any = field(repr=False, compare=False)
    packed: Any = field(repr=False, compare=False)  # google.protobuf.Any
    digest: str = ""
    """Content hash: the delta xDS resource version, and what versions are built from."""
    refs: tuple[tuple[str, str], ...] = ()
    """(type_url, name) of the resources this one needs, for ``check_consistent``."""


def make_resource(name: str, message: Any, refs: Iterable[tuple[str, str]] = ()) -> Resource:
    packed = ec.pack(message)
    digest = hashlib.sha256(packed.value).hexdigest()[:16]
    return Resource(name, message, packed, digest, tuple(sorted(set(refs))))


def digest_of(resources: Iterable[Resource]) -> str:
    """Order-independent hash of a set of resources (names and contents)."""
    hasher = hashlib.sha256()
    for name, digest in sorted((r.name, r.digest) for r in resources):
        hasher.update(f"{name}\0{digest}\n".encode())
    return hasher.hexdigest()[:16]


def version_string(generation: int, digest: str) -> str:
    return f"{generation}-{digest}"


def version_digest(version: str) -> str:
    """The content part of a version string (a foreign string is its own digest)."""
    return version.rpartition("-")[2]


Resources = Mapping[str, Resource]


@dataclass(frozen=True, slots=True)
class MeshSnapshot:
    node_id: str
    generation: int
    resources: Mapping[str, Resources]
    """type_url -> name -> Resource, for each of the five types (possibly empty)."""
    versions: Mapping[str, str]
    """type_url -> ``<generation>-<digest>``; the generation is the one at which the content last changed."""
    wildcard_excluded: frozenset[str] = frozenset()
    """Listener names left out of wildcard answers: gRPC api listeners, which have no address."""
    problems: tuple[str, ...] = ()
    """What could not be built as the model asks (shown by ``edgectl mesh status``)."""

    def of_type(self, type_url: str) -> Resources:
        return self.resources.get(type_url, _EMPTY)

    def version(self, type_url: str) -> str:
        version = self.versions.get(type_url)
        return version if version is not None else version_string(self.generation, _EMPTY_DIGEST)

    def digest(self, type_url: str) -> str:
        return version_digest(self.version(type_url))


_EMPTY: Resources = MappingProxyType({})
_EMPTY_DIGEST = digest_of(())


class InconsistentSnapshot(ValueError):
    def __init__(self, node_id: str, problems: list[str]) -> None:
        self.node_id = node_id
        self.problems = problems
        super().__init__(f"node {node_id}: " + "; ".join(problems))


CHECKED_REFERENCES = (CLUSTER, ENDPOINTS, ROUTES)
"""Secrets are not checked: a sidecar whose certificate is not issued yet keeps its TLS listener
warming (fail closed) while everything else in its snapshot still updates."""


def check_consistent(snapshot: MeshSnapshot) -> None:
    """Every EDS name in CDS, every RDS name in LDS, every cluster a route names exists: else raise."""
    problems = [
        f"{type_url.rsplit('.', 1)[-1]} {resource.name!r} needs {ref_type.rsplit('.', 1)[-1]} {ref_name!r}"
        for type_url in PUSH_ORDER
        for resource in snapshot.of_type(type_url).values()
        for ref_type, ref_name in resource.refs
        if ref_type in CHECKED_REFERENCES and ref_name not in snapshot.of_type(ref_type)
    ]
    if problems:
        raise InconsistentSnapshot(snapshot.node_id, problems)


def inbound_listener_name(workload_id: str) -> str:
    return f"in/{workload_id}"


def service_cluster_name(service: str) -> str:
    """The cluster (and endpoints) name of ``service`` in every caller's snapshot."""
    return f"svc/{service}"


def build_snapshots(
    state: FabricState, config: MeshConfig, ready_workloads: frozenset[str] | None = None
) -> dict[str, MeshSnapshot]:
    """One snapshot per sidecar node: every placed workload and every host.

    ``ready_workloads``: the workloads whose sidecars serve (``meshctl.readiness``); only they are
    endpoints, so no caller is sent to an instance whose sidecar has not started yet. None: every placed
    workload on an up node is an endpoint from its placement on (proxyless services, no sidecars)."""
    return _SnapshotBuilder(state, config, ready_workloads).build()


# -- the builder ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Part:
    """Resources by type, with the digest of each type (shared between nodes that call the same services)."""

    resources: dict[str, dict[str, Resource]]
    digests: dict[str, str]
    wildcard_excluded: frozenset[str]
    problems: tuple[str, ...]
    as_snapshot: tuple[Mapping[str, Resources], Mapping[str, str]] | None = None
    """Resources and versions of a node with nothing of its own: built once, shared by all such nodes
    (so the cache can also check their consistency once)."""


class _SnapshotBuilder:
    def __init__(self, state: FabricState, config: MeshConfig, ready_workloads: frozenset[str] | None) -> None:
        self.state = state
        self.config = config
        self.ready_workloads = ready_workloads
        self.services = state.services
        self.workloads_of: dict[ServiceName, list[Workload]] = defaultdict(list)
        for workload in sorted(state.workloads.values(), key=lambda w: w.id):
            self.workloads_of[workload.service].append(workload)
        called = {callee for service in self.services.values() for callee in service.calls}
        self.entry_services = tuple(sorted(name for name in self.services if name not in called))
        self.callers = self._callers()
        self._service_resources: dict[ServiceName, tuple[Resource, Resource]] = {}
        self._outbound: dict[tuple[ServiceName, ...], _Part] = {}

    def build(self) -> dict[str, MeshSnapshot]:
        snapshots: dict[str, MeshSnapshot] = {}
        for host_id in sorted(self.state.hosts):
            snapshots[host_id] = self._snapshot(host_id, self._outbound_part(self._host_calls(host_id)), {}, ())
        for workload in sorted(self.state.workloads.values(), key=lambda w: w.id):
            node = self.state.nodes.get(workload.node) if workload.node is not None else None
            if node is None:
                continue  # not placed: no sidecar runs yet
            service = self.services[workload.service]
            extra, problems = self._inbound(workload, node)
            collision = (f"workload id {workload.id!r} is also a host id: the workload's sidecar wins",)
            snapshots[workload.id] = self._snapshot(
                workload.id,
                self._outbound_part(service.calls),
                extra,
                problems + (collision if HostId(workload.id) in self.state.hosts else ()),
            )
        return snapshots

    # -- who calls whom -----------------------------------------------------------------------------

    def _host_calls(self, host: HostId) -> tuple[ServiceName, ...]:
        if self.config.host_calls is None:
            return self.entry_services
        return tuple(ServiceName(s) for s in self.config.host_calls.get(host, ()))

    def _identities_of(self, service: ServiceName) -> set[str]:
        """Who may speak for ``service``: its instances' SPIFFE ids. When they follow the PKI's naming
        (``spiffe://<td>/svc/<service>/w/<workload>``), the prefix ``spiffe://<td>/svc/<service>/``
        instead, so scaling or moving the service changes no listener or cluster anywhere."""
        prefix = f"spiffe://{self.config.trust_domain}/svc/{service}/"
        ids = {w.spiffe_id for w in self.workloads_of[service]}
        return {prefix} if all(i.startswith(prefix) for i in ids) else set(ids)

    def _callers(self) -> dict[ServiceName, set[str]]:
        callers: dict[ServiceName, set[str]] = defaultdict(set)
        for service in self.services.values():
            for callee in service.calls:
                callers[callee].update(self._identities_of(service.name))
        for host in self.state.hosts:
            for callee in self._host_calls(host):
                callers[callee].add(self.config.host_spiffe_id(host))
        return callers

    def _port_of(self, workload: Workload) -> int:
        return workload.port or self.services[workload.service].port

    # -- shared resources ---------------------------------------------------------------------------

    def _service(self, name: ServiceName) -> tuple[Resource, Resource]:
        """The service's cluster and its endpoints: the same objects for every caller."""
        known = self._service_resources.get(name)
        if known is not None:
            return known
        cluster_name = service_cluster_name(name)
        workloads = self.workloads_of[name]
        refs = [(ENDPOINTS, cluster_name)]
        tls = None
        if self.config.mtls:
            tls = ec.upstream_mtls(sorted(self._identities_of(name)))
            refs += [(SECRET, ec.IDENTITY_SECRET), (SECRET, ec.TRUST_BUNDLE_SECRET)]
        http = name not in self.config.tcp_services
        cluster = make_resource(
            cluster_name, ec.eds_cluster(cluster_name, self.config.connect_timeout_ms, http, tls), refs
        )
        endpoints = make_resource(cluster_name, ec.load_assignment(cluster_name, self._localities(workloads)))
        self._service_resources[name] = (cluster, endpoints)
        return cluster, endpoints

    def _localities(self, workloads: list[Workload]) -> list[ec.LocalityEndpoints]:
        groups: dict[tuple[str, str, str], list[tuple[str, int, int]]] = defaultdict(list)
        for workload in workloads:
            node = serving_node(self.state, workload)
            if node is None:
                continue  # unplaced, or its node is down: no traffic to it
            if workload.id in self.state.unhealthy:
                continue  # its app or sidecar died (the node agent said so): withdrawn until re-placed
            if self.ready_workloads is not None and workload.id not in self.ready_workloads:
                continue  # its sidecar does not serve yet
            site = self.state.sites.get(node.site)
            key = (site.region, site.zone, site.id) if site is not None else ("", "", node.site)
            groups[key].append((node.ip, self._port_of(workload), 1))
        return [ec.LocalityEndpoints(*key, tuple(sorted(eps))) for key, eps in sorted(groups.items())]

    def _outbound_part(self, calls: Iterable[ServiceName]) -> _Part:
        key = tuple(sorted({name for name in calls if name in self.services}))
        part = self._outbound.get(key)
        if part is None:
            part = self._build_outbound(key)
            self._outbound[key] = part
        return part

    def _build_outbound(self, calls: tuple[ServiceName, ...]) -> _Part:
        by_type: dict[str, dict[str, Resource]] = {t: {} for t in PUSH_ORDER}
        excluded: set[str] = set()
        problems: list[str] = []
        by_port: dict[int, list[ServiceName]] = defaultdict(list)
        for name in calls:
            cluster, endpoints = self._service(name)
            by_type[CLUSTER][cluster.name] = cluster
            by_type[ENDPOINTS][endpoints.name] = endpoints
            by_port[self.services[name].port].append(name)
        host = self.config.outbound_host
        for port, names in sorted(by_port.items()):
            listener_name = f"out/{port}"
            http = [n for n in names if n not in self.config.tcp_services]
            tcp = [n for n in names if n in self.config.tcp_services]
            if tcp and len(names) > 1:
                dropped = tcp if http else tcp[1:]
                problems.append(
                    f"port {port}: TCP service(s) {', '.join(dropped)} cannot share the port with "
                    f"{', '.join(n for n in names if n not in dropped)}; not reachable from here"
                )
            if not http:
                cluster_name = f"svc/{tcp[0]}"
                listener = ec.tcp_listener(listener_name, host, port, cluster_name, inbound=False)
                by_type[LISTENER][listener_name] = make_resource(listener_name, listener, [(CLUSTER, cluster_name)])
                continue
            lone = len(http) == 1
            hosts = [ec.VirtualHost(n, (n, f"{n}:{port}", *(("*",) if lone else ())), f"svc/{n}") for n in sorted(http)]
            routes = ec.route_configuration(listener_name, hosts, self.config.request_timeout_ms, self.config.retries)
            by_type[ROUTES][listener_name] = make_resource(listener_name, routes, [(CLUSTER, h.cluster) for h in hosts])
            listener = ec.http_listener(listener_name, host, port, route_name=listener_name, inbound=False)
            by_type[LISTENER][listener_name] = make_resource(listener_name, listener, [(ROUTES, listener_name)])
            for name in http:
                by_type[LISTENER][name] = make_resource(
                    name, ec.api_listener(name, listener_name), [(ROUTES, listener_name)]
                )
                excluded.add(name)
        digests = {t: digest_of(rs.values()) for t, rs in by_type.items()}
        return _Part(by_type, digests, frozenset(excluded), tuple(problems))

    # -- per-node resources -------------------------------------------------------------------------

    def _inbound(self, workload: Workload, node: ComputeNode) -> tuple[dict[str, list[Resource]], tuple[str, ...]]:
        if not node.ip:
            return {}, (f"node {node.id} has no ip: no inbound listener",)
        port = self._port_of(workload)
        http = workload.service not in self.config.tcp_services
        local = f"local/{workload.id}"
        cluster = make_resource(
            local, ec.static_cluster(local, self.config.app_host, port, self.config.connect_timeout_ms, http)
        )
        tls = None
        refs = [(CLUSTER, local)]
        if self.config.mtls:
            tls = ec.downstream_mtls(sorted(self.callers[workload.service]))
            refs += [(SECRET, ec.IDENTITY_SECRET), (SECRET, ec.TRUST_BUNDLE_SECRET)]
        name = inbound_listener_name(workload.id)
        if http:
            route = ec.route_configuration(
                name, [ec.VirtualHost("inbound", ("*",), local)], self.config.request_timeout_ms
            )
            message = ec.http_listener(
                name, node.ip, port, inline_route=route, inbound=True, tls=tls, forward_client_identity=self.config.mtls
            )
        else:
            message = ec.tcp_listener(name, node.ip, port, local, inbound=True, tls=tls)
        return {CLUSTER: [cluster], LISTENER: [make_resource(name, message, refs)]}, ()

    def _secrets(self, node_id: str) -> tuple[list[Resource], tuple[str, ...]]:
        if not self.config.mtls:
            return [], ()
        secrets = []
        problems: tuple[str, ...] = ()
        identity = self.config.identities.get(node_id)
        if identity is not None:
            secrets.append(
                make_resource(ec.IDENTITY_SECRET, ec.identity_secret(identity.cert_chain_pem, identity.private_key_pem))
            )
        else:
            problems = ("mTLS is on but no certificate is issued for this node yet: its TLS listeners wait",)
        if self.config.trust_bundle_pem:
            secrets.append(make_resource(ec.TRUST_BUNDLE_SECRET, ec.trust_bundle_secret(self.config.trust_bundle_pem)))
        return secrets, problems

    def _snapshot(
        self, node_id: str, shared: _Part, extra: Mapping[str, list[Resource]], problems: tuple[str, ...]
    ) -> MeshSnapshot:
        secrets, secret_problems = self._secrets(node_id)
        additions = {**extra, SECRET: secrets} if secrets else dict(extra)
        generation = self.state.generation
        problems = shared.problems + problems + secret_problems
        if not any(additions.values()):
            if shared.as_snapshot is None:
                shared.as_snapshot = (
                    MappingProxyType({t: MappingProxyType(shared.resources[t]) for t in PUSH_ORDER}),
                    MappingProxyType({t: version_string(generation, shared.digests[t]) for t in PUSH_ORDER}),
                )
            resources_view, versions_view = shared.as_snapshot
            return MeshSnapshot(node_id, generation, resources_view, versions_view, shared.wildcard_excluded, problems)
        resources: dict[str, Resources] = {}
        versions: dict[str, str] = {}
        for type_url in PUSH_ORDER:
            own = additions.get(type_url)
            if own:
                merged = {**shared.resources[type_url], **{r.name: r for r in own}}
                resources[type_url] = MappingProxyType(merged)
                versions[type_url] = version_string(generation, digest_of(merged.values()))
            else:  # the shared dict itself: nodes that call the same services share one object
                resources[type_url] = MappingProxyType(shared.resources[type_url])
                versions[type_url] = version_string(generation, shared.digests[type_url])
        return MeshSnapshot(
            node_id=node_id,
            generation=generation,
            resources=MappingProxyType(resources),
            versions=MappingProxyType(versions),
            wildcard_excluded=shared.wildcard_excluded,
            problems=problems,
        )


def with_versions_of(snapshot: MeshSnapshot, previous: MeshSnapshot | None) -> MeshSnapshot:
    """Keep ``previous``'s version string for every type whose content did not change, so a version
    names the generation at which that content first appeared (and an unchanged type never looks new)."""
    if previous is None:
        return snapshot
    versions = {
        t: previous.versions[t] if t in previous.versions and previous.digest(t) == snapshot.digest(t) else v
        for t, v in snapshot.versions.items()
    }
    if versions == dict(snapshot.versions):
        return snapshot
    return replace(snapshot, versions=MappingProxyType(versions))
