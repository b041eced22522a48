"""Constructors of the Envoy v3 messages meshctl serves. Pure: arguments in, protobuf messages out.

``snapshot`` decides *what* each sidecar gets; this module only knows *how* Envoy spells it. Every
dynamic reference points at the aggregated (ADS) stream, so one stream carries all five types in the
order the server chooses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, grpc_service_pb2, socket_option_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from meshctl.xds_types import WARM_UP_PATH

Message = Any  # xds-protos ships no type stubs: messages are opaque to mypy

IDENTITY_SECRET = "identity"
"""The sidecar's own certificate and key. One fixed name is safe because a node only ever sees its
own snapshot (Istio calls the same thing "default"), and it lets nodes share cluster resources."""

TRUST_BUNDLE_SECRET = "trust-bundle"

NO_CALLER_SAN = "spiffe://invalid/edgectl-no-caller-allowed"
"""An empty SAN list would accept *any* certificate of the trust domain: when nobody may call, the
validation context gets this one unmatchable id instead."""

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

IDEMPOTENT_METHODS = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")
"""Methods a caller's sidecar retries whatever went wrong on the way (RFC 9110 9.2.2: repeating them
has the effect of sending them once)."""

IDEMPOTENT_RETRY_ON = "connect-failure,refused-stream,reset,gateway-error"
"""Idempotent requests: also a reset (the instance died mid-request) and 502/503/504 (its sidecar could
not reach its app, or answered for it). Not every 5xx: a 500 is the app's own answer, and retrying it
only multiplies the load of a bug."""

NEVER_SENT_RETRY_ON = "connect-failure,refused-stream"
"""Every other method (POST, PATCH, ...): only failures that prove the request never reached an
application (no connection; an HTTP/2 REFUSED_STREAM), so nothing runs twice."""


@dataclass(frozen=True, slots=True)
class RetryRules:
    """How a caller's sidecar retries a request to a service (``route_configuration``)."""

    num_retries: int = 2
    per_try_timeout_ms: int = 1000
    """Idempotent requests only: an instance that stops answering costs one try, not the request."""


@dataclass(frozen=True, slots=True)
class LocalityEndpoints:
    """Endpoints of one locality (region/zone/sub_zone) at one priority, each ``(ip, port, weight)``.

    Priority 0 is used first; Envoy (and gRPC) move traffic to the next priority only as far as the
    hosts of the nearer ones are unhealthy or ejected (Envoy's default overprovisioning factor, 140%:
    a priority keeps all its traffic until fewer than ~72% of its hosts are available)."""

    region: str
    zone: str
    sub_zone: str
    endpoints: tuple[tuple[str, int, int], ...]
    priority: int = 0


@dataclass(frozen=True, slots=True)
class RbacGrant:
    """One allowed caller of an inbound listener: a SPIFFE id (or every id under ``principal`` when
    ``prefix``) and, for HTTP, the path prefixes and methods it may use (empty: any)."""

    name: str
    """The policy's name in the RBAC config (e.g. ``allow_from[0]``)."""
    principal: str
    prefix: bool
    paths: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InboundRbac:
    """Who may call an inbound listener (Envoy RBAC, action ALLOW: no grant, nobody), and where its
    denials are reported: an access log streamed over gRPC to ``access_log_cluster`` (the bootstrap's
    xDS cluster, so the denials reach the controller on the sidecar's own authorized channel)."""

    stat_prefix: str
    grants: tuple[RbacGrant, ...]
    access_log_cluster: str = ""
    """Empty: no access log."""


ACCESS_LOG_NAME = "edgectl-denials"
"""The ``log_name`` of the denial access logs (what the controller's AccessLogService receives)."""

DENIED_STATUS = 403

TCP_DENIED_EXPRESSION = "connection.termination_details.startsWith('rbac_access_denied')"
"""A connection the network RBAC filter closed (CEL, on Envoy's connection attributes)."""


