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
Listener, RouteConfig       ``out/<port>``       ``<address>:<port>``: a virtual host per called
                                                 service on that port; retries. The address is
                                                 the workload's own (``workload_outbound_host``),
                                                 a host's ``outbound_host``
Listener                    ``<service>``        gRPC api listener (``xds:///<service>``), served
                                                 only when asked for by name
Secret                      ``identity``,        mTLS only: the node's own certificate and key,
                            ``trust-bundle``     and the CA bundle
==========================  ===================  ==============================================

Outbound listeners are per port, not per service: two called services on one port would otherwise
be two listeners on one address, which Envoy rejects. HTTP services sharing a port are told apart by
the Host header (``<service>`` or ``<service>:<port>``); a port with a single service also answers
any host, so ``curl 127.0.0.1:<port>`` works on a user host.

Versions: each type's version is ``<generation>-<digest>``, the digest a hash of the (name, content
hash) pairs. Delta xDS uses each resource's content hash as its version, which survives restarts.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from itertools import chain, zip_longest
from operator import is_
from types import MappingProxyType
from typing import Any

from meshctl import envoy_config as ec
from meshctl.endpoints_wire import EncodedGroup, Endpoint, LoadAssignmentEncoder, assignment_digest, join_groups
from meshctl.paths import Levels, LevelVectors, PathRules, ServicePaths, compute_paths
from meshctl.serving import serving_node
from meshctl.xds_types import (
    CLUSTER,
    ENDPOINTS,
    LISTENER,
    PUSH_ORDER,
    ROUTES,
    SECRET,
    XDS_CLUSTER,
    service_cluster_name,
    workload_outbound_host,
)
from netmodel.authorization import service_policy
from netmodel.ids import HostId, ServiceName, SwitchId, WorkloadId
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
    """Where users on a host reach the services they call through its client sidecar
    (``<outbound_host>:<service port>``). A workload's app has an address of its own
    (``meshctl.xds_types.workload_outbound_host``)."""
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
    tcp_fast_open: bool = True
    """Under mTLS, sidecars open connections to each other with TCP Fast Open and their inbound listeners
    accept it: a new connection to an address the caller reached before (a moved instance's node) costs
    one round trip less (``envoy_config.fast_open_connect``). A node accepts it only with
    ``net.ipv4.tcp_fastopen`` = 3 (the server side, 0x2, is off by default); otherwise connections open as
    before."""
    access_log_cluster: str = XDS_CLUSTER
    """Where sidecars stream the access log of the requests their RBAC denied (``meshctl.access_log``):
    the bootstrap's cluster to the controller. Empty: no denial access log."""

    def host_spiffe_id(self, host: str) -> str:
        return f"spiffe://{self.trust_domain}/host/{host}"


@dataclass(frozen=True, slots=True)
class Resource:
    """One named resource, packed once and shared by every node that gets it."""

    name: str
    packed: Any = field(repr=False, compare=False)  # google.protobuf.Any
    digest: str = ""
    """Content hash: the delta xDS resource version, and what versions are built from."""
    refs: tuple[tuple[str, str], ...] = ()
    """(type_url, name) of the resources this one needs, for ``check_consistent``."""
    built: Any = field(default=None, repr=False, compare=False)
    """The message, once ``message`` decoded it (for tests and views). Not kept from the build: a
    message held beside its bytes doubled a snapshot's memory (10,000 workloads' listeners and
    clusters, each with its RBAC principals)."""

    @property
    def message(self) -> Any:
        """The resource as a protobuf message (decoded from its bytes on first use: for tests and views)."""
        if self.built is None:
            object.__setattr__(self, "built", ec.unpack(self.packed))
        return self.built


def make_resource(name: str, message: Any, refs: Iterable[tuple[str, str]] = ()) -> Resource:
    packed = ec.pack(message)
    digest = hashlib.sha256(packed.value).hexdigest()[:16]
    return Resource(name, packed, digest, tuple(sorted(set(refs))))


def encoded_resource(name: str, type_url: str, data: bytes, digest: str) -> Resource:
    """A resource from its serialized message and its content hash (``meshctl.endpoints_wire``)."""
    return Resource(name, ec.packed_bytes(type_url, data), digest)


def digest_of(resources: Iterable[Resource]) -> str:
    """Order-independent hash of a set of resources (names and contents): of their ``name\0digest\n``
    lines sorted (``\0`` sorts first, so the lines sort as the (name, digest) pairs do)."""
    return _digest_of_lines(sorted(f"{r.name}\0{r.digest}\n" for r in resources))


def _digest_of_lines(sorted_lines: Iterable[str]) -> str:
    return hashlib.sha256("".join(sorted_lines).encode()).hexdigest()[:16]


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
_NO_RESOURCE = Resource("", None)
_SWITCH_LOG_LIMIT = 4096
_NO_SECRETS: dict[str, Resource] = {}
_NO_SECRETS_VIEW: Resources = MappingProxyType(_NO_SECRETS)
_REBASE_LIMIT = 8
"""A view whose levels moved more switches than this is built anew rather than rebased (each moved switch
re-encodes its groups in both orders; at the xDS rebuild benchmark's ~110 instance switches a new view
costs about as much as rebasing 10-15 of them: 8 measured a little faster than 16 and 32)."""


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
    held = {type_url: snapshot.of_type(type_url) for type_url in CHECKED_REFERENCES}
    problems = [
        f"{type_url.rsplit('.', 1)[-1]} {resource.name!r} needs {ref_type.rsplit('.', 1)[-1]} {ref_name!r}"
        for type_url in PUSH_ORDER
        for resource in snapshot.of_type(type_url).values()
        for ref_type, ref_name in resource.refs
        if ref_type in held and ref_name not in held[ref_type]
    ]
    if problems:
        raise InconsistentSnapshot(snapshot.node_id, problems)


def _tcp_outbound(name: str, port: int, cluster: str, host: str) -> Resource:
    return make_resource(name, ec.tcp_listener(name, host, port, cluster, inbound=False), [(CLUSTER, cluster)])


