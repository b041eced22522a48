"""Which open xDS streams a change may no longer allow, and so must authorize again. Pure.

A stream is authorized on its first request and before it serves anything after (``meshctl.servicer``);
a recheck also ends an idle stream that is no longer allowed. What authorizes a stream is the PKI's
identities (a node's own SVID), its revocations, and for a node agent's SVID where the workload is
placed: a change of one of those concerns the streams of the nodes it names. Rechecking every stream on
every placement was ~1,000 wake-ups per placement at 1,000 sidecars (and as many authorizations).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from netmodel.events import Event, workloads_touched
from netmodel.state import FabricState

EVERY_STREAM = None
"""What a change that may concern any stream returns."""

Placement = tuple[Mapping[Any, Any], Mapping[Any, Any]]
"""A model's (workloads, hosts): what authorization reads of it."""

Svid = TypeVar("Svid")
Made = TypeVar("Made")


def placement_of(state: FabricState) -> Placement:
    return (state.workloads, state.hosts)


def model_rechecks(event: Event, before: Placement | None, after: Placement) -> tuple[str, ...] | None:
    """The nodes whose streams ``event`` (which made ``after`` from ``before``) may no longer allow:
    () none (a link, a latency, a health change), the workloads it touched, or ``EVERY_STREAM`` (the
    hosts changed, or the event does not say which workloads it touched)."""
    if before is None or before[1] is not after[1]:
        return EVERY_STREAM
    if before[0] is after[0]:
        return ()
    touched = workloads_touched(event)
    return EVERY_STREAM if touched is None else tuple(sorted(map(str, touched)))


def identity_changes(
    served: Mapping[str, tuple[Svid, Made]], identities: Mapping[str, Svid], make: Callable[[Svid], Made]
) -> tuple[dict[str, tuple[Svid, Made]], list[str]]:
    """``identities`` (node -> SVID) paired with what ``make`` makes of each, reusing what ``served`` holds
    for an SVID that is the very same object (so an unchanged identity stays the same object: the snapshot
    builder finds changes by identity); and the nodes whose SVID is new, replaced or gone."""
    fresh: dict[str, tuple[Svid, Made]] = {}
    changed: list[str] = []
    for node, svid in identities.items():
        known = served.get(node)
        if known is not None and known[0] is svid:
            fresh[node] = known
        else:
            fresh[node] = (svid, make(svid))
            changed.append(node)
    changed += [node for node in served if node not in fresh]
    return fresh, changed
