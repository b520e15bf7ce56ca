"""Fixtures of the services tests: `admin`, a sidecar with an authenticated admin listener (admin_support)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .admin_support import Admin, admin_sidecar


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    async with admin_sidecar(tmp_path) as running:
        yield running