def _http_outbound(name: str, port: int, host: str) -> Resource:
    """The listener of the route configuration ``name`` (outbound routes are named as their listener)."""
    return make_resource(name, ec.http_listener(name, host, port, route_name=name, inbound=False), [(ROUTES, name)])


def inbound_listener_name(workload_id: str) -> str:
    return f"in/{workload_id}"


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
    return SnapshotBuilder(state, config, ready_workloads, paths).build()


def service_paths(
    state: FabricState,
    config: MeshConfig,
    ready_workloads: frozenset[str] | None = None,
    previous: ServicePaths | None = None,
    vectors: LevelVectors | None = None,
) -> ServicePaths:
    """Each caller switch's priority levels of the services called from it (``meshctl.paths``): what
    the endpoints depend on in the topology, and nothing more (no latency value). ``vectors``: what the
    last call's hold check read (``compute_paths``)."""
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
    return compute_paths(state.topology, wanted, switches, config.paths, previous, vectors=vectors)


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
        node = _endpoint_node(state, ready_workloads, workload)
        if node is not None:
            instances[workload.service].append((workload, node))
    return instances


def _endpoint_node(
    state: FabricState, ready_workloads: frozenset[str] | None, workload: Workload
) -> ComputeNode | None:
    """The node ``workload`` serves from as an endpoint; None: it is none."""
    node = serving_node(state, workload)
    if node is None:
        return None  # unplaced, or its node is down: no traffic to it
    if workload.id in state.unhealthy:
        return None  # its app or sidecar died (the node agent said so): withdrawn until re-placed
    if ready_workloads is not None and workload.id not in ready_workloads:
        return None  # its sidecar does not serve yet
    return node


# -- the builder ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Part:
    """Resources by type, with the digest of each type (shared between nodes that call the same services)."""

    resources: dict[str, dict[str, Resource]]
    digests: dict[str, str]
    wildcard_excluded: frozenset[str]
    problems: tuple[str, ...]
    calls: tuple[tuple[ServiceName, Levels], ...] = ()
    """What it was built for: each called service and its levels from the callers' switch (by name)."""
    key: tuple[tuple[ServiceName, ...], tuple[int, ...]] = ((), ())
    """The called services and the ids of their levels: what parts are shared by."""
    endpoint_lines: tuple[str, ...] = ()
    """``digest_of``'s line of each endpoints resource, in the order of ``calls`` (which is the lines'
    sorted order: names sorted, and a cluster name is the service's with a prefix): a part rebuilt for
    one service replaces one line instead of formatting and sorting all of them."""
    views: dict[str, Resources] = field(default_factory=dict)
    """A read-only view of each type's dict: a part rebuilt from its last one shares the dicts that did
    not change and their views, which the cache recognises as checked (``SnapshotCache``)."""
    as_snapshot: tuple[Mapping[str, Resources], Mapping[str, str]] | None = None
    """Resources and versions of a node with nothing of its own: built once, shared by all such nodes
    (so the cache can also check their consistency once)."""
    listeners: _Listeners | None = None
    """Where its outbound listeners came from (``SnapshotBuilder._own_outbound`` builds them again on a
    workload's address)."""


@dataclass(frozen=True, slots=True)
class _Listeners:
    """The outbound listeners and routes of one set of called services: they name services and ports
    only, so they are the same whatever the caller's priority levels."""

    listeners: dict[str, Resource]
    routes: dict[str, Resource]
    excluded: frozenset[str]
    problems: tuple[str, ...]
    digests: tuple[str, str]
    """Of the listeners and of the routes."""
    views: tuple[Resources, Resources]
    bound: tuple[tuple[str, Callable[[str], Resource]], ...] = ()
    """Each outbound listener's name and how to build it on another address: a workload's sidecar gets
    them on its own (``workload_outbound_host``), a host's client sidecar keeps ``outbound_host``."""


GroupKey = tuple[int, str, str, str]
"""A locality group of a service's endpoints: (priority, region, zone, site)."""


@dataclass(slots=True)
class _EndpointsView:
    """A service's endpoints in one priority order, kept as the encoded field of each locality group so
    that an instance coming or going re-encodes its own group only (``SnapshotBuilder._endpoints_for``).
    The groups are three parallel lists in message order (keys sorted): a changed group is found by
    bisection and its bytes and hash replaced in place, and the message is one join of ``fields``."""

    levels: Levels
    priority_of: dict[SwitchId, int]
    order: list[GroupKey]
    """The group keys, sorted: the order of the groups in the message."""
    fields: list[bytes]
    digests: list[bytes]
    seen: int
    """How far into its service's log of changed switches this view is."""
    resource: Resource

    def put(self, key: GroupKey, group: EncodedGroup) -> None:
        at = bisect_left(self.order, key)
        if at < len(self.order) and self.order[at] == key:
            self.fields[at], self.digests[at] = group
        else:
            self.order.insert(at, key)
            self.fields.insert(at, group[0])
            self.digests.insert(at, group[1])

    def drop(self, key: GroupKey) -> None:
        at = bisect_left(self.order, key)
        if at < len(self.order) and self.order[at] == key:
            del self.order[at], self.fields[at], self.digests[at]

    def copy(self, levels: Levels, priority_of: dict[SwitchId, int]) -> _EndpointsView:
        """The same groups, for other levels (``SnapshotBuilder._rebased`` then re-encodes what moved)."""
        return _EndpointsView(
            levels, priority_of, list(self.order), list(self.fields), list(self.digests), self.seen, self.resource
        )


_Merged = tuple[Resources, tuple[Resource, ...], Resources, str]
"""A node's resources of one type: (its part's view, its own resources, the merged view, its digest)."""

CallerGroup = tuple[SwitchId | None, tuple[ServiceName, ...]]
"""(the caller's switch, the services it calls): callers in one group get the same outbound part."""


