"""Tests for consent_client.adapters.gpc: the Sec-GPC header per the W3C Global Privacy Control
specification, whose only valid value is exactly "1" (anything else: as if the header were absent)."""

from __future__ import annotations

from typing import Any

import pytest
from consent_client.adapters import ConsentFormatError, gpc_enabled, gpc_to_preferences
from hypothesis import given
from hypothesis import strategies as st

CATEGORIES = ["C0004", "C0005"]
DENIED = {"C0004": False, "C0005": False}


@pytest.mark.parametrize(
    ("values", "on"),
    [
        pytest.param("1", True, id="exactly-1"),
        pytest.param(b"1", True, id="raw-header-bytes"),
        pytest.param(["1"], True, id="one-value-list"),
        pytest.param(["0", "1"], True, id="several-values-one-is-1"),
        pytest.param(("true", "1", "x"), True, id="tuple-with-a-1"),
        pytest.param(iter(["2", "1"]), True, id="iterator"),
        pytest.param(None, False, id="absent"),
        pytest.param("", False, id="empty"),
        pytest.param([], False, id="no-values"),
        pytest.param("0", False, id="zero"),
        pytest.param(" 1", False, id="leading-space"),
        pytest.param("1 ", False, id="trailing-space"),
        pytest.param("01", False, id="leading-zero"),
        pytest.param("1.0", False, id="decimal"),
        pytest.param("true", False, id="true-word"),
        pytest.param("1, 1", False, id="proxy-joined-values-are-one-value"),
        pytest.param(["1 ", " 1", "yes"], False, id="only-near-misses"),
        pytest.param([1], False, id="integer-1-is-not-the-header-value"),
        pytest.param("\uff11", False, id="fullwidth-digit-one"),
    ],
)
def test_gpc(values: Any, on: bool) -> None:
    if hasattr(values, "__next__"):  # an iterator can be read once
        assert gpc_to_preferences(values, CATEGORIES) == (DENIED if on else {})
        return
    assert gpc_enabled(values) is on
    assert gpc_to_preferences(values, CATEGORIES) == (DENIED if on else {})


def test_gpc_categories() -> None:
    assert gpc_to_preferences("1", "C0004") == {"C0004": False}
    assert gpc_to_preferences("1", []) == {}
    assert gpc_to_preferences("1", ("C0004", "C0004")) == {"C0004": False}


@pytest.mark.parametrize("categories", [[""], [None], [4], 5, None])
def test_gpc_bad_categories_fail_whether_on_or_not(categories: Any) -> None:
    for values in ("1", None):
        with pytest.raises(ConsentFormatError):
            gpc_to_preferences(values, categories)


def test_gpc_bad_header_values() -> None:
    with pytest.raises(ConsentFormatError, match="Sec-GPC"):
        gpc_enabled(1)  # type: ignore[arg-type]


@given(st.lists(st.text(max_size=4)))
def test_gpc_is_on_exactly_when_some_value_is_1(values: list[str]) -> None:
    assert gpc_enabled(values) is ("1" in values)
    assert gpc_to_preferences(values, CATEGORIES) == (DENIED if "1" in values else {})
