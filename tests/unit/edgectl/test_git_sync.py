"""The git sync: its decisions (SyncState, pure) and the loop against real repositories made here."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgectl.git_source import CommitInfo, Document, GitSource, GitSourceError, UnknownCommit
from edgectl.git_sync import ApplyOutcome, ApplyResult, GitSync, SyncState, rewritten_message
from tests.unit.edgectl.git_upstream import Upstream, wait_until

A, B, C = "a" * 40, "b" * 40, "c" * 40

# -- SyncState (pure) ------------------------------------------------------------------------------------


def test_the_first_tip_is_applied_then_only_new_ones() -> None:
    state = SyncState("main", interval_s=180)
    assert state.status == "out-of-sync" and state.fetch_due(0.0)
    state.fetched(A, now=10.0, at=1000.0)
    assert not state.needs_ancestry(A)
    assert state.decide(A, None) == "apply"
    state.apply_finished(A, ApplyResult(True), at=1001.0)
    assert (state.status, state.applied_sha, state.next_fetch_at) == ("synced", A, 190.0)
    assert state.decide(A, None) == "none"
    state.fetched(B, now=190.0, at=1180.0)
    assert state.status == "out-of-sync" and state.needs_ancestry(B)
    assert state.decide(B, True) == "apply"


def test_a_tip_that_does_not_contain_the_applied_commit_pauses() -> None:
    state = SyncState("main", applied_sha=A)
    state.fetched(B, now=0.0, at=0.0)
    assert state.decide(B, False) == "history-rewritten"
    message = state.history_rewritten(B, at=5.0)
    assert (
        message
        == rewritten_message("main", A, B)
        == (
            f"history rewritten: main moved from {A[:12]} to {B[:12]}, which does not contain it; "
            "auto-sync paused (edgectl sync --resume applies the new tip)"
        )
    )
    assert (state.status, state.error, state.paused) == ("error", message, True)
    state.fetched(C, now=1.0, at=6.0)
    assert not state.needs_ancestry(C), "paused: no git call to ask"
    assert state.decide(C, False) == "none", "paused: no second pause, no apply"
    state.resume(at=7.0)
    assert not state.paused and state.error == "" and not state.needs_ancestry(C)
    assert state.decide(C, None) == "apply"
    state.apply_finished(C, ApplyResult(True), at=8.0)
    assert state.status == "synced" and not state.accept_new_history


def test_a_resume_while_in_sync_does_not_let_a_later_force_push_in() -> None:
    state = SyncState("main", applied_sha=A)
    state.fetched(A, now=0.0, at=0.0)
    state.resume(at=1.0)
    assert state.decide(A, None) == "none"
    state.fetched(B, now=2.0, at=2.0)
    assert state.needs_ancestry(B), "the resume was spent on the commit that runs"
    assert state.decide(B, False) == "history-rewritten"


def test_a_failed_commit_keeps_the_last_good_one_and_is_not_retried() -> None:
    state = SyncState("main", applied_sha=A)
    state.fetched(B, now=0.0, at=0.0)
    state.apply_finished(B, ApplyResult(False, "fabric.yaml:3: links[0].a: unknown switch 'x'"), at=1.0)
    assert state.applied_sha == A and state.failed_sha == B
    assert (state.status, state.error) == ("error", "fabric.yaml:3: links[0].a: unknown switch 'x'")
    assert state.decide(B, True) == "none"
    assert state.decide(C, True) == "apply"
    state.apply_finished(C, ApplyResult(True), at=2.0)
    assert state.error == "" and state.failed_sha is None


def test_fetch_failures_back_off_and_recover() -> None:
    state = SyncState("main", interval_s=180, backoff_s=5)
    waits = []
    for i in range(8):
        state.fetch_failed("cannot fetch main from x: repository not found", now=float(i), at=0.0)
        waits.append(state.next_fetch_at - i)
    assert waits == [5, 10, 20, 40, 80, 160, 180, 180]
    assert (state.status, state.error) == ("error", "cannot fetch main from x: repository not found")
    assert [e["event"] for e in state.history] == ["fetch-failed"], "one history line, not one per retry"
    state.fetched(A, now=100.0, at=0.0)
    assert state.error == "" and state.next_fetch_at == 280.0
    assert [e["event"] for e in state.history] == ["fetch-failed", "fetch-recovered"]


def test_a_fetch_error_shows_over_an_apply_error_and_leaves_it_after() -> None:
    state = SyncState("main")
    state.fetched(A, now=0.0, at=0.0)
    state.apply_finished(A, ApplyResult(False, "bad"), at=0.0)
    state.fetch_failed("cannot fetch", now=1.0, at=0.0)
    assert state.error == "cannot fetch"
    state.fetched(A, now=2.0, at=0.0)
    assert (state.status, state.error) == ("error", "bad")


def test_triggers_coalesce_into_one_request() -> None:
    state = SyncState("main", interval_s=180)
    state.fetched(A, now=0.0, at=0.0)
    assert not state.fetch_due(1.0)
    state.request_sync()
    state.request_sync()
    assert state.fetch_due(1.0) and state.due_at() == float("-inf")
    state.fetch_started()
    assert not state.fetch_due(1.0) and state.due_at() == 180.0


def test_the_view_holds_what_the_api_shows() -> None:
    state = SyncState("main", interval_s=180)
    state.fetched(A, now=0.0, at=1000.0)
    state.apply_finished(A, ApplyResult(True), at=1001.0)
    view = state.view(now=30.0)
    assert view["status"] == "synced" and view["next_fetch_in_s"] == 150.0
    assert {"status", "error", "paused", "seen_sha", "applied_sha", "seen_at", "applied_at", "history"} <= set(view)


# -- GitSync against real repositories -------------------------------------------------------------------


class Recorder:
    """The lead's apply callback, as a test double: records calls, may fail or block."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, bytes]]] = []
        self.fail: set[str] = set()
        self.gate: threading.Event | None = None
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def __call__(self, sha: str, files: dict[str, bytes]) -> ApplyOutcome:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.calls.append((sha, files))
        try:
            if self.gate is not None:
                assert self.gate.wait(30)
            if sha in self.fail:
                return ApplyResult(False, "fabric.yaml:1: name: must be a name")
            return ApplyResult(True)
        finally:
            with self._lock:
                self.running -= 1

    @property
    def shas(self) -> list[str]:
        return [sha for sha, _ in self.calls]


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path).create()


