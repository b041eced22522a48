"""placement's pure cores import no adapter library and do no I/O (tests/unit/test_purity.py covers
scheduler.py; this covers the rest of the core)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.unit.test_purity import FORBIDDEN, REPO, imported_roots

PURE = [
    "latency",
    "snapshot",
    "plugins",
    "scheduler",
    "types",
    "naming",
    "failover",
    "requests",
    "errors",
    "synthetic",
    "improvement",
]
ADAPTERS = {"grpc_api", "orchestrator", "watch", "convergence", "cli", "__init__"}


@pytest.mark.parametrize("name", PURE)
def test_pure_placement_module(name: str) -> None:
    path = REPO / "placement" / f"{name}.py"
    # The scheduler's local search has a time budget: it imports time only for the default clock.
    allowed = {"time"} if name == "scheduler" else set()
    assert not imported_roots(path) & ({*FORBIDDEN, "threading", "time", "queue", "logging"} - allowed)
    calls = [
        node.func.id
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("open", "print")
    ]
    assert not calls


def test_every_module_is_classified() -> None:
    modules = {p.stem for p in Path(REPO / "placement").glob("*.py")}
    assert modules == set(PURE) | ADAPTERS


def test_only_grpc_api_and_cli_touch_grpc() -> None:
    for path in (REPO / "placement").glob("*.py"):
        if path.stem not in ("grpc_api", "cli"):
            assert "grpc" not in imported_roots(path), path