@dataclass(frozen=True, slots=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    cluster: str


def pack(message: Message) -> Any:
    """``google.protobuf.Any`` with deterministic bytes, so equal content hashes equally."""
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def packed_bytes(type_url: str, data: bytes) -> Any:
    """``google.protobuf.Any`` around an already serialized message of type ``type_url``."""
    return any_pb2.Any(type_url=type_url, value=data)


def unpack(packed: Any) -> Message:
    """The message inside ``packed`` (one of the five xDS resource types)."""
    message_type = _RESOURCE_TYPES[packed.type_url.rpartition("/")[2]]
    message: Message = message_type.FromString(packed.value)
    return message


_RESOURCE_TYPES: dict[str, Any] = {
    kind.DESCRIPTOR.full_name: kind
    for kind in (
        secret_pb2.Secret,
        cluster_pb2.Cluster,
        endpoint_pb2.ClusterLoadAssignment,
        listener_pb2.Listener,
        route_pb2.RouteConfiguration,
    )
}


def ads_source() -> Message:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.ApiVersion.V3
    )


def _duration_ms(ms: int) -> Message:
    duration = duration_pb2.Duration()
    duration.FromMilliseconds(ms)
    return duration


def _socket_address(ip: str, port: int) -> Message:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def _http_upstream_options() -> dict[str, Any]:
    # Speak to the upstream whatever the caller spoke (HTTP/1.1 or h2c gRPC): services have no
    # protocol field in the model, and this makes both work through one listener.
    options = http_protocol_options_pb2.HttpProtocolOptions(
        use_downstream_protocol_config=http_protocol_options_pb2.HttpProtocolOptions.UseDownstreamHttpConfig()
    )
    return {HTTP_PROTOCOL_OPTIONS: pack(options)}


def _sds(name: str) -> Message:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads_source())


def _san_matchers(spiffe_ids: Sequence[str]) -> list[Message]:
    """URI SAN matchers: an id ending in "/" is a prefix (a SPIFFE id never ends in "/"), e.g.
    ``spiffe://td/svc/web/`` for every instance of web; anything else must match exactly."""
    ids = sorted(set(spiffe_ids)) or [NO_CALLER_SAN]
    return [
        common_pb2.SubjectAltNameMatcher(
            san_type=common_pb2.SubjectAltNameMatcher.URI,
            matcher=string_pb2.StringMatcher(prefix=spiffe_id)
            if spiffe_id.endswith("/")
            else string_pb2.StringMatcher(exact=spiffe_id),
        )
        for spiffe_id in ids
    ]


MESH_TLS = common_pb2.TlsParameters(
    tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_3,
    tls_maximum_protocol_version=common_pb2.TlsParameters.TLSv1_3,
)
"""Both ends of every mesh connection are our sidecars: TLS 1.3 only. Envoy's client side would stop
at TLS 1.2 otherwise, whose handshake takes two round trips, not one: each new connection to a moved
instance across an edge-cloud link waited one round trip more for its first request."""


def _mtls_context(peer_spiffe_ids: Sequence[str]) -> Message:
    """Our certificate from SDS; the peer must chain to the trust bundle and carry one of the ids."""
    return tls_pb2.CommonTlsContext(
        tls_params=MESH_TLS,
        tls_certificate_sds_secret_configs=[_sds(IDENTITY_SECRET)],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=common_pb2.CertificateValidationContext(
                match_typed_subject_alt_names=_san_matchers(peer_spiffe_ids)
            ),
            validation_context_sds_secret_config=_sds(TRUST_BUNDLE_SECRET),
        ),
    )


def _transport_socket(context: Message) -> Message:
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=pack(context))


def upstream_mtls(server_spiffe_ids: Sequence[str]) -> Message:
    return _transport_socket(tls_pb2.UpstreamTlsContext(common_tls_context=_mtls_context(server_spiffe_ids)))


def downstream_mtls(caller_spiffe_ids: Sequence[str]) -> Message:
    return _transport_socket(
        tls_pb2.DownstreamTlsContext(
            common_tls_context=_mtls_context(caller_spiffe_ids),
            require_client_certificate=wrappers_pb2.BoolValue(value=True),
        )
    )


# -- clusters and endpoints -------------------------------------------------------------------------


