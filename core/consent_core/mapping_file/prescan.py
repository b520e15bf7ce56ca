"""What the mapping reader learns from the text before composing it: which composer may read it, and its size.

`pure_only` finds text that libyaml reads differently from the round-trip composer (so only
the latter may read it); `prescan` counts categories and distinct destination ids, and
measures nesting, from libyaml's parser events (its own stack, no nodes kept), stopping at
the first id beyond the mapping's limits. Pure: never builds a mapping, never reads a file.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    DocumentEndEvent,
    MappingStartEvent,
    ScalarEvent,
)

from consent_core.errors import Problem
from consent_core.limits import MappingLimits
from consent_core.model import too_many_categories, too_many_destinations

__all__ = ["C_MAX_DEPTH", "prescan", "pure_only"]


def pure_only(text: str) -> bool:
    """Text the C path reads differently, so it never takes it: a directive line (`%YAML 1.1`,
    `%TAG`: libyaml's path ignores the version when resolving), NEL, LS, PS (line breaks to
    libyaml, not to the round-trip scanner), tabs (libyaml takes `key\\t: value`, the
    round-trip scanner does not) and a BOM anywhere but first (libyaml skips it).

    Plain substring searches: a regular expression over a 16 MiB file held the GIL for a
    second, stalling every decision of a reloading sidecar.
    """
    return (
        "\t" in text or "\x85" in text or "\u2028" in text or "\u2029" in text
        or text.startswith(("%", "\ufeff%")) or "\n%" in text or "\r%" in text
        or text.find("\ufeff", 1) >= 0
    )


# libyaml's composer (in ruamel.yaml.clib) recurses on the C stack once per nesting level and
# kills the process (SIGSEGV) somewhere past 10,000 levels, which 20 KB of `[` can reach. A
# valid mapping nests 4 deep, so text that nests deeper than C_MAX_DEPTH never reaches it:
# `prescan` measures the depth with libyaml's parser, which keeps its own stack.
C_MAX_DEPTH = 64


# Past this depth `prescan` stops (libyaml's parser does work per open flow level for every token,
# so a very deep document costs it quadratic time); the round-trip composer refuses such a
# document as soon as it reaches it (its recursion limit, about as deep).
PRESCAN_MAX_DEPTH = 1000

# What an open collection is, to `prescan`.
_ROOT, _CATEGORIES, _CATEGORY, _CATEGORY_DESTINATIONS, _DESTINATIONS = range(5)


class _Open:
    """A collection open in the event stream: its role, its position, and (a mapping) whether a key comes next."""

    __slots__ = ("is_map", "items", "key", "next_is_key", "position", "role")

    def __init__(self, role: int | None, is_map: bool, position: int) -> None:
        self.role = role
        self.is_map = is_map
        self.position = position  # a category: its index in `categories`
        self.next_is_key = is_map
        self.key: str | None = None
        self.items = 0  # a sequence: items seen so far


def prescan(text: str, limits: MappingLimits) -> tuple[bool, Problem | None]:
    """(whether libyaml's composer may take the text, the first category or distinct destination
    beyond `limits` as a located problem) from libyaml's parser events, stopping at that one.

    A lower bound: ids only an alias of a collection names are not seen (the walker counts
    those). Text libyaml cannot parse ends the count; the round-trip composer then reports it.
    """
    stack: list[_Open] = []
    max_depth = 0
    categories = 0
    seen: set[str] = set()
    anchors: dict[str, str] = {}  # anchored scalars, for aliases of them

    def beyond(event: Any, path: str, message: str) -> tuple[bool, Problem]:
        mark = event.start_mark
        return max_depth <= C_MAX_DEPTH, Problem(path, message, int(mark.line) + 1, int(mark.column) + 1)

    try:
        for event in YAML(typ="safe", pure=False).parse(text):
            if isinstance(event, CollectionEndEvent):
                stack.pop()
                continue
            if isinstance(event, DocumentEndEvent):
                break
            if not isinstance(event, ScalarEvent | AliasEvent | CollectionStartEvent):
                continue  # stream and document starts
            value: str | None = None
            if isinstance(event, ScalarEvent):
                value = str(event.value)
                if event.anchor is not None:
                    anchors[str(event.anchor)] = value
            elif isinstance(event, AliasEvent):
                value = anchors.get(str(event.anchor))
            role: int | None = None
            position = 0
            named: str | None = None  # the path of a destination id this event names
            parent = stack[-1] if stack else None
            if parent is None:
                role = _ROOT if isinstance(event, MappingStartEvent) else None
            elif parent.is_map and parent.next_is_key:
                parent.key, parent.next_is_key = value, False
                if parent.role == _DESTINATIONS and value is not None:
                    named = f"destinations.{value}"
            elif parent.is_map:
                parent.next_is_key = True
                key = parent.key
                if parent.role == _ROOT and key in ("categories", "destinations"):
                    role = _CATEGORIES if key == "categories" else _DESTINATIONS
                elif parent.role == _CATEGORY and key == "destinations":
                    role, position = _CATEGORY_DESTINATIONS, parent.position
            else:
                i = parent.items
                parent.items += 1
                if parent.role == _CATEGORIES:
                    categories += 1
                    if categories > limits.max_categories:
                        return beyond(event, f"categories[{i}]", too_many_categories(limits))
                    role, position = _CATEGORY, i
                elif parent.role == _CATEGORY_DESTINATIONS and value is not None:
                    named = f"categories[{parent.position}].destinations[{i}]"
            if named is not None and value is not None:
                seen.add(value)
                if len(seen) > limits.max_destinations:
                    return beyond(event, named, too_many_destinations(limits))
            if isinstance(event, CollectionStartEvent):
                is_map = isinstance(event, MappingStartEvent)
                wanted = role in (_ROOT, _CATEGORY, _DESTINATIONS)  # these roles are mappings, the others lists
                stack.append(_Open(role if wanted == is_map else None, is_map, position))
                max_depth = max(max_depth, len(stack))
                if max_depth > PRESCAN_MAX_DEPTH:
                    return False, None
    except Exception:  # not parseable by libyaml (or a bug here): the round-trip composer judges it
        return False, None
    return max_depth <= C_MAX_DEPTH, None
