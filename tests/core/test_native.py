"""consent_core._native's pass and consent reduction decide exactly as the pure code, or decline.

The oracle is the pure code itself (and, for the pass, the reference in tests/reference.py):
hypothesis drives random mappings, consents and destination lists through both. The C must
also leave its inputs' reference counts as it found them and keep no memory between calls.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tracemalloc
from collections.abc import Mapping
from typing import Any

import pytest
from consent_core import native
from consent_core.index import Index, compile
from consent_core.model import ConsentMapping
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_split

from .conftest import pure_path
from .test_index import CATEGORY_IDS, REQUESTABLE, mappings

NATIVE: Any = native.NATIVE
needs_native = pytest.mark.skipif(NATIVE is None, reason="consent_core._native not built or CONSENT_CORE_PURE=1")

# Values a consent object should not hold, and keys that are not plain str.
ODD_VALUES: list[object] = [True, False, 1, 0, None, "true"]


class Key(str):
    """A str subclass key: unusual, handed back to the pure loop by the C."""


def test_the_extension_is_built_unless_the_pure_path_is_forced() -> None:
    forced = os.environ.get("CONSENT_CORE_PURE", "") not in ("", "0")
    assert (NATIVE is None) == forced


def test_consent_core_pure_forces_the_pure_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSENT_CORE_PURE", "1")
    assert native.load() is None
    monkeypatch.setenv("CONSENT_CORE_PURE", "0")  # not forced: loaded whenever it is built
    assert (native.load() is not None) == (importlib.util.find_spec("consent_core._native") is not None)


def _pure_granted(index: Index, prefs: Mapping[Any, object], strict: bool) -> int | None:
    with pure_path():
        return index.granted_mask_strict(prefs) if strict else index.granted_mask(prefs)  # type: ignore[arg-type]


@needs_native
@settings(max_examples=300, deadline=None)
@given(
    mappings(),
    st.dictionaries(
        st.sampled_from([*CATEGORY_IDS, "C0004", "", "é"]) | st.builds(Key, st.sampled_from(CATEGORY_IDS)),
        st.sampled_from(ODD_VALUES),
    ),
    st.booleans(),
)
def test_granted_equals_the_pure_loop_or_declines(
    mapping: ConsentMapping, prefs: dict[Any, object], strict: bool
) -> None:
    index = compile(mapping)
    got = NATIVE.granted(dict(index.category_bits), prefs, strict)
    want = _pure_granted(index, prefs, strict)
    if got == -1:  # declined: only for a key that is not an exact str
        assert any(type(k) is not str for k in prefs)
    else:
        assert got == want
        assert (index.granted_mask_strict(prefs) if strict else index.granted_mask(prefs)) == want  # type: ignore[arg-type]


@needs_native
@settings(max_examples=300, deadline=None)
@given(
    mappings(),
    st.none() | st.dictionaries(st.sampled_from([*CATEGORY_IDS, "C0004"]), st.booleans()),
    st.lists(st.sampled_from(REQUESTABLE), min_size=1, max_size=8),  # empty: every known id, before the pass
    st.booleans(),
)
def test_the_pass_equals_the_reference(
    mapping: ConsentMapping, prefs: dict[str, bool] | None, dests: list[str], strict: bool
) -> None:
    index = compile(mapping, memo_bytes=0)
    need, unknown = index.needs()
    granted = 0 if prefs is None else index.granted_mask(prefs)
    got = NATIVE.split(need, unknown, granted, tuple(dests), strict)
    if got is None:  # strict: only an id the table does not hold is left to the pure pass
        assert strict and not set(dests) <= set(need)
        return
    if prefs is None:  # no consent object is decided before the pass: compare under an empty consent
        prefs = {}
    assert got == reference_split(mapping, prefs, dests)


@needs_native
@pytest.mark.parametrize(
    ("granted", "dests"),
    [
        pytest.param(1 << 64, ("a",), id="a mask over 64 bits"),
        pytest.param(-1, ("a",), id="a negative mask"),
        pytest.param(0, ("a", Key("a")), id="a str subclass id"),
        pytest.param(0, ("a", 1), id="an id that is no str"),
    ],
)
def test_the_pass_declines_what_it_cannot_hold(granted: int, dests: tuple[object, ...]) -> None:
    assert NATIVE.split({"a": 1}, 0, granted, dests, False) is None


@needs_native
def test_a_need_over_64_bits_is_declined() -> None:
    assert NATIVE.split({"a": 1 << 70}, 0, 1, ("a",), False) is None


@needs_native
def test_calls_leave_reference_counts_and_memory_as_they_were() -> None:
    # Objects of this test alone (no interned literal, no small int) so that nothing else moves their counts.
    amp, ga4, ads, ghost = ("".join([d, "-t"]) for d in ("amp", "ga4", "ads", "ghost"))
    instance = amp + "/eu"
    need = {amp: 1 << 40, ga4: 3 << 40, ads: ~(6 << 40)}
    bits = {"C0001": 1 << 40, "C0002": 2 << 40, "C0003": 4 << 40}
    dests = (amp, ga4, ads, instance, ghost)
    prefs = {"C0001": True, "C0002": False, "C0009": True}
    objects = [need, bits, dests, prefs, *dests, *need.values()]
    before = [sys.getrefcount(o) for o in objects]
    tracemalloc.start()
    try:
        grown = []
        for _ in range(2):  # the first round under tracing refills free lists with traced blocks
            start = tracemalloc.get_traced_memory()[0]
            for _ in range(20_000):
                NATIVE.split(need, -1, 5 << 40, dests, False)
                NATIVE.split(need, -1, 5 << 40, dests, True)  # declines (an instance): the error path
                NATIVE.granted(bits, prefs, True)
                NATIVE.granted(bits, {**prefs, "x": 1}, True)  # an odd value: None
            grown.append(tracemalloc.get_traced_memory()[0] - start)
    finally:
        tracemalloc.stop()
    assert grown[1] < 10_000  # bytes, over 80,000 calls
    assert [sys.getrefcount(o) for o in objects] == before