def outlier_detection() -> Message:
    """Passive health checking from the caller's real traffic: an instance whose last 3 answers were
    gateway failures (502/503/504, and connection failures, timeouts and resets, which Envoy counts as
    such) is ejected at once, for 5 s the first time and longer each time again. Other 5xx do not eject
    (the app answered), nor does the success-rate rule. At most half of a service's instances are
    ejected: a fault shared by all of them (a service they call) must not empty the cluster."""
    return outlier_detection_pb2.OutlierDetection(
        consecutive_gateway_failure=wrappers_pb2.UInt32Value(value=3),
        enforcing_consecutive_gateway_failure=wrappers_pb2.UInt32Value(value=100),
        enforcing_consecutive_5xx=wrappers_pb2.UInt32Value(value=0),
        enforcing_success_rate=wrappers_pb2.UInt32Value(value=0),
        interval=_duration_ms(1000),
        base_ejection_time=_duration_ms(5000),
        max_ejection_time=_duration_ms(60000),
        max_ejection_percent=wrappers_pb2.UInt32Value(value=50),
    )


def _retry_budget() -> Message:
    """Envoy allows 3 concurrent retries per cluster by default: under load, the requests in flight to an
    instance that dies are more. A budget (a quarter of the active requests, at least 10) still bounds
    retry storms."""
    return circuit_breaker_pb2.CircuitBreakers(
        thresholds=[
            circuit_breaker_pb2.CircuitBreakers.Thresholds(
                retry_budget=circuit_breaker_pb2.CircuitBreakers.Thresholds.RetryBudget(
                    budget_percent=percent_pb2.Percent(value=25.0),
                    min_retry_concurrency=wrappers_pb2.UInt32Value(value=10),
                )
            )
        ]
    )


IPPROTO_TCP = 6
"""(The ``socket`` module's constant: this module stays free of I/O modules.)"""
TCP_FASTOPEN_CONNECT = 30
"""Linux's socket option (include/uapi/linux/tcp.h, since 4.11): ``connect()`` returns at once and the
first bytes written (the TLS ClientHello) go out in the SYN, with the server's cookie if one is cached."""
FAST_OPEN_QUEUE = 256
"""Inbound listeners' queue of connections whose SYN carried data, not yet accepted (``TCP_FASTOPEN``)."""


PRECONNECT_RATIO = 1.5
"""HTTP clusters keep a connection ready to each instance beyond those in use (1.5 streams anticipated per
stream, rounded up: one spare beside each busy HTTP/1.1 connection). A request that finds every
connection busy, a new instance's first request after its warm-up (``nodeagent.warmup``) among them,
takes the spare instead of opening one. Not for TCP: there a spare would be an idle connection to the app."""


def fast_open_connect() -> Message:
    """Upstream sockets that open with TCP Fast Open: to an address reached before (the kernel keeps the
    server's cookie per address), the ClientHello rides in the SYN and the handshake costs one round trip
    less. Where the server does not take it, the connection opens as usual."""
    option = socket_option_pb2.SocketOption(
        description="TCP_FASTOPEN_CONNECT",
        level=IPPROTO_TCP,
        name=TCP_FASTOPEN_CONNECT,
        int_value=1,
        state=socket_option_pb2.SocketOption.STATE_PREBIND,
    )
    return address_pb2.BindConfig(socket_options=[option])


def eds_cluster(
    name: str, connect_timeout_ms: int, http: bool, tls: Message | None = None, *, fast_open: bool = False
) -> Message:
    """A cluster whose endpoints come by EDS under the same name, with outlier detection and a retry
    budget. ``fast_open`` (only with ``tls``): connections open with TCP Fast Open (``fast_open_connect``).
    Only over TLS: there Envoy counts a connection as made once the handshake is done, so a refused SYN
    stays a connect failure (retried for any method); in plaintext the connection would count as made at
    ``connect()`` and a refusal as a reset."""
    if fast_open and tls is None:
        raise ValueError("TCP Fast Open is for mTLS clusters only")
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads_source(), service_name=name),
        connect_timeout=_duration_ms(connect_timeout_ms),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        outlier_detection=outlier_detection(),
        circuit_breakers=_retry_budget(),
    )
    if http:
        for key, value in _http_upstream_options().items():
            cluster.typed_extension_protocol_options[key].CopyFrom(value)
        cluster.preconnect_policy.per_upstream_preconnect_ratio.value = PRECONNECT_RATIO
    if tls is not None:
        cluster.transport_socket.CopyFrom(tls)
    if fast_open:
        cluster.upstream_bind_config.CopyFrom(fast_open_connect())
    return cluster