@pytest.fixture
def syncs() -> Iterator[list[GitSync]]:
    started: list[GitSync] = []
    yield started
    for sync in started:
        sync.stop()


def start(
    syncs: list[GitSync],
    url: str,
    work: Path,
    apply: Recorder,
    *,
    path: str = "fabric",
    interval_s: float = 60.0,
    backoff_s: float = 0.05,
    on_resume: Callable[[], None] | None = None,
) -> GitSync:
    sync = GitSync(
        GitSource(url, "main", path, work / "controller"), apply, interval_s, backoff_s=backoff_s, on_resume=on_resume
    )
    syncs.append(sync)
    return sync.start()


def synced_at(sync: GitSync, sha: str) -> bool:
    view = sync.status_view()
    return view["status"] == "synced" and view["applied_sha"] == sha


def test_a_good_commit_is_applied_and_synced_at_its_sha(upstream: Upstream, syncs: list[GitSync]) -> None:
    sha = upstream.commit_and_push("lab", {"fabric/a.yaml": "a: 1\n", "fabric/b/c.yml": "c: 1\n"})
    apply = Recorder()
    sync = start(syncs, upstream.url, upstream.root, apply)
    wait_until(lambda: synced_at(sync, sha), what="the first sync")
    assert apply.calls == [(sha, {"a.yaml": b"a: 1\n", "b/c.yml": b"c: 1\n"})]
    view = sync.status_view()
    assert view["seen_sha"] == sha and view["error"] == "" and view["paused"] is False
    assert view["applied_commit"]["subject"] == "lab"
    assert (view["url"], view["ref"], view["path"]) == (upstream.url, "main", "fabric")
    assert view["history"][-1]["event"] == "applied"
    second = upstream.commit_and_push("more", {"fabric/a.yaml": "a: 2\n"})
    sync.sync_now()
    wait_until(lambda: synced_at(sync, second), what="the webhook's sync")
    assert apply.shas == [sha, second]


def test_a_single_file_path_is_synced(upstream: Upstream, syncs: list[GitSync]) -> None:
    sha = upstream.commit_and_push("lab", {"deploy/fabric.yaml": "name: lab\n"})
    apply = Recorder()
    sync = start(syncs, upstream.url, upstream.root, apply, path="deploy/fabric.yaml")
    wait_until(lambda: synced_at(sync, sha), what="the first sync")
    assert apply.calls == [(sha, {"fabric.yaml": b"name: lab\n"})]


