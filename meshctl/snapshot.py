"""Per-node xDS snapshots built from the model. Pure: ``FabricState`` in, one ``MeshSnapshot`` per node out.

Nodes (an Envoy's ``node.id``): the sidecar of every placed workload (node id = workload id) and a
client sidecar for every host where users sit (node id = host id). Resource names are stable and
deterministic, so a rebuild of an unchanged model yields byte-identical resources:

==========================  ===================  ==============================================
type                        name                 what
==========================  ===================  ==============================================
Cluster, LoadAssignment     ``svc/<service>``    the service's placed, healthy workloads (EDS),
                                                 by priority from the caller (``meshctl.paths``);
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
from meshctl.paths import Levels, PathRules, ServicePaths, compute_paths
from meshctl.serving import serving_node
from meshctl.xds_types import CLUSTER, ENDPOINTS, LISTENER, PUSH_ORDER, ROUTES, SECRET, XDS_CLUSTER
from netmodel.authorization import service_policy
from netmodel.ids import HostId, ServiceName, SwitchId
from netmodel.state import FabricState
from netmodel.types import ComputeNode, PolicyDefault, Protocol, Service, Workload, frozen_map


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
    """Services proxied as plain TCP (no HTTP routing), besides those declared ``protocol: tcp``; every
    other service is HTTP/1.1 or h2c."""
    host_calls: Mapping[str, tuple[str, ...]] | None = None
    """Host id -> the services its users call. None: every host calls the entry services (those no
    service calls)."""
    paths: PathRules = field(default_factory=PathRules)
    """How instances are cut into priority levels by latency from each caller (``meshctl.paths``)."""
    access_log_cluster: str = XDS_CLUSTER
    """Where sidecars stream the access log of the requests their RBAC denied (``meshctl.access_log``):
    the bootstrap's cluster to the controller. Empty: no denial access log."""

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


def inbound_stat_prefix(service: str) -> str:
    """The stat prefix of a sidecar's inbound listener: ``http.in_<service>.rbac.denied`` counts the
    requests its RBAC refused (``in_<service>.rbac.denied``: connections, for a TCP service)."""
    return f"in_{service}".replace(".", "_")


def rbac_enforced(state: FabricState, config: MeshConfig) -> bool:
    """Sidecars enforce the authorization policy: only with mTLS (RBAC matches the peer certificate's
    SPIFFE id; a plaintext caller has none), and not when the fabric's default is allow."""
    return config.mtls and state.default_policy is not PolicyDefault.ALLOW


def inbound_rbac(state: FabricState, service: ServiceName, config: MeshConfig) -> ec.InboundRbac | None:
    """What the inbound listeners of ``service``'s instances let in: one RBAC grant per ``allow_from`` rule
    (``netmodel.authorization``), none at all when the policy is not enforced (``rbac_enforced``). It
    depends on the rules only, never on where callers run (principals are identities), so a migration
    changes no inbound listener."""
    if not rbac_enforced(state, config):
        return None
    policy = service_policy(state, service, config.trust_domain)
    if policy.allows_everyone:
        return None
    grants = tuple(
        ec.RbacGrant(
            f"allow_from[{grant.index}]",
            grant.principal.spiffe_id,
            grant.principal.prefix,
            grant.paths,
            grant.methods,
        )
        for grant in policy.grants
    )
    return ec.InboundRbac(inbound_stat_prefix(service), grants, config.access_log_cluster)


def build_snapshots(
    state: FabricState,
    config: MeshConfig,
    ready_workloads: frozenset[str] | None = None,
    paths: ServicePaths | None = None,
) -> dict[str, MeshSnapshot]:
    """One snapshot per sidecar node: every placed workload and every host.

    ``ready_workloads``: the workloads whose sidecars serve (``meshctl.readiness``); only they are
    endpoints, so no caller is sent to an instance whose sidecar has not started yet. None: every placed
    workload on an up node is an endpoint from its placement on (proxyless services, no sidecars).
    ``paths``: ``service_paths(state, config, ready_workloads)`` when the caller has it already."""
    if paths is None:
        paths = service_paths(state, config, ready_workloads)
    return _SnapshotBuilder(state, config, ready_workloads, paths).build()


def service_paths(
    state: FabricState,
    config: MeshConfig,
    ready_workloads: frozenset[str] | None = None,
    previous: ServicePaths | None = None,
) -> ServicePaths:
    """Each caller switch's priority levels of the services called from it (``meshctl.paths``): what
    the endpoints depend on in the topology, and nothing more (no latency value)."""
    instances = _endpoint_instances(state, ready_workloads)
    switches = {name: {node.attachment.switch for _, node in pairs} for name, pairs in instances.items()}
    entry = _entry_services(state.services)
    wanted: dict[SwitchId | None, set[ServiceName]] = defaultdict(set)
    for host in state.hosts.values():
        wanted[_host_switch(state, host.id)].update(_host_calls(config, entry, host.id))
    for workload in state.workloads.values():
        node = state.nodes.get(workload.node) if workload.node is not None else None
        if node is not None:
            wanted[node.attachment.switch].update(state.services[workload.service].calls)
    return compute_paths(state.topology, wanted, switches, config.paths, previous)


