"""diff(old, new): one table row per kind of edit, checked as the exact ordered list of changes."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from consent_core.diff import Change, ChangeKind, diff
from consent_core.model import Category, ConsentMapping, DestinationSettings

K = ChangeKind

PERF = Category("C0002", "Performance Cookies", ("amplitude", "mixpanel"))
TARGET = Category("C0004", "Targeting Cookies", ("google-ads", "braze"))
FUNC = Category("C0003", "Functional Cookies", ("hotjar",), shadow=True)
BASE = ConsentMapping(categories=(PERF, TARGET, FUNC))


def m(*categories: Category) -> ConsentMapping:
    return ConsentMapping(categories=categories)


def j(c: Category) -> dict[str, object]:
    return c.to_json_dict()


@dataclass(frozen=True)
class Case:
    name: str
    old: ConsentMapping
    new: ConsentMapping
    expected: list[tuple[ChangeKind, str, str]]  # (kind, category_id, destination)
    renamed: dict[str, str] | None = None


PERF_RENAMED_ID = replace(PERF, id="C0009")
PERF_RENAMED = replace(PERF, name="Performance")
PERF_MORE = replace(PERF, destinations=("amplitude", "heap", "mixpanel", "fullstory"))
PERF_LESS = replace(PERF, destinations=("mixpanel",))
PERF_SWAPPED = replace(PERF, destinations=("mixpanel", "heap"))
PERF_OFF = replace(PERF, enabled=False)
PERF_SHADOW = replace(PERF, shadow=True)
NEW = Category("C0005", "Social Media Cookies", ("facebook-pixel", "tiktok"))

CASES = [
    Case("no-op", BASE, BASE, []),
    Case("no-op on equal but distinct objects", BASE, m(replace(PERF), replace(TARGET), replace(FUNC)), []),
    Case("empty to empty", m(), m(), []),
    Case(
        "create",
        BASE,
        m(PERF, TARGET, FUNC, NEW),
        [
            (K.CATEGORY_CREATED, "C0005", ""),
            (K.MAPPING_CREATED, "C0005", "facebook-pixel"),
            (K.MAPPING_CREATED, "C0005", "tiktok"),
        ],
    ),
    Case(
        "delete",
        BASE,
        m(PERF, FUNC),
        [
            (K.CATEGORY_DELETED, "C0004", ""),
            (K.MAPPING_REMOVED, "C0004", "google-ads"),
            (K.MAPPING_REMOVED, "C0004", "braze"),
        ],
    ),
    Case(
        "admin id rename via renamed",
        BASE,
        m(PERF_RENAMED_ID, TARGET, FUNC),
        [(K.CATEGORY_UPDATED, "C0009", "")],
        renamed={"C0002": "C0009"},
    ),
    Case(
        "hand-edited id rename without renamed is delete + create",
        BASE,
        m(PERF_RENAMED_ID, TARGET, FUNC),
        [
            (K.CATEGORY_DELETED, "C0002", ""),
            (K.MAPPING_REMOVED, "C0002", "amplitude"),
            (K.MAPPING_REMOVED, "C0002", "mixpanel"),
            (K.CATEGORY_CREATED, "C0009", ""),
            (K.MAPPING_CREATED, "C0009", "amplitude"),
            (K.MAPPING_CREATED, "C0009", "mixpanel"),
        ],
    ),
    Case("name change", BASE, m(PERF_RENAMED, TARGET, FUNC), [(K.CATEGORY_UPDATED, "C0002", "")]),
    Case(
        "destinations added",
        BASE,
        m(PERF_MORE, TARGET, FUNC),
        [
            (K.CATEGORY_UPDATED, "C0002", ""),
            (K.MAPPING_CREATED, "C0002", "heap"),
            (K.MAPPING_CREATED, "C0002", "fullstory"),
        ],
    ),
    Case(
        "destination removed",
        BASE,
        m(PERF_LESS, TARGET, FUNC),
        [(K.CATEGORY_UPDATED, "C0002", ""), (K.MAPPING_REMOVED, "C0002", "amplitude")],
    ),
    Case(
        "destinations added and removed",
        BASE,
        m(PERF_SWAPPED, TARGET, FUNC),
        [
            (K.CATEGORY_UPDATED, "C0002", ""),
            (K.MAPPING_CREATED, "C0002", "heap"),
            (K.MAPPING_REMOVED, "C0002", "amplitude"),
        ],
    ),
    Case(
        "destinations reordered only",
        BASE,
        m(replace(PERF, destinations=("mixpanel", "amplitude")), TARGET, FUNC),
        [(K.CATEGORY_UPDATED, "C0002", "")],
    ),
    Case("disable", BASE, m(PERF_OFF, TARGET, FUNC), [(K.CATEGORY_DISABLED, "C0002", "")]),
    Case("enable", m(PERF_OFF, TARGET, FUNC), BASE, [(K.CATEGORY_ENABLED, "C0002", "")]),
    Case("shadow on", BASE, m(PERF_SHADOW, TARGET, FUNC), [(K.CATEGORY_UPDATED, "C0002", "")]),
    Case("shadow off", BASE, m(PERF, TARGET, replace(FUNC, shadow=False)), [(K.CATEGORY_UPDATED, "C0003", "")]),
    Case(
        "disabled and renamed yields both",
        BASE,
        m(replace(PERF, name="Perf", enabled=False), TARGET, FUNC),
        [(K.CATEGORY_UPDATED, "C0002", ""), (K.CATEGORY_DISABLED, "C0002", "")],
    ),
    Case(
        "category order change alone is nothing",
        BASE,
        m(FUNC, PERF, TARGET),
        [],
    ),
    Case(
        "settings-only change is nothing",
        BASE,
        replace(BASE, destinations={"aws-s3": DestinationSettings(enforce=False)}),
        [],
    ),
    Case(
        "combined: delete, update, create; deletions/updates in old order, creations in new order",
        BASE,
        m(NEW, replace(TARGET, destinations=("braze", "appsflyer"), enabled=False), FUNC, PERF_RENAMED_ID),
        [
            (K.CATEGORY_DELETED, "C0002", ""),
            (K.MAPPING_REMOVED, "C0002", "amplitude"),
            (K.MAPPING_REMOVED, "C0002", "mixpanel"),
            (K.CATEGORY_UPDATED, "C0004", ""),
            (K.CATEGORY_DISABLED, "C0004", ""),
            (K.MAPPING_CREATED, "C0004", "appsflyer"),
            (K.MAPPING_REMOVED, "C0004", "google-ads"),
            (K.CATEGORY_CREATED, "C0005", ""),
            (K.MAPPING_CREATED, "C0005", "facebook-pixel"),
            (K.MAPPING_CREATED, "C0005", "tiktok"),
            (K.CATEGORY_CREATED, "C0009", ""),
            (K.MAPPING_CREATED, "C0009", "amplitude"),
            (K.MAPPING_CREATED, "C0009", "mixpanel"),
        ],
    ),
    Case(
        "combined with admin rename, destination edit and enable",
        m(PERF_OFF, TARGET),
        m(replace(PERF, id="C0009", destinations=("amplitude", "heap")), TARGET),
        [
            (K.CATEGORY_UPDATED, "C0009", ""),
            (K.CATEGORY_ENABLED, "C0009", ""),
            (K.MAPPING_CREATED, "C0009", "heap"),
            (K.MAPPING_REMOVED, "C0009", "mixpanel"),
        ],
        renamed={"C0002": "C0009"},
    ),
    Case(
        "explicit rename wins over a same-id match: the old holder of the id is deleted",
        m(PERF, TARGET),
        m(replace(PERF, id="C0004")),
        [
            (K.CATEGORY_UPDATED, "C0004", ""),
            (K.CATEGORY_DELETED, "C0004", ""),
            (K.MAPPING_REMOVED, "C0004", "google-ads"),
            (K.MAPPING_REMOVED, "C0004", "braze"),
        ],
        renamed={"C0002": "C0004"},
    ),
    Case(
        "ids swapped by two renames",
        m(PERF, TARGET),
        m(replace(PERF, id="C0004"), replace(TARGET, id="C0002")),
        [(K.CATEGORY_UPDATED, "C0004", ""), (K.CATEGORY_UPDATED, "C0002", "")],
        renamed={"C0002": "C0004", "C0004": "C0002"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_diff_reports_each_kind_of_edit_in_order(case: Case) -> None:
    got = diff(case.old, case.new, renamed=case.renamed)
    assert [(c.kind, c.category_id, c.destination) for c in got] == case.expected


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_diff_is_deterministic(case: Case) -> None:
    assert diff(case.old, case.new, renamed=case.renamed) == diff(case.old, case.new, renamed=case.renamed)


def test_created_and_its_mappings_carry_only_after() -> None:
    got = diff(BASE, m(PERF, TARGET, FUNC, NEW))
    assert got[0] == Change(K.CATEGORY_CREATED, "C0005", "", None, j(NEW))
    assert all(c.before is None and c.after == j(NEW) for c in got)


def test_deleted_and_its_mappings_carry_only_before() -> None:
    got = diff(BASE, m(PERF, FUNC))
    assert got[0] == Change(K.CATEGORY_DELETED, "C0004", "", j(TARGET), None)
    assert all(c.before == j(TARGET) and c.after is None for c in got)


def test_every_change_of_a_kept_category_carries_the_full_before_and_after() -> None:
    new = replace(PERF, id="C0009", name="Perf", destinations=("heap",), enabled=False)
    got = diff(BASE, m(new, TARGET, FUNC), renamed={"C0002": "C0009"})
    assert len(got) == 5  # updated, disabled, heap created, amplitude and mixpanel removed
    for c in got:
        assert c.before == j(PERF)
        assert c.after == j(new)
    assert got[0].before is not None and got[0].before["id"] == "C0002"
    assert got[0].after is not None and got[0].after["id"] == "C0009"


def test_full_category_json_has_every_field_with_defaults_explicit() -> None:
    (change,) = diff(BASE, m(PERF_RENAMED, TARGET, FUNC))
    assert change.after == {
        "id": "C0002",
        "name": "Performance",
        "enabled": True,
        "shadow": False,
        "destinations": ["amplitude", "mixpanel"],
    }


@pytest.mark.parametrize(
    ("renamed", "message"),
    [
        ({"C0099": "C0002"}, "'C0099' is not a category of the old mapping"),
        ({"C0002": "C0099"}, "'C0099' (renamed from 'C0002') is not a category of the new mapping"),
        ({"C0002": "C0004", "C0003": "C0004"}, "two categories renamed to 'C0004'"),
    ],
)
def test_inconsistent_renamed_table_is_a_caller_bug(renamed: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        diff(BASE, BASE, renamed=renamed)


def test_inputs_are_not_mutated_and_changes_are_frozen() -> None:
    before = BASE.to_json_dict()
    (change,) = diff(BASE, m(PERF_RENAMED, TARGET, FUNC))
    assert BASE.to_json_dict() == before
    with pytest.raises(AttributeError):
        change.kind = K.CATEGORY_DELETED  # type: ignore[misc]