def static_cluster(name: str, ip: str, port: int, connect_timeout_ms: int, http: bool) -> Message:
    """A fixed single-endpoint cluster: the local application behind an inbound listener."""
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=_duration_ms(connect_timeout_ms),
        load_assignment=load_assignment(name, [LocalityEndpoints("", "", "", ((ip, port, 1),))]),
    )
    if http:
        for key, value in _http_upstream_options().items():
            cluster.typed_extension_protocol_options[key].CopyFrom(value)
    return cluster


def load_assignment(name: str, localities: Sequence[LocalityEndpoints]) -> Message:
    """Endpoints grouped by priority and locality. gRPC's xDS client drops localities without a weight,
    so every locality carries the sum of its endpoints' weights; and it refuses gaps between priorities,
    so the caller numbers them 0, 1, 2... (no policy is set: the overprovisioning factor stays 140%)."""
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(region=group.region, zone=group.zone, sub_zone=group.sub_zone),
                priority=group.priority,
                load_balancing_weight=wrappers_pb2.UInt32Value(value=sum(w for _, _, w in group.endpoints)),
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(address=_socket_address(ip, port)),
                        load_balancing_weight=wrappers_pb2.UInt32Value(value=weight),
                    )
                    for ip, port, weight in group.endpoints
                ],
            )
            for group in localities
            if group.endpoints
        ],
    )


# -- routes and listeners ---------------------------------------------------------------------------


def route_configuration(
    name: str, hosts: Sequence[VirtualHost], timeout_ms: int, retries: RetryRules | None = None
) -> Message:
    """Routes to each virtual host's cluster. ``retries`` (a caller's routes to a service): idempotent
    methods get a per-try timeout and are retried on any failure of the way, on another instance; other
    methods only when the request never reached an application. None (an inbound listener, one local
    app): every method only on a connection failure, for 2 retries."""
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[_virtual_host(h, timeout_ms, retries) for h in hosts])


HTTP_RBAC_FILTER = "envoy.filters.http.rbac"


def inbound_route_configuration(name: str, local_cluster: str, timeout_ms: int) -> Message:
    """An inbound listener's routes: every request to the local app (retried on connection failures only),
    but a warm-up (``WARM_UP_PATH``, GET), which the sidecar answers 204 itself. RBAC is off for that route
    alone: the caller has already passed mTLS (an identity of the trust domain), the answer reaches no app
    and says nothing, and a rule that names paths would otherwise count each warm-up as a denied call."""
    config = route_configuration(name, [VirtualHost("inbound", ("*",), local_cluster)], timeout_ms)
    warm_up = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(
            path=WARM_UP_PATH,
            headers=[
                route_components_pb2.HeaderMatcher(name=":method", string_match=string_pb2.StringMatcher(exact="GET"))
            ],
        ),
        direct_response=route_components_pb2.DirectResponseAction(status=204),
    )
    warm_up.typed_per_filter_config[HTTP_RBAC_FILTER].CopyFrom(pack(http_rbac_pb2.RBACPerRoute()))
    config.virtual_hosts[0].routes.insert(0, warm_up)
    return config


def _virtual_host(host: VirtualHost, timeout_ms: int, retries: RetryRules | None) -> Message:
    routes = []
    if retries is not None:
        routes.append(
            _route(
                host.cluster,
                timeout_ms,
                _retry_policy(IDEMPOTENT_RETRY_ON, retries.num_retries, retries.per_try_timeout_ms),
                methods=IDEMPOTENT_METHODS,
            )
        )
    # A connect failure never reached the upstream: retrying it is safe for any method, and it hides
    # the moment an endpoint is withdrawn while a request was already being routed to it.
    routes.append(
        _route(host.cluster, timeout_ms, _retry_policy(NEVER_SENT_RETRY_ON, retries.num_retries if retries else 2))
    )
    return route_components_pb2.VirtualHost(name=host.name, domains=list(host.domains), routes=routes)


