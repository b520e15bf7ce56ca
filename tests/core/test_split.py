"""The compiled miss path (consent_core.split) against the reference, with no memo to hide behind.

Every decision here is made by the pass or by a per-mask table, never served from a memo:
hypothesis drives random mappings and requests through an index compiled with
`memo_bytes=0` (the pass only), through one whose tables are forced for the request's mask,
and through the long-lived default index; validation folded into the pass must raise exactly
what `check_destinations` raises.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from consent_core.errors import InvalidArgument
from consent_core.event import check_destinations
from consent_core.index import Index, compile
from consent_core.limits import Limits
from consent_core.model import (
    Category,
    ConsentMapping,
    DestinationSettings,
    Resolution,
    Settings,
    UnknownDestinations,
)
from consent_core.split import Split, blocks
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_split

from .test_index import _SHARED, REQUESTABLE, mappings, preferences_st, table_mapping

LIMITS = Limits(max_destination_id_bytes=8, max_destinations=6)
# Ids that are invalid (empty, too long for LIMITS, starting with '/', holding a control or format
# character) beside valid known and unknown ones.
CHECKED = [*REQUESTABLE, "", "/amp", "x" * 9, "amp/" + "x" * 5, "é" * 4, "é" * 5, "a\x00", "amp\u200b", "a/\x1b"]


def _granted(index: Index, prefs: Mapping[str, bool] | None) -> int | None:
    return None if prefs is None else index.granted_mask(prefs)


def _with_tables(mapping: ConsentMapping, granted: int | None) -> Index:
    """An index without memo whose per-mask table for `granted` exists (when it would be small)."""
    index = compile(mapping, memo_bytes=1 << 20)
    index._memo.skip = 1 << 62  # the outcome memo off: every call takes the split
    if granted is not None:
        known = index.known_destinations
        for _ in range(len(known) + 1):  # past work reaches the table's size: it is built
            index._split.split(granted, known or ("x",))
    return index


@settings(max_examples=300, deadline=None)
@given(mappings(), preferences_st, st.lists(st.sampled_from(REQUESTABLE), max_size=8))
def test_the_pass_and_the_tables_equal_the_reference(
    mapping: ConsentMapping, prefs: dict[str, bool] | None, dests: list[str]
) -> None:
    want = reference_split(mapping, prefs, dests)
    bare = compile(mapping, memo_bytes=0)
    granted = _granted(bare, prefs)
    for index in (bare, _with_tables(mapping, granted)):
        for _ in range(2):
            out = index.decide(prefs, dests)
            assert (out.allowed, out.blocked) == want
            assert out.decisions is None
            assert index.split(granted, tuple(dests)) == out


@settings(max_examples=300, deadline=None)
@given(preferences_st, st.lists(st.sampled_from(REQUESTABLE), max_size=8))
def test_a_long_lived_index_with_tables_equals_the_reference(prefs: dict[str, bool] | None, dests: list[str]) -> None:
    index = _with_tables(_SHARED.mapping, _granted(_SHARED, prefs))
    assert (lambda o: (o.allowed, o.blocked))(index.decide(prefs, dests)) == reference_split(
        _SHARED.mapping, prefs, dests
    )


# Wide enough for tables that hold a few ids: 40 destinations, most behind C1, a few free or behind C2/C3.
WIDE = compile(ConsentMapping(
    categories=(
        Category("C1", "Necessary-ish", tuple(f"d{i:02d}" for i in range(36))),
        Category("C2", "Two", ("d00", "d01", "x1")),
        Category("C3", "Three", ("x1", "x2", "d02")),
        Category("S", "Shadow", ("d03", "x3"), shadow=True),
    ),
    destinations={"x2": DestinationSettings(resolution=Resolution.ANY), "x3": DestinationSettings(enforce=False)},
    settings=Settings(UnknownDestinations.DENY),
))
WIDE_IDS = [*WIDE.known_destinations, "d00/eu", "x1/a/b", "ghost", "ghost/eu"]


@settings(max_examples=300, deadline=None)
@given(
    st.none() | st.dictionaries(st.sampled_from(["C1", "C2", "C3", "S", "c1"]), st.booleans()),
    st.lists(st.sampled_from(WIDE_IDS), max_size=12),
)
def test_tables_holding_a_few_ids_equal_the_reference(prefs: dict[str, bool] | None, dests: list[str]) -> None:
    granted = _granted(WIDE, prefs)
    index = _with_tables(WIDE.mapping, granted)
    tables = index._split.tables
    assert tables is not None
    if granted is not None and granted & 1 == 0:  # C1 not granted: only a few ids are allowed
        assert tables.young[granted][1] is not None
    want = reference_split(WIDE.mapping, prefs, dests)
    for _ in range(2):
        out = index.decide(prefs, dests)
        assert (out.allowed, out.blocked) == want


def _error(fn: object) -> str | None:
    try:
        fn()  # type: ignore[operator]
    except InvalidArgument as e:
        return str(e)
    return None


@settings(max_examples=400, deadline=None)
@given(mappings(), preferences_st, st.lists(st.sampled_from(CHECKED), max_size=8), st.booleans())
def test_validation_in_the_pass_raises_what_check_destinations_raises(
    mapping: ConsentMapping, prefs: dict[str, bool] | None, dests: list[str], explain: bool
) -> None:
    want = _error(lambda: check_destinations(dests, LIMITS, "requests[2].destinations"))
    bare = compile(mapping, memo_bytes=0)
    indexes = [bare, _with_tables(mapping, _granted(bare, prefs)), compile(mapping)]
    for index in indexes:
        for _ in range(2):  # the second time from the memo, where there is one
            got = _error(lambda index=index: index.decide_validated(
                prefs, dests, LIMITS, "requests[2].destinations", explain=explain
            ))
            assert got == want
        if want is None:
            out = index.decide_validated(prefs, dests, LIMITS)
            assert (out.allowed, out.blocked) == reference_split(mapping, prefs, dests)


def test_known_ids_longer_than_the_limit_are_refused_even_from_a_table() -> None:
    index = _with_tables(table_mapping(), 0)
    for _ in range(2):
        with pytest.raises(InvalidArgument, match=r"destinations\[1\]: destination id longer than 8 bytes"):
            index.decide_validated({}, ["braze", "google-ads"], LIMITS)


def test_a_memoised_answer_is_checked_against_other_limits() -> None:
    index = compile(table_mapping())
    assert index.decide({}, ["google-ads"]).blocked == ("google-ads",)  # memoised unchecked
    with pytest.raises(InvalidArgument, match="longer than 8 bytes"):
        index.decide_validated({}, ["google-ads"], LIMITS)
    assert index.decide_validated({}, ["google-ads"], Limits()).blocked == ("google-ads",)


def test_too_many_destinations_is_one_error_for_the_field() -> None:
    with pytest.raises(InvalidArgument, match=r"^destinations: too many destinations: 7 > 6$"):
        compile(table_mapping()).decide_validated(None, ["amplitude"] * 7, LIMITS)


@pytest.mark.parametrize("granted", range(0, 1 << 4))
def test_blocks_is_the_rule_the_pass_inlines(granted: int) -> None:
    need = {"all-of-2": 0b0110, "any-of-2": ~0b0110, "free": 0, "deny": -1}
    split = Split(need, deny_unknown=True, table_budget=0)
    out = split.split(granted, tuple(need))
    assert out.blocked == tuple(d for d, n in need.items() if blocks(n, granted))
    assert blocks(0b0110, granted) == (granted & 0b0110 != 0b0110)
    assert blocks(~0b0110, granted) == (granted & 0b0110 == 0)


@pytest.mark.parametrize(
    ("destination", "why"),
    [
        ("google-ads\x00", "a control character (U+0000 at position 11)"),
        ("google-ads\x1b", "a control character (U+001B at position 11)"),
        ("google-ads\n", "a control character (U+000A at position 11)"),
        ("google\u200b-ads", "an invisible format character (U+200B at position 7)"),
        ("\u202egoogle-ads", "an invisible format character (U+202E at position 1)"),
        ("\ufeffgoogle-ads", "an invisible format character (U+FEFF at position 1)"),
        ("google-ads\u2028", "a line separator (U+2028 at position 11)"),
        ("google-ads/eu\u2029", "a paragraph separator (U+2029 at position 14)"),
    ],
)
def test_request_ids_with_invisible_characters_are_refused_on_every_path(destination: str, why: str) -> None:
    message = f"destinations[1]: destination id must not contain {why}"
    limits = Limits()
    index = compile(table_mapping())
    calls = [
        lambda: check_destinations(["braze", destination], limits),
        lambda: index.check_destinations(["braze", destination], limits),
        lambda: index.decide_validated({}, ["braze", destination], limits),
        lambda: index.decide_validated({}, ["braze", destination], limits, explain=True),
        lambda: index.decide_validated(None, ["braze", destination], limits),
        lambda: index.split(0, ("braze", destination), limits=limits),
    ]
    for call in calls * 2:  # the second time past the memos
        assert _error(call) == message


def test_a_mapping_built_without_validation_has_its_own_ids_checked_in_every_request() -> None:
    """Known ids skip the per-id check only when compile found each of them valid."""
    mapping = ConsentMapping(categories=(Category("C1", "One", ("ok", "bad\x1b")),))
    index = compile(mapping)
    with pytest.raises(InvalidArgument, match=r"destinations\[0\]: destination id must not contain a control"):
        index.decide_validated({}, ["bad\x1b"], Limits())
    assert index.decide_validated({"C1": True}, ["ok"], Limits()).allowed == ("ok",)


@settings(max_examples=300, deadline=None)
@given(mappings(), preferences_st, st.lists(st.sampled_from(CHECKED), max_size=8))
def test_a_mask_that_blocks_nothing_skips_the_pass_but_not_the_checks(
    mapping: ConsentMapping, prefs: dict[str, bool] | None, dests: list[str]
) -> None:
    """Masks in `free` (no consent object, or a table blocking no known id) answer without the
    pass or the memo, through `decide`, `decide_validated` and `decide_checked` alike."""
    want_error = _error(lambda: check_destinations(dests, LIMITS, "destinations"))
    bare = compile(mapping, memo_bytes=0)
    index = _with_tables(mapping, _granted(bare, prefs))
    for _ in range(2):
        for call in (
            lambda: index.decide_validated(prefs, dests, LIMITS),
            lambda: index.decide_checked(prefs, dests, LIMITS, "destinations"),
        ):
            assert _error(call) == want_error
            if want_error is None:
                out = call()
                assert out is not None and (out.allowed, out.blocked) == reference_split(mapping, prefs, dests)
        out = index.decide(prefs, dests)
        assert (out.allowed, out.blocked) == reference_split(mapping, prefs, dests)


def test_a_mask_joins_free_once_its_table_blocks_no_known_id_and_unknown_ids_are_allowed() -> None:
    everything = {"C0002": True, "C0004": True}
    allow = _with_tables(table_mapping(), compile(table_mapping()).granted_mask(everything))
    deny = _with_tables(table_mapping(UnknownDestinations.DENY), allow.granted_mask(everything))
    assert allow.granted_mask(everything) in allow._free
    assert deny._free == {None}  # an unknown id would be blocked: the pass decides
    assert allow.decide(everything, ["ghost", "braze/eu"]).allowed == ("ghost", "braze/eu")
    assert deny.decide(everything, ["ghost", "braze/eu"]).blocked == ("ghost",)
    with pytest.raises(InvalidArgument, match=r"^destinations\[1\]: destination id longer than 8 bytes$"):
        allow.decide_checked(everything, ["braze", "x" * 9], LIMITS, "destinations")


@settings(max_examples=400, deadline=None)
@given(mappings(), preferences_st, st.lists(st.sampled_from(CHECKED), max_size=8), st.sampled_from([LIMITS, Limits()]))
def test_a_need_row_decides_a_list_under_any_mask_as_the_pass(
    mapping: ConsentMapping, prefs: dict[str, bool] | None, dests: list[str], limits: Limits
) -> None:
    """`Index.need_row` (what the embedded decide_many's C loop decides a list from): the same
    error as the pass, else the ids and needs whose `blocks` split equals the reference's."""
    index = compile(mapping, memo_bytes=0)
    field = "requests[2].destinations"
    want = _error(lambda: index.decide_plain(_granted(index, prefs), tuple(dests), limits=limits, field=field))
    assert _error(lambda: index.need_row(tuple(dests), limits, field)) == want
    if want is None:
        ids, needs = index.need_row(tuple(dests), limits, field)
        assert ids == (tuple(dests) or index.known_destinations)
        granted = _granted(index, prefs)
        blocked = tuple(d for d, n in zip(ids, needs, strict=True) if granted is not None and blocks(n, granted))
        assert (tuple(d for d in ids if d not in blocked), blocked) == reference_split(mapping, prefs, dests)
