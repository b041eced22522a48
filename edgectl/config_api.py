"""The desired state over the HTTP API (adapter, thin).

    GET  /api/v1/config            revision running, status (synced | progressing | error), error, applied_at,
                                   health, orphans; with a git source also the SHA seen and applied
    GET  /api/v1/config/history    every applied revision: when, from where, what it changed
    GET  /api/v1/config/health     each declared object: healthy, progressing, degraded or missing, and why
    POST /api/v1/config/plan       {"files": {NAME: TEXT}} -> the plan, nothing applied (``edgectl diff``)
    POST /api/v1/config/apply      {"files": ..., "dry_run": BOOL, "timeout_s": S} -> plan and result
                                   (``edgectl apply``); refused while the desired state comes from git

A document travels as its files' text (one file, or a directory's files by relative name), so the
controller parses exactly what the operator has, with the same ``FILE:LINE`` messages.
"""

from __future__ import annotations

import posixpath
import threading
from collections.abc import Callable, Mapping
from typing import Any

from edgectl.desired_state import DEFAULT_CONVERGE_TIMEOUT_S, DesiredState, DocumentRefused
from edgectl.plan_view import plan_json
from netmodel.fabric import FabricSpec
from netmodel.state import FabricState

CONFIG_PATH = "/api/v1/config"
HISTORY_PATH = "/api/v1/config/history"
HEALTH_PATH = "/api/v1/config/health"
PLAN_PATH = "/api/v1/config/plan"
APPLY_PATH = "/api/v1/config/apply"
MAX_DOCUMENT_BODY = 48 * 1024 * 1024  # the document limit (32 MiB) as JSON text, with room for escapes
MAX_TIMEOUT_S = 600.0

Parse = Callable[[Mapping[str, bytes]], tuple[FabricSpec, str]]
"""Files -> (spec, revision), or raise a ``FabricFileError`` naming FILE:LINE."""


def files_from_body(body: Any) -> dict[str, bytes] | str:
    """The document's files from a request body, or what is wrong with it."""
    if not isinstance(body, dict) or not isinstance(body.get("files"), dict) or not body["files"]:
        return 'expected {"files": {"NAME.yaml": "TEXT", ...}}'
    files: dict[str, bytes] = {}
    for name, text in body["files"].items():
        if not isinstance(text, str):
            return f"files[{name!r}] must be the file's text"
        clean = posixpath.normpath(name)
        if name != clean or clean.startswith(("/", "..")) or "\\" in name or not name:
            return f"file name {name!r} must be a plain relative path"
        files[name] = text.encode()
    return files


class _Refused(Exception):
    def __init__(self, code: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("error"))
        self.code = code
        self.body = body


def _document(body: Any, parse: Parse) -> tuple[FabricSpec, str, dict[str, bytes]]:
    files = files_from_body(body)
    if isinstance(files, str):
        raise _Refused(400, {"error": files})
    try:
        return (*parse(files), files)
    except ValueError as exc:  # FabricFileError: every problem with its FILE:LINE
        raise _Refused(422, {"error": "the document is not valid", "problems": str(exc).splitlines()}) from None


BUSY = (429, {"error": "the controller is already planning documents for other requests; try again shortly"})


def plan_route(desired: DesiredState, parse: Parse) -> Callable[[FabricState, Any], tuple[int, Any]]:
    running = threading.BoundedSemaphore(2)  # a plan of a large fabric takes CPU: a few at a time

    def route(_state: FabricState, body: Any) -> tuple[int, Any]:
        if not running.acquire(blocking=False):
            return BUSY
        try:
            return plan(body)
        finally:
            running.release()

    def plan(body: Any) -> tuple[int, Any]:
        try:
            spec, revision, _files = _document(body, parse)
        except _Refused as refused:
            return refused.code, refused.body
        return 200, plan_json(desired.plan(spec, revision))

    return route


def apply_route(
    desired: DesiredState, parse: Parse, *, git_source: str | None = None
) -> Callable[[FabricState, Any], tuple[int, Any]]:
    waiting = threading.BoundedSemaphore(4)  # applies run one at a time; a few may wait their turn

    def route(_state: FabricState, body: Any) -> tuple[int, Any]:
        if not waiting.acquire(blocking=False):
            return BUSY
        try:
            return apply(body)
        finally:
            waiting.release()

    def apply(body: Any) -> tuple[int, Any]:
        if git_source is not None:
            return 409, {
                "error": f"the desired state comes from git ({git_source}): commit the change there, or "
                "`edgectl rollback --to SHA` to an earlier commit"
            }
        try:
            spec, revision, files = _document(body, parse)
        except _Refused as refused:
            return refused.code, refused.body
        dry_run = body.get("dry_run", False)
        timeout_s = body.get("timeout_s", DEFAULT_CONVERGE_TIMEOUT_S)
        if not isinstance(dry_run, bool):
            return 400, {"error": '"dry_run" must be true or false'}
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not 0 < timeout_s <= MAX_TIMEOUT_S:
            return 400, {"error": f'"timeout_s" must be a number of seconds in (0, {MAX_TIMEOUT_S:g}]'}
        try:
            result = desired.apply(
                spec,
                revision,
                "edgectl apply",
                dry_run=dry_run,
                timeout_s=float(timeout_s),
                sources=files,
            )
        except DocumentRefused as exc:
            return 422, {"error": "the document cannot be applied", "problems": str(exc).splitlines()[1:]}
        except Exception as exc:
            return 409, {"error": str(exc)}
        return 200, {
            "revision": result.revision,
            "applied": result.applied,
            "dry_run": dry_run,
            "generation": result.generation,
            "converged": result.converged,
            "not_converged": list(result.not_converged),
            "seconds": round(result.seconds, 4),
            "plan": plan_json(result.plan),
        }

    return route