def _route(cluster: str, timeout_ms: int, retry_policy: Message, methods: Sequence[str] = ()) -> Message:
    match = route_components_pb2.RouteMatch(prefix="/")
    if methods:
        match.headers.append(
            route_components_pb2.HeaderMatcher(
                name=":method",
                string_match=string_pb2.StringMatcher(
                    safe_regex=regex_pb2.RegexMatcher(regex=f"^({'|'.join(methods)})$")
                ),
            )
        )
    action = route_components_pb2.RouteAction(
        cluster=cluster, timeout=_duration_ms(timeout_ms), retry_policy=retry_policy
    )
    return route_components_pb2.Route(match=match, route=action)


def _retry_policy(retry_on: str, num_retries: int, per_try_timeout_ms: int = 0) -> Message:
    """A retry goes to another instance than the ones already tried (when there is one), and to another
    priority than the ones already tried (when one has healthy hosts): the nearest priority may hold a
    single instance, and until outlier detection ejects it a retry would find only that one there."""
    policy = route_components_pb2.RetryPolicy(
        retry_on=retry_on,
        num_retries=wrappers_pb2.UInt32Value(value=num_retries),
        retry_host_predicate=[
            route_components_pb2.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=3,
        retry_priority=route_components_pb2.RetryPolicy.RetryPriority(
            name="envoy.retry_priorities.previous_priorities",
            typed_config=pack(previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=1)),
        ),
    )
    if per_try_timeout_ms:
        policy.per_try_timeout.CopyFrom(_duration_ms(per_try_timeout_ms))
    return policy


def _router() -> Message:
    return hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=pack(router_pb2.Router()))


def _http_manager(
    stat_prefix: str,
    route_name: str | None = None,
    inline_route: Message | None = None,
    rbac: InboundRbac | None = None,
) -> Message:
    filters = [_router()]
    if rbac is not None:
        filters.insert(0, http_rbac_filter(rbac))
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix, codec_type=hcm_pb2.HttpConnectionManager.AUTO, http_filters=filters
    )
    if rbac is not None and rbac.access_log_cluster:
        manager.access_log.append(denial_access_log(rbac.access_log_cluster, http=True))
    if route_name is not None:
        manager.rds.CopyFrom(hcm_pb2.Rds(config_source=ads_source(), route_config_name=route_name))
    if inline_route is not None:
        manager.route_config.CopyFrom(inline_route)
    return manager


def normalize_paths(manager: Message) -> None:
    """What the RBAC path rules (and the app) see is the canonical path: dot segments resolved (RFC 3986
    section 6), runs of slashes merged, and a request whose path has an escaped slash or backslash
    (``%2F``, ``%5C``) refused with 400, so that ``/status/../cart`` is matched as ``/cart`` and
    ``/status%2F..%2Fcart`` never reaches a rule or an app that would decode it differently."""
    manager.normalize_path.value = True
    manager.merge_slashes = True
    manager.path_with_escaped_slashes_action = hcm_pb2.HttpConnectionManager.REJECT_REQUEST


def _network_filter(name: str, config: Message) -> Message:
    return listener_components_pb2.Filter(name=name, typed_config=pack(config))


def _stat_prefix(name: str) -> str:
    return name.replace("/", "_").replace(".", "_")


