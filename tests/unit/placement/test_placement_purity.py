"""placement's pure cores follow the purity rule (tests/unit/purity_rule.py); every other placement module
is a declared adapter, and only the gRPC ones touch grpc."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.purity_rule import REPO, check_pure, pure_paths
from tests.unit.test_import_direction import imported_modules

PURE = [Path(path).stem for path in pure_paths() if path.startswith("placement/")]
ADAPTERS = {"grpc_api", "orchestrator", "replica_loop", "watch", "cli", "__init__"}


@pytest.mark.parametrize("name", PURE)
def test_pure_placement_module(name: str) -> None:
    check_pure(f"placement/{name}.py")


def imported_roots(path: Path) -> set[str]:
    return {module.split(".")[0] for _line, module in imported_modules(path.read_text(), str(path))}


def test_every_module_is_classified() -> None:
    modules = {p.stem for p in Path(REPO / "placement").glob("*.py")}
    assert modules == set(PURE) | ADAPTERS


def test_only_grpc_api_and_cli_touch_grpc() -> None:
    for path in (REPO / "placement").glob("*.py"):
        if path.stem not in ("grpc_api", "cli"):
            assert "grpc" not in imported_roots(path), path
