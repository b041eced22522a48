"""``--state-dir``: placements survive a restart, and an answered placement survives a crash.

The model's durable part is its workloads (topology is rediscovered, the fabric file is re-read) and,
per service, the highest workload number ever given (so no id is reused after a restart, also of an
instance removed since). They are written as one JSON document, atomically (temp file, fsync, rename,
fsync of the directory), by a background thread doing group commit: the model writer only hands over
the newest state, and one write covers every change made since the previous one. From 1,000 workloads a
write appends the changes to ``workloads.journal`` (fsync) instead, folded into the document every 1,000
lines; a restart reads the document, then replays the journal. ``wait_durable(g)``
returns once a commit covers generation ``g``: the placement API answers a Place, Migrate or Evict only
then, so an answered change is on disk even if the process is killed right after.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, cast

from netmodel.changes import WorkloadChanges
from netmodel.events import Event, WorkloadPlaced
from netmodel.ids import HostId, NodeId, ServiceName, SpiffeId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import AffinityScope, AffinityTerm, PlacementConstraints, Resources, Tier, Workload
from placement.naming import workload_number

LOG = logging.getLogger("edgectl.state_store")
# 2: workloads carry their placement constraints; version 1 files are still read. "id_high_water" is an
# optional key of version 2 (an older reader ignores it; a file without it takes the mark from its ids).
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, FORMAT_VERSION)
DEFAULT_DURABLE_TIMEOUT_S = 10.0
JOURNAL_FROM = 1_000
"""From this many workloads a commit appends its changes to ``workloads.journal`` (one JSON line each)
instead of rewriting ``workloads.json``: at 10,000 workloads a rewrite is ~2 MB and ~50 ms per commit."""
COMPACT_AFTER = 1_000
"""Journal lines after which the next commit rewrites ``workloads.json`` and empties the journal."""
RETRY_AFTER_FAILURE_S = 1.0


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


def workloads_to_json(
    workloads: Mapping[WorkloadId, Workload], id_high_water: Mapping[ServiceName, int] | None = None
) -> dict[str, Any]:
    # In the model's order, which is placement order: bandwidth reservations are granted in that order, so
    # a restart must not let a later instance take an earlier one's room (netmodel/bandwidth.py).
    out = [_workload_to_json(w) for w in workloads.values()]
    return {"version": FORMAT_VERSION, "workloads": out, "id_high_water": dict(sorted((id_high_water or {}).items()))}


def _workload_to_json(workload: Workload) -> dict[str, Any]:
    raw = asdict(replace(workload, constraints=None))
    raw["constraints"] = _constraints_to_json(workload.constraints)
    return raw


def _check_version(doc: Any) -> None:
    if not isinstance(doc, dict) or doc.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"unsupported state format (expected version {', '.join(map(str, READABLE_VERSIONS))})")


def id_high_water_from_json(doc: Any) -> dict[ServiceName, int]:
    """Per service, the highest workload number the file has seen: its mark, and every id it lists."""
    _check_version(doc)
    highest: dict[ServiceName, int] = {}
    marks = doc.get("id_high_water") or {}
    if not isinstance(marks, dict):
        raise ValueError("id_high_water must map service names to numbers")
    for service, number in marks.items():
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise ValueError(f"id_high_water[{service!r}] must be a count, got {number!r}")
        highest[ServiceName(service)] = number
    for raw in doc.get("workloads", []):
        _note_id(highest, ServiceName(raw["service"]), WorkloadId(raw["id"]))
    return highest


def _note_id(highest: dict[ServiceName, int], service: ServiceName, workload: WorkloadId) -> None:
    n = workload_number(service, workload)
    if n is not None and n > highest.get(service, 0):
        highest[service] = n


def workloads_from_json(doc: Any) -> list[Workload]:
    _check_version(doc)
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
                declared=bool(raw.get("declared", False)),  # absent in files written before replicas were kept
                bandwidth_mbps=None if raw.get("bandwidth_mbps") is None else float(raw["bandwidth_mbps"]),
            )
        )
    return out


class StateNotSaved(Exception):
    """A change was applied in memory but is not (yet) on disk."""


class StateStore:
    """``on_model_change`` (a bus subscriber) hands states over; a writer thread commits them in groups.

    ``fsync`` is the one system call tests replace (to see the order of writes, or to hold a commit).
    """

    def __init__(
        self,
        directory: str,
        *,
        fsync: Callable[[int], None] = os.fsync,
        journal_from: int = JOURNAL_FROM,
        compact_after: int = COMPACT_AFTER,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / "workloads.json"
        self.journal_path = self.directory / "workloads.journal"
        self._journal_from = journal_from
        self._compact_after = compact_after
        self._written: Mapping[WorkloadId, Workload] | None = None  # the writer's: what file + journal hold
        self._changes: WorkloadChanges | None = None
        """Which workloads the events since the state being committed touched (under ``_wake``)."""
        self._journal_exists: bool | None = None  # the writer's: known to exist (None: not looked yet)
        self._written_highest: dict[ServiceName, int] = {}
        self._journal_lines = 0
        self._epoch = 0
        """Journal lines count for the file whose ``journal_epoch`` they carry; a rewrite takes the next epoch
        (0: no journal used yet, the key is left out), so lines a crash left behind are never replayed on it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._highest: dict[ServiceName, int] = {}
        self._pending: FabricState | None = None
        self._handed_workloads: object = None  # the workloads of the newest state handed over
        self._last_change_generation = -1  # the generation of that state
        self._durable_generation = -1  # every change up to it is on disk
        self._failed: tuple[int, str] | None = None  # (generation, why) of the last failed commit
        self._commits = 0
        self._fragments: dict[WorkloadId, tuple[Workload, str]] = {}  # the writer's: each workload's JSON
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="state-store", daemon=True)

    def load_events(self) -> list[Event]:
        """The events that restore saved placements (an unreadable file is reported, not fatal).
        Also reads the id high-water mark (``id_floors``)."""
        if not self.path.exists():
            return []
        try:
            doc = json.loads(self.path.read_text())
            workloads = workloads_from_json(doc)
            highest = id_high_water_from_json(doc)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            LOG.error("ignoring unreadable %s: %s", self.path, exc)
            return []
        epoch = doc.get("journal_epoch", 0)
        workloads = self._replay_journal(workloads, highest, epoch if isinstance(epoch, int) else 0)
        with self._wake:
            for service, number in highest.items():
                self._highest[service] = max(number, self._highest.get(service, 0))
        return [WorkloadPlaced(w) for w in workloads]

    def _replay_journal(self, workloads: list[Workload], highest: dict[ServiceName, int], epoch: int) -> list[Workload]:
        """``workloads`` (the file's, in order) with the journal's changes applied, in order; ``highest``
        raised by them. A line that does not parse ends the replay: only the last can be torn (a commit
        cut short by a crash, never answered)."""
        self._epoch = epoch
        if not self.journal_path.exists():
            return workloads
        by_id = {w.id: w for w in workloads}
        try:
            lines = self.journal_path.read_text().splitlines()
        except OSError as exc:
            LOG.error("ignoring unreadable %s: %s", self.journal_path, exc)
            return workloads
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
                if entry.get("e") != epoch:
                    continue  # of an earlier file, folded into this one already
                del entry["e"]
                if "placed" in entry:
                    (workload,) = workloads_from_json({"version": FORMAT_VERSION, "workloads": [entry["placed"]]})
                    by_id[workload.id] = workload  # an id already there keeps its place, as in the model
                    _note_id(highest, workload.service, workload.id)
                elif "removed" in entry:
                    by_id.pop(WorkloadId(entry["removed"]), None)
                else:
                    for service, n in id_high_water_from_json({"version": FORMAT_VERSION, **entry}).items():
                        highest[service] = max(n, highest.get(service, 0))
            except (ValueError, KeyError, TypeError) as exc:
                LOG.warning("%s: line %d unreadable (%s): the journal ends there", self.journal_path, number, exc)
                break
        return list(by_id.values())

    def id_floors(self) -> dict[ServiceName, int]:
        """Per service, the highest workload number ever given: new ids must go above it."""
        with self._wake:
            return dict(self._highest)

    @property
    def commits(self) -> int:
        """How many writes reached the disk (group commit: fewer than the changes they cover)."""
        return self._commits

    def start(self, state: FabricState | None = None) -> None:
        """Start the writer. ``state``: the model as restored from this store's file (it is on disk)."""
        if state is not None:
            with self._wake:
                if self._pending is None:
                    self._handed_workloads = state.workloads
                    self._last_change_generation = max(self._last_change_generation, state.generation)
                    self._durable_generation = max(self._durable_generation, state.generation)
        self._thread.start()

    def on_model_change(self, event: Event, state: FabricState) -> None:
        """Bus subscriber (model writer thread): hand the state over; never blocks on the disk."""
        with self._wake:
            if isinstance(event, WorkloadPlaced):
                _note_id(self._highest, event.workload.service, event.workload.id)
            if self._changes is not None:
                self._changes.note(event, state)
            if state.workloads is self._handed_workloads:
                return
            self._handed_workloads = state.workloads
            self._last_change_generation = state.generation
            self._pending = state
            self._wake.notify_all()

    def wait_durable(self, generation: int, timeout: float = DEFAULT_DURABLE_TIMEOUT_S) -> None:
        """Return once every workload change up to ``generation`` is on disk (fsync'd); raise
        ``StateNotSaved`` if the commit that covers it failed or did not come within ``timeout``.
        Call it for a generation this store has been handed (the bus calls subscribers before it
        resolves a publish future): generations that changed no workload are covered by the commit
        of the change before them."""
        with self._wake:
            target = min(generation, self._last_change_generation)

            def settled() -> bool:
                failed = self._failed is not None and self._failed[0] >= target
                return self._durable_generation >= target or failed or self._stopped_writing()

            self._wake.wait_for(settled, timeout)
            if self._durable_generation >= target:
                return
            if self._failed is not None and self._failed[0] >= target:
                raise StateNotSaved(f"cannot save placements to {self.path}: {self._failed[1]}")
            if self._stopped_writing():
                raise StateNotSaved(f"the state store of {self.path} has stopped")
            raise StateNotSaved(f"placements not saved to {self.path} within {timeout:g} s")

    def check_durable(self, generation: int) -> str | None:
        """``wait_durable`` as the placement API asks it: None once on disk, else why not."""
        try:
            self.wait_durable(generation)
        except StateNotSaved as exc:
            return str(exc)
        return None

    def stop(self) -> None:
        """Write what is pending, then end the writer."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread.is_alive():
            self._thread.join(5)

    def _stopped_writing(self) -> bool:
        return self._stopping and not self._thread.is_alive()

    def _run(self) -> None:
        try:
            while True:
                with self._wake:
                    self._wake.wait_for(lambda: self._pending is not None or self._stopping)
                    state, self._pending = self._pending, None
                    highest = dict(self._highest)
                    if state is None:  # stopping, nothing left to write
                        return
                    changes, self._changes = self._changes, WorkloadChanges(state, with_health=False)
                if not self._commit(state, highest, changes):
                    with self._wake:  # retry the newest state after a pause (unless a newer one came)
                        if self._pending is None:
                            self._pending = state
                        if self._stopping:
                            return
                        self._wake.wait_for(lambda: self._stopping, RETRY_AFTER_FAILURE_S)
        finally:
            with self._wake:
                self._wake.notify_all()  # waiters see the writer gone

    def _render(self, workloads: Mapping[WorkloadId, Workload], highest: Mapping[ServiceName, int]) -> str:
        """``workloads_to_json`` as text, one workload a line. Each workload (immutable) is serialized once
        and its text reused while it stays: a commit waited on costs a join, not a serialization of
        every placement (73 ms at 1,200 workloads, against 2 ms for the write and both fsyncs)."""
        fragments: dict[WorkloadId, tuple[Workload, str]] = {}
        lines = []
        for workload in workloads.values():  # placement order, as workloads_to_json
            cached = self._fragments.get(workload.id)
            if cached is None or cached[0] is not workload:
                cached = (workload, json.dumps(_workload_to_json(workload)))
            fragments[workload.id] = cached
            lines.append(cached[1])
        self._fragments = fragments
        top: dict[str, Any] = {"version": FORMAT_VERSION, "id_high_water": dict(sorted(highest.items()))}
        if self._epoch:
            top["journal_epoch"] = self._epoch
        head = json.dumps(top)
        return head[:-1] + ', "workloads": [\n' + ",\n".join(lines) + "\n]}\n"

    def _journal_entries(
        self,
        workloads: Mapping[WorkloadId, Workload],
        highest: Mapping[ServiceName, int],
        touched: set[WorkloadId] | None,
    ) -> list[str] | None:
        """The journal lines that take what is on disk to ``workloads``, or None when the file must be
        rewritten instead (small models, a long journal, nothing written yet, an instance replaced in place).
        ``touched``: the workloads changed since what is on disk, when the events said (else all compared)."""
        written = self._written
        if written is None or len(workloads) < self._journal_from or self._journal_lines >= self._compact_after:
            return None
        e = self._epoch
        if touched is None:
            removed = written.keys() - workloads.keys()
            added = [w for w in workloads.values() if w.id not in written]  # in the model's order
            if any(written[w.id] is not w for w in workloads.values() if w.id in written):
                return None  # changed where it stands: the file keeps the order
        else:
            removed = {w for w in touched if w in written and w not in workloads}
            if any(written.get(w) is not workloads[w] for w in touched if w in workloads and w in written):
                return None
            added = _last_added(workloads, {w for w in touched if w in workloads and w not in written})
        lines = [json.dumps({"e": e, "removed": workload_id}) for workload_id in removed]
        lines += [json.dumps({"e": e, "placed": _workload_to_json(workload)}) for workload in added]
        raised = {s: n for s, n in highest.items() if n > self._written_highest.get(s, 0)}
        if raised:  # ids given and withdrawn between two commits are in no "placed" line
            lines.append(json.dumps({"e": e, "id_high_water": dict(sorted(raised.items()))}))
        return lines

    def _append(self, lines: list[str]) -> None:
        created = not self._journal_exists and not self.journal_path.exists()
        with open(self.journal_path, "a") as handle:
            handle.write("".join(line + "\n" for line in lines))
            handle.flush()
            self._fsync(handle.fileno())
        if created:
            self._fsync_directory()
        self._journal_exists = True
        self._journal_lines += len(lines)

    def _fsync_directory(self) -> None:
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            self._fsync(directory)
        finally:
            os.close(directory)

    def _commit(
        self, state: FabricState, highest: dict[ServiceName, int], changes: WorkloadChanges | None = None
    ) -> bool:
        """Write ``state`` durably: its changes appended to the journal (``_journal_entries``), or the whole
        file: the temp file's data, then the rename, then the directory entry, then the journal emptied.
        One commit covers every change up to ``state.generation``."""
        tmp = self.path.with_suffix(".json.tmp")
        try:
            touched = None
            if changes is not None and self._written is not None:
                touched = changes.between((self._written, None), changes.maps(state))
            lines = self._journal_entries(state.workloads, highest, touched)
            if lines is not None:
                if lines:
                    self._append(lines)
                self._written, self._written_highest = state.workloads, highest
                return self._committed(state)
            self._written = None  # until the rewrite below is complete
            if self._epoch or len(state.workloads) >= self._journal_from:
                self._epoch += 1  # journal lines from before this file are not its own
            data = self._render(state.workloads, highest)
            with open(tmp, "w") as handle:
                handle.write(data)
                handle.flush()
                self._fsync(handle.fileno())
            os.replace(tmp, self.path)
            self._fsync_directory()
            if self.journal_path.exists():  # folded into the file (left by a crash: of an older epoch)
                with open(self.journal_path, "w") as handle:
                    self._fsync(handle.fileno())
            self._journal_lines = 0
            self._written, self._written_highest = state.workloads, highest
        except OSError as exc:
            LOG.error("cannot save placements to %s: %s", self.path, exc)
            self._written = None  # a journal append may be torn: the next commit rewrites the file
            with self._wake:
                self._failed = (state.generation, str(exc))
                self._wake.notify_all()
            return False
        return self._committed(state)

    def _committed(self, state: FabricState) -> bool:
        with self._wake:
            self._durable_generation = max(self._durable_generation, state.generation)
            self._commits += 1
            self._wake.notify_all()
        return True


def _last_added(workloads: Mapping[WorkloadId, Workload], added: set[WorkloadId]) -> list[Workload]:
    """The workloads of ``added`` in the model's order: a new one is appended to the model's map, so they
    are among its last entries (read from the end, as many as there are)."""
    if not added:
        return []
    found: list[Workload] = []
    for workload_id in reversed(cast(Any, workloads)):  # (a frozen map reads backwards as its dict does)
        if workload_id in added:
            found.append(workloads[workload_id])
            if len(found) == len(added):
                break
    return found[::-1]