def _entry_services(services: Mapping[ServiceName, Service]) -> tuple[ServiceName, ...]:
    """The services no service calls: what users on hosts call unless ``MeshConfig.host_calls`` says."""
    called = {callee for service in services.values() for callee in service.calls}
    return tuple(sorted(name for name in services if name not in called))


def _host_calls(config: MeshConfig, entry: tuple[ServiceName, ...], host: HostId) -> tuple[ServiceName, ...]:
    if config.host_calls is None:
        return entry
    return tuple(ServiceName(s) for s in config.host_calls.get(host, ()))


def _host_switch(state: FabricState, host: HostId) -> SwitchId | None:
    attachment = state.hosts[host].attachment
    return attachment.switch if attachment is not None else None


def _endpoint_instances(
    state: FabricState, ready_workloads: frozenset[str] | None
) -> dict[ServiceName, list[tuple[Workload, ComputeNode]]]:
    """Per service, the instances that are endpoints (by id) and the node each serves from."""
    instances: dict[ServiceName, list[tuple[Workload, ComputeNode]]] = defaultdict(list)
    for workload in sorted(state.workloads.values(), key=lambda w: w.id):
        node = serving_node(state, workload)
        if node is None:
            continue  # unplaced, or its node is down: no traffic to it
        if workload.id in state.unhealthy:
            continue  # its app or sidecar died (the node agent said so): withdrawn until re-placed
        if ready_workloads is not None and workload.id not in ready_workloads:
            continue  # its sidecar does not serve yet
        instances[workload.service].append((workload, node))
    return instances


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
    def __init__(
        self, state: FabricState, config: MeshConfig, ready_workloads: frozenset[str] | None, paths: ServicePaths
    ) -> None:
        self.state = state
        self.config = config
        self.paths = paths
        self.services = state.services
        self.workloads_of: dict[ServiceName, list[Workload]] = defaultdict(list)
        for workload in sorted(state.workloads.values(), key=lambda w: w.id):
            self.workloads_of[workload.service].append(workload)
        self.instances = _endpoint_instances(state, ready_workloads)
        self.entry_services = _entry_services(self.services)
        self.callers = self._callers()
        self._clusters: dict[ServiceName, Resource] = {}
        self._endpoints: dict[tuple[ServiceName, Levels], Resource] = {}
        self._outbound: dict[tuple[tuple[ServiceName, Levels], ...], _Part] = {}
        self._outbound_by_caller: dict[tuple[SwitchId | None, tuple[ServiceName, ...]], _Part] = {}
        self._rbac: dict[ServiceName, ec.InboundRbac | None] = {}

    def build(self) -> dict[str, MeshSnapshot]:
        snapshots: dict[str, MeshSnapshot] = {}
        for host_id in sorted(self.state.hosts):
            part = self._outbound_part(self._host_calls(host_id), _host_switch(self.state, host_id))
            snapshots[host_id] = self._snapshot(host_id, part, {}, ())
        for workload in sorted(self.state.workloads.values(), key=lambda w: w.id):
            node = self.state.nodes.get(workload.node) if workload.node is not None else None
            if node is None:
                continue  # not placed: no sidecar runs yet
            service = self.services[workload.service]
            extra, problems = self._inbound(workload, node)
            collision = (f"workload id {workload.id!r} is also a host id: the workload's sidecar wins",)
            snapshots[workload.id] = self._snapshot(
                workload.id,
                self._outbound_part(service.calls, node.attachment.switch),
                extra,
                problems + (collision if HostId(workload.id) in self.state.hosts else ()),
            )
        return snapshots

    # -- who calls whom -----------------------------------------------------------------------------

    def _host_calls(self, host: HostId) -> tuple[ServiceName, ...]:
        return _host_calls(self.config, self.entry_services, host)

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

    def _tcp(self, name: ServiceName) -> bool:
        """Proxied as plain TCP: declared ``protocol: tcp``, or named in ``MeshConfig.tcp_services``."""
        return name in self.config.tcp_services or self.services[name].protocol is Protocol.TCP

    def _port_of(self, workload: Workload) -> int:
        return workload.port or self.services[workload.service].port

    # -- shared resources ---------------------------------------------------------------------------

    def _cluster(self, name: ServiceName) -> Resource:
        """The service's cluster: the same object for every caller."""
        known = self._clusters.get(name)
        if known is not None:
            return known
        cluster_name = service_cluster_name(name)
        refs = [(ENDPOINTS, cluster_name)]
        tls = None
        if self.config.mtls:
            tls = ec.upstream_mtls(sorted(self._identities_of(name)))
            refs += [(SECRET, ec.IDENTITY_SECRET), (SECRET, ec.TRUST_BUNDLE_SECRET)]
        http = not self._tcp(name)
        cluster = make_resource(
            cluster_name, ec.eds_cluster(cluster_name, self.config.connect_timeout_ms, http, tls), refs
        )
        self._clusters[name] = cluster
        return cluster

    def _levels(self, name: ServiceName, caller_switch: SwitchId | None) -> Levels:
        switches = (node.attachment.switch for _, node in self.instances.get(name, ()))
        return self.paths.of(caller_switch, name, switches)

    def _endpoints_for(self, name: ServiceName, levels: Levels) -> Resource:
        """The service's endpoints in one priority order: the same object for every caller with that order."""
        known = self._endpoints.get((name, levels))
        if known is not None:
            return known
        cluster_name = service_cluster_name(name)
        endpoints = make_resource(cluster_name, ec.load_assignment(cluster_name, self._localities(name, levels)))
        self._endpoints[(name, levels)] = endpoints
        return endpoints

    def _localities(self, name: ServiceName, levels: Levels) -> list[ec.LocalityEndpoints]:
        priority_of = {switch: priority for priority, level in enumerate(levels) for switch in level}
        groups: dict[tuple[int, str, str, str], list[tuple[str, int, int]]] = defaultdict(list)
        for workload, node in self.instances.get(name, ()):
            site = self.state.sites.get(node.site)
            where = (site.region, site.zone, site.id) if site is not None else ("", "", node.site)
            priority = priority_of.get(node.attachment.switch, len(levels))  # (levels cover every instance)
            groups[(priority, *where)].append((node.ip, self._port_of(workload), 1))
        return [
            ec.LocalityEndpoints(region, zone, sub_zone, tuple(sorted(eps)), priority)
            for (priority, region, zone, sub_zone), eps in sorted(groups.items())
        ]

    def _outbound_part(self, calls: tuple[ServiceName, ...], caller_switch: SwitchId | None) -> _Part:
        # Callers behind one switch calling the same services share their part: found in one lookup
        # (1,000 sidecars on a few switches cost a few level computations, not one per sidecar).
        seen = self._outbound_by_caller.get((caller_switch, calls))
        if seen is not None:
            return seen
        names = sorted({name for name in calls if name in self.services})
        key = tuple((name, self._levels(name, caller_switch)) for name in names)
        part = self._outbound.get(key)
        if part is None:
            part = self._build_outbound(key)
            self._outbound[key] = part
        self._outbound_by_caller[(caller_switch, calls)] = part
        return part

    def _build_outbound(self, calls: tuple[tuple[ServiceName, Levels], ...]) -> _Part:
        by_type: dict[str, dict[str, Resource]] = {t: {} for t in PUSH_ORDER}
        excluded: set[str] = set()
        problems: list[str] = []
        by_port: dict[int, list[ServiceName]] = defaultdict(list)
        for name, levels in calls:
            cluster, endpoints = self._cluster(name), self._endpoints_for(name, levels)
            by_type[CLUSTER][cluster.name] = cluster
            by_type[ENDPOINTS][endpoints.name] = endpoints
            by_port[self.services[name].port].append(name)
        host = self.config.outbound_host
        for port, names in sorted(by_port.items()):
            listener_name = f"out/{port}"
            http = [n for n in names if not self._tcp(n)]
            tcp = [n for n in names if self._tcp(n)]
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
        http = not self._tcp(workload.service)
        local = f"local/{workload.id}"
        cluster = make_resource(
            local, ec.static_cluster(local, self.config.app_host, port, self.config.connect_timeout_ms, http)
        )
        tls = None
        refs = [(CLUSTER, local)]
        rbac = self._rbac_of(workload.service)
        if self.config.mtls:
            # With RBAC, mTLS only authenticates (any identity of the trust domain) and RBAC decides, so a
            # caller the policy does not admit gets 403 and is counted, not a failed handshake.
            peers = [f"spiffe://{self.config.trust_domain}/"] if rbac is not None else self.callers[workload.service]
            tls = ec.downstream_mtls(sorted(peers))
            refs += [(SECRET, ec.IDENTITY_SECRET), (SECRET, ec.TRUST_BUNDLE_SECRET)]
        name = inbound_listener_name(workload.id)
        stat_prefix = inbound_stat_prefix(workload.service)
        if http:
            route = ec.route_configuration(
                name, [ec.VirtualHost("inbound", ("*",), local)], self.config.request_timeout_ms
            )
            message = ec.http_listener(
                name,
                node.ip,
                port,
                inline_route=route,
                inbound=True,
                tls=tls,
                forward_client_identity=self.config.mtls,
                rbac=rbac,
                stat_prefix=stat_prefix,
            )
        else:
            message = ec.tcp_listener(
                name, node.ip, port, local, inbound=True, tls=tls, rbac=rbac, stat_prefix=stat_prefix
            )
        return {CLUSTER: [cluster], LISTENER: [make_resource(name, message, refs)]}, ()

    def _rbac_of(self, service: ServiceName) -> ec.InboundRbac | None:
        """The service's RBAC (``inbound_rbac``), the same for each of its instances, built once."""
        if service not in self._rbac:
            self._rbac[service] = inbound_rbac(self.state, service, self.config)
        return self._rbac[service]

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
