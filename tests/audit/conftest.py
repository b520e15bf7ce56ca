"""Fixtures of the audit tests: a fresh database path, and an open log on it with a fixed clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from consent_sidecar.audit import AuditLog

from .support import Captured, Clock


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
def captured() -> Captured:
    return Captured()


@pytest.fixture
def log(db: Path, captured: Captured) -> Iterator[AuditLog]:
    audit = AuditLog.open(db, clock=Clock(), logger=captured)
    yield audit
    audit.close()