def http_listener(
    name: str,
    ip: str,
    port: int,
    *,
    route_name: str | None = None,
    inline_route: Message | None = None,
    inbound: bool,
    tls: Message | None = None,
    forward_client_identity: bool = False,
    rbac: InboundRbac | None = None,
    stat_prefix: str | None = None,
    fast_open: bool = False,
) -> Message:
    """``fast_open``: accept connections whose SYN carries data (TCP Fast Open; the kernel must allow it,
    ``net.ipv4.tcp_fastopen`` with 0x2)."""
    manager = _http_manager(stat_prefix or _stat_prefix(name), route_name, inline_route, rbac)
    if inbound:
        normalize_paths(manager)
    if forward_client_identity:
        # The app learns who called from x-forwarded-client-cert; a caller cannot forge it.
        manager.forward_client_cert_details = hcm_pb2.HttpConnectionManager.SANITIZE_SET
        manager.set_current_client_cert_details.uri = True
    chain = listener_components_pb2.FilterChain(
        filters=[_network_filter("envoy.filters.network.http_connection_manager", manager)]
    )
    if tls is not None:
        chain.transport_socket.CopyFrom(tls)
    listener = listener_pb2.Listener(
        name=name,
        address=_socket_address(ip, port),
        filter_chains=[chain],
        traffic_direction=base_pb2.INBOUND if inbound else base_pb2.OUTBOUND,
    )
    if fast_open:
        listener.tcp_fast_open_queue_length.value = FAST_OPEN_QUEUE
    return listener


def tcp_listener(
    name: str,
    ip: str,
    port: int,
    cluster: str,
    *,
    inbound: bool,
    tls: Message | None = None,
    rbac: InboundRbac | None = None,
    stat_prefix: str | None = None,
    fast_open: bool = False,
) -> Message:
    """``fast_open``: as ``http_listener``'s."""
    # Up to 3 connection attempts (each on the next instance): nothing was sent on a failed one.
    proxy = tcp_proxy_pb2.TcpProxy(
        stat_prefix=stat_prefix or _stat_prefix(name),
        cluster=cluster,
        max_connect_attempts=wrappers_pb2.UInt32Value(value=3),
    )
    filters = [_network_filter("envoy.filters.network.tcp_proxy", proxy)]
    if rbac is not None:
        # Before tcp_proxy: a denied connection is closed before any upstream connection is made.
        filters.insert(0, network_rbac_filter(rbac))
    chain = listener_components_pb2.FilterChain(filters=filters)
    if tls is not None:
        chain.transport_socket.CopyFrom(tls)
    listener = listener_pb2.Listener(
        name=name,
        address=_socket_address(ip, port),
        filter_chains=[chain],
        traffic_direction=base_pb2.INBOUND if inbound else base_pb2.OUTBOUND,
    )
    if fast_open:
        listener.tcp_fast_open_queue_length.value = FAST_OPEN_QUEUE
    if rbac is not None and rbac.access_log_cluster:
        # On the listener: it logs every connection as it closes, also one a filter closed.
        listener.access_log.append(denial_access_log(rbac.access_log_cluster, http=False))
    return listener


# -- authorization ----------------------------------------------------------------------------------


def _principal(grant: RbacGrant) -> Message:
    """The peer certificate's URI SAN (the SPIFFE id mTLS verified), exactly or by prefix."""
    matcher = (
        string_pb2.StringMatcher(prefix=grant.principal)
        if grant.prefix
        else string_pb2.StringMatcher(exact=grant.principal)
    )
    return rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(principal_name=matcher))


def _any_of(permissions: list[Message]) -> Message:
    return (
        permissions[0]
        if len(permissions) == 1
        else rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=permissions))
    )


def _url_path(matcher: Message) -> Message:
    return rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=matcher))


def path_permissions(rule: str) -> list[Message]:
    """A path rule by whole segments (``netmodel.authorization.path_admits``): ``/status`` admits
    ``/status`` and what is under ``/status/``, not ``/statusadmin``; a rule ending in "/" is a prefix."""
    if rule.endswith("/"):
        return [_url_path(string_pb2.StringMatcher(prefix=rule))]
    return [_url_path(string_pb2.StringMatcher(exact=rule)), _url_path(string_pb2.StringMatcher(prefix=rule + "/"))]


def _permission(grant: RbacGrant, http: bool) -> Message:
    """Any request, or (HTTP) one of the paths AND one of the methods."""
    parts = []
    if http and grant.paths:
        parts.append(_any_of([permission for rule in grant.paths for permission in path_permissions(rule)]))
    if http and grant.methods:
        parts.append(
            _any_of(
                [
                    rbac_pb2.Permission(
                        header=route_components_pb2.HeaderMatcher(
                            name=":method", string_match=string_pb2.StringMatcher(exact=method)
                        )
                    )
                    for method in grant.methods
                ]
            )
        )
    if not parts:
        return rbac_pb2.Permission(any=True)
    return parts[0] if len(parts) == 1 else rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=parts))


