"""The committed generated code in clients/python/consent/ must match what the pinned protoc makes of proto/."""

from __future__ import annotations

import filecmp
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_generate", ROOT / "clients" / "python" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _generated_files(root: Path) -> list[Path]:
    """Generated sources under root/consent only: byte-code caches and build/ copies are not compared."""
    return sorted(
        p.relative_to(root)
        for p in (root / "consent").rglob("*_pb2*")
        if p.suffix in (".py", ".pyi") and "__pycache__" not in p.parts
    )


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    _load_generator().generate(tmp_path)
    fresh = _generated_files(tmp_path)
    committed = _generated_files(ROOT / "clients" / "python")
    assert fresh == committed, "generated file set differs: run `make proto`"
    stale = [str(p) for p in fresh if not filecmp.cmp(tmp_path / p, ROOT / "clients" / "python" / p, shallow=False)]
    assert not stale, f"stale generated code {stale}: run `make proto` and commit clients/python/consent/"


@pytest.mark.parametrize("module", ["consent.v1.decision_pb2", "consent.v1.admin_pb2_grpc"])
def test_generated_modules_import_as_the_proto_package(module: str) -> None:
    __import__(module)
    assert module in sys.modules
