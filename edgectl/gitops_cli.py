"""``edgectl diff | apply | rollback | sync``: the desired state of a running controller, over its HTTP API.

``diff`` exits like ``terraform plan -detailed-exitcode``: 0 nothing would change, 2 something would,
1 error. A document is checked here first (the same parser as the controller: ``FILE:LINE`` messages
without a round trip), then sent as its files' text so the controller plans exactly what is on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from edgectl.config import DEFAULT_HTTP, HTTP_ENV, load_desired
from netmodel.fabric_file import FabricFileError

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def _controller_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--controller",
        default=os.environ.get(HTTP_ENV) or DEFAULT_HTTP,
        metavar="HOST:PORT",
        help=f"the controller's HTTP API (default: ${HTTP_ENV}, else {DEFAULT_HTTP})",
    )


def register(sub: Any) -> None:
    diff = sub.add_parser(
        "diff",
        help="what applying a desired-state document would change (FlowMods, xDS, placements, identities); "
        "exit 0 none, 2 some, 1 error",
    )
    diff.add_argument("-f", "--file", required=True, metavar="PATH", help="a YAML file or a directory of them")
    _controller_option(diff)
    diff.add_argument("--output", choices=["text", "json"], default="text")
    diff.set_defaults(gitops_handler=cmd_diff)

    apply = sub.add_parser("apply", help="apply a desired-state document warm and wait until the data plane converged")
    apply.add_argument("-f", "--file", required=True, metavar="PATH", help="a YAML file or a directory of them")
    apply.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    apply.add_argument("--timeout", type=float, default=30.0, metavar="S", help="wait this long for convergence (30)")
    _controller_option(apply)
    apply.add_argument("--output", choices=["text", "json"], default="text")
    apply.set_defaults(gitops_handler=cmd_apply)

    rollback = sub.add_parser("rollback", help="apply an earlier git commit and pause auto-sync")
    rollback.add_argument("--to", required=True, metavar="SHA")
    _controller_option(rollback)
    rollback.set_defaults(gitops_handler=cmd_rollback)

    sync = sub.add_parser("sync", help="fetch the git source now (--resume: also end a pause and apply the tip)")
    sync.add_argument("--resume", action="store_true")
    _controller_option(sync)
    sync.set_defaults(gitops_handler=cmd_sync)


def _files(path: str) -> dict[str, bytes]:
    """The document's files, checked here first: a bad one is reported with FILE:LINE and not sent."""
    return dict(load_desired(path).sources)  # by their names within the document


def _post(address: str, path: str, body: dict[str, Any], timeout: float) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://{address}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.load(exc)
        except ValueError:
            return exc.code, {"error": exc.reason}


def _fail(command: str, message: str) -> int:
    print(f"edgectl {command}: {message}", file=sys.stderr)
    return EXIT_ERROR


def _load(command: str, path: str) -> dict[str, bytes] | None:
    try:
        return _files(path)
    except FabricFileError as exc:
        print(exc, file=sys.stderr)
        return None


def _report_refusal(command: str, code: int, reply: Any) -> int:
    error = reply.get("error") if isinstance(reply, dict) else reply
    for problem in reply.get("problems", []) if isinstance(reply, dict) else []:
        print(problem, file=sys.stderr)
    return _fail(command, f"the controller refused it ({code}): {error}")


def cmd_diff(args: argparse.Namespace) -> int:
    from edgectl.plan_view import plan_text

    files = _load("diff", args.file)
    if files is None:
        return EXIT_ERROR
    body = {"files": {name: data.decode("utf-8", "replace") for name, data in files.items()}}
    try:
        code, reply = _post(args.controller, "/api/v1/config/plan", body, timeout=60)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return _fail("diff", f"cannot reach the controller at {args.controller}: {exc}")
    if code != 200:
        return _report_refusal("diff", code, reply)
    if args.output == "json":
        print(json.dumps(reply, indent=2))
    else:
        sys.stdout.write(plan_text(reply))
    if reply.get("problems"):
        return EXIT_ERROR  # it parses, but cannot be applied: apply would refuse it
    return EXIT_CHANGES if reply.get("changes") else EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    from edgectl.plan_view import plan_text

    files = _load("apply", args.file)
    if files is None:
        return EXIT_ERROR
    body = {
        "files": {name: data.decode("utf-8", "replace") for name, data in files.items()},
        "dry_run": args.dry_run,
        "timeout_s": args.timeout,
    }
    try:
        code, reply = _post(args.controller, "/api/v1/config/apply", body, timeout=args.timeout + 30)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return _fail("apply", f"cannot reach the controller at {args.controller}: {exc}")
    if code != 200:
        return _report_refusal("apply", code, reply)
    if args.output == "json":
        print(json.dumps(reply, indent=2))
        return EXIT_OK if reply.get("converged") else EXIT_ERROR
    sys.stdout.write(plan_text(reply["plan"]))
    if args.dry_run:
        print("dry run: nothing applied")
        return EXIT_OK
    if not reply.get("applied"):
        print(f"revision {reply['revision']}: nothing to apply")
        return EXIT_OK
    if reply.get("converged"):
        print(f"applied revision {reply['revision']}: converged in {reply['seconds']:.3f} s")
        return EXIT_OK
    print(
        f"applied revision {reply['revision']}: NOT converged after {reply['seconds']:.1f} s: "
        f"{', '.join(reply['not_converged'])} still behind",
        file=sys.stderr,
    )
    return EXIT_ERROR


def cmd_rollback(args: argparse.Namespace) -> int:
    try:
        code, reply = _post(args.controller, "/api/v1/git/rollback", {"sha": args.to}, timeout=120)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return _fail("rollback", f"cannot reach the controller at {args.controller}: {exc}")
    if code != 200:
        return _report_refusal("rollback", code, reply)
    print(f"rolled back to {reply.get('applied_sha')}; auto-sync paused (edgectl sync --resume to end the pause)")
    return EXIT_OK


def cmd_sync(args: argparse.Namespace) -> int:
    path = "/api/v1/git/resume" if args.resume else "/api/v1/git/sync"
    try:
        code, reply = _post(args.controller, path, {}, timeout=120)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return _fail("sync", f"cannot reach the controller at {args.controller}: {exc}")
    if code not in (200, 202):
        return _report_refusal("sync", code, reply)
    print(json.dumps(reply, indent=2))
    return EXIT_OK
