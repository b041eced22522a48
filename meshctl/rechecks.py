"""Which open xDS streams a change may no longer allow, and so must authorize again. Pure.

A stream is authorized on its first request and before it serves anything after (``meshctl.servicer``);
a recheck also ends an idle stream that is no longer allowed. What authorizes a stream is the PKI's
identities (a node's own SVID), its revocations, and for a node agent's SVID where the workload is
placed: a change of one of those concerns the streams of the nodes it names. Rechecking every stream on
every placement was ~1,000 wake-ups per placement at 1,000 sidecars (and as many authorizations).
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
