"""The route engine: keeps every switch's tables equal to what the model asks for.

Level-triggered, on its own thread: on each wake-up it takes the newest model, computes the route
plan (pure), compiles per-switch configs (pure, incrementally after a link change), diffs them
against what each switch is known to hold, and applies the difference make-before-break: group and
flow additions, a barrier, then deletions. What a switch holds is known by reading it
(reconciliation) when it connects, so a controller restart or a switch reconnect changes only what
differs and never flushes a table.

After a (re)start the engine waits for discovery to settle before programming: a plan computed
before the links are seen would withdraw every route the switches still carry. When the switches
carry routes (a restart), it also waits, for a bounded time, for every declared switch to reconnect.

Drift: every ``drift_interval_s`` the engine reads again each switch that holds exactly what it last
installed (no change of its own pending or unconfirmed on it) and, where someone changed the tables
behind its back, applies just the difference back. The check runs on the engine's own thread, between
rounds, so it never races an apply. Every delta sent is kept in a bounded record (``changes``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from netmodel.bandwidth import EMPTY_PLAN, ReservationPlan, plan_reservations, reserves_anything
from netmodel.events import Event
from netmodel.ids import SwitchId, format_dpid
from netmodel.state import FabricState
from sdnctl.acl import (
    COOKIE_ACL,
    COOKIE_ACL_MASK,
    EMPTY,
    AclChanges,
    AclTables,
    acl_inputs,
    compile_acl_incremental,
    same_inputs,
    with_acl,
)
from sdnctl.acl_counters import DropCounters, FlowKey, SpoofReports
from sdnctl.drift import Drift, DriftRecord, drift_message, drift_turn, find_drift
from sdnctl.flows import (
    CompiledSwitch,
    SwitchConfig,
    SwitchDelta,
    base_flows,
    compile_all,
    diff_switch,
    merge_deltas,
    recompile_switches,
    replace_entries,
)
from sdnctl.meters import EMPTY_PART, SwitchReservations, compile_reservations, with_reservations
from sdnctl.pathing import RoutePlan, changed_entries, compute_routes
from sdnctl.update_order import make_rounds

if TYPE_CHECKING:  # os-ken is imported only when a controller runs
    from sdnctl.openflow import FabricApp

LOG = logging.getLogger("edgectl.sdnctl.engine")
SETTLE_QUIET_S = 1.0  # no discovery news for this long ...
SETTLE_MAX_S = 6.0  # ... or this long after a switch connected: program anyway
# After a restart, a declared switch not connected yet is waited for this long after the last one that
# connected: OVS retries a lost controller with a backoff of up to 8 s (its default max_backoff), so the
# switches of one fabric come back seconds apart.
SETTLE_RECONNECT_S = 10.0
DRIFT_READ_TIMEOUT_S = 3.0  # a switch that has not answered a drift read by then is skipped this time
# One drift check reads switches holding at most this many compiled entries (an entry: a destination's
# route, ARP flow and group, or an instance's admission; at least one switch), those asked longest ago
# first: a fabric within it is read whole every interval, a larger one in turns. Reading every switch of a
# 500-switch fabric at once (~1.3 million flows and groups) took the controller's whole core every 10 s
# and held the engine thread, so migrations timed out waiting for their routes.
DRIFT_ENTRIES_PER_CHECK = 20_000
READ_BACK_TIMEOUT_S = 5.0  # switches taken over together (a new leader): read back at once, answers awaited this long
CHANGES_KEPT = 256
# ... and at most this many mods in all (the oldest deltas go first): a fabric's first install is thousands
# of mods per switch, and 256 of them kept every table entry they named alive long after it was replaced.
CHANGE_MODS_KEPT = 50_000


@dataclass
class SwitchStatus:
    applied_generation: int = -1
    last_delta_size: int = 0
    last_applied_at: float | None = None
    reconciled: bool = False
    drift: DriftRecord = field(default_factory=DriftRecord)


@dataclass(frozen=True, slots=True)
class AppliedChange:
    """One delta sent to one switch: for which generation, why (``plan``, ``drift``, ``base``),
    and whether the switch confirmed it (barrier)."""

    seq: int
    generation: int
    dpid: SwitchId
    reason: str
    at: float
    delta: SwitchDelta
    confirmed: bool


OnDrift = Callable[[SwitchId, str, Drift], None]
"""Called with the switch's dpid, its name and the drift found, before the heal is sent."""
OnRoutesComputed = Callable[[float], None]
"""Called with the seconds a new model generation's routes and tables took to compute."""
OnRoutesApplied = Callable[[float, int], None]
"""Called with the seconds a generation's changes took to send and confirm, and the rounds they took."""


