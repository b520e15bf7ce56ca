"""Validation of what a decision request carries: destination ids and the raw Segment event.

Every malformed input must raise `InvalidArgument` naming the offending field (never crash,
never be decided), and every limit must be configurable.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import pytest
from consent_core.errors import InvalidArgument
from consent_core.event import ParsedEvent, check_destinations, decide_one, parse_segment_event
from consent_core.index import PREFERENCE_EVENT_NAME, compile
from consent_core.limits import Limits
from consent_core.model import Category, ConsentMapping

LIMITS = Limits()


def parse(event: Any, limits: Limits = LIMITS) -> ParsedEvent:
    raw = event if isinstance(event, bytes) else json.dumps(event).encode()
    return parse_segment_event(raw, limits)


def rejects(raw: Any, field: str, limits: Limits = LIMITS) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        parse(raw, limits)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    return info.value


def nested_objects(depth: int) -> bytes:
    """An event object nested exactly `depth` deep (the event object itself is depth 1)."""
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


def nested_arrays(depth: int) -> bytes:
    """An event whose `a` holds arrays, `depth` deep in all."""
    return b'{"a":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


# -- what a well-formed event gives ------------------------------------------------------------


def test_event_without_context_has_no_consent_object() -> None:
    assert parse({"type": "track"}) == ParsedEvent(None, None, False)


def test_consent_without_category_preferences_is_no_consent_object() -> None:
    assert parse({"context": {"consent": {}}}).preferences is None
    assert parse({"context": {}}).preferences is None


def test_null_context_consent_preferences_and_integrations_count_as_absent() -> None:
    assert parse({"context": None, "integrations": None}) == ParsedEvent(None, None, False)
    assert parse({"context": {"consent": None}}).preferences is None
    assert parse({"context": {"consent": {"categoryPreferences": None}}}).preferences is None


def test_category_preferences_and_integrations_are_read() -> None:
    ev = parse(
        {
            "context": {"consent": {"categoryPreferences": {"C0001": True, "C0002": False}}, "ip": "1.2.3.4"},
            "integrations": {"All": False, "amplitude": {"apiKey": "k"}},
            "properties": {"deep": [[{"x": [1]}]]},
        }
    )
    assert ev.preferences == {"C0001": True, "C0002": False}
    assert ev.integrations == {"All": False, "amplitude": {"apiKey": "k"}}
    assert ev.preference_event is False


def test_empty_category_preferences_is_a_consent_object_granting_nothing() -> None:
    assert parse({"context": {"consent": {"categoryPreferences": {}}}}).preferences == {}


def test_preference_event_needs_exact_track_type_and_name() -> None:
    assert parse({"type": "track", "event": PREFERENCE_EVENT_NAME}).preference_event is True
    assert parse({"type": "track", "event": PREFERENCE_EVENT_NAME + " "}).preference_event is False
    assert parse({"type": "TRACK", "event": PREFERENCE_EVENT_NAME}).preference_event is False
    assert parse({"type": "page", "event": PREFERENCE_EVENT_NAME}).preference_event is False


def test_preference_event_is_still_validated() -> None:
    rejects(
        {"type": "track", "event": PREFERENCE_EVENT_NAME, "context": {"consent": {"categoryPreferences": []}}},
        "segment_event.context.consent.categoryPreferences",
    )


# -- size ----------------------------------------------------------------------------------------


def test_event_of_exactly_the_size_limit_is_accepted() -> None:
    raw = b'{"p":"' + b"x" * (1000 - 8) + b'"}'
    assert len(raw) == 1000
    assert parse(raw, Limits(max_event_bytes=1000)).preferences is None


def test_event_over_the_size_limit_is_rejected() -> None:
    raw = b'{"p":"' + b"x" * (1001 - 8) + b'"}'
    err = rejects(raw, "segment_event", Limits(max_event_bytes=1000))
    assert "1000" in str(err)


def test_default_size_limit_is_one_mebibyte() -> None:
    body = b'{"p":"' + b"x" * ((1 << 20) - 8) + b'"}'
    assert len(body) == 1 << 20
    parse(body)
    rejects(body[:-2] + b'x"}', "segment_event")


# -- not JSON, not UTF-8, not an object ----------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b" ",
        b"{",
        b'{"a":1',
        b"{'a': 1}",
        b'{"a":1}{"b":2}',
        b'{"a":1} x',
        b'{"a":}',
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":-Infinity}',
        b'{"a":1,}',
        b"1" * 5000,
    ],
    ids=repr,
)
def test_malformed_json_is_rejected(raw: bytes) -> None:
    rejects(raw, "segment_event")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":"\xff"}',
        b'{"a":"\xc3"}',  # truncated sequence
        b'{"a":"\xed\xa0\x80"}',  # an encoded surrogate is not UTF-8
        b'{"a":"\xc0\xaf"}',  # overlong
        '{"a":1}'.encode("utf-16-le"),
        '{"a":1}'.encode("utf-16"),
        '{"a":1}'.encode("utf-32"),
    ],
    ids=repr,
)
def test_non_utf8_event_is_rejected(raw: bytes) -> None:
    rejects(raw, "segment_event")


@pytest.mark.parametrize("raw", [b"[]", b"[{}]", b"1", b'"event"', b"null", b"true"], ids=repr)
def test_event_that_is_not_an_object_is_rejected(raw: bytes) -> None:
    err = rejects(raw, "segment_event")
    assert "object" in str(err)


def test_non_ascii_utf8_is_accepted() -> None:
    ev = parse('{"context":{"consent":{"categoryPreferences":{"Catégorie":true}}}}'.encode())
    assert ev.preferences == {"Catégorie": True}


# -- depth ---------------------------------------------------------------------------------------


def test_event_object_alone_is_depth_one() -> None:
    parse(b"{}", Limits(max_event_depth=1))
    parse(b'{"a":1,"b":"x","c":null}', Limits(max_event_depth=1))
    rejects(b'{"a":{}}', "segment_event", Limits(max_event_depth=1))
    rejects(b'{"a":[]}', "segment_event", Limits(max_event_depth=1))


def test_depth_64_is_accepted_and_65_rejected_by_default() -> None:
    parse(nested_objects(64))
    parse(nested_arrays(64))
    err = rejects(nested_objects(65), "segment_event")
    assert "64" in str(err)
    rejects(nested_arrays(65), "segment_event")


def test_objects_and_arrays_each_add_one_level() -> None:
    three = b'{"a":[{"b":1}]}'
    parse(three, Limits(max_event_depth=3))
    rejects(three, "segment_event", Limits(max_event_depth=2))
    mixed_64 = b'{"a":' + b'[{"a":' * 31 + b"[]" + b"}]" * 31 + b"}"
    parse(mixed_64)
    rejects(b'{"x":' + mixed_64 + b"}", "segment_event")


def test_depth_counts_the_deepest_branch_not_the_first() -> None:
    raw = b'{"shallow":[1,2,{"x":3}],"deep":' + nested_objects(4) + b"}"  # deep branch: 5 levels
    parse(raw, Limits(max_event_depth=5))
    rejects(raw, "segment_event", Limits(max_event_depth=4))


def test_depth_limit_is_configurable_upwards() -> None:
    parse(nested_objects(200), Limits(max_event_depth=200))
    rejects(nested_objects(201), "segment_event", Limits(max_event_depth=200))


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b"[" * 100_000,  # unterminated too
        b'{"a":' * 100_000,
    ],
    ids=["array", "array-in-event", "objects", "unterminated-array", "unterminated-objects"],
)
def test_hundred_thousand_deep_nesting_is_rejected_without_crashing(raw: bytes) -> None:
    rejects(raw, "segment_event")


# -- wrong types inside the event ----------------------------------------------------------------


@pytest.mark.parametrize("value", [[], "yes", 1, True, False], ids=repr)
def test_context_that_is_not_an_object_is_rejected(value: Any) -> None:
    rejects({"context": value}, "segment_event.context")


@pytest.mark.parametrize("value", [[], "yes", 1, True, False], ids=repr)
def test_consent_that_is_not_an_object_is_rejected(value: Any) -> None:
    rejects({"context": {"consent": value}}, "segment_event.context.consent")


@pytest.mark.parametrize("value", [[], [{"C0001": True}], "C0001", 1, True, False], ids=repr)
def test_category_preferences_that_is_not_an_object_is_rejected(value: Any) -> None:
    rejects(
        {"context": {"consent": {"categoryPreferences": value}}},
        "segment_event.context.consent.categoryPreferences",
    )


@pytest.mark.parametrize("value", [1, 0, "true", "false", None, {}, [], 1.0], ids=repr)
def test_category_preference_that_is_not_a_boolean_is_rejected(value: Any) -> None:
    err = rejects(
        {"context": {"consent": {"categoryPreferences": {"C0001": True, "C0002": value}}}},
        "segment_event.context.consent.categoryPreferences.C0002",
    )
    assert "boolean" in str(err)


@pytest.mark.parametrize("value", [[], ["amplitude"], "All", 1, True, False], ids=repr)
def test_integrations_that_is_not_an_object_is_rejected(value: Any) -> None:
    rejects({"integrations": value}, "segment_event.integrations")


def test_integrations_values_of_any_type_are_accepted() -> None:
    integrations = {"a": True, "b": False, "c": {}, "d": "x", "e": 1, "f": None, "g": []}
    assert parse({"integrations": integrations}).integrations == integrations


def test_field_names_carry_the_given_prefix() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_segment_event(b'{"integrations": []}', LIMITS, "requests[3].segment_event")
    assert info.value.field == "requests[3].segment_event.integrations"
    with pytest.raises(InvalidArgument) as info:
        parse_segment_event(b"[]", LIMITS, "requests[3].segment_event")
    assert info.value.field == "requests[3].segment_event"


# -- destination ids -------------------------------------------------------------------------------


def check(destinations: list[str], limits: Limits = LIMITS) -> None:
    check_destinations(destinations, limits)


def check_rejects(destinations: list[str], field: str, limits: Limits = LIMITS) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        check(destinations, limits)
    assert info.value.field == field
    return info.value


def test_valid_destinations_pass() -> None:
    check([])
    check(["amplitude", "google-analytics-4/eu", "a", "dest/", "Ünïcödé"])


def test_empty_destination_id_is_rejected_with_its_position() -> None:
    err = check_rejects(["amplitude", ""], "destinations[1]")
    assert "empty" in str(err)


def test_destination_id_of_256_bytes_is_accepted_and_257_rejected() -> None:
    check(["d" * 256])
    check_rejects(["ok", "d" * 257], "destinations[1]")


@pytest.mark.parametrize(
    ("char", "ok_count"),
    [("é", 128), ("€", 85), ("😀", 64)],  # 2-, 3- and 4-byte UTF-8
)
def test_destination_id_limit_counts_utf8_bytes_not_characters(char: str, ok_count: int) -> None:
    check([char * ok_count])
    check_rejects([char * (ok_count + 1)], "destinations[0]")


def test_destination_id_limit_is_configurable() -> None:
    limits = Limits(max_destination_id_bytes=8)
    check(["12345678", "é" * 4], limits)
    check_rejects(["123456789"], "destinations[0]", limits)
    check_rejects(["é" * 5], "destinations[0]", limits)
    check_rejects(["aaa" + "😀" * 2], "destinations[0]", limits)  # 3 chars, 11 bytes


def test_destination_id_starting_with_a_slash_is_rejected() -> None:
    check_rejects(["/eu"], "destinations[0]")
    check_rejects(["/"], "destinations[0]")


def test_ten_thousand_destinations_pass_and_one_more_is_rejected() -> None:
    check(["d"] * 10_000)
    err = check_rejects(["d"] * 10_001, "destinations")
    assert "10000" in str(err)


def test_destination_count_limit_is_configurable() -> None:
    limits = Limits(max_destinations=2)
    check(["a", "b"], limits)
    check_rejects(["a", "b", "c"], "destinations", limits)


# -- decide_one: the shared path --------------------------------------------------------------------

INDEX = compile(ConsentMapping(categories=(Category("C0002", "Performance", ("amplitude",)),)))


def test_decide_one_prefixes_field_names() -> None:
    with pytest.raises(InvalidArgument) as info:
        decide_one(INDEX, LIMITS, ["amplitude", ""], field="requests[2].")
    assert info.value.field == "requests[2].destinations[1]"
    with pytest.raises(InvalidArgument) as info:
        decide_one(INDEX, LIMITS, ["amplitude"], segment_event=b"{", field="requests[2].")
    assert info.value.field == "requests[2].segment_event"
    with pytest.raises(InvalidArgument) as info:
        decide_one(INDEX, LIMITS, ["amplitude"], segment_event=b'{"integrations":1}')
    assert info.value.field == "segment_event.integrations"


def test_decide_one_uses_the_limits_it_is_given() -> None:
    with pytest.raises(InvalidArgument):
        decide_one(INDEX, Limits(max_destinations=1), ["amplitude", "amplitude"])
    with pytest.raises(InvalidArgument):
        decide_one(INDEX, Limits(max_event_depth=2), [], segment_event=b'{"a":{"b":{}}}')
    with pytest.raises(InvalidArgument):
        decide_one(INDEX, Limits(max_event_bytes=10), [], segment_event=b'{"a":"0123456789"}')


def test_decide_one_with_consent_preferences_or_event_or_neither() -> None:
    assert decide_one(INDEX, LIMITS, ["amplitude"], preferences={}).blocked == ("amplitude",)
    assert decide_one(INDEX, LIMITS, ["amplitude"], preferences={"C0002": True}).allowed == ("amplitude",)
    assert decide_one(INDEX, LIMITS, ["amplitude"]).allowed == ("amplitude",)
    event = b'{"context":{"consent":{"categoryPreferences":{"C0002":false}}}}'
    assert decide_one(INDEX, LIMITS, ["amplitude"], segment_event=event).blocked == ("amplitude",)


# -- hostile input: lone surrogates, repeated keys, invisible characters, huge numbers -----------------

PREFS = "segment_event.context.consent.categoryPreferences"


def with_prefs_text(prefs_json: str) -> bytes:
    return ('{"type":"track","context":{"consent":{"categoryPreferences":' + prefs_json + "}}}").encode()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (with_prefs_text('{"\\ud800":true}'), f"{PREFS}.\\ud800"),
        (with_prefs_text('{"\\ud800":1}'), f"{PREFS}.\\ud800"),  # named by the surrogate, not the wrong type
        (with_prefs_text('{"C0001":true,"x\\udfff":false}'), f"{PREFS}.x\\udfff"),
        (b'{"integrations":{"\\udc00":false}}', "segment_event.integrations.\\udc00"),
        (b'{"integrations":{"a":"\\ud83d"}}', "segment_event.integrations.a"),
        (b'{"type":"\\ud800"}', "segment_event.type"),
        (b'{"type":"track","event":"Order \\uDBFF"}', "segment_event.event"),
        (b'{"properties":{"items":[{"name":"ok"},{"name":"\\ude00 tail"}]}}', "segment_event.properties.items[1].name"),
    ],
)
def test_a_lone_surrogate_anywhere_is_rejected_naming_its_path_in_printable_text(raw: bytes, field: str) -> None:
    e = rejects(raw, field)
    assert "lone surrogate" in str(e)
    str(e).encode("utf-8")  # valid UTF-8: the surrogate is shown as its 6-character escape
    assert str(e).isprintable()
    assert e.redacted == "segment_event.*: holds a lone surrogate (an unpaired \\ud800-\\udfff escape)"


def test_surrogate_pairs_are_text_not_lone_surrogates() -> None:
    got = parse(b'{"type":"\\ud83d\\ude00","context":{"consent":{"categoryPreferences":{"C\\ud83d\\ude00":true}}}}')
    assert got.preferences == {"C\U0001f600": True}


@pytest.mark.parametrize(
    ("prefs_json", "key"),
    [
        ('{"C0004":true,"C0004":false}', "C0004"),  # compact
        ('{ "C0004" : true , "C0001": false, "C0004" : false }', "C0004"),  # spaced
        ('{\n  "C0004": false,\n  "C0004": true\n}', "C0004"),  # pretty
        ('{"C0004":true,"C000\\u0034":false}', "C0004"),  # the same key spelled with an escape
        ('{"a:b":true,"a:b":false}', "a:b"),  # a colon inside the key
        ('{"a}b":true,"a}b":false,"c":true}', "a}b"),  # a brace inside the key
    ],
)
def test_a_key_twice_in_category_preferences_is_rejected(prefs_json: str, key: str) -> None:
    e = rejects(with_prefs_text(prefs_json), f"{PREFS}.{key}")
    assert str(e) == f"{PREFS}.{key}: duplicate key (each key may appear once)"
    assert e.redacted == f"{PREFS}.*: duplicate key (each key may appear once)"


def test_a_key_twice_in_integrations_is_rejected() -> None:
    raw = b'{"integrations":{"google-ads":true,"braze":{},"google-ads":false}}'
    rejects(raw, "segment_event.integrations.google-ads")
    rejects(b'{"integrations" : {"All" : false, "All" : true}}', "segment_event.integrations.All")


def test_keys_repeated_elsewhere_in_the_event_are_left_alone() -> None:
    raw = (b'{"properties":{"a":1,"a":2,"categoryPreferences":{"x":1,"x":2}},"integrations":{"a":true},'
           b'"context":{"consent":{"categoryPreferences":{"C0001":true}},"k":":","k":":"}}')
    got = parse(raw)
    assert (got.preferences, got.integrations) == ({"C0001": True}, {"a": True})


def test_strings_that_start_with_a_colon_are_no_repeated_keys() -> None:
    raw = b'{"t":":","u":": x","context":{"consent":{"categoryPreferences":{"C0001":true,"C0002":false}}}}'
    assert parse(raw).preferences == {"C0001": True, "C0002": False}


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("C0004\u200b", "C0004\\u200b"),  # zero-width space: looks like C0004
        ("\u202eC0004", "\\u202eC0004"),  # right-to-left override
        ("\ufeffC0004", "\\ufeffC0004"),  # byte order mark
        ("C00\x0004", "C00\\x0004"),  # NUL
        ("C0004\x1b[2J", "C0004\\x1b[2J"),  # ESC: a terminal escape sequence
        ("C0004\n", "C0004\\n"),
        ("C0004\u2028", "C0004\\u2028"),  # line separator
        ("C0004\u2029", "C0004\\u2029"),  # paragraph separator
    ],
)
def test_consent_keys_with_invisible_characters_are_rejected_naming_the_escaped_key(key: str, shown: str) -> None:
    e = rejects(with_prefs_text(json.dumps({key: True})), f"{PREFS}.{shown}")
    assert "category id must not contain" in str(e)
    assert str(e).isprintable()
    rejects(json.dumps({"integrations": {key: False}}).encode(), f"segment_event.integrations.{shown}")
    index = compile(ConsentMapping(categories=(Category("C0004", "Ads", ("google-ads",)),)))
    with pytest.raises(InvalidArgument, match=r"^consent\.category_preferences\.") as info:
        decide_one(index, LIMITS, ["google-ads"], preferences={key: True})
    assert info.value.field == f"consent.category_preferences.{shown}"


def test_printable_unusual_consent_keys_are_accepted() -> None:
    keys = {"C0004 ": True, "c0004": True, "C0004\u00e9": False, "C\u00a00004": True, "\U0001f600": True}
    assert parse({"context": {"consent": {"categoryPreferences": keys}}}).preferences == keys


@pytest.mark.parametrize(
    "number",
    [b"9" * 100_000, b"-" + b"1" * 5_000, b"1e999999", b"-1e999999", b"0." + b"0" * 500_000 + b"1", b"1" * 4300],
    ids=["1e5 digits", "5,000 digits", "1e999999", "-1e999999", "500,000-digit fraction", "4,300 digits"],
)
def test_huge_numbers_are_read_or_refused_in_milliseconds(number: bytes) -> None:
    raw = b'{"properties":{"n":' + number + b"}}"
    t0 = time.perf_counter()
    try:
        parse(raw)
    except InvalidArgument as e:
        assert str(e) == "segment_event: not valid JSON: an integer longer than 4300 digits"
    assert time.perf_counter() - t0 < 0.5


def test_huge_integers_are_refused_even_without_pythons_own_limit() -> None:
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # no limit: int() would take seconds on 10^5 digits
    try:
        t0 = time.perf_counter()
        rejects(b'{"n":' + b"7" * 200_000 + b"}", "segment_event")
        assert time.perf_counter() - t0 < 0.5
    finally:
        sys.set_int_max_str_digits(before)


def test_depth_is_still_measured_when_the_text_has_many_brackets_in_strings() -> None:
    """Counting brackets skips the walk only when they are too few to nest past the limit."""
    padding = '"pad":"' + "{[" * 100 + '",'
    deep = nested_objects(65).decode()
    rejects(("{" + padding + deep[1:]).encode(), "segment_event")
    assert parse(("{" + padding + nested_objects(64).decode()[1:]).encode()) is not None
