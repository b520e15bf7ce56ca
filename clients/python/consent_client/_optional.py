"""The optional consent-core dependency (the `[embedded]` extra): is it there, and a clear error when not.

The base client needs only grpcio and protobuf; the embedded decider and every failure
policy that reads a mapping need consent-core. This module says which, without importing it,
and turns a missing core into an error naming the fix. It never imports consent_core itself.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

__all__ = ["INSTALL_EMBEDDED", "core_installed", "core_required", "missing_core"]

INSTALL_EMBEDDED: Final = "pip install 'consent-client[embedded]'"

# The top-level packages the embedded mode imports: a missing one means the extra is missing.
_CORE_PACKAGES: Final = frozenset({"consent_core", "ruamel"})


def core_installed() -> bool:
    """Whether consent-core can be imported (without importing it)."""
    if "consent_core" in sys.modules:
        return sys.modules["consent_core"] is not None  # None: imports of it are blocked
    return importlib.util.find_spec("consent_core") is not None


def missing_core(feature: str) -> ModuleNotFoundError:
    """The error for using `feature` without consent-core."""
    return ModuleNotFoundError(
        f"{feature} needs consent-core, which is not installed: {INSTALL_EMBEDDED}", name="consent_core"
    )


@contextmanager
def core_required(feature: str) -> Iterator[None]:
    """Imports made inside fail with an error naming `feature` and the fix when consent-core is missing."""
    try:
        yield
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] not in _CORE_PACKAGES:
            raise
        raise missing_core(feature) from e
