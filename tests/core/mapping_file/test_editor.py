"""Editing the mapping file: comment-preserving edits, quoting, and any sequence of edits re-reading as intended."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import replace

import pytest
from consent_core.errors import FailedPrecondition, MappingError
from consent_core.mapping_file import MappingDocument, parse_mapping
from consent_core.model import (
    Category,
    ConsentMapping,
    DestinationSettings,
    Resolution,
    Settings,
    UnknownDestinations,
    invisible_problem,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .samples import COMMENTED, COMPACT_CRLF, DASH_ALONE, FLOW_STYLE, QUOTING, doc


def comment_tags(text: str) -> list[str]:
    return [line[line.index("# [") + 3 : line.index("]")] for line in text.splitlines() if "# [" in line]


def edit(text: str, change: Callable[[ConsentMapping], ConsentMapping], renamed: dict[str, str] | None = None) -> str:
    """One admin-style write: parse, change, render; the result must re-read as exactly the change."""
    document = MappingDocument.parse(text, "m.yaml")
    intended = change(document.mapping)
    out = document.with_mapping(intended, renamed)
    assert parse_mapping(out, "m.yaml") == intended
    return out


def update(category_id: str, **changes: object) -> Callable[[ConsentMapping], ConsentMapping]:
    def change(m: ConsentMapping) -> ConsentMapping:
        assert m.category(category_id) is not None, category_id
        return m.with_categories(replace(c, **changes) if c.id == category_id else c for c in m.categories)  # type: ignore[arg-type]

    return change


def create(category: Category) -> Callable[[ConsentMapping], ConsentMapping]:
    return lambda m: m.with_categories([*m.categories, category])


def delete(category_id: str) -> Callable[[ConsentMapping], ConsentMapping]:
    return lambda m: m.with_categories(c for c in m.categories if c.id != category_id)


def set_destination(dest: str, settings: DestinationSettings | None) -> Callable[[ConsentMapping], ConsentMapping]:
    def change(m: ConsentMapping) -> ConsentMapping:
        out = {d: s for d, s in m.destinations.items() if d != dest}
        if settings is not None:
            out[dest] = settings
        return replace(m, destinations=out)

    return change


def becomes(intended: ConsentMapping) -> Callable[[ConsentMapping], ConsentMapping]:
    return lambda _current: intended


def diff(before: str, after: str) -> tuple[list[str], list[str]]:
    """(lines only in before, lines only in after), as multisets in order."""
    import difflib

    removed, added = [], []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, before.splitlines(), after.splitlines()).get_opcodes():
        if tag != "equal":
            removed.extend(before.splitlines()[i1:i2])
            added.extend(after.splitlines()[j1:j2])
    return removed, added


def test_an_unchanged_mapping_gives_back_the_same_text() -> None:
    document = MappingDocument.parse(COMMENTED, "m.yaml")
    assert document.with_mapping(document.mapping) == COMMENTED
    assert document.text == COMMENTED and document.source == "m.yaml"


@pytest.mark.parametrize(
    ("change", "renamed", "removed", "added"),
    [
        (
            update("C0001", name="Necessary"),
            None,
            ['    name: "Strictly Necessary"  # [a3]'],
            ['    name: "Necessary"  # [a3]'],
        ),
        (
            update("C0002", name="It's performance"),
            None,
            ["    name: 'Performance Cookies'"],
            ["    name: 'It''s performance'"],
        ),
        (update("C0002", enabled=False), None, ["    enabled: true  # [b3]"], ["    enabled: false  # [b3]"]),
        (update("C0001", enabled=False), None, [], ["    enabled: false"]),
        (update("C0004", shadow=True), None, [], ["    shadow: true"]),
        (
            update("C0003", shadow=True, name="Functional"),
            None,
            ["  - {id: C0003, name: Functional Cookies, destinations: [intercom, zendesk]}  # [x2]"],
            ["  - {id: C0003, name: Functional, shadow: true, destinations: [intercom, zendesk]}  # [x2]"],
        ),
        (
            update("C0001", destinations=("snowflake", "redshift", "bigquery")),
            None,
            ["    destinations: [snowflake, bigquery]  # [a4]"],
            ["    destinations: [snowflake, redshift, bigquery]  # [a4]"],
        ),
        (
            update("C0002", destinations=("amplitude", "fullstory", "heap", "hotjar")),
            None,
            ["      - mixpanel"],
            ["      - fullstory", "      - hotjar"],
        ),
        (
            update("C0002", destinations=("heap", "amplitude")),
            None,
            ["      - mixpanel", "      - heap  # [b6]"],
            ["      - heap"],
        ),
        (
            update("C0004", destinations=("tiktok-ads", "google-ads", "braze")),
            None,
            [],
            ["    - tiktok-ads"],
        ),
        (
            update("C0004", id="C0040"),
            {"C0004": "C0040"},
            ["  - id: C0004"],
            ["  - id: C0040"],
        ),
        (update("C0004", id="C0040"), None, ["  - id: C0004"], ["  - id: C0040"]),  # by position
        (
            create(Category("C0005", "Social Media Cookies", ("facebook-pixel", "twitter-ads"))),
            None,
            [],
            [
                "",
                "  - id: C0005",
                "    name: Social Media Cookies",
                "    destinations:",
                "    - facebook-pixel",
                "    - twitter-ads",
            ],
        ),
        (
            create(Category("C0006", "Sale: of data #2", ("x",), enabled=False, shadow=True)),
            None,
            [],
            [
                "",
                "  - id: C0006",
                "    name: 'Sale: of data #2'",
                "    enabled: false",
                "    shadow: true",
                "    destinations:",
                "    - x",
            ],
        ),
        (
            delete("C0003"),
            None,
            [
                "",
                "  # [x1] Functional, written in flow style",
                "  - {id: C0003, name: Functional Cookies, destinations: [intercom, zendesk]}  # [x2]",
            ],
            [],
        ),
        (
            lambda m: replace(m, settings=Settings(UnknownDestinations.DENY)),
            None,
            ["  unknown_destinations: allow  # [s2]"],
            ["  unknown_destinations: deny  # [s2]"],
        ),
        (
            set_destination("braze", DestinationSettings(enforce=False, resolution=Resolution.ANY)),
            None,
            [],
            ["    enforce: false"],
        ),
        (
            set_destination("aws-s3", DestinationSettings(enforce=False, resolution=Resolution.ANY)),
            None,
            ["  aws-s3: {enforce: false}  # [e2]"],
            ["  aws-s3: {enforce: false, resolution: any}  # [e2]"],
        ),
        (
            set_destination("aws-s3", None),
            None,
            ["  # [e1] exempt: the raw archive", "  aws-s3: {enforce: false}  # [e2]"],
            [],
        ),
        (
            set_destination("segment", DestinationSettings(enforce=False)),
            None,
            [],
            ["  segment: {enforce: false}"],
        ),
        (
            set_destination("null", DestinationSettings()),
            None,
            [],
            ["  'null': {}"],
        ),
    ],
)
def test_an_edit_changes_only_the_lines_it_must(
    change: Callable[[ConsentMapping], ConsentMapping],
    renamed: dict[str, str] | None,
    removed: list[str],
    added: list[str],
) -> None:
    got_removed, got_added = diff(COMMENTED, edit(COMMENTED, change, renamed))
    assert (sorted(got_removed), sorted(got_added)) == (sorted(removed), sorted(added))


def test_twenty_mixed_edits_keep_every_comment_of_the_untouched_parts() -> None:
    steps: list[tuple[Callable[[ConsentMapping], ConsentMapping], dict[str, str] | None]] = [
        (create(Category("C0005", "Social Media Cookies", ("facebook-pixel",))), None),
        (update("C0002", enabled=False), None),
        (update("C0001", destinations=("snowflake", "bigquery", "redshift")), None),
        (update("C0004", name="Targeting & Advertising"), None),
        (update("C0003", shadow=True), None),
        (update("C0005", id="C0105"), {"C0005": "C0105"}),
        (update("C0002", enabled=True), None),
        (update("C0002", destinations=("amplitude", "heap", "fullstory")), None),
        (create(Category("C0006", "Sale of Personal Data", ("google-ads", "tiktok-ads"), enabled=False)), None),
        (delete("C0105"), None),
        (update("C0004", destinations=("google-ads", "braze", "tiktok-ads")), None),
        (update("C0003", id="F0003"), None),  # a rename matched by position
        (update("F0003", shadow=False), None),
        (update("C0001", name="Necessary: the warehouse"), None),
        (lambda m: replace(m, settings=Settings(UnknownDestinations.DENY)), None),
        (set_destination("segment", DestinationSettings(enforce=False)), None),
        (set_destination("braze", DestinationSettings(resolution=Resolution.ALL)), None),
        (delete("C0006"), None),
        (create(Category("C0007", "Dry Run", ("hotjar", "fullstory"), shadow=True)), None),
        (update("C0001", enabled=False), None),
        (set_destination("aws-s3", None), None),
    ]
    text = COMMENTED
    for change, renamed in steps:
        text = edit(text, change, renamed)

    gone = {"e1", "e2"}  # the comments of aws-s3's entry, deleted in the last step
    assert comment_tags(text) == [t for t in comment_tags(COMMENTED) if t not in gone]
    mapping = parse_mapping(text, "m.yaml")
    assert [(c.id, c.name, c.enabled, c.shadow) for c in mapping.categories] == [
        ("C0001", "Necessary: the warehouse", False, False),
        ("C0002", "Performance Cookies", True, False),
        ("F0003", "Functional Cookies", True, False),
        ("C0004", "Targeting & Advertising", True, False),
        ("C0007", "Dry Run", True, True),
    ]
    assert mapping.categories[1].destinations == ("amplitude", "heap", "fullstory")
    assert dict(mapping.destinations) == {
        "braze": DestinationSettings(),
        "segment": DestinationSettings(enforce=False),
    }
    assert mapping.settings.unknown_destinations is UnknownDestinations.DENY
    # Untouched lines are byte-for-byte the same, formatting included.
    for line in [
        "version: 1  # [v] always 1",
        "    # [b2] inside the category",
        "    name: 'Performance Cookies'",
        "    enabled: true  # [b3]",
        "      - amplitude  # [b5]",
        "    - google-ads  # [t2]",
        "    resolution: all  # [e3]",
    ]:
        assert line in text.splitlines()


def test_a_category_created_in_a_flow_style_file_follows_that_style() -> None:
    text = "version: 1\ncategories:\n- {id: C1, name: One, destinations: [a]}\n"
    out = edit(text, create(Category("C2", "Two", ("b", "c"))))
    assert out == text + "- {id: C2, name: Two, destinations: [b, c]}\n"


def test_the_first_categories_of_an_empty_list_are_written_in_block_style() -> None:
    for text in ("version: 1\ncategories: []  # none yet\n", "version: 1\ncategories:  # none yet\n"):
        out = edit(text, create(Category("C0001", "Strictly Necessary", ("snowflake",))))
        assert out == (
            "version: 1\ncategories:  # none yet\n"
            "  - id: C0001\n    name: Strictly Necessary\n    destinations: [snowflake]\n"
        )


def test_deleting_every_category_leaves_an_empty_list() -> None:
    text = "version: 1\ncategories:\n  - id: C1\n    name: One\n    destinations: [a]\n# end\n"
    assert edit(text, lambda m: m.with_categories(())) == "version: 1\ncategories: []\n# end\n"


def test_a_missing_settings_block_is_added_after_the_version() -> None:
    text = "version: 1\ncategories: []\n"
    out = edit(text, lambda m: replace(m, settings=Settings(UnknownDestinations.DENY)))
    assert out == "version: 1\nsettings:\n  unknown_destinations: deny\ncategories: []\n"


def test_a_missing_destinations_block_is_added_at_the_end() -> None:
    text = "version: 1\ncategories: []\n# trailing\n"
    out = edit(text, set_destination("aws-s3", DestinationSettings(enforce=False)))
    assert out == "version: 1\ncategories: []\ndestinations:\n  aws-s3: {enforce: false}\n# trailing\n"


def test_windows_line_endings_are_kept() -> None:
    text = "version: 1\r\ncategories:\r\n  - id: C1\r\n    name: One\r\n    destinations: [a]\r\n"
    out = edit(text, create(Category("C2", "Two", ("b",))))
    assert out == text + "  - id: C2\r\n    name: Two\r\n    destinations: [b]\r\n"


def test_a_file_without_a_final_newline_gets_whole_lines_appended() -> None:
    text = "version: 1\ncategories:\n  - id: C1\n    name: One\n    destinations: [a]"
    out = edit(text, create(Category("C2", "Two", ("b",))))
    assert out == text + "\n  - id: C2\n    name: Two\n    destinations: [b]\n"


def test_reordering_categories_moves_them_with_their_comments() -> None:
    out = edit(COMMENTED, lambda m: m.with_categories([m.categories[3], *m.categories[:3]]))
    assert comment_tags(out)[:7] == ["h1", "h2", "v", "s1", "s2", "c0", "t1"]
    assert sorted(comment_tags(out)) == sorted(comment_tags(COMMENTED))


def test_names_and_ids_that_yaml_would_misread_are_quoted() -> None:
    tricky = ["true", "123", "null", "a: b", "#x", "- x", "[x]", " padded ", 'say "hi"', "it's", "{x}", "~"]
    text = "version: 1\ncategories: []\n"
    for i, name in enumerate(tricky):
        text = edit(text, create(Category(f"C{i}", name, (f"d{i}",))))
    assert [c.name for c in parse_mapping(text, "m.yaml").categories] == tricky


# Valid text: no control, format or separator character (`invisible_problem`), nothing YAML cannot hold.
_TEXT = st.text(min_size=1, max_size=40).filter(lambda s: invisible_problem(s) is None)
_VALID_NAME = _TEXT.filter(lambda s: s.strip() != "")
_VALID_ID = _TEXT.filter(lambda s: len(s) < 34 and not s[0].isdigit() and not any(ch.isspace() for ch in s))
_VALID_DEST = _TEXT.filter(lambda s: len(s) <= 20 and "/" not in s and not any(ch.isspace() for ch in s))


@settings(max_examples=30, deadline=None)
@given(index=st.integers(0, 2), name=_VALID_NAME, category_id=_VALID_ID, dest=_VALID_DEST)
def test_any_text_survives_being_written_in_any_quoting_style(
    index: int, name: str, category_id: str, dest: str
) -> None:
    mapping = parse_mapping(QUOTING, "m.yaml")
    old = mapping.categories[index]
    taken = {unicodedata.normalize("NFC", n) for n in (name, name + "x")}
    if mapping.category(category_id) is not None or any(
        unicodedata.normalize("NFC", c.name) in taken for c in mapping.categories
    ):
        return
    changed = replace(old, id=category_id, name=name, destinations=(dest, *old.destinations))
    out = edit(QUOTING, becomes(mapping.with_categories(changed if c is old else c for c in mapping.categories)))
    out = edit(out, create(replace(changed, id=category_id + "x", name=name + "x")))
    assert parse_mapping(out, "m.yaml").categories[-1].name == name + "x"


def test_a_dash_on_its_own_line_is_followed_with_keys_aligned() -> None:
    text = "version: 1\ncategories:\n  -\n      id: C1\n      name: One\n      destinations: [a]\n"
    out = edit(text, create(Category("C2", "Two", ("b",))))
    assert out == text + "  -   id: C2\n      name: Two\n      destinations: [b]\n"


def test_a_file_using_anchors_is_not_edited() -> None:
    text = doc(
        "  - id: C1\n    name: One\n    destinations: &wh [a]\n  - id: C2\n    name: Two\n    destinations: *wh\n"
    )
    document = MappingDocument.parse(text, "m.yaml")
    assert document.with_mapping(document.mapping) == text
    with pytest.raises(FailedPrecondition, match="anchors"):
        document.with_mapping(update("C1", destinations=("b",))(document.mapping))


def test_with_mapping_refuses_an_invalid_mapping_and_unknown_renames() -> None:
    document = MappingDocument.parse(COMMENTED, "m.yaml")
    with pytest.raises(MappingError, match=r"categories\[1\]\.id: duplicate id 'C0001'"):
        document.with_mapping(update("C0002", id="C0001")(document.mapping))
    with pytest.raises(ValueError, match="no category 'C9'"):
        document.with_mapping(document.mapping, {"C9": "C10"})


def test_mapping_document_parse_reports_problems_like_parse_mapping() -> None:
    with pytest.raises(MappingError) as info:
        MappingDocument.parse("version: 1\ncategories: 3\n", "m.yaml")
    assert str(info.value) == "m.yaml:2:13: categories: must be a list of categories, not an integer"


_IDS = st.sampled_from(["C0001", "C0002", "C0003", "C0004", "C0005", "X1", "X2", "X3"])
_NAMES = st.sampled_from(
    ["Ads", "Analytics", "It's", "a: b", "#tag", "true", "  padded  ", "ünïcödé", "multi  space", "x,y", "[z]", "Q"]
)
_DESTS = st.lists(
    st.sampled_from(["amplitude", "braze", "123", "true", "null", "a:b", "h#i", "x,y", "ünï", "'q'"]),
    min_size=1,
    max_size=4,
    unique=True,
)
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("create"), _IDS, _NAMES, _DESTS),
        st.tuples(st.just("delete"), st.integers(0, 9)),
        st.tuples(st.just("enabled"), st.integers(0, 9), st.booleans()),
        st.tuples(st.just("shadow"), st.integers(0, 9), st.booleans()),
        st.tuples(st.just("id"), st.integers(0, 9), _IDS),
        st.tuples(st.just("name"), st.integers(0, 9), _NAMES),
        st.tuples(st.just("destinations"), st.integers(0, 9), _DESTS),
        st.tuples(st.just("move"), st.integers(0, 9), st.integers(0, 9)),
        st.tuples(st.just("dest"), st.sampled_from(["aws-s3", "braze", "segment", "true"]), st.integers(0, 4)),
        st.tuples(st.just("unknown"), st.booleans()),
    ),
    min_size=1,
    max_size=8,
)


def _apply_op(m: ConsentMapping, op: tuple[object, ...]) -> tuple[ConsentMapping, dict[str, str] | None]:
    cats = list(m.categories)
    kind = op[0]
    if kind == "create":
        _, cid, name, dests = op
        if m.category(str(cid)) is None and all(c.name != name for c in cats):
            cats.append(Category(str(cid), str(name), tuple(dests)))  # type: ignore[arg-type]
        return m.with_categories(cats), None
    if kind == "dest":
        _, dest, k = op
        choice = [None, DestinationSettings(), DestinationSettings(enforce=False)]
        choice += [DestinationSettings(resolution=Resolution.ANY), DestinationSettings(False, Resolution.ANY)]
        return set_destination(str(dest), choice[int(k)])(m), None  # type: ignore[call-overload]
    if kind == "unknown":
        return replace(m, settings=Settings(UnknownDestinations.DENY if op[1] else UnknownDestinations.ALLOW)), None
    if not cats:
        return m, None
    i = int(op[1]) % len(cats)  # type: ignore[call-overload]
    c = cats[i]
    renamed = None
    if kind == "delete":
        del cats[i]
    elif kind == "enabled":
        cats[i] = replace(c, enabled=bool(op[2]))
    elif kind == "shadow":
        cats[i] = replace(c, shadow=bool(op[2]))
    elif kind == "id" and m.category(str(op[2])) is None:
        cats[i] = replace(c, id=str(op[2]))
        renamed = {c.id: str(op[2])}
    elif kind == "name" and all(x.name != op[2] for x in cats):
        cats[i] = replace(c, name=str(op[2]))
    elif kind == "destinations":
        cats[i] = replace(c, destinations=tuple(op[2]))  # type: ignore[arg-type]
    elif kind == "move":
        cats.insert(int(op[2]) % len(cats), cats.pop(i))  # type: ignore[call-overload]
    return m.with_categories(cats), renamed


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=_OPS, start=st.sampled_from([COMMENTED, "version: 1\ncategories: []\n", FLOW_STYLE, COMPACT_CRLF, DASH_ALONE])
)
def test_any_sequence_of_edits_re_reads_as_intended_and_keeps_the_file_comments(
    ops: list[tuple[object, ...]], start: str
) -> None:
    text = start
    for op in ops:
        mapping = MappingDocument.parse(text, "m.yaml").mapping
        intended, renamed = _apply_op(mapping, op)
        text = edit(text, becomes(intended), renamed)
    for tag in ("h1", "h2", "v", "s1", "s2", "c0", "d0", "z"):
        assert tag in comment_tags(text) or tag not in comment_tags(start)
