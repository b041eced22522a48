"""Certificates a long-running process presents on its control connections, renewed while it runs.

The controller's gRPC and OpenFlow server certificates, a switch's OpenFlow client files, a sidecar's
xDS client certificate: each is one ``RenewedCertificate`` -- issued at once, then issued again at
half-life (``pki.policy.rotation_time``, the same rule and per-certificate jitter as the workload SVIDs)
and handed to ``on_renew`` (write the files, swap the TLS context). ``RenewalTimer`` is the thread that
renews a set of them when they come due.

Adapter (a thread and a clock); the decisions are the policy's pure functions of ``now``. A failed
renewal (an expired CA) keeps the current certificate while it lasts, is logged, and is retried after
``retry_s``: the timer never spins on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from pki.due_timer import DueTimer
from pki.policy import DEFAULT_JITTER_FRACTION, Svid, due_for_rotation, rotation_time, serial_jitter

LOG = logging.getLogger("edgectl.pki.renewal")

Issue = Callable[[float], Svid]
"""``issue(now) -> Svid``: a new certificate (with its key) for the holder."""


class RenewedCertificate:
    """One holder's certificate: ``current`` is always the newest; ``on_renew(svid)`` runs for the first
    one (here, so a failure to write its files fails the caller) and for every renewal."""

    def __init__(
        self,
        name: str,
        issue: Issue,
        now: float,
        *,
        on_renew: Callable[[Svid], object] | None = None,
        jitter_fraction: float = DEFAULT_JITTER_FRACTION,
    ) -> None:
        self.name = name
        self._issue = issue
        self._on_renew = on_renew
        self._jitter_fraction = jitter_fraction
        self._lock = threading.Lock()
        self.renewals = 0
        self.current = self._renew(now)

    def renews_at(self) -> float:
        info = self.current.info
        return rotation_time(info, self._jitter_fraction, serial_jitter(info))

    def due(self, now: float) -> bool:
        info = self.current.info
        return due_for_rotation(info, now, self._jitter_fraction, serial_jitter(info))

    def renew_if_due(self, now: float) -> bool:
        """Renew if half-life (less jitter) has passed; True if renewed. Raises what issuing raises."""
        with self._lock:
            if not self.due(now):
                return False
            self.current = self._renew(now)
            self.renewals += 1
            return True

    def _renew(self, now: float) -> Svid:
        svid = self._issue(now)
        if self._on_renew is not None:
            self._on_renew(svid)
        return svid


class RenewalTimer:
    """A daemon thread that renews each certificate when it comes due."""

    def __init__(
        self,
        certificates: Iterable[RenewedCertificate] = (),
        *,
        clock: Callable[[], float] = time.time,
        max_sleep_s: float = 30.0,
        min_sleep_s: float = 0.05,
        retry_s: float = 5.0,
    ) -> None:
        self._certificates = list(certificates)
        self._retry_s = retry_s
        self._retry_at: dict[str, float] = {}
        self._timer = DueTimer(
            "control-cert-renewal",
            self.next_at,
            self._renew,
            clock=clock,
            max_sleep_s=max_sleep_s,
            min_sleep_s=min_sleep_s,
        )

    def add(self, certificate: RenewedCertificate) -> None:
        self._certificates.append(certificate)
        self._timer.wake()

    def start(self) -> RenewalTimer:
        self._timer.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._timer.stop(timeout)

    def next_at(self) -> float | None:
        """When the timer next has work: the earliest renewal (or retry after a failure)."""
        times = [max(cert.renews_at(), self._retry_at.get(cert.name, 0.0)) for cert in list(self._certificates)]
        return min(times, default=None)

    def renew_due(self, now: float) -> list[str]:
        """Renew every certificate due at ``now`` (the timer's step; tests call it directly). Names renewed."""
        renewed = []
        for cert in list(self._certificates):
            if now < self._retry_at.get(cert.name, 0.0):
                continue
            try:
                if cert.renew_if_due(now):
                    renewed.append(cert.name)
                    info = cert.current.info
                    LOG.info(
                        "renewed %s certificate: serial %x, valid until %d", cert.name, info.serial, info.not_after
                    )
                self._retry_at.pop(cert.name, None)
            except Exception as exc:  # an expired CA, a full disk: keep the old one while it lasts
                self._retry_at[cert.name] = now + self._retry_s
                LOG.warning("renewing the %s certificate failed (retry in %.0f s): %s", cert.name, self._retry_s, exc)
        return renewed

    def _renew(self, now: float) -> bool:
        self.renew_due(now)
        return False  # a failed renewal is retried by next_at (retry_s), not by backing off the loop
