"""Pure cores never import adapters' libraries nor do I/O: every module the rule in
tests/unit/purity_rule.py names pure is held to it, and the rule itself catches each kind of violation."""

from __future__ import annotations

import pytest

from tests.unit.purity_rule import (
    ALLOWED,
    FORBIDDEN_CALLS,
    FORBIDDEN_IMPORTS,
    PURE_MODULES,
    REPO,
    check_pure,
    pure_paths,
    purity_violations,
)


@pytest.mark.parametrize("path", pure_paths())
def test_pure_module_follows_the_rule(path: str) -> None:
    check_pure(path)


def test_declared_pure_modules_exist_and_exemptions_are_for_pure_modules() -> None:
    assert [p for p in PURE_MODULES if not (REPO / p).is_file()] == []
    assert set(ALLOWED) <= set(pure_paths())
    assert all(reason for _allowed, reason in ALLOWED.values())


@pytest.mark.parametrize("library", sorted(FORBIDDEN_IMPORTS))
def test_rule_catches_a_forbidden_import_anywhere(library: str) -> None:
    for source in (
        f"import {library}\n",
        f"from {library} import thing\n",
        f"def later():\n    import {library}.sub\n",
        f"import importlib\nimportlib.import_module('{library}')\n",
    ):
        assert purity_violations(source, "netmodel/synthetic_example.py") != [], source


@pytest.mark.parametrize("call", sorted(FORBIDDEN_CALLS))
def test_rule_catches_a_forbidden_call(call: str) -> None:
    source = f"def show(x):\n    {call}('state.json')\n"
    found = purity_violations(source, "netmodel/synthetic_example.py")
    assert found == [f"netmodel/synthetic_example.py:2 calls {call}()"]


def test_rule_catches_a_pure_module_importing_an_adapter_of_the_project() -> None:
    source = "from sdnctl.openflow import FabricApp\n"
    assert purity_violations(source, "netmodel/synthetic_example.py") == [
        "netmodel/synthetic_example.py:1 imports sdnctl.openflow, which is not pure"
    ]


def test_exemption_is_per_module() -> None:
    source = "import threading\n"
    assert purity_violations(source, "meshctl/readiness.py") == []
    assert purity_violations(source, "meshctl/snapshot.py") == ["meshctl/snapshot.py:1 imports threading"]


def test_a_clean_source_passes() -> None:
    source = "from __future__ import annotations\nimport dataclasses\nfrom netmodel.ids import NodeId\n"
    assert purity_violations(source, "netmodel/synthetic_example.py") == []
