"""consent_core.edits: each admin write applied to a ConsentMapping, and the status each mistake gets."""

from __future__ import annotations

import pytest
from consent_core import errors
from consent_core.diff import ChangeKind, diff
from consent_core.edits import CategoryFields, Create, Delete, Disable, Enable, Update, apply_edit
from consent_core.model import Category, ConsentMapping, category_etag, mapping_problems
from hypothesis import given, settings
from hypothesis import strategies as st

PERF = Category("C0002", "Performance Cookies", ("amplitude", "mixpanel"))
TARGET = Category("C0004", "Targeting Cookies", ("google-ads", "braze"))
FUNC = Category("C0003", "Functional Cookies", ("amplitude", "hotjar"), shadow=True)
MAPPING = ConsentMapping(categories=(PERF, TARGET, FUNC))


def fields(c: Category, **changes: object) -> CategoryFields:
    base = {"id": c.id, "name": c.name, "destinations": c.destinations, "enabled": c.enabled, "shadow": c.shadow}
    base.update(changes)
    return CategoryFields(**base)  # type: ignore[arg-type]


# -- create ---------------------------------------------------------------------------------


def test_create_appends_the_category_enabled_by_default() -> None:
    r = apply_edit(MAPPING, Create(CategoryFields("C0005", "Social Media", ("facebook",))))
    assert r.changed
    assert r.category == Category("C0005", "Social Media", ("facebook",), enabled=True)
    assert r.mapping.categories == (PERF, TARGET, FUNC, r.category)
    assert r.renamed == {}


def test_create_keeps_an_explicit_enabled_false_and_shadow() -> None:
    r = apply_edit(MAPPING, Create(CategoryFields("C0005", "Social", ("fb",), enabled=False, shadow=True)))
    assert (r.category.enabled, r.category.shadow) == (False, True)


@pytest.mark.parametrize(
    ("category", "message"),
    [
        (CategoryFields("C0002", "Other", ("x",)), "category.id: a category with id 'C0002' already exists"),
        (CategoryFields("C0009", "Targeting Cookies", ("x",)), "category.name: category 'C0004' already has the name"),
    ],
)
def test_create_with_a_taken_id_or_name_already_exists(category: CategoryFields, message: str) -> None:
    with pytest.raises(errors.AlreadyExists, match=message):
        apply_edit(MAPPING, Create(category))


@pytest.mark.parametrize(
    ("category", "field", "message"),
    [
        (CategoryFields("1abc", "N", ("x",)), "category.id", "must not start with a digit"),
        (CategoryFields("", "N", ("x",)), "category.id", "must not be empty"),
        (CategoryFields("a b", "N", ("x",)), "category.id", "must not contain whitespace"),
        (CategoryFields("C" * 35, "N", ("x",)), "category.id", "at most 34 characters"),
        (CategoryFields("C9", "  ", ("x",)), "category.name", "must not be empty"),
        (CategoryFields("C9", "N", ()), "category.destinations", "at least one destination"),
        (CategoryFields("C9", "N", ("a", "a")), "category.destinations[1]", "duplicate destination"),
        (CategoryFields("C9", "N", ("ga/eu",)), "category.destinations[0]", "must not contain '/'"),
        (CategoryFields("C9", "N", ("",)), "category.destinations[0]", "must not be empty"),
    ],
)
def test_create_with_bad_fields_is_invalid_argument_naming_the_field(
    category: CategoryFields, field: str, message: str
) -> None:
    with pytest.raises(errors.InvalidArgument) as e:
        apply_edit(MAPPING, Create(category))
    assert e.value.field == field
    assert str(e.value).startswith(f"{field}: ")
    assert message in str(e.value)


def test_every_problem_is_listed_in_one_error() -> None:
    with pytest.raises(errors.InvalidArgument) as e:
        apply_edit(MAPPING, Create(CategoryFields("1x", "", ())))
    text = str(e.value)
    assert text.startswith("category.id: must not start with a digit")
    assert "category.name: must not be empty" in text
    assert "category.destinations: must list at least one destination" in text


def test_create_ignores_no_etag_and_changes_nothing_else() -> None:
    r = apply_edit(MAPPING, Create(CategoryFields("C0005", "Social", ("fb",))))
    assert [c for c in r.mapping.categories if c.id != "C0005"] == list(MAPPING.categories)


# -- update ---------------------------------------------------------------------------------


