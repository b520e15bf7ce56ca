"""Both decision paths of consent-core for the modules that decide: the C accelerator and the pure code.

`core_path` is module-scoped and autouse: every test of the modules in `BOTH_PATHS` runs once with
consent_core._native (when it is built) and once with the pure reference forced, as
CONSENT_CORE_PURE=1 forces it, so `make test` keeps both equal to the oracle.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from consent_core.native import pure

BOTH_PATHS = frozenset({"test_index", "test_split", "test_shadow", "test_event"})


pure_path = pure  # forces the pure path of consent_core for the duration (CONSENT_CORE_PURE=1's effect)


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