def rbac_rules(rbac: InboundRbac, http: bool) -> Message:
    """Action ALLOW with one policy per grant: a caller no policy admits is denied (no policy at all:
    everyone is). ``http=False``: paths and methods cannot be seen, so a grant limited to some is left out
    (fail closed) rather than widened to every connection."""
    policies = {
        grant.name: rbac_pb2.Policy(permissions=[_permission(grant, http)], principals=[_principal(grant)])
        for grant in rbac.grants
        if http or not (grant.paths or grant.methods)
    }
    return rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies=policies)


def http_rbac_filter(rbac: InboundRbac) -> Message:
    """Its stats: ``http.<HCM stat_prefix>.rbac.allowed|denied``; a denied request gets 403."""
    return hcm_pb2.HttpFilter(
        name=HTTP_RBAC_FILTER, typed_config=pack(http_rbac_pb2.RBAC(rules=rbac_rules(rbac, http=True)))
    )


def network_rbac_filter(rbac: InboundRbac) -> Message:
    """Its stats: ``<stat_prefix>.rbac.allowed|denied``; a denied connection is closed."""
    config = network_rbac_pb2.RBAC(rules=rbac_rules(rbac, http=False), stat_prefix=rbac.stat_prefix)
    return _network_filter("envoy.filters.network.rbac", config)


def denial_access_log(cluster: str, http: bool) -> Message:
    """Envoy's gRPC access log (AccessLogService, on the xDS cluster), filtered in Envoy: HTTP keeps the
    403 answers (the controller keeps those whose response code details say RBAC), TCP the connections
    the RBAC filter terminated (checked again by the controller)."""
    common = als_pb2.CommonGrpcAccessLogConfig(
        log_name=ACCESS_LOG_NAME,
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster)
        ),
        transport_api_version=config_source_pb2.ApiVersion.V3,
    )
    if http:
        config = als_pb2.HttpGrpcAccessLogConfig(common_config=common)
        name = "envoy.access_loggers.http_grpc"
        denied = accesslog_pb2.AccessLogFilter(
            status_code_filter=accesslog_pb2.StatusCodeFilter(
                comparison=accesslog_pb2.ComparisonFilter(
                    op=accesslog_pb2.ComparisonFilter.EQ,
                    value=base_pb2.RuntimeUInt32(default_value=DENIED_STATUS, runtime_key="edgectl.denied_status"),
                )
            )
        )
        return accesslog_pb2.AccessLog(name=name, filter=denied, typed_config=pack(config))
    config = als_pb2.TcpGrpcAccessLogConfig(common_config=common)
    closed_by_rbac = accesslog_pb2.AccessLogFilter(
        extension_filter=accesslog_pb2.ExtensionFilter(
            name="envoy.access_loggers.extension_filters.cel",
            typed_config=pack(cel_pb2.ExpressionFilter(expression=TCP_DENIED_EXPRESSION)),
        )
    )
    return accesslog_pb2.AccessLog(
        name="envoy.access_loggers.tcp_grpc", filter=closed_by_rbac, typed_config=pack(config)
    )


def api_listener(name: str, route_name: str) -> Message:
    """The listener a proxyless gRPC client asks for by name (``xds:///name``): no address, only an
    HTTP connection manager whose routes come by RDS."""
    manager = _http_manager(_stat_prefix(name), route_name)
    return listener_pb2.Listener(name=name, api_listener=api_listener_pb2.ApiListener(api_listener=pack(manager)))


# -- secrets ----------------------------------------------------------------------------------------


def identity_secret(cert_chain_pem: str, private_key_pem: str) -> Message:
    return secret_pb2.Secret(
        name=IDENTITY_SECRET,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_string=cert_chain_pem),
            private_key=base_pb2.DataSource(inline_string=private_key_pem),
        ),
    )


def trust_bundle_secret(bundle_pem: str) -> Message:
    return secret_pb2.Secret(
        name=TRUST_BUNDLE_SECRET,
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_string=bundle_pem)
        ),
    )
