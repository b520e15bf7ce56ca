"""The mapping file: shapes and types with exact positions, loading, comment-preserving edits, atomic saves."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import textwrap
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from consent_core import mapping_file
from consent_core.errors import FailedPrecondition, MappingError
from consent_core.event import decide_one
from consent_core.index import compile
from consent_core.limits import Limits
from consent_core.mapping_file import LoadedMapping, MappingDocument, atomic_write, load_mapping, parse_mapping
from consent_core.model import (
    Category,
    ConsentMapping,
    DestinationSettings,
    Resolution,
    Settings,
    UnknownDestinations,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def problems(text: str, source: str = "m.yaml") -> list[str]:
    """The formatted problem lines of an invalid document (fails the test if it is valid)."""
    with pytest.raises(MappingError) as info:
        parse_mapping(textwrap.dedent(text), source)
    assert info.value.source == source
    return str(info.value).splitlines()


def doc(body: str) -> str:
    """A valid minimal document around `body` (a category list), for rule tests."""
    return "version: 1\ncategories:\n" + body


# -- shapes, types and rules, each with its exact position -------------------------------------


def test_the_contract_example_is_reported_as_in_the_contract() -> None:
    text = """\
        version: 1
        categories:
          - id: C0002
            name: Performance Cookies
            destinations: [amplitude]
          # the next id is wrong
          - id: 4C
            name: Targeting Cookies
            destinations: [google-ads]
        """
    assert problems(text, "mappings.yaml") == ["mappings.yaml:7:9: categories[1].id: must not start with a digit"]


RULE_CASES: list[tuple[str, list[str]]] = [
    # top level
    ("", ["m.yaml: the file is empty: expected a mapping with `version: 1` and `categories:`"]),
    ("# only a comment\n\n", ["m.yaml: the file is empty: expected a mapping with `version: 1` and `categories:`"]),
    ("- a\n- b\n", ["m.yaml:1:1: the document must be a mapping with version and categories, not a list"]),
    ("just text\n", ["m.yaml:1:1: the document must be a mapping with version and categories, not a string"]),
    ("categories: []\n", ["m.yaml:1:1: missing required key 'version'"]),
    ("version: 1\n", ["m.yaml:1:1: missing required key 'categories'"]),
    ("version: 2\ncategories: []\n", ["m.yaml:1:10: version: unsupported version 2: must be 1"]),
    ('version: "1"\ncategories: []\n', ["m.yaml:1:10: version: must be the integer 1, not a string"]),
    ("version: 1.0\ncategories: []\n", ["m.yaml:1:10: version: must be the integer 1, not a number"]),
    (
        "version: 1\ncategories: []\nowner: privacy\n",
        ["m.yaml:3:1: owner: unknown key 'owner' (expected one of: version, settings, categories, destinations)"],
    ),
    (
        "version: 1\ncategories: {C0001: x}\n",
        ["m.yaml:2:13: categories: must be a list of categories, not a mapping"],
    ),
    (
        "version: 1\ncategories: []\nversion: 1\n",
        ["m.yaml:3:1: version: duplicate key 'version' (first at line 1)"],
    ),
    # settings
    (
        "version: 1\nsettings:\n  unknown_destinations: block\ncategories: []\n",
        ["m.yaml:3:25: settings.unknown_destinations: must be one of: allow, deny (got 'block')"],
    ),
    (
        "version: 1\nsettings:\n  unknown: allow\ncategories: []\n",
        ["m.yaml:3:3: settings.unknown: unknown key 'unknown' (expected one of: unknown_destinations)"],
    ),
    (
        "version: 1\nsettings: [deny]\ncategories: []\n",
        ["m.yaml:2:11: settings: must be a mapping, not a list"],
    ),
    # categories
    (
        doc("  - C0001\n"),
        ["m.yaml:3:5: categories[0]: must be a mapping with id, name and destinations, not a string"],
    ),
    (
        doc("  - name: Ads\n    destinations: [a]\n"),
        ["m.yaml:3:5: categories[0]: missing required key 'id'"],
    ),
    (
        doc("  - id: C1\n    destinations: [a]\n"),
        ["m.yaml:3:5: categories[0]: missing required key 'name'"],
    ),
    (
        doc("  - id: C1\n    name: Ads\n"),
        ["m.yaml:3:5: categories[0]: missing required key 'destinations'"],
    ),
    (
        doc("  - id: 123\n    name: Ads\n    destinations: [a]\n"),
        ['m.yaml:3:9: categories[0].id: must be a string (quote it: "123")'],
    ),
    (
        doc("  - id: C1\n    name: [Ads]\n    destinations: [a]\n"),
        ["m.yaml:4:11: categories[0].name: must be a string, not a list"],
    ),
    (
        doc("  - id: C1\n    name:\n    destinations: [a]\n"),
        ["m.yaml:4:5: categories[0].name: must be a string, not empty (null)"],
    ),
    (
        doc("  - id: C1\n    name: Ads\n    enabled: yes\n    destinations: [a]\n"),
        ["m.yaml:5:14: categories[0].enabled: must be true or false ('yes' is a string in YAML 1.2)"],
    ),
    (
        doc("  - id: C1\n    name: Ads\n    shadow: 'true'\n    destinations: [a]\n"),
        ["m.yaml:5:13: categories[0].shadow: must be true or false, not a string ('true')"],
    ),
    (
        doc("  - id: C1\n    name: Ads\n    enabled: 1\n    destinations: [a]\n"),
        ["m.yaml:5:14: categories[0].enabled: must be true or false, not an integer ('1')"],
    ),
    (
        doc("  - id: C1\n    name: Ads\n    destinations: amplitude\n"),
        ["m.yaml:5:19: categories[0].destinations: must be a list of destination ids, not a string"],
    ),
    (
        doc("  - id: C1\n    name: Ads\n    destinations: [a, 7, b]\n"),
        ['m.yaml:5:23: categories[0].destinations[1]: must be a string (quote it: "7")'],
    ),
    (
        doc("  - id: C1\n    name: Ads\n    destinations: [a]\n    owner: ads-team\n"),
        [
            "m.yaml:6:5: categories[0].owner: unknown key 'owner' "
            "(expected one of: id, name, enabled, shadow, destinations)"
        ],
    ),
    (
        doc("  - id: C1\n    name: Ads\n    name: Ads 2\n    destinations: [a]\n"),
        ["m.yaml:5:5: categories[0].name: duplicate key 'name' (first at line 4)"],
    ),
    # semantic rules (consent_core.model), located by path
    (
        doc("  - id: C 1\n    name: Ads\n    destinations: [a]\n"),
        ["m.yaml:3:9: categories[0].id: must not contain whitespace"],
    ),
    (
        doc(f"  - id: {'C' * 35}\n    name: Ads\n    destinations: [a]\n"),
        ["m.yaml:3:9: categories[0].id: must be at most 34 characters (got 35)"],
    ),
    (
        doc("  - id: ''\n    name: Ads\n    destinations: [a]\n"),
        ["m.yaml:3:9: categories[0].id: must not be empty"],
    ),
    (
        doc("  - id: C1\n    name: ' '\n    destinations: [a]\n"),
        ["m.yaml:4:11: categories[0].name: must not be empty"],
    ),
    (
        doc("  - id: C1\n    name: Ads\n    destinations: []\n"),
        ["m.yaml:5:19: categories[0].destinations: must list at least one destination"],
    ),
    (
        doc("  - id: C1\n    name: Ads\n    destinations:\n"),
        ["m.yaml:5:5: categories[0].destinations: must list at least one destination"],
    ),
    (
        doc("  - id: C1\n    name: Ads\n    destinations:\n      - a\n      - ga4/eu\n"),
        ["m.yaml:7:9: categories[0].destinations[1]: must not contain '/' (instances are named only in requests)"],
    ),
    (
        doc("  - id: C1\n    name: Ads\n    destinations: [a, b, a]\n"),
        ["m.yaml:5:26: categories[0].destinations[2]: duplicate destination 'a'"],
    ),
    (
        doc("  - id: C1\n    name: Ads\n    destinations: [a]\n  - id: C1\n    name: Ads\n    destinations: [b]\n"),
        [
            "m.yaml:6:9: categories[1].id: duplicate id 'C1' (first at categories[0])",
            "m.yaml:7:11: categories[1].name: duplicate name 'Ads' (first at categories[0])",
        ],
    ),
    # destinations block
    (
        "version: 1\ncategories: []\ndestinations:\n  braze: {resolution: most}\n",
        ["m.yaml:4:23: destinations.braze.resolution: must be one of: all, any (got 'most')"],
    ),
    (
        "version: 1\ncategories: []\ndestinations:\n  aws-s3: {enforce: no}\n",
        ["m.yaml:4:21: destinations.aws-s3.enforce: must be true or false ('no' is a string in YAML 1.2)"],
    ),
    (
        "version: 1\ncategories: []\ndestinations:\n  aws-s3: {exempt: true}\n",
        ["m.yaml:4:12: destinations.aws-s3.exempt: unknown key 'exempt' (expected one of: enforce, resolution)"],
    ),
    (
        "version: 1\ncategories: []\ndestinations:\n  aws-s3: false\n",
        ["m.yaml:4:11: destinations.aws-s3: must be a mapping such as {enforce: false}, not a boolean"],
    ),
    (
        "version: 1\ncategories: []\ndestinations:\n  ga4/eu: {}\n",
        ["m.yaml:4:3: destinations.ga4/eu: must not contain '/' (instances are named only in requests)"],
    ),
    (
        "version: 1\ncategories: []\ndestinations:\n  123: {}\n",
        ["m.yaml:4:3: destinations.123: a destination id must be a string, not an integer"],
    ),
    (
        "version: 1\ncategories: []\ndestinations:\n  braze: {}\n  braze: {resolution: any}\n",
        ["m.yaml:5:3: destinations.braze: duplicate key 'braze' (first at line 4)"],
    ),
    (
        "version: 1\ncategories: []\ndestinations: [aws-s3]\n",
        ["m.yaml:3:15: destinations: must be a mapping of destination id to settings, not a list"],
    ),
]


@pytest.mark.parametrize(("text", "expected"), RULE_CASES)
def test_each_rule_is_reported_with_its_exact_position(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    text = """\
        version: 1
        settings: {unknown_destinations: maybe, colour: red}
        categories:
          - id: C0001
            name: Strictly Necessary
            destinations: [snowflake]
          - id: 1C
            name: Strictly Necessary
            enabled: "false"
            destinations: [a, a, "b c", 5]
          - id: 123
            name: Ads
            destinations: []
          - name: Dup
            id: C0001
            id: C0002
            destinations: amplitude
        destinations:
          braze: {resolution: some}
          aws/s3: {enforce: "no"}
        """
    assert problems(text) == [
        "m.yaml:2:34: settings.unknown_destinations: must be one of: allow, deny (got 'maybe')",
        "m.yaml:2:41: settings.colour: unknown key 'colour' (expected one of: unknown_destinations)",
        "m.yaml:7:9: categories[1].id: must not start with a digit",
        "m.yaml:8:11: categories[1].name: duplicate name 'Strictly Necessary' (first at categories[0])",
        "m.yaml:9:14: categories[1].enabled: must be true or false, not a string ('false')",
        "m.yaml:10:23: categories[1].destinations[1]: duplicate destination 'a'",
        "m.yaml:10:26: categories[1].destinations[2]: must not contain whitespace",
        'm.yaml:10:33: categories[1].destinations[3]: must be a string (quote it: "5")',
        'm.yaml:11:9: categories[2].id: must be a string (quote it: "123")',
        "m.yaml:13:19: categories[2].destinations: must list at least one destination",
        "m.yaml:15:9: categories[3].id: duplicate id 'C0001' (first at categories[0])",
        "m.yaml:16:5: categories[3].id: duplicate key 'id' (first at line 15)",
        "m.yaml:17:19: categories[3].destinations: must be a list of destination ids, not a string",
        "m.yaml:19:23: destinations.braze.resolution: must be one of: all, any (got 'some')",
        "m.yaml:20:3: destinations.aws/s3: must not contain '/' (instances are named only in requests)",
        "m.yaml:20:21: destinations.aws/s3.enforce: must be true or false, not a string ('no')",
    ]


def test_problems_carry_path_line_and_column_for_programs() -> None:
    with pytest.raises(MappingError) as info:
        parse_mapping(doc("  - id: 4C\n    name: Ads\n    destinations: [a]\n"), "mappings.yaml")
    (p,) = info.value.problems
    assert (p.path, p.line, p.column, p.message) == ("categories[0].id", 3, 9, "must not start with a digit")


SYNTAX_ERROR_CASES: list[tuple[str, str]] = [
    (
        "version: 1\ncategories: [\n",
        "m.yaml:3:1: invalid YAML: expected the node content, but found '<stream end>' (while parsing a flow node)",
    ),
    (
        "version: 1\ncategories:\n  - id: C1\n   name: x\n",
        "m.yaml:4:4: invalid YAML: expected <block end>, but found '<block mapping start>' "
        "(while parsing a block collection)",
    ),
    (
        "version: 1\n\tcategories: []\n",
        "m.yaml:2:1: invalid YAML: found character '\\t' that cannot start any token "
        "(while scanning for the next token)",
    ),
    (
        "version: 1\ncategories: []\n---\nversion: 1\n",
        "m.yaml:3:1: invalid YAML: but found another document (expected a single document in the stream)",
    ),
    (
        "version: 1\ncategories: []\n# a \x01 b\n",
        "m.yaml:3:5: invalid YAML: character U+0001 is not allowed",
    ),
    (
        "version: 1\ncategories: *nowhere\n",
        "m.yaml:2:13: invalid YAML: found undefined alias 'nowhere'",
    ),
]


@pytest.mark.parametrize(("text", "expected"), SYNTAX_ERROR_CASES)
def test_yaml_syntax_errors_are_located_where_the_parser_stopped(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_yaml_booleans_must_be_real_booleans_but_any_yaml_spelling_of_true_works() -> None:
    text = doc("  - id: C1\n    name: Ads\n    enabled: False\n    shadow: TRUE\n    destinations: [a]\n")
    c = parse_mapping(text, "m.yaml").categories[0]
    assert (c.enabled, c.shadow) == (False, True)


def test_empty_sections_written_with_everything_commented_out_are_empty() -> None:
    text = """\
        version: 1
        settings:
          # unknown_destinations: deny
        categories:
          # - id: C0001
        destinations:
          # aws-s3: {enforce: false}
        """
    assert parse_mapping(textwrap.dedent(text), "m.yaml") == ConsentMapping()


def test_a_destination_with_empty_settings_is_known_with_the_defaults() -> None:
    text = "version: 1\ncategories: []\ndestinations:\n  segment: {}\n  amplitude:\n"
    mapping = parse_mapping(text, "m.yaml")
    assert dict(mapping.destinations) == {"segment": DestinationSettings(), "amplitude": DestinationSettings()}


def test_quoted_ids_and_anchors_are_plain_strings() -> None:
    text = doc(
        """\
  - id: "C0001"
    name: 'It''s necessary'
    destinations: &wh [snowflake, bigquery]
  - id: C0002
    name: Copy
    destinations: *wh
