"""The product never imports its testbed, its tests or its benchmarks: held by reading every import
(also those inside functions, and ``importlib.import_module("...")`` of a literal name). The testbed
(``mininet_topos``), the tests and the benchmarks import the product, never the other way round; and the
benchmarks do not import the tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("netmodel", "sdnctl", "meshctl", "placement", "pki", "edgectl", "nodeagent", "cluster")
NOT_FROM_PRODUCT = ("mininet_topos", "mininet", "tests", "benchmarks")
NOT_FROM_BENCHMARKS = ("tests",)


def imported_modules(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``source``, wherever it is (module level, function,
    class, ``if``), and of every ``importlib.import_module``/``__import__`` call with a literal name."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def violations(source: str, forbidden: tuple[str, ...], filename: str = "<source>") -> list[str]:
    """Each import of ``source`` of a module under one of the ``forbidden`` top-level names, in line order."""
    return [
        f"{filename}:{line} imports {module}"
        for line, module in sorted(imported_modules(source, filename))
        if module.split(".")[0] in forbidden
    ]


def assert_imports_none_of(path: Path, forbidden: tuple[str, ...]) -> None:
    found = violations(path.read_text(), forbidden, str(path.relative_to(REPO) if path.is_relative_to(REPO) else path))
    assert not found, "\n".join(found)


def modules_of(*packages: str) -> list[Path]:
    return sorted(path for package in packages for path in (REPO / package).rglob("*.py"))


@pytest.mark.parametrize("path", modules_of(*PRODUCT), ids=lambda p: str(p.relative_to(REPO)))
def test_product_module_imports_no_testbed_test_or_benchmark(path: Path) -> None:
    assert_imports_none_of(path, NOT_FROM_PRODUCT)


@pytest.mark.parametrize("path", modules_of("benchmarks"), ids=lambda p: str(p.relative_to(REPO)))
def test_benchmark_imports_no_test(path: Path) -> None:
    assert_imports_none_of(path, NOT_FROM_BENCHMARKS)


def test_every_product_package_is_read() -> None:
    """The parametrized checks above would pass vacuously if a package moved and globbed nothing."""
    for package in PRODUCT:
        assert modules_of(package), package
    assert modules_of("benchmarks")


VIOLATING = """
import json
import mininet.net
from netmodel.ids import NodeId

def lab():
    from mininet_topos.lab import Lab
    return Lab

class Fixture:
    def get(self):
        import tests.integration.harness as harness
        return harness

if json:
    from mininet_topos import controller_process

def dynamic():
    import importlib
    return importlib.import_module("mininet_topos.demo"), __import__("tests")

from . import sibling  # relative: inside its own package, allowed
from mininet_topology_names import x  # only a longer name: allowed
"""


def test_the_checker_reports_every_kind_of_violation() -> None:
    assert violations(VIOLATING, NOT_FROM_PRODUCT, "bad.py") == [
        "bad.py:3 imports mininet.net",
        "bad.py:7 imports mininet_topos.lab",
        "bad.py:12 imports tests.integration.harness",
        "bad.py:16 imports mininet_topos",
        "bad.py:20 imports mininet_topos.demo",
        "bad.py:20 imports tests",
    ]


def test_the_product_check_fails_on_a_module_importing_the_testbed_inside_a_function(tmp_path: Path) -> None:
    bad = tmp_path / "lab_in_the_product.py"
    bad.write_text("def demo():\n    from mininet_topos.lab import Lab\n\n    return Lab\n")
    with pytest.raises(AssertionError, match=r"lab_in_the_product.py:2 imports mininet_topos.lab"):
        assert_imports_none_of(bad, NOT_FROM_PRODUCT)
    bad.write_text("from tests.integration.harness import free_port\n")
    with pytest.raises(AssertionError, match=r"imports tests.integration.harness"):
        assert_imports_none_of(bad, NOT_FROM_BENCHMARKS)