def test_update_with_an_empty_mask_sets_all_four_fields_but_not_enabled() -> None:
    disabled = ConsentMapping(categories=(PERF, Category("C0004", "Targeting Cookies", ("braze",), enabled=False)))
    new = CategoryFields("C0044", "Ads", ("google-ads",), enabled=True, shadow=True)
    r = apply_edit(disabled, Update("C0004", new))
    assert r.category == Category("C0044", "Ads", ("google-ads",), enabled=False, shadow=True)
    assert r.renamed == {"C0004": "C0044"}
    assert r.mapping.categories[1] == r.category  # stays where it was


def test_update_mask_limits_the_fields_changed() -> None:
    r = apply_edit(MAPPING, Update("C0004", CategoryFields("ignored", "Ads", ()), paths=("name",)))
    assert r.category == Category("C0004", "Ads", TARGET.destinations)
    assert r.renamed == {}


def test_update_to_the_same_values_changes_nothing() -> None:
    r = apply_edit(MAPPING, Update("C0004", fields(TARGET)))
    assert not r.changed
    assert r.mapping == MAPPING


def test_renamed_table_makes_diff_an_update_not_delete_and_create() -> None:
    r = apply_edit(MAPPING, Update("C0004", fields(TARGET, id="C0040"), paths=("id",)))
    kinds = [c.kind for c in diff(MAPPING, r.mapping, renamed=r.renamed)]
    assert kinds == [ChangeKind.CATEGORY_UPDATED]


def test_update_with_an_unknown_mask_path_names_update_mask() -> None:
    with pytest.raises(errors.InvalidArgument, match=r"^update_mask: unknown path 'enabled'") as e:
        apply_edit(MAPPING, Update("C0004", fields(TARGET), paths=("name", "enabled")))
    assert e.value.field == "update_mask"


def test_update_of_a_missing_category_is_not_found_naming_the_id() -> None:
    with pytest.raises(errors.NotFound, match="'C0099'"):
        apply_edit(MAPPING, Update("C0099", fields(TARGET)))


def test_update_with_an_empty_category_id_is_invalid_argument() -> None:
    with pytest.raises(errors.InvalidArgument, match=r"^category_id: must not be empty"):
        apply_edit(MAPPING, Update("", fields(TARGET)))


@pytest.mark.parametrize(("path", "value"), [("id", "C0002"), ("name", "Performance Cookies")])
def test_update_to_another_categorys_id_or_name_already_exists(path: str, value: str) -> None:
    with pytest.raises(errors.AlreadyExists, match=f"category.{path}:"):
        apply_edit(MAPPING, Update("C0004", fields(TARGET, **{path: value}), paths=(path,)))


def test_update_with_bad_destinations_names_the_item() -> None:
    with pytest.raises(errors.InvalidArgument, match=r"^category.destinations\[1\]: must not contain whitespace"):
        apply_edit(MAPPING, Update("C0004", fields(TARGET, destinations=("a", "b c")), paths=("destinations",)))


def test_update_with_a_stale_etag_is_aborted_and_a_current_one_passes() -> None:
    stale = category_etag(Category("C0004", "Old Name", TARGET.destinations))
    with pytest.raises(errors.Aborted, match=r"^etag: "):
        apply_edit(MAPPING, Update("C0004", fields(TARGET, name="X"), paths=("name",), etag=stale))
    r = apply_edit(MAPPING, Update("C0004", fields(TARGET, name="X"), paths=("name",), etag=category_etag(TARGET)))
    assert r.category.name == "X"


def test_stale_etag_wins_over_bad_fields() -> None:
    with pytest.raises(errors.Aborted):
        apply_edit(MAPPING, Update("C0004", CategoryFields(), etag="stale"))


# -- disable / enable -----------------------------------------------------------------------


def test_disable_needs_the_exact_name() -> None:
    for wrong in ("", "targeting cookies", "Targeting Cookies ", "Performance Cookies"):
        with pytest.raises(errors.FailedPrecondition, match=r"^confirm_name: "):
            apply_edit(MAPPING, Disable("C0004", wrong))
    r = apply_edit(MAPPING, Disable("C0004", "Targeting Cookies"))
    assert r.category == Category("C0004", "Targeting Cookies", TARGET.destinations, enabled=False)
    assert [c.kind for c in diff(MAPPING, r.mapping)] == [ChangeKind.CATEGORY_DISABLED]


