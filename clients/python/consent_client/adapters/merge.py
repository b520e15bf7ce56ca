"""Combining the preferences several privacy signals give for one request.

A request can carry a CMP cookie, a GPP string, ``Sec-GPC`` and a TC string at once; each
adapter turns its signal into ``{category_id: bool}`` on its own. :func:`merge_preferences`
folds them into the one consent object the sidecar decides with.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._common import ConsentFormatError

__all__ = ["merge_preferences"]


def merge_preferences(*preferences: Mapping[str, bool] | None) -> dict[str, bool]:
    """Merge category preferences from several signals: denial wins.

    A category is ``False`` if any signal denies it, ``True`` if some signal grants it and none
    denies it, and absent if no signal mentions it (absent and ``False`` both mean *not granted*
    to the sidecar, but absent keeps "no signal said anything" visible). ``None`` arguments (a
    signal the request did not carry) are skipped. Order does not matter; the result is a new
    dict, its keys in first-seen order.

    Raises :class:`ConsentFormatError` if an argument is not a mapping of non-empty strings to
    booleans.
    """
    merged: dict[str, bool] = {}
    for n, prefs in enumerate(preferences, 1):
        if prefs is None:
            continue
        if not isinstance(prefs, Mapping):
            raise ConsentFormatError(f"merge_preferences argument {n} must be a mapping, got {type(prefs).__name__}")
        for category, granted in prefs.items():
            if not isinstance(category, str) or not category:
                raise ConsentFormatError(f"merge_preferences argument {n} has category id {category!r}")
            if not isinstance(granted, bool):
                raise ConsentFormatError(
                    f"merge_preferences argument {n}: {category} is {granted!r}, not true or false"
                )
            merged[category] = merged.get(category, True) and granted
    return merged
