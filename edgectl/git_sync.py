"""Keeping the controller on the desired state a git ref holds (``edgectl run --git-...``).

``SyncState`` decides, ``GitSync`` acts. ``SyncState`` is pure (it takes ``now`` and the answers git
gave, does no I/O): when to fetch next, whether a new tip is applied, held back because history was
rewritten, or left alone, and what the status reads. ``GitSync`` is the thin shell: one ``DueTimer``
thread that fetches every ``interval_s`` (or at once after ``sync_now()``), asks the ``GitSource``
and calls ``apply(sha, files)``.

Rules:
- Applies are serialized (one at a time, loop and operator alike). A commit pushed while one applies
  is fetched once it finished, and the newest tip is applied: commits in between may never be applied
  on their own (the history entry says how many).
- A commit that fails (its files cannot be read, or ``apply`` says not ok) leaves ``applied_sha``
  where it was (the last good state keeps running) and is not tried again: only a new tip is.
- A tip that does not contain ``applied_sha`` (a force-push) is not applied automatically: status
  ``error``, auto-sync paused until ``resume()``.
- ``rollback(sha)`` applies an earlier commit of the ref and pauses; paused, the loop keeps fetching
  and reports ``out-of-sync`` but applies nothing. ``resume()`` unpauses and applies the tip.
- A failed fetch retries after 5 s, doubling up to ``interval_s``; it recovers by itself.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from edgectl.git_source import BadDocument, CommitInfo, Document, GitSourceError, UnknownCommit
from pki.due_timer import DueTimer

LOG = logging.getLogger("edgectl.git")

DEFAULT_INTERVAL_S = 180.0  # as Argo CD polls; a webhook (sync_now) makes a push apply at once
DEFAULT_BACKOFF_S = 5.0
HISTORY_LENGTH = 50
Status = Literal["synced", "out-of-sync", "error"]
Decision = Literal["none", "apply", "history-rewritten"]


class ApplyOutcome(Protocol):
    """What ``apply(sha, files)`` answers: ok, or why not (shown as the sync error)."""

    @property
    def ok(self) -> bool: ...

    @property
    def error(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ApplyResult:
    ok: bool
    error: str = ""


class Source(Protocol):
    """What the loop needs of a ``GitSource``."""

    url: str
    ref: str
    path: str

    @property
    def display_url(self) -> str: ...
    def fetch(self, timeout_s: float = ...) -> str: ...
    def resolve(self, sha: str) -> str | None: ...
    def is_ancestor(self, old_sha: str, new_sha: str) -> bool: ...
    def commits_between(self, old_sha: str, new_sha: str) -> int: ...
    def commit_info(self, sha: str) -> CommitInfo: ...
    def document_at(self, sha: str) -> Document: ...
    def close(self) -> None: ...


def _short(sha: str | None) -> str:
    return "-" if sha is None else sha[:12]


def rewritten_message(ref: str, old: str, new: str) -> str:
    return (
        f"history rewritten: {ref} moved from {_short(old)} to {_short(new)}, which does not contain it; "
        "auto-sync paused (edgectl sync --resume applies the new tip)"
    )


@dataclass
class SyncState:
    """The sync's state and decisions (pure). ``now`` is the loop's clock (monotonic), ``at`` the wall
    time recorded for people."""

    ref: str
    interval_s: float = DEFAULT_INTERVAL_S
    backoff_s: float = DEFAULT_BACKOFF_S
    seen_sha: str | None = None
    applied_sha: str | None = None
    paused: bool = False
    fetch_error: str = ""
    rewrite_error: str = ""
    apply_error: str = ""
    failed_sha: str | None = None  # not tried again until the tip moves
    accept_new_history: bool = False  # resume(): the next tip is applied even if it rewrote history
    fetch_failures: int = 0
    next_fetch_at: float = 0.0
    sync_requested: bool = False
    seen_at: float | None = None
    applied_at: float | None = None
    last_fetch_at: float | None = None
    applied_commit: CommitInfo | None = None
    notes: list[str] = field(default_factory=list)
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY_LENGTH))

    @property
    def error(self) -> str:
        return self.fetch_error or self.rewrite_error or self.apply_error

    @property
    def status(self) -> Status:
        if self.error:
            return "error"
        if self.seen_sha is not None and self.seen_sha == self.applied_sha:
            return "synced"
        return "out-of-sync"

    # -- when ------------------------------------------------------------------------------------------

    def due_at(self) -> float:
        return -math.inf if self.sync_requested else self.next_fetch_at

    def fetch_due(self, now: float) -> bool:
        return self.sync_requested or now >= self.next_fetch_at

    def request_sync(self) -> None:
        """A trigger (webhook, operator): one fetch as soon as the running one, if any, is done. Triggers
        arriving meanwhile are one request, not a queue."""
        self.sync_requested = True

    def fetch_started(self) -> None:
        self.sync_requested = False

    def fetched(self, tip: str, now: float, at: float) -> None:
        if self.fetch_error:
            self._record(at, "fetch-recovered", tip, "")
        self.seen_sha = tip
        self.seen_at = self.last_fetch_at = at
        self.fetch_error = ""
        self.fetch_failures = 0
        self.next_fetch_at = now + self.interval_s

    def fetch_failed(self, message: str, now: float, at: float) -> bool:
        """Back off; True when this is news (the first failure, or another reason) worth a log line."""
        news = message != self.fetch_error
        if news:
            self._record(at, "fetch-failed", None, message)
        self.fetch_error = message
        self.last_fetch_at = at
        self.fetch_failures += 1
        self.next_fetch_at = now + self.retry_in_s()
        return news

    def retry_in_s(self) -> float:
        if self.fetch_failures == 0:
            return self.interval_s
        doubled: float = self.backoff_s * 2.0 ** min(self.fetch_failures - 1, 30)
        return min(self.interval_s, doubled)

    # -- what ------------------------------------------------------------------------------------------

    def needs_ancestry(self, tip: str) -> bool:
        """Whether ``decide`` needs to know if ``tip`` contains ``applied_sha``."""
        if self.paused or self.accept_new_history or tip == self.failed_sha:
            return False  # decide() will not apply it anyway, or applies it whatever the answer
        return self.applied_sha is not None and tip != self.applied_sha

    def decide(self, tip: str, contains_applied: bool | None) -> Decision:
        """What to do with the fetched ``tip``; ``contains_applied`` answers ``needs_ancestry``."""
        if tip == self.applied_sha and not self.paused:
            self.accept_new_history = False  # resumed onto the commit that runs: nothing left to accept
            return "none"
        if tip == self.applied_sha or self.paused or tip == self.failed_sha:
            return "none"
        if self.applied_sha is None or self.accept_new_history or contains_applied:
            return "apply"
        return "history-rewritten"

    def history_rewritten(self, tip: str, at: float) -> str:
        assert self.applied_sha is not None
        message = rewritten_message(self.ref, self.applied_sha, tip)
        self.paused = True
        self.rewrite_error = message
        self._record(at, "history-rewritten", tip, message)
        return message

    def apply_finished(
        self,
        sha: str,
        outcome: ApplyOutcome,
        at: float,
        *,
        rollback: bool = False,
        skipped: int = 0,
        info: CommitInfo | None = None,
        notes: list[str] | None = None,
    ) -> str:
        """Record an apply; its history message (the log line)."""
        self.accept_new_history = False
        if rollback:
            self.rewrite_error = ""  # the operator chose a commit of the new history
        if outcome.ok:
            self.applied_sha = sha
            self.applied_at = at
            self.applied_commit = info
            self.notes = list(notes or [])
            self.apply_error = ""
            self.failed_sha = None
            event = "rolled-back" if rollback else "applied"
            message = f"{'rolled back to' if rollback else 'applied'} {_short(sha)}"
            if info is not None:
                message += f" ({info.subject})"
            if skipped > 0:
                message += f"; {skipped} intermediate commit{'s' if skipped != 1 else ''} not applied on their own"
        else:
            self.failed_sha = sha
            self.apply_error = outcome.error or f"commit {_short(sha)} was not applied"
            event = "rollback-failed" if rollback else "apply-failed"
            message = f"{_short(sha)} not applied, {_short(self.applied_sha)} keeps running: {outcome.error}"
        self._record(at, event, sha, message, skipped=skipped)
        return message

    def pause(self) -> None:
        self.paused = True

    def resume(self, at: float) -> None:
        self.paused = False
        self.rewrite_error = ""
        self.failed_sha = None  # the operator asks for the tip: try it again even if it failed before
        self.accept_new_history = True
        self._record(at, "resumed", None, "auto-sync resumed")

    def view(self, now: float) -> dict[str, Any]:
        commit = self.applied_commit
        return {
            "status": self.status,
            "error": self.error,
            "paused": self.paused,
            "seen_sha": self.seen_sha,
            "applied_sha": self.applied_sha,
            "failed_sha": self.failed_sha,
            "applied_commit": None if commit is None else commit._asdict(),
            "seen_at": self.seen_at,
            "applied_at": self.applied_at,
            "last_fetch_at": self.last_fetch_at,
            "next_fetch_in_s": 0.0 if self.sync_requested else max(0.0, self.next_fetch_at - now),
            "interval_s": self.interval_s,
            "notes": list(self.notes),
            "history": list(self.history),
        }

    def _record(self, at: float, event: str, sha: str | None, message: str, *, skipped: int = 0) -> None:
        entry: dict[str, Any] = {"at": at, "event": event, "sha": sha, "message": message}
        if skipped:
            entry["skipped"] = skipped
        self.history.append(entry)


class GitSync:
    """The sync loop around one ``GitSource``: ``start()``, ``sync_now()``, ``rollback(sha)``,
    ``resume()``, ``status_view()``, ``stop()``."""

    def __init__(
        self,
        source: Source,
        apply: Callable[[str, dict[str, bytes]], ApplyOutcome],
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        *,
        wall_clock: Callable[[], float] = time.time,
        fetch_timeout_s: float = 60.0,
        backoff_s: float = DEFAULT_BACKOFF_S,
        applied_sha: str | None = None,  # the commit the controller already runs (restored), not applied again
        paused: bool = False,  # auto-sync was paused (a rollback) before a restart: it stays paused
        on_resume: Callable[[], None] | None = None,  # persist the unpause (an apply persists a pause itself)
    ) -> None:
        if interval_s <= 0:
            raise ValueError("the git poll interval must be positive")
        self._source = source
        self._apply = apply
        self._on_resume = on_resume
        self._clock = clock
        self._wall = wall_clock
        self._fetch_timeout_s = fetch_timeout_s
        self._state = SyncState(
            source.ref, interval_s, min(backoff_s, interval_s), applied_sha=applied_sha, paused=paused
        )
        self._state_lock = threading.Lock()  # short: status_view never waits on git or an apply
        self._work = threading.Lock()  # one fetch-and-apply at a time, loop and operator alike
        self._stopping = False
        self._timer = DueTimer(
            "git-sync",
            self._due_at,
            self._run_due,
            clock=clock,
            max_sleep_s=min(30.0, interval_s),
        )

    def start(self) -> GitSync:
        LOG.info(
            "git sync: %s %s:%s every %.0f s",
            self._source.display_url,
            self._source.ref,
            self._source.path or ".",
            self._state.interval_s,
        )
        self._timer.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop: end any git process in flight, wait for the thread (an apply running is let finish)."""
        self._stopping = True
        self._source.close()
        self._timer.stop(timeout)

    def sync_now(self) -> None:
        """Fetch (and apply, unless paused) as soon as possible; coalesces with triggers already waiting."""
        with self._state_lock:
            self._state.request_sync()
        self._timer.wake()

    def status_view(self) -> dict[str, Any]:
        with self._state_lock:
            view = self._state.view(self._clock())
        view.update(url=self._source.display_url, ref=self._source.ref, path=self._source.path)
        return view

    def rollback(self, sha: str) -> ApplyOutcome:
        """Apply ``sha`` (a commit of the ref's history, full or abbreviated) and pause auto-sync.
        Raises ``UnknownCommit`` for a SHA that is not one, ``GitSourceError`` when the repository cannot
        be read; else the apply's outcome (not ok: the running state stays, auto-sync paused)."""
        with self._work:
            full = self._source.resolve(sha)
            with self._state_lock:
                tip = self._state.seen_sha
            if full is None or tip is None:
                tip = self._fetch()
                full = self._source.resolve(sha)
            if full is None:
                raise UnknownCommit(f"no commit {sha} in {self._source.display_url} (fetched {self._source.ref})")
            if not self._source.is_ancestor(full, tip):
                raise UnknownCommit(
                    f"commit {_short(full)} is not in the history of {self._source.ref} (at {_short(tip)})"
                )
            with self._state_lock:
                self._state.pause()
            LOG.info("git sync: rolling back to %s; auto-sync paused", _short(full))
            return self._apply_commit(full, rollback=True)

    def resume(self) -> dict[str, Any]:
        """Unpause and sync to the tip now (applied even if history was rewritten); the status after."""
        with self._state_lock:
            self._state.resume(self._wall())
        LOG.info("git sync: auto-sync resumed")
        if self._on_resume is not None:  # also when already in sync: nothing is applied, so nothing saved
            self._on_resume()
        if not self._stopping:
            self._sync()
        return self.status_view()

    # -- the loop ------------------------------------------------------------------------------------------

    def _due_at(self) -> float | None:
        with self._state_lock:
            return self._state.due_at()

    def _run_due(self, now: float) -> bool:
        with self._state_lock:
            due = self._state.fetch_due(now)
        if due and not self._stopping:
            self._sync()
        return False  # failures back off through next_fetch_at

    def _sync(self) -> None:
        with self._work:
            try:
                tip = self._fetch()
            except GitSourceError:
                return
            with self._state_lock:
                check = self._state.needs_ancestry(tip)
                applied = self._state.applied_sha
            contains: bool | None = None
            if check and applied is not None:
                try:
                    contains = self._source.is_ancestor(applied, tip)
                except GitSourceError as exc:
                    self._fetch_failed(str(exc))
                    return
            with self._state_lock:
                decision = self._state.decide(tip, contains)
                if decision == "history-rewritten":
                    LOG.warning("git sync: %s", self._state.history_rewritten(tip, self._wall()))
            if decision == "apply":
                self._apply_commit(tip)

    def _fetch(self) -> str:
        with self._state_lock:
            self._state.fetch_started()
        try:
            tip = self._source.fetch(self._fetch_timeout_s)
        except GitSourceError as exc:
            self._fetch_failed(str(exc))
            raise
        with self._state_lock:
            self._state.fetched(tip, self._clock(), self._wall())
        return tip

    def _fetch_failed(self, message: str) -> None:
        if self._stopping:
            return
        with self._state_lock:
            news = self._state.fetch_failed(message, self._clock(), self._wall())
            retry = self._state.retry_in_s()
        log = LOG.warning if news else LOG.debug
        log("git sync: %s (retrying in %.0f s)", message, retry)

    def _apply_commit(self, sha: str, *, rollback: bool = False) -> ApplyOutcome:
        with self._state_lock:
            previous = self._state.applied_sha
        skipped = 0
        info: CommitInfo | None = None
        notes: list[str] = []
        outcome: ApplyOutcome
        try:
            if previous is not None and not rollback and self._source.is_ancestor(previous, sha):
                skipped = max(0, self._source.commits_between(previous, sha) - 1)
            info = self._source.commit_info(sha)
            document = self._source.document_at(sha)
        except BadDocument as exc:  # the commit holds no document: the same answer every time
            outcome = ApplyResult(False, str(exc))
        except GitSourceError as exc:  # git itself failed (a timeout, the disk): not the commit's fault
            self._fetch_failed(f"cannot read {_short(sha)}: {exc}")  # retried after the back-off
            return ApplyResult(False, str(exc))
        else:
            notes = document.notes
            outcome = self._call_apply(sha, document.files)
        with self._state_lock:
            message = self._state.apply_finished(
                sha, outcome, self._wall(), rollback=rollback, skipped=skipped, info=info, notes=notes
            )
        (LOG.info if outcome.ok else LOG.warning)("git sync: %s", message.splitlines()[0])
        return outcome

    def _call_apply(self, sha: str, files: dict[str, bytes]) -> ApplyOutcome:
        try:
            return self._apply(sha, files)
        except Exception as exc:  # the apply path's bug must not end the loop
            LOG.exception("git sync: applying %s raised", _short(sha))
            return ApplyResult(False, f"apply raised {type(exc).__name__}: {exc}")
