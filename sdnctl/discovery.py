"""Link discovery and latency bookkeeping: LLDP probes, echo round trips, silent-link expiry. Pure.

The os-ken app (``openflow.py``) asks this core for the probes to send, hands it what comes back,
and publishes the model events it returns; every method takes the time as a parameter. Two clocks:
``now`` is monotonic (probe round trips, when a link was last crossed), ``wall`` is the wall clock
that stamps model events (the model compares host sightings against it).
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from netmodel import events as ev
from netmodel.ids import PortNo, SwitchId
from netmodel.state import FabricState
from netmodel.types import LinkId
from sdnctl import frames
from sdnctl.latency import LatencyEstimator, Terms, refines, worth_reporting

PROBE_INTERVAL_S = 1.0
LINK_TIMEOUT_S = 3.5
BEHIND_TIMEOUT_S = 3 * LINK_TIMEOUT_S
"""How long a link into a switch whose messages wait unread may stay silent (see ``expire_silent_links``)."""
ANSWER_HORIZON_S = 120.0
"""How long a loop probe or echo is waited for as a sign of its switch's control path (its round trip
counts as a latency sample only within ``LINK_TIMEOUT_S``)."""
LOOP_FRESH_S = 3 * PROBE_INTERVAL_S
"""While a switch answered a loop probe this recently, no echo is sent to time its control path."""
ECHO_MAGIC = b"edgectl-echo"
LOOP_PORT = 0  # probe "port" of a loop probe: no real port has number 0
PROBE_SRC_MAC = "02:ec:00:00:00:00"  # a probe's source when its port has no hardware address


@dataclass(frozen=True, slots=True)
class PacketOut:
    """A frame for the controller to send out of ``port`` of ``dpid``; ``port`` None means through
    the switch's own flow table (OFPP_TABLE), as a loop probe goes."""

    dpid: SwitchId
    port: int | None
    data: bytes


@dataclass(frozen=True, slots=True)
class EchoRequest:
    dpid: SwitchId
    data: bytes


@dataclass(frozen=True, slots=True)
class RoundResult:
    """A probe round's housekeeping: model events to publish, and for each link it took down how long
    no probe had crossed it (for the log)."""

    events: tuple[ev.Event, ...]
    silent_s: tuple[tuple[LinkId, float], ...]


