"""IAB CCPA / US Privacy string (``usprivacy`` cookie, ``__uspapi`` ``uspString``).

Format: exactly four characters. 1st: specification version, ``1``. 2nd: explicit notice /
opportunity to opt out given. 3rd: the user opted out of the sale of personal information.
4th: the publisher is a signatory of the IAB Limited Service Provider Agreement (LSPA). Each of
the last three is ``Y`` (yes), ``N`` (no) or ``-`` (not applicable); ``1---`` means the law
does not apply. Lower-case ``y``/``n`` are accepted as well, as common validators do.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._common import ConsentFormatError, require_category, require_str

__all__ = ["USPrivacy", "decode_us_privacy", "us_privacy_to_preferences"]

_FLAGS: dict[str, bool | None] = {"Y": True, "y": True, "N": False, "n": False, "-": None}


@dataclass(frozen=True, slots=True)
class USPrivacy:
    """A decoded US Privacy string; ``None`` means ``-`` (not applicable)."""

    version: int
    notice_given: bool | None
    opted_out_of_sale: bool | None
    lspa_covered: bool | None


def decode_us_privacy(s: str) -> USPrivacy:
    """Decode a US Privacy string such as ``"1YNN"`` (see the module docstring)."""
    text = require_str(s, "US Privacy string").strip()
    if len(text) != 4:
        raise ConsentFormatError(f"US Privacy string {text[:40]!r} must be exactly 4 characters, like '1YNN'")
    if text[0] != "1":
        raise ConsentFormatError(f"US Privacy string {text!r} has version {text[0]!r}; only version 1 exists")
    flags = text[1:]
    if any(ch not in _FLAGS for ch in flags):
        raise ConsentFormatError(f"US Privacy string {text!r}: characters 2-4 must each be 'Y', 'N' or '-'")
    return USPrivacy(1, _FLAGS[flags[0]], _FLAGS[flags[1]], _FLAGS[flags[2]])


def us_privacy_to_preferences(s: str | USPrivacy, sale_category: str) -> dict[str, bool]:
    """Map the opt-out-of-sale flag to ``{sale_category: bool}``.

    Opted out (``Y``) -> ``False``; not opted out (``N``) -> ``True``; ``-`` (not applicable)
    -> ``{}`` (the category is absent).
    """
    decoded = s if isinstance(s, USPrivacy) else decode_us_privacy(s)
    category = require_category(sale_category, "sale_category")
    if decoded.opted_out_of_sale is None:
        return {}
    return {category: not decoded.opted_out_of_sale}
