"""Loads consent_core._native, the optional C accelerator, and builds its per-snapshot tables; pure.

The C code (consent_core/_native.c) computes what the pure-Python pass computes, faster: the
server's plain DecideBatch from request bytes to response bytes (`batch_table` + `decide_batch`;
`decide_batch_counted` adds the batch's decision counts by reason and outcome, for metrics),
and the allowed/blocked pass over Python ids (`split`). The pure code stays the reference and the
fallback: `NATIVE` is None when the extension is absent (a source checkout never built, another
interpreter) or when the environment sets CONSENT_CORE_PURE=1, and every caller then takes the
pure path. Both answer identically (tests/core/test_native.py checks that differentially). This
module never does I/O beyond the import.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from consent_core.index import Index
    from consent_core.limits import Limits

__all__ = ["MAX_CATEGORIES", "NATIVE", "batch_table", "load", "pure"]

# The C code holds masks in 64 bits (a need's sign is its `any` flag): more categories stay pure.
MAX_CATEGORIES: Final = 62


def load() -> ModuleType | None:
    """The extension, or None when it is absent or CONSENT_CORE_PURE=1 forces the pure path."""
    if os.environ.get("CONSENT_CORE_PURE", "") not in ("", "0"):
        return None
    try:
        from consent_core import _native  # type: ignore[attr-defined]
    except ImportError:
        return None
    module: ModuleType = _native
    return module


NATIVE: Final = load()


def batch_table(index: Index, limits: Limits, policy_tail: bytes, policy_field: bytes) -> object | None:
    """The compiled table `NATIVE.decide_batch` takes for this index and limits, or None when there
    is no extension or the mapping is outside what it handles (too many categories, ids that do
    not encode)."""
    if NATIVE is None or len(index.category_bits) > MAX_CATEGORIES:
        return None
    need, unknown_need = index.needs()
    try:
        encoded = {d.encode(): n for d, n in need.items()}
        bits = {c.encode(): b for c, b in index.category_bits.items()}
    except UnicodeEncodeError:  # a lone surrogate in an unvalidated mapping: the pure path
        return None
    known = tuple(d.encode() for d in index.known_destinations)
    # For decide_batch_counted: what tells EXEMPT from UNMAPPED among needs of 0, and whether
    # shadow (dry-run) categories exist, whose would-block tallies only the Python path counts.
    settings = index.mapping.destinations
    exempt = tuple(d.encode() for d in index.known_destinations if d in settings and not settings[d].enforce)
    shadow = any(index.is_shadow(c) for c in index.category_bits)
    table: object = NATIVE.Table(
        encoded, unknown_need, known, bits, limits.max_destinations, limits.max_destination_id_bytes,
        limits.max_batch, policy_tail, policy_field, exempt, shadow,
    )
    return table


@contextmanager
def pure() -> Iterator[None]:
    """Within it, consent_core's decisions take the pure path, as CONSENT_CORE_PURE=1 makes them do
    (for tests and benchmarks comparing both paths in one process; not thread-safe, not for serving).
    Tables `batch_table` built meanwhile are None."""
    from consent_core import index, split

    global NATIVE
    saved = NATIVE, split._native_split, index._native_granted
    NATIVE = split._native_split = index._native_granted = None  # type: ignore[misc]
    try:
        yield
    finally:
        NATIVE, split._native_split, index._native_granted = saved  # type: ignore[misc]
