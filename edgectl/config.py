"""Reading configuration from disk: the only place the fabric file is opened."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from netmodel.fabric import FabricSpec
from netmodel.fabric_file import FabricFileError, Problem, parse_fabric

if TYPE_CHECKING:  # pki.cli is imported only when a command runs
    from pki.cli import PkiRunOptions


def load_fabric(path: str) -> FabricSpec:
    """Read and parse ``path``; an unreadable file is a ``FabricFileError`` like any other problem."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise FabricFileError(path, [Problem(1, "<file>", f"cannot read: {exc.strerror or exc}")]) from None
    return parse_fabric(data, path)


@dataclass(frozen=True)
class DesiredDocument:
    spec: FabricSpec
    revision: str
    sources: Mapping[str, bytes]


def document_revision(files: Mapping[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name] + b"\0")
    return digest.hexdigest()[:12]


def parse_document(files: Mapping[str, bytes]) -> tuple[FabricSpec, str]:
    """A document's files -> (spec, revision); one file for now."""
    if len(files) != 1:
        raise FabricFileError("<document>", [Problem(1, "<file>", "exactly one file expected")])
    ((name, data),) = files.items()
    return parse_fabric(data, name), document_revision(files)


def empty_document() -> DesiredDocument:
    """Nothing declared: where a controller that takes its desired state from git starts."""
    spec = FabricSpec(name="empty", prefix_len=16, sites=(), switches=(), cables=(), hosts=(), nodes=(), services=())
    return DesiredDocument(spec, "", {})


def load_desired(path: str) -> DesiredDocument:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise FabricFileError(path, [Problem(1, "<file>", f"cannot read: {exc.strerror or exc}")]) from None
    spec, revision = parse_document({path: data})
    return DesiredDocument(spec, revision, {path: data})


@dataclass(frozen=True)
class GitOptions:
    """``edgectl run --git-repo URL --git-ref REF --git-path PATH``: the desired state from a git ref."""

    url: str
    ref: str = "main"
    path: str = ""
    interval_s: float = 180.0
    work_dir: str = ""
    """Where the bare copy lives (default: a directory under --state-dir, else a temporary one)."""


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
    mesh_app_host: str = "127.0.0.1"
    api_host: str = "127.0.0.1"
    api_port: int = 50051
    state_dir: str | None = None
    prune: bool = False
    """Objects removed from the desired state are torn down (else kept and reported as orphans)."""
    config_watch_interval_s: float = 1.0
    """How often --config is checked for changes (0: only on SIGHUP)."""
    git: GitOptions | None = None
    pki: PkiRunOptions | None = None  # with --pki-dir
