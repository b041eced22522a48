"""docs/ARCHITECTURE.md stays true to the code: its package map names every module of every package
(the product, the testbed and the benchmarks), every top-level `edgectl` command appears in it, and it
links nowhere outside the repository."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from edgectl.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "ARCHITECTURE.md"
PACKAGES = (
    "netmodel",
    "sdnctl",
    "meshctl",
    "placement",
    "pki",
    "edgectl",
    "nodeagent",
    "cluster",
    "mininet_topos",
    "benchmarks",
)


def package_map(text: str) -> dict[str, str]:
    """Package -> its part of the first code block under '## Packages' (lines from 'pkg/' to the next)."""
    block = text.split("## Packages", 1)[1].split("```", 2)[1]
    sections: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        heading = re.match(r"^(\w+)/\s", line)
        if heading:
            current = heading.group(1)
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def modules(package: str) -> list[str]:
    """Module files of ``package`` relative to it; ``__init__.py`` files need no line."""
    return sorted(str(p.relative_to(REPO / package)) for p in (REPO / package).rglob("*.py") if p.name != "__init__.py")


def named(module: str, section: str) -> bool:
    """``module`` (e.g. ``baselines/run_osken_app.py`` or ``_pb/placement_pb2.py``) is named in ``section``:
    by its path, or by its file name on a line or in a list under its directory's line (``_pb/  ...``)."""
    if re.search(rf"(?<![\w/]){re.escape(module)}(?!\w)", section):
        return True
    directory, _, name = module.rpartition("/")
    if not directory:
        return False
    lines = [line for line in section.splitlines() if line.strip().startswith(f"{directory}/")]
    return any(re.search(rf"(?<![\w/]){re.escape(name)}(?!\w)", line) for line in lines)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_map_names_every_module(package: str) -> None:
    sections = package_map(DOC.read_text())
    assert package in sections, f"docs/ARCHITECTURE.md's package map has no {package}/"
    missing = [m for m in modules(package) if not named(m, sections[package])]
    assert not missing, f"docs/ARCHITECTURE.md's package map does not name {package}/{missing}"


def test_package_map_names_no_module_that_does_not_exist() -> None:
    for package, section in package_map(DOC.read_text()).items():
        for line in section.splitlines():
            entry = re.match(r"^  (\w[\w/]*\.py)\s", line)
            if entry:
                assert (REPO / package / entry.group(1)).is_file(), f"{package}/{entry.group(1)} does not exist"


def test_every_top_level_command_is_in_the_doc() -> None:
    text = DOC.read_text()
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [name for name in subparsers.choices if f"`{name}" not in text and f" {name}`" not in text]
    assert not missing, f"docs/ARCHITECTURE.md does not mention edgectl {missing}"


def test_doc_links_nowhere_outside_the_repository() -> None:
    text = DOC.read_text()
    assert "../" not in text
    for path in re.findall(r"\b(docs/[\w.-]+\.md|README\.md)\b", text):
        assert (REPO / path).is_file(), f"docs/ARCHITECTURE.md points at {path}, which does not exist"


def test_the_check_catches_a_missing_module() -> None:
    section = "  cli.py          the command\n  _pb/            generated: placement_pb2.py\n"
    assert named("cli.py", section) and named("_pb/placement_pb2.py", section)
    assert not named("orchestrator.py", section)
    assert not named("_pb/placement_pb2_grpc.py", section)
