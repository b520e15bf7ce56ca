"""A mapping file as the last line of defence: look-alike ids, escapes YAML turns into unencodable text,
sizes past the limits, and any bytes at all. Every outcome is a mapping or a `MappingError`, located."""

from __future__ import annotations

import re
import time
import tracemalloc

import pytest
from consent_core.errors import MappingError
from consent_core.limits import MappingLimits
from consent_core.mapping_file import load_mapping, parse_mapping, prescan, reader
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .samples import doc


def both_paths(text: str, limits: MappingLimits | None = None) -> list[str]:
    """The problem lines on the C path and on the pure one (asserted equal)."""
    got = []
    for c_composer in (True, False):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(reader, "_C_COMPOSER_AVAILABLE", c_composer)
            with pytest.raises(MappingError) as info:
                parse_mapping(text, "m.yaml", limits)
            got.append(str(info.value).splitlines())
    assert got[0] == got[1]
    return got[0]


# -- look-alikes and escapes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_id", "message"),
    [
        ('"C0004\\u200b"', "must not contain an invisible format character (U+200B at position 6)"),
        ("C0004\u200b", "must not contain an invisible format character (U+200B at position 6)"),  # raw
        ('"C0004\\x1b"', "must not contain a control character (U+001B at position 6)"),
        ('"C\\0004"', "must not contain a control character (U+0000 at position 2)"),
        ('"\\u202eC0004"', "must not contain an invisible format character (U+202E at position 1)"),
        ('"C0004\\ud800"', "must not contain a lone surrogate (U+D800 at position 6)"),
    ],
)
def test_a_look_alike_category_id_is_a_located_problem(yaml_id: str, message: str) -> None:
    text = doc(f"  - id: {yaml_id}\n    name: Targeting\n    destinations: [google-ads]\n")
    assert both_paths(text) == [f"m.yaml:3:9: categories[0].id: {message}"]


def test_destination_ids_with_nul_esc_or_newline_are_located_problems() -> None:
    text = doc('  - id: C1\n    name: One\n    destinations: ["a\\0", "b\\e", "c\\nd", ok]\n') + (
        'destinations:\n  "s3\\x1b": {enforce: false}\n'
    )
    assert both_paths(text) == [
        "m.yaml:5:20: categories[0].destinations[0]: must not contain a control character (U+0000 at position 2)",
        "m.yaml:5:27: categories[0].destinations[1]: must not contain a control character (U+001B at position 2)",
        "m.yaml:5:34: categories[0].destinations[2]: must not contain whitespace",
        "m.yaml:7:3: destinations.s3\\x1b: must not contain a control character (U+001B at position 3)",
    ]


def test_a_yaml_escape_of_a_lone_surrogate_is_a_mapping_error_in_printable_text() -> None:
    text = doc('  - id: C1\n    name: "\\ud800"\n    destinations: ["\\udfff"]\n') + 'x: "\\ud800"\n'
    lines = both_paths(text)
    assert lines == [
        "m.yaml:4:11: categories[0].name: must not contain a lone surrogate (U+D800 at position 1)",
        "m.yaml:5:20: categories[0].destinations[0]: must not contain a lone surrogate (U+DFFF at position 1)",
        "m.yaml:6:1: x: unknown key 'x' (expected one of: version, settings, categories, destinations)",
    ]
    "\n".join(lines).encode("utf-8")  # valid UTF-8


def test_names_typed_composed_and_decomposed_are_one_name() -> None:
    text = doc(
        "  - id: C1\n    name: \"Pr\\u00e9f\\u00e9rences\"\n    destinations: [a]\n"
        "  - id: C2\n    name: \"Pre\\u0301fe\\u0301rences\"\n    destinations: [b]\n"
    )
    decomposed = "Pre\u0301fe\u0301rences"
    assert both_paths(text) == [
        f"m.yaml:7:11: categories[1].name: duplicate name {decomposed!r} (first at categories[0], the same name "
        "in another Unicode normalisation form)"
    ]


# -- size ------------------------------------------------------------------------------------------------


def categories(n: int, dests: str = "[a, b]") -> str:
    return doc("".join(f"  - id: C{i}\n    name: N{i}\n    destinations: {dests}\n" for i in range(n)))


def test_one_category_beyond_the_limit_is_refused_at_its_position_naming_the_limit() -> None:
    limits = MappingLimits(max_categories=5)
    assert len(parse_mapping(categories(5), "m.yaml", limits).categories) == 5
    assert both_paths(categories(6), limits) == [
        "m.yaml:18:5: categories[5]: too many categories: at most 5 (--max-mapping-categories)"
    ]