def test_a_bad_commit_keeps_the_good_one_and_is_retried_only_when_a_new_one_comes(
    upstream: Upstream, syncs: list[GitSync]
) -> None:
    good = upstream.commit_and_push("good", {"fabric/a.yaml": "a: 1\n"})
    apply = Recorder()
    sync = start(syncs, upstream.url, upstream.root, apply)
    wait_until(lambda: synced_at(sync, good), what="the good commit")
    bad = upstream.commit_and_push("bad", {"fabric/a.yaml": "a: [\n"})
    apply.fail.add(bad)
    sync.sync_now()
    wait_until(lambda: sync.status_view()["status"] == "error", what="the bad commit's error")
    view = sync.status_view()
    assert view["applied_sha"] == good and view["seen_sha"] == bad and view["failed_sha"] == bad
    assert view["error"] == "fabric.yaml:1: name: must be a name"
    for _ in range(3):  # fetched again, the same bad tip: no second apply
        fetched = sync.status_view()["last_fetch_at"]
        sync.sync_now()
        wait_until(lambda f=fetched: sync.status_view()["last_fetch_at"] != f, what="a fetch")
    assert apply.shas == [good, bad]
    fixed = upstream.commit_and_push("fixed", {"fabric/a.yaml": "a: 3\n"})
    sync.sync_now()
    wait_until(lambda: synced_at(sync, fixed), what="the fix")
    assert apply.shas == [good, bad, fixed]


def test_a_commit_whose_files_are_refused_is_an_error_without_an_apply(
    upstream: Upstream, syncs: list[GitSync]
) -> None:
    good = upstream.commit_and_push("good", {"fabric/a.yaml": "a: 1\n"})
    apply = Recorder()
    sync = start(syncs, upstream.url, upstream.root, apply)
    wait_until(lambda: synced_at(sync, good), what="the good commit")
    upstream.symlink("fabric/x.yaml", "../../etc/passwd")
    bad = upstream.commit("escape")
    upstream.push()
    sync.sync_now()
    wait_until(lambda: sync.status_view()["failed_sha"] == bad, what="the refused commit")
    assert sync.status_view()["error"] == "x.yaml: symlink leaves the document path (-> ../../etc/passwd)"
    assert apply.shas == [good]


def test_a_force_push_pauses_and_resume_applies_the_new_tip(upstream: Upstream, syncs: list[GitSync]) -> None:
    upstream.commit_and_push("base", {"fabric/a.yaml": "a: 1\n"})
    applied = upstream.commit_and_push("v2", {"fabric/a.yaml": "a: 2\n"})
    apply = Recorder()
    sync = start(syncs, upstream.url, upstream.root, apply)
    wait_until(lambda: synced_at(sync, applied), what="v2")
    upstream.write("fabric/a.yaml", "a: 22\n")
    rewritten = upstream.commit("v2, amended", amend=True)
    upstream.push(force=True)
    sync.sync_now()
    wait_until(lambda: sync.status_view()["paused"], what="the pause")
    view = sync.status_view()
    assert view["status"] == "error" and view["seen_sha"] == rewritten and view["applied_sha"] == applied
    assert view["error"] == (
        f"history rewritten: main moved from {applied[:12]} to {rewritten[:12]}, which does not contain it; "
        "auto-sync paused (edgectl sync --resume applies the new tip)"
    )
    assert apply.shas == [applied]
    view = sync.resume()
    assert (view["status"], view["paused"], view["applied_sha"]) == ("synced", False, rewritten)
    assert apply.calls[-1] == (rewritten, {"a.yaml": b"a: 22\n"})


def test_rollback_pauses_and_resume_goes_back_to_the_tip(upstream: Upstream, syncs: list[GitSync]) -> None:
    first = upstream.commit_and_push("v1", {"fabric/a.yaml": "a: 1\n"})
    second = upstream.commit_and_push("v2", {"fabric/a.yaml": "a: 2\n"})
    apply = Recorder()
    sync = start(syncs, upstream.url, upstream.root, apply)
    wait_until(lambda: synced_at(sync, second), what="v2")
    outcome = sync.rollback(first[:10])
    assert outcome.ok
    view = sync.status_view()
    assert (view["applied_sha"], view["paused"], view["status"]) == (first, True, "out-of-sync")
    assert apply.calls[-1] == (first, {"a.yaml": b"a: 1\n"})
    assert view["history"][-1]["event"] == "rolled-back"
    third = upstream.commit_and_push("v3", {"fabric/a.yaml": "a: 3\n"})
    sync.sync_now()
    wait_until(lambda: sync.status_view()["seen_sha"] == third, what="the paused loop to fetch")
    assert sync.status_view()["status"] == "out-of-sync" and apply.shas == [second, first]
    view = sync.resume()
    assert (view["status"], view["paused"], view["applied_sha"]) == ("synced", False, third)


