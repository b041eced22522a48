"""Reading configuration from disk: the only place the fabric file is opened.

The fabric file is a desired-state document: one YAML file, or a directory of them (``*.yaml`` and
``*.yml`` at any depth; hidden files and directories skipped; a symlink may not lead out of the
directory). Sizes are checked before anything is read, and no file is read past its limit.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from netmodel.fabric import FabricSpec
from netmodel.fabric_file import (
    MAX_DOCUMENT_BYTES,
    MAX_DOCUMENT_TOTAL_BYTES,
    FabricFileError,
    Problem,
    document_revision,
    parse_desired,
    too_large,
)

if TYPE_CHECKING:  # pki.cli is imported only when a command runs
    from pki.cli import PkiRunOptions
    from sdnctl.roles import Mastership

DOCUMENT_SUFFIXES = (".yaml", ".yml")
MAX_DOCUMENT_FILES = 10_000  # a directory tree with more is not a fabric (a mistyped path, say "/")
REVISION_SHOWN = 12  # characters of a revision shown to people
HTTP_ENV = "EDGECTL_HTTP"  # where the CLI finds the controller's HTTP API (routes, diff, apply, ...)
DEFAULT_HTTP = "127.0.0.1:8080"


@dataclass(frozen=True)
class DesiredDocument:
    """A desired-state document as read from disk.

    ``files`` and the keys of ``sources`` are the names within the document (paths relative to its
    directory, or a single file's own name): ``revision`` hashes them with their bytes, so it does not
    depend on where the document lies or on file times."""

    spec: FabricSpec
    revision: str
    files: tuple[str, ...]
    sources: Mapping[str, bytes]

    @property
    def short_revision(self) -> str:
        return self.revision[:REVISION_SHOWN]


def load_desired(path: str) -> DesiredDocument:
    """Read and parse the document at ``path`` (a file or a directory). Every problem, an unreadable
    or oversized file included, is a ``FabricFileError``; problems name files as ``path/name``."""
    if os.path.isdir(path):
        sources = _read_directory(path)
        shown = {name: os.path.join(path, name) for name in sources}
    else:
        name = os.path.basename(path) or path
        sources = {name: _read_file(path, path, regular_only=False)}
        shown = {name: path}
    # Names as shown sort like the names within the document (one common prefix): same file order.
    spec = parse_desired({shown[name]: data for name, data in sources.items()}, path)
    return DesiredDocument(spec, document_revision(sources), tuple(sorted(sources)), MappingProxyType(sources))


def parse_document(files: Mapping[str, bytes]) -> tuple[FabricSpec, str]:
    """A document's files by name (from ``edgectl apply`` or a git commit) -> (spec, short revision)."""
    return parse_desired(files), document_revision(files)[:REVISION_SHOWN]


def empty_document() -> DesiredDocument:
    """Nothing declared: where a controller that takes its desired state from git starts."""
    spec = FabricSpec(name="empty", prefix_len=16, sites=(), switches=(), cables=(), hosts=(), nodes=(), services=())
    return DesiredDocument(spec, "", (), MappingProxyType({}))


def load_fabric(path: str) -> FabricSpec:
    """Read and parse ``path``; an unreadable file is a ``FabricFileError`` like any other problem."""
    return load_desired(path).spec


def _cannot_read(shown: str, exc: OSError) -> Problem:
    return Problem(1, "<file>", f"cannot read: {exc.strerror or exc}", shown)


def _read_file(path: str, shown: str, *, regular_only: bool) -> bytes:
    """The file's bytes, refused unread when its size is over the limit and never read past it (a
    file may grow, or be a pipe). ``regular_only``: a directory's entry must be a plain file (opened
    without blocking: a FIFO put there must not hang the reader)."""
    flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_NONBLOCK if regular_only else 0)
    try:
        descriptor = os.open(path, flags)
        with os.fdopen(descriptor, "rb") as handle:
            info = os.fstat(handle.fileno())
            if regular_only and not stat.S_ISREG(info.st_mode):
                raise FabricFileError(shown, [Problem(1, "<file>", "not a regular file", shown)])
            if stat.S_ISREG(info.st_mode) and info.st_size > MAX_DOCUMENT_BYTES:
                raise FabricFileError(shown, [too_large(shown, info.st_size)])
            data = handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise FabricFileError(shown, [_cannot_read(shown, exc)]) from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise FabricFileError(shown, [too_large(shown, None)])
    return data


