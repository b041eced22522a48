"""The composition root: one process, one model, every server around it.

``Controller.start()`` brings up, in order: the model writer (the bus), saved placements from
``--state-dir``, the HTTP endpoint, the CA (``--pki-dir``), the OpenFlow listener (os-ken, native
threads) and its route engine, the xDS server, and last the placement gRPC API with its convergence
probes (routes, sidecars). Each gets the bus (to publish) and reads ``bus.state`` (immutable snapshots).
"""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edgectl.bus import EventBus
from edgectl.config import RunConfig
from edgectl.health_api import HEALTH_PATH, health_report_route, unhealthy_view
from edgectl.http_access import loopback_only
from edgectl.http_api import HttpApi
from edgectl.metrics import ControllerMetrics
from edgectl.state_store import StateStore
from edgectl.views import routes_view, topology_view, workloads_view
from netmodel.fabric import FabricSpec, build_state

if TYPE_CHECKING:  # the servers are imported only when start() runs them (os-ken, grpc, cryptography)
    import ssl
    from collections.abc import Callable

    from edgectl.cert_renewal import ControlCertificates
    from meshctl.xds_grpc import MeshServer
    from pki.service import PkiService
    from placement.grpc_api import PlacementServer
    from placement.replica_loop import ReplicaLoop
    from sdnctl.engine import RouteEngine
    from sdnctl.runtime import OpenFlowRuntime

LOG = logging.getLogger("edgectl.controller")


def _ip_sans(*hosts: str) -> list[str]:
    """IP SANs for the control certificate: loopback plus every bind address that is an IP (not 0.0.0.0)."""
    import ipaddress

    sans = ["127.0.0.1"]
    for host in hosts:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            continue
        if not address.is_unspecified and str(address) not in sans:
            sans.append(str(address))
    return sans


