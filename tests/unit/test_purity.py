"""Pure cores never import adapters' libraries nor do I/O: held by reading their imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("os_ken", "grpc", "cryptography", "mininet", "socket", "subprocess", "requests", "urllib")

PURE_MODULES = sorted(
    [*REPO.glob("netmodel/*.py")]
    + [p for p in (REPO / "sdnctl/pathing.py", REPO / "sdnctl/flows.py", REPO / "sdnctl/admission.py") if p.exists()]
    + [REPO / f"sdnctl/{name}.py" for name in ("discovery", "hosts", "latency", "frames")]
    + [p for p in (REPO / "meshctl/snapshot.py", REPO / "meshctl/cache.py") if p.exists()]
    + [REPO / "pki/policy.py"]
    + [REPO / f"meshctl/{name}.py" for name in ("protocol", "sotw", "delta", "envoy_config", "xds_types", "readiness")]
    + [
        REPO / f"placement/{name}.py"
        for name in ("latency", "plugins", "scheduler", "failover", "snapshot", "requests")
    ]
    + [REPO / "edgectl/views.py", REPO / "edgectl/topo_show.py", REPO / "edgectl/bus.py"]
    + [REPO / "mininet_topos/timeline.py"]
    + [REPO / "placement/convergence.py"]
)


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", PURE_MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_pure_module_imports_no_adapter_library(path: Path) -> None:
    bad = imported_roots(path) & set(FORBIDDEN)
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", PURE_MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_pure_module_opens_no_files(path: Path) -> None:
    calls = [
        node.func.id
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("open", "print")
    ]
    assert not calls, f"{path.relative_to(REPO)} calls {calls}"
