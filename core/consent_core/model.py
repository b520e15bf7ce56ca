"""The validated consent mapping (categories, destinations, settings) and its rules; pure, no I/O.

One set of rules serves both the mapping-file loader and admin writes: the loader checks
shapes and types with positions, then calls `mapping_problems` for everything semantic.

Ids and names are compared as the CMP and the pipeline send them, so none may hold a
character that is invisible or reorders text (`invisible_problem`): `C0004\u200b` would
look like `C0004` in every listing and never match it. Names are unique after NFC
normalisation (an accented name typed twice, once composed and once decomposed, is one name).
"""

from __future__ import annotations

import enum
import hashlib
import json
import types
import unicodedata
from collections import abc
from dataclasses import dataclass, field, replace
from typing import Any, Final

from consent_core.errors import Problem
from consent_core.limits import MappingLimits

__all__ = [
    "CATEGORY_ID_MAX",
    "DESTINATION_ID_MAX_BYTES",
    "NAME_MAX",
    "Category",
    "ConsentMapping",
    "DestinationSettings",
    "Resolution",
    "Settings",
    "UnknownDestinations",
    "category_etag",
    "category_problems",
    "destination_id_problem",
    "invisible_problem",
    "mapping_problems",
    "size_problems",
    "too_many_categories",
    "too_many_destinations",
]

CATEGORY_ID_MAX = 34
NAME_MAX = 256
DESTINATION_ID_MAX_BYTES = 256


class Resolution(enum.Enum):
    """How a destination mapped to several categories is decided."""

    ALL = "all"  # every enabled category must be granted
    ANY = "any"  # at least one must be granted


class UnknownDestinations(enum.Enum):
    """What happens to a destination the mapping does not know."""

    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class Settings:
    """The mapping file's `settings:` block."""

    unknown_destinations: UnknownDestinations = UnknownDestinations.ALLOW


@dataclass(frozen=True, slots=True)
class DestinationSettings:
    """One entry of the mapping file's `destinations:` block."""

    enforce: bool = True
    resolution: Resolution = Resolution.ALL


@dataclass(frozen=True, slots=True)
class Category:
    """A consent category and the destinations that require it."""

    id: str
    name: str
    destinations: tuple[str, ...]
    enabled: bool = True
    shadow: bool = False

    def to_json_dict(self) -> dict[str, Any]:
        """The category as plain JSON data, defaults explicit (audit before/after, digests)."""
        return {
            "id": self.id,
            "name": self.name,
            "enabled": self.enabled,
            "shadow": self.shadow,
            "destinations": list(self.destinations),
        }


def category_etag(category: Category) -> str:
    """The opaque version of one category (GetCategory's `etag`, checked by admin writes); pure.

    The first 16 hex digits (64 bits) of the sha256 of the category's canonical JSON (sorted
    keys, compact, defaults explicit): equal content gives an equal etag in every process and
    across restarts, and an edit of another category (or of settings) leaves it unchanged.
    """
    data = json.dumps(category.to_json_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:16]


def _frozen_destinations(value: abc.Mapping[str, DestinationSettings]) -> abc.Mapping[str, DestinationSettings]:
    return types.MappingProxyType(dict(value))