class Controller:
    def __init__(self, config: RunConfig, spec: FabricSpec) -> None:
        self.config = config
        self.metrics = ControllerMetrics()
        self.bus = EventBus(build_state(spec), observer=self.metrics.observe_event)
        self.store = StateStore(config.state_dir) if config.state_dir else None
        self.http: HttpApi | None = None
        self.openflow: OpenFlowRuntime | None = None
        self.routes: RouteEngine | None = None
        self.mesh: MeshServer | None = None
        self.pki: PkiService | None = None
        self.control_certs: ControlCertificates | None = None
        self.placement: PlacementServer | None = None
        self.replicas: ReplicaLoop | None = None

    def start(self) -> None:
        self.bus.start()
        if self.store is not None:
            for event in self.store.load_events():
                try:
                    self.bus.publish(event).result(timeout=5)
                except Exception as exc:
                    LOG.warning("saved placement not restored: %s", exc)
            self.store.start(self.bus.state)  # what was restored is on disk already
            self.bus.subscribe(self.store)
        # HTTP first: /healthz answers while the rest comes up.
        self.http = HttpApi(
            self.config.http_host,
            self.config.http_port,
            state=lambda: self.bus.state,
            metrics=self.metrics,
            routes={"/api/v1/topology": topology_view, "/api/v1/workloads": workloads_view},
        )
        # Node agents report instances whose app or sidecar died: withdrawn at once, then re-placed.
        # A report makes failover re-place an instance: only local agents may send one (no authentication).
        report = loopback_only(
            health_report_route(self.bus.publish),
            http_host=self.config.http_host,
            what="an instance health report",
            instead="run the node agent where the controller's HTTP API listens on loopback",
        )
        self.http.add_route(HEALTH_PATH, report, method="POST")
        self.http.add_route(HEALTH_PATH, unhealthy_view)
        self.http.start()
        LOG.info("HTTP API on http://%s:%d", *self.http.address)

        openflow_tls = None
        on_tls_context: Callable[[ssl.SSLContext], None] | None = None
        control_tls: ControlCertificates | None = None
        pki: PkiService | None = None
        # SPIFFE ids (placement's, meshctl's) are in the CA's trust domain: with another, no SVID is issued.
        from placement.naming import DEFAULT_TRUST_DOMAIN

        trust_domain = DEFAULT_TRUST_DOMAIN
        if self.config.pki is not None:
            from pki.identities import identities_view
            from pki.service import PkiService

            pki = self.pki = PkiService.from_options(self.config.pki, lambda: self.bus.state).start()
            trust_domain = pki.trust_domain
            # Subscribed before meshctl: a workload's SVID exists before any endpoint points at it.
            self.bus.subscribe(pki)
            self.http.add_route(
                "/api/v1/identities",
                lambda _s: identities_view(pki.snapshot, pki.manager.policy, time.time()),
            )
            # mTLS on the control connections (xDS over TCP, placement API, OpenFlow with --openflow-tls):
            # server certificates renewed at half-life while we run; clients need a certificate from this CA.
            from edgectl.cert_renewal import ControlCertificates

            control_tls = self.control_certs = ControlCertificates.start(
                pki.issuer,
                ttl_s=self.config.pki.control_cert_ttl_s,
                grpc_ip_addresses=_ip_sans(self.config.xds_host, self.config.api_host),
                openflow_dir=Path(self.config.pki.directory) / "openflow" if self.config.pki.openflow_tls else None,
            )
            openflow_tls = control_tls.openflow_files
            if control_tls.openflow_contexts is not None:  # set together with openflow_files
                on_tls_context = control_tls.openflow_contexts.attach
            from edgectl.pki_http import rotate_route

            self.http.add_route("/api/v1/pki/rotate", rotate_route(pki, http_host=self.config.http_host), method="POST")

        from sdnctl.engine import RouteEngine
        from sdnctl.runtime import start_openflow  # os-ken is imported only when a controller runs

        openflow = self.openflow = start_openflow(
            self.config.openflow_host,
            self.config.openflow_port,
            self.bus.publish,
            lambda: self.bus.state,
            tls=openflow_tls,
            on_tls_context=on_tls_context,
        )
        routes = self.routes = RouteEngine(openflow.app, lambda: self.bus.state)
        self.bus.subscribe(routes)
        routes.start()
        # A migration withdraws the old instance only once every switch runs the new generation's routes.
        from placement.convergence import NamedProbe

        routes_probe = NamedProbe(
            "routes", lambda generation: all(s.applied_generation >= generation for s in routes.status.values())
        )
        self.http.add_route("/api/v1/latency", lambda _state: openflow.app.latency.report())
        self.http.add_route("/api/v1/routes", lambda state: routes_view(routes.plan, routes.status, state))
        from meshctl.snapshot import MeshConfig
        from meshctl.xds_grpc import start_mesh

        xds_tls = None
        if control_tls is not None and pki is not None:
            xds_tls = control_tls.xds_tls(pki.issuer.bundle_pem, pki.authorize_xds)
        mesh = self.mesh = start_mesh(
            lambda: self.bus.state,
            self.bus.subscribe,
            host=self.config.xds_host,
            port=self.config.xds_port,
            unix_path=self.config.xds_unix,
            registry=self.metrics.registry,
            config=MeshConfig(app_host=self.config.mesh_app_host, trust_domain=trust_domain),
            tls=xds_tls,
            wait_for_sidecars=self.config.wait_for_sidecars,
        )
        self.http.add_route("/api/v1/xds/clients", lambda _state: mesh.clients_view())
        # A migration withdraws the old instance only once the sidecars have ACKed the new endpoints.
        sidecars_probe = NamedProbe("sidecars", mesh.converged, mesh.converged_for)
        if pki is not None:
            # SVIDs reach sidecars over SDS; with the PKI on, sidecars talk mTLS.
            # The CRLs ride in the trust bundle: a revoked certificate is refused with the next push.
            mesh.use_identities(pki.snapshot, mtls=True, crl_pem=pki.trust_crls_pem())
            pki.subscribe(lambda snapshot: mesh.use_identities(snapshot, mtls=True, crl_pem=pki.trust_crls_pem()))
        # The placement API last: a Place or Migrate served before the routes and the mesh run would
        # wait on nothing (and the readiness gate would count its instance as one restored at start).
        from placement.grpc_api import start_placement_api

        api_tls = None
        if control_tls is not None and pki is not None:
            api_tls = control_tls.api_tls(pki.issuer.bundle_pem, pki.authorize_operator)
        self.placement = start_placement_api(
            self.bus,
            self.config.api_host,
            self.config.api_port,
            convergence_probes=[routes_probe, sidecars_probe],
            tls=api_tls,
            trust_domain=trust_domain,
            # With --state-dir an answered Place/Migrate/Evict is on disk, and ids are never reused.
            durable=self.store.check_durable if self.store is not None else None,
            id_floors=self.store.id_floors() if self.store is not None else None,
        )
        # The declared replicas, kept at their count by the controller (placed through the same orchestrator).
        from placement.replica_loop import ReplicaLoop

        replicas = self.replicas = ReplicaLoop(
            self.placement.orchestrator, durable=self.store.check_durable if self.store is not None else None
        )
        self.http.add_route("/api/v1/replicas", replicas.status_view)
        self.bus.subscribe(replicas)
        replicas.start()
        # Start-up garbage is long-lived: move it out of the collector's way (full GCs paused the
        # process 80-110 ms here; after freeze about 15 ms).
        gc.collect()
        gc.freeze()

    def stop(self) -> None:
        if self.replicas is not None:
            self.replicas.stop()
        if self.placement is not None:
            self.placement.stop()
        if self.pki is not None:
            self.pki.stop()
        if self.control_certs is not None:
            self.control_certs.stop()
        if self.mesh is not None:
            self.mesh.stop()
        if self.routes is not None:
            self.routes.stop()
        if self.openflow is not None:
            self.openflow.stop()
        if self.http is not None:
            self.http.stop()
        self.bus.stop()
        if self.store is not None:
            self.store.stop()
