"""Builds the Segment "Segment Consent Preference Updated" track event; pure, no I/O.

CMPs emit it when a user changes their choices. The sidecar (and Segment) deliver it to
every destination regardless of consent, since it carries only the new choices; its
`integrations` object, if a caller adds one, still applies.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["PREFERENCE_UPDATED_EVENT", "preference_updated_event"]

PREFERENCE_UPDATED_EVENT: Final = "Segment Consent Preference Updated"


def _iso8601(ts: datetime) -> str:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware (e.g. datetime.now(UTC))")
    utc = ts.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def preference_updated_event(
    category_preferences: Mapping[str, bool],
    *,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    timestamp: datetime | str | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """The track event announcing a user's new consent choices, as Segment specifies it.

    category_preferences: category id -> granted, e.g. {"C0002": True, "C0004": False}
        (an adapter's output); copied into `context.consent.categoryPreferences`.
    user_id / anonymous_id: at least one is required (Segment's identity rule).
    timestamp: an aware datetime (sent as ISO 8601 UTC with milliseconds), an ISO string
        passed through, or None for now.
    message_id: defaults to a random UUID, so retried sends can be deduplicated downstream
        only if the caller supplies a stable one.

    Raises ValueError for a missing identity, an empty id or a naive timestamp, and
    TypeError for a preference that is not a boolean.
    """
    if user_id is None and anonymous_id is None:
        raise ValueError("one of user_id or anonymous_id is required")
    for name, value in (("user_id", user_id), ("anonymous_id", anonymous_id)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"{name} must be a non-empty string")
    prefs: dict[str, bool] = {}
    for key, granted in category_preferences.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"category id must be a non-empty string, got {key!r}")
        if not isinstance(granted, bool):
            raise TypeError(f"categoryPreferences.{key} must be a boolean, got {type(granted).__name__}")
        prefs[key] = granted

    if timestamp is None:
        ts = _iso8601(datetime.now(UTC))
    elif isinstance(timestamp, datetime):
        ts = _iso8601(timestamp)
    elif isinstance(timestamp, str) and timestamp:
        ts = timestamp
    else:
        raise ValueError("timestamp must be an aware datetime, a non-empty ISO 8601 string or None")

    event: dict[str, Any] = {"type": "track", "event": PREFERENCE_UPDATED_EVENT}
    if user_id is not None:
        event["userId"] = user_id
    if anonymous_id is not None:
        event["anonymousId"] = anonymous_id
    event["messageId"] = message_id if message_id is not None else str(uuid.uuid4())
    event["timestamp"] = ts
    event["properties"] = {}
    event["context"] = {"consent": {"categoryPreferences": prefs}}
    return event
