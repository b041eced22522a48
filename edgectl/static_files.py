"""The web UI's files (``edgectl/ui/``), served by the HTTP API at ``/`` and ``/ui/<name>``.

Only the files of that one package directory, looked up by exact name: a name with a slash, ``..`` or an
escape in it is no file of the directory, so nothing outside it can be reached. Each file is read once, on
its first request, and served with a strong ETag and ``Cache-Control: no-cache``: a browser revalidates
every load (a 304 when nothing changed), so an upgraded controller never serves stale script.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from importlib import resources

UI_PACKAGE = "edgectl.ui"
INDEX = "index.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    # Same origin only: the UI has no inline script or style and talks to this server alone.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Asset:
    content_type: str
    body: bytes
    etag: str


def asset_name(path: str) -> str | None:
    """The file a request path names (``/`` and ``/ui`` the index), or None when it names none of ours."""
    if path in ("/", "/ui", "/ui/"):
        return INDEX
    if not path.startswith("/ui/"):
        return None
    name = path[len("/ui/") :]
    if not _NAME.fullmatch(name) or ".." in name:
        return None
    return name if _suffix(name) in CONTENT_TYPES else None


def is_ui_path(path: str) -> bool:
    return path == "/" or path == "/ui" or path.startswith("/ui/")


class StaticFiles:
    """The files of one package directory, each read on first use and kept."""

    def __init__(self, package: str = UI_PACKAGE) -> None:
        self._package = package
        self._cache: dict[str, Asset | None] = {}
        self._lock = threading.Lock()

    def get(self, path: str) -> Asset | None:
        name = asset_name(path)
        if name is None:
            return None
        with self._lock:
            if name not in self._cache:
                self._cache[name] = self._load(name)
            return self._cache[name]

    def _load(self, name: str) -> Asset | None:
        entry = resources.files(self._package).joinpath(name)
        if not entry.is_file():
            return None
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return Asset(CONTENT_TYPES[_suffix(name)], body, etag)


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Whether a request's ``If-None-Match`` already names this version (``*`` or a list of tags)."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot >= 0 else ""