def _within(path: str, directory: str) -> bool:
    return os.path.commonpath([path, directory]) == directory


def _list_directory(root: str) -> tuple[dict[str, tuple[str, int]], list[Problem]]:
    """The document's files under ``root``: name within it -> (resolved path, size), and the problems
    found (symlinks leading out, loops, unreadable directories, entries that are not files)."""
    real_root = os.path.realpath(root)
    found: dict[str, tuple[str, int]] = {}
    problems: list[Problem] = []
    # (name of the directory within the document, its resolved path, the resolved paths above it)
    pending: list[tuple[str, str, frozenset[str]]] = [("", real_root, frozenset())]
    while pending:
        prefix, directory, above = pending.pop(0)
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            problems.append(_cannot_read(os.path.join(root, prefix.rstrip("/")) if prefix else root, exc))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            name = prefix + entry.name
            shown = os.path.join(root, name)
            target = os.path.realpath(entry.path)
            try:
                is_dir = entry.is_dir()
                is_document_file = not is_dir and entry.name.endswith(DOCUMENT_SUFFIXES)
                if entry.is_symlink() and (is_dir or is_document_file) and not _within(target, real_root):
                    message = f"symlink leaves the document directory (-> {target})"
                    problems.append(Problem(1, "<file>", message, shown))
                elif is_dir and (target == directory or target in above):
                    problems.append(Problem(1, "<file>", f"symlink loop (-> {target})", shown))
                elif is_dir:
                    pending.append((name + "/", target, above | {directory}))
                elif is_document_file and not entry.is_file():
                    problems.append(Problem(1, "<file>", "not a regular file (or a broken symlink)", shown))
                elif is_document_file:
                    found[name] = (target, entry.stat().st_size)
            except OSError as exc:
                problems.append(_cannot_read(shown, exc))
            if len(found) > MAX_DOCUMENT_FILES:
                message = f"more than {MAX_DOCUMENT_FILES} files: not a fabric document"
                return found, [Problem(1, "<file>", message, root)]
    return found, problems


def _read_directory(root: str) -> dict[str, bytes]:
    """Every document file's bytes by its name within ``root``; sizes checked before reading."""
    listed, problems = _list_directory(root)
    if problems:
        raise FabricFileError(root, problems)
    if not listed:
        message = f"no {' or '.join('*' + suffix for suffix in DOCUMENT_SUFFIXES)} files in the directory"
        raise FabricFileError(root, [Problem(1, "<file>", message, root)])
    sizes = {name: size for name, (_, size) in listed.items()}
    problems = [too_large(os.path.join(root, name), size) for name, size in sizes.items() if size > MAX_DOCUMENT_BYTES]
    if not problems and sum(sizes.values()) > MAX_DOCUMENT_TOTAL_BYTES:
        problems = [too_large(root, sum(sizes.values()), MAX_DOCUMENT_TOTAL_BYTES, " in all")]
    if problems:
        raise FabricFileError(root, problems)
    sources: dict[str, bytes] = {}
    total = 0
    for name in sorted(listed):
        try:
            data = _read_file(listed[name][0], os.path.join(root, name), regular_only=True)
        except FabricFileError as exc:  # the error names the document; its problem, the file
            raise FabricFileError(root, exc.problems) from None
        total += len(data)
        if total > MAX_DOCUMENT_TOTAL_BYTES:  # files grew since they were listed
            raise FabricFileError(root, [too_large(root, None, MAX_DOCUMENT_TOTAL_BYTES, " in all")])
        sources[name] = data
    return sources