class RecordDenial(Protocol):
    """``DenialLog.record`` (edgectl/policy_denials.py): where the ACL's drops are reported."""

    def __call__(self, *, layer: str, caller: str, service: str, at: float, count: int = 1, detail: str = "") -> None:
        pass


class RouteEngine:
    def __init__(
        self,
        app: FabricApp,
        state: Callable[[], FabricState],
        *,
        drift_interval_s: float = 10.0,
        on_drift: OnDrift | None = None,
        on_routes_computed: OnRoutesComputed | None = None,
        on_routes_applied: OnRoutesApplied | None = None,
        trust_domain: str = "edgectl.local",
        record_denial: RecordDenial | None = None,
        after_round: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self._state = state
        self.trust_domain = trust_domain
        self._record_denial = record_denial
        self.acl: AclTables = EMPTY
        """The network policy for the current model (sdnctl/acl.py), for readers on other threads."""
        self._acl_inputs: tuple[object, ...] | None = None
        # The ACL whose entries ``_compiled`` holds: set only once they are in, so a round that failed
        # half-way (a recompile raising) applies the ACL again on the next round.
        self._acl_applied: AclTables = EMPTY
        self._drop_counters = DropCounters()
        self.spoofing = SpoofReports()
        self._counters_lock = threading.Lock()
        self.drift_interval_s = drift_interval_s  # 0: no drift checks
        self._on_drift = on_drift
        self._on_routes_computed = on_routes_computed
        self._on_routes_applied = on_routes_applied
        self._after_round = after_round
        """Called after every round (which may have brought switches to a new generation: ``runs``)."""
        self._next_drift_check = time.monotonic() + drift_interval_s
        self._drift_tried_at: dict[SwitchId, float] = {}  # when a drift check last asked each switch
        self.applying_since: float | None = None
        """While route changes are out to the switches, waiting for their barriers: when they were sent
        (monotonic). Such a round moves no counter until it ends: readers tell busy from idle by this."""
        self._changes: deque[AppliedChange] = deque(maxlen=CHANGES_KEPT)
        self._change_mods = 0  # the mods of the deltas in _changes
        self._changes_lock = threading.Lock()
        self._change_seq = 0
        self._wake = threading.Condition()
        self._dirty = True
        self._stopping = False
        self.plan: RoutePlan | None = None
        self.reservation_plan: ReservationPlan = EMPTY_PLAN
        """The last bandwidth reservation plan (netmodel/bandwidth.py), for readers on other threads."""
        self._reservation_parts: dict[SwitchId, SwitchReservations] = {}  # per switch, of reservation_plan
        # The parts ``_compiled`` holds (set once they are in, as ``_acl_applied``).
        self._reservations_applied: dict[SwitchId, SwitchReservations] = {}
        self._compiled: dict[SwitchId, CompiledSwitch] = {}  # desired tables for the current plan
        self.tables: tuple[RoutePlan | None, Mapping[SwitchId, CompiledSwitch]] = (None, {})
        """The current plan and its tables, for readers on other threads (replaced, never changed)."""
        # What each switch holds: a SwitchConfig read from it, or the CompiledSwitch we last wrote.
        self._installed: dict[SwitchId, SwitchConfig | CompiledSwitch] = {}
        self.status: dict[SwitchId, SwitchStatus] = {}
        self._last_discovery = time.monotonic()
        self._last_connect = time.monotonic()
        self._settled = False
        self._carried_routes = False  # a switch held routes of ours when read: the controller restarted
        self._connected_since: float | None = None  # when the engine first saw a switch connected
        self._thread = threading.Thread(target=self._run, name="route-engine", daemon=True)
        app.on_switch_error = self._on_switch_error
        app.on_switch_role = self._on_switch_role
        # Replicated mode: only the switches that made this controller MASTER are read and written
        # (an app without roles, as the tests' fakes, may write everywhere).
        self._may_write: Callable[[SwitchId], bool] = getattr(app, "may_write", lambda _dpid: True)
        app.on_acl_counters = self.on_acl_counters

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()

    def runs(self, generation: int) -> bool:
        """Every connected switch runs the routes of model ``generation`` (or a later one's). A switch that
        is not connected is not waited for: it is read and set right when it connects again; waiting for it
        would hold every migration and every desired-state apply until their timeouts."""
        state = self._state()
        return all(
            (status := self.status.get(dpid)) is not None and status.applied_generation >= generation
            for dpid, switch in state.topology.switches.items()
            if switch.connected
        )

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

    def _on_switch_role(self, dpid: SwitchId) -> None:
        # Became MASTER there: read it back, then change only what differs. Lost it: another controller
        # writes there now, so what it holds is unknown to us.
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
                if self.drift_interval_s > 0 and time.monotonic() >= self._next_drift_check:
                    # Due again one interval from now whatever happens: a failing check does not spin.
                    self._next_drift_check = time.monotonic() + self.drift_interval_s
                    self.check_drift()
            except Exception:
                LOG.exception("route engine round failed; retrying")
                time.sleep(0.2)
                with self._wake:
                    self._dirty = True
            if self._after_round is not None:
                self._after_round()

    def _discovery_settled(self, state: FabricState) -> bool:
        if self._settled:
            return True
        now = time.monotonic()
        topo = state.topology
        connected = {s for s, sw in topo.switches.items() if sw.connected}
        if not connected:
            # Nothing to program yet. Settling now (a controller that took a while to start, switches
            # slow to reconnect) would program the first switches before any of their links is seen,
            # withdrawing the routes they still carry.
            return False
        if self._connected_since is None:
            self._connected_since = now
        pending = [
            link
            for link, attrs in topo.links.items()
            if attrs.declared and attrs.up and not attrs.discovered and link.src in connected and link.dst in connected
        ]
        # Switches that carry routes from before a restart keep forwarding by them: a plan computed while
        # a declared switch has not reconnected yet would withdraw every route through it, and its backups.
        # A fresh fabric has nothing to withdraw: it is programmed without waiting for every switch.
        absent = (
            [s for s, sw in topo.switches.items() if sw.declared and not sw.connected] if self._carried_routes else []
        )
        quiet = now - self._last_discovery > SETTLE_QUIET_S
        waited = now - max(self._last_connect, self._connected_since)
        if (not pending and not absent and quiet) or waited > (SETTLE_RECONNECT_S if absent else SETTLE_MAX_S):
            self._settled = True
            LOG.info(
                "discovery settled (%d switches, %d declared links not seen, %d declared switches not connected)",
                len(connected),
                len(pending),
                len(absent),
            )
        return self._settled

    def _converge(self) -> None:
        state = self._state()
        connected = [s for s, sw in state.topology.switches.items() if sw.connected and self._may_write(s)]
        for dpid in list(self._installed):
            if dpid not in connected:
                del self._installed[dpid]
                self._drift_tried_at.pop(dpid, None)  # read back when it returns: its turn starts over
                self.forget_counters(dpid)
        # Reconcile: learn what a newly connected switch holds before changing anything on it. Several at
        # once (a new leader takes every switch): asked together, not one round trip after another.
        # Nothing is written to an unread switch, so an answer that comes after the wait still says what it
        # holds: the next round takes it (a switch further behind than the wait was otherwise never read,
        # nor programmed, and every migration waited for it).
        unread = [dpid for dpid in connected if dpid not in self._installed]
        if len(unread) > 1:
            read = self.app.read_configs(unread, READ_BACK_TIMEOUT_S, late_answers_count=True)
        else:
            read = {
                dpid: config
                for dpid in unread
                if (config := self.app.read_config(dpid, late_answers_count=True)) is not None
            }
        for dpid in unread:
            current = read.get(dpid)
            if current is not None:
                self._installed[dpid] = current
                self.status.setdefault(dpid, SwitchStatus()).reconciled = True
                if current.groups or current.flows - base_flows():
                    self._carried_routes = True
                LOG.info(
                    "switch %s holds %d flows, %d groups of ours",
                    format_dpid(dpid),
                    len(current.flows),
                    len(current.groups),
                )
        self._ensure_base_flows({dpid: read[dpid] for dpid in unread if dpid in read})
        if not self._discovery_settled(state):
            with self._wake:
                self._dirty = True  # look again shortly
            time.sleep(0.2)
            return
        previous = self.plan
        started = time.perf_counter()
        plan = compute_routes(state, previous=previous)
        acl, acl_changes = self._acl_for(state)
        parts = self._reservations_for(state)
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
            if acl is not self._acl_applied:
                # A policy change, a placement, a move: only the ACL entries that changed (all of a
                # switch's, compared, when the tables held were not compiled from the previous ACL).
                for dpid in plan.switches:
                    old = self._compiled.get(dpid)
                    if old is None:
                        continue
                    if acl_changes is None:
                        new, delta = with_acl(old, acl.entries.get(dpid, {}))
                    elif dpid in acl_changes:
                        new, delta = replace_entries(old, acl_changes[dpid])
                    else:
                        continue
                    self._change_compiled(dpid, old, new, delta, deltas)
            self._acl_applied = acl
            if parts is not self._reservations_applied:
                # Only the switches whose part of the reservations changed.
                for dpid in plan.switches:
                    old = self._compiled.get(dpid)
                    part = parts.get(dpid, EMPTY_PART)
                    if old is None or part == self._reservations_applied.get(dpid, EMPTY_PART):
                        continue
                    new, delta = with_reservations(old, part)
                    self._change_compiled(dpid, old, new, delta, deltas)
        else:
            self._compiled = {
                dpid: with_acl(compiled, acl.entries.get(dpid, {}))[0] for dpid, compiled in compile_all(plan).items()
            }
            self._acl_applied = acl
            for dpid, part in parts.items():
                if dpid in self._compiled:
                    self._compiled[dpid] = with_reservations(self._compiled[dpid], part)[0]
        self._reservations_applied = parts
        self.plan = plan
        # One reference, swapped whole: a reader on another thread (a desired-state plan) never sees a
        # plan with half of its tables recompiled.
        self.tables = (plan, dict(self._compiled))
        if self._on_routes_computed is not None and (previous is None or previous.generation != plan.generation):
            self._on_routes_computed(time.perf_counter() - started)  # a round with nothing new is not counted
        for dpid in plan.switches:
            installed = self._installed.get(dpid)
            if dpid in deltas or installed is None or installed is self._compiled[dpid]:
                continue
            current = installed.config if isinstance(installed, CompiledSwitch) else installed
            deltas[dpid] = diff_switch(current, self._compiled[dpid].config)
        ready = {dpid: delta for dpid, delta in deltas.items() if dpid in self._installed}
        self._apply(state.generation, {d: delta for d, delta in ready.items() if delta}, ready, (previous, plan))
        # A switch that already holds exactly what this generation asks runs it too: say so, or a
        # migration that changes no route would wait on switches with nothing to do.
        for dpid in plan.switches:
            if dpid not in ready and self._installed.get(dpid) is self._compiled.get(dpid) is not None:
                status = self.status.setdefault(dpid, SwitchStatus())
                status.applied_generation = max(status.applied_generation, state.generation)

    def _change_compiled(
        self,
        dpid: SwitchId,
        old: CompiledSwitch,
        new: CompiledSwitch,
        delta: SwitchDelta,
        deltas: dict[SwitchId, SwitchDelta],
    ) -> None:
        """``new`` (``old`` with one more part changed: ACL or reservations) becomes the switch's desired tables;
        ``delta`` goes after what this round already sends it, or alone when the switch holds ``old``."""
        if new is old:
            return
        if dpid in deltas:
            deltas[dpid] = merge_deltas(deltas[dpid], delta)
        elif self._installed.get(dpid) is old:
            deltas[dpid] = delta
        self._compiled[dpid] = new

    def _reservations_for(self, state: FabricState) -> dict[SwitchId, SwitchReservations]:
        """Every switch's part of the reservations of ``state`` (``sdnctl.meters``): the same dict as
        last round while the plan's reservations and links reserved did not change."""
        previous = self.reservation_plan
        if not previous.outcomes and not reserves_anything(state):
            return self._reservation_parts  # the common case: nothing reserves, nothing to compute
        plan = plan_reservations(state, previous)
        self.reservation_plan = plan
        if plan.unreserved or previous.unreserved:
            _log_unreserved(previous, plan)
        links = plan.links()
        if (
            plan.reservations == previous.reservations
            and links == previous.links()
            and all(plan.capacity_mbps.get(link) == previous.capacity_mbps.get(link) for link in links)
        ):
            return self._reservation_parts  # the same flows, and the same best-effort meters
        self._reservation_parts = compile_reservations(plan)
        return self._reservation_parts

    def meter_of(self, dpid: SwitchId, demand_key: str) -> int | None:
        """The meter id of a reservation (by demand key) at the switch where it enters the fabric."""
        return self._reservation_parts.get(dpid, EMPTY_PART).meter_ids.get(demand_key)

    def _acl_for(self, state: FabricState) -> tuple[AclTables, AclChanges | None]:
        """The ACL of ``state``, compiled again only when what it depends on changed (and then only
        the entries whose inputs changed), and its changed entries per switch relative to the ACL the
        tables hold (None: unknown, compare each switch's whole ACL)."""
        inputs = acl_inputs(state)
        if same_inputs(self._acl_inputs, inputs):
            return self.acl, None if self.acl is not self._acl_applied else {}
        previous = self.acl
        self.acl, changes = compile_acl_incremental(previous, state, self.trust_domain)
        self._acl_inputs = inputs
        return self.acl, changes if previous is self._acl_applied else None

    # -- the ACL's counters ---------------------------------------------------------------------------
    def on_acl_counters(self, dpid: SwitchId, packets: Mapping[FlowKey, int], now: float) -> None:
        """A reading of the ACL flows' packet counters of one switch (the OpenFlow adapter's poll, on its
        thread): policy drops become denials (``record_denial``), source-guard drops a rate-limited
        log line and the spoofing counter. ``now``: wall-clock time."""
        acl = self.acl
        with self._counters_lock:
            dropped = self._drop_counters.update(dpid, packets)
            for key, count in dropped.items():
                label = acl.labels.get((dpid, key))
                if label is None:
                    continue  # a guard's way on, or a flow the ACL no longer has
                if label.kind == "deny":
                    if self._record_denial is not None:
                        self._record_denial(
                            layer="network",
                            caller=label.caller,
                            service=label.service,
                            at=now,
                            count=count,
                            detail=label.detail,
                        )
                else:
                    self.spoofing.add(label, count)
            lines = self.spoofing.due(time.monotonic())
        for line in lines:
            LOG.warning("%s", line)

    def _counting_from_zero(self, dpid: SwitchId, delta: SwitchDelta) -> None:
        """ACL flows just added count from zero: a denial right after a policy change is not lost in the
        baseline of a switch's first counter reading."""
        added = [f.key for f in delta.add_flows if f.cookie & COOKIE_ACL_MASK == COOKIE_ACL]
        if added:
            with self._counters_lock:
                self._drop_counters.installed(dpid, added)

    def forget_counters(self, dpid: SwitchId) -> None:
        with self._counters_lock:
            self._drop_counters.forget_switch(dpid)

    def _ensure_base_flows(self, held: Mapping[SwitchId, SwitchConfig]) -> None:
        """LLDP and ARP to the controller go in at once where a switch just read (``held``: what it holds)
        lacks them: discovery needs them before any route. Every such switch is sent its flows before any
        barrier is awaited: switches that reconnected together each waited up to the barrier timeout in
        turn (5 s apiece at 500 switches), holding every route round, and every migration, meanwhile."""
        deltas = {
            dpid: SwitchDelta(add_flows=tuple(sorted(missing)))
            for dpid, current in held.items()
            if (missing := base_flows() - current.flows)
        }
        if not deltas:
            return
        with self._out_to_switches():
            sent = {dpid for dpid, delta in deltas.items() if self.app.send_phase(dpid, delta, "make")}
            confirmed = self.app.barriers(sent) if sent else set()
        generation = self._state().generation
        for dpid, delta in deltas.items():
            self._record(generation, dpid, "base", delta, dpid in confirmed)
            current = held[dpid]
            if dpid in confirmed:
                flows = current.flows | frozenset(delta.add_flows)
                self._installed[dpid] = SwitchConfig(flows, current.groups, current.meters)
            else:
                self._installed.pop(dpid, None)

    def _send(
        self, deltas: dict[SwitchId, SwitchDelta], plans: tuple[RoutePlan | None, RoutePlan | None] = (None, None)
    ) -> tuple[set[SwitchId], int]:
        """Make-before-break on every switch at once; the switches that confirmed all of their delta, and
        the rounds the make phase took.

        ``plans`` (the routes before and after): primary next hops that move are changed in rounds, each
        after the moving next hops on its new path (``update_order``), so no packet meets a micro-loop."""
        # Make: everything new or changed, everywhere, round after round, each confirmed by barriers;
        # only then break. A switch that fails a round gets no later round.
        confirmed = set(deltas)
        rounds = make_rounds(deltas, *plans)
        for part in rounds:
            sent = {
                dpid for dpid, delta in part.items() if dpid in confirmed and self.app.send_phase(dpid, delta, "make")
            }
            confirmed -= set(part) - self.app.barriers(sent)
        breaking = {dpid for dpid in confirmed if deltas[dpid].breaks}
        broken = {dpid for dpid in breaking if self.app.send_phase(dpid, deltas[dpid], "break")}
        confirmed -= breaking - self.app.barriers(broken)
        return confirmed, len(rounds)

    def _apply(
        self,
        generation: int,
        deltas: dict[SwitchId, SwitchDelta],
        all_deltas: dict[SwitchId, SwitchDelta],
        plans: tuple[RoutePlan | None, RoutePlan | None] = (None, None),
    ) -> None:
        started = time.perf_counter()
        with self._out_to_switches():
            confirmed, rounds = self._send(deltas, plans)
        if deltas and self._on_routes_applied is not None:
            self._on_routes_applied(time.perf_counter() - started, rounds)
        now = time.time()
        for dpid in all_deltas:
            status = self.status.setdefault(dpid, SwitchStatus())
            if dpid in deltas:
                self._record(generation, dpid, "plan", deltas[dpid], dpid in confirmed, now)
            if dpid in deltas and dpid not in confirmed:
                self._installed.pop(dpid, None)  # unknown now: read it again next round
                continue
            if dpid not in deltas and dpid in self._installed:
                # Nothing to change: it holds exactly these tables (e.g. read back after a restart), so
                # the drift check watches it from now on.
                self._installed[dpid] = self._compiled[dpid]
            if dpid in deltas:
                self._installed[dpid] = self._compiled[dpid]
                self._counting_from_zero(dpid, deltas[dpid])
                status.last_delta_size = deltas[dpid].size
                status.last_applied_at = now
                LOG.info(
                    "switch %s: applied %d changes for generation %d", format_dpid(dpid), deltas[dpid].size, generation
                )
            status.applied_generation = generation
        if len(confirmed) != len(deltas):
            with self._wake:
                self._dirty = True

    @contextlib.contextmanager
    def _out_to_switches(self) -> Iterator[None]:
        """Mark ``applying_since`` while changes are out, whatever happens to them."""
        self.applying_since = time.monotonic()
        try:
            yield
        finally:
            self.applying_since = None

    def apply_running_s(self) -> float:
        """Seconds the route changes out now have waited for the switches (0 when none are out)."""
        since = self.applying_since  # read once: the engine thread clears it
        return 0.0 if since is None else time.monotonic() - since

    def installed_counts(self) -> dict[SwitchId, tuple[int, int]]:
        """Per switch: the flows and groups of edgectl's it holds, as last read or confirmed installed
        (a switch whose tables are unknown, e.g. after an unconfirmed change, is left out)."""
        counts = {}
        for dpid, held in list(self._installed.items()):  # one C-level copy: the engine thread writes it
            counts[dpid] = held.counts if isinstance(held, CompiledSwitch) else (len(held.flows), len(held.groups))
        return counts

    # -- drift -----------------------------------------------------------------------------------------
    def check_drift(self) -> dict[SwitchId, Drift]:
        """Read the switches that hold exactly what the engine last installed on them (up to
        ``DRIFT_ENTRIES_PER_CHECK`` entries' worth, those asked longest ago first), and heal the ones
        whose tables were changed behind its back. Runs on the engine's thread (between rounds: no
        apply of the engine's own is in flight, and each apply ended with a confirmed barrier); the
        drift found, by switch."""
        eligible = {
            dpid: compiled
            for dpid, compiled in self._compiled.items()
            if self._installed.get(dpid) is compiled  # programmed, and nothing of ours pending on it
            and self._may_write(dpid)
        }
        if not eligible:
            return {}
        sizes = {dpid: len(compiled.entries) for dpid, compiled in eligible.items()}
        turn = drift_turn(sizes, self._drift_tried_at, DRIFT_ENTRIES_PER_CHECK)
        expected = {dpid: eligible[dpid] for dpid in turn}
        asked_at = time.monotonic()
        for dpid in expected:
            self._drift_tried_at[dpid] = asked_at
        read = self.app.read_configs(expected, DRIFT_READ_TIMEOUT_S)
        state = self._state()
        now = time.time()
        found: dict[SwitchId, Drift] = {}
        for dpid, compiled in sorted(expected.items()):
            name = _switch_name(state, dpid)
            tables = read.get(dpid)
            if tables is None:
                LOG.warning(
                    "drift check: switch %s (dpid %#x) did not answer within %.0f s; skipped",
                    name,
                    dpid,
                    DRIFT_READ_TIMEOUT_S,
                )
                continue
            if self._installed.get(dpid) is not compiled:
                continue  # an error report made it unknown while we read: reconciliation reads it again
            drift = find_drift(compiled.config, tables)
            self.status.setdefault(dpid, SwitchStatus()).drift.checked(now, drift)
            if drift is None:
                continue
            found[dpid] = drift
            LOG.warning("%s", drift_message(name, dpid, drift))
            if self._on_drift is not None:
                self._on_drift(dpid, name, drift)
        if found:
            self._heal(found)
        return found

    def _heal(self, found: dict[SwitchId, Drift]) -> None:
        deltas = {dpid: drift.heal for dpid, drift in found.items()}
        confirmed, _rounds = self._send(deltas)
        now = time.time()
        for dpid, delta in deltas.items():
            status = self.status.setdefault(dpid, SwitchStatus())
            self._record(status.applied_generation, dpid, "drift", delta, dpid in confirmed, now)
            if dpid in confirmed:
                status.drift.heals += 1
                status.last_delta_size = delta.size
                status.last_applied_at = now
                LOG.info("switch %s: drift healed with %d changes", format_dpid(dpid), delta.size)
            else:
                self._installed.pop(dpid, None)  # unknown now: read it again next round
                with self._wake:
                    self._dirty = True

    # -- the record of what was sent ---------------------------------------------------------------------
    def _record(
        self,
        generation: int,
        dpid: SwitchId,
        reason: str,
        delta: SwitchDelta,
        confirmed: bool,
        now: float | None = None,
    ) -> None:
        with self._changes_lock:
            self._change_seq += 1
            if len(self._changes) == self._changes.maxlen:
                self._change_mods -= self._changes[0].delta.size
            self._changes.append(
                AppliedChange(
                    self._change_seq, generation, dpid, reason, time.time() if now is None else now, delta, confirmed
                )
            )
            self._change_mods += delta.size
            while self._change_mods > CHANGE_MODS_KEPT and len(self._changes) > 1:
                self._change_mods -= self._changes.popleft().delta.size

    def changes(self, since_generation: int = -1) -> list[AppliedChange]:
        """The deltas sent for generations after ``since_generation``, oldest first (the last
        ``CHANGES_KEPT`` deltas are kept, with ``CHANGE_MODS_KEPT`` mods at most: the newest always)."""
        with self._changes_lock:
            return [change for change in self._changes if change.generation > since_generation]


def _switch_name(state: FabricState, dpid: SwitchId) -> str:
    switch = state.topology.switches.get(dpid)
    return switch.name if switch is not None else format_dpid(dpid)


def _log_unreserved(before: ReservationPlan, after: ReservationPlan, most: int = 5) -> None:
    """One line per demand that lost (or never found) room, and per one that found it again (a few each)."""
    was = {u.demand.key for u in before.unreserved}
    now = {u.demand.key for u in after.unreserved}
    lost = [u for u in after.unreserved if u.demand.key not in was]
    for u in lost[:most]:
        owners = ", ".join(u.demand.owners)
        LOG.warning(
            "no reservation for %s -> %s (%g Mbit/s, %s): %s",
            u.demand.src,
            u.demand.dst,
            u.demand.mbps,
            owners,
            u.reason,
        )
    if len(lost) > most:
        LOG.warning("... and %d more demands without a reservation (edgectl links)", len(lost) - most)
    gone = was - now
    regained = gone & {r.demand.key for r in after.reservations} if gone else set()
    if regained:
        LOG.info("%d demands have a reservation again", len(regained))
