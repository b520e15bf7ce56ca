"""The tier lists of tests/conftest.py name modules and tests that exist: a rename must not change a tier."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import INTEGRATION_MODULES, SLOW_TESTS

TESTS = Path(__file__).parent


def test_every_integration_module_exists() -> None:
    assert sorted(m for m in INTEGRATION_MODULES if not (TESTS / m).is_file()) == []


def test_every_slow_test_names_a_test_function_of_its_module() -> None:
    missing = []
    for entry in sorted(SLOW_TESTS):
        module, _, name = entry.partition("::")
        path = TESTS / module
        tree = ast.parse(path.read_text(encoding="utf-8")) if path.is_file() else ast.Module(body=[], type_ignores=[])
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        if name not in defined:
            missing.append(entry)
    assert missing == []