"""
    )
    mapping = parse_mapping(text, "m.yaml")
    assert [c.id for c in mapping.categories] == ["C0001", "C0002"]
    assert mapping.categories[0].name == "It's necessary"
    assert mapping.categories[1].destinations == ("snowflake", "bigquery")


# -- the examples ------------------------------------------------------------------------------


def test_the_example_mapping_is_a_valid_onetrust_mapping() -> None:
    loaded = load_mapping(EXAMPLES / "mappings.yaml")
    mapping = loaded.mapping
    assert [(c.id, c.name) for c in mapping.categories] == [
        ("C0001", "Strictly Necessary"),
        ("C0002", "Performance Cookies"),
        ("C0003", "Functional Cookies"),
        ("C0004", "Targeting Cookies"),
        ("C0005", "Social Media Cookies"),
    ]
    assert all(c.enabled and not c.shadow for c in mapping.categories)
    assert mapping.category("C0001") is not None
    assert set(mapping.category("C0001").destinations) == {"snowflake", "bigquery"}  # type: ignore[union-attr]
    assert len(mapping.known_destinations()) >= 20
    assert mapping.settings.unknown_destinations is UnknownDestinations.ALLOW
    assert mapping.destinations["aws-s3"] == DestinationSettings(enforce=False)
    assert mapping.destinations["braze"] == DestinationSettings(resolution=Resolution.ANY)
    assert len(mapping.destinations) >= 3
    assert "#" in loaded.text  # it explains itself


def test_the_example_cases_hold_against_the_real_index() -> None:
    index = compile(load_mapping(EXAMPLES / "mappings.yaml").mapping)
    cases = YAML(typ="safe").load((EXAMPLES / "cases.yaml").read_text())["cases"]
    assert 8 <= len(cases) <= 12
    for case in cases:
        event = json.dumps(case["segment_event"]).encode() if "segment_event" in case else None
        outcome = decide_one(
            index, Limits(), case["destinations"], preferences=case.get("consent"), segment_event=event
        )
        got = {"allowed": list(outcome.allowed), "blocked": list(outcome.blocked)}
        assert got == case["expect"], case["name"]


def test_the_example_cases_cover_the_contract_rows() -> None:
    cases = YAML(typ="safe").load((EXAMPLES / "cases.yaml").read_text())["cases"]
    asked = {d for c in cases for d in c["destinations"]}
    assert any("consent" not in c and "segment_event" not in c for c in cases)  # no consent object
    assert {"aws-s3", "braze", "google-analytics-4/eu"} <= asked
    assert any(d not in load_mapping(EXAMPLES / "mappings.yaml").mapping.known_destinations() for d in asked)
    events = [c["segment_event"] for c in cases if "segment_event" in c]
    assert {"All": False, "amplitude": True} in [e.get("integrations") for e in events]


def test_the_broken_example_reports_every_mistake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(EXAMPLES.parent)
    with pytest.raises(MappingError) as info:
        load_mapping("examples/broken-mappings.yaml")
    assert str(info.value).splitlines() == [
        "examples/broken-mappings.yaml:6:25: settings.unknown_destinations: must be one of: allow, deny (got 'block')",
        'examples/broken-mappings.yaml:11:9: categories[1].id: must be a string (quote it: "0002")',
        "examples/broken-mappings.yaml:13:31: categories[1].destinations[1]: duplicate destination 'amplitude'",
        "examples/broken-mappings.yaml:14:9: categories[2].id: must not start with a digit",
        "examples/broken-mappings.yaml:15:11: categories[2].name: duplicate name 'Strictly Necessary' "
        "(first at categories[0])",
        "examples/broken-mappings.yaml:16:14: categories[2].enabled: must be true or false "
        "('yes' is a string in YAML 1.2)",
        "examples/broken-mappings.yaml:19:3: destinations.google-analytics-4/eu: must not contain '/' "
        "(instances are named only in requests)",
    ]


# -- loading -----------------------------------------------------------------------------------


def test_load_mapping_records_what_change_detection_needs(tmp_path: Path) -> None:
    path = tmp_path / "mappings.yaml"
    raw = (EXAMPLES / "mappings.yaml").read_bytes()
    path.write_bytes(raw)
    loaded = load_mapping(str(path))
    st_ = os.stat(path)
    assert isinstance(loaded, LoadedMapping)
    assert loaded.source == str(path)
    assert loaded.text == raw.decode()
    assert loaded.sha256 == hashlib.sha256(raw).hexdigest()
    assert (loaded.size, loaded.inode, loaded.mtime_ns) == (st_.st_size, st_.st_ino, st_.st_mtime_ns)
    assert loaded.stat_matches(st_)
    atomic_write(path, raw.decode() + "# edited\n")
    assert not loaded.stat_matches(os.stat(path))
    with pytest.raises(AttributeError):
        loaded.text = ""  # type: ignore[misc]


def test_load_mapping_keeps_the_path_as_given_in_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("m.yaml").write_text("version: 1\ncategories:\n  - id: 1\n    name: x\n    destinations: [a]\n")
    with pytest.raises(MappingError) as info:
        load_mapping("./m.yaml")
    assert str(info.value) == './m.yaml:3:9: categories[0].id: must be a string (quote it: "1")'


def test_load_mapping_keeps_crlf_and_bom_text_as_read(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_bytes(b"\xef\xbb\xbfversion: 1\r\ncategories:\r\n  - {id: C1, name: A, destinations: [a]}\r\n")
    loaded = load_mapping(path)
    assert loaded.text.startswith("\ufeffversion: 1\r\n")
    assert loaded.mapping.categories[0].id == "C1"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "cannot read the mapping file: no such file"),
        (lambda p: p.mkdir(), "cannot read the mapping file: it is a directory"),
        (
            lambda p: p.write_bytes(b"version: 1\ncategories: []\n# caf\xe9\n"),
            "the mapping file is not valid UTF-8 (byte offset 31)",
        ),
    ],
)
def test_reading_errors_are_one_problem_naming_the_file(
    tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    path = tmp_path / "m.yaml"
    make(path)
    with pytest.raises(MappingError) as info:
        load_mapping(path)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].line is None
    assert str(info.value) == f"{path}: {message}"


# -- comment-preserving edits ------------------------------------------------------------------

COMMENTED = """\
# [h1] Consent mapping, owned by the privacy team.
# [h2] Reviewed every quarter.
version: 1  # [v] always 1

