"""The git source over the HTTP API (adapter, thin).

    POST /api/v1/git/sync       the webhook: fetch now (and apply the tip unless paused); answers at once (202)
    POST /api/v1/git/rollback   {"sha": SHA}: apply that earlier commit of the ref and pause auto-sync
    POST /api/v1/git/resume     end the pause and apply the tip now (also after a force-push)

A forge's webhook body (GitHub, GitLab, Gitea send JSON about the push) is accepted and not needed:
the controller fetches the ref itself and trusts only what git gives it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from edgectl.git_source import GitSourceError, UnknownCommit
from edgectl.git_sync import GitSync
from netmodel.state import FabricState

SHA_RE = re.compile(r"^[0-9a-fA-F]{4,40}$")
WEBHOOK_BODY = 26 * 1024 * 1024  # GitHub caps a webhook payload at 25 MB

Route = Callable[[FabricState, Any], tuple[int, Any]]


def sync_route(git: GitSync) -> Route:
    def route(_state: FabricState, _body: Any) -> tuple[int, Any]:
        git.sync_now()
        return 202, {"sync": "requested", **_brief(git)}

    return route


def rollback_route(git: GitSync) -> Route:
    def route(_state: FabricState, body: Any) -> tuple[int, Any]:
        sha = body.get("sha") if isinstance(body, dict) else None
        if not isinstance(sha, str) or not SHA_RE.fullmatch(sha):
            return 400, {"error": '"sha" must be a commit SHA (4 to 40 hex digits)'}
        try:
            outcome = git.rollback(sha)
        except UnknownCommit as exc:
            return 404, {"error": str(exc)}
        except GitSourceError as exc:
            return 503, {"error": str(exc)}
        if not outcome.ok:
            return 422, {"error": f"commit {sha} cannot be applied: {outcome.error}", **_brief(git)}
        return 200, _brief(git)

    return route


def resume_route(git: GitSync) -> Route:
    def route(_state: FabricState, _body: Any) -> tuple[int, Any]:
        view = git.resume()
        return 200, {key: view[key] for key in ("status", "error", "paused", "seen_sha", "applied_sha")}

    return route


def _brief(git: GitSync) -> dict[str, Any]:
    view = git.status_view()
    return {key: view[key] for key in ("status", "error", "paused", "seen_sha", "applied_sha")}
