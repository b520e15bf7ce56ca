"""Both decision paths of consent-core for the modules that decide: the C accelerator and the pure code.

`core_path` is module-scoped and autouse: every test of the modules in `BOTH_PATHS` runs once with
consent_core._native (when it is built) and once with the pure reference forced, as
CONSENT_CORE_PURE=1 forces it, so `make test` keeps both equal to the oracle.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from consent_core import index, split

BOTH_PATHS = frozenset({"test_index", "test_split", "test_shadow", "test_event"})


@contextmanager
def pure_path() -> Iterator[None]:
    """Forces the pure path of consent_core for the duration (what CONSENT_CORE_PURE=1 does at import)."""
    saved = split._native_split, index._native_granted
    split._native_split = None  # type: ignore[misc]
    index._native_granted = None  # type: ignore[misc]
    try:
        yield
    finally:
        split._native_split, index._native_granted = saved  # type: ignore[misc]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rpartition(".")[2] in BOTH_PATHS:
        metafunc.parametrize("core_path", ["native", "pure"], indirect=True, scope="module")


@pytest.fixture(scope="module", autouse=True)
def core_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """"native" (the default: whatever the environment loads) or "pure" (forced)."""
    path: str = getattr(request, "param", "native")
    if path == "pure":
        with pure_path():
            yield path
    else:
        yield path