settings:
  # [s1] unknown destinations flow until someone maps them
  unknown_destinations: allow  # [s2]

# [c0] Categories come from OneTrust.
categories:
  # [a1] Strictly necessary: the warehouse.
  - id: C0001  # [a2]
    name: "Strictly Necessary"  # [a3]
    destinations: [snowflake, bigquery]  # [a4]

  # [b1] Performance
  - id: C0002
    # [b2] inside the category
    name: 'Performance Cookies'
    enabled: true  # [b3]
    destinations:
      # [b4] analytics
      - amplitude  # [b5]
      - mixpanel
      - heap  # [b6]

  # [x1] Functional, written in flow style
  - {id: C0003, name: Functional Cookies, destinations: [intercom, zendesk]}  # [x2]

  # [t1] Targeting
  - id: C0004
    name: Targeting Cookies
    destinations:
    - google-ads  # [t2]
    - braze
    # [t3] after the last category

# [d0] per-destination settings
destinations:
  # [e1] exempt: the raw archive
  aws-s3: {enforce: false}  # [e2]
  braze:
    resolution: any  # [e3]
# [z] end of file
"""


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
    tricky = ["true", "123", "null", "a: b", "#x", "- x", "[x]", " padded ", "tab\there", "it's", "{x}", "~"]
    text = "version: 1\ncategories: []\n"
    for i, name in enumerate(tricky):
        text = edit(text, create(Category(f"C{i}", name, (f"d{i}",))))
    assert [c.name for c in parse_mapping(text, "m.yaml").categories] == tricky


QUOTING = """\
version: 1
categories:
  - id: C1
    name: plain name
    destinations: [plain]
  - id: 'C2'
    name: 'single quoted'
    destinations: ['single']
  - id: "C3"
    name: "double quoted"
    destinations: ["double"]