class SnapshotBuilder:
    """Builds snapshots from one model, remembering what it built so that ``meshctl.mesh_builder`` can
    rebuild only what a change touches (``forget_service``, ``forget_workload``, ``node_snapshot``).

    What it remembers, and what each depends on: a service's cluster (its instances' identities), its
    endpoints per priority order (its instances), the outbound part of each caller group (the clusters
    and endpoints of what the group calls, and the listeners of those names), each workload's inbound
    resources (the workload, its node, its service's RBAC and callers)."""

    def __init__(
        self,
        state: FabricState,
        config: MeshConfig,
        ready_workloads: frozenset[str] | None,
        paths: ServicePaths,
        encoder: LoadAssignmentEncoder | None = None,
    ) -> None:
        self.state = state
        self.config = config
        self.ready = ready_workloads
        self.paths = paths
        self.services = state.services
        self.encoder = encoder if encoder is not None else LoadAssignmentEncoder()
        self.workloads_of: dict[ServiceName, dict[str, Workload]] = defaultdict(dict)
        self.instances: dict[ServiceName, dict[str, tuple[Workload, ComputeNode]]] = defaultdict(dict)
        """Per service, its endpoints (``endpoint_node``) by workload id; ``at_switch`` by switch as well."""
        self.at_switch: dict[ServiceName, dict[SwitchId, dict[str, tuple[Workload, ComputeNode]]]] = defaultdict(dict)
        self._switch_endpoints: dict[
            tuple[ServiceName, SwitchId], dict[tuple[str, str, str], tuple[Endpoint, ...]]
        ] = {}
        self._views: dict[tuple[ServiceName, int], _EndpointsView] = {}
        self._changed_switches: dict[ServiceName, list[SwitchId]] = defaultdict(list)
        """Per service, the switches whose endpoints changed, in order (views catch up from their ``seen``)."""
        self._log_start: dict[ServiceName, int] = defaultdict(int)
        """Per service, the position of the first entry still in its log (older views rebuild in full)."""
        self._where_switches: dict[tuple[ServiceName, tuple[str, str, str]], set[SwitchId]] = defaultdict(set)
        """The switches each locality of each service has had endpoints behind; ``_switch_wheres`` the reverse."""
        self._switch_wheres: dict[tuple[ServiceName, SwitchId], set[tuple[str, str, str]]] = defaultdict(set)
        self._entries: dict[
            ServiceName, tuple[int, list[tuple[SwitchId, tuple[str, str, str], tuple[Endpoint, ...]]]]
        ] = {}
        """Per service, every (switch, locality, endpoints) of it, with the count of its changes logged when made."""
        self._identity_secrets: dict[str, tuple[TlsIdentity, Resource]] = {}
        self._merged_views: dict[str, dict[str, _Merged]] = defaultdict(dict)
        """Per node and type, what ``_merged`` last made."""
        self._bundle_secret: tuple[str, Resource] | None = None
        """The trust bundle's text and its secret."""
        self._group_memo: dict[tuple[GroupKey, tuple[int, ...]], tuple[list[tuple[Endpoint, ...]], EncodedGroup]] = {}
        self._retired: dict[tuple[ServiceName, int], _EndpointsView] = {}
        """Views of levels replaced in this update, by (service, id of the levels)."""
        self._predecessors: dict[tuple[ServiceName, int], Levels] = {}
        """(service, id of new levels) -> the levels the same caller had before (``rebase``)."""
        self._off_prefix: dict[ServiceName, set[str]] = defaultdict(set)
        """Per service, its workloads whose SPIFFE id is not under the service's prefix (``_identities_of``)."""
        for workload in state.workloads.values():
            self.put_workload(workload)
            node = self.endpoint_node(workload)
            if node is not None:
                self.add_instance(workload, node)
        self.entry_services = _entry_services(self.services)
        self._identities: dict[ServiceName, frozenset[str]] = {}
        self.callers = self._callers()
        self._clusters: dict[ServiceName, Resource] = {}
        # Levels are keyed by identity (``id``; each entry keeps its levels alive): hashing a levels
        # tuple costs a pass over every instance switch, and equal levels from one path computation are
        # the same object anyway.
        self._outbound: dict[tuple[tuple[ServiceName, ...], tuple[int, ...]], _Part] = {}
        self._outbound_by_caller: dict[CallerGroup, _Part] = {}
        self._positions: dict[tuple[ServiceName, ...], dict[ServiceName, int]] = {}
        """Per tuple of called services, each one's position in it (and in its parts' ``calls``)."""
        self._stale: dict[CallerGroup, tuple[_Part, set[ServiceName]]] = {}
        """Parts a change made stale, with the services it changed: the next part of the group starts
        from the stale one and rebuilds only those services' resources."""
        self._listeners: dict[tuple[ServiceName, ...], _Listeners] = {}
        self._own_outbound_built: dict[tuple[tuple[ServiceName, ...], str], tuple[_Listeners, list[Resource]]] = {}
        self._rbac: dict[ServiceName, ec.InboundRbac | None] = {}
        self._inbound_built: dict[str, tuple[dict[str, list[Resource]], tuple[str, ...]]] = {}
        self.group_of: dict[str, CallerGroup] = {}
        """Node id -> its caller group; ``members`` the reverse, ``groups_calling`` per called service."""
        self.members: dict[CallerGroup, set[str]] = defaultdict(set)
        self.groups_calling: dict[ServiceName, set[CallerGroup]] = defaultdict(set)

    def build(self) -> dict[str, MeshSnapshot]:
        snapshots: dict[str, MeshSnapshot] = {}
        for host_id in sorted(self.state.hosts):
            snapshots[host_id] = self._host_snapshot(host_id)
        for workload in sorted(self.state.workloads.values(), key=lambda w: w.id):
            snapshot = self._workload_snapshot(workload)
            if snapshot is not None:
                snapshots[workload.id] = snapshot
        return snapshots

    def node_snapshot(self, node_id: str) -> MeshSnapshot | None:
        """The snapshot of one node (a placed workload's sidecar wins over a host of the same id); None:
        no such sidecar in the model."""
        workload = self.state.workloads.get(WorkloadId(node_id))
        if workload is not None:
            snapshot = self._workload_snapshot(workload)
            if snapshot is not None:
                return snapshot
        if HostId(node_id) in self.state.hosts:
            return self._host_snapshot(HostId(node_id))
        self._leave_group(node_id)
        self._inbound_built.pop(node_id, None)
        self._identity_secrets.pop(node_id, None)
        self._merged_views.pop(node_id, None)
        return None

    def sidecar_nodes(self) -> set[str]:
        """Every node with a snapshot from the last build (hosts and placed workloads)."""
        return set(self.group_of)

    def _host_snapshot(self, host_id: HostId) -> MeshSnapshot:
        group = (_host_switch(self.state, host_id), self.host_calls(host_id))
        return self._snapshot(host_id, self._outbound_part(host_id, group), {}, ())

    def _workload_snapshot(self, workload: Workload) -> MeshSnapshot | None:
        node = self.state.nodes.get(workload.node) if workload.node is not None else None
        if node is None:
            return None  # not placed: no sidecar runs yet
        service = self.services[workload.service]
        part = self._outbound_part(workload.id, (node.attachment.switch, service.calls))
        extra, problems = self._inbound_of(workload, node)
        own_outbound = self._own_outbound(workload, part)
        if own_outbound:  # (by name, they replace the part's listeners on ``outbound_host``)
            extra = {**extra, LISTENER: [*extra.get(LISTENER, ()), *own_outbound]}
        collision = (f"workload id {workload.id!r} is also a host id: the workload's sidecar wins",)
        return self._snapshot(
            workload.id, part, extra, problems + (collision if HostId(workload.id) in self.state.hosts else ())
        )

    # -- forgetting what a change touches (``meshctl.mesh_builder``) --------------------------------

    def endpoint_node(self, workload: Workload) -> ComputeNode | None:
        """The node ``workload`` serves from as an endpoint; None: not an endpoint."""
        return _endpoint_node(self.state, self.ready, workload)

    def add_instance(self, workload: Workload, node: ComputeNode) -> None:
        """``workload`` is an endpoint of its service, served from ``node`` (not one already: the model
        builder removes an instance before it adds it again)."""
        switch = node.attachment.switch
        self.instances[workload.service][workload.id] = (workload, node)
        self.at_switch[workload.service].setdefault(switch, {})[workload.id] = (workload, node)
        self._endpoint_changed(workload, node, added=True)
        self._log_switch(workload.service, switch)

    def remove_instance(self, workload: Workload) -> SwitchId | None:
        """``workload`` is no longer an endpoint; returns the switch it was one behind (None: it was not one)."""
        instance = self.instances.get(workload.service, {}).pop(workload.id, None)
        if instance is None:
            return None
        switch = instance[1].attachment.switch
        at_switch = self.at_switch[workload.service]
        at_switch[switch].pop(workload.id, None)
        if not at_switch[switch]:
            del at_switch[switch]
        self._endpoint_changed(*instance, added=False)
        self._log_switch(workload.service, switch)
        return switch

    def _endpoint_changed(self, workload: Workload, node: ComputeNode, *, added: bool) -> None:
        """The endpoints behind the instance's switch, if known, with its endpoint added or taken out: a
        new tuple for its locality (views find groups by the tuples' identity), the rest shared. Rebuilding
        them walked every instance behind the switch: hundreds, behind a cloud site's, per placement."""
        key = (workload.service, node.attachment.switch)
        known = self._switch_endpoints.get(key)
        if known is None:
            return
        where, endpoint = self._endpoint_of(workload, node)
        grouped = dict(known)
        endpoints = grouped.get(where, ())
        at = bisect_left(endpoints, endpoint)
        if added:
            grouped[where] = (*endpoints[:at], endpoint, *endpoints[at:])
            self._where_switches[(workload.service, where)].add(node.attachment.switch)
            self._switch_wheres[key].add(where)
        elif at < len(endpoints) and endpoints[at] == endpoint:
            rest = endpoints[:at] + endpoints[at + 1 :]
            if rest:
                grouped[where] = rest
            else:
                del grouped[where]
        else:  # (not there: cannot happen while the instances and this map agree; rebuild it to be sure)
            self._switch_endpoints.pop(key, None)
            return
        self._switch_endpoints[key] = grouped

    def _log_switch(self, name: ServiceName, switch: SwitchId) -> None:
        log = self._changed_switches[name]
        log.append(switch)
        if len(log) > _SWITCH_LOG_LIMIT:  # views that far behind rebuild in full
            self._log_start[name] += len(log)
            log.clear()

    def forget_service(self, name: ServiceName, cluster_too: bool, levels_too: bool) -> set[str]:
        """Drop what depends on the service's instances (every part with its endpoints: its endpoints
        views catch up when next asked for); with ``cluster_too`` its cluster as well, with
        ``levels_too`` its views (its levels are new objects). Returns the nodes whose outbound part
        that was."""
        if cluster_too:
            self._clusters.pop(name, None)
        if levels_too:
            for view_key in [view_key for view_key in self._views if view_key[0] == name]:
                self._retired[view_key] = self._views.pop(view_key)
        for part_key in [part_key for part_key in self._outbound if name in part_key[0]]:
            del self._outbound[part_key]
        nodes: set[str] = set()
        for group in self.groups_calling.get(name, ()):
            self._mark_stale(group, name)
            nodes |= self.members.get(group, set())
        return nodes

    def forget_levels(self, name: ServiceName, callers: Iterable[SwitchId | None], gone: Iterable[Levels]) -> set[str]:
        """The topology moved the levels of ``name`` for the callers behind these switches (its instances did
        not change): their groups' parts are rebuilt from their last ones, the views of the ``gone`` levels
        (no caller has them any more) retire, with every part built on them. Views and parts of levels
        still in use stay: the other callers of ``name`` keep their snapshots. Returns the groups' nodes."""
        gone_ids: set[int] = set()
        for levels in gone:
            gone_ids.add(id(levels))
            view = self._views.pop((name, id(levels)), None)
            if view is not None:
                self._retired[(name, id(levels))] = view
        if gone_ids:
            for part_key in [
                part_key
                for part_key in self._outbound
                if name in part_key[0] and part_key[1][self._positions_of(part_key[0])[name]] in gone_ids
            ]:
                del self._outbound[part_key]
        at = set(callers)
        nodes: set[str] = set()
        for group in self.groups_calling.get(name, ()):
            if group[0] in at:
                self._mark_stale(group, name)
                nodes |= self.members.get(group, set())
        return nodes

    def _mark_stale(self, group: CallerGroup, name: ServiceName) -> None:
        """The group's next part starts from its current one and rebuilds ``name``'s resources in it."""
        part = self._outbound_by_caller.pop(group, None)
        if part is not None:
            self._stale[group] = (part, {name})
        elif group in self._stale:
            self._stale[group][1].add(name)

    def forget_workload(self, workload_id: str) -> None:
        """Its inbound resources are built again on its next snapshot."""
        self._inbound_built.pop(workload_id, None)

    def identities_changed(self, name: ServiceName) -> bool:
        """Recompute who may speak for ``name`` (``_identities_of``); True if that changed."""
        before = self._identities.pop(name, None)
        return self._identities_of(name) != before

    def recompute_callers(self, callee: ServiceName) -> bool:
        """Recompute the identities that call ``callee``; True if they changed."""
        before = self.callers.get(callee, set())
        after: set[str] = set()
        for service in self.services.values():
            if callee in service.calls:
                after |= self._identities_of(service.name)
        for host in self.state.hosts:
            if callee in self.host_calls(host):
                after.add(self.config.host_spiffe_id(host))
        self.callers[callee] = after
        return after != before

    def _join_group(self, node_id: str, group: CallerGroup) -> None:
        before = self.group_of.get(node_id)
        if before == group:
            return
        if before is not None:
            self._leave_group(node_id)
        self.group_of[node_id] = group
        self.members[group].add(node_id)
        for called in group[1]:
            self.groups_calling[called].add(group)

    def _leave_group(self, node_id: str) -> None:
        group = self.group_of.pop(node_id, None)
        if group is None:
            return
        members = self.members[group]
        members.discard(node_id)
        if not members:
            del self.members[group]
            self._outbound_by_caller.pop(group, None)
            self._stale.pop(group, None)
            for called in group[1]:
                self.groups_calling[called].discard(group)

    # -- who calls whom -----------------------------------------------------------------------------

    def host_calls(self, host: HostId) -> tuple[ServiceName, ...]:
        return _host_calls(self.config, self.entry_services, host)

    def _identities_of(self, service: ServiceName) -> frozenset[str]:
        """Who may speak for ``service``: its instances' SPIFFE ids. When they follow the PKI's naming
        (``spiffe://<td>/svc/<service>/w/<workload>``), the prefix ``spiffe://<td>/svc/<service>/``
        instead, so scaling or moving the service changes no listener or cluster anywhere."""
        known = self._identities.get(service)
        if known is not None:
            return known
        identities: frozenset[str]
        if self._off_prefix.get(service):
            identities = frozenset(w.spiffe_id for w in self.workloads_of.get(service, {}).values())
        else:  # (without a pass over its instances: thousands of them, on every placement)
            identities = frozenset({self._spiffe_prefix(service)})
        self._identities[service] = identities
        return identities

    def _spiffe_prefix(self, service: ServiceName) -> str:
        return f"spiffe://{self.config.trust_domain}/svc/{service}/"

    def put_workload(self, workload: Workload) -> None:
        """``workload`` is in the model as it is now."""
        self.workloads_of[workload.service][workload.id] = workload
        if workload.spiffe_id.startswith(self._spiffe_prefix(workload.service)):
            self._off_prefix[workload.service].discard(workload.id)
        else:
            self._off_prefix[workload.service].add(workload.id)

    def drop_workload(self, workload: Workload) -> None:
        """``workload`` (as it was) is no longer in the model."""
        self.workloads_of[workload.service].pop(workload.id, None)
        self._off_prefix[workload.service].discard(workload.id)

    def _callers(self) -> dict[ServiceName, set[str]]:
        callers: dict[ServiceName, set[str]] = defaultdict(set)
        for service in self.services.values():
            for callee in service.calls:
                callers[callee].update(self._identities_of(service.name))
        for host in self.state.hosts:
            for callee in self.host_calls(host):
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
        fast_open = tls is not None and self.config.tcp_fast_open
        cluster = make_resource(
            cluster_name,
            ec.eds_cluster(cluster_name, self.config.connect_timeout_ms, http, tls, fast_open=fast_open),
            refs,
        )
        self._clusters[name] = cluster
        return cluster

    def _levels(self, name: ServiceName, caller_switch: SwitchId | None) -> Levels:
        known = self.paths.levels.get((caller_switch, name))
        if known is not None:
            return known
        return self.paths.of(caller_switch, name, self.at_switch.get(name, {}))

    def _endpoints_for(self, name: ServiceName, levels: Levels) -> Resource:
        """The service's endpoints in one priority order: the same object for every caller with that order.
        A view built before re-encodes only the groups of the switches whose endpoints changed since, and
        a view of new levels starts from the caller's last view (``rebase``) when few switches moved."""
        log = self._changed_switches[name]
        start = self._log_start[name]
        view = self._views.get((name, id(levels)))
        if view is not None and view.seen == start + len(log):
            return view.resource
        if view is None:
            before = self._predecessors.get((name, id(levels)))
            last = None  # the caller's last view: retired, or still another caller's
            if before is not None:
                last = self._retired.get((name, id(before))) or self._views.get((name, id(before)))
            view = self._rebased(name, last, levels) if last is not None else None
        if view is None or view.seen < start:
            view = self._new_view(name, levels)
        else:
            pending = log[view.seen - start :]
            self._regroup(name, view, {key for switch in set(pending) for key in self._keys_of(name, view, switch)})
        view.seen = start + len(log)
        self._views[(name, id(levels))] = view
        return view.resource

    def rebase(self, name: ServiceName, before: Levels, after: Levels) -> None:
        """A caller's levels of ``name`` went from ``before`` to ``after``: its next view of them may start
        from its view of ``before`` (until ``end_update``)."""
        self._predecessors[(name, id(after))] = before

    def end_update(self) -> None:
        """Views of levels no caller has any more are gone, and so are the groups encoded for this update
        (the views hold theirs): a locality that grows by one endpoint per placement must not leave a
        copy of itself per placement behind."""
        self._retired.clear()
        self._predecessors.clear()
        self._group_memo.clear()

    def _new_view(self, name: ServiceName, levels: Levels) -> _EndpointsView:
        priority_of = {switch: priority for priority, level in enumerate(levels) for switch in level}
        parts: dict[GroupKey, list[tuple[Endpoint, ...]]] = defaultdict(list)
        beyond = len(levels)  # (levels cover every instance)
        for switch, (region, zone, site), endpoints in self._endpoint_entries(name):
            parts[(priority_of.get(switch, beyond), region, zone, site)].append(endpoints)
        order = sorted(parts)
        encoded = [self._group_field(key, parts[key]) for key in order]
        fields = [field for field, _ in encoded]
        digests = [digest for _, digest in encoded]
        view = _EndpointsView(levels, priority_of, order, fields, digests, self._log_start[name], _NO_RESOURCE)
        view.resource = self._view_resource(name, view)
        return view

    def _endpoint_entries(self, name: ServiceName) -> list[tuple[SwitchId, tuple[str, str, str], tuple[Endpoint, ...]]]:
        """Every (switch, locality, endpoints) of the service, as one flat list kept until its endpoints
        change (every change is logged, ``_log_switch``): a latency measurement makes thousands of new
        views of unchanged instances, and walking the switches' maps was a third of each."""
        logged = self._log_start[name] + len(self._changed_switches[name])  # (never decreases)
        known = self._entries.get(name)
        if known is not None and known[0] == logged:
            return known[1]
        entries = [
            (switch, where, endpoints)
            for switch in self.at_switch.get(name, {})
            for where, endpoints in self._endpoints_at(name, switch).items()
        ]
        self._entries[name] = (logged, entries)
        return entries

    def _rebased(self, name: ServiceName, old: _EndpointsView, levels: Levels) -> _EndpointsView | None:
        """``old`` moved to ``levels``: the groups of the switches whose priority changed re-encoded (None:
        too many moved, a new view is cheaper)."""
        # Level by level: levels that are equal keep their switches' priorities, and a change is
        # usually one switch joining or leaving one level (or a level of its own at the end).
        priority_of = dict(old.priority_of)
        moved: set[SwitchId] = set()
        for priority, (before, after) in enumerate(zip_longest(old.levels, levels, fillvalue=())):
            if before == after:
                continue
            was, now = set(before), set(after)
            for switch in was - now:
                moved.add(switch)
                if priority_of.get(switch) == priority:  # (not already given its new level)
                    del priority_of[switch]
            for switch in now - was:
                moved.add(switch)
                priority_of[switch] = priority
            if len(moved) > _REBASE_LIMIT:
                return None
        keys = {key for switch in moved for key in self._keys_of(name, old, switch)}
        view = old.copy(levels, priority_of)
        keys |= {key for switch in moved for key in self._keys_of(name, view, switch)}
        self._regroup(name, view, keys)
        return view

    def _keys_of(self, name: ServiceName, view: _EndpointsView, switch: SwitchId) -> list[GroupKey]:
        """The groups of ``view`` that ``switch``'s endpoints belong to (or did)."""
        self._endpoints_at(name, switch)  # (registers the localities behind a switch new to the service)
        priority = view.priority_of.get(switch, len(view.levels))
        return [(priority, *where) for where in self._switch_wheres[(name, switch)]]

    def _regroup(self, name: ServiceName, view: _EndpointsView, keys: Iterable[GroupKey]) -> None:
        """Re-encode these groups of ``view`` from the endpoints of every switch at their priority."""
        at_switch = self.at_switch.get(name, {})
        for key in keys:
            priority, *rest = key
            where = (rest[0], rest[1], rest[2])
            parts = [
                endpoints
                for other in self._where_switches[(name, where)]
                if other in at_switch
                and view.priority_of.get(other, len(view.levels)) == priority
                and (endpoints := self._endpoints_at(name, other).get(where)) is not None
            ]
            if parts:
                view.put(key, self._group_field(key, parts))
            else:
                view.drop(key)
        view.resource = self._view_resource(name, view)

    def _group_field(self, key: GroupKey, parts: list[tuple[Endpoint, ...]]) -> EncodedGroup:
        # Keyed by the identity of the switches' endpoint tuples (``_endpoints_at``: the same objects
        # until a switch's endpoints change): every view with this group at this priority finds it
        # without hashing the endpoints, which a locality with thousands of them would cost each time.
        memo_key = (key, tuple(map(id, parts)))
        known = self._group_memo.get(memo_key)
        if known is not None:
            return known[1]
        priority, region, zone, sub_zone = key
        endpoints = parts[0] if len(parts) == 1 else tuple(sorted(chain(*parts)))
        encoded = self.encoder.group_field(ec.LocalityEndpoints(region, zone, sub_zone, endpoints, priority))
        self._group_memo[memo_key] = (parts, encoded)  # (parts kept alive: their ids stay theirs)
        return encoded

    def _view_resource(self, name: ServiceName, view: _EndpointsView) -> Resource:
        cluster_name = service_cluster_name(name)
        data = join_groups(cluster_name, view.fields)
        return encoded_resource(cluster_name, ENDPOINTS, data, assignment_digest(cluster_name, view.digests))

    def _endpoints_at(self, name: ServiceName, switch: SwitchId) -> dict[tuple[str, str, str], tuple[Endpoint, ...]]:
        """The service's endpoints behind one switch, by locality (region, zone, site), each sorted."""
        known = self._switch_endpoints.get((name, switch))
        if known is not None:
            return known
        by_where: dict[tuple[str, str, str], list[Endpoint]] = defaultdict(list)
        for workload, node in self.at_switch.get(name, {}).get(switch, {}).values():
            where, endpoint = self._endpoint_of(workload, node)
            by_where[where].append(endpoint)
        grouped = {where: tuple(sorted(endpoints)) for where, endpoints in by_where.items()}
        for where in grouped:
            self._where_switches[(name, where)].add(switch)
            self._switch_wheres[(name, switch)].add(where)
        self._switch_endpoints[(name, switch)] = grouped
        return grouped

    def _endpoint_of(self, workload: Workload, node: ComputeNode) -> tuple[tuple[str, str, str], Endpoint]:
        """An instance's locality (region, zone, site) and endpoint."""
        site = self.state.sites.get(node.site)
        where: tuple[str, str, str] = (site.region, site.zone, site.id) if site is not None else ("", "", node.site)
        return where, (node.ip, self._port_of(workload), 1)

    def _outbound_part(self, node_id: str, group: CallerGroup) -> _Part:
        # Callers behind one switch calling the same services share their part: found in one lookup
        # (1,000 sidecars on a few switches cost a few level computations, not one per sidecar).
        self._join_group(node_id, group)
        seen = self._outbound_by_caller.get(group)
        if seen is not None:
            return seen
        caller_switch, called = group
        stale = self._stale.pop(group, None)
        if stale is not None:  # only the services a change touched can have new levels or resources
            template, changed = stale
            names = template.key[0]
            calls, level_ids = list(template.calls), list(template.key[1])
            for name in changed:
                at = self._positions_of(names).get(name)
                if at is not None:
                    levels = self._levels(name, caller_switch)
                    calls[at], level_ids[at] = (name, levels), id(levels)
            key = (names, tuple(level_ids))
        else:
            names = tuple(sorted({name for name in called if name in self.services}))
            calls = [(name, self._levels(name, caller_switch)) for name in names]
            key = (names, tuple(id(levels) for _, levels in calls))
        part = self._outbound.get(key)
        if part is None:
            part = self._build_outbound(key, tuple(calls), stale)
            self._outbound[key] = part
        self._outbound_by_caller[group] = part
        return part

    def _positions_of(self, names: tuple[ServiceName, ...]) -> dict[ServiceName, int]:
        known = self._positions.get(names)
        if known is None:
            known = self._positions[names] = {name: at for at, name in enumerate(names)}
        return known

    def _build_outbound(
        self,
        key: tuple[tuple[ServiceName, ...], tuple[int, ...]],
        calls: tuple[tuple[ServiceName, Levels], ...],
        stale: tuple[_Part, set[ServiceName]] | None = None,
    ) -> _Part:
        """The part of ``calls``; from ``stale`` (the group's last part, and the services whose resources
        changed since) only the changed services' resources are looked up again."""
        names = key[0]
        listeners = self._listeners_of(names)
        if stale is not None:
            template, changed = stale
            endpoints = dict(template.resources[ENDPOINTS])
            lines = list(template.endpoint_lines)
            clusters, cluster_digest = template.resources[CLUSTER], template.digests[CLUSTER]
            clusters_view = template.views[CLUSTER]
            same_clusters = True
            positions = self._positions_of(names)
            for name in changed:
                at = positions.get(name)
                if at is None:
                    continue
                resource = self._endpoints_for(name, calls[at][1])
                endpoints[resource.name] = resource
                lines[at] = f"{resource.name}\0{resource.digest}\n"
                same_clusters &= clusters.get(resource.name) is self._cluster(name)
        else:
            built = [self._endpoints_for(name, levels) for name, levels in calls]
            endpoints = {e.name: e for e in built}
            lines = [f"{e.name}\0{e.digest}\n" for e in built]
            same_clusters = False
        if not same_clusters:
            clusters = {c.name: c for c in (self._cluster(name) for name in names)}
            cluster_digest = digest_of(clusters.values())
            clusters_view = MappingProxyType(clusters)
        by_type: dict[str, dict[str, Resource]] = {
            SECRET: _NO_SECRETS,  # (one shared empty dict: never written to)
            CLUSTER: clusters,
            ENDPOINTS: endpoints,
            LISTENER: listeners.listeners,
            ROUTES: listeners.routes,
        }
        digests = {
            SECRET: _EMPTY_DIGEST,
            CLUSTER: cluster_digest,
            ENDPOINTS: _digest_of_lines(lines),
            LISTENER: listeners.digests[0],
            ROUTES: listeners.digests[1],
        }
        views = {
            SECRET: _NO_SECRETS_VIEW,
            CLUSTER: clusters_view,
            ENDPOINTS: MappingProxyType(endpoints),
            LISTENER: listeners.views[0],
            ROUTES: listeners.views[1],
        }
        excluded, problems = listeners.excluded, listeners.problems
        return _Part(
            by_type,
            digests,
            excluded,
            problems,
            calls,
            key=key,
            endpoint_lines=tuple(lines),
            views=views,
            listeners=listeners,
        )

    def _listeners_of(self, names: tuple[ServiceName, ...]) -> _Listeners:
        known = self._listeners.get(names)
        if known is not None:
            return known
        listeners: dict[str, Resource] = {}
        routes: dict[str, Resource] = {}
        excluded: set[str] = set()
        problems: list[str] = []
        by_port: dict[int, list[ServiceName]] = defaultdict(list)
        for name in names:
            by_port[self.services[name].port].append(name)
        bound: list[tuple[str, Callable[[str], Resource]]] = []
        for port, on_port in sorted(by_port.items()):
            listener_name = f"out/{port}"
            http = [n for n in on_port if not self._tcp(n)]
            tcp = [n for n in on_port if self._tcp(n)]
            if tcp and len(on_port) > 1:
                dropped = tcp if http else tcp[1:]
                problems.append(
                    f"port {port}: TCP service(s) {', '.join(dropped)} cannot share the port with "
                    f"{', '.join(n for n in on_port if n not in dropped)}; not reachable from here"
                )
            build: Callable[[str], Resource]
            if not http:
                build = partial(_tcp_outbound, listener_name, port, service_cluster_name(tcp[0]))
                bound.append((listener_name, build))
                listeners[listener_name] = build(self.config.outbound_host)
                continue
            lone = len(http) == 1
            hosts = [ec.VirtualHost(n, (n, f"{n}:{port}", *(("*",) if lone else ())), f"svc/{n}") for n in sorted(http)]
            route = ec.route_configuration(listener_name, hosts, self.config.request_timeout_ms, self.config.retries)
            routes[listener_name] = make_resource(listener_name, route, [(CLUSTER, h.cluster) for h in hosts])
            build = partial(_http_outbound, listener_name, port)
            bound.append((listener_name, build))
            listeners[listener_name] = build(self.config.outbound_host)
            for name in http:
                listeners[name] = make_resource(name, ec.api_listener(name, listener_name), [(ROUTES, listener_name)])
                excluded.add(name)
        digests = (digest_of(listeners.values()), digest_of(routes.values()))
        views = (MappingProxyType(listeners), MappingProxyType(routes))
        built = _Listeners(listeners, routes, frozenset(excluded), tuple(problems), digests, views, tuple(bound))
        self._listeners[names] = built
        return built

    def _own_outbound(self, workload: Workload, part: _Part) -> list[Resource]:
        """The outbound listeners of ``part`` on the workload's own address. Workloads with the same inbound
        port (instances of one service on different nodes, mostly) and the same calls share them."""
        listeners = part.listeners
        if listeners is None or not listeners.bound:
            return []
        host = workload_outbound_host(self._port_of(workload))
        key = (part.key[0], host)
        known = self._own_outbound_built.get(key)
        if known is not None and known[0] is listeners:
            return known[1]
        built = [build(host) for _, build in listeners.bound]
        self._own_outbound_built[key] = (listeners, built)
        return built

    # -- per-node resources -------------------------------------------------------------------------

    def _inbound_of(self, workload: Workload, node: ComputeNode) -> tuple[dict[str, list[Resource]], tuple[str, ...]]:
        known = self._inbound_built.get(workload.id)
        if known is None:
            known = self._inbound_built[workload.id] = self._inbound(workload, node)
        return known

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
        fast_open = tls is not None and self.config.tcp_fast_open
        if http:
            route = ec.inbound_route_configuration(name, local, self.config.request_timeout_ms)
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
                fast_open=fast_open,
            )
        else:
            message = ec.tcp_listener(
                name,
                node.ip,
                port,
                local,
                inbound=True,
                tls=tls,
                rbac=rbac,
                stat_prefix=stat_prefix,
                fast_open=fast_open,
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
            secrets.append(self._identity_secret(node_id, identity))
        else:
            problems = ("mTLS is on but no certificate is issued for this node yet: its TLS listeners wait",)
        bundle = self.config.trust_bundle_pem
        if bundle:
            # The same for every node: encoded once per bundle (the PKI's CRLs make a new one per revocation).
            if self._bundle_secret is None or self._bundle_secret[0] != bundle:
                self._bundle_secret = (bundle, make_resource(ec.TRUST_BUNDLE_SECRET, ec.trust_bundle_secret(bundle)))
            secrets.append(self._bundle_secret[1])
        return secrets, problems

    def _identity_secret(self, node_id: str, identity: TlsIdentity) -> Resource:
        """The node's certificate as a secret, encoded once per certificate (a node's snapshot is built
        again for changes elsewhere far more often than its certificate changes)."""
        known = self._identity_secrets.get(node_id)
        if known is not None and known[0] is identity:
            return known[1]
        secret = make_resource(
            ec.IDENTITY_SECRET, ec.identity_secret(identity.cert_chain_pem, identity.private_key_pem)
        )
        self._identity_secrets[node_id] = (identity, secret)
        return secret

    def _merged(self, node_id: str, type_url: str, shared: _Part, own: list[Resource]) -> tuple[Resources, str]:
        """The node's resources of one type (its part's and its own) and their digest: the same view as
        last time while both are the same objects, so the cache recognises it as checked (under mTLS
        every node has its own secrets, and a change elsewhere must not make each one new)."""
        known = self._merged_views[node_id].get(type_url)
        if known is not None:
            part_view, was_own, view, digest = known
            if part_view is shared.views[type_url] and len(was_own) == len(own) and all(map(is_, was_own, own)):
                return view, digest
        merged = {**shared.resources[type_url], **{r.name: r for r in own}}
        view, digest = MappingProxyType(merged), digest_of(merged.values())
        self._merged_views[node_id][type_url] = (shared.views[type_url], tuple(own), view, digest)
        return view, digest

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
                    MappingProxyType({t: shared.views[t] for t in PUSH_ORDER}),
                    MappingProxyType({t: version_string(generation, shared.digests[t]) for t in PUSH_ORDER}),
                )
            resources_view, versions_view = shared.as_snapshot
            return MeshSnapshot(node_id, generation, resources_view, versions_view, shared.wildcard_excluded, problems)
        resources: dict[str, Resources] = {}
        versions: dict[str, str] = {}
        for type_url in PUSH_ORDER:
            own = additions.get(type_url)
            if own:
                resources[type_url], digest = self._merged(node_id, type_url, shared, own)
                versions[type_url] = version_string(generation, digest)
            else:  # the shared dict itself: nodes that call the same services share one object
                resources[type_url] = shared.views[type_url]
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
    kept = previous.versions.get
    versions: dict[str, str] = {}
    renamed = False
    for type_url, version in snapshot.versions.items():
        before = kept(type_url)
        if before is not None and before != version and before.rpartition("-")[2] == version.rpartition("-")[2]:
            version, renamed = before, True
        versions[type_url] = version
    if not renamed:
        return snapshot
    return MeshSnapshot(
        snapshot.node_id,
        snapshot.generation,
        snapshot.resources,
        MappingProxyType(versions),
        snapshot.wildcard_excluded,
        snapshot.problems,
    )
