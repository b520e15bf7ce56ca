"""What changed between two mappings, as ordered `Change`s: `diff(old, new)`; pure.

Owns the kinds of change (`ChangeKind`) and the rules turning two validated
`ConsentMapping`s into an ordered list of changes. Must never do I/O, read clocks, log,
import generated protobuf code, or know how changes are recorded: the sidecar's audit
trail translates each `ChangeKind` to its own vocabulary and persists it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from consent_core.model import Category, ConsentMapping

__all__ = ["Change", "ChangeKind", "diff"]


class ChangeKind(enum.Enum):
    """What happened to one category (or to one destination's mapping to it)."""

    CATEGORY_CREATED = "category_created"
    CATEGORY_UPDATED = "category_updated"  # id, name, destinations (incl. their order) or shadow changed
    CATEGORY_DISABLED = "category_disabled"
    CATEGORY_ENABLED = "category_enabled"
    CATEGORY_DELETED = "category_deleted"
    MAPPING_CREATED = "mapping_created"  # a destination was mapped to a category
    MAPPING_REMOVED = "mapping_removed"  # a destination was unmapped from a category


@dataclass(frozen=True, slots=True)
class Change:
    """One change to one category (and, for mapping changes, one destination).

    `before` / `after` are the whole category as `Category.to_json_dict()` before and after
    the change set (None where the category does not exist on that side). Every change of a
    kept category carries the same before/after pair, so any one change shows the full edit.
    """

    kind: ChangeKind
    category_id: str
    destination: str = ""  # mapping changes only
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


def _created(c: Category) -> list[Change]:
    after = c.to_json_dict()
    out = [Change(ChangeKind.CATEGORY_CREATED, c.id, "", None, after)]
    out.extend(Change(ChangeKind.MAPPING_CREATED, c.id, d, None, after) for d in c.destinations)
    return out


def _deleted(c: Category) -> list[Change]:
    before = c.to_json_dict()
    out = [Change(ChangeKind.CATEGORY_DELETED, c.id, "", before, None)]
    out.extend(Change(ChangeKind.MAPPING_REMOVED, c.id, d, before, None) for d in c.destinations)
    return out


def _kept(old: Category, new: Category) -> list[Change]:
    """Changes of a category present on both sides, reported under its new id.

    Order: CATEGORY_UPDATED, then CATEGORY_ENABLED / CATEGORY_DISABLED (category-level
    first), then MAPPING_CREATED per added destination (new order), then MAPPING_REMOVED
    per removed destination (old order).
    """
    before, after = old.to_json_dict(), new.to_json_dict()
    out: list[Change] = []
    if (old.id, old.name, old.shadow, old.destinations) != (new.id, new.name, new.shadow, new.destinations):
        out.append(Change(ChangeKind.CATEGORY_UPDATED, new.id, "", before, after))
    if old.enabled != new.enabled:
        kind = ChangeKind.CATEGORY_ENABLED if new.enabled else ChangeKind.CATEGORY_DISABLED
        out.append(Change(kind, new.id, "", before, after))
    old_dests, new_dests = set(old.destinations), set(new.destinations)
    out.extend(
        Change(ChangeKind.MAPPING_CREATED, new.id, d, before, after) for d in new.destinations if d not in old_dests
    )
    out.extend(
        Change(ChangeKind.MAPPING_REMOVED, new.id, d, before, after) for d in old.destinations if d not in new_dests
    )
    return out


def _check_renamed(old: ConsentMapping, new: ConsentMapping, renamed: Mapping[str, str]) -> None:
    old_ids = {c.id for c in old.categories}
    new_ids = {c.id for c in new.categories}
    targets: set[str] = set()
    for old_id, new_id in renamed.items():
        if old_id not in old_ids:
            raise ValueError(f"renamed: {old_id!r} is not a category of the old mapping")
        if new_id not in new_ids:
            raise ValueError(f"renamed: {new_id!r} (renamed from {old_id!r}) is not a category of the new mapping")
        if new_id in targets:
            raise ValueError(f"renamed: two categories renamed to {new_id!r}")
        targets.add(new_id)


def diff(old: ConsentMapping, new: ConsentMapping, *, renamed: Mapping[str, str] | None = None) -> list[Change]:
    """The changes turning `old` into `new`, in a deterministic order; [] when nothing changed.

    Categories are matched by id, except that `renamed` (old id -> new id, from an admin
    rename) matches an old category to a new one under another id; an explicit rename wins
    over a same-id match. Without it, an id changed by hand is a delete plus a create.

    - created: CATEGORY_CREATED, then MAPPING_CREATED per destination;
    - deleted: CATEGORY_DELETED, then MAPPING_REMOVED per destination;
    - kept: CATEGORY_UPDATED if id, name, shadow or destinations changed; CATEGORY_ENABLED /
      CATEGORY_DISABLED if `enabled` flipped; MAPPING_CREATED / MAPPING_REMOVED per
      destination added / removed (see `_kept` for the order within one category).

    Deletions and updates come first, in the old mapping's order; creations follow, in the
    new mapping's order. Settings and the `destinations:` block are not category changes
    and produce nothing here (the caller records a reload of them its own way).

    Raises ValueError if `renamed` names an id missing on its side or renames two
    categories to the same id.
    """
    renamed = renamed or {}
    _check_renamed(old, new, renamed)
    new_by_id = {c.id: c for c in new.categories}
    claimed = set(renamed.values())  # new ids taken by explicit renames
    matched: set[str] = set()
    out: list[Change] = []
    for c in old.categories:
        if c.id in renamed:
            target: str | None = renamed[c.id]
        elif c.id in new_by_id and c.id not in claimed:
            target = c.id
        else:
            target = None
        if target is None:
            out.extend(_deleted(c))
        else:
            matched.add(target)
            out.extend(_kept(c, new_by_id[target]))
    for c in new.categories:
        if c.id not in matched:
            out.extend(_created(c))
    return out
