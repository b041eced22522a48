"""The route engine: keeps every switch's tables equal to what the model asks for.

Level-triggered, on its own thread: on each wake-up it takes the newest model, computes the route
plan (pure), compiles per-switch configs (pure, incrementally after a link change), diffs them
against what each switch is known to hold, and applies the difference make-before-break: group and
flow additions, a barrier, then deletions. What a switch holds is known by reading it
(reconciliation) when it connects, so a controller restart or a switch reconnect changes only what
differs and never flushes a table.

After a (re)start the engine waits for discovery to settle before programming: a plan computed
before the links are seen would withdraw every route the switches still carry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from netmodel.events import Event
from netmodel.ids import SwitchId, format_dpid
from netmodel.state import FabricState
from sdnctl.flows import (
    CompiledSwitch,
    SwitchConfig,
    SwitchDelta,
    base_flows,
    compile_all,
    diff_switch,
    recompile_switches,
)
from sdnctl.pathing import RoutePlan, changed_entries, compute_routes

if TYPE_CHECKING:  # os-ken is imported only when a controller runs
    from sdnctl.openflow import FabricApp

LOG = logging.getLogger("edgectl.sdnctl.engine")
SETTLE_QUIET_S = 1.0  # no discovery news for this long ...
SETTLE_MAX_S = 6.0  # ... or this long after a switch connected: program anyway


@dataclass
class SwitchStatus:
    applied_generation: int = -1
    last_delta_size: int = 0
    last_applied_at: float | None = None
    reconciled: bool = False


class RouteEngine:
    def __init__(self, app: FabricApp, state: Callable[[], FabricState]) -> None:
        self.app = app
        self._state = state
        self._wake = threading.Condition()
        self._dirty = True
        self._stopping = False
        self.plan: RoutePlan | None = None
        self._compiled: dict[SwitchId, CompiledSwitch] = {}  # desired tables for the current plan
        # What each switch holds: a SwitchConfig read from it, or the CompiledSwitch we last wrote.
        self._installed: dict[SwitchId, SwitchConfig | CompiledSwitch] = {}
        self.status: dict[SwitchId, SwitchStatus] = {}
        self._last_discovery = time.monotonic()
        self._last_connect = time.monotonic()
        self._settled = False
        self._thread = threading.Thread(target=self._run, name="route-engine", daemon=True)
        app.on_switch_error = self._on_switch_error

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()

    def on_model_change(self, event: Event, state: FabricState) -> None:
        """Bus subscriber: note what happened and wake the engine; never works here."""
        name = type(event).__name__
        if name in ("SwitchConnected", "LinkDiscovered"):
            self._last_discovery = time.monotonic()
            if name == "SwitchConnected":
                self._last_connect = self._last_discovery
        with self._wake:
            self._dirty = True
            self._wake.notify()

    def _on_switch_error(self, dpid: SwitchId, text: str) -> None:
        # Our picture of that switch may be wrong: read it again before the next diff.
        self._installed.pop(dpid, None)
        with self._wake:
            self._dirty = True
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._dirty or self._stopping, timeout=0.5)
                if self._stopping:
                    return
                self._dirty = False
            try:
                self._converge()
            except Exception:
                LOG.exception("route engine round failed; retrying")
                time.sleep(0.2)
                with self._wake:
                    self._dirty = True

    def _discovery_settled(self, state: FabricState) -> bool:
        if self._settled:
            return True
        now = time.monotonic()
        topo = state.topology
        connected = {s for s, sw in topo.switches.items() if sw.connected}
        pending = [
            link
            for link, attrs in topo.links.items()
            if attrs.declared and attrs.up and not attrs.discovered and link.src in connected and link.dst in connected
        ]
        quiet = now - self._last_discovery > SETTLE_QUIET_S
        if (not pending and quiet) or now - self._last_connect > SETTLE_MAX_S:
            self._settled = True
            LOG.info("discovery settled (%d switches, %d declared links not seen)", len(connected), len(pending))
        return self._settled

    def _converge(self) -> None:
        state = self._state()
        connected = [s for s, sw in state.topology.switches.items() if sw.connected]
        for dpid in list(self._installed):
            if dpid not in connected:
                del self._installed[dpid]
        # Reconcile: learn what a newly connected switch holds before changing anything on it.
        for dpid in connected:
            if dpid not in self._installed:
                current = self.app.read_config(dpid)
                if current is None:
                    continue
                self._installed[dpid] = current
                self.status.setdefault(dpid, SwitchStatus()).reconciled = True
                LOG.info(
                    "switch %s holds %d flows, %d groups of ours",
                    format_dpid(dpid),
                    len(current.flows),
                    len(current.groups),
                )
                self._ensure_base_flows(dpid, current)
        if not self._discovery_settled(state):
            with self._wake:
                self._dirty = True  # look again shortly
            time.sleep(0.2)
            return
        previous = self.plan
        plan = compute_routes(state, previous=previous)
        deltas: dict[SwitchId, SwitchDelta] = {}
        if previous is not None and previous.switches == plan.switches and previous.endpoints == plan.endpoints:
            # Incremental: recompile the changed entries; where a switch holds exactly the old tables,
            # the delta of those entries is all it needs.
            for dpid, (compiled, delta) in recompile_switches(
                plan, self._compiled, changed_entries(previous, plan)
            ).items():
                if self._installed.get(dpid) is self._compiled.get(dpid):
                    deltas[dpid] = delta
                self._compiled[dpid] = compiled
        else:
            self._compiled = compile_all(plan)
        self.plan = plan
        for dpid in plan.switches:
            installed = self._installed.get(dpid)
            if dpid in deltas or installed is None or installed is self._compiled[dpid]:
                continue
            current = installed.config if isinstance(installed, CompiledSwitch) else installed
            deltas[dpid] = diff_switch(current, self._compiled[dpid].config)
        ready = {dpid: delta for dpid, delta in deltas.items() if dpid in self._installed}
        self._apply(state.generation, {d: delta for d, delta in ready.items() if delta}, ready)
        # A switch that already holds exactly what this generation asks runs it too: say so, or a
        # migration that changes no route would wait on switches with nothing to do.
        for dpid in plan.switches:
            if dpid not in ready and self._installed.get(dpid) is self._compiled.get(dpid) is not None:
                status = self.status.setdefault(dpid, SwitchStatus())
                status.applied_generation = max(status.applied_generation, state.generation)

    def _ensure_base_flows(self, dpid: SwitchId, current: SwitchConfig) -> None:
        """LLDP and ARP to the controller go in at once: discovery needs them before any route."""
        missing = base_flows() - current.flows
        if not missing:
            return
        if self.app.send_phase(dpid, SwitchDelta(add_flows=tuple(sorted(missing))), "make") and self.app.barriers(
            {dpid}
        ):
            self._installed[dpid] = SwitchConfig(current.flows | missing, current.groups)
        else:
            self._installed.pop(dpid, None)

    def _apply(
        self, generation: int, deltas: dict[SwitchId, SwitchDelta], all_deltas: dict[SwitchId, SwitchDelta]
    ) -> None:
        # Make: everything new or changed, everywhere, then barriers; only then break.
        made = {dpid for dpid, delta in deltas.items() if self.app.send_phase(dpid, delta, "make")}
        confirmed = self.app.barriers(made)
        breaking = {dpid for dpid in confirmed if deltas[dpid].delete_flows or deltas[dpid].delete_groups}
        broken = {dpid for dpid in breaking if self.app.send_phase(dpid, deltas[dpid], "break")}
        confirmed -= breaking - self.app.barriers(broken)
        now = time.time()
        for dpid in all_deltas:
            status = self.status.setdefault(dpid, SwitchStatus())
            if dpid in deltas and dpid not in confirmed:
                self._installed.pop(dpid, None)  # unknown now: read it again next round
                continue
            if dpid in deltas:
                self._installed[dpid] = self._compiled[dpid]
                status.last_delta_size = deltas[dpid].size
                status.last_applied_at = now
                LOG.info(
                    "switch %s: applied %d changes for generation %d", format_dpid(dpid), deltas[dpid].size, generation
                )
            status.applied_generation = generation
        if len(confirmed) != len(deltas):
            with self._wake:
                self._dirty = True
