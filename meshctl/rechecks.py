"""Which open xDS streams a change may no longer allow, and so must authorize again. Pure.

A stream is authorized on its first request and before it serves anything after (``meshctl.servicer``);
a recheck also ends an idle stream that is no longer allowed. What authorizes a stream is the PKI's
identities (a node's own SVID), its revocations, and for a node agent's SVID where the workload is
placed: a change of one of those concerns the streams of the nodes it names. Rechecking every stream on
every placement was ~1,000 wake-ups per placement at 1,000 sidecars (and as many authorizations); on
every revocation (each eviction, each forced rotation), as many again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
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
    svids: Mapping[str, Svid],
    made: Mapping[str, Made],
    identities: Mapping[str, Svid],
    make: Callable[[Svid], Made | None],
    only: Iterable[str] | None = None,
) -> tuple[dict[str, Svid], dict[str, Made], list[str]]:
    """What changed from ``svids`` (node -> the SVID last handed over) to ``identities``: the new node ->
    SVID map, the new node -> ``make(svid)`` map (nodes ``make`` gives None for left out), and the nodes
    whose SVID is new, replaced or gone. ``made`` is what ``make`` made of ``svids``: an SVID that is the
    very same object keeps what was made of it (so the snapshot builder, which finds changes by identity,
    sees no change). ``only``: the nodes that may have changed, when the PKI says (else every node is
    looked at: ~1.5 ms at 10,000)."""
    if only is None:
        get = svids.get
        candidates: Iterable[str] = [node for node, svid in identities.items() if get(node) is not svid]
        candidates = [*candidates, *(node for node in svids if node not in identities)]
    else:
        candidates = only
    new_svids, new_made = dict(svids), dict(made)
    changed: list[str] = []
    for node in candidates:
        svid = identities.get(node)
        if svid is svids.get(node):
            continue
        changed.append(node)
        new_made.pop(node, None)
        if svid is None:
            new_svids.pop(node, None)
            continue
        new_svids[node] = svid
        result = make(svid)
        if result is not None:
            new_made[node] = result
    return new_svids, new_made, changed


def revocation_rechecks(
    before: Any,
    after: Any,
    served_before: Mapping[str, Any],
    served_after: Mapping[str, Any],
    changed: Iterable[str],
) -> tuple[str, ...] | None:
    """The nodes whose streams a new revocation list may no longer allow: ``after`` replaces ``before``
    (each with ``serials`` {serial: not_after} and ``identities``); ``served_before``/``served_after``:
    node -> the SVID handed to SDS (``info.serial``, ``spiffe_id``); ``changed``: the nodes whose SVID is
    new, replaced or gone. A stream is allowed only with a certificate of the SPIFFE id issued to its node
    (or a node SVID, never revoked by serial here), so a newly revoked serial that was a changed node's
    certificate (an eviction, a forced rotation) can be shown only on the streams of the nodes holding its
    id: those, and the changed nodes, are rechecked. ``EVERY_STREAM`` for a newly revoked identity, or a
    serial of a certificate not served here (issued by ``pki issue``, by another replica), or no list."""
    before_ids, after_ids = getattr(before, "identities", None), getattr(after, "identities", None)
    if before_ids is None or after_ids is None or after_ids - before_ids:
        return EVERY_STREAM
    nodes = set(changed)
    newly = after.serials.keys() - before.serials.keys()
    infos = (getattr(served_before.get(node), "info", None) for node in nodes)
    served = {info.serial: info.spiffe_id for info in infos if info is not None}  # the changed nodes' old ones
    if not newly <= served.keys():
        return EVERY_STREAM
    if newly:  # (one node per SPIFFE id as placement names them; shared ids are looked for all the same)
        revoked_ids = {served[serial] for serial in newly}
        nodes.update(node for node, svid in served_after.items() if svid.spiffe_id in revoked_ids)
    return tuple(sorted(nodes))
