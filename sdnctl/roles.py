"""OpenFlow 1.3 controller roles: which role each switch is asked for, what it answered, and whether
this controller may change its state. Pure: the adapter (``openflow.py``) sends the requests this core
returns and hands in the replies, refusals and demotions; nothing here does I/O or reads a clock.

In replicated mode one replica (the leader) asks every switch for MASTER with the election's generation
id; the others ask for SLAVE with it. A switch keeps one generation id across all its connections and
refuses (OFPRRFC_STALE) a MASTER or SLAVE request older than the last it accepted: a leader deposed
without knowing it is fenced by the switch itself. Generation ids compare as signed 64-bit differences,
so the comparison survives the counter wrapping.

Embedded mode (mastership None) asks for nothing: every connection stays EQUAL and may write, as
before roles existed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GENERATION_MODULUS = 1 << 64
MASTER = "master"
SLAVE = "slave"
EQUAL = "equal"
NOCHANGE = "nochange"  # a request that changes nothing: its reply tells the switch's generation id
REQUESTED = "requested"  # the view's word for a switch whose answer to our current request is awaited
ROLES = (MASTER, SLAVE, EQUAL, REQUESTED)


@dataclass(frozen=True, slots=True)
class Mastership:
    """This controller's place in the election: leader (MASTER everywhere) or follower (SLAVE), and the
    election's generation id (an unsigned 64-bit number; newer elections have later ids)."""

    leader: bool
    generation_id: int

    def __post_init__(self) -> None:
        if not 0 <= self.generation_id < GENERATION_MODULUS:
            raise ValueError(f"generation_id {self.generation_id} is not an unsigned 64-bit number")

    @property
    def role(self) -> str:
        return MASTER if self.leader else SLAVE


def parse_static_role(text: str) -> Mastership:
    """``master:GEN`` or ``slave:GEN`` (``edgectl run --static-role``): a mastership pinned without an
    election. ValueError says what is wrong."""
    role, sep, number = text.strip().partition(":")
    if not sep or role.lower() not in (MASTER, SLAVE):
        raise ValueError(f"expected master:GENERATION or slave:GENERATION, not {text!r}")
    try:
        generation = int(number, 10)
    except ValueError:
        raise ValueError(f"the generation id of {text!r} is not a whole number") from None
    return Mastership(role.lower() == MASTER, generation)


def generation_difference(a: int, b: int) -> int:
    """``a - b`` as OpenFlow switches compute it: the unsigned difference read as a signed 64-bit value."""
    diff = (a - b) % GENERATION_MODULUS
    return diff - GENERATION_MODULUS if diff >= GENERATION_MODULUS // 2 else diff


def is_newer(a: int, b: int) -> bool:
    """Generation ``a`` is later than ``b``."""
    return generation_difference(a, b) > 0


@dataclass(frozen=True, slots=True)
class RoleRequest:
    """A ROLE_REQUEST to send: ``role`` is master, slave or nochange."""

    dpid: int
    role: str
    generation_id: int


@dataclass(frozen=True, slots=True)
class RoleOutcome:
    """What the adapter does after a reply or refusal: send ``requests``; when ``fenced`` is set, the
    switch refused our MASTER request as stale (report it); ``writable_changed``: whether this
    controller may now write to the switch changed (the route engine reads it again)."""

    requests: tuple[RoleRequest, ...] = ()
    fenced: int | None = None
    writable_changed: bool = False
    role_changed: str | None = None  # the switch's new role for us, when it changed


@dataclass(slots=True)
class _SwitchRole:
    role: str = EQUAL  # what the switch last told (a new connection is EQUAL)
    generation_id: int = 0  # the switch's generation id as last told
    pending: dict[int, RoleRequest] = field(default_factory=dict)  # by xid: requests not answered yet
    awaited: RoleRequest | None = None  # the request for the current mastership, until its answer


