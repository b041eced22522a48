"""meshctl's pure cores stay pure, and importing meshctl does no work (no threads, no sockets)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_purity import FORBIDDEN, imported_roots

REPO = Path(__file__).resolve().parents[3]
PURE = ["snapshot", "cache", "protocol", "sotw", "delta", "envoy_config", "xds_types", "serving"]


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_adapter_library(module: str) -> None:
    path = REPO / "meshctl" / f"{module}.py"
    bad = imported_roots(path) & {*FORBIDDEN, "prometheus_client", "asyncio", "threading"}
    if module == "cache":  # the cache is the one place with a lock (it is shared by threads)
        bad -= {"threading"}
    assert not bad, f"meshctl/{module}.py imports {sorted(bad)}"


def test_importing_meshctl_starts_nothing() -> None:
    code = (
        "import threading, socket\n"
        "opened = []\n"
        "real = socket.socket.__init__\n"
        "def spy(self, *a, **k):\n"
        "    opened.append(a)\n"
        "    real(self, *a, **k)\n"
        "socket.socket.__init__ = spy\n"
        "import meshctl.xds_grpc, meshctl.servicer, meshctl.publisher, meshctl.listen\n"
        "import meshctl.bootstrap, meshctl.sidecar, meshctl.metrics\n"
        "print(threading.active_count(), len(opened))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "0"]