"""

_VALID_NAME = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != "")
_VALID_ID = st.text(min_size=1, max_size=33).filter(lambda s: not s[0].isdigit() and not any(ch.isspace() for ch in s))
_VALID_DEST = st.text(min_size=1, max_size=20).filter(lambda s: "/" not in s and not any(ch.isspace() for ch in s))


@settings(max_examples=30, deadline=None)
@given(index=st.integers(0, 2), name=_VALID_NAME, category_id=_VALID_ID, dest=_VALID_DEST)
def test_any_text_survives_being_written_in_any_quoting_style(
    index: int, name: str, category_id: str, dest: str
) -> None:
    mapping = parse_mapping(QUOTING, "m.yaml")
    old = mapping.categories[index]
    if mapping.category(category_id) is not None or any(c.name == name for c in mapping.categories):
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
    ["Ads", "Analytics", "It's", "a: b", "#tag", "true", "  padded  ", "ünïcödé", "multi\nline", "x,y", "[z]", "Q"]
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


FLOW_STYLE = (
    "version: 1\ncategories: [{id: C0001, name: One, destinations: [a]},"
    " {id: C0002, name: Two, destinations: [b, c]}]\n"
    "destinations: {aws-s3: {enforce: false}}\n"
)
COMPACT_CRLF = (
    "version: 1\r\ncategories:\r\n- id: C0001\r\n  name: One\r\n  destinations:\r\n  - a\r\n"
    "- id: C0002\r\n  name: Two\r\n  destinations: [b]\r\n"
)
DASH_ALONE = (
    "version: 1\ncategories:\n  -\n      id: C0001\n      name: One\n      enabled: true\n"
    "      destinations:\n        - a\ndestinations:\n"
)


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


# -- the C composer (ruamel.yaml.clib) against the round-trip one ------------------------------
#
# parse_mapping keeps libyaml's result only for a valid document and reads anything else again
# with the round-trip composer; these tests hold it to "same ConsentMapping, same problems, always".


def outcome(text: str, *, c_composer: bool) -> ConsentMapping | str:
    """parse_mapping's result on the C path (when `c_composer`) or the pure one: the ConsentMapping or the report."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mapping_file, "_C_COMPOSER_AVAILABLE", c_composer)
        try:
            return parse_mapping(text, "m.yaml")
        except MappingError as e:
            return str(e)


