"""The mapping's semantic rules (consent_core.model): ids, names, destinations, uniqueness, digest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest
from consent_core.errors import Problem
from consent_core.limits import MappingLimits
from consent_core.mapping_file import parse_mapping
from consent_core.model import (
    Category,
    ConsentMapping,
    DestinationSettings,
    Resolution,
    Settings,
    UnknownDestinations,
    category_problems,
    mapping_problems,
)
from samples import mapping_text


def cat(
    id: str = "C0001", name: str = "Strictly Necessary", destinations: tuple[str, ...] = ("snowflake",)
) -> Category:
    return Category(id=id, name=name, destinations=destinations)


def messages(category: Category) -> list[tuple[str, str]]:
    return [(p.path, p.message) for p in category_problems(category, "categories[0]")]


@pytest.mark.parametrize(
    "category_id",
    ["C0001", "c0001", "a", "x" * 34, "C0004-ads_v2", "STRICTLY_NECESSARY", "ñ1", "C:0001"],
)
def test_valid_category_ids_pass(category_id: str) -> None:
    assert messages(cat(id=category_id)) == []


@pytest.mark.parametrize(
    ("category_id", "message"),
    [
        ("", "must not be empty"),
        ("x" * 35, "must be at most 34 characters (got 35)"),
        ("0001", "must not start with a digit"),
        ("4C", "must not start with a digit"),
        ("C 0001", "must not contain whitespace"),
        ("C0001\t", "must not contain whitespace"),
        (" C0001", "must not contain whitespace"),
        ("C\u00a00001", "must not contain whitespace"),
    ],
)
def test_invalid_category_ids_are_named(category_id: str, message: str) -> None:
    assert messages(cat(id=category_id)) == [("categories[0].id", message)]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("n" * 257, "must be at most 256 characters"),
    ],
)
def test_invalid_names_are_named(name: str, message: str) -> None:
    assert messages(cat(name=name)) == [("categories[0].name", message)]


@pytest.mark.parametrize("name", ["Targeting Cookies", "n" * 256, "Performance & Analytics: EU", "  padded  "])
def test_valid_names_pass(name: str) -> None:
    assert messages(cat(name=name)) == []


@pytest.mark.parametrize(
    ("destinations", "problems"),
    [
        ((), [("categories[0].destinations", "must list at least one destination")]),
        (("",), [("categories[0].destinations[0]", "must not be empty")]),
        (
            ("ok", "google-analytics-4/eu"),
            [("categories[0].destinations[1]", "must not contain '/' (instances are named only in requests)")],
        ),
        (("a b",), [("categories[0].destinations[0]", "must not contain whitespace")]),
        (("é" * 129,), [("categories[0].destinations[0]", "must be at most 256 bytes")]),
        (
            ("amplitude", "mixpanel", "amplitude"),
            [("categories[0].destinations[2]", "duplicate destination 'amplitude'")],
        ),
    ],
)
def test_invalid_destination_lists_are_named(destinations: tuple[str, ...], problems: list[tuple[str, str]]) -> None:
    assert messages(cat(destinations=destinations)) == problems


def test_destination_ids_may_use_256_bytes_and_any_case() -> None:
    assert messages(cat(destinations=("d" * 256, "Amplitude", "amplitude"))) == []


def test_every_problem_of_a_category_is_reported_at_once() -> None:
    assert messages(Category(id="1 x", name="", destinations=())) == [
        ("categories[0].id", "must not start with a digit"),
        ("categories[0].name", "must not be empty"),
        ("categories[0].destinations", "must list at least one destination"),
    ]


def test_duplicate_ids_and_names_are_reported_at_the_later_one() -> None:
    mapping = ConsentMapping(
        categories=(
            cat("C0001", "One"),
            cat("C0002", "Two"),
            cat("C0001", "Three"),
            cat("C0004", "Two"),
        )
    )
    assert mapping_problems(mapping) == [
        Problem("categories[2].id", "duplicate id 'C0001' (first at categories[0])"),
        Problem("categories[3].name", "duplicate name 'Two' (first at categories[1])"),
    ]


def test_ids_and_names_are_compared_case_sensitively() -> None:
    mapping = ConsentMapping(categories=(cat("C0001", "Ads"), cat("c0001", "ads")))
    assert mapping_problems(mapping) == []


def test_disabled_and_shadow_categories_obey_the_same_rules() -> None:
    mapping = ConsentMapping(
        categories=(
            replace(cat("C0001", "One"), enabled=False),
            replace(cat("C0001", "One", ()), shadow=True),
        )
    )
    assert [p.path for p in mapping_problems(mapping)] == [
        "categories[1].destinations",
        "categories[1].id",
        "categories[1].name",
    ]


def test_only_version_1_is_supported() -> None:
    assert mapping_problems(ConsentMapping(version=2)) == [Problem("version", "unsupported version 2: must be 1")]


def test_destination_settings_ids_follow_the_destination_id_rules() -> None:
    mapping = ConsentMapping(
        destinations={"aws-s3": DestinationSettings(enforce=False), "ga4/eu": DestinationSettings()}
    )
    assert mapping_problems(mapping) == [
        Problem("destinations.ga4/eu", "must not contain '/' (instances are named only in requests)")
    ]


def test_an_empty_mapping_is_valid() -> None:
    assert mapping_problems(ConsentMapping()) == []


def test_known_destinations_include_every_category_and_the_settings_block() -> None:
    mapping = ConsentMapping(
        categories=(
            cat("C0001", "One", ("snowflake",)),
            replace(cat("C0002", "Two", ("hotjar", "amplitude")), enabled=False),
            replace(cat("C0003", "Three", ("heap",)), shadow=True),
        ),
        destinations={"aws-s3": DestinationSettings(enforce=False)},
    )
    assert mapping.known_destinations() == ("amplitude", "aws-s3", "heap", "hotjar", "snowflake")
    assert mapping.category("C0002") is mapping.categories[1]
    assert mapping.category("c0002") is None


def test_a_mapping_is_immutable_even_its_destinations() -> None:
    source = {"braze": DestinationSettings(resolution=Resolution.ANY)}
    mapping = ConsentMapping(destinations=source)
    source["aws-s3"] = DestinationSettings(enforce=False)
    assert list(mapping.destinations) == ["braze"]
    with pytest.raises(TypeError):
        mapping.destinations["x"] = DestinationSettings()  # type: ignore[index]


# -- digest ----------------------------------------------------------------------------------

BASE = mapping_text()  # the sample's two plain categories and its destinations

SAME_MEANING = """\
# A comment on top, different layout and quoting, defaults spelled out.
version: 1
categories:
- id: "C0002"           # performance
  enabled: true
  shadow: false
  name: 'Performance Cookies'
  destinations:
  - amplitude
  - mixpanel