def test_rollback_refuses_unknown_commits_and_ones_outside_the_ref(upstream: Upstream, syncs: list[GitSync]) -> None:
    upstream.commit_and_push("v1", {"fabric/a.yaml": "a: 1\n"})
    replaced = upstream.commit_and_push("v2", {"fabric/a.yaml": "a: 2\n"})
    apply = Recorder()
    sync = start(syncs, upstream.url, upstream.root, apply)
    wait_until(lambda: synced_at(sync, replaced), what="v2")
    with pytest.raises(UnknownCommit, match=f"^no commit {'d' * 40} in {upstream.url}"):
        sync.rollback("d" * 40)
    with pytest.raises(UnknownCommit, match="is not a commit SHA"):
        sync.rollback("main~1")
    upstream.run("reset", "--quiet", "--hard", "HEAD~1")
    upstream.write("fabric/a.yaml", "a: 20\n")
    tip = upstream.commit("v2 again")
    upstream.push(force=True)
    sync.sync_now()
    wait_until(lambda: sync.status_view()["seen_sha"] == tip, what="the rewritten tip")
    with pytest.raises(UnknownCommit, match=f"^commit {replaced[:12]} is not in the history of main"):
        sync.rollback(replaced)
    assert apply.shas == [replaced]


def test_an_unreachable_repository_is_an_error_that_recovers_by_itself(tmp_path: Path, syncs: list[GitSync]) -> None:
    upstream = Upstream(tmp_path)
    apply = Recorder()
    sync = start(syncs, upstream.url, tmp_path, apply, interval_s=0.5)
    wait_until(lambda: sync.status_view()["status"] == "error", what="the fetch error")
    assert sync.status_view()["error"] == f"cannot fetch main from {upstream.url}: repository not found"
    upstream.create()
    sha = upstream.commit_and_push("late", {"fabric/a.yaml": "a: 1\n"})
    wait_until(lambda: synced_at(sync, sha), what="recovery without a trigger")
    events = [e["event"] for e in sync.status_view()["history"]]
    assert events[0] == "fetch-failed" and events[-2:] == ["fetch-recovered", "applied"]
    assert set(events[:-2]) == {"fetch-failed"}, "a new reason (an empty repository, no main yet) is news"


def test_commits_arriving_during_an_apply_wait_and_the_newest_is_applied(
    upstream: Upstream, syncs: list[GitSync]
) -> None:
    first = upstream.commit_and_push("v1", {"fabric/a.yaml": "a: 1\n"})
    apply = Recorder()
    apply.gate = threading.Event()
    sync = start(syncs, upstream.url, upstream.root, apply)
    wait_until(lambda: apply.running == 1, what="the first apply to start")
    upstream.commit_and_push("v2", {"fabric/a.yaml": "a: 2\n"})
    sync.sync_now()
    third = upstream.commit_and_push("v3", {"fabric/a.yaml": "a: 3\n"})
    for _ in range(5):
        sync.sync_now()
    rollback_done = threading.Event()

    def operator_rollback() -> None:  # an operator's apply waits for the loop's too
        sync.rollback(first)
        rollback_done.set()

    time.sleep(0.2)
    assert apply.shas == [first], "nothing else starts while an apply runs"
    apply.gate.set()
    wait_until(lambda: synced_at(sync, third), what="the newest tip")
    assert apply.shas == [first, third] and apply.most_running == 1
    entry = sync.status_view()["history"][-1]
    assert entry["skipped"] == 1 and "1 intermediate commit not applied on their own" in entry["message"]
    apply.gate.clear()
    operator = threading.Thread(target=operator_rollback)
    operator.start()
    wait_until(lambda: apply.running == 1, what="the rollback's apply")
    sync.sync_now()
    time.sleep(0.2)
    apply.gate.set()
    operator.join(30)
    assert rollback_done.is_set() and apply.most_running == 1
    assert apply.shas == [first, third, first]