def assert_both_paths_agree(text: str) -> ConsentMapping | str:
    pure = outcome(text, c_composer=False)
    assert outcome(text, c_composer=True) == pure
    # and where the C path is asked, libyaml never takes a document the round-trip composer rejects,
    # nor reads one differently (it may reject one the pure path accepts: that one is read again)
    if mapping_file._PURE_ONLY.search(text) is None:
        by_c = mapping_file._valid_mapping_by_c_composer(text)
        assert by_c is None if isinstance(pure, str) else by_c in (None, pure)
    return pure


def test_the_c_composer_is_installed() -> None:
    """A declared dependency: without it every test below would compare the pure path with itself."""
    assert mapping_file._C_COMPOSER_AVAILABLE


def test_the_examples_read_the_same_on_both_paths() -> None:
    assert isinstance(assert_both_paths_agree((EXAMPLES / "mappings.yaml").read_text()), ConsentMapping)
    assert isinstance(assert_both_paths_agree((EXAMPLES / "broken-mappings.yaml").read_text()), str)


@pytest.mark.parametrize(
    "text",
    [text for text, _ in RULE_CASES]
    + [text for text, _ in SYNTAX_ERROR_CASES]
    + [COMMENTED, FLOW_STYLE, COMPACT_CRLF, DASH_ALONE, QUOTING, "\ufeff" + FLOW_STYLE],
)
def test_every_table_document_reads_the_same_on_both_paths(text: str) -> None:
    assert_both_paths_agree(textwrap.dedent(text))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", 1),
        ("0o1", 1),
        ("0x1", 1),
        ("+1", 1),
        ("01", 1),
        ("1_0", "m.yaml:1:10: version: unsupported version 10: must be 1"),
        ("010", "m.yaml:1:10: version: unsupported version 10: must be 1"),
        ("0o10", "m.yaml:1:10: version: unsupported version 8: must be 1"),
        ("1:20", "m.yaml:1:10: version: must be the integer 1, not a string"),
        (".inf", "m.yaml:1:10: version: must be the integer 1, not a number"),
        ("~", "m.yaml:1:10: version: must be the integer 1, not empty (null)"),
        ("null", "m.yaml:1:10: version: must be the integer 1, not empty (null)"),
        ("true", "m.yaml:1:10: version: must be the integer 1, not a boolean"),
        ("yes", "m.yaml:1:10: version: must be the integer 1, not a string"),
        ("!!int '1'", 1),
        ("!!str 1", "m.yaml:1:10: version: must be the integer 1, not a string"),
        ("2001-12-14", "m.yaml:1:10: version: must be the integer 1, not a date"),
    ],
)
def test_yaml_1_2_resolution_is_the_same_on_both_paths(value: str, expected: int | str) -> None:
    got = assert_both_paths_agree(f"version: {value}\ncategories: []\n")
    assert got == (ConsentMapping() if expected == 1 else expected)


