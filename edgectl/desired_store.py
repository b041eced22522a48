"""The last applied desired-state document, kept under ``--state-dir`` (adapter: files).

A controller that follows git restarts from the document it last applied (and that commit), not
from nothing: its saved placements refer to the services that document declares, and a restart
must not re-apply a tip that an operator rolled back from. Written whole, atomically (a temporary
file, fsync, rename, fsync of the directory), like the placements beside it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

LOG = logging.getLogger("edgectl.desired_store")
FILE_NAME = "desired.json"
FORMAT = 1


@dataclass(frozen=True, slots=True)
class SavedDocument:
    revision: str
    source: str
    files: Mapping[str, bytes]
    paused: bool = False
    """A git source's auto-sync was paused (a rollback): it stays paused after a restart."""


def save_document(state_dir: str, document: SavedDocument) -> None:
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    body = {
        "format": FORMAT,
        "revision": document.revision,
        "source": document.source,
        "paused": document.paused,
        "files": {name: data.decode("utf-8", "surrogateescape") for name, data in document.files.items()},
    }
    target = directory / FILE_NAME
    partial = directory / (FILE_NAME + ".partial")
    with open(partial, "w", encoding="utf-8", errors="surrogateescape") as handle:
        json.dump(body, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, target)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def load_document(state_dir: str) -> SavedDocument | None:
    """The saved document, or None (none saved, or unreadable: said in the log, never fatal)."""
    path = Path(state_dir) / FILE_NAME
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            body = json.load(handle)
        if body.get("format") != FORMAT:
            raise ValueError(f"unknown format {body.get('format')!r}")
        files = {str(name): str(text).encode("utf-8", "surrogateescape") for name, text in body["files"].items()}
        return SavedDocument(str(body["revision"]), str(body["source"]), files, bool(body.get("paused", False)))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        LOG.warning("%s not used: %s", path, exc)
        return None


def save_resumed(state_dir: str) -> None:
    """Record that auto-sync was resumed in the saved document (a restart must not come back paused)."""
    saved = load_document(state_dir)
    if saved is not None and saved.paused:
        save_document(state_dir, replace(saved, paused=False))