- {id: C0004, name: Targeting Cookies, destinations: [google-ads, braze]}
destinations:
  braze:
    resolution: any
    enforce: true
  aws-s3: {enforce: false, resolution: all}
settings: {unknown_destinations: allow}
"""


def digest(text: str) -> str:
    return parse_mapping(text, "m.yaml").digest()


def test_digest_ignores_comments_whitespace_quoting_key_order_and_spelled_out_defaults() -> None:
    assert digest(SAME_MEANING) == digest(BASE)
    assert parse_mapping(SAME_MEANING, "m.yaml") == parse_mapping(BASE, "m.yaml")


def test_digest_ignores_a_missing_settings_block_when_it_would_say_the_default() -> None:
    assert digest(BASE.replace("settings:\n  unknown_destinations: allow\n", "")) == digest(BASE)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("unknown_destinations: allow", "unknown_destinations: deny"),
        ("name: Performance Cookies", "name: Performance"),
        ("id: C0004", "id: C0005"),
        ("[amplitude, mixpanel]", "[mixpanel, amplitude]"),
        ("[amplitude, mixpanel]", "[amplitude]"),
        ("    name: Targeting Cookies\n", "    name: Targeting Cookies\n    enabled: false\n"),
        ("    name: Targeting Cookies\n", "    name: Targeting Cookies\n    shadow: true\n"),
        ("aws-s3: {enforce: false}", "aws-s3: {enforce: true}"),
        ("braze: {resolution: any}", "braze: {}"),
        ("  braze: {resolution: any}\n", ""),
    ],
)
def test_digest_changes_with_any_semantic_change(old: str, new: str) -> None:
    assert old in BASE
    assert digest(BASE.replace(old, new)) != digest(BASE)


def test_digest_depends_on_category_order() -> None:
    swapped = ConsentMapping(categories=tuple(reversed(parse_mapping(BASE, "m.yaml").categories)))
    assert swapped.digest() != digest(BASE)


def test_digest_is_the_sha256_of_the_canonical_form() -> None:
    mapping = parse_mapping(BASE, "m.yaml")
    assert mapping.digest() == hashlib.sha256(mapping.canonical_bytes()).hexdigest()
    assert len(mapping.digest()) == 64


def test_settings_defaults() -> None:
    assert Settings().unknown_destinations is UnknownDestinations.ALLOW
    assert DestinationSettings() == DestinationSettings(enforce=True, resolution=Resolution.ALL)


def test_category_json_spells_out_defaults() -> None:
    assert cat().to_json_dict() == {
        "id": "C0001",
        "name": "Strictly Necessary",
        "enabled": True,
        "shadow": False,
        "destinations": ["snowflake"],
    }


@pytest.mark.parametrize(
    "text",
    [
        BASE,
        BASE.replace("unknown_destinations: allow", "unknown_destinations: deny"),
        BASE.replace(
            "    name: Targeting Cookies\n", "    name: Targeting Cookies\n    enabled: false\n    shadow: true\n"
        ),
        "version: 1\ncategories: []\n",
        "version: 1\ncategories:\n  - id: ñ1\n    name: Réclame « pub »\n    destinations: [zé, a]\n",
    ],
)
def test_from_json_dict_is_the_inverse_of_to_json_dict(text: str) -> None:
    mapping = parse_mapping(text, "m.yaml")
    rebuilt = ConsentMapping.from_json_dict(json.loads(mapping.canonical_bytes()))
    assert rebuilt == mapping
    assert rebuilt.digest() == mapping.digest()
    assert rebuilt.canonical_bytes() == mapping.canonical_bytes()
    assert ConsentMapping.from_json_dict(mapping.to_json_dict()) == mapping


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("categories"), "categories: must be a list, got NoneType"),
        (lambda d: d.update(version="1"), "version: must be an integer"),
        (lambda d: d.update(settings={"unknown_destinations": "maybe"}), "settings.unknown_destinations"),
        (lambda d: d["categories"][0].update(enabled=1), r"categories\[0\]\.enabled: must be a boolean"),
        (lambda d: d["categories"][1]["destinations"].append(7), r"categories\[1\]\.destinations\[2\]: must be a str"),
        (lambda d: d["destinations"]["braze"].update(resolution="most"), "destinations.braze.resolution"),
    ],
)
def test_from_json_dict_refuses_a_malformed_shape_naming_the_path(change: object, message: str) -> None:
    assert callable(change)
    data = parse_mapping(BASE, "m.yaml").to_json_dict()
    change(data)
    with pytest.raises(ValueError, match=message):
        ConsentMapping.from_json_dict(data)


# -- look-alikes: invisible characters and Unicode normalisation ----------------------------------------

INVISIBLE = [
    ("\x00", "a control character (U+0000"),
    ("\x1b", "a control character (U+001B"),
    ("\x7f", "a control character (U+007F"),
    ("\u200b", "an invisible format character (U+200B"),  # zero-width space
    ("\u200e", "an invisible format character (U+200E"),  # left-to-right mark
    ("\u202e", "an invisible format character (U+202E"),  # right-to-left override
    ("\ufeff", "an invisible format character (U+FEFF"),  # byte order mark
    ("\u2028", "a line separator (U+2028"),
    ("\u2029", "a paragraph separator (U+2029"),
    ("\ud800", "a lone surrogate (U+D800"),
]


@pytest.mark.parametrize(("char", "what"), INVISIBLE)
def test_ids_and_names_holding_invisible_characters_are_refused(char: str, what: str) -> None:
    def refused(position: int) -> str:  # a separator is whitespace too, which ids refused already
        return "must not contain whitespace" if char.isspace() else f"must not contain {what} at position {position})"

    got = messages(cat(id=f"C0004{char}", name=f"Targeting{char}", destinations=(f"google-ads{char}",)))
    assert got == [
        ("categories[0].id", refused(6)),
        ("categories[0].name", f"must not contain {what} at position 10)"),
        ("categories[0].destinations[0]", refused(11)),
    ]
    settings_only = ConsentMapping(destinations={f"s3{char}": DestinationSettings(enforce=False)})
    assert [p.path for p in mapping_problems(settings_only)] == [f"destinations.s3{char}"]


def test_a_look_alike_category_would_have_blocked_google_ads_for_users_who_granted_c0004() -> None:
    """Why: `C0004\\u200b` passes for `C0004` in every listing, and no CMP ever sends it."""
    mapping = ConsentMapping(categories=(cat(id="C0004\u200b", name="Targeting", destinations=("google-ads",)),))
    assert [p.path for p in mapping_problems(mapping)] == ["categories[0].id"]


def test_names_equal_after_nfc_normalisation_are_duplicates() -> None:
    composed, decomposed = "Pr\u00e9f\u00e9rences", "Pre\u0301fe\u0301rences"
    assert composed != decomposed
    mapping = ConsentMapping(categories=(cat(id="C1", name=composed), cat(id="C2", name=decomposed)))
    assert [(p.path, p.message) for p in mapping_problems(mapping)] == [
        ("categories[1].name", f"duplicate name {decomposed!r} (first at categories[0], the same name in another "
                               "Unicode normalisation form)"),
    ]  # fmt: skip


def test_printable_unusual_names_and_ids_pass() -> None:
    mapping = ConsentMapping(categories=(
        cat(id="C\u00e9", name="Caf\u00e9 \U0001f36a", destinations=("d\u00e9",)),
        cat(id="C2", name="two\u00a0words", destinations=("x\ufffe",)),
    ))  # fmt: skip
    assert mapping_problems(mapping) == []


# -- size -------------------------------------------------------------------------------------------------


def test_more_categories_than_the_limit_is_a_problem_at_the_first_one_beyond() -> None:
    limits = MappingLimits(max_categories=3, max_destinations=100)
    three = ConsentMapping(categories=tuple(cat(id=f"C{i}", name=f"N{i}") for i in range(3)))
    assert mapping_problems(three, limits) == []
    four = three.with_categories([*three.categories, cat(id="C3", name="N3")])
    assert [(p.path, p.message) for p in mapping_problems(four, limits)] == [
        ("categories[3]", "too many categories: at most 3 (--max-mapping-categories)"),
    ]


def test_more_distinct_destinations_than_the_limit_is_a_problem_where_the_first_one_beyond_is_named() -> None:
    limits = MappingLimits(max_categories=10, max_destinations=4)
    mapping = ConsentMapping(categories=(
        cat(id="C1", name="One", destinations=("a", "b", "c")),
        cat(id="C2", name="Two", destinations=("a", "b", "c", "d")),  # repeats are one destination each
    ))  # fmt: skip
    assert mapping_problems(mapping, limits) == []
    more = replace(mapping, destinations={"d": DestinationSettings(), "e": DestinationSettings(enforce=False)})
    assert [(p.path, p.message) for p in mapping_problems(more, limits)] == [
        ("destinations.e", "too many distinct destinations: at most 4 (--max-mapping-destinations)"),
    ]
    wider = mapping.with_categories([*mapping.categories, cat(id="C3", name="Three", destinations=("d", "x", "y"))])
    assert [p.path for p in mapping_problems(wider, limits)] == ["categories[2].destinations[1]"]


def test_the_default_limits_are_1000_categories_and_100000_destinations() -> None:
    assert MappingLimits() == MappingLimits(max_categories=1_000, max_destinations=100_000)
    many = ConsentMapping(categories=tuple(cat(id=f"C{i}", name=f"N{i}") for i in range(1_001)))
    assert [p.path for p in mapping_problems(many)] == ["categories[1000]"]
