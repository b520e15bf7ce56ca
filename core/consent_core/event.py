"""Validates what one decision request carries (destination ids, a raw Segment event); pure.

Turns untrusted input into the plain values `Index.decide` takes, raising `InvalidArgument`
naming the offending field. Never decides anything and never logs payloads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from consent_core.errors import InvalidArgument
from consent_core.index import PREFERENCE_EVENT_NAME, Index, Outcome
from consent_core.limits import Limits
from consent_core.split import check_destination_ids

__all__ = ["ParsedEvent", "check_destinations", "decide_one", "parse_segment_event"]


@dataclass(frozen=True, slots=True)
class ParsedEvent:
    """What a Segment event contributes to a decision."""

    preferences: dict[str, bool] | None  # None = no consent object
    integrations: dict[str, Any] | None
    preference_event: bool


def check_destinations(destinations: Sequence[str], limits: Limits, field: str = "destinations") -> None:
    """Raises InvalidArgument unless every id is 1..max bytes, none starts with '/', and there are
    not too many. `Index.decide_validated` checks the same, inside its decision pass."""
    check_destination_ids(destinations, limits, field)


def _too_deep(value: dict[str, Any], max_depth: int) -> bool:
    """Whether nesting exceeds max_depth, counting the top-level object as depth 1.

    Iterative, one level at a time; json gives exact dicts and lists, so `type(...) is` suffices
    (5x cheaper than an isinstance walk: this runs on every event).
    """
    level: list[Any] = [value]
    depth = 1
    while level:
        if depth > max_depth:
            return True
        deeper: list[Any] = []
        for v in level:
            for c in v.values() if type(v) is dict else v:
                t = type(c)
                if t is dict or t is list:
                    deeper.append(c)
        level = deeper
        depth += 1
    return False


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


# Strict JSON: `NaN`, `Infinity` and `-Infinity` (which Python's json accepts by default) are not JSON.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_segment_event(raw: bytes, limits: Limits, field: str = "segment_event") -> ParsedEvent:
    """Reads consent, `integrations` and the preference-event marker from a raw Segment event."""
    if len(raw) > limits.max_event_bytes:
        raise InvalidArgument(field, f"larger than {limits.max_event_bytes} bytes ({len(raw)})")
    try:
        # Decoded as UTF-8 ourselves: json.loads(bytes) would also take UTF-16/32 and encoded surrogates.
        event = _DECODER.decode(raw.decode("utf-8"))
    except RecursionError:
        raise InvalidArgument(field, f"nested deeper than {limits.max_event_depth}") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidArgument(field, f"not valid JSON: {e}") from None
    if not isinstance(event, dict):
        raise InvalidArgument(field, "must be a JSON object")
    if _too_deep(event, limits.max_event_depth):
        raise InvalidArgument(field, f"nested deeper than {limits.max_event_depth}")

    preferences: dict[str, bool] | None = None
    context = event.get("context")
    if context is not None:
        if not isinstance(context, dict):
            raise InvalidArgument(f"{field}.context", "must be an object")
        consent = context.get("consent")
        if consent is not None:
            if not isinstance(consent, dict):
                raise InvalidArgument(f"{field}.context.consent", "must be an object")
            prefs = consent.get("categoryPreferences")
            if prefs is not None:
                path = f"{field}.context.consent.categoryPreferences"
                if not isinstance(prefs, dict):
                    raise InvalidArgument(path, "must be an object of booleans")
                for k, v in prefs.items():
                    if not isinstance(v, bool):
                        raise InvalidArgument(f"{path}.{k}", f"must be a boolean, got {type(v).__name__}")
                preferences = prefs

    integrations = event.get("integrations")
    if integrations is not None and not isinstance(integrations, dict):
        raise InvalidArgument(f"{field}.integrations", "must be an object")

    preference_event = event.get("type") == "track" and event.get("event") == PREFERENCE_EVENT_NAME
    return ParsedEvent(preferences, integrations, preference_event)


def decide_one(
    index: Index,
    limits: Limits,
    destinations: Sequence[str],
    *,
    preferences: Mapping[str, bool] | None = None,
    segment_event: bytes | None = None,
    explain: bool = False,
    field: str = "",
) -> Outcome:
    """Validates and decides one request: the shared path of the services and the CLI.

    Give `preferences` (a consent object's categoryPreferences), or `segment_event` raw JSON,
    or neither (no consent object). `field` prefixes field names in errors (e.g. "requests[3].").
    """
    if segment_event is not None:
        check_destinations(destinations, limits, f"{field}destinations")  # before the event's own errors
        ev = parse_segment_event(segment_event, limits, f"{field}segment_event")
        return index.decide(
            ev.preferences, destinations, integrations=ev.integrations,
            preference_event=ev.preference_event, explain=explain,
        )
    return index.decide_validated(preferences, destinations, limits, f"{field}destinations", explain=explain)
