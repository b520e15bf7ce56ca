"""Admin edits of a mapping: one write request applied to a `ConsentMapping`, giving the new `ConsentMapping`; pure.

Owns the semantics of the AdminService write RPCs (docs/reference.md §2): which category a request
names, its optional etag, the `confirm_name` typed by the operator, the update mask, and
the status each mistake deserves (NotFound, AlreadyExists, Aborted, FailedPrecondition,
InvalidArgument). Field rules are never restated here: the edited mapping goes through
`consent_core.model.mapping_problems`, the same rules the file loader applies, and its problems
are re-addressed to the request's fields (`categories[3].id` -> `category.id`).

Must never do I/O, read clocks, log or import generated protobuf code: the servicer
translates proto messages into these plain requests, and the writer persists the result.

The order of checks, for each request, is: malformed request fields (update_mask, an empty
category_id) -> NotFound -> Aborted (stale etag: the caller's view is out of date, so
nothing else it sent can be judged) -> FailedPrecondition (confirm_name) -> AlreadyExists
(id or name taken by another category) -> InvalidArgument (the model's rules, which then
find no duplicate to report).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from consent_core.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Problem
from consent_core.model import Category, ConsentMapping, category_etag, mapping_problems

__all__ = [
    "UPDATE_PATHS",
    "CategoryFields",
    "Create",
    "Delete",
    "Disable",
    "Edit",
    "EditResult",
    "Enable",
    "Update",
    "apply_edit",
]

UPDATE_PATHS = ("id", "name", "destinations", "shadow")
"""What UpdateCategory's update_mask may name; an empty mask means all of them."""


@dataclass(frozen=True, slots=True)
class CategoryFields:
    """A category as a request carries it: `enabled` None means unset (create: true)."""

    id: str = ""
    name: str = ""
    destinations: tuple[str, ...] = ()
    enabled: bool | None = None
    shadow: bool = False


@dataclass(frozen=True, slots=True)
class Create:
    category: CategoryFields


@dataclass(frozen=True, slots=True)
class Update:
    category_id: str
    category: CategoryFields
    paths: tuple[str, ...] = ()  # the update_mask; () = every path in UPDATE_PATHS
    etag: str = ""  # "" = do not check


@dataclass(frozen=True, slots=True)
class Disable:
    category_id: str
    confirm_name: str
    etag: str = ""


@dataclass(frozen=True, slots=True)
class Enable:
    category_id: str
    etag: str = ""


@dataclass(frozen=True, slots=True)
class Delete:
    category_id: str
    confirm_name: str
    etag: str = ""


Edit = Create | Update | Disable | Enable | Delete


@dataclass(frozen=True, slots=True)
class EditResult:
    """The mapping after the edit, the category as it now is (the deleted one for Delete), renames for diff."""

    mapping: ConsentMapping
    category: Category
    changed: bool  # False when the edit asks for what already is: nothing to write or audit
    renamed: dict[str, str] = field(default_factory=dict)  # {old id: new id}, for diff(..., renamed=...)


def apply_edit(mapping: ConsentMapping, edit: Edit) -> EditResult:
    """The mapping `edit` turns `mapping` into; raises a `SidecarError` subclass naming what is wrong.

    `mapping` is a validated mapping (as loaded); the result is validated by the same rules.
    An edit that changes nothing (disabling a disabled category, an update to the same
    values) returns an equal mapping: `EditResult.changed` is False.
    """
    if isinstance(edit, Create):
        return _create(mapping, edit)
    if isinstance(edit, Update):
        return _update(mapping, edit)
    if isinstance(edit, Disable | Enable):
        return _set_enabled(mapping, edit)
    if isinstance(edit, Delete):
        return _delete(mapping, edit)
    raise TypeError(f"not an edit: {edit!r}")


# -- the requests --------------------------------------------------------------------------


def _create(mapping: ConsentMapping, edit: Create) -> EditResult:
    f = edit.category
    new = Category(
        id=f.id,
        name=f.name,
        destinations=tuple(f.destinations),
        enabled=True if f.enabled is None else f.enabled,
        shadow=f.shadow,
    )
    categories = (*mapping.categories, new)
    after = mapping.with_categories(categories)
    _check_unique(mapping, new, skip=None)
    _validate(after, len(categories) - 1)
    return _result(mapping, after, new)


