"""The desired-state document read from a git repository: a ref, a path in it, the files there.

Adapter (the ``git`` command line). A ``GitSource`` keeps a bare repository in its work directory
(``git init --bare`` once, then ``git fetch`` of the one ref into ``refs/edgectl/tip``) and reads the
document straight from the object store (``git ls-tree -r -l``, ``git cat-file --batch``): nothing is
checked out, so nothing in the repository can place a file anywhere on this machine.

Every git call is an argument list with a timeout, in its own process group (a timeout or ``close()``
ends git and whatever it started, e.g. ``git-remote-https``), with neither the user's nor the system's
git configuration (``GIT_CONFIG_NOSYSTEM``, ``HOME`` = the work directory), no prompt
(``GIT_TERMINAL_PROMPT=0``, ssh in batch mode) and ``LC_ALL=C`` (messages are read). Failures are one
``GitSourceError`` with a line a person can act on, never git's own multi-line text or a traceback.

What is read, and what is refused before a byte of it is read (``ls-tree -l`` gives every size):
- ``path`` a file: that file. ``path`` a directory: every ``*.yaml``/``*.yml`` below it, named relative
  to it; entries whose name or a directory of which starts with ``.`` are skipped.
- a file over 8 MiB, or more than 32 MiB in all: refused, naming the files.
- a symbolic link: followed when its target is a file inside ``path``, refused when it leaves it.
- a submodule: ignored, with a note.
- a directory without any YAML file: refused (an empty desired state would remove everything).

One ``GitSource`` per work directory; its calls may come from several threads (fetches are serialized).
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import re
import signal
import subprocess
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

LOG = logging.getLogger("edgectl.git")

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_TOTAL_BYTES = 32 * 1024 * 1024
MAX_SYMLINK_HOPS = 8
MAX_SYMLINK_TARGET_BYTES = 4096
DEFAULT_FETCH_TIMEOUT_S = 60.0
LOCAL_TIMEOUT_S = 30.0  # reading the local object store: generous, it never waits on the network
TIP_REF = "refs/edgectl/tip"
FETCH_OPTIONS = ("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules")
YAML_SUFFIXES = (".yaml", ".yml")
_SHA_RE = re.compile(r"[0-9a-fA-F]{4,64}")
_REF_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/+-]*")
_SYMLINK_MODE = "120000"
_SUBMODULE_MODE = "160000"


class GitSourceError(Exception):
    """The repository, the ref or the document cannot be read; ``problems`` are its lines, each naming
    what it is about (``x.yaml: ...``)."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class BadDocument(GitSourceError):
    """The commit was read, and what it holds at the path is no document (missing, over a limit, a symlink
    out of the path, a submodule): trying it again gives the same answer."""


class UnknownCommit(GitSourceError):
    """The SHA is not a commit of the ref's history (a rollback target)."""


class CommitInfo(NamedTuple):
    subject: str
    author: str  # "Name <email>"
    time: int  # committer time, Unix seconds


@dataclass(frozen=True, slots=True)
class Document:
    """The files of the document in one commit (name relative to ``path`` -> bytes) and notes on what
    was left out on purpose (submodules)."""

    files: dict[str, bytes]
    notes: list[str]


@dataclass(frozen=True, slots=True)
class _Entry:
    mode: str
    kind: str  # blob | tree | commit
    oid: str
    size: int | None
    name: str


class _GitFailed(Exception):
    def __init__(self, returncode: int, stderr: str) -> None:
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(stderr)


class _GitTimedOut(Exception):
    pass


