"""Names the placement service gives: workload ids and SPIFFE ids. Pure.

Workload ids are ``<service>-<n>``, n counting up per service and never reused (a migration makes a
new instance with a new id, so a number that came back would name two different instances in logs,
certificates and Watch streams); with ``--state-dir`` the highest n given is saved, so not after a
restart either.

SPIFFE ids are per workload instance, as ``pki/policy.py`` issues them (its grammar is the only one:
names and trust domains are checked there, so placement never gives an id the PKI would refuse):
``spiffe://<trust-domain>/svc/<service>/w/<workload-id>``. One identity per instance means one
compromised key is revoked alone; "any instance of web" is the prefix ``spiffe://<td>/svc/web/``.
The trust domain is the CA's (``edgectl run --pki-dir``: its issuer policy's, so the PKI can issue the
id), and ``edgectl.local`` without a CA, as meshctl's default.
"""

from __future__ import annotations

from collections.abc import Iterable

from netmodel.ids import ServiceName, SpiffeId, WorkloadId
from pki import policy

DEFAULT_TRUST_DOMAIN = "edgectl.local"


def check_trust_domain(name: str) -> str:
    """``name`` if it is a SPIFFE trust domain, else ``InvalidSpiffeId`` (a ValueError) saying why."""
    return policy.validate_trust_domain(name)


def workload_spiffe_id(trust_domain: str, service: ServiceName, workload: WorkloadId) -> SpiffeId:
    """``spiffe://<td>/svc/<service>/w/<workload>``; ``InvalidSpiffeId`` (a ValueError) if a part is invalid."""
    return policy.workload_spiffe_id(trust_domain, service, workload)


def workload_number(service: ServiceName, workload: WorkloadId) -> int | None:
    """n of ``<service>-<n>``, or None for an id of another form."""
    prefix = f"{service}-"
    if not workload.startswith(prefix):
        return None
    digits = workload[len(prefix) :]
    return int(digits) if digits.isdigit() and not digits.startswith("0") else None


def next_workload_ids(
    service: ServiceName, taken: Iterable[WorkloadId], count: int, floor: int = 0
) -> list[WorkloadId]:
    """``count`` fresh ids after every number in ``taken`` and after ``floor`` (the highest ever given)."""
    highest = floor
    for workload in taken:
        n = workload_number(service, workload)
        if n is not None and n > highest:
            highest = n
    return [WorkloadId(f"{service}-{highest + k}") for k in range(1, count + 1)]