def test_an_apply_that_raises_is_an_error_and_the_loop_goes_on(upstream: Upstream, syncs: list[GitSync]) -> None:
    first = upstream.commit_and_push("v1", {"fabric/a.yaml": "a: 1\n"})
    calls: list[str] = []

    def apply(sha: str, files: dict[str, bytes]) -> ApplyOutcome:
        calls.append(sha)
        if sha == first:
            raise RuntimeError("bus closed")
        return ApplyResult(True)

    sync = GitSync(GitSource(upstream.url, "main", "fabric", upstream.root / "c"), apply, 60.0, backoff_s=0.05)
    syncs.append(sync.start())
    wait_until(lambda: sync.status_view()["status"] == "error", what="the error")
    assert sync.status_view()["error"] == "apply raised RuntimeError: bus closed"
    second = upstream.commit_and_push("v2", {"fabric/a.yaml": "a: 2\n"})
    sync.sync_now()
    wait_until(lambda: synced_at(sync, second), what="the next commit")


def test_stop_ends_the_thread_and_a_fetch_in_flight(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts, never answers: the fetch hangs
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        source = GitSource(f"git://127.0.0.1:{silent.getsockname()[1]}/x.git", "main", "", tmp_path / "c")
        sync = GitSync(source, Recorder(), 60.0, fetch_timeout_s=120.0).start()
        wait_until(lambda: source._running, what="the fetch to start")
        started = time.monotonic()
        sync.stop()
        assert time.monotonic() - started < 10
    assert source._running == set()
    assert sync._timer._thread is not None and not sync._timer._thread.is_alive()
    assert sync.status_view()["error"] == "", "stopping is not a fetch failure"


class _FlakySource:
    """A repository whose first read of a commit fails in git itself (not in the commit)."""

    url, ref, path, display_url = "file:///flaky.git", "main", "", "file:///flaky.git"

    def __init__(self) -> None:
        self.reads = 0

    def fetch(self, timeout_s: float = 60.0) -> str:
        return A

    def resolve(self, sha: str) -> str | None:
        return sha

    def is_ancestor(self, old_sha: str, new_sha: str) -> bool:
        return True

    def commits_between(self, old_sha: str, new_sha: str) -> int:
        return 1

    def commit_info(self, sha: str) -> CommitInfo:
        return CommitInfo("fabric", "edgectl <test@edgectl.invalid>", 0)

    def document_at(self, sha: str) -> Document:
        self.reads += 1
        if self.reads == 1:
            raise GitSourceError("git cat-file failed: Input/output error")
        return Document({"fabric.yaml": b"name: x\n"}, [])

    def close(self) -> None:
        pass


def test_a_commit_git_failed_to_read_is_read_again_not_marked_failed() -> None:
    source = _FlakySource()
    applied: list[str] = []
    sync = GitSync(
        source, lambda sha, files: applied.append(sha) or ApplyResult(True), interval_s=180, backoff_s=0.05
    ).start()
    try:
        wait_until(lambda: applied == [A], 10, "the commit applied on the second read")
        assert source.reads == 2 and sync.status_view()["failed_sha"] is None
    finally:
        sync.stop()


def test_a_resume_is_recorded_even_when_nothing_is_applied(
    upstream: Upstream, syncs: list[GitSync], tmp_path: Path
) -> None:
    """Resumed while the tip is what runs: nothing is applied (so nothing saved by an apply); the saved
    document must still lose its pause, or a restart comes back paused."""
    from edgectl.desired_store import SavedDocument, load_document, save_document, save_resumed

    state_dir = str(tmp_path / "state")
    save_document(state_dir, SavedDocument("r1", "git abc", {"a.yaml": b"a: 1\n"}, paused=True))
    only = upstream.commit_and_push("v1", {"fabric/a.yaml": "a: 1\n"})
    apply = Recorder()
    sync = start(syncs, upstream.url, upstream.root, apply, on_resume=lambda: save_resumed(state_dir))
    wait_until(lambda: synced_at(sync, only), what="v1")
    view = sync.resume()
    assert view["paused"] is False and apply.shas == [only]  # nothing applied by the resume
    saved = load_document(state_dir)
    assert saved is not None and saved.paused is False and saved.files == {"a.yaml": b"a: 1\n"}
