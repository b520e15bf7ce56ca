"""Validates what one decision request carries (destination ids, consent keys, a raw Segment event); pure.

Turns untrusted input into the plain values `Index.decide` takes, raising `InvalidArgument`
naming the offending field. Never decides anything and never logs payloads.

A Segment event is strict UTF-8 JSON (no `NaN`, no UTF-16), at most `max_event_bytes` and
`max_event_depth` deep, holding no lone surrogate (`"\\ud800"`: valid JSON, but not Unicode
text: it could not even be named in an error message unescaped) and no key twice inside
`categoryPreferences` or `integrations` (which value would count is a guess, so it is refused
rather than resolved). Keys there are category and destination ids: one holding a control,
format or separator character can never match a mapping's id (the mapping forbids them) and
is refused too, as a consent object's keys are. Duplicate keys elsewhere in the event are
left alone (last wins, as JSON parsers do).

How duplicates are found cheaply: the event is parsed by the C decoder into plain dicts (the
last of a repeated key wins, silently). When the text holds no backslash, every key is spelled
literally, so the one occurrence of `"categoryPreferences"` (or `"integrations"`) in it is
that key, and just its object is parsed again as a list of pairs: more pairs than keys means a
key came twice. Any other text (escapes, the name twice) is parsed again whole, with a hook
that marks every object holding a key twice.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from consent_core.errors import InvalidArgument
from consent_core.index import PREFERENCE_EVENT_NAME, Index, Outcome
from consent_core.limits import Limits
from consent_core.model import invisible_problem
from consent_core.split import check_destination_ids

__all__ = [
    "ParsedEvent", "check_consent_keys", "check_destinations", "check_preferences", "decide_one",
    "parse_segment_event",
]

# Python refuses to convert longer digit strings (its int-string limit, quadratic work beyond);
# when an interpreter has that limit off or higher, the decoder applies this one itself.
MAX_INT_DIGITS: Final = 4300


@dataclass(frozen=True, slots=True)
class ParsedEvent:
    """What a Segment event contributes to a decision."""

    preferences: dict[str, bool] | None  # None = no consent object
    integrations: dict[str, Any] | None
    preference_event: bool


def check_destinations(destinations: Sequence[str], limits: Limits, field: str = "destinations") -> None:
    """Raises InvalidArgument unless every id is 1..max bytes, none starts with '/' or holds a control
    or format character, and there are not too many. `Index.check_destinations` and
    `Index.decide_validated` check the same (faster for the ids the mapping knows)."""
    check_destination_ids(destinations, limits, field)


def check_preferences(preferences: Mapping[str, object], field: str) -> None:
    """Raises InvalidArgument (naming `field.<key>`) unless every value is a boolean and no key holds a
    control, format or separator character (such a key could never match a category id)."""
    for k, v in preferences.items():
        if v is not True and v is not False:
            raise InvalidArgument(field, f"must be a boolean, got {type(v).__name__}", key=str(k))
        if not k.isprintable() and (why := invisible_problem(k)) is not None:
            raise InvalidArgument(field, f"category id {why}", key=k)


def check_consent_keys(preferences: Mapping[str, bool], field: str) -> None:
    """`check_preferences` for a consent object whose values are booleans by type (a protobuf map):
    the keys only, all of them at once at C speed when they are printable (nearly always)."""
    if not "".join(preferences).isprintable():
        check_preferences(preferences, field)


# -- parsing ---------------------------------------------------------------------------------------------


class _Duplicated(dict[str, Any]):
    """A JSON object that held a key more than once (the last value kept, as json does)."""

    __slots__ = ("duplicate",)
    duplicate: str


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) == len(pairs):
        return d
    marked = _Duplicated(d)
    marked.duplicate = _first_repeat(pairs) or ""
    return marked


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer longer than {MAX_INT_DIGITS} digits")
    return int(digits)


# Strict JSON: `NaN`, `Infinity` and `-Infinity` (which Python's json accepts by default) are not JSON.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_BOUNDED = json.JSONDecoder(parse_constant=_reject_constant, parse_int=_bounded_int)
_MARKING = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_pairs)
_MARKING_BOUNDED = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_pairs, parse_int=_bounded_int)
_LISTING = json.JSONDecoder(object_pairs_hook=list)  # one object already parsed once: its pairs, as written

_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")  # a surrogate's escape, paired or not
_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")  # a str holds a surrogate only when it is lone


def _decode(text: str, marking: bool) -> Any:
    limit = sys.get_int_max_str_digits()
    bounded = not 0 < limit <= MAX_INT_DIGITS
    if marking:
        return (_MARKING_BOUNDED if bounded else _MARKING).decode(text)
    return (_BOUNDED if bounded else _DECODER).decode(text)


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


class _Repeats:
    """Finds keys written twice in the objects of one event's text (see the module docstring)."""

    __slots__ = ("_literal", "_marked", "_text")

    def __init__(self, text: str, literal: bool) -> None:
        self._text = text
        self._literal = literal  # no backslash anywhere: every key is spelled as it reads
        self._marked: Any = None

    def key(self, obj: dict[str, Any], path: tuple[str, ...], name: str, flat: bool = False) -> str | None:
        """The first key the object at `path` (parsed as `obj`) holds twice in the text, or None.

        name: the last key of `path`, quoted. flat: every value of `obj` is a boolean (so its
        text ends at the first `}` that no key holds).
        """
        if not obj:
            return None  # an object holding a key twice has at least one key
        text = self._text
        at = text.find(name) if self._literal else -1
        if at >= 0 and text.find(name, at + len(name)) < 0:  # that key, and its value is this object
            start = text.index("{", at)
            if flat:  # one colon per member written, up to the first `}`, when no key holds either
                keys = "".join(obj)
                if ":" not in keys and "}" not in keys and text.count(":", start, text.index("}", start)) == len(obj):
                    return None
            pairs: list[tuple[str, Any]] = _LISTING.raw_decode(text, start)[0]
            return None if len(pairs) == len(obj) else _first_repeat(pairs)
        if self._marked is None:
            self._marked = _decode(text, marking=True)
        found: Any = self._marked
        for step in path:
            found = found[step]
        return found.duplicate if type(found) is _Duplicated else None


