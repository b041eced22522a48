"""The PKI inside ``edgectl run``: the CA, the identity manager and the rotation timer, fed by the model.

Adapter (a thread, logging, the clock). The controller creates one, subscribes ``on_model_change`` to
the bus *before* meshctl's subscriber (so a new workload's SVID exists before meshctl publishes an
endpoint for it), registers who gets the ``IdentitySnapshot`` (meshctl's SDS), and starts it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netmodel.events import Event, workloads_touched
from netmodel.ids import NodeId, WorkloadId
from netmodel.state import FabricState
from pki.authz import check_node_caller, check_operator, check_xds_node
from pki.errors import InvalidSpiffeId, PkiError, RevocationsUnavailable, RotationTooSoon
from pki.identities import IdentityChanges, IdentityManager, IdentitySnapshot, Issuer, desired_identities
from pki.policy import FORCED_ROTATION_INTERVAL_S, forced_rotation_wait, host_spiffe_id
from pki.revocation_sync import RevocationSync
from pki.rotation import RotationTimer

if TYPE_CHECKING:
    from pki.cli import PkiRunOptions
    from pki.revocation_store import RevocationStore

LOG = logging.getLogger("edgectl.pki")

Listener = Callable[[IdentitySnapshot], None]
CONTROL_TTL_S = 7 * 86400
PEER_MEMO_LIMIT = 65_536
"""Client certificates whose reading is kept (~200 bytes each): more than the sidecars and agents of a
fabric at the scale benchmark's size, so each stream's certificate is parsed once, not per message."""


CRL_REFRESH_FRACTION = 0.5
"""A CRL is signed anew once it is this fraction of its validity old (and whenever the revocations change)."""


@dataclass(frozen=True, slots=True)
class _SignedCrl:
    serials: object
    """The revoked serials signed (the same map: the same CRL; a revoked identity is not in a CRL)."""
    next_update_s: int
    signed_at: float
    pem: str


@dataclass(frozen=True, slots=True)
class _PeerCertificate:
    """What the checks of a verified client certificate need from it, read once."""

    spiffe_id: str = ""
    serial: int = 0
    expires_at: float = 0.0
    expiry_text: str = ""
    not_an_svid: str | None = None
    """Why the certificate is no X.509-SVID (None: it is one)."""


def _read_peer(certificate_pem: str) -> _PeerCertificate:
    from pki import certs
    from pki.verify import check_leaf_profile

    try:
        leaf = certs.load_pem_chain(certificate_pem, "peer certificate")[0]
        spiffe_id = str(check_leaf_profile(leaf).uri)
    except PkiError as exc:
        return _PeerCertificate(not_an_svid=str(exc))
    return _PeerCertificate(
        spiffe_id,
        leaf.serial_number,
        certs.to_epoch(leaf.not_valid_after_utc),
        f"{leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
    )


@dataclass(frozen=True)
class ControlTls:
    """PEM material for a gRPC listener with mTLS: its chain and key, and the roots clients must chain to."""

    cert_chain_pem: str
    private_key_pem: str = field(repr=False)
    bundle_pem: str = field(repr=False)


def declared_hosts(state: FabricState) -> list[str]:
    """Hosts the fabric file names: each gets a client identity (learned hosts are keyed by MAC)."""
    return sorted(str(host.id) for host in state.hosts.values() if host.declared)


class PkiService:
    def __init__(
        self,
        issuer: Issuer,
        state: Callable[[], FabricState],
        *,
        hosts: Callable[[FabricState], Iterable[str]] = declared_hosts,
        clock: Callable[[], float] = time.time,
        max_sleep_s: float = 30.0,
        forced_rotation_interval_s: float = FORCED_ROTATION_INTERVAL_S,
        revocation_stores: Sequence[RevocationStore] = (),
    ) -> None:
        self.issuer = issuer
        self._forced_interval_s = forced_rotation_interval_s
        self._forced_at: dict[str, float] = {}
        self._forced_lock = threading.Lock()
        self.trust_domain = issuer.policy.trust_domain
        self.manager = IdentityManager(issuer)
        self._state = state
        self._hosts = hosts
        self._clock = clock
        self._listeners: list[Listener] = []
        self._notify_lock = threading.Lock()
        self._last_refused: tuple[tuple[str, str], ...] = ()
        self._timer = RotationTimer(self.manager, self._changed, clock=clock, max_sleep_s=max_sleep_s)
        self._revocations = [
            RevocationSync(store, self.manager, self._changed, clock=clock) for store in revocation_stores
        ]
        """Keep the revocation list where it outlives this process (none: in memory only)."""
        self._peers: dict[bytes, _PeerCertificate] = {}
        """SHA-256 of a client certificate's PEM -> what was read from it (``_peer``, on every xDS message)."""
        self._peers_lock = threading.Lock()
        self._crl: _SignedCrl | None = None
        self._reconciled: tuple[Mapping[Any, Any], frozenset[str]] | None = None
        """(the model's hosts, the host subjects) of the last full reconcile: while the hosts are the same,
        an event that names its workloads is reconciled for those alone (a host subject among them: in full)."""
        self._crl_lock = threading.Lock()

    @classmethod
    def from_options(
        cls,
        options: PkiRunOptions,
        state: Callable[[], FabricState],
        *,
        shared_revocations: Sequence[RevocationStore] = (),
        **kwargs: Any,
    ) -> PkiService:
        """From ``pki.cli.run_options(args)``: load the CA (raises ``PkiError`` with a one-line reason). The
        revocation list is kept in the CA directory (``revoked.json``, and ``crl.pem`` signed with it, the
        files ``edgectl pki rotate --dir`` writes) and in each of ``shared_revocations`` (a replicated
        controller's etcd): what one of them gains is taken in and written to the others."""
        from pki.ca import CertificateAuthority
        from pki.revocation_store import FileRevocationStore

        ca = CertificateAuthority.load(options.directory, options.passphrase, ttl_s=options.svid_ttl_s)
        clock = kwargs.get("clock", time.time)
        in_directory = FileRevocationStore(
            options.directory, sign_crl=lambda revocations: ca.crl_pem(revocations, clock())
        )
        return cls(ca, state, revocation_stores=(in_directory, *shared_revocations), **kwargs)

    @property
    def snapshot(self) -> IdentitySnapshot:
        return self.manager.snapshot

    def subscribe(self, listener: Listener) -> None:
        """``listener(snapshot)`` after every change (e.g. meshctl: new secrets for SDS)."""
        self._listeners.append(listener)

    def start(self) -> PkiService:
        for stored in self._revocations:
            stored.load()  # before anything is issued: a revoked identity gets nothing
        self._reconcile(self._state(), rotate_due=True)
        self._timer.start()
        for stored in self._revocations:
            stored.start()
        LOG.info("PKI for spiffe://%s: %d identities issued", self.trust_domain, len(self.manager.snapshot.identities))
        return self

    def stop(self) -> None:
        self._timer.stop()
        for stored in self._revocations:
            stored.stop()

    def sync_revocations(self) -> bool:
        """Store the revocation list now and take in what other writers added to the stored ones (the
        threads do both every few seconds); False if a store failed. An operator's revocation is stored
        before it is answered; if a store fails it is in force here all the same, and is tried again."""
        stored_everywhere = True
        for stored in self._revocations:
            try:
                stored.flush()
            except Exception as exc:
                LOG.error("revocation list not stored (in force here; tried again every few seconds): %s", exc)
                stored_everywhere = False
        return stored_everywhere

    def on_model_change(self, event: Event, state: FabricState) -> None:
        """Bus subscriber (model writer thread): issue what new or moved workloads need, nothing more. An
        event that names the workloads it touched (a placement, a removal) is reconciled for those alone
        when the hosts did not change; any other, for every subject the model asks for."""
        touched = workloads_touched(event)
        reconciled = self._reconciled
        if touched is None or reconciled is None or reconciled[0] is not state.hosts or touched & reconciled[1]:
            self._reconcile(state, rotate_due=False)
            return
        wanted: dict[str, str | None] = {}
        for workload_id in touched:
            workload = state.workloads.get(workload_id)
            wanted[str(workload_id)] = workload.spiffe_id if workload is not None and workload.node else None
        self._report(self.manager.reconcile_subjects(wanted, self._clock()))

    def rotate(self, spiffe_id: str) -> IdentityChanges:
        """Force new keys for ``spiffe_id`` now (compromised key); the old certificates are revoked.
        At most once per ``forced_rotation_interval_s`` per identity (``RotationTooSoon`` otherwise):
        each forced rotation adds unexpired serials to the revocation list."""
        with self._forced_lock:
            now = self._clock()
            wait = forced_rotation_wait(self._forced_at.get(spiffe_id), now, self._forced_interval_s)
            if wait > 0:
                raise RotationTooSoon(
                    f"{spiffe_id} was rotated {now - self._forced_at[spiffe_id]:.0f} s ago; an identity is rotated "
                    f"at most once every {self._forced_interval_s:.0f} s: retry in {wait:.0f} s",
                    wait,
                )
            changes = self.manager.rotate(spiffe_id, now)
            # Only identities rotated within the window are remembered: the map stays as small as that.
            self._forced_at = {other: at for other, at in self._forced_at.items() if now - at < self._forced_interval_s}
            self._forced_at[spiffe_id] = now
        self._changed(changes)
        stored = self.sync_revocations()
        self._timer.wake()
        return replace(changes, stored=stored)

    def crl_pem(self, next_update_s: int = 86400) -> str:
        """A CRL of the currently revoked serials, signed by the intermediate (Envoy: validation_context.crl
        with only_verify_leaf_cert_crl). Re-send it when ``snapshot.revocations`` changes and well before
        ``next_update_s`` passes: verifiers refuse an expired CRL.

        The same CRL (the same bytes) while the revoked serials are the same and it is younger than half its
        validity: signed anew on every call (each signature differs), it changed the trust bundle, and
        with it every sidecar's snapshot, on every placement (at 10,000 workloads under --pki-dir, Places
        ran at ~10/s; 35/s with this alone, ~130/s with the PKI's passes made per subject)."""
        revocations, now = self.snapshot.revocations, self._clock()
        with self._crl_lock:
            signed = self._crl
            if (
                signed is not None
                and signed.serials is revocations.serials
                and signed.next_update_s == next_update_s
                and now - signed.signed_at < next_update_s * CRL_REFRESH_FRACTION
            ):
                return signed.pem
            pem = str(self.issuer.crl_pem(revocations, now, next_update_s))  # type: ignore[attr-defined]
            self._crl = _SignedCrl(revocations.serials, next_update_s, now, pem)
            return pem

    def control_tls(
        self,
        *,
        ip_addresses: Iterable[str] = ("127.0.0.1",),
        dns_names: Iterable[str] = ("localhost",),
        ttl_s: int = CONTROL_TTL_S,
    ) -> ControlTls:
        """A certificate for gRPC listeners (xDS over TCP, the placement API) to present:
        ``spiffe://<td>/controller/edgectl`` with IP/DNS SANs (gRPC clients check the name they dialled).
        Issued once; ``edgectl run`` uses ``edgectl.cert_renewal`` instead, which renews it at half-life."""
        from pki.policy import controller_spiffe_id

        svid = self.issuer.issue_with_new_key(
            controller_spiffe_id(self.trust_domain),
            self._clock(),
            ttl_s=ttl_s,
            ip_addresses=ip_addresses,
            dns_names=dns_names,
        )  # type: ignore[call-arg]
        return ControlTls(svid.cert_chain_pem, svid.private_key_pem, self.snapshot.bundle_pem)

    def authorize_xds(self, node_id: str, certificate_pem: str) -> str | None:
        """meshctl's ``XdsTls.authorize``: may the holder of this (TLS-verified) client certificate get
        node ``node_id``'s configuration and secrets? None if so, else why not (with both ids)."""
        peer, refusal = self._peer(certificate_pem)
        if refusal is not None:
            return refusal
        # Asked on every message of every xDS stream: the node's own identity only, not a map of all.
        svid = self.snapshot.identities.get(node_id)
        identities = {node_id: str(svid.spiffe_id)} if svid is not None else {}
        placed = self._state().workloads.get(WorkloadId(node_id))
        placed_on = {node_id: str(placed.node) if placed is not None and placed.node is not None else None}
        return check_xds_node(node_id, peer, identities, trust_domain=self.trust_domain, placed_on=placed_on)

    def authorize_node(self, certificate_pem: str) -> tuple[str, str | None]:
        """The node agent API's check of a verified client certificate: (its node, None) for an unexpired
        node SVID of this trust domain, not revoked (``revoke_node``), of a node still in the model; else
        ("", why not)."""
        peer, refusal = self._peer(certificate_pem)
        if refusal is not None:
            return "", refusal
        node, refusal = check_node_caller(peer, self.trust_domain)
        if refusal is None and NodeId(node) not in self._state().nodes:
            return "", f"node {node} is not in the fabric (removed): its node SVID is no longer accepted"
        return node, refusal

    def revoke_node(self, node: str) -> IdentityChanges:
        """Cut node ``node``'s agent off now: its node identity is revoked, so every node SVID it holds is
        refused on every call (renewal included) until ``restore_node``; stored with the revocation list,
        so a restarted controller refuses it too."""
        from pki.policy import node_spiffe_id

        changes = self.manager.revoke_identity(node_spiffe_id(self.trust_domain, node), self._clock())
        self._changed(changes)
        return replace(changes, stored=self.sync_revocations())

    def restore_node(self, node: str) -> IdentityChanges:
        """Accept node ``node``'s identity again (after ``revoke_node``); the agent attests anew."""
        from pki.policy import node_spiffe_id

        spiffe_id = node_spiffe_id(self.trust_domain, node)
        changes = self.manager.restore_identity(spiffe_id, self._clock())
        if not changes.changed:
            return changes
        if not self.sync_revocations():
            # Undone: a restore that only this process knows of could be merged away later (a writer that
            # restored and revoked it again meanwhile looks unchanged), or revive the revocation after a
            # restart. A revocation kept in memory only errs the safe way; a restore does not.
            self.manager.revoke_identity(spiffe_id, self._clock())
            raise RevocationsUnavailable(f"{spiffe_id} stays revoked: the revocation list cannot be stored now")
        self._changed(changes)
        return replace(changes, stored=True)

    def node_revoked(self, node: str) -> bool:
        from pki.policy import node_spiffe_id

        return node_spiffe_id(self.trust_domain, node) in self.snapshot.revocations.identities

    def authorize_operator(self, certificate_pem: str) -> str | None:
        """The placement API's check: an operator or controller identity of this trust domain, not revoked."""
        peer, refusal = self._peer(certificate_pem)
        return refusal if refusal is not None else check_operator(peer, self.trust_domain)

    def _peer(self, certificate_pem: str) -> tuple[str, str | None]:
        """The verified client certificate's SPIFFE id, and why it is refused now (None: it is not)."""
        key = hashlib.sha256(certificate_pem.encode()).digest()
        peer = self._peers.get(key)
        if peer is None:
            peer = _read_peer(certificate_pem)
            with self._peers_lock:
                self._peers[key] = peer
                if len(self._peers) > PEER_MEMO_LIMIT:
                    del self._peers[next(iter(self._peers))]  # the oldest: a stream's own is read again
        if peer.not_an_svid is not None:
            return "", f"the client certificate is not an X.509-SVID: {peer.not_an_svid}"
        # TLS checked the validity at the handshake; a connection (or a resumed session) outlives it.
        if self._clock() >= peer.expires_at:
            return peer.spiffe_id, f"the client certificate of {peer.spiffe_id} expired at {peer.expiry_text}"
        return peer.spiffe_id, self.snapshot.revocations.reason_revoked(peer.serial, peer.spiffe_id)

    def trust_crls_pem(self) -> str:
        """The CRLs a TLS verifier that checks the whole chain needs, to append to the trust bundle given
        to Envoy (``MeshServer.use_identities(..., crl_pem=...)``): the intermediate's (revoked SVIDs)
        and the root's (made at ``pki init``). "" when the CA has no root CRL (a CA directory older than
        it): Envoy would then refuse every chain, so no CRL is served and a revoked certificate is refused
        only once it expires."""
        root_crl = str(getattr(self.issuer, "root_crl_pem", ""))
        if not root_crl:
            return ""
        return self.crl_pem() + root_crl

    def openflow_tls(self, directory: str | Path, **kwargs: Any) -> Any:
        """The controller's OpenFlow TLS files (``pki.tls.TlsFiles``) from this CA."""
        from pki.tls import openflow_controller_tls

        return openflow_controller_tls(self.issuer, directory, self._clock(), **kwargs)  # type: ignore[arg-type]

    def _reconcile(self, state: FabricState, *, rotate_due: bool) -> None:
        desired = desired_identities(state, self.trust_domain)
        hosts: set[str] = set()
        for host in self._hosts(state):
            try:
                desired[str(host)] = host_spiffe_id(self.trust_domain, str(host))
                hosts.add(str(host))
            except InvalidSpiffeId as exc:  # a host id that cannot be a SPIFFE path segment
                LOG.debug("no identity for host %s: %s", host, exc)
        # The model path looks at what changed only; the timer's pass (rotate_due) at every subject.
        changes = self.manager.reconcile(desired, self._clock(), rotate_due=rotate_due, changed_only=not rotate_due)
        self._reconciled = (state.hosts, frozenset(hosts))
        self._report(changes)

    def _report(self, changes: IdentityChanges) -> None:
        if changes.refused != self._last_refused:  # log refusals when they change, not on every event
            for subject, why in changes.refused:
                LOG.warning("no identity for %s: %s", subject, why)
            self._last_refused = changes.refused
        for subject, why in changes.failed:
            LOG.warning("no certificate for %s: %s", subject, why)
        self._changed(changes)

    def _changed(self, changes: IdentityChanges) -> None:
        if not changes.changed:
            return
        with self._notify_lock:  # writer and timer threads: listeners see snapshots in version order
            snapshot = self.manager.snapshot
            for listener in self._listeners:
                try:
                    listener(snapshot)
                except Exception:
                    LOG.exception("identity listener failed")
        for stored in self._revocations:
            stored.kick()  # stored by its thread (if the list changed), not on the model writer
