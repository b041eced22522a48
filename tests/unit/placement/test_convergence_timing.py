"""timed_convergence: how long each probe took to accept a generation (where a migration's time goes)."""

from __future__ import annotations

import threading
from itertools import pairwise

from placement.convergence import (
    LOOK_SHARE,
    MIN_LOOK_GAP_S,
    ConvergenceProbe,
    NamedProbe,
    Progress,
    as_probe,
    pending_probes,
    probe_name,
    timed_convergence,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_each_probe_is_timed_when_it_first_accepts() -> None:
    clock = FakeClock()
    routes = NamedProbe("routes", lambda _g: clock.now >= 100.003)
    sidecars = NamedProbe("sidecars", lambda _g: clock.now >= 100.2)
    missing, took = timed_convergence([routes, sidecars], 7, 1.0, clock=clock, sleep=clock.sleep)
    assert missing == []
    assert [name for name, _ in took] == ["routes", "sidecars"]
    (_, routes_s), (_, sidecars_s) = took
    assert 0.003 <= routes_s < 0.01 and 0.2 <= sidecars_s < 0.26  # within one poll interval


class RungAt(Progress):
    """A Progress on the fake clock, rung once at ``ring_at``: a wait spanning it ends there, else it
    lasts its whole timeout."""

    def __init__(self, clock: FakeClock, ring_at: float) -> None:
        super().__init__()
        self.clock = clock
        self.ring_at = ring_at

    def wait(self, since: int, timeout_s: float) -> bool:
        if self.clock.now < self.ring_at <= self.clock.now + timeout_s:
            self.clock.now = self.ring_at
            self.ring()
        elif self.mark() == since:
            self.clock.now += timeout_s
        return self.mark() != since


def test_a_ring_makes_the_wait_look_again_at_once_not_at_its_next_poll() -> None:
    clock = FakeClock()
    sidecars = NamedProbe("sidecars", lambda _g: clock.now >= 100.2)  # the last ACK lands at +200 ms
    missing, took = timed_convergence([sidecars], 7, 1.0, clock=clock, sleep=clock.sleep, progress=RungAt(clock, 100.2))
    assert missing == [] and 0.2 <= took[0][1] <= 0.2 + MIN_LOOK_GAP_S + 1e-9
    # Polling alone sees it at its next look, up to 50 ms later (here 212 ms).
    clock = FakeClock()
    sidecars = NamedProbe("sidecars", lambda _g: clock.now >= 100.2)
    assert timed_convergence([sidecars], 7, 1.0, clock=clock, sleep=clock.sleep)[1][0][1] > 0.21


def test_a_costly_look_is_not_repeated_at_every_ring() -> None:
    """Asking the sidecars probe walks every stream: under a fan-out's rings a wait looks at most
    LOOK_SHARE of its time, not once a millisecond."""
    clock = FakeClock()
    progress = Progress()
    looks: list[float] = []

    def sidecars(_generation: int) -> bool:
        looks.append(clock.now)
        clock.now += 0.010  # the look costs 10 ms
        progress.ring()  # and meanwhile sidecars ACK, as in a fan-out
        return clock.now >= 100.3

    probe = NamedProbe("sidecars", sidecars)
    assert timed_convergence([probe], 7, 1.0, clock=clock, sleep=clock.sleep, progress=progress)[0] == []
    gaps = [later - earlier for earlier, later in pairwise(looks)]
    assert gaps and min(gaps) >= 0.010 / LOOK_SHARE - 1e-9


def test_a_ring_between_the_look_and_the_wait_is_not_lost() -> None:
    progress = Progress()
    mark = progress.mark()
    progress.ring()  # (while the probes were being asked)
    assert progress.wait(mark, 60.0)  # at once: the ring came after the mark
    other = threading.Thread(target=progress.ring)
    mark = progress.mark()
    other.start()
    assert progress.wait(mark, 60.0)  # ended by the other thread's ring
    other.join()
    assert not progress.wait(progress.mark(), 0.0)  # nobody rang since


def test_a_probe_that_never_accepts_is_named_and_not_timed() -> None:
    clock = FakeClock()
    missing, took = timed_convergence(
        [NamedProbe("routes", lambda _g: True), NamedProbe("sidecars", lambda _g: False)],
        7,
        0.5,
        clock=clock,
        sleep=clock.sleep,
    )
    assert missing == ["sidecars"] and [name for name, _ in took] == ["routes"]
    assert timed_convergence([NamedProbe("x", lambda _g: False)], 1, 0.1, clock=clock, sleep=clock.sleep) == (["x"], ())


def test_named_probe_keeps_its_name_and_answers() -> None:
    probe = NamedProbe("routes", lambda generation: generation >= 3)
    assert probe_name(probe) == "routes" and probe(3) and not probe(2)


def test_a_bare_check_becomes_a_probe_named_by_its_qualified_name() -> None:
    def routes_installed(generation: int) -> bool:
        return generation >= 2

    probe = as_probe(routes_installed)
    assert isinstance(probe, ConvergenceProbe)
    assert probe.name.endswith("<locals>.routes_installed") and probe(2) and not probe(1)
    assert probe.for_workloads(2, frozenset({"web-2"}))  # unscoped: the generation decides
    named = NamedProbe("routes", routes_installed)
    assert as_probe(named) is named


def test_any_class_implementing_the_protocol_is_asked_scoped() -> None:
    class SidecarsProbe(ConvergenceProbe):
        name = "sidecars"

        def __call__(self, generation: int) -> bool:
            return False

        def for_workloads(self, generation: int, workloads: frozenset[str]) -> bool:
            return workloads == {"web-2"}

    probe = SidecarsProbe()
    assert as_probe(probe) is probe
    assert pending_probes([probe], 3) == [probe]
    assert pending_probes([probe], 3, frozenset({"web-2"})) == []
