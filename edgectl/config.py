"""Reading configuration from disk: the only place the fabric file is opened."""

from __future__ import annotations

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
    drift_interval_s: float = 10.0  # re-read the switches' tables this often and heal drift; 0: never
    pki: PkiRunOptions | None = None  # with --pki-dir