@pytest.mark.parametrize(
    ("word", "enabled"),
    [("true", True), ("True", True), ("FALSE", False), ("yes", None), ("on", None), ("'true'", None)],
)
def test_booleans_resolve_the_same_on_both_paths(word: str, enabled: bool | None) -> None:
    got = assert_both_paths_agree(doc(f"  - id: C1\n    name: Ads\n    enabled: {word}\n    destinations: [a]\n"))
    if enabled is None:
        assert isinstance(got, str)
    else:
        assert isinstance(got, ConsentMapping) and got.categories[0].enabled is enabled


def test_a_yaml_1_1_directive_is_read_by_the_round_trip_composer() -> None:
    """libyaml's path ignores `%YAML 1.1` (`yes` would stay a string): such a file never takes it."""
    text = "%YAML 1.1\n---\n" + doc("  - id: C1\n    name: Ads\n    enabled: no\n    destinations: [a]\n")
    assert mapping_file._valid_mapping_by_c_composer(text) is None  # what the guard is for
    got = assert_both_paths_agree(text)
    assert isinstance(got, ConsentMapping) and got.categories[0].enabled is False


def test_valid_documents_are_composed_by_libyaml_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pure(text: str, source: str) -> None:
        raise AssertionError("the round-trip composer ran")

    monkeypatch.setattr(mapping_file, "_compose", no_pure)
    assert parse_mapping((EXAMPLES / "mappings.yaml").read_text(), "m.yaml").categories[0].id == "C0001"