def test_enable_turns_a_disabled_category_back_on_without_confirmation() -> None:
    off = apply_edit(MAPPING, Disable("C0004", "Targeting Cookies")).mapping
    r = apply_edit(off, Enable("C0004"))
    assert r.mapping == MAPPING
    assert [c.kind for c in diff(off, r.mapping)] == [ChangeKind.CATEGORY_ENABLED]


def test_enabling_an_enabled_category_changes_nothing() -> None:
    r = apply_edit(MAPPING, Enable("C0004"))
    assert not r.changed


@pytest.mark.parametrize("edit", [Disable("C0099", "x"), Enable("C0099"), Delete("C0099", "x")])
def test_disable_enable_delete_of_a_missing_category_is_not_found(edit: Disable | Enable | Delete) -> None:
    with pytest.raises(errors.NotFound, match=r"^category_id: no category 'C0099'"):
        apply_edit(MAPPING, edit)


@pytest.mark.parametrize(
    "edit",
    [Disable("C0004", "Targeting Cookies", etag="0" * 16), Enable("C0004", etag="x"),
     Delete("C0004", "Targeting Cookies", etag="x")],
)
def test_stale_etags_abort_every_write(edit: Disable | Enable | Delete) -> None:
    with pytest.raises(errors.Aborted):
        apply_edit(MAPPING, edit)


def test_stale_etag_is_checked_before_the_confirmation() -> None:
    with pytest.raises(errors.Aborted):
        apply_edit(MAPPING, Delete("C0004", "wrong", etag="x"))


# -- delete ---------------------------------------------------------------------------------


def test_delete_removes_the_category_and_returns_it() -> None:
    r = apply_edit(MAPPING, Delete("C0004", "Targeting Cookies", etag=category_etag(TARGET)))
    assert r.mapping.categories == (PERF, FUNC)
    assert r.category == TARGET
    kinds = [c.kind for c in diff(MAPPING, r.mapping)]
    assert kinds == [ChangeKind.CATEGORY_DELETED, ChangeKind.MAPPING_REMOVED, ChangeKind.MAPPING_REMOVED]


def test_delete_needs_the_exact_name() -> None:
    with pytest.raises(errors.FailedPrecondition, match="must equal its name 'Targeting Cookies' exactly"):
        apply_edit(MAPPING, Delete("C0004", "Targeting"))


def test_the_last_category_can_be_deleted() -> None:
    one = ConsentMapping(categories=(PERF,))
    assert apply_edit(one, Delete("C0002", "Performance Cookies")).mapping.categories == ()


# -- properties -----------------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=40)
_fields = st.builds(
    CategoryFields,
    id=st.one_of(_text, st.sampled_from(["C0002", "C0004", "C0009", "Cx"])),
    name=st.one_of(_text, st.sampled_from(["Performance Cookies", "Targeting Cookies", "New"])),
    destinations=st.lists(st.one_of(_text, st.sampled_from(["amplitude", "braze", "x"])), max_size=5).map(tuple),
    enabled=st.one_of(st.none(), st.booleans()),
    shadow=st.booleans(),
)
_ids = st.one_of(st.sampled_from(["C0002", "C0004", "C0003", "C0099", ""]), _text)
_names = st.one_of(st.sampled_from(["Performance Cookies", "Targeting Cookies", "Functional Cookies"]), _text)
_etags = st.one_of(st.just(""), st.sampled_from([category_etag(c) for c in MAPPING.categories]), _text)
_edits = st.one_of(
    st.builds(Create, _fields),
    st.builds(
        Update, _ids, _fields,
        st.lists(st.sampled_from(["id", "name", "destinations", "shadow", "enabled", ""]), max_size=3).map(tuple),
        _etags,
    ),
    st.builds(Disable, _ids, _names, _etags),
    st.builds(Enable, _ids, _etags),
    st.builds(Delete, _ids, _names, _etags),
)


@settings(max_examples=400, deadline=None)
@given(_edits)
def test_any_edit_gives_a_valid_mapping_or_a_documented_error(edit: object) -> None:
    try:
        r = apply_edit(MAPPING, edit)  # type: ignore[arg-type]
    except (errors.InvalidArgument, errors.NotFound, errors.AlreadyExists, errors.Aborted,
            errors.FailedPrecondition) as e:
        assert str(e)
        return
    assert mapping_problems(r.mapping) == []
    assert r.changed == (r.mapping != MAPPING)
    diff(MAPPING, r.mapping, renamed=r.renamed)  # the renamed table is always acceptable to diff
