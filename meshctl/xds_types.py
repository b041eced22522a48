"""The five xDS resource types meshctl serves, and the order they are pushed in. Pure."""

from __future__ import annotations

from typing import Final

_PREFIX = "type.googleapis.com/"

SECRET: Final = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"
CLUSTER: Final = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINTS: Final = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER: Final = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTES: Final = _PREFIX + "envoy.config.route.v3.RouteConfiguration"

PUSH_ORDER: Final[tuple[str, ...]] = (SECRET, CLUSTER, ENDPOINTS, LISTENER, ROUTES)
"""Make-before-break: a resource arrives before anything that refers to it. Secrets first (clusters
and listeners name them), clusters before their endpoints, listeners before their routes (Envoy asks
for a route only once a listener names it), routes last because routes are not warmed: a route to a
cluster Envoy does not have yet fails. ``protocol`` adds the hard guarantees: a route is sent only
once its clusters are ACKed, and nothing is removed while something the client runs names it."""

WILDCARD_TYPES: Final = frozenset({CLUSTER, LISTENER})
"""Types where an empty first subscription means "everything for this node" (xDS legacy wildcard)."""

XDS_CLUSTER: Final = "edgectl-xds"
"""The sidecars' bootstrap cluster to the controller (``meshctl.bootstrap``): ADS, and the access logs
that report RBAC denials (``meshctl.access_log``) ride on it."""

SHORT_NAMES: Final = {SECRET: "sds", CLUSTER: "cds", ENDPOINTS: "eds", LISTENER: "lds", ROUTES: "rds"}


def short_name(type_url: str) -> str:
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])


WARM_UP_PATH = "/.well-known/edgectl/warm-up"
"""Answered by every inbound HTTP sidecar itself (204), never passed to its app: a node agent sends one
request there through a new sidecar to each service its app calls, so that the sidecar's connections to
them are open before the app's first request (``nodeagent.warmup``)."""


def service_cluster_name(service: str) -> str:
    """The cluster (and endpoints) name of ``service`` in every caller's snapshot."""
    return f"svc/{service}"


WORKLOAD_OUTBOUND_PREFIX = "127.1"
"""A workload's app reaches the services it calls at ``workload_outbound_host(port)``: an address in
127.1.0.0/16 of its own (Linux routes all of 127.0.0.0/8 to loopback, nothing to configure). Envoy binds
listeners with SO_REUSEPORT, so two sidecars of one node listening on the same address and port would
share its connections: an app's call could leave through the other workload's sidecar, with that
workload's identity, and be admitted or denied as that workload."""


def workload_outbound_host(port: int) -> str:
    """The outbound address of the workload whose inbound port on its node is ``port``: unique on the node
    (no two workloads there share an inbound port) and the same for the workload's whole life."""
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not a TCP port")
    return f"{WORKLOAD_OUTBOUND_PREFIX}.{port >> 8}.{port & 0xFF}"