def _first_repeat(pairs: list[tuple[str, Any]]) -> str | None:
    seen: set[str] = set()
    for k, _ in pairs:
        if k in seen:
            return k
        seen.add(k)
    return None


def _lone_surrogate(value: Any) -> str | None:
    """The path (below the event) of the first key or string holding a lone surrogate, or None."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str):
            if _LONE_SURROGATE.search(v):
                return path
        elif isinstance(v, dict):
            for k, c in v.items():
                child = f"{path}.{k}" if path else k
                if _LONE_SURROGATE.search(k):
                    return child
                stack.append((child, c))
        elif isinstance(v, list):
            stack.extend((f"{path}[{i}]", c) for i, c in enumerate(v))
    return None


_PREFERENCES: Final = ("context", "consent", "categoryPreferences")


def parse_segment_event(raw: bytes, limits: Limits, field: str = "segment_event") -> ParsedEvent:
    """Reads consent, `integrations` and the preference-event marker from a raw Segment event."""
    if len(raw) > limits.max_event_bytes:
        raise InvalidArgument(field, f"larger than {limits.max_event_bytes} bytes ({len(raw)})")
    try:
        # Decoded as UTF-8 ourselves: json.loads(bytes) would also take UTF-16/32 and encoded surrogates.
        text = raw.decode("utf-8")
        event = _decode(text, marking=False)
    except RecursionError:
        raise InvalidArgument(field, f"nested deeper than {limits.max_event_depth}") from None
    except (UnicodeDecodeError, ValueError) as e:
        why = str(e)
        if type(e) is ValueError and "integer string conversion" in why:  # Python's own int-string limit
            why = f"an integer longer than {sys.get_int_max_str_digits()} digits"
        raise InvalidArgument(field, f"not valid JSON: {why}") from None
    if not isinstance(event, dict):
        raise InvalidArgument(field, "must be a JSON object")
    # Each level of nesting needs its own `{` or `[`: text with few of them cannot be too deep, and
    # counting them (at C speed) costs a quarter of walking the parsed event.
    max_depth = limits.max_event_depth
    if text.count("{") + text.count("[") > max_depth and _too_deep(event, max_depth):
        raise InvalidArgument(field, f"nested deeper than {max_depth}")
    literal = "\\" not in text  # one C memchr; an escape is rare in real events
    if not literal and _SURROGATE_ESCAPE.search(text) is not None:
        where = _lone_surrogate(event)
        if where is not None:
            raise InvalidArgument(field, "holds a lone surrogate (an unpaired \\ud800-\\udfff escape)", key=where)

    repeats: _Repeats | None = None  # made when an object must be looked at
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
                check_preferences(prefs, path)
                repeats = _Repeats(text, literal)
                if (twice := repeats.key(prefs, _PREFERENCES, '"categoryPreferences"', True)) is not None:
                    raise InvalidArgument(path, "duplicate key (each key may appear once)", key=twice)
                preferences = prefs

    integrations = event.get("integrations")
    if integrations is not None:
        path = f"{field}.integrations"
        if not isinstance(integrations, dict):
            raise InvalidArgument(path, "must be an object")
        repeats = repeats or _Repeats(text, literal)
        if (twice := repeats.key(integrations, ("integrations",), '"integrations"')) is not None:
            raise InvalidArgument(path, "duplicate key (each key may appear once)", key=twice)
        for k in integrations:
            if not k.isprintable() and (problem := invisible_problem(k)) is not None:
                raise InvalidArgument(path, f"destination id {problem}", key=k)

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
        index.check_destinations(destinations, limits, f"{field}destinations")  # before the event's own errors
        ev = parse_segment_event(segment_event, limits, f"{field}segment_event")
        return index.decide(
            ev.preferences, destinations, integrations=ev.integrations,
            preference_event=ev.preference_event, explain=explain,
        )
    if preferences is not None:
        check_preferences(preferences, f"{field}consent.category_preferences")
    return index.decide_validated(preferences, destinations, limits, f"{field}destinations", explain=explain)
