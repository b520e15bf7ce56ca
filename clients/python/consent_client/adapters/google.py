"""Google Consent Mode (v2) adapters.

Consent Mode carries one state per *consent type*: ``ad_storage``, ``analytics_storage``,
``ad_user_data``, ``ad_personalization`` (the four Consent Mode v2 types) and
``functionality_storage``, ``personalization_storage``, ``security_storage``; each is
``"granted"`` or ``"denied"``. Sites may also define custom consent types, which are accepted
the same way when they are mapped.

The ``gcd`` request parameter (which also encodes the two v2 types and how each state was
reached) is deliberately *not* decoded: Google does not document it, and the public
write-ups of its letter codes contradict one another.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._common import ConsentFormatError, combine, require_category, require_str

__all__ = [
    "CONSENT_MODE_SIGNALS",
    "decode_gcs",
    "google_consent_mode_to_preferences",
    "google_gcs_to_preferences",
]

#: The consent types defined by Google Consent Mode v2.
CONSENT_MODE_SIGNALS = frozenset(
    {
        "ad_storage",
        "analytics_storage",
        "ad_user_data",
        "ad_personalization",
        "functionality_storage",
        "personalization_storage",
        "security_storage",
    }
)
_STATES = {"granted": True, "denied": False}
_GCS_DIGITS = {"1": "granted", "0": "denied"}


def google_consent_mode_to_preferences(
    signals: Mapping[str, str], signal_to_category: Mapping[str, str], *, require_all: bool = True
) -> dict[str, bool]:
    """Map Consent Mode states to category preferences.

    ``signals`` is the consent-state object as passed to ``gtag('consent', 'default' |
    'update', {...})``, e.g. ``{"ad_storage": "denied", "analytics_storage": "granted"}``.
    Values must be exactly ``"granted"`` or ``"denied"`` for every known consent type and every
    mapped one; other keys of the command object that are not consent types (``region``,
    ``wait_for_update``) are ignored when unmapped.

    ``signal_to_category`` maps consent types to category ids; several may feed one category
    (e.g. ``ad_storage``, ``ad_user_data`` and ``ad_personalization`` -> ``"advertising"``). A
    category is reported only if at least one of its types is present; with ``require_all``
    (default) it is ``True`` iff every one of its types is present and granted (an unset type
    counts as not granted), otherwise iff any present type is granted.
    """
    if not isinstance(signals, Mapping):
        raise ConsentFormatError(f"Consent Mode signals must be a mapping, got {type(signals).__name__}")
    if not isinstance(signal_to_category, Mapping):
        raise ConsentFormatError("signal_to_category must be a mapping of consent type to category id")
    pairs: list[tuple[str, str]] = []
    for signal, category in signal_to_category.items():
        if not isinstance(signal, str) or not signal:
            raise ConsentFormatError(f"signal_to_category keys must be consent type names, got {signal!r}")
        pairs.append((signal, require_category(category, "signal_to_category")))
    mapped = {signal for signal, _ in pairs}
    states: dict[str, bool] = {}
    for signal, value in signals.items():
        if signal not in CONSENT_MODE_SIGNALS and signal not in mapped:
            continue
        if not isinstance(value, str) or value not in _STATES:
            raise ConsentFormatError(
                f"Consent Mode {signal!r} is {str(value)[:40]!r}; expected 'granted' or 'denied'"
            )
        states[signal] = _STATES[value]
    return combine(pairs, states, require_all=require_all)


def decode_gcs(gcs: str) -> dict[str, str]:
    """Decode the ``gcs`` parameter of Google tag requests into Consent Mode states.

    Format: exactly four characters, ``G1`` followed by one character for ``ad_storage`` and
    one for ``analytics_storage``: ``1`` granted, ``0`` denied, ``-`` not set. So ``G111`` =
    both granted, ``G100`` = both denied, ``G101`` = ad_storage denied and analytics_storage
    granted, ``G110`` the reverse, ``G1--`` = no state set. Types marked ``-`` are omitted from
    the result. ``gcs`` carries nothing about ``ad_user_data``/``ad_personalization``.
    """
    text = require_str(gcs, "gcs parameter").strip()
    if len(text) != 4 or not text.startswith("G1") or any(ch not in "01-" for ch in text[2:]):
        raise ConsentFormatError(
            f"gcs parameter {text[:40]!r} is not 'G1' followed by two of '1', '0' or '-' (e.g. 'G111')"
        )
    result: dict[str, str] = {}
    for signal, ch in zip(("ad_storage", "analytics_storage"), text[2:], strict=True):
        if ch in _GCS_DIGITS:
            result[signal] = _GCS_DIGITS[ch]
    return result


def google_gcs_to_preferences(
    gcs: str, signal_to_category: Mapping[str, str], *, require_all: bool = True
) -> dict[str, bool]:
    """:func:`decode_gcs` followed by :func:`google_consent_mode_to_preferences`.

    Note that under ``require_all`` a category that is also fed by ``ad_user_data`` or
    ``ad_personalization`` can never be granted from ``gcs`` alone, since ``gcs`` does not carry
    them.
    """
    return google_consent_mode_to_preferences(decode_gcs(gcs), signal_to_category, require_all=require_all)
