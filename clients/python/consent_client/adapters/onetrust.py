"""OneTrust adapters.

OneTrust stores the visitor's choices per *consent group* (category). Group ids are short
tokens chosen in the OneTrust admin, by default ``C0001`` (strictly necessary), ``C0002``
(performance), ``C0003`` (functional), ``C0004`` (targeting), ``C0005`` (social media); IAB
sites add ids such as ``STACK42`` or ``V2STACK42``, older tenants use bare numbers (``1``, ``2``).
The adapters use the group ids themselves as category ids, so map destinations to group ids
in the sidecar's mapping file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, unquote_plus

from ._common import ConsentFormatError, require_str

__all__ = ["onetrust_from_active_groups", "onetrust_from_optanon_cookie"]

_GROUP_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def _check_group_id(group: str, where: str) -> str:
    if not _GROUP_ID.fullmatch(group):
        raise ConsentFormatError(
            f"{where}: {group[:80]!r} is not a OneTrust group id (letters, digits, '_', '.', '-')"
        )
    return group


def onetrust_from_optanon_cookie(cookie_value: str) -> dict[str, bool]:
    """Read the consent groups out of a OneTrust ``OptanonConsent`` cookie value.

    Format: the cookie value is a URL query string of ``key=value`` pairs joined by ``&``
    (``isGpcEnabled``, ``datestamp``, ``version``, ``consentId``, ``interactionCount``,
    ``hosts``, ``groups``, ``geolocation``, ``AwaitingReconsent``...). Values are
    percent-encoded, with ``+`` for spaces. Only ``groups`` matters here: a comma-separated
    list of ``<group id>:<status>`` entries, status ``1`` (consented) or ``0`` (not consented),
    for example ``groups=C0001%3A1%2CC0002%3A0%2CC0004%3A0`` which decodes to
    ``C0001:1,C0002:0,C0004:0``.

    Accepted input: the whole cookie value as sent in a ``Cookie`` header (values
    percent-encoded), the same value already decoded once (as ``decodeURIComponent`` of
    ``document.cookie`` yields: ``groups=C0001:1,C0002:0``), or the whole value percent-encoded
    once more (``isGpcEnabled%3D0%26...%26groups%3DC0001%253A1...``). Surrounding whitespace
    and double quotes are ignored.

    Returns ``{group_id: bool}`` for every listed group (``{}`` when ``groups`` is present but
    empty). Raises :class:`ConsentFormatError` when there is no ``groups`` field, an entry is
    not ``id:0``/``id:1``, or a group is listed twice with different statuses.
    """
    value = require_str(cookie_value, "OptanonConsent cookie value").strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if "=" not in value and "%3d" in value.lower():
        value = unquote(value)  # the whole query string was percent-encoded once more
    groups: str | None = None
    for pair in value.split("&"):
        key, sep, raw = pair.partition("=")
        if sep and unquote_plus(key).strip() == "groups":
            if groups is not None:
                raise ConsentFormatError("OptanonConsent cookie has more than one 'groups' field")
            groups = unquote_plus(raw)
    if groups is None:
        raise ConsentFormatError("OptanonConsent cookie has no 'groups' field (is this an OptanonConsent value?)")
    result: dict[str, bool] = {}
    for entry in groups.split(","):
        entry = entry.strip()
        if not entry:
            continue
        group, sep, status = entry.partition(":")
        group = _check_group_id(group.strip(), "OptanonConsent groups")
        status = status.strip()
        if not sep or status not in ("0", "1"):
            raise ConsentFormatError(
                f"OptanonConsent groups entry {entry[:80]!r} is not '<group>:1' or '<group>:0'"
            )
        granted = status == "1"
        if result.get(group, granted) != granted:
            raise ConsentFormatError(f"OptanonConsent groups lists {group!r} as both granted and denied")
        result[group] = granted
    return result


def onetrust_from_active_groups(
    active_groups: str, known_groups: Iterable[str] | None = None
) -> dict[str, bool]:
    """Read OneTrust's ``OnetrustActiveGroups`` (or ``OptanonActiveGroups``) string.

    Format: the ids of the *consented* groups joined by commas, with a leading and trailing
    comma, e.g. ``",C0001,C0003,"`` (the page-level global and the ``dataLayer`` variable that
    OneTrust maintains). Empty entries and surrounding whitespace are ignored, so ``"C0001,C0003"``
    and ``","`` (nothing consented) are accepted too.

    Every listed group maps to ``True``. The string says nothing about groups that are *not*
    consented, so pass ``known_groups`` (all group ids configured for the site) to have each of
    them that is not listed mapped to ``False``; without it, unlisted groups are simply absent
    (which the sidecar also treats as not granted).
    """
    value = require_str(active_groups, "OnetrustActiveGroups value").strip()
    result: dict[str, bool] = {}
    for entry in value.split(","):
        entry = entry.strip()
        if entry:
            result[_check_group_id(entry, "OnetrustActiveGroups")] = True
    if known_groups is not None:
        if isinstance(known_groups, str):
            raise ConsentFormatError("known_groups must be an iterable of group ids, not a single string")
        for group in known_groups:
            if not isinstance(group, str):
                raise ConsentFormatError(f"known_groups must contain strings, got {type(group).__name__}")
            result.setdefault(_check_group_id(group, "known_groups"), False)
    return result