@dataclass(frozen=True, slots=True)
class ConsentMapping:
    """A whole mapping document; immutable once built (destinations are a read-only view)."""

    categories: tuple[Category, ...] = ()
    destinations: abc.Mapping[str, DestinationSettings] = field(
        default_factory=lambda: types.MappingProxyType({})
    )
    settings: Settings = Settings()
    version: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.destinations, types.MappingProxyType):
            object.__setattr__(self, "destinations", _frozen_destinations(self.destinations))

    def category(self, category_id: str) -> Category | None:
        for c in self.categories:
            if c.id == category_id:
                return c
        return None

    def known_destinations(self) -> tuple[str, ...]:
        """Every destination named by any category (enabled, disabled or shadow) or under `destinations:`, sorted."""
        known = set(self.destinations)
        for c in self.categories:
            known.update(c.destinations)
        return tuple(sorted(known))

    def with_categories(self, categories: abc.Iterable[Category]) -> ConsentMapping:
        return replace(self, categories=tuple(categories))

    def to_json_dict(self) -> dict[str, Any]:
        """The canonical data form: defaults explicit, comments and formatting gone, order kept."""
        return {
            "version": self.version,
            "settings": {"unknown_destinations": self.settings.unknown_destinations.value},
            "categories": [c.to_json_dict() for c in self.categories],
            "destinations": {
                d: {"enforce": s.enforce, "resolution": s.resolution.value}
                for d, s in sorted(self.destinations.items())
            },
        }

    @classmethod
    def from_json_dict(cls, data: abc.Mapping[str, Any]) -> ConsentMapping:
        """The inverse of `to_json_dict`: rebuilds a mapping from its canonical data form.

        For data this module wrote (e.g. a policy kept in the audit database): shapes and
        types are checked (ValueError naming the path), the mapping rules are not; callers
        that need them run `mapping_problems`. `from_json_dict(m.to_json_dict()) == m`.
        """
        data = _obj(data, "mapping")
        settings = _obj(data.get("settings"), "settings")
        categories = _list(data.get("categories"), "categories")
        destinations = _obj(data.get("destinations"), "destinations")
        try:
            unknown = UnknownDestinations(_str(settings.get("unknown_destinations"), "settings.unknown_destinations"))
        except ValueError as e:
            raise ValueError(f"settings.unknown_destinations: {e}") from None
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError(f"version: must be an integer, got {type(version).__name__}")
        cats: list[Category] = []
        for i, raw in enumerate(categories):
            path = f"categories[{i}]"
            c = _obj(raw, path)
            cats.append(
                Category(
                    id=_str(c.get("id"), f"{path}.id"),
                    name=_str(c.get("name"), f"{path}.name"),
                    destinations=tuple(
                        _str(d, f"{path}.destinations[{j}]")
                        for j, d in enumerate(_list(c.get("destinations"), f"{path}.destinations"))
                    ),
                    enabled=_bool(c.get("enabled"), f"{path}.enabled"),
                    shadow=_bool(c.get("shadow"), f"{path}.shadow"),
                )
            )
        dests: dict[str, DestinationSettings] = {}
        for d, raw in destinations.items():
            path = f"destinations.{d}"
            s = _obj(raw, path)
            try:
                resolution = Resolution(_str(s.get("resolution"), f"{path}.resolution"))
            except ValueError as e:
                raise ValueError(f"{path}.resolution: {e}") from None
            dests[d] = DestinationSettings(enforce=_bool(s.get("enforce"), f"{path}.enforce"), resolution=resolution)
        return cls(categories=tuple(cats), destinations=dests, settings=Settings(unknown), version=version)

    def canonical_bytes(self) -> bytes:
        return json.dumps(self.to_json_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def digest(self) -> str:
        """sha256 hex of the canonical form: equal for files that differ only in comments or layout."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()


def _obj(value: object, path: str) -> abc.Mapping[str, Any]:
    if not isinstance(value, abc.Mapping):
        raise ValueError(f"{path}: must be an object, got {type(value).__name__}")
    return value


def _list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{path}: must be a list, got {type(value).__name__}")
    return value


def _str(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{path}: must be a string, got {type(value).__name__}")
    return value


def _bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{path}: must be a boolean, got {type(value).__name__}")
    return value


def _has_whitespace(s: str) -> bool:
    return any(ch.isspace() for ch in s)


# Unicode categories no id or name may hold: control (Cc), format (Cf: zero-width space, bidi
# marks, BOM, ...), surrogate (Cs: only ever a lone one in a str), line and paragraph separators.
_INVISIBLE: Final = {
    "Cc": "a control character",
    "Cf": "an invisible format character",
    "Cs": "a lone surrogate",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}


def invisible_problem(value: str) -> str | None:
    """Why `value` may not be an id or a name because of one of its characters, or None.

    None of these characters is printable, so printable text (nearly every id) costs one C call.
    """
    if value.isprintable():
        return None
    for i, c in enumerate(value):
        what = _INVISIBLE.get(unicodedata.category(c))
        if what is not None:
            return f"must not contain {what} (U+{ord(c):04X} at position {i + 1})"
    return None


def category_id_problem(value: str) -> str | None:
    """Why `value` is not a valid category id, or None."""
    if not value:
        return "must not be empty"
    if len(value) > CATEGORY_ID_MAX:
        return f"must be at most {CATEGORY_ID_MAX} characters (got {len(value)})"
    if value[0].isdigit():
        return "must not start with a digit"
    if _has_whitespace(value):
        return "must not contain whitespace"
    return invisible_problem(value)


def destination_id_problem(value: str) -> str | None:
    """Why `value` is not a valid destination id in a mapping, or None."""
    if not value:
        return "must not be empty"
    if len(value.encode("utf-8", "surrogatepass")) > DESTINATION_ID_MAX_BYTES:
        return f"must be at most {DESTINATION_ID_MAX_BYTES} bytes"
    if "/" in value:
        return "must not contain '/' (instances are named only in requests)"
    if _has_whitespace(value):
        return "must not contain whitespace"
    return invisible_problem(value)


def category_problems(category: Category, path: str) -> list[Problem]:
    """Rules one category must satisfy on its own; `path` is e.g. "categories[2]"."""
    problems: list[Problem] = []
    if (why := category_id_problem(category.id)) is not None:
        problems.append(Problem(f"{path}.id", why))
    if not category.name.strip():
        problems.append(Problem(f"{path}.name", "must not be empty"))
    elif len(category.name) > NAME_MAX:
        problems.append(Problem(f"{path}.name", f"must be at most {NAME_MAX} characters"))
    elif (why := invisible_problem(category.name)) is not None:
        problems.append(Problem(f"{path}.name", why))
    if not category.destinations:
        problems.append(Problem(f"{path}.destinations", "must list at least one destination"))
    seen: set[str] = set()
    for i, d in enumerate(category.destinations):
        if (why := destination_id_problem(d)) is not None:
            problems.append(Problem(f"{path}.destinations[{i}]", why))
        elif d in seen:
            problems.append(Problem(f"{path}.destinations[{i}]", f"duplicate destination {d!r}"))
        seen.add(d)
    return problems


_NO_LIMITS_GIVEN: Final = MappingLimits()


def too_many_categories(limits: MappingLimits) -> str:
    """The message of the first category beyond `limits` (at `categories[max]`)."""
    return f"too many categories: at most {limits.max_categories} (--max-mapping-categories)"


def too_many_destinations(limits: MappingLimits) -> str:
    """The message of the first distinct destination beyond `limits` (where it is named)."""
    return f"too many distinct destinations: at most {limits.max_destinations} (--max-mapping-destinations)"


def size_problems(mapping: ConsentMapping, limits: MappingLimits = _NO_LIMITS_GIVEN) -> list[Problem]:
    """The mapping's size against `limits`: the first category, and the first distinct destination
    (categories in order, then `destinations:`), beyond them."""
    problems: list[Problem] = []
    if len(mapping.categories) > limits.max_categories:
        problems.append(Problem(f"categories[{limits.max_categories}]", too_many_categories(limits)))
    most = limits.max_destinations
    seen: set[str] = set()
    for i, c in enumerate(mapping.categories):
        if len(seen) + len(c.destinations) <= most:
            seen.update(c.destinations)  # a whole list that cannot cross the limit: at C speed
            continue
        for j, d in enumerate(c.destinations):
            seen.add(d)
            if len(seen) > most:
                return [*problems, Problem(f"categories[{i}].destinations[{j}]", too_many_destinations(limits))]
    for d in mapping.destinations:
        seen.add(d)
        if len(seen) > most:
            return [*problems, Problem(f"destinations.{d}", too_many_destinations(limits))]
    return problems


def mapping_problems(mapping: ConsentMapping, limits: MappingLimits = _NO_LIMITS_GIVEN) -> list[Problem]:
    """Every semantic rule of a whole mapping: each category's own, unique ids and names, settings, size.

    Names are compared after NFC normalisation. `limits`: the mapping's size (default: the
    documented defaults).
    """
    problems: list[Problem] = []
    if mapping.version != 1:
        problems.append(Problem("version", f"unsupported version {mapping.version!r}: must be 1"))
    ids: dict[str, int] = {}
    names: dict[str, int] = {}
    for i, c in enumerate(mapping.categories):
        path = f"categories[{i}]"
        problems.extend(category_problems(c, path))
        if c.id in ids:
            problems.append(Problem(f"{path}.id", f"duplicate id {c.id!r} (first at categories[{ids[c.id]}])"))
        else:
            ids[c.id] = i
        name = unicodedata.normalize("NFC", c.name)
        if name in names:
            first = mapping.categories[names[name]].name
            same = "" if first == c.name else ", the same name in another Unicode normalisation form"
            problems.append(
                Problem(f"{path}.name", f"duplicate name {c.name!r} (first at categories[{names[name]}]{same})")
            )
        else:
            names[name] = i
    for d in mapping.destinations:
        if (why := destination_id_problem(d)) is not None:
            problems.append(Problem(f"destinations.{d}", why))
    problems.extend(size_problems(mapping, limits))
    return problems
