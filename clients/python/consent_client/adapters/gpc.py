"""Global Privacy Control (W3C GPC): the ``Sec-GPC`` request header as category preferences.

Per the W3C specification the header's only valid value is exactly ``1`` (no whitespace, no
other token); any other value means the same as no header at all. A user agent sends it when
the user asks sites not to sell or share their personal data, which several US laws make a
legally binding opt-out. It can only *deny*: an absent header grants nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._common import ConsentFormatError, require_category

__all__ = ["gpc_enabled", "gpc_to_preferences"]


def gpc_enabled(header_values: str | bytes | Iterable[str | bytes] | None) -> bool:
    """Whether ``Sec-GPC`` is on: some value is exactly ``"1"`` (``b"1"`` for raw header bytes).

    ``header_values`` is the header's value, or every value the request carried (a framework
    list for a repeated header), or ``None`` when absent. A single string is one value: a
    proxy-joined ``"1, 1"`` is not ``"1"`` and so, like ``" 1"`` or ``"true"``, means off.
    """
    if header_values is None:
        return False
    if isinstance(header_values, (str, bytes)):
        header_values = (header_values,)
    try:
        return any(value in ("1", b"1") for value in header_values)
    except TypeError:
        raise ConsentFormatError(
            f"Sec-GPC header values must be a string, bytes or an iterable of them, got {type(header_values).__name__}"
        ) from None


def gpc_to_preferences(
    header_values: str | bytes | Iterable[str | bytes] | None, categories: Iterable[str]
) -> dict[str, bool]:
    """``{category: False}`` for each of ``categories`` when GPC is on (see :func:`gpc_enabled`),
    else ``{}``: GPC opts out, it never grants. ``categories`` are the categories an opt-out of
    sale/sharing covers in your mapping, e.g. ``["C0004", "C0005"]``; they are validated whether
    GPC is on or not, so a bad table fails on every request, not only on GPC ones."""
    if isinstance(categories, str):
        categories = (categories,)
    try:
        checked = [require_category(c, "categories") for c in categories]
    except TypeError:
        raise ConsentFormatError("categories must be an iterable of category ids") from None
    if not gpc_enabled(header_values):
        return {}
    return dict.fromkeys(checked, False)