def test_without_ruamel_yaml_clib_everything_takes_the_pure_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "_ruamel_yaml", None)  # `import _ruamel_yaml` now raises ImportError
    assert not mapping_file._c_composer_available()
    monkeypatch.setattr(mapping_file, "_C_COMPOSER_AVAILABLE", mapping_file._c_composer_available())

    def no_c(text: str) -> None:
        raise AssertionError("the C composer ran")

    monkeypatch.setattr(mapping_file, "_compose_c", no_c)
    assert parse_mapping((EXAMPLES / "mappings.yaml").read_text(), "m.yaml").categories[0].id == "C0001"
    assert problems(doc("  - id: 4C\n    name: Ads\n    destinations: [a]\n")) == [
        "m.yaml:3:9: categories[0].id: must not start with a digit"
    ]


# Documents built from YAML tokens that resolve differently, in block and flow style, with
# comments, duplicate and unknown keys, implicit nulls and aliases; then maybe a little broken.
# fmt: off
_TOKENS = st.sampled_from(
    [
        "C0001", "C0002", "Ads", "It's", "yes", "no", "on", "true", "False", "1", "010", "0o10", "0x1F", "1_000",
        "1:20", ".inf", "-.inf", ".nan", "~", "null", "", "1.0", "2001-12-14", "'q'", '"d q"', "'it''s'", '"a\\tb"',
        "a b", "ga4/eu", "ünï", "all", "any", "allow", "deny", "most", "!!str 1", "!!int '1'", "&x a", "*x", "<<",
        "[]", "{}", "[a, b]", "{enforce: false}", "|\n      lit", ">-\n      folded", "x # trailing",
    ]
)
_KEYS = st.sampled_from(["id", "name", "enabled", "shadow", "destinations", "owner", "1", "'id'"])
_JUNK = st.sampled_from(
    [
        "", " ", "\t", ":", "-", "- ", "#", "'", '"', "[", "]", "{", "}", ",", "&", "*",
        "!", "%", "|", ">", "?", "@", "`", "\n", "\n  ", "\x01", "\ufeff", "\u2028",
        "\x7f", "\x9f", "\xa0", "\ufffe", "\U0001f600", "\r",
    ]
)
# fmt: on
_BOOLEAN_WORDS = st.sampled_from(["true", "false", "True", "FALSE", "'true'", "yes", "~"])
_GOOD_DEST_IDS = st.sampled_from(["amplitude", "braze", "aws-s3", "'true'", "ünï", '"q q"'])
_DEST_IDS = st.sampled_from(["amplitude", "braze", "aws-s3", "123", "'true'", "ga4/eu", "ünï"])


