"""The composition root: one process, one model, every server around it.

``Controller.start()`` brings up, in order: the model writer (the bus), saved placements from
``--state-dir``, the HTTP endpoint, the CA (``--pki-dir``), the OpenFlow listener (os-ken, native
threads) and its route engine, the xDS server, the node agent API (with ``--pki-dir``), and last the
placement gRPC API with its convergence probes (routes, sidecars). Each gets the bus (to publish) and
reads ``bus.state`` (immutable snapshots).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgectl.bandwidth_view import links_view, reservations_view
from edgectl.bus import EventBus
from edgectl.collector import CollectorSchedule
from edgectl.config import GitOptions, RunConfig
from edgectl.health_api import HEALTH_PATH, health_report_route, unhealthy_view
from edgectl.http_access import loopback_only
from edgectl.http_api import BadQuery, HttpApi
from edgectl.live_events import EventHub
from edgectl.metrics import ControllerMetrics
from edgectl.policy_denials import DenialLog
from edgectl.reservations import ReservationCache
from edgectl.state_store import StateStore
from edgectl.views import (
    changes_view,
    routes_view,
    service_paths_view,
    services_view,
    topology_view,
    workloads_view,
)
from netmodel.fabric import FabricSpec, build_state
from netmodel.fabric_file import FabricFileError
from netmodel.state import FabricState

if TYPE_CHECKING:  # the servers are imported only when start() runs them (os-ken, grpc, cryptography)
    import ssl
    from collections.abc import Callable, Mapping

    from cluster.log_bus import ClusterBus
    from edgectl.agent_api import AgentServer
    from edgectl.cert_renewal import ControlCertificates
    from edgectl.cluster_mode import Replica
    from edgectl.config_watch import ConfigWatcher
    from edgectl.desired_state import DesiredState
    from edgectl.git_sync import GitSync
    from meshctl.xds_grpc import MeshServer
    from pki.identities import IdentitySnapshot
    from pki.join_token_store import TokenStore
    from pki.revocation_store import RevocationStore
    from pki.service import PkiService
    from placement.convergence import Progress
    from placement.grpc_api import PlacementServer
    from placement.replica_loop import ReplicaLoop
    from sdnctl.engine import RouteEngine
    from sdnctl.roles import Mastership
    from sdnctl.runtime import OpenFlowRuntime

LOG = logging.getLogger("edgectl.controller")


class CannotStart(RuntimeError):
    """The controller cannot run as configured (replicated mode: etcd unreachable, a duplicate replica id)."""


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


def _since_generation(query: Mapping[str, str]) -> int:
    """``?since_generation=N``: the changes for generations after N (all without it)."""
    text = query.get("since_generation")
    if text is None:
        return -1
    try:
        return int(text)
    except ValueError:
        raise BadQuery(f"since_generation must be an integer, not {text!r}") from None


def _no_pki(_state: FabricState, _body: Any) -> tuple[int, Any]:
    return 503, {"error": "this controller runs without --pki-dir: no node identities, no join tokens"}


class Controller:
    def __init__(self, config: RunConfig, spec: FabricSpec, revision: str = "") -> None:
        self.config = config
        self.metrics = ControllerMetrics()
        self.collector = CollectorSchedule(on_pass=self.metrics.observe_gc_pass)
        self._initial = (spec, revision)
        self.cluster: Replica | None = None
        initial = replace(build_state(spec), desired_revision=revision)
        self.bus: EventBus | ClusterBus
        if config.cluster is not None:
            from edgectl.cluster_mode import Replica

            # Every change goes through etcd's log; the first replica seeds the cluster with this state.
            self.cluster = Replica(config.cluster, seed=lambda: initial, observer=self.metrics.observe_event)
            self.bus = self.cluster.bus
        else:
            self.bus = EventBus(initial, observer=self.metrics.observe_event)
        self.metrics.sources.state = lambda: self.bus.state
        self.denials = DenialLog()
        """Denied calls from both enforcement points (the sidecars' RBAC, the switches' ACL)."""
        self.metrics.sources.policy_denials = self.denials.totals
        self.store = StateStore(config.state_dir) if config.state_dir else None
        self.http: HttpApi | None = None
        self.openflow: OpenFlowRuntime | None = None
        self.routes: RouteEngine | None = None
        self.mesh: MeshServer | None = None
        self.convergence_progress: Progress | None = None
        self.pki: PkiService | None = None
        self.control_certs: ControlCertificates | None = None
        self.placement: PlacementServer | None = None
        self.agents: AgentServer | None = None
        self.desired: DesiredState | None = None
        self.config_watch: ConfigWatcher | None = None
        self.git: GitSync | None = None
        self._temporary_git_dir: str | None = None
        self.replicas: ReplicaLoop | None = None
        self.events: EventHub | None = None

    def start(self) -> None:
        if self.cluster is not None:
            self._start_cluster_bus()
        else:
            self.bus.start()
        if self.store is not None:
            for event in self.store.load_events():
                try:
                    self.bus.publish(event).result(timeout=5)
                except Exception as exc:
                    LOG.warning("saved placement not restored: %s", exc)
            self.store.start(self.bus.state)  # what was restored is on disk already
            self.bus.subscribe(self.store)
        self.reservations = ReservationCache()
        self.metrics.sources.reservations = self.reservations.plan_for
        # HTTP first: /healthz answers while the rest comes up.
        self.http = HttpApi(
            self.config.http_host,
            self.config.http_port,
            state=lambda: self.bus.state,
            metrics=self.metrics,
            routes={
                "/api/v1/topology": topology_view,
                "/api/v1/workloads": workloads_view,
                "/api/v1/services": services_view,
                "/api/v1/links": lambda state: links_view(state, self.reservations.plan_for(state)),
            },
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
        # Live updates for dashboards (docs/dashboard.md): one coalesced delta per wake-up to every client.
        events = self.events = EventHub(lambda: self.bus.state)
        self.bus.subscribe(events)
        events.start()
        self.http.add_event_stream("/api/v1/events", events)
        self.http.ready = False  # /healthz: "starting" until every server below is up
        self.http.start()
        LOG.info("HTTP API on http://%s:%d", *self.http.address)

        openflow_tls = None
        on_tls_context: Callable[[ssl.SSLContext], None] | None = None
        control_tls: ControlCertificates | None = None
        pki: PkiService | None = None
        join_tokens: TokenStore | None = None
        # SPIFFE ids (placement's, meshctl's) are in the CA's trust domain: with another, no SVID is issued.
        from placement.naming import DEFAULT_TRUST_DOMAIN

        trust_domain = DEFAULT_TRUST_DOMAIN
        if self.config.pki is not None:
            from pki.identities import identities_view
            from pki.service import PkiService

            shared: list[RevocationStore] = []
            if self.cluster is not None:  # one list for every replica: what one revokes, all refuse
                from cluster.revocations import EtcdRevocationStore

                shared.append(EtcdRevocationStore(self.cluster.client, self.cluster.root))
            pki = self.pki = PkiService.from_options(
                self.config.pki, lambda: self.bus.state, shared_revocations=shared
            ).start()
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
            from edgectl.pki_http import JOIN_TOKENS_PATH, join_token_route
            from pki.join_token_store import JoinTokenStore

            join_tokens = JoinTokenStore(self.config.pki.directory, time.time)
            if self.cluster is not None:  # one set for every replica: an agent may attest at any of them
                from cluster.join_tokens import EtcdJoinTokenStore

                join_tokens = EtcdJoinTokenStore(self.cluster.client, self.cluster.root, time.time)
            self.http.add_route(
                JOIN_TOKENS_PATH,
                join_token_route(join_tokens, pki.trust_domain, http_host=self.config.http_host),
                method="POST",
            )
            from edgectl.pki_http import NODE_REVOCATIONS_PATH, node_revocation_route

            self.http.add_route(
                NODE_REVOCATIONS_PATH, node_revocation_route(pki, http_host=self.config.http_host), method="POST"
            )
            revoked_identities = [pki.snapshot.revocations.identities]

            def identities_revoked(snapshot: IdentitySnapshot) -> None:
                """A node revoked (here, or at another writer of the stored list): its agent's open watches
                check their caller again at once."""
                if snapshot.revocations.identities - revoked_identities[0] and self.agents is not None:
                    self.agents.servicer.recheck_watches()
                revoked_identities[0] = snapshot.revocations.identities

            pki.subscribe(identities_revoked)
            self.metrics.sources.identities = lambda: pki.snapshot
            self.metrics.observe_identities(pki.snapshot)  # those issued as the PKI started
            pki.subscribe(self.metrics.observe_identities)
            from edgectl.live_notes import CertificateNotes

            certificate_notes = CertificateNotes(events.note)  # the timeline's issuances, rotations, revocations
            certificate_notes(pki.snapshot)
            pki.subscribe(certificate_notes)

        from edgectl.policy_api import add_policy_routes

        add_policy_routes(self.http, self.denials, trust_domain)  # /api/v1/policy, /api/v1/policy/check
        from sdnctl.engine import RouteEngine
        from sdnctl.runtime import start_openflow  # os-ken is imported only when a controller runs

        openflow = self.openflow = start_openflow(
            self.config.openflow_host,
            self.config.openflow_port,
            self.bus.publish,
            lambda: self.bus.state,
            tls=openflow_tls,
            on_tls_context=on_tls_context,
            port_stats_interval_s=self.config.port_stats_interval_s,
            # A replica is a follower (SLAVE, silent) from its first switch on, until the election says otherwise.
            mastership=self._first_mastership(),
        )
        self.metrics.sources.openflow_roles = openflow.app.roles_view
        self.metrics.sources.openflow_role_changes = lambda: openflow.app.role_changes
        self.metrics.sources.port_readings = openflow.app.port_rates.readings
        self.metrics.sources.openflow_messages = openflow.app.messages.totals
        self.metrics.sources.meter_counts = lambda: openflow.app.meter_counts
        if self.cluster is not None:
            openflow.app.on_fenced = self.cluster.fenced
        # Rung whenever switches or sidecars may have applied more: a migration or a desired-state apply
        # waiting for them looks again at once instead of at its next poll (up to 50 ms later).
        from placement.convergence import NamedProbe, Progress

        progress = self.convergence_progress = Progress()
        routes = self.routes = RouteEngine(
            openflow.app,
            lambda: self.bus.state,
            drift_interval_s=self.config.drift_interval_s,
            on_drift=lambda _dpid, name, _drift: self.metrics.flow_drift.labels(name).inc(),
            on_routes_computed=self.metrics.route_compute_seconds.observe,
            on_routes_applied=self.metrics.observe_route_apply,
            trust_domain=trust_domain,
            record_denial=self.denials.record,
            after_round=progress.ring,
        )
        self.metrics.sources.switch_tables = routes.installed_counts
        self.metrics.route_apply_running.set_function(routes.apply_running_s)
        self.metrics.sources.spoofed_packets = routes.spoofing.totals
        self.bus.subscribe(routes)
        routes.start()
        self.reservations.follow(lambda: routes.reservation_plan)
        # A migration withdraws the old instance only once every switch runs the new generation's routes.
        routes_probe = NamedProbe("routes", routes.runs)
        self.http.add_route("/api/v1/latency", lambda _state: openflow.app.latency.report())
        self.http.add_route(
            "/api/v1/routes",
            lambda state: {
                **routes_view(routes.plan, routes.status, state, routes.acl),
                "reservations": reservations_view(state, routes.reservation_plan, routes.meter_of),
            },
        )
        self.http.add_query_route(
            "/api/v1/routes/changes",
            lambda state, query: changes_view(routes.changes(_since_generation(query)), state),
        )
        from meshctl.paths import ENDPOINT_ORDERS
        from meshctl.snapshot import MeshConfig
        from meshctl.xds_grpc import start_mesh
        from meshctl.xds_types import WORKLOAD_OUTBOUND_PREFIX

        mesh_config = MeshConfig(
            app_host=self.config.mesh_app_host,
            tcp_fast_open=self.config.tcp_fast_open,
            trust_domain=trust_domain,
            paths=ENDPOINT_ORDERS[self.config.endpoint_order],
        )
        if mesh_config.app_host.startswith(WORKLOAD_OUTBOUND_PREFIX + "."):
            LOG.warning(
                "apps listen on %s, in %s.0.0/16 where workloads' sidecars take their outbound listeners: an app "
                "and a caller of its port there cannot bind both (--mesh-app-host 127.0.0.2 keeps them apart)",
                mesh_config.app_host,
                WORKLOAD_OUTBOUND_PREFIX,
            )
        elif mesh_config.app_host == mesh_config.outbound_host:
            LOG.warning(
                "apps listen on %s, where users' client sidecars take their outbound listeners: a namespace with "
                "an app and a client sidecar calling its port cannot bind both (--mesh-app-host 127.0.0.2 keeps "
                "them apart)",
                mesh_config.app_host,
            )
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
            config=mesh_config,
            tls=xds_tls,
            wait_for_sidecars=self.config.wait_for_sidecars,
            denials=self.denials,
            # With the PKI on, sidecars talk mTLS from the first snapshot served. The CRLs ride in the
            # trust bundle: a revoked certificate is refused with the next push.
            identities=pki.snapshot if pki is not None else None,
            crl_pem=pki.trust_crls_pem() if pki is not None else "",
        )
        self.http.add_route("/api/v1/xds/clients", lambda _state: mesh.clients_view())
        from edgectl.live_notes import xds_nack_notes

        if self.cluster is not None and mesh.readiness is not None:
            self.cluster.share_readiness(mesh.readiness)  # a sidecar ACKs only the replica it streams from
        mesh.cache.add_nack_listener(xds_nack_notes(events.note))  # a sidecar refusing config: on the timeline
        mesh.cache.add_sync_listener(lambda _node, _snapshot: progress.ring())
        # A migration withdraws the old instance only once the sidecars have ACKed the new endpoints.
        sidecars_probe = NamedProbe("sidecars", mesh.converged, mesh.converged_for)
        if pki is not None:
            # SVIDs reach sidecars over SDS: every change of the PKI's, and once more its latest (a change
            # between the mesh's start and this subscription must not be lost; the same one costs nothing).
            pki.subscribe(lambda snapshot: mesh.use_identities(snapshot, mtls=True, crl_pem=pki.trust_crls_pem()))
            mesh.use_identities(pki.snapshot, mtls=True, crl_pem=pki.trust_crls_pem())
        if pki is None:
            from edgectl.pki_http import JOIN_TOKENS_PATH

            self.http.add_route(JOIN_TOKENS_PATH, _no_pki, method="POST")
        else:
            assert control_tls is not None and join_tokens is not None
            self._start_agent_api(pki, control_tls, join_tokens)
        # The placement API last: a Place or Migrate served before the routes and the mesh run would
        # wait on nothing (and the readiness gate would count its instance as one restored at start).
        from placement.baseline_profiles import all_profiles
        from placement.grpc_api import start_placement_api

        api_tls = None
        if control_tls is not None and pki is not None:
            api_tls = control_tls.api_tls(pki.issuer.bundle_pem, pki.authorize_operator)
        self.placement = start_placement_api(
            self.bus,
            self.config.api_host,
            self.config.api_port,
            convergence_probes=[routes_probe, sidecars_probe],
            convergence_progress=progress,
            tls=api_tls,
            trust_domain=trust_domain,
            profile=all_profiles()[self.config.placement_profile],
            # With --state-dir an answered Place/Migrate/Evict is on disk, and ids are never reused.
            durable=self.store.check_durable if self.store is not None else None,
            id_floors=self.store.id_floors() if self.store is not None else None,
            observe=self.metrics.observe_request,
        )
        self.placement.events.add_listener(self.metrics.observe_step)
        if self.cluster is not None:
            self.placement.orchestrator.standby = self.cluster.standby_reason
        from edgectl.live_notes import placement_notes

        self.placement.events.add_listener(placement_notes(events.note))  # migrations' steps on the timeline
        # The declared replicas, kept at their count by the controller (placed through the same orchestrator).
        from placement.replica_loop import ReplicaLoop

        replicas = self.replicas = ReplicaLoop(
            self.placement.orchestrator, durable=self.store.check_durable if self.store is not None else None
        )
        self.http.add_route("/api/v1/replicas", replicas.status_view)
        self.http.add_route("/api/v1/service-paths", service_paths_view)
        self.bus.subscribe(replicas)
        replicas.start()
        self._start_desired_state(trust_domain)
        if self.cluster is not None:
            self._join_cluster()
        self.http.ready = True
        # Start-up garbage is long-lived: moved out of the collector's way, and the collector's full passes
        # run on a schedule from now on (edgectl/collector.py).
        self.collector.start()

    def _first_mastership(self) -> Mastership | None:
        if self.cluster is None:
            return self.config.static_role  # None: embedded, no role requests
        from sdnctl.roles import Mastership

        return Mastership(False, self.cluster.current_generation())

    def _leader_only(self, route: Callable[[FabricState, Any], tuple[int, Any]]) -> Callable[..., tuple[int, Any]]:
        """A route that changes the cluster's desired state: served by the leader; a follower says where it is."""
        cluster = self.cluster
        assert cluster is not None

        def guarded(state: FabricState, body: Any) -> tuple[int, Any]:
            if cluster.leads():
                return route(state, body)
            leader = cluster.leadership.leader
            where = f"the leader, {leader.replica_id} at http://{leader.http}" if leader else "the leader (none now)"
            return 503, {"error": f"replica {cluster.replica_id} does not lead: apply desired state on {where}"}

        return guarded

    def _forwarding_credentials(self) -> Any:
        """With --pki-dir the placement API is mTLS: a follower calls the leader's with its own control
        certificate (the leader admits a controller of its trust domain). None: plaintext."""
        if self.control_certs is None or self.pki is None:
            return None
        import grpc

        svid = self.control_certs.grpc.current
        return grpc.ssl_channel_credentials(
            root_certificates=self.pki.issuer.bundle_pem.encode(),
            private_key=svid.private_key_pem.encode(),
            certificate_chain=svid.cert_chain_pem.encode(),
        )

    def _start_cluster_bus(self) -> None:
        """The model from etcd: the newest checkpoint and the log after it (a new cluster: ours seeds it)."""
        from cluster.etcd import EtcdError

        assert self.cluster is not None
        try:
            self.cluster.start_bus()
        except EtcdError as exc:
            raise CannotStart(f"etcd at {self.config.cluster.etcd_urls if self.config.cluster else ''}: {exc}") from exc
        running = self.bus.state.desired_revision
        if not self.cluster.bus.cluster_seeded and self._initial[1] and running != self._initial[1]:
            LOG.warning(
                "the cluster runs desired revision %s; this replica's --config (%s) is not applied here: apply it "
                "on the leader",
                self.bus.state.desired_revision or "(none)",
                self._initial[1],
            )

    def _join_cluster(self) -> None:
        """Campaign, and make every part follow the election: OpenFlow roles, write forwarding, the loops."""
        from cluster.election import Candidate, Leadership
        from cluster.member import DuplicateReplica
        from sdnctl.roles import Mastership

        cluster, openflow, placement, replicas = self.cluster, self.openflow, self.placement, self.replicas
        assert cluster is not None and openflow is not None and placement is not None and self.http is not None
        assert self.mesh is not None

        def follow(leadership: Leadership) -> None:
            leads = leadership.is_leader
            openflow.app.set_mastership(Mastership(leads, leadership.generation))
            leader = leadership.leader
            if leads or leader is None:
                placement.forward_writes_to(None)  # decided here, or refused UNAVAILABLE while no one leads
            else:
                placement.forward_writes_to(leader.api, self._forwarding_credentials())
            if leads:  # what only the leader does may have waited meanwhile
                placement.wake_failover()
                if replicas is not None:
                    replicas.wake()

        cluster.on_leadership(follow)
        http_host, http_port = self.http.address
        xds_host, xds_port = self.mesh.address
        shown = cluster.options.advertise_host  # "" : each server's own bind address (not a wildcard: checked)
        try:
            cluster.join(
                Candidate(
                    replica_id=cluster.replica_id,
                    lease=0,
                    http=f"{shown or http_host}:{http_port}",
                    api=f"{shown or placement.host}:{placement.port}",
                    xds=f"{shown or xds_host}:{xds_port}",
                    liveness=f"{http_host}:0",
                )
            )
        except DuplicateReplica as exc:
            raise CannotStart(str(exc)) from exc
        openflow_app = openflow.app
        self.http.add_route("/api/v1/cluster", lambda _state: cluster.status_view(openflow_app.roles_view()))
        self.metrics.sources.cluster = cluster.metrics_view

    def _start_agent_api(self, pki: PkiService, control_tls: ControlCertificates, tokens: TokenStore) -> None:
        """The node agent API (``edgectl.agent_api``): TLS with the controller's renewed gRPC certificate."""
        if not self.config.agent_port and not self.config.agent_unix:
            return
        from edgectl.agent_api import start_agent_api

        def certificate() -> tuple[int, str, str]:
            svid = control_tls.grpc.current
            return svid.info.serial, svid.cert_chain_pem, svid.private_key_pem

        self.agents = start_agent_api(
            self.bus,
            tokens,
            pki.issuer,  # type: ignore[arg-type]  # a CertificateAuthority: issue_from_csr, bundle_pem
            pki.trust_domain,
            pki.authorize_node,
            certificate,
            host=self.config.api_host if self.config.agent_port else None,
            port=self.config.agent_port,
            unix_path=self.config.agent_unix,
            app_host=self.config.mesh_app_host,
            node_revoked=pki.node_revoked,
        )
        assert self.http is not None
        self.http.add_route("/api/v1/agents", self.agents.servicer.attested_view)

    def _start_desired_state(self, trust_domain: str) -> None:
        """The desired-state layer: plan and apply documents warm, hot reload of --config, the HTTP routes."""
        from edgectl.config import parse_document
        from edgectl.config_api import (
            APPLY_PATH,
            CONFIG_PATH,
            HEALTH_PATH,
            HISTORY_PATH,
            MAX_DOCUMENT_BODY,
            PLAN_PATH,
            apply_route,
            plan_route,
        )
        from edgectl.desired_state import DesiredState
        from edgectl.plan import PlanInputs
        from placement.convergence import NamedProbe

        assert self.http is not None and self.routes is not None and self.mesh is not None
        routes, mesh = self.routes, self.mesh

        def plan_inputs(applied: FabricSpec | None) -> PlanInputs:
            plan, tables = routes.tables
            return PlanInputs(
                state=self.bus.state,
                applied_spec=applied,
                mesh_config=mesh.publisher.config,
                ready_workloads=mesh.publisher.built_ready,
                routes=plan,
                compiled=tables if plan is not None else None,
                trust_domain=trust_domain,
            )

        save = None
        if self.config.state_dir:
            from edgectl.desired_store import SavedDocument, save_document

            state_dir = self.config.state_dir

            def save(revision: str, source: str, files: Mapping[str, bytes]) -> None:
                paused = bool(self.git is not None and self.git.status_view()["paused"])
                save_document(state_dir, SavedDocument(revision, source, files, paused))

        desired = self.desired = DesiredState(
            self.bus.publish,
            plan_inputs,
            save=save,
            prune=self.config.prune,
            probes=[
                NamedProbe("routes", routes.runs),
                NamedProbe("sidecars", mesh.converged),
            ],
            progress=self.convergence_progress,
        )
        self.metrics.config_view = self.config_view
        self.metrics.sources.config_outcomes = desired.outcomes
        spec, revision = self._initial
        if self.config.fabric_file:
            source = f"file {self.config.fabric_file}"
        elif self.config.git is not None and self.config.git.applied_sha:
            source = f"git {self.config.git.applied_sha[:12]} (saved in --state-dir)"
        else:
            source = "empty"
        desired.adopt(spec, revision, source)
        self.http.add_route(CONFIG_PATH, lambda _state: self.config_view())
        self.http.add_route(HISTORY_PATH, lambda _state: desired.history_view())
        self.http.add_route(HEALTH_PATH, self.config_health)
        # A document is big (up to 32 MiB) and planning it costs CPU: both routes serve local operators only,
        # and where the API does not listen on loopback they refuse a body before reading much of it.
        from edgectl.http_access import is_loopback

        document_body = MAX_DOCUMENT_BODY if is_loopback(self.config.http_host) else 4096
        plan = loopback_only(
            plan_route(desired, parse_document),
            http_host=self.config.http_host,
            what="planning a desired-state document",
            instead="run edgectl diff on the controller's machine",
        )
        self.http.add_route(PLAN_PATH, plan, method="POST", max_body=document_body)
        git_source = None
        if self.config.git is not None:
            from edgectl.git_source import redacted_url

            git_source = f"{redacted_url(self.config.git.url)} {self.config.git.ref}"
        apply = loopback_only(
            apply_route(desired, parse_document, git_source=git_source),
            http_host=self.config.http_host,
            what="applying a desired-state document",
            instead="apply from the controller's machine, or commit to its git source",
        )
        if self.cluster is not None:
            apply = self._leader_only(apply)
        self.http.add_route(APPLY_PATH, apply, method="POST", max_body=document_body)
        if self.config.git is not None:
            self._start_git(desired, self.config.git)
        elif self.config.fabric_file:
            from edgectl.config_watch import ConfigWatcher

            interval = self.config.config_watch_interval_s
            self.config_watch = ConfigWatcher(self.config.fabric_file, self.reload_config, interval or None).start()
            # The file may have changed while the servers started (it was read before them): look once now.
            self.config_watch.reload()

    def _start_git(self, desired: DesiredState, options: GitOptions) -> None:
        """Follow a git ref: every commit planned and applied like a file (a bad one rejected, the last good
        one kept), status and history in /api/v1/config, and the webhook, rollback and resume routes."""
        import tempfile

        from edgectl.config import parse_document
        from edgectl.desired_state import DocumentRefused
        from edgectl.git_api import WEBHOOK_BODY, resume_route, rollback_route, sync_route
        from edgectl.git_source import GitSource
        from edgectl.git_sync import ApplyResult, GitSync

        work_dir = options.work_dir
        if not work_dir:
            if self.config.state_dir:
                work_dir = str(Path(self.config.state_dir) / "git")
            else:
                work_dir = self._temporary_git_dir = tempfile.mkdtemp(prefix="edgectl-git-")
        source = GitSource(options.url, options.ref, options.path, work_dir)

        def apply_commit(sha: str, files: dict[str, bytes]) -> ApplyResult:
            try:
                spec, _content_hash = parse_document(files)
            except FabricFileError as exc:
                desired.reject(str(exc), sha, f"git {sha[:12]}")
                return ApplyResult(False, str(exc))
            try:
                desired.apply(spec, sha, f"git {sha[:12]}", sources=files)  # not converged in time: health
            except DocumentRefused as exc:  # recorded as the status already
                return ApplyResult(False, str(exc))
            return ApplyResult(True)

        on_resume = None
        if self.config.state_dir:
            from edgectl.desired_store import save_resumed

            state_dir = self.config.state_dir

            def on_resume() -> None:
                save_resumed(state_dir)

        git = self.git = GitSync(
            source,
            apply_commit,
            options.interval_s,
            applied_sha=options.applied_sha,
            paused=options.paused,
            on_resume=on_resume,
        ).start()
        git.sync_now()
        assert self.http is not None
        # A forge's push payload is not needed, but must not be refused for its size (GitHub's reach MiBs).
        self.http.add_route("/api/v1/git/sync", sync_route(git), method="POST", max_body=WEBHOOK_BODY)
        for path, route in (("/api/v1/git/rollback", rollback_route(git)), ("/api/v1/git/resume", resume_route(git))):
            guarded = loopback_only(
                route,
                http_host=self.config.http_host,
                what="a git rollback or resume",
                instead="run it on the controller's machine",
            )
            self.http.add_route(path, guarded, method="POST")

    def config_health(self, state: FabricState) -> dict[str, Any]:
        """/api/v1/config/health: each declared object of the running revision, healthy or why not."""
        from edgectl.object_health import object_health

        assert self.desired is not None and self.desired.applied_spec is not None
        routes, mesh, replicas = self.routes, self.mesh, self.replicas
        services = replicas.status_view(state)["services"] if replicas is not None else {}
        return object_health(
            self.desired.applied_spec,
            state,
            applied_generation=self.desired.applied_generation,
            switch_generations={d: s.applied_generation for d, s in routes.status.items()} if routes else {},
            replicas={name: (v["replicas"], v["placed"], v["pending"]) for name, v in services.items()},
            # behind(-1): every connected sidecar that has not applied its current snapshot
            sidecars_behind=mesh.behind(-1) if mesh is not None else (),
        )

    def config_view(self) -> dict[str, Any]:
        """/api/v1/config: the desired-state layer, and with a git source what git says (SHA seen and
        applied, paused); the status is git's when git has the newer word (out-of-sync, error)."""
        assert self.desired is not None
        view = self.desired.view()
        view["objects"] = self.config_health(self.bus.state)["counts"]
        if self.git is None:
            return view
        git = self.git.status_view()
        view["git"] = git
        view["seen_sha"], view["applied_sha"], view["paused"] = git["seen_sha"], git["applied_sha"], git["paused"]
        if view["status"] != "progressing" and git["status"] != "synced":
            view["status"] = git["status"]
            view["error"] = view["error"] or git["error"] or None
        return view

    def reload_config_soon(self) -> None:
        """SIGHUP: read --config now, on the watcher's thread (never in a signal handler)."""
        if self.config_watch is not None:
            self.config_watch.reload()

    def reload_config(self) -> None:
        """Read --config again and apply it if it changed (the file watcher, SIGHUP). A bad document is
        rejected with its FILE:LINE problems; the last good one keeps running. A replica that does not lead
        leaves it to the leader (the desired state is the cluster's)."""
        from edgectl.config import load_desired
        from edgectl.desired_state import DocumentRefused

        desired = self.desired
        if desired is None:
            return
        if self.cluster is not None and not self.cluster.leads():
            LOG.info("--config: not the leader; the leader applies desired-state changes for the cluster")
            return
        path = self.config.fabric_file
        try:
            document = load_desired(path)
        except FabricFileError as exc:
            desired.reject(str(exc), "", f"file {path}")
            return
        if document.short_revision == desired.revision and desired.status != "error":
            LOG.info("%s: revision %s is already running", path, document.short_revision)
            return
        try:
            desired.apply(document.spec, document.short_revision, f"file {path}", sources=document.sources)
        except DocumentRefused:
            pass  # its problems are the status and were logged
        except Exception as exc:
            LOG.error("applying %s failed: %s", path, exc)

    def stop(self) -> None:
        if self.cluster is not None and self.cluster.member is not None:
            self.cluster.member.stop()  # resign first: the next replica leads while this one winds down
        if self.git is not None:
            self.git.stop()
        if self._temporary_git_dir is not None:
            import shutil

            shutil.rmtree(self._temporary_git_dir, ignore_errors=True)
        if self.config_watch is not None:
            self.config_watch.stop()
        if self.replicas is not None:
            self.replicas.stop()
        if self.placement is not None:
            self.placement.stop()
        if self.agents is not None:
            self.agents.stop()
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
        if self.events is not None:
            self.events.stop()  # ends every event stream
        if self.http is not None:
            self.http.stop()
        if self.cluster is not None:
            self.cluster.stop()
        else:
            self.bus.stop()
        if self.store is not None:
            self.store.stop()
        self.collector.stop()