def test_one_distinct_destination_beyond_the_limit_is_refused_where_it_is_named() -> None:
    limits = MappingLimits(max_destinations=3)
    base = doc("  - id: C1\n    name: One\n    destinations: [a, b]\n  - id: C2\n    name: Two\n"
               "    destinations: [b, a, c]\n")  # fmt: skip
    assert len(parse_mapping(base, "m.yaml", limits).known_destinations()) == 3
    assert both_paths(base.replace("[b, a, c]", "[b, a, c, d]"), limits) == [
        "m.yaml:8:29: categories[1].destinations[3]: too many distinct destinations: at most 3 "
        "(--max-mapping-destinations)"
    ]
    assert both_paths(base + "destinations:\n  c: {enforce: false}\n  e: {enforce: false}\n", limits) == [
        "m.yaml:11:3: destinations.e: too many distinct destinations: at most 3 (--max-mapping-destinations)"
    ]


def test_aliases_count_as_what_they_name() -> None:
    limits = MappingLimits(max_categories=3, max_destinations=2)
    aliased = doc("  - &c {id: C1, name: One, destinations: [a]}\n" + "  - *c\n" * 3)
    with pytest.raises(MappingError) as info:  # (the round-trip composer would place it at the anchor)
        parse_mapping(aliased, "m.yaml", limits)
    assert str(info.value) == "m.yaml:6:5: categories[3]: too many categories: at most 3 (--max-mapping-categories)"
    named = doc("  - id: C1\n    name: &n x\n    destinations: [a, *n, b]\n")
    assert both_paths(named, limits) == [
        "m.yaml:5:27: categories[0].destinations[2]: too many distinct destinations: at most 2 "
        "(--max-mapping-destinations)"
    ]


def test_a_size_problem_the_event_count_misses_is_still_reported_without_a_second_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The walker counts too, and on the C path it reports what it found at once."""
    monkeypatch.setattr(reader, "prescan", lambda text, limits: (True, None))

    def no_pure(text: str, source: str) -> None:
        raise AssertionError("the round-trip composer ran")

    monkeypatch.setattr(reader, "_compose", no_pure)
    with pytest.raises(MappingError) as info:
        parse_mapping(categories(4), "m.yaml", MappingLimits(max_categories=3))
    assert str(info.value) == "m.yaml:12:5: categories[3]: too many categories: at most 3 (--max-mapping-categories)"


def test_a_hundred_thousand_categories_are_refused_without_composing_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    text = categories(100_000, "[d1, d2]")
    for name in ("_compose", "_compose_c"):
        monkeypatch.setattr(reader, name, lambda *a: pytest.fail("composed"))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(MappingError, match=r"^m\.yaml:3003:5: categories\[1000\]: too many categories"):
            parse_mapping(text, "m.yaml")
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 2.0
    assert peak < 10 << 20  # what reading the first 1,001 categories' events takes; not the 7 MB document


def test_larger_limits_accept_what_the_defaults_refuse() -> None:
    text = categories(1_001, "[d]")
    with pytest.raises(MappingError, match="at most 1000"):
        parse_mapping(text, "m.yaml")
    assert len(parse_mapping(text, "m.yaml", MappingLimits(max_categories=2_000)).categories) == 1_001


# -- the text the C path may take, without a regular expression --------------------------------------------

_OLD_PURE_ONLY = re.compile(r"[\t\x85\u2028\u2029]|(?:\A\ufeff?|[\r\n])%|(?<=[\s\S])\ufeff")


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(["a", " ", "\n", "\r", "%", "\t", "\x85", "\u2028", "\u2029", "\ufeff", ":"])))
def test_pure_only_text_is_what_the_former_expression_matched(text: str) -> None:
    assert prescan.pure_only(text) == (_OLD_PURE_ONLY.search(text) is not None)


# -- any content at all -------------------------------------------------------------------------------------

_FRAGMENTS = st.sampled_from([
    "version: 1\n", "categories:\n", "  - id: C1\n", "    name: N\n", "    destinations: [a]\n", "destinations:\n",
    '"\\ud800"', '"\\x00"', '"\\u200b"', '"\\e"', "\\", "&a ", "*a", "*b", "!!binary ", "!!int ", "!!python/name:x",
    "? ", "- ", ": ", "{", "}", "[", "]", ",", "#", "%YAML 1.1\n", "---\n", "...\n", "\t", "\ufeff", "\x85", "'",
    '"', "|\n", ">-\n", "0x1F", "1e999", "2001-13-45", "~", "<<: *a\n", "\n", "  ",
])  # fmt: skip
_DOCUMENTS = st.one_of(
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")),
    st.text(max_size=200),
    st.lists(_FRAGMENTS, max_size=40).map("".join),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_DOCUMENTS)
def test_any_text_is_a_mapping_or_a_mapping_error(text: str) -> None:
    try:
        mapping = parse_mapping(text, "m.yaml")
    except MappingError as e:
        assert str(e).isprintable() or all(line.isprintable() for line in str(e).splitlines())
        str(e).encode("utf-8")
    else:
        mapping.digest()  # and it can be compiled and served: its canonical form encodes


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_in_a_file_are_a_mapping_or_a_mapping_error(tmp_path_factory: pytest.TempPathFactory,
                                                              raw: bytes) -> None:
    path = tmp_path_factory.mktemp("m") / "m.yaml"
    path.write_bytes(raw)
    try:
        load_mapping(path)
    except MappingError as e:
        str(e).encode("utf-8")
