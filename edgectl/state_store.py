"""``--state-dir``: placements survive a restart.

The model's durable part is its workloads (topology is rediscovered, the fabric file is re-read).
They are written as one JSON document, atomically (temp file + rename), by a background thread
that coalesces bursts: the model writer only hands over the newest state.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from netmodel.events import Event, WorkloadPlaced
from netmodel.ids import HostId, NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import AffinityScope, AffinityTerm, PlacementConstraints, Resources, Tier, Workload

LOG = logging.getLogger("edgectl.state_store")
FORMAT_VERSION = 2  # 2: workloads carry their placement constraints; version 1 files are still read


def _constraints_to_json(constraints: PlacementConstraints | None) -> dict[str, Any] | None:
    if constraints is None:
        return None
    return {
        "tiers": sorted(t.value for t in constraints.tiers),
        "max_latency_ms": constraints.max_latency_ms,
        "near": list(constraints.near),
        "affinity": [{"service": a.service, "scope": a.scope.value} for a in constraints.affinity],
        "anti_affinity": [{"service": a.service, "scope": a.scope.value} for a in constraints.anti_affinity],
    }


def _constraints_from_json(raw: Any) -> PlacementConstraints | None:
    if raw is None:
        return None

    def terms(items: Any) -> tuple[AffinityTerm, ...]:
        return tuple(AffinityTerm(ServiceName(t["service"]), AffinityScope(t["scope"])) for t in items)

    latency = raw.get("max_latency_ms")
    return PlacementConstraints(
        tiers=frozenset(Tier(t) for t in raw.get("tiers", [])),
        max_latency_ms=None if latency is None else float(latency),
        near=tuple(HostId(h) for h in raw.get("near", [])),
        affinity=terms(raw.get("affinity", [])),
        anti_affinity=terms(raw.get("anti_affinity", [])),
    )


def workloads_to_json(workloads: Mapping[WorkloadId, Workload]) -> dict[str, Any]:
    out = []
    for w in sorted(workloads.values(), key=lambda w: w.id):
        raw = asdict(replace(w, constraints=None))
        raw["constraints"] = _constraints_to_json(w.constraints)
        out.append(raw)
    return {"version": FORMAT_VERSION, "workloads": out}


def workloads_from_json(doc: Any) -> list[Workload]:
    if not isinstance(doc, dict) or doc.get("version") not in (1, FORMAT_VERSION):
        raise ValueError(f"unsupported state format (expected version 1 or {FORMAT_VERSION})")
    out = []
    for raw in doc.get("workloads", []):
        out.append(
            Workload(
                id=WorkloadId(raw["id"]),
                service=ServiceName(raw["service"]),
                spiffe_id=SpiffeId(raw["spiffe_id"]),
                resources=Resources(int(raw["resources"]["cpu_millis"]), int(raw["resources"]["memory_mib"])),
                node=NodeId(raw["node"]) if raw.get("node") else None,
                port=int(raw.get("port", 0)),
                constraints=_constraints_from_json(raw.get("constraints")),
            )
        )
    return out


class StateStore:
    def __init__(self, directory: str) -> None:
        self.path = Path(directory) / "workloads.json"
        Path(directory).mkdir(parents=True, exist_ok=True)
        self._pending: FabricState | None = None
        self._saved_workloads: object = None
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="state-store", daemon=True)

    def load_events(self) -> list[Event]:
        """The events that restore saved placements (an unreadable file is reported, not fatal)."""
        if not self.path.exists():
            return []
        try:
            workloads = workloads_from_json(json.loads(self.path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            LOG.error("ignoring unreadable %s: %s", self.path, exc)
            return []
        return [WorkloadPlaced(w) for w in workloads]

    def start(self) -> None:
        self._thread.start()

    def on_change(self, event: Event, state: FabricState) -> None:
        if state.workloads is self._saved_workloads:
            return
        with self._wake:
            self._pending = state
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._pending is not None or self._stopping)
                state, self._pending = self._pending, None
                stopping = self._stopping
            if state is not None and state.workloads is not self._saved_workloads:
                self._write(state)
            if stopping:
                return

    def _write(self, state: FabricState) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        try:
            tmp.write_text(json.dumps(workloads_to_json(state.workloads), indent=2))
            os.replace(tmp, self.path)
            self._saved_workloads = state.workloads
        except OSError as exc:
            LOG.error("cannot save placements to %s: %s", self.path, exc)
