"""TrustArc (TRUSTe) consent-manager adapters.

TrustArc's GDPR consent manager records the *consent levels* (its categories) a visitor has
accepted. Levels are small integers numbered from 0 in the order the categories are
configured; the stock setup is 0 = required, 1 = functional, 2 = advertising, and sites may
add more. Which level means what is site configuration, so the caller supplies
``level_to_category``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from urllib.parse import unquote

from ._common import ConsentFormatError, combine, require_category, require_str

__all__ = ["trustarc_from_notice_gdpr_prefs", "trustarc_from_storage_item"]

_LEVEL = re.compile(r"[0-9]{1,6}")
_STORAGE_ITEM_NAME = "truste.eu.cookie.notice_gdpr_prefs"


def _parse_levels(value: str, what: str) -> set[int]:
    text = value.strip()
    if "%" in text:
        text = unquote(text)
    levels_part = text.partition(":")[0].strip()
    if not levels_part:
        raise ConsentFormatError(f"{what} {value[:80]!r} lists no consent levels before ':'")
    levels: set[int] = set()
    for token in re.split(r"[,|]", levels_part):
        token = token.strip()
        if not _LEVEL.fullmatch(token):
            raise ConsentFormatError(
                f"{what} {value[:80]!r}: {token[:20]!r} is not a consent level (a non-negative integer)"
            )
        levels.add(int(token))
    return levels


def _to_preferences(levels: set[int], level_to_category: Mapping[int, str]) -> dict[str, bool]:
    pairs: list[tuple[int, str]] = []
    for level, category in level_to_category.items():
        if isinstance(level, bool) or not isinstance(level, int) or level < 0:
            raise ConsentFormatError(f"level_to_category keys must be non-negative ints, got {level!r}")
        pairs.append((level, require_category(category, "level_to_category")))
    # The level list is exhaustive: every configured level is either granted or not.
    states = {level: level in levels for level, _ in pairs}
    return combine(pairs, states, require_all=True)


def trustarc_from_notice_gdpr_prefs(value: str, level_to_category: Mapping[int, str]) -> dict[str, bool]:
    """Read TrustArc's ``notice_gdpr_prefs`` cookie.

    Format: the accepted consent levels, separated by commas (pipes on some deployments),
    followed by ``:`` and an optional suffix that TrustArc uses for its own bookkeeping (empty,
    a hash, or a behaviour marker): ``"0:"`` (required only), ``"0,1,2:"`` (all three stock
    levels), ``"0|1|2:"``, ``"0::implied,eu"``, ``"0,1,2:1a8b5228dd7ff0717196863a5d28ce6c"``. The
    suffix is ignored, the ``:`` may be missing, and a percent-encoded value
    (``"0%2C1%2C2%3A"``) is decoded first.

    Returns, for every category in ``level_to_category``, ``True`` iff the level(s) mapped to it
    are all listed; levels in the cookie but not in the table are ignored. Raises
    :class:`ConsentFormatError` if the level list is empty or holds anything but integers.
    """
    text = require_str(value, "notice_gdpr_prefs value")
    return _to_preferences(_parse_levels(text, "notice_gdpr_prefs value"), level_to_category)


def trustarc_from_storage_item(item: str, level_to_category: Mapping[int, str]) -> dict[str, bool]:
    """Read the ``truste.eu.cookie.notice_gdpr_prefs`` item TrustArc keeps in ``localStorage``.

    Format: TrustArc mirrors its cookies into ``localStorage`` as a JSON object wrapping the
    cookie: ``{"name": "truste.eu.cookie.notice_gdpr_prefs", "value": "0,1,2:", "path": "/",
    "expires": 1662226579395}``. ``value`` is parsed exactly as by
    :func:`trustarc_from_notice_gdpr_prefs`. ``name``, when present, must be
    ``truste.eu.cookie.notice_gdpr_prefs`` (the sibling ``notice_preferences`` item holds a
    different, cumulative format and is rejected); ``path`` and ``expires`` are ignored (this
    function is pure, so it does not compare ``expires`` with the clock).
    """
    text = require_str(item, "TrustArc storage item")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ConsentFormatError(f"TrustArc storage item is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ConsentFormatError("TrustArc storage item must be a JSON object with a 'value' field")
    name = obj.get("name", _STORAGE_ITEM_NAME)
    if name != _STORAGE_ITEM_NAME:
        raise ConsentFormatError(
            f"TrustArc storage item is named {str(name)[:80]!r}, expected {_STORAGE_ITEM_NAME!r}"
        )
    inner = obj.get("value")
    if not isinstance(inner, str):
        raise ConsentFormatError("TrustArc storage item has no string 'value' field")
    return _to_preferences(_parse_levels(inner, "TrustArc storage item value"), level_to_category)
