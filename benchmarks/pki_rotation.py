"""The PKI's rotation timer during a rotation wave, 10,100 SVIDs held (the placement benchmark's sidecars).

SVIDs issued together (a controller's start-up, a scale-out) come due together: at half their life,
spread by the jitter over the last 10 % of it (180 s for 1 h SVIDs). The timer (``pki.rotation``) then
wakes at each certificate's rotation time, at most every 50 ms (``DueTimer``'s least sleep), asks the
identity manager when the next one is due and rotates what is due. Here: a real CA (``CertificateAuthority``:
P-256 keys, signing, validation at issue), 10,100 subjects issued at one moment, then the timer's
steps replayed on a simulated clock from the first rotation time on, ``--ticks`` of them (the whole
wave is ~3,600): each ``IdentityManager.tick(now)`` and ``next_rotation_at()`` timed.

Baseline, same run, another manager holding its own 10,100: the timer as it was, every tick a plan over
every subject held and every ``next_rotation_at`` a pass over every certificate (``_full_tick``,
``_full_next``, the old methods replayed on the same object). The two hold different certificates (random
serials, so rotation times of their own), about as many coming due per step; the figures include the
signing of what came due (~0.3 ms a certificate). Pure computation in this process; gc on.

Prints a table, then one JSON line (the last). Run: .venv/bin/python benchmarks/pki_rotation.py [--ticks 600]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pki.ca import CertificateAuthority  # noqa: E402
from pki.identities import IdentityChanges, IdentityManager  # noqa: E402
from pki.policy import rotation_time, serial_jitter  # noqa: E402

SUBJECTS = 10_100
TD = "bench.example"
MIN_SLEEP_S = 0.05
"""``pki.due_timer.DueTimer``'s least sleep between two ticks."""


def _full_tick(manager: IdentityManager, now: float) -> IdentityChanges:
    """The timer path before it kept its certificates in the order they come due: a plan over every one."""
    with manager._lock:  # (the old method, replayed on the same object)
        return manager._apply(now, rotate_due=True)


def _full_next(manager: IdentityManager) -> float | None:
    """``next_rotation_at`` before: a pass over every certificate held."""
    policy = manager.policy
    times = [
        rotation_time(svid.info, policy.jitter_fraction, manager._jitter(svid.info))
        for svid in manager.snapshot.identities.values()
    ]
    return min(times, default=None)


def wave(
    manager: IdentityManager,
    first_due: float,
    ticks: int,
    tick: Callable[[IdentityManager, float], IdentityChanges],
    next_at: Callable[[IdentityManager], float | None],
) -> dict[str, Any]:
    """Replay the timer's steps from the first rotation time on; time each tick and each next-due query."""
    tick_ms: list[float] = []
    next_ms: list[float] = []
    issued = 0
    last = -float("inf")
    for _ in range(ticks):
        started = time.perf_counter()
        due = next_at(manager)
        next_ms.append((time.perf_counter() - started) * 1000)
        if due is None:
            break
        now = max(due, last + MIN_SLEEP_S)
        started = time.perf_counter()
        changes = tick(manager, now)
        tick_ms.append((time.perf_counter() - started) * 1000)
        issued += len(changes.issued)
        last = now
    return {
        "ticks": len(tick_ms),
        "rotated": issued,
        "simulated_s": round(last - first_due, 1) if tick_ms else 0.0,
        "tick_p50_ms": round(statistics.median(tick_ms), 3),
        "tick_p99_ms": round(sorted(tick_ms)[int(0.99 * (len(tick_ms) - 1))], 3),
        "next_rotation_at_p50_ms": round(statistics.median(next_ms), 3),
        "timer_cpu_s": round((sum(tick_ms) + sum(next_ms)) / 1000, 2),
    }


def holding(ca: CertificateAuthority, now: float) -> tuple[IdentityManager, float]:
    """A manager holding SUBJECTS SVIDs issued at ``now``; returns it and how long the issuing took (s)."""
    manager = IdentityManager(ca)
    desired = {f"w-{i}": f"spiffe://{TD}/svc/s{i % 20}/w/w-{i}" for i in range(SUBJECTS)}
    started = time.perf_counter()
    manager.reconcile(desired, now)
    return manager, time.perf_counter() - started


def run(ticks: int) -> dict[str, Any]:
    now = time.time()
    ca = CertificateAuthority.create(TD, now=now)[0]
    ours, issue_s = holding(ca, now)
    before, _ = holding(ca, now)
    window = sorted(
        rotation_time(svid.info, ca.policy.jitter_fraction, serial_jitter(svid.info))
        for svid in ours.snapshot.identities.values()
    )
    return {
        "benchmark": "pki_rotation",
        "subjects": SUBJECTS,
        "issue_all_s": round(issue_s, 2),
        "wave_s": round(window[-1] - window[0], 1),
        "ours": wave(ours, window[0], ticks, IdentityManager.tick, IdentityManager.next_rotation_at),
        "baseline_full_plan": wave(before, window[0], ticks, _full_tick, _full_next),
        "python": platform.python_version(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=600, help="timer steps replayed on each side (600)")
    args = parser.parse_args()
    if args.ticks < 1:
        parser.error("--ticks must be at least 1")
    figures = run(args.ticks)
    print(
        f"PKI rotation wave: {SUBJECTS:,} SVIDs issued at once ({figures['issue_all_s']} s), rotating over "
        f"{figures['wave_s']} s; the timer's first {args.ticks} steps, Python {figures['python']}"
    )
    print(f"  {'':<34} {'ticks':>6} {'rotated':>8} {'tick p50':>10} {'tick p99':>10} {'next due p50':>13} {'CPU':>8}")
    for name, key in (("ours: what came due", "ours"), ("baseline: a plan over every SVID", "baseline_full_plan")):
        row = figures[key]
        print(
            f"  {name:<34} {row['ticks']:>6} {row['rotated']:>8} {row['tick_p50_ms']:>8.2f}ms "
            f"{row['tick_p99_ms']:>8.2f}ms {row['next_rotation_at_p50_ms']:>11.3f}ms {row['timer_cpu_s']:>7.2f}s"
        )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