class SwitchRoles:
    """Every connected switch's role for this controller. Not thread-safe: the adapter serialises calls
    (and records a request's xid before the switch can answer it)."""

    def __init__(self) -> None:
        self.mastership: Mastership | None = None
        self._switches: dict[int, _SwitchRole] = {}
        self.role_changes: dict[str, int] = {}
        """Per role: how many times a switch's role for this controller became it (since start)."""

    # -- what to ask -----------------------------------------------------------------------------------
    def set_mastership(self, mastership: Mastership | None) -> list[RoleRequest]:
        """The election's result changed: the role request for every connected switch (none in embedded
        mode, none when nothing changed)."""
        if mastership == self.mastership:
            return []
        self.mastership = mastership
        return [request for dpid in sorted(self._switches) if (request := self._wanted(dpid)) is not None]

    def connected(self, dpid: int) -> RoleRequest | None:
        """A switch connected: the request it must get before any other state-changing message."""
        self._switches[dpid] = _SwitchRole()
        return self._wanted(dpid)

    def disconnected(self, dpid: int) -> None:
        self._switches.pop(dpid, None)

    def _wanted(self, dpid: int) -> RoleRequest | None:
        switch = self._switches[dpid]
        if self.mastership is None:
            switch.awaited = None
            return None
        request = RoleRequest(dpid, self.mastership.role, self.mastership.generation_id)
        switch.awaited = request
        return request

    def sent(self, request: RoleRequest, xid: int) -> None:
        """``request`` went out with ``xid`` (call before its answer can be handed in)."""
        switch = self._switches.get(request.dpid)
        if switch is not None:
            switch.pending[xid] = request

    # -- what came back --------------------------------------------------------------------------------
    def on_reply(self, dpid: int, xid: int, role: str, generation_id: int) -> RoleOutcome:
        """The switch's ROLE_REPLY: our role on it now, and its generation id."""
        switch = self._switches.get(dpid)
        if switch is None:
            return RoleOutcome()
        request = switch.pending.pop(xid, None)
        if request is not None and request == switch.awaited:
            switch.awaited = None
        before = self.may_write(dpid)
        changed = self._set_role(switch, role, generation_id)
        follow: tuple[RoleRequest, ...] = ()
        if (
            request is not None
            and request.role == NOCHANGE
            and role != SLAVE
            and self.mastership is not None
            and self.mastership.generation_id == request.generation_id  # no newer election since
            and switch.awaited is None  # nor a request of ours since, which this SLAVE would undo
        ):
            # After a stale refusal: become SLAVE at the switch's own generation id (never newer than ours
            # is refused), so a controller that lost the election neither writes nor gets packet-ins.
            generation = max_generation(generation_id, self.mastership.generation_id)
            follow = (RoleRequest(dpid, SLAVE, generation),)
            switch.awaited = None
        return RoleOutcome(follow, None, before != self.may_write(dpid), role if changed else None)

    def on_refused(self, dpid: int, xid: int, stale: bool) -> RoleOutcome:
        """The switch refused a role request (``stale``: OFPRRFC_STALE, its generation id is newer). A
        refused MASTER request fences this controller on that switch; either way, the switch is asked
        for its generation id, then for SLAVE at it."""
        switch = self._switches.get(dpid)
        if switch is None:
            return RoleOutcome()
        request = switch.pending.pop(xid, None)
        if request is None:
            return RoleOutcome()
        before = self.may_write(dpid)
        if request == switch.awaited:
            switch.awaited = None
        fenced = request.generation_id if stale and request.role == MASTER else None
        # The query carries the generation it was asked under (a switch ignores it on NOCHANGE): its
        # answer is acted on only while that is still ours.
        follow = (RoleRequest(dpid, NOCHANGE, request.generation_id),) if stale and request.role != NOCHANGE else ()
        return RoleOutcome(follow, fenced, before != self.may_write(dpid))

    def on_demoted(self, dpid: int, generation_id: int | None = None) -> RoleOutcome:
        """The switch made us SLAVE on its own (another controller became MASTER: a role status, or an
        OFPBRC_IS_SLAVE error to a write of ours)."""
        switch = self._switches.get(dpid)
        if switch is None or switch.role == SLAVE:
            return RoleOutcome()
        before = self.may_write(dpid)
        self._set_role(switch, SLAVE, switch.generation_id if generation_id is None else generation_id)
        return RoleOutcome((), None, before != self.may_write(dpid), SLAVE)

    def _set_role(self, switch: _SwitchRole, role: str, generation_id: int) -> bool:
        switch.generation_id = generation_id
        if role == switch.role:
            return False
        switch.role = role
        self.role_changes[role] = self.role_changes.get(role, 0) + 1
        return True

    # -- what it means -------------------------------------------------------------------------------
    def may_write(self, dpid: int) -> bool:
        """Whether a FlowMod, GroupMod, MeterMod or PacketOut may go to the switch: always in embedded
        mode; in replicated mode only as leader, once the switch confirmed MASTER at our generation."""
        mastership = self.mastership
        if mastership is None:
            return True
        switch = self._switches.get(dpid)
        return (
            mastership.leader
            and switch is not None
            and switch.role == MASTER
            and switch.generation_id == mastership.generation_id
        )

    def writable(self) -> list[int]:
        return [dpid for dpid in sorted(self._switches) if self.may_write(dpid)]

    def view(self) -> dict[int, dict[str, object]]:
        """Per switch: its role for us ("requested" while the answer to the current request is
        awaited) and the generation id (of that request, else as the switch last told)."""
        out: dict[int, dict[str, object]] = {}
        for dpid, switch in sorted(self._switches.items()):
            if switch.awaited is not None:
                out[dpid] = {"role": REQUESTED, "generation_id": switch.awaited.generation_id}
            else:
                out[dpid] = {"role": switch.role, "generation_id": switch.generation_id}
        return out


def max_generation(a: int, b: int) -> int:
    """The later of two generation ids (signed 64-bit difference)."""
    return a if generation_difference(a, b) >= 0 else b