def redacted_url(url: str) -> str:
    """``url`` without a password or token in it (https://user:token@host/x -> https://user@host/x)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _normal_path(path: str) -> str:
    """The document path as git names it ("" is the repository's top)."""
    parts = [p for p in path.strip().strip("/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError(f"document path {path!r} may not contain '..'")
    return "/".join(parts)


def _hidden(name: str) -> bool:
    return any(part.startswith(".") for part in name.split("/"))


def _fetch_reason(stderr: str, ref: str) -> str:
    """git's complaint as a few words (its stderr runs over several lines of advice)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    text = " ".join(lines)
    if "couldn't find remote ref" in text:
        return f"no branch or tag {ref} there"
    if (
        "does not appear to be a git repository" in text
        or re.search(r"repository '.*' not found", text)
        or "Repository not found" in text
    ):
        return "repository not found"
    if "terminal prompts disabled" in text or "Authentication failed" in text or "Permission denied" in text:
        return "access denied (authentication required or refused)"
    at = next((i for i, line in enumerate(lines) if line.startswith(("fatal:", "error:"))), 0)
    if not lines:
        return "git fetch failed"
    first = re.sub(r"^(fatal|error):\s*", "", lines[at])
    if first.endswith(":") and at + 1 < len(lines):  # "unable to connect to host:", the reason below
        first = f"{first} {lines[at + 1]}"
    return re.sub(r" after \d+ ms", "", first)  # curl's timing: the same failure reads the same each retry


class GitSource:
    """One ref of one repository, and the document at ``path`` in its commits."""

    def __init__(self, url: str, ref: str, path: str, work_dir: str | Path) -> None:
        if not url or url.startswith("-"):
            raise ValueError(f"git URL {url!r} is not a repository address")
        if not _REF_RE.fullmatch(ref) or ".." in ref or ref.endswith((".lock", "/")):
            raise ValueError(f"git ref {ref!r} is not a branch or tag name")
        self.url = url
        self.ref = ref
        self.path = _normal_path(path)
        self.work_dir = Path(work_dir)
        self.git_dir = self.work_dir / "repo.git"
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._closed = False

    @property
    def display_url(self) -> str:
        return redacted_url(self.url)

    # -- the ref ---------------------------------------------------------------------------------------

    def fetch(self, timeout_s: float = DEFAULT_FETCH_TIMEOUT_S) -> str:
        """Fetch the ref; the commit SHA it points at now."""
        with self._fetch_lock:
            self._ensure_repository()
            self._remove_stale_locks()
            refspec = f"+{self.ref}:{TIP_REF}"
            try:
                self._git([*FETCH_OPTIONS, "--", self.url, refspec], timeout_s=timeout_s)
            except _GitTimedOut:
                raise GitSourceError(self._cannot_fetch(f"no answer within {timeout_s:g} s")) from None
            except _GitFailed as failure:
                reason = _fetch_reason(failure.stderr.replace(self.url, self.display_url), self.ref)
                raise GitSourceError(self._cannot_fetch(reason)) from None
            tip = self._rev_parse(f"{TIP_REF}^{{commit}}")
            if tip is None:
                raise GitSourceError(self._cannot_fetch("the ref names no commit"))
            return tip

    def resolve(self, sha: str) -> str | None:
        """The full SHA of the commit ``sha`` (full or abbreviated) names here, None if there is none."""
        if not _SHA_RE.fullmatch(sha):
            raise UnknownCommit(f"{sha!r} is not a commit SHA (4 to 64 hex digits)")
        self._ensure_repository()
        return self._rev_parse(f"{sha.lower()}^{{commit}}")

    def is_ancestor(self, old_sha: str, new_sha: str) -> bool:
        """Whether ``new_sha`` contains ``old_sha`` in its history (False also when ``old_sha`` is unknown
        here, e.g. rewritten away before this work directory existed)."""
        new = self._known(new_sha)
        old = self.resolve(old_sha)
        if old is None:
            return False
        try:
            self._git(["merge-base", "--is-ancestor", old, new], timeout_s=LOCAL_TIMEOUT_S)
        except _GitFailed as failure:
            if failure.returncode == 1:
                return False
            raise GitSourceError(f"cannot compare {old[:12]} and {new[:12]}: {failure.stderr.strip()}") from None
        except _GitTimedOut:
            raise GitSourceError(f"comparing {old[:12]} and {new[:12]} took over {LOCAL_TIMEOUT_S:g} s") from None
        return True

    def commits_between(self, old_sha: str, new_sha: str) -> int:
        """How many commits ``new_sha`` has that ``old_sha`` has not."""
        out = self._local(["rev-list", "--count", f"{self._known(old_sha)}..{self._known(new_sha)}"])
        return int(out.strip() or b"0")

    def commit_info(self, sha: str) -> CommitInfo:
        out = self._local(["show", "-s", "--no-show-signature", "--format=%s%x00%an <%ae>%x00%ct", self._known(sha)])
        subject, author, when = out.decode("utf-8", "replace").rstrip("\n").split("\0")
        return CommitInfo(subject, author, int(when))

    # -- the document ------------------------------------------------------------------------------------

    def files_at(self, sha: str) -> dict[str, bytes]:
        """The document at ``path`` in commit ``sha``: name -> bytes (see the module's rules)."""
        return self.document_at(sha).files

    def document_at(self, sha: str) -> Document:
        commit = self._known(sha)
        where = self.path or "."
        top = self._top_entry(commit)
        if top is None:
            raise BadDocument(f"{where}: no such file or directory in commit {commit[:12]}")
        if top.mode == _SYMLINK_MODE:
            target = self._read({top.oid})[top.oid].decode("utf-8", "backslashreplace")
            raise BadDocument(f"{where}: is a symbolic link (-> {target}); point the source at its target")
        if top.kind == "commit":
            raise BadDocument(f"{where}: is a submodule, not a file or directory")
        if top.kind == "blob":
            name = posixpath.basename(self.path)
            if top.size is not None and top.size > MAX_FILE_BYTES:
                raise BadDocument(f"{name}: {top.size} bytes, over the {_mib(MAX_FILE_BYTES)} limit for one file")
            return Document({name: self._read({top.oid})[top.oid]}, [])
        return self._directory(commit, top.oid, where)

    def _directory(self, commit: str, tree: str, where: str) -> Document:
        entries = self._ls_tree(["-r", tree])
        by_name = {e.name: e for e in entries}
        problems: list[str] = []
        notes: list[str] = []
        chosen: dict[str, _Entry] = {}
        links = [e for e in entries if e.mode == _SYMLINK_MODE]
        oversized_links = [e for e in links if e.size is not None and e.size > MAX_SYMLINK_TARGET_BYTES]
        targets = {
            oid: data.decode("utf-8", "backslashreplace")
            for oid, data in self._read({e.oid for e in links if e not in oversized_links}).items()
        }
        for entry in entries:
            if _hidden(entry.name):
                continue
            if entry.kind == "commit":
                notes.append(f"{entry.name}: submodule ignored (its files are not part of the document)")
                continue
            if not entry.name.endswith(YAML_SUFFIXES):
                continue
            if entry.mode != _SYMLINK_MODE:
                chosen[entry.name] = entry
                continue
            resolved = _follow(entry, by_name, targets)
            if isinstance(resolved, str):
                problems.append(resolved)
            else:
                chosen[entry.name] = resolved
        if not chosen and not problems:
            raise BadDocument(f"{where}: no .yaml or .yml file in commit {commit[:12]}")
        for name, entry in sorted(chosen.items()):
            if entry.size is not None and entry.size > MAX_FILE_BYTES:
                problems.append(f"{name}: {entry.size} bytes, over the {_mib(MAX_FILE_BYTES)} limit for one file")
        total = sum(e.size or 0 for e in chosen.values())
        if total > MAX_TOTAL_BYTES:
            largest = sorted(chosen.items(), key=lambda item: -(item[1].size or 0))[:3]
            names = ", ".join(f"{n} ({e.size} bytes)" for n, e in largest)
            problems.append(
                f"{where}: {total} bytes of YAML, over the {_mib(MAX_TOTAL_BYTES)} limit (largest: {names})"
            )
        if problems:
            raise BadDocument(problems)
        contents = self._read({e.oid for e in chosen.values()})
        for note in notes:
            LOG.info("git %s at %s: %s", self.display_url, commit[:12], note)
        return Document({name: contents[e.oid] for name, e in sorted(chosen.items())}, notes)

    def _top_entry(self, commit: str) -> _Entry | None:
        """The entry ``path`` names in ``commit`` (the root tree for an empty path), None if missing."""
        if not self.path:
            root = self._rev_parse(f"{commit}^{{tree}}")
            return None if root is None else _Entry("040000", "tree", root, None, "")
        parent, _, name = self.path.rpartition("/")
        parent_tree = self._rev_parse(f"{commit}:{parent}" if parent else f"{commit}^{{tree}}")
        if parent_tree is None:
            return None
        return next((e for e in self._ls_tree([parent_tree]) if e.name == name), None)

    # -- git ----------------------------------------------------------------------------------------------

    def close(self) -> None:
        """End every git process still running and refuse new calls (the sync loop is stopping)."""
        with self._lock:
            self._closed = True
            running = list(self._running)
        for process in running:
            _signal_group(process, signal.SIGTERM)
        for process in running:
            try:
                process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)

    def _cannot_fetch(self, reason: str) -> str:
        return f"cannot fetch {self.ref} from {self.display_url}: {reason}"

    def _ensure_repository(self) -> None:
        if (self.git_dir / "HEAD").is_file():
            return
        try:
            self._git(["init", "--quiet", "--bare", "--template=", str(self.git_dir)], timeout_s=LOCAL_TIMEOUT_S)
        except _GitFailed as failure:
            reason = (failure.stderr.strip().splitlines() or ["git init failed"])[-1]
            raise GitSourceError(f"cannot create a git repository in {self.git_dir}: {reason}") from None
        except _GitTimedOut:
            raise GitSourceError(f"git init in {self.git_dir} took over {LOCAL_TIMEOUT_S:g} s") from None

    def _remove_stale_locks(self) -> None:
        """A fetch killed hard (SIGKILL, power loss) leaves lock files that would fail every later one.
        Fetches are serialized here and the repository is this source's alone, so any lock is stale."""
        try:
            for lock in (self.git_dir / "packed-refs.lock", self.git_dir / "shallow.lock"):
                lock.unlink(missing_ok=True)
            for lock in (self.git_dir / "refs").rglob("*.lock"):
                lock.unlink(missing_ok=True)
        except OSError as exc:
            raise GitSourceError(f"cannot clean up {self.git_dir}: {exc}") from None

    def _known(self, sha: str) -> str:
        full = self.resolve(sha)
        if full is None:
            raise UnknownCommit(f"no commit {sha} in the local copy of {self.display_url}")
        return full

    def _rev_parse(self, spec: str) -> str | None:
        try:
            out = self._git(["rev-parse", "--verify", "--quiet", "--end-of-options", spec], timeout_s=LOCAL_TIMEOUT_S)
        except _GitFailed:
            return None
        except _GitTimedOut:
            raise GitSourceError(f"git rev-parse took over {LOCAL_TIMEOUT_S:g} s") from None
        return out.decode().strip() or None

    def _ls_tree(self, args: list[str]) -> list[_Entry]:
        entries = []
        for record in self._local(["ls-tree", "-l", "-z", *args]).split(b"\0"):
            if not record:
                continue
            meta, _, name = record.partition(b"\t")
            mode, kind, oid, size = meta.decode().split()
            entries.append(
                _Entry(mode, kind, oid, None if size == "-" else int(size), name.decode("utf-8", "backslashreplace"))
            )
        return entries

    def _read(self, oids: set[str]) -> dict[str, bytes]:
        """The contents of blobs ``oids`` (sizes already checked), one ``cat-file --batch`` for all."""
        if not oids:
            return {}
        ordered = sorted(oids)
        out = self._local(["cat-file", "--batch"], stdin="".join(f"{oid}\n" for oid in ordered).encode())
        contents: dict[str, bytes] = {}
        at = 0
        for oid in ordered:
            end = out.index(b"\n", at)
            header = out[at:end].decode().split()
            if len(header) != 3 or header[1] != "blob":
                raise GitSourceError(f"object {oid[:12]} is not readable: {' '.join(header)}")
            size = int(header[2])
            contents[oid] = out[end + 1 : end + 1 + size]
            at = end + 1 + size + 1
        return contents

    def _local(self, args: list[str], stdin: bytes | None = None) -> bytes:
        try:
            return self._git(args, timeout_s=LOCAL_TIMEOUT_S, stdin=stdin)
        except _GitFailed as failure:
            reason = failure.stderr.strip().splitlines()[-1:] or [f"exit status {failure.returncode}"]
            raise GitSourceError(f"git {args[0]} failed: {reason[0]}") from None
        except _GitTimedOut:
            raise GitSourceError(f"git {args[0]} took over {LOCAL_TIMEOUT_S:g} s") from None

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") and k != "SSH_ASKPASS"}
        env.update(
            HOME=str(self.work_dir),
            XDG_CONFIG_HOME=str(self.work_dir / ".config"),
            GIT_CONFIG_NOSYSTEM="1",
            GIT_CONFIG_GLOBAL=os.devnull,
            GIT_TERMINAL_PROMPT="0",
            GIT_SSH_COMMAND="ssh -o BatchMode=yes",
            LC_ALL="C",
            LANGUAGE="C",
        )
        return env

    def _git(self, args: list[str], *, timeout_s: float, stdin: bytes | None = None) -> bytes:
        """Run git on the work repository; its stdout. Raises _GitFailed or _GitTimedOut."""
        command = ["git", f"--git-dir={self.git_dir}", "-c", "gc.auto=0", "-c", "maintenance.auto=false", *args]
        with self._lock:
            if self._closed:
                raise GitSourceError("the git source is stopped")
            try:
                self.work_dir.mkdir(parents=True, exist_ok=True)
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=self._environment(),
                    cwd=self.work_dir,
                    start_new_session=True,  # its own process group: a timeout ends git's helpers too
                )
            except OSError as exc:  # no git installed, a work directory that cannot be made
                raise GitSourceError(f"cannot run git in {self.work_dir}: {exc.strerror or exc}") from None
            self._running.add(process)
        try:
            try:
                out, err = process.communicate(stdin, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _end(process)
                raise _GitTimedOut() from None
        finally:
            with self._lock:
                self._running.discard(process)
        if self._closed and process.returncode != 0:
            raise GitSourceError("the git source is stopped")
        if process.returncode != 0:
            raise _GitFailed(process.returncode, err.decode("utf-8", "replace"))
        return out


def _follow(link: _Entry, by_name: dict[str, _Entry], targets: dict[str, str]) -> _Entry | str:
    """The file the symbolic link ``link`` ends at inside the document, or the problem with it."""
    current = link
    for _ in range(MAX_SYMLINK_HOPS):
        target = targets.get(current.oid)
        if target is None:
            return f"{link.name}: symlink target over {MAX_SYMLINK_TARGET_BYTES} bytes"
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(current.name), target))
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            return f"{link.name}: symlink leaves the document path (-> {targets[link.oid]})"
        entry = by_name.get(resolved)
        if entry is None or entry.kind != "blob":
            return f"{link.name}: symlink target {resolved} is not a file in the document path"
        if entry.mode != _SYMLINK_MODE:
            return entry
        current = entry
    return f"{link.name}: more than {MAX_SYMLINK_HOPS} symbolic links in a row"


def _mib(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB"


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)  # the group git leads (start_new_session): git and its helpers


def _end(process: subprocess.Popen[bytes]) -> None:
    """Stop a git that ran out of time: SIGTERM (git removes its lock files), SIGKILL if it lingers."""
    _signal_group(process, signal.SIGTERM)
    try:
        process.communicate(timeout=2.0)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        process.communicate()