@dataclass(frozen=True)
class GitOptions:
    """``edgectl run --git-repo URL --git-ref REF --git-path PATH``: the desired state from a git ref."""

    url: str
    ref: str = "main"
    path: str = ""
    interval_s: float = 180.0
    work_dir: str = ""
    """Where the bare copy lives (default: a directory under --state-dir, else a temporary one)."""
    applied_sha: str | None = None
    """The commit the model starts from (the document saved under --state-dir): not applied again."""
    paused: bool = False


@dataclass(frozen=True)
class ClusterOptions:
    """``--etcd URLS --replica-id ID``: this controller is one replica of a cluster (docs/cluster.md)."""

    etcd_urls: str
    replica_id: str
    name: str = "default"
    """Several clusters may share one etcd: each keeps its keys under ``edgectl/<name>/``."""
    lease_ttl_s: int = 1
    """The leader's lease: a leader that hangs or is cut off from etcd is replaced after this long."""
    etcd_timeout_s: float = 2.0
    advertise_host: str = ""
    """The address the other replicas reach this one at (its API, xDS, HTTP and liveness ports); "" = the
    bind address, which must then not be a wildcard."""


REPLICA_ID_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def replica_id_problem(replica_id: str) -> str | None:
    """Why ``replica_id`` cannot name a replica (None when it can): it is part of etcd keys and log lines."""
    if not replica_id:
        return "--replica-id is required with --etcd (a name unique in the cluster, such as the machine's)"
    if len(replica_id) > 64 or not set(replica_id) <= REPLICA_ID_CHARACTERS:
        return f"--replica-id {replica_id!r}: at most 64 letters, digits, '.', '_' or '-'"
    return None


@dataclass(frozen=True)
class RunConfig:
    fabric_file: str
    openflow_host: str = "127.0.0.1"
    openflow_port: int = 6653
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    xds_host: str = "127.0.0.1"
    xds_port: int = 18000
    xds_unix: str | None = None
    wait_for_sidecars: bool = False
    mesh_app_host: str = "127.0.0.2"
    """Where apps listen behind their sidecars. Not 127.0.0.1: there a caller's sidecar takes
    127.0.0.1:PORT for each service it calls, so a node running an instance of a service and a caller of
    it would have two listeners on one address (whichever binds second fails)."""
    tcp_fast_open: bool = True
    """Under mTLS, sidecars connect to each other with TCP Fast Open (``MeshConfig.tcp_fast_open``)."""
    api_host: str = "127.0.0.1"
    api_port: int = 50051
    agent_port: int = 50052
    """The node agent API (``--agent-port``, on ``api_host``; 0: no TCP listener); served with --pki-dir only."""
    agent_unix: str | None = None
    state_dir: str | None = None
    prune: bool = False
    """Objects removed from the desired state are torn down (else kept and reported as orphans)."""
    config_watch_interval_s: float = 1.0
    """How often --config is checked for changes (0: only on SIGHUP)."""
    git: GitOptions | None = None
    drift_interval_s: float = 10.0  # re-read the switches' tables this often and heal drift; 0: never
    port_stats_interval_s: float = 5.0  # read every switch's port counters this often (link load); 0: never
    pki: PkiRunOptions | None = None  # with --pki-dir
    placement_profile: str = "default"
    """The scoring profile of the controller's own placements: declared replicas, failover, migrate --to best."""
    endpoint_order: str = "nearest"
    """How callers' endpoints are ordered (``meshctl.paths.ENDPOINT_ORDERS``): nearest first, or round-robin."""
    static_role: Mastership | None = None
    """``--static-role``: the OpenFlow role held without a cluster (None: embedded, no role requests)."""
    cluster: ClusterOptions | None = None
    """With ``--etcd``: one replica of a cluster; None: the embedded default (one process, local state)."""
