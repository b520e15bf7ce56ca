"""Shared helpers for the CMP adapters: the one error type and small parsing utilities."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import TypeVar

__all__ = ["MAX_INPUT_CHARS", "ConsentFormatError", "combine", "require_category", "require_str"]

#: Upper bound on the length of any string an adapter accepts. Real signals are far smaller
#: (cookies are capped near 4 KiB by browsers; a TC string with a full 65,535-vendor bitfield
#: is about 11,000 characters); the cap keeps hostile input from costing unbounded work.
MAX_INPUT_CHARS = 65_536

K = TypeVar("K", bound=Hashable)


class ConsentFormatError(ValueError):
    """A consent signal (cookie, TC string, mapping...) is malformed or unsupported.

    Every adapter in :mod:`consent_client.adapters` raises only this exception for bad input,
    with a message naming what is wrong; it subclasses :class:`ValueError` so callers that
    already catch ``ValueError`` keep working.
    """


def require_str(value: object, what: str) -> str:
    """Return ``value`` if it is a string of acceptable size, else raise ConsentFormatError."""
    if not isinstance(value, str):
        raise ConsentFormatError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > MAX_INPUT_CHARS:
        raise ConsentFormatError(
            f"{what} is {len(value)} characters long; at most {MAX_INPUT_CHARS} are accepted"
        )
    return value


def require_category(category: object, what: str) -> str:
    """Validate a category id taken from a caller-supplied mapping."""
    if not isinstance(category, str) or not category:
        raise ConsentFormatError(f"{what} must map to non-empty category id strings, got {category!r}")
    return category


def combine(
    source_to_category: Iterable[tuple[K, str]],
    states: Mapping[K, bool],
    *,
    require_all: bool,
) -> dict[str, bool]:
    """Fold per-source consent states into ``{category: bool}``.

    ``source_to_category`` pairs each source signal (purpose, level, signal name...) with the
    category it feeds; several sources may feed one category. ``states`` holds the sources the
    signal actually carries. A category is emitted only if at least one of its sources is
    present. With ``require_all`` it is ``True`` iff *every* one of its sources is present and
    granted (an absent source counts as not granted); otherwise iff *any* present source is
    granted.
    """
    by_category: dict[str, list[K]] = {}
    for source, category in source_to_category:
        by_category.setdefault(category, []).append(source)
    result: dict[str, bool] = {}
    for category, sources in by_category.items():
        present = [states[s] for s in sources if s in states]
        if not present:
            continue
        if require_all:
            result[category] = len(present) == len(sources) and all(present)
        else:
            result[category] = any(present)
    return result
