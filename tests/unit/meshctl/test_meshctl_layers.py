"""meshctl's pure cores stay pure, and importing meshctl does no work (no threads, no sockets)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.unit.purity_rule import REPO, check_pure, pure_paths

PURE = [path for path in pure_paths() if path.startswith("meshctl/")]


def test_meshctl_has_its_pure_cores() -> None:
    assert {"meshctl/snapshot.py", "meshctl/cache.py", "meshctl/sotw.py", "meshctl/delta.py"} <= set(PURE)


@pytest.mark.parametrize("path", PURE)
def test_pure_module_imports_no_adapter_library(path: str) -> None:
    check_pure(path)


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
