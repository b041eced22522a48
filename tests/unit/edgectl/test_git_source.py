"""GitSource against real git repositories made here (a bare upstream and a clone pushing to it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edgectl.git_source import (
    MAX_FILE_BYTES,
    GitSource,
    GitSourceError,
    UnknownCommit,
    _fetch_reason,
    redacted_url,
)
from tests.unit.edgectl.git_upstream import Upstream, wait_until

DAEMON = ("git", "daemon", "--reuseaddr", "--export-all")


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path).create()


def source(upstream: Upstream, path: str = "fabric", ref: str = "main") -> GitSource:
    return GitSource(upstream.url, ref, path, upstream.root / "controller")


def test_a_directory_gives_its_yaml_files_relative_and_skips_hidden_and_other_files(upstream: Upstream) -> None:
    sha = upstream.commit_and_push(
        "fabric",
        {
            "fabric/sites.yaml": "sites: []\n",
            "fabric/east/switches.yml": "switches: []\n",
            "fabric/README.md": "not yaml\n",
            "fabric/.draft.yaml": "hidden\n",
            "fabric/.github/ci.yaml": "hidden too\n",
            "other/outside.yaml": "not under the path\n",
        },
    )
    git = source(upstream)
    assert git.fetch() == sha
    assert git.files_at(sha) == {"east/switches.yml": b"switches: []\n", "sites.yaml": b"sites: []\n"}
    assert not (git.work_dir / "fabric").exists(), "nothing is checked out"


def test_a_single_file_path_gives_that_file(upstream: Upstream) -> None:
    sha = upstream.commit_and_push("one file", {"deploy/fabric.yaml": "name: lab\n", "deploy/x.yaml": "no\n"})
    git = source(upstream, "deploy/fabric.yaml")
    assert git.files_at(git.fetch()) == {"fabric.yaml": b"name: lab\n"}
    top = source(upstream, "")
    assert top.files_at(sha) == {"deploy/fabric.yaml": b"name: lab\n", "deploy/x.yaml": b"no\n"}


def test_the_document_is_read_at_the_commit_asked_not_at_the_tip(upstream: Upstream) -> None:
    first = upstream.commit_and_push("v1", {"fabric/a.yaml": "v: 1\n"})
    second = upstream.commit_and_push("v2", {"fabric/a.yaml": "v: 2\n"})
    git = source(upstream)
    assert git.fetch() == second
    assert git.files_at(first) == {"a.yaml": b"v: 1\n"}
    assert git.files_at(second) == {"a.yaml": b"v: 2\n"}
    assert git.is_ancestor(first, second) and not git.is_ancestor(second, first)
    assert git.commits_between(first, second) == 1
    info = git.commit_info(second)
    assert info.subject == "v2" and info.author == "Ada Ops <ada@example.org>" and info.time > 1_600_000_000


def test_a_missing_path_is_a_clear_error(upstream: Upstream) -> None:
    sha = upstream.commit_and_push("x", {"fabric/a.yaml": "a: 1\n"})
    for path in ("nothere", "fabric/nothere.yaml", "nothere/deeper"):
        with pytest.raises(GitSourceError) as caught:
            source(upstream, path).files_at(source(upstream, path).fetch())
        assert str(caught.value) == f"{path}: no such file or directory in commit {sha[:12]}"


def test_a_directory_without_yaml_is_refused_not_an_empty_desired_state(upstream: Upstream) -> None:
    upstream.commit_and_push("x", {"fabric/README.md": "soon\n"})
    git = source(upstream)
    with pytest.raises(GitSourceError, match=r"^fabric: no \.yaml or \.yml file in commit"):
        git.files_at(git.fetch())


def test_a_symlink_leaving_the_document_path_is_refused(upstream: Upstream) -> None:
    upstream.write("fabric/a.yaml", "a: 1\n")
    upstream.symlink("fabric/x.yaml", "../../etc/passwd")
    upstream.symlink("fabric/abs.yaml", "/etc/passwd")
    upstream.symlink("fabric/sibling.yaml", "../secrets/key.yaml")
    upstream.write("secrets/key.yaml", "secret: 1\n")
    sha = upstream.commit("links out")
    upstream.push()
    git = source(upstream)
    git.fetch()
    with pytest.raises(GitSourceError) as caught:
        git.files_at(sha)
    assert caught.value.problems == [
        "abs.yaml: symlink leaves the document path (-> /etc/passwd)",
        "sibling.yaml: symlink leaves the document path (-> ../secrets/key.yaml)",
        "x.yaml: symlink leaves the document path (-> ../../etc/passwd)",
    ]


def test_a_symlink_inside_the_document_path_is_followed(upstream: Upstream) -> None:
    upstream.write("fabric/base/common.yaml", "common: 1\n")
    upstream.write("fabric/data/hosts.txt", "hosts: []\n")
    upstream.symlink("fabric/east/common.yaml", "../base/common.yaml")
    upstream.symlink("fabric/hosts.yaml", "data/hosts.txt")
    upstream.symlink("fabric/chain.yaml", "hosts.yaml")
    upstream.symlink("fabric/dangling.yml", "missing.yaml")
    sha = upstream.commit("links in")
    upstream.push()
    git = source(upstream)
    git.fetch()
    with pytest.raises(GitSourceError) as caught:
        git.files_at(sha)
    assert caught.value.problems == ["dangling.yml: symlink target missing.yaml is not a file in the document path"]
    (upstream.clone / "fabric/dangling.yml").unlink()
    sha = upstream.commit("no dangling link")
    upstream.push()
    git.fetch()
    assert git.files_at(sha) == {
        "base/common.yaml": b"common: 1\n",
        "chain.yaml": b"hosts: []\n",
        "east/common.yaml": b"common: 1\n",
        "hosts.yaml": b"hosts: []\n",
    }


def test_the_path_itself_a_symlink_is_refused(upstream: Upstream) -> None:
    upstream.write("real/a.yaml", "a: 1\n")
    upstream.symlink("fabric", "real")
    sha = upstream.commit("path is a link")
    upstream.push()
    git = source(upstream)
    git.fetch()
    with pytest.raises(GitSourceError, match=r"^fabric: is a symbolic link \(-> real\)"):
        git.files_at(sha)


def test_a_50_mb_blob_is_refused_without_reading_it(upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    upstream.write("fabric/a.yaml", "a: 1\n")
    with (upstream.clone / "fabric" / "huge.yaml").open("wb") as huge:
        huge.truncate(50 * 1024 * 1024)  # zeros: git stores it in ~50 KiB
    sha = upstream.commit("huge")
    upstream.push()
    git = source(upstream)
    git.fetch()
    asked: list[set[str]] = []
    real_read = git._read
    monkeypatch.setattr(git, "_read", lambda oids: asked.append(oids) or real_read(oids))
    started = time.monotonic()
    with pytest.raises(GitSourceError) as caught:
        git.files_at(sha)
    elapsed = time.monotonic() - started
    assert caught.value.problems == [
        f"huge.yaml: {50 * 1024 * 1024} bytes, over the 8 MiB limit for one file",
        "fabric: 52428805 bytes of YAML, over the 32 MiB limit (largest: huge.yaml (52428800 bytes), a.yaml (5 bytes))",
    ]
    assert set().union(*asked) == set(), "no content was read"
    assert elapsed < 10, elapsed
    single = source(upstream, "fabric/huge.yaml")
    with pytest.raises(GitSourceError, match=rf"^huge.yaml: {50 * 1024 * 1024} bytes, over the 8 MiB limit"):
        single.files_at(sha)


def test_many_files_under_the_file_limit_are_refused_over_the_total_limit(upstream: Upstream) -> None:
    for i in range(5):  # 5 x 7 MiB: each fits, together they do not
        with upstream.write(f"fabric/part{i}.yaml", b"").open("r+b") as part:
            part.truncate(MAX_FILE_BYTES - 1024 * 1024)
    sha = upstream.commit("parts")
    upstream.push()
    git = source(upstream)
    git.fetch()
    with pytest.raises(GitSourceError, match=r"^fabric: 36700160 bytes of YAML, over the 32 MiB limit \(largest: "):
        git.files_at(sha)


def test_a_submodule_is_ignored_with_a_note(upstream: Upstream, tmp_path: Path) -> None:
    library = Upstream(tmp_path, "library").create()
    library.commit_and_push("lib", {"lib.yaml": "lib: 1\n"})
    upstream.write("fabric/a.yaml", "a: 1\n")
    upstream.run("submodule", "--quiet", "add", library.url, "fabric/vendored")
    sha = upstream.commit("with a submodule")
    upstream.push()
    git = source(upstream)
    git.fetch()
    document = git.document_at(sha)
    assert document.files == {"a.yaml": b"a: 1\n"}
    assert document.notes == ["vendored: submodule ignored (its files are not part of the document)"]


def test_an_unreachable_repository_is_one_clear_line_and_the_work_dir_stays_usable(upstream: Upstream) -> None:
    missing = upstream.root / "nothere.git"
    git = GitSource(missing.as_uri(), "main", "fabric", upstream.root / "controller")
    with pytest.raises(GitSourceError) as caught:
        git.fetch()
    assert str(caught.value) == f"cannot fetch main from {missing.as_uri()}: repository not found"
    sha = upstream.commit_and_push("x", {"fabric/a.yaml": "a: 1\n"})
    same_dir = GitSource(upstream.url, "main", "fabric", upstream.root / "controller")
    assert same_dir.fetch() == sha


def test_no_git_on_the_path_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    git = GitSource("file:///x.git", "main", "", tmp_path / "controller")
    with pytest.raises(GitSourceError, match=r"^cannot run git in .*controller: No such file or directory$"):
        git.fetch()


def test_an_unknown_ref_is_one_clear_line(upstream: Upstream) -> None:
    upstream.commit_and_push("x", {"fabric/a.yaml": "a: 1\n"})
    with pytest.raises(GitSourceError) as caught:
        source(upstream, ref="release").fetch()
    assert str(caught.value) == f"cannot fetch release from {upstream.url}: no branch or tag release there"


def test_a_tag_is_a_ref_too(upstream: Upstream) -> None:
    sha = upstream.commit_and_push("x", {"fabric/a.yaml": "a: 1\n"})
    upstream.run("tag", "-a", "-m", "release 1", "v1")
    upstream.run("push", "--quiet", "origin", "v1")
    assert source(upstream, ref="v1").fetch() == sha


def test_a_fetch_that_hangs_times_out_with_one_line_and_leaves_no_process(tmp_path: Path) -> None:
    """A server that accepts and never answers (git:// on a listening socket nobody serves)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        git = GitSource(f"git://127.0.0.1:{port}/x.git", "main", "fabric", tmp_path / "controller")
        started = time.monotonic()
        with pytest.raises(GitSourceError) as caught:
            git.fetch(timeout_s=1.0)
        assert time.monotonic() - started < 15
    assert str(caught.value) == f"cannot fetch main from git://127.0.0.1:{port}/x.git: no answer within 1 s"
    assert git._running == set()


def test_close_ends_a_fetch_in_flight(tmp_path: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        git = GitSource(f"git://127.0.0.1:{silent.getsockname()[1]}/x.git", "main", "", tmp_path / "controller")
        errors: list[str] = []

        def fetch() -> None:
            try:
                git.fetch(timeout_s=60)
            except GitSourceError as exc:
                errors.append(str(exc))

        fetching = threading.Thread(target=fetch)
        fetching.start()
        wait_until(lambda: git._running, what="git fetch to start")
        pids = [p.pid for p in git._running]
        git.close()
        fetching.join(15)
        assert not fetching.is_alive()
    assert errors == ["the git source is stopped"]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)


def test_stale_lock_files_of_a_killed_fetch_do_not_break_the_next(upstream: Upstream) -> None:
    sha = upstream.commit_and_push("x", {"fabric/a.yaml": "a: 1\n"})
    git = source(upstream)
    git.fetch()
    (git.git_dir / "refs" / "edgectl" / "tip.lock").write_text("")
    (git.git_dir / "packed-refs.lock").write_text("")
    assert git.fetch() == sha


def test_unknown_and_malformed_shas(upstream: Upstream) -> None:
    sha = upstream.commit_and_push("x", {"fabric/a.yaml": "a: 1\n"})
    git = source(upstream)
    git.fetch()
    assert git.resolve(sha[:10]) == sha
    assert git.resolve("deadbeef" * 5) is None
    with pytest.raises(UnknownCommit, match="is not a commit SHA"):
        git.resolve("HEAD~1")
    with pytest.raises(UnknownCommit, match="no commit"):
        git.files_at("deadbeef" * 5)
    assert git.is_ancestor("deadbeef" * 5, sha) is False


def test_no_user_or_system_git_configuration_is_used(
    upstream: Upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's ~/.gitconfig that rewrites every URL must not redirect the controller's fetch."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text('[url "file:///nowhere/"]\n\tinsteadOf = file://\n')
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    sha = upstream.commit_and_push("x", {"fabric/a.yaml": "a: 1\n"})
    assert source(upstream).fetch() == sha


def test_bad_arguments_are_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a repository address"):
        GitSource("--upload-pack=touch /tmp/pwned", "main", "", tmp_path)
    with pytest.raises(ValueError, match="not a branch or tag name"):
        GitSource("file:///x", "-main", "", tmp_path)
    with pytest.raises(ValueError, match=r"may not contain '\.\.'"):
        GitSource("file:///x", "main", "a/../../b", tmp_path)


def test_git_messages_become_one_stable_line() -> None:
    curl = (
        "fatal: unable to access 'https://127.0.0.1:1/x.git/': Failed to connect to 127.0.0.1 port 1 after 3 ms: "
        "Couldn't connect to server\n"
    )
    reason = (
        "unable to access 'https://127.0.0.1:1/x.git/': Failed to connect to 127.0.0.1 port 1: "
        "Couldn't connect to server"
    )
    assert _fetch_reason(curl, "main") == reason, "the same failure reads the same on every retry"
    daemon = "fatal: unable to connect to 127.0.0.1:\n127.0.0.1[0: 127.0.0.1]: errno=Connection refused\n\n"
    assert (
        _fetch_reason(daemon, "main")
        == "unable to connect to 127.0.0.1: 127.0.0.1[0: 127.0.0.1]: errno=Connection refused"
    )
    assert _fetch_reason("remote: Repository not found.\nfatal: repository 'https://h/x/' not found\n", "main") == (
        "repository not found"
    )
    assert _fetch_reason("", "main") == "git fetch failed"


def test_credentials_never_appear_in_messages() -> None:
    assert (
        redacted_url("https://bot:s3cret@git.example.org:8443/fabric.git")
        == "https://bot@git.example.org:8443/fabric.git"
    )
    assert redacted_url("git@github.com:org/fabric.git") == "git@github.com:org/fabric.git"


def test_fetching_from_git_daemon(upstream: Upstream, tmp_path: Path) -> None:
    """The git:// protocol against Debian's git daemon on a free loopback port."""
    sha = upstream.commit_and_push("x", {"fabric/a.yaml": "a: 1\n"})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    daemon = subprocess.Popen(
        [*DAEMON, f"--base-path={upstream.root}", "--listen=127.0.0.1", f"--port={port}", str(upstream.root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        git = GitSource(f"git://127.0.0.1:{port}/upstream.git", "main", "fabric", tmp_path / "controller")

        def fetched() -> bool:
            try:
                return git.fetch(timeout_s=10) == sha
            except GitSourceError:
                return False

        wait_until(fetched, what="git daemon to serve")
        assert git.files_at(sha) == {"a.yaml": b"a: 1\n"}
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(10)