@st.composite
def _documents(draw: st.DrawFn) -> str:
    lines: list[str] = []
    wild = draw(st.integers(0, 2)) == 0  # else mostly valid
    if wild or draw(st.integers(0, 9)) > 0:
        lines.append(f"version: {draw(_TOKENS) if wild else 1}")
    if draw(st.booleans()):
        choice = draw(_TOKENS) if wild else draw(st.sampled_from(["allow", "deny"]))
        lines.append(f"settings: {{unknown_destinations: {choice}}}")
    if draw(st.booleans()):
        lines.append("# a comment")
    lines.append("categories:")
    flow_items = draw(st.booleans())
    for n in range(draw(st.integers(0, 3))):
        fields = [("id", f"C000{n}"), ("name", f"Name {n}")]
        for _ in range(draw(st.integers(0, 2))):
            if wild and draw(st.booleans()):
                fields.append((draw(_KEYS), draw(_TOKENS)))
            else:
                fields.append((draw(st.sampled_from(["enabled", "shadow"])), draw(_BOOLEAN_WORDS)))
        dests = draw(
            st.lists(_DEST_IDS if wild else _GOOD_DEST_IDS, min_size=0 if wild else 1, max_size=3, unique=not wild)
        )
        block_dests = draw(st.booleans()) and not flow_items and dests
        fields.append(("destinations", "" if block_dests else "[" + ", ".join(dests) + "]"))
        fields = draw(st.permutations(fields))
        if flow_items:
            lines.append("  - {" + ", ".join(f"{k}: {v}" for k, v in fields) + "}")
            continue
        for i, (k, v) in enumerate(fields):
            lines.append(f"{'  - ' if i == 0 else '    '}{k}:{' ' + v if v else ''}")
            if k == "destinations" and not v:
                lines.extend(f"      - {d}" for d in dests)
    if draw(st.booleans()):
        lines.append("destinations:")
        for d in draw(st.lists(_DEST_IDS, max_size=3)):
            lines.append(f"  {d}: {draw(st.sampled_from(['', '{}', '{enforce: false}', '{resolution: any}']))}")
            if wild and draw(st.booleans()):
                lines.append(f"  {d}: {draw(_TOKENS)}")
    text = "\n".join(lines) + "\n"
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # slightly broken
        i = draw(st.integers(0, len(text)))
        junk = draw(_JUNK)
        text = text[:i] + junk + text[i + draw(st.integers(0, 2)) :]
    if draw(st.integers(0, 9)) == 0:
        text = text.replace("\n", "\r\n")
    if draw(st.integers(0, 9)) == 0:
        text = "\ufeff" + text
    return text


@pytest.mark.filterwarnings("ignore::ruamel.yaml.error.ReusedAnchorWarning")
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_documents())
def test_any_document_reads_the_same_on_both_paths(text: str) -> None:
    assert_both_paths_agree(text)


# -- atomic saves ------------------------------------------------------------------------------


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_replaces_the_file_and_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "mappings.yaml"
    path.write_text("old\n")
    path.chmod(0o640)
    inode = path.stat().st_ino
    atomic_write(path, "new: ü\n")
    assert path.read_bytes() == "new: ü\n".encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_ino != inode  # replaced, not rewritten in place
    assert leftovers(tmp_path) == []


def test_atomic_write_creates_a_missing_file(tmp_path: Path) -> None:
    atomic_write(str(tmp_path / "new.yaml"), "x\r\n")
    assert (tmp_path / "new.yaml").read_bytes() == b"x\r\n"
    assert leftovers(tmp_path) == []


def test_atomic_write_refuses_a_symlink_and_leaves_both_ends_alone(tmp_path: Path) -> None:
    target = tmp_path / "real.yaml"
    target.write_text("real\n")
    link = tmp_path / "mappings.yaml"
    link.symlink_to(target)
    with pytest.raises(OSError, match="symlink"):
        atomic_write(link, "new\n")
    assert link.is_symlink() and target.read_text() == "real\n"
    assert leftovers(tmp_path) == []


def test_atomic_write_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="not a regular file"):
        atomic_write(tmp_path, "x")


@pytest.mark.parametrize("failing", ["replace", "fsync", "write", "fchmod"])
def test_a_failed_atomic_write_changes_nothing_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "mappings.yaml"
    path.write_text("original\n")

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, "new\n")
    monkeypatch.undo()
    assert path.read_text() == "original\n"
    assert leftovers(tmp_path) == []


def test_atomic_write_into_a_missing_directory_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        atomic_write(tmp_path / "nowhere" / "m.yaml", "x")


def test_unencodable_text_is_an_oserror_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("original\n")
    with pytest.raises(OSError, match="UTF-8"):
        atomic_write(path, "bad \udc80\n")
    assert path.read_text() == "original\n" and leftovers(tmp_path) == []
