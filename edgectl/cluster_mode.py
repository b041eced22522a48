"""The controller as one replica of a cluster on etcd (``edgectl run --etcd URLS --replica-id ID``).

    replica = Replica(options, seed=lambda: state_from_config, observer=metrics.observe_event)
    bus = replica.bus               # the controller's model bus: every change through etcd's log
    replica.start_bus()             # the model from etcd (the first replica seeds it from its --config)
    ...start the servers...
    replica.on_leadership(hook)     # each part follows the election: roles, forwarding, loops
    replica.join(addresses)         # register (a duplicate id is refused) and campaign
    replica.status_view()           # GET /api/v1/cluster

What lives where (docs/cluster.md): desired state, placements and the observed network are events in the
shared log, so every replica holds the same model; OpenFlow connections, roles and the xDS streams are each
replica's own. Only the leader acts on the network and on placements; the others serve reads, xDS, and
forward placement writes to it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from cluster.election import Candidate, Leadership
from cluster.etcd import EtcdClient, EtcdError
from cluster.log_bus import ClusterBus
from cluster.member import ClusterMember
from cluster.shared_readiness import SharedReadiness
from edgectl.bus import EventBus, Observer
from edgectl.config import ClusterOptions
from netmodel.state import FabricState

LOG = logging.getLogger("edgectl.cluster")

LeadershipHook = Callable[[Leadership], None]


class Replica:
    def __init__(self, options: ClusterOptions, *, seed: Callable[[], FabricState], observer: Observer | None) -> None:
        self.options = options
        self.client = EtcdClient.from_urls(options.etcd_urls, timeout_s=options.etcd_timeout_s)
        self.root = b"edgectl/" + options.name.encode() + b"/"
        self.bus = ClusterBus(
            self.client,
            self.root,
            options.replica_id,
            seed=seed,
            local_bus=lambda state: EventBus(state, observer=observer),
            is_leader=self.leads,
            fence=self._fence,
        )
        # The lease's own client: a keepalive to an unreachable etcd must give up within half the TTL, so the
        # leader notices before its lease can end (the log's requests may take longer under load).
        self.lease_client = EtcdClient.from_urls(
            options.etcd_urls, timeout_s=min(options.etcd_timeout_s, options.lease_ttl_s / 2)
        )
        self.member: ClusterMember | None = None
        self._hooks: list[LeadershipHook] = []
        self.leadership = Leadership(None, options.replica_id)
        self.readiness: SharedReadiness | None = None

    @property
    def replica_id(self) -> str:
        return self.options.replica_id

    def _fence(self) -> tuple[bytes, int] | None:
        member = self.member
        return member.fence() if member is not None else None

    def leads(self) -> bool:
        return self.member is not None and self.member.may_lead()

    def standby_reason(self) -> str | None:
        """Why this replica may not change placements now (None while it leads)."""
        if self.leads():
            return None
        leader = self.leadership.leader
        if leader is None:
            return "no replica leads the cluster right now (an election is under way): retry"
        return f"replica {self.replica_id} does not lead: the leader is {leader.replica_id} ({leader.api or 'no API'})"

    def current_generation(self) -> int:
        """The generation of the leader etcd has now (0: none, or etcd unreachable): a replica (re)starting
        asks its switches for SLAVE at it, which they accept (an older one they refuse as stale)."""
        try:
            kvs, _ = self.client.get_prefix(self.root + b"election/", keys_only=True)
        except EtcdError:
            return 0
        return min((kv.create_revision for kv in kvs), default=0)

    def start_bus(self) -> None:
        self.bus.start()

    def on_leadership(self, hook: LeadershipHook) -> None:
        self._hooks.append(hook)

    def join(self, addresses: Candidate) -> None:
        self.member = ClusterMember(
            self.lease_client,
            self.root.rstrip(b"/"),
            self.replica_id,
            addresses,
            ttl_s=self.options.lease_ttl_s,
            on_change=self._changed,
            advertise_host=self.options.advertise_host,
        )
        self.member.start()

    def _changed(self, leadership: Leadership) -> None:
        """On the member's notifier thread. A replica about to lead first applies every entry its predecessor
        wrote: its failover pass and its switch reports then start from the predecessor's last word."""
        if leadership.is_leader and not self.bus.catch_up(timeout_s=2.0):
            LOG.warning("leading before the log was read to its head (etcd slow or unreachable)")
        self.leadership = leadership
        for hook in self._hooks:
            try:
                hook(leadership)
            except Exception:  # one part failing to follow must not keep the others from it
                LOG.exception("following the election failed in %r", hook)

    def share_readiness(self, readiness: Any) -> None:
        """The sidecars' readiness (``meshctl.readiness.SidecarReadiness``) seen by any replica counts here."""
        shared = self.readiness = SharedReadiness(
            self.client, self.root, readiness.mark_ready, lambda: self.bus.state, self.leads
        ).start()
        readiness.add_ready_listener(shared.saw_ready)

    def fenced(self, dpid: int, generation: int) -> None:
        """A switch refused our MASTER request as stale: a newer leader exists; stop acting as one (once per
        generation; a late refusal of an older one is ignored by ``step_down``)."""
        LOG.error("switch %016x refused generation %d as stale: another replica leads; stepping down", dpid, generation)
        member = self.member
        if member is not None:  # on os-ken's event thread: the etcd round trip goes elsewhere
            threading.Thread(target=member.step_down, args=(generation,), name="cluster-step-down", daemon=True).start()

    def stop(self) -> None:
        if self.member is not None:
            self.member.stop()
        if self.readiness is not None:
            self.readiness.stop()
        self.bus.stop()
        self.client.close()
        self.lease_client.close()

    def metrics_view(self) -> dict[str, float]:
        member = self.member
        return {
            "leader": 1.0 if self.leads() else 0.0,
            "generation": float(self.leadership.generation),
            "leadership_changes": float(member.leadership_changes if member is not None else 0),
            "etcd_reachable": 1.0 if member is None or member.etcd_ok else 0.0,
            "read_only": 1.0 if self.bus.read_only_reason else 0.0,
            "applied_revision": float(self.bus.applied_revision),
        }

    # -- status -------------------------------------------------------------------------------------------------
    def status_view(self, switch_roles: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
        member = self.member
        leader = self.leadership.leader
        try:
            members = [
                {
                    "endpoint": status.endpoint,
                    "healthy": status.error is None,
                    "leader": status.error is None and status.member_id == status.leader_id,
                    "raft_term": status.raft_term,
                    "db_size": status.db_size,
                    "version": status.version,
                    "error": status.error,
                }
                for status in self.client.status()
            ]
        except EtcdError as exc:
            members = [{"endpoint": ",".join(self.client.endpoints), "healthy": False, "error": str(exc)}]
        return {
            "replica_id": self.replica_id,
            "cluster": self.options.name,
            "role": "leader" if self.leads() else "follower",
            "leader": None
            if leader is None
            else {
                "replica_id": leader.replica_id,
                "generation": leader.revision,
                "http": leader.http,
                "api": leader.api,
                "xds": leader.xds,
            },
            "replicas": [
                {
                    "replica_id": c.replica_id,
                    "http": c.http,
                    "api": c.api,
                    "xds": c.xds,
                    "campaign_revision": c.revision,
                }
                for c in (member.candidates if member is not None else [])
            ],
            "etcd": {
                "reachable": member.etcd_ok if member is not None else True,
                "error": member.etcd_error if member else "",
                "members": members,
            },
            "read_only": self.bus.read_only_reason or None,
            "fatal": (member.fatal or None) if member is not None else None,
            "log": {
                "applied_revision": self.bus.applied_revision,
                "checkpoint_revision": self.bus.checkpoint_revision,
            },
            "leadership_changes": member.leadership_changes if member is not None else 0,
            "switches": {f"{dpid:016x}": role for dpid, role in sorted((switch_roles or {}).items())},
        }
