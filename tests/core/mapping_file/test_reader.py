"""Reading the mapping file: shapes and types with exact positions, the examples, loading from disk."""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from consent_core.errors import MappingError
from consent_core.event import decide_one
from consent_core.index import compile
from consent_core.limits import Limits
from consent_core.mapping_file import LoadedMapping, atomic_write, load_mapping, parse_mapping
from consent_core.model import (
    ConsentMapping,
    DestinationSettings,
    Resolution,
    UnknownDestinations,
)
from ruamel.yaml import YAML

from .samples import EXAMPLES, doc, problems

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