def _update(mapping: ConsentMapping, edit: Update) -> EditResult:
    paths = _mask(edit.paths)
    i, old = _find(mapping, edit.category_id)
    _check_etag(old, edit.etag)
    f = edit.category
    new = Category(
        id=f.id if "id" in paths else old.id,
        name=f.name if "name" in paths else old.name,
        destinations=tuple(f.destinations) if "destinations" in paths else old.destinations,
        enabled=old.enabled,  # not maskable: Disable/Enable (with their confirmation) own it
        shadow=f.shadow if "shadow" in paths else old.shadow,
    )
    after = _replace_at(mapping, i, new)
    _check_unique(mapping, new, skip=i)
    _validate(after, i)
    renamed = {old.id: new.id} if new.id != old.id else {}
    return _result(mapping, after, new, renamed)


def _set_enabled(mapping: ConsentMapping, edit: Disable | Enable) -> EditResult:
    i, old = _find(mapping, edit.category_id)
    _check_etag(old, edit.etag)
    if isinstance(edit, Disable):
        _check_confirmation(old, edit.confirm_name, "disable")
    new = replace(old, enabled=isinstance(edit, Enable))
    return _result(mapping, _replace_at(mapping, i, new), new)


def _delete(mapping: ConsentMapping, edit: Delete) -> EditResult:
    i, old = _find(mapping, edit.category_id)
    _check_etag(old, edit.etag)
    _check_confirmation(old, edit.confirm_name, "delete")
    after = mapping.with_categories(c for j, c in enumerate(mapping.categories) if j != i)
    return _result(mapping, after, old)


# -- checks --------------------------------------------------------------------------------


def _result(
    before: ConsentMapping, after: ConsentMapping, category: Category, renamed: dict[str, str] | None = None
) -> EditResult:
    return EditResult(mapping=after, category=category, changed=after != before, renamed=renamed or {})


def _mask(paths: Sequence[str]) -> frozenset[str]:
    unknown = [p for p in paths if p not in UPDATE_PATHS]
    if unknown:
        names = ", ".join(repr(p) for p in unknown)
        raise InvalidArgument("update_mask", f"unknown path {names} (allowed: {', '.join(UPDATE_PATHS)})")
    return frozenset(paths or UPDATE_PATHS)


def _find(mapping: ConsentMapping, category_id: str) -> tuple[int, Category]:
    if not category_id:
        raise InvalidArgument("category_id", "must not be empty")
    for i, c in enumerate(mapping.categories):
        if c.id == category_id:
            return i, c
    raise NotFound(f"category_id: no category {category_id!r}")


def _check_etag(category: Category, etag: str) -> None:
    if etag and etag != category_etag(category):
        raise Aborted(
            f"etag: category {category.id!r} changed since it was read (stale etag); read it again and retry"
        )


def _check_confirmation(category: Category, confirm_name: str, verb: str) -> None:
    if confirm_name != category.name:
        raise FailedPrecondition(
            f"confirm_name: to {verb} category {category.id!r}, confirm_name must equal its name "
            f"{category.name!r} exactly (got {confirm_name!r})"
        )


def _replace_at(mapping: ConsentMapping, i: int, new: Category) -> ConsentMapping:
    return mapping.with_categories(new if j == i else c for j, c in enumerate(mapping.categories))


def _check_unique(mapping: ConsentMapping, new: Category, *, skip: int | None) -> None:
    """AlreadyExists when another category (not index `skip`) has `new`'s id or name."""
    for j, c in enumerate(mapping.categories):
        if j == skip:
            continue
        if c.id == new.id:
            raise AlreadyExists(f"category.id: a category with id {new.id!r} already exists")
        if c.name == new.name:
            raise AlreadyExists(f"category.name: category {c.id!r} already has the name {new.name!r}")


def _validate(after: ConsentMapping, i: int) -> None:
    """InvalidArgument listing every problem the model's rules find, the edited category's (index `i`) as `category.*`.

    Runs after `_check_unique`, so no duplicate is left for the rules to find: a taken id or
    name is ALREADY_EXISTS, not malformed input.
    """
    prefix = f"categories[{i}]"
    problems: list[Problem] = []
    for p in mapping_problems(after):
        path = p.path
        if path == prefix or path.startswith((prefix + ".", prefix + "[")):
            path = "category" + path[len(prefix) :]
        problems.append(Problem(path, p.message))
    if problems:
        first, rest = problems[0], problems[1:]
        message = "; ".join([first.message, *(p.format() for p in rest)])
        raise InvalidArgument(first.path, message)
