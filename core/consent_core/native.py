"""Loads consent_core._native, the optional C accelerator, and builds its per-snapshot tables; pure.

The C code (core/csrc/) computes what the pure-Python pass computes, faster: the
server's plain DecideBatch from request bytes to response bytes (`batch_table` + `decide_batch`;
`decide_batch_counted` adds the batch's decision counts by reason and outcome, for metrics), the
same for one Decide / DecideStream message (`decide_request`, `decide_request_counted`),
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
    exempt, rows = _counting(index)
    # Shadow counts are labelled with the id before any '/': an id holding one (only in a mapping
    # that skipped validation) would label differently, so counting declines there.
    decline = any("/" in d for d in index.known_destinations)
    table: object = NATIVE.Table(
        encoded, unknown_need, known, bits, limits.max_destinations, limits.max_destination_id_bytes,
        limits.max_batch, policy_tail, policy_field, exempt, decline, rows, tuple(index.category_bits),
    )
    return table


def _counting(index: Index) -> tuple[tuple[bytes, ...], tuple[tuple[bytes, str, int, bool], ...]]:
    """What decide_batch_counted needs beyond the needs, as consent_core.explain reasons: the
    exempt known ids (a need of 0 that is EXEMPT, not UNMAPPED), and the shadow rows (id, id,
    shadow mask, any) of the known destinations whose allowed decisions may count a shadow
    category (not exempt ones; not `any` ones with a required category, which allowed means granted)."""
    from consent_core.model import Resolution

    mapping = index.mapping
    settings = mapping.destinations
    bits = index.category_bits
    required: dict[str, int] = {}
    shadow: dict[str, int] = {}
    for c in mapping.categories:
        if c.id not in bits:  # disabled
            continue
        target = shadow if c.shadow else required
        for d in c.destinations:
            target[d] = target.get(d, 0) | bits[c.id]
    exempt: list[bytes] = []
    rows: list[tuple[bytes, str, int, bool]] = []
    for d in index.known_destinations:
        s = settings.get(d)
        if s is not None and not s.enforce:
            exempt.append(d.encode())
            continue
        any_ = s is not None and s.resolution is Resolution.ANY
        mask = shadow.get(d, 0)
        if mask and not (any_ and required.get(d, 0)):
            rows.append((d.encode(), d, mask, any_))
    return tuple(exempt), tuple(rows)


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