class Discovery:
    """Probes sent and not yet back, links with the last time a probe crossed them, and the latency
    estimator fed by both. Not thread-safe: the adapter serialises calls."""

    def __init__(self, instance: int, latency: LatencyEstimator | None = None) -> None:
        self.instance = instance  # our probes carry it: another controller's (or an old run's) are ignored
        self.latency = latency if latency is not None else LatencyEstimator()
        self._seq = itertools.count(1)
        self._probes_sent: dict[tuple[int, int, int], float] = {}
        self._echo_sent: dict[tuple[int, int], float] = {}
        self._last_seen: dict[LinkId, float] = {}
        # (switch, port) -> when the first probe out of it since the last one came back was sent: a link
        # is silent only if our probes went out and none came back (a starved probe loop is not a dead link).
        self._unanswered_since: dict[tuple[int, int], float] = {}
        self._reported_us: dict[LinkId, int] = {}
        self._reported_terms: dict[LinkId, Terms] = {}  # the minima each reported estimate rested on
        self._loop_answered_at: dict[int, float] = {}
        # switch -> when the latest loop probe or echo it answered was sent: its control path (our send
        # queue, the switch, its packet-ins, our reads and this app's queue) carried that far (see
        # ``expire_silent_links``).
        self._answered_sent_at: dict[int, float] = {}

    # -- what to send ----------------------------------------------------------------------------
    def probe(self, dpid: SwitchId, port: int, hw_addr: str, now: float) -> PacketOut:
        """An LLDP probe out of ``port``; where it comes back in names the link."""
        probe = frames.Probe(dpid, port, self.instance, next(self._seq))
        self._probes_sent[(dpid, port, probe.seq)] = now
        self._unanswered_since.setdefault((dpid, port), now)
        return PacketOut(dpid, port, frames.build_lldp_probe(probe, hw_addr or PROBE_SRC_MAC))

    def loop_probe(self, dpid: SwitchId, now: float) -> PacketOut:
        """A probe the switch's own LLDP flow sends straight back: the control path's round trip
        through the datapath (packet-out and packet-in handling included), which an echo skips."""
        probe = frames.Probe(dpid, LOOP_PORT, self.instance, next(self._seq))
        self._probes_sent[(dpid, LOOP_PORT, probe.seq)] = now
        return PacketOut(dpid, None, frames.build_lldp_probe(probe, PROBE_SRC_MAC))

    def echo(self, dpid: SwitchId, now: float) -> EchoRequest | None:
        """An echo request to time the control path of ``dpid``, or None while its loop probes time it
        (answered within ``LOOP_FRESH_S``): the estimator would not use the echo, and at 500 switches
        it is 1,000 messages a second."""
        if now - self._loop_answered_at.get(dpid, -LOOP_FRESH_S) < LOOP_FRESH_S:
            return None
        seq = next(self._seq)
        self._echo_sent[(dpid, seq)] = now
        return EchoRequest(dpid, ECHO_MAGIC + seq.to_bytes(8, "big"))

    # -- what came back ----------------------------------------------------------------------------
    def on_echo_reply(self, dpid: SwitchId, data: bytes, now: float) -> None:
        if not data.startswith(ECHO_MAGIC):
            return
        sent = self._echo_sent.pop((dpid, int.from_bytes(data[len(ECHO_MAGIC) :], "big")), None)
        if sent is not None:
            if now - sent <= LINK_TIMEOUT_S:
                self.latency.record_echo_rtt(dpid, now - sent)
            self._answered(dpid, sent)

    def _answered(self, dpid: int, sent: float) -> None:
        if sent > self._answered_sent_at.get(dpid, -1.0):
            self._answered_sent_at[dpid] = sent

    def on_probe(
        self, state: FabricState, dpid: SwitchId, in_port: PortNo, data: bytes, now: float, wall: float
    ) -> tuple[ev.Event, ...]:
        """A probe arrived as a packet-in at ``dpid``/``in_port``: the link it crossed is (still) there.
        A LinkDiscovered when the link is new to us or the model does not hold it as up and discovered."""
        probe = frames.parse_lldp_probe(data)
        if probe is None or probe.instance != self.instance:
            return ()
        sent = self._probes_sent.pop((probe.dpid, probe.port, probe.seq), None)
        if probe.port == LOOP_PORT:
            if sent is not None and probe.dpid == dpid:
                if now - sent <= LINK_TIMEOUT_S:
                    self.latency.record_loop_rtt(dpid, now - sent)
                    self._loop_answered_at[dpid] = now
                self._answered(dpid, sent)
            return ()
        link = LinkId(SwitchId(probe.dpid), PortNo(probe.port), dpid, in_port)
        first = link not in self._last_seen
        self._last_seen[link] = now
        self._unanswered_since.pop((probe.dpid, probe.port), None)
        if sent is not None:
            self.latency.record_probe(link, now - sent)
        attrs = state.topology.links.get(link)
        if first or attrs is None or not (attrs.up and attrs.discovered):
            return (ev.LinkDiscovered(link, wall),)
        return ()

    def forget_switch(self, dpid: SwitchId) -> None:
        self.latency.forget_switch(dpid)
        self._loop_answered_at.pop(dpid, None)
        self._answered_sent_at.pop(dpid, None)
        for key in [k for k in self._unanswered_since if k[0] == dpid]:
            del self._unanswered_since[key]  # its probes start over when it is back

    def seed_from_model(self, state: FabricState, connected: Iterable[SwitchId], now: float) -> None:
        """Take over the model's links (a replica just became leader, its probes had stopped): every link
        up and discovered between ``connected`` switches counts as crossed ``now``, so it is neither
        reported again nor expired before new probes could refresh it, and one that stays silent goes
        down after ``LINK_TIMEOUT_S`` as any other. The latencies the model holds count as reported."""
        connected = set(connected)
        self._last_seen = {}
        self._reported_us = {}
        self._reported_terms = {}  # the model's latencies came from another replica's minima
        for link, attrs in state.topology.links.items():
            if attrs.up and attrs.discovered and link.src in connected and link.dst in connected:
                self._last_seen[link] = now
                if attrs.measured_latency_us is not None:
                    self._reported_us[link] = attrs.measured_latency_us

    def refresh_switch(self, state: FabricState, dpid: SwitchId, now: float) -> None:
        """The controller may probe through ``dpid`` again (it just became MASTER there): the links the
        model holds as up at it count as crossed ``now``, so the time it took the switch to answer is
        not counted as silence."""
        for link, attrs in state.topology.links.items():
            if (link.src == dpid or link.dst == dpid) and attrs.up and attrs.discovered:
                self._last_seen[link] = now

    # -- once per probe round ------------------------------------------------------------------------
    def housekeeping(
        self,
        state: FabricState,
        connected: Iterable[SwitchId],
        now: float,
        wall: float,
        behind: Collection[SwitchId] = (),
        unprobed: Collection[SwitchId] = (),
    ) -> RoundResult:
        """Forget probes that never came back (ports without a neighbour), take down links no probe
        crossed for ``LINK_TIMEOUT_S`` (see ``expire_silent_links`` for ``behind``), and report the
        latencies that changed enough to matter."""
        # A link probe that did not cross within the timeout never will; a loop probe or an echo is still
        # a sign of its switch's control path when it comes back later (``expire_silent_links``).
        for key in [
            k
            for k, t in self._probes_sent.items()
            if now - t > (ANSWER_HORIZON_S if k[1] == LOOP_PORT else LINK_TIMEOUT_S)
        ]:
            self._probes_sent.pop(key, None)
        for echo_key in [k for k, t in self._echo_sent.items() if now - t > ANSWER_HORIZON_S]:
            self._echo_sent.pop(echo_key, None)
        silent = self.expire_silent_links(state, connected, now, behind, unprobed)
        events: list[ev.Event] = [ev.LinkWentDown(link) for link, _ in silent]
        report = self.latency_report(wall)
        if report is not None:
            events.append(report)
        return RoundResult(tuple(events), silent)

    def expire_silent_links(
        self,
        state: FabricState,
        connected: Iterable[SwitchId],
        now: float,
        behind: Collection[SwitchId] = (),
        unprobed: Collection[SwitchId] = (),
    ) -> tuple[tuple[LinkId, float], ...]:
        """Links whose probes stopped arriving, with how long they have been silent: down even if no
        port said so (a dead relay). Silent means no probe crossed it for the timeout although probes
        went out of its port for as long (a probe loop starved of the CPU sends none: its links are not
        to blame). Each silence is reported once: the link is forgotten until a probe crosses it again.
        ``behind``: switches whose messages wait unread by this controller; a probe across a link into
        one may be among them, so its link is given up to ``BEHIND_TIMEOUT_S`` (a controller behind on
        its reads took links down by the hundred, and each brought new routes and sidecar rebuilds that
        put it further behind). ``unprobed``: switches not probed this round (their probes would wait in
        the controller's own queue): the silence of links out of them starts over with the next probe, and
        that probe, the first after a spell of more than ``LINK_TIMEOUT_S`` without one, is given
        ``BEHIND_TIMEOUT_S`` too (at 500 simulated switches, links unprobed for ~45 s while the first
        tables went out were taken down by the hundred 3.5 s after their first probe).

        And a link is silent only while both its switches answer: each must have answered a loop probe
        or an echo sent after the link's unanswered probe went out. Those cross the same control path as
        the probe (our send queue, the switch, its packet-ins, our reads and this app's queue) but no
        cable, so while they come back and the probe does not, the cable is to blame; while they do not,
        the path is, and the switch's own liveness (unanswered echoes) judges that; they are waited for
        up to ``ANSWER_HORIZON_S`` (with a link timeout, a path 3.5 s behind never answered). At 500 simulated
        switches, links silent for 30-95 s while their switches' control paths were behind were taken
        down by the hundred, every 40-60 s. A switch that never answered either is judged on its links'
        probes alone."""
        connected = set(connected)
        for key in [k for k in self._unanswered_since if k[0] in unprobed]:
            del self._unanswered_since[key]
        down = []
        for link, attrs in state.topology.links.items():
            if not (attrs.up and attrs.discovered) or link.src not in connected or link.dst not in connected:
                continue
            seen = self._last_seen.get(link)
            probed = self._unanswered_since.get((link.src, link.src_port))
            # A first probe after a spell in which the link went unprobed (the prober starved, or its switch
            # skipped with writes queued for it) meets everything that spell left queued: it gets as long as
            # a probe into a switch the controller is behind on.
            after_a_spell = seen is not None and probed is not None and probed - seen > LINK_TIMEOUT_S
            timeout_s = BEHIND_TIMEOUT_S if link.dst in behind or after_a_spell else LINK_TIMEOUT_S
            if seen is not None and probed is not None and now - seen > timeout_s and now - probed > timeout_s:
                if not (self._answers_since(link.src, probed) and self._answers_since(link.dst, probed)):
                    continue
                self._last_seen.pop(link, None)
                down.append((link, now - seen))
        return tuple(down)

    def _answers_since(self, dpid: int, sent: float) -> bool:
        """Whether ``dpid`` answered a loop probe or echo sent after ``sent`` (or never answered one)."""
        answered = self._answered_sent_at.get(dpid)
        return answered is None or answered > sent

    def latency_report(self, wall: float) -> ev.LinkLatencyMeasured | None:
        """The estimates of live links that moved enough since last reported (see ``worth_reporting``)."""
        batch = []
        for link in list(self._last_seen):
            estimate = self.latency.estimate_us(link)
            if estimate is None:
                continue
            reported = self._reported_us.get(link)
            if reported is not None and not worth_reporting(reported, estimate):
                continue  # not past the floor: its noise need not be weighed
            terms = self.latency.terms(link)
            refined = refines(terms, self._reported_terms.get(link))
            noise, samples = self.latency.noise_us(link), self.latency.samples(link)
            if not worth_reporting(reported, estimate, noise, samples, refined):
                continue
            self._reported_us[link] = estimate
            if terms is not None:
                self._reported_terms[link] = terms
            batch.append((link, estimate))
        return ev.LinkLatencyMeasured(tuple(batch), wall) if batch else None
