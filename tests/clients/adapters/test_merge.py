"""Tests for consent_client.adapters.merge_preferences: denial wins, grants need no denial,
unmentioned categories stay absent."""

from __future__ import annotations

from typing import Any

import pytest
from consent_client.adapters import ConsentFormatError, merge_preferences
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize(
    ("signals", "expected"),
    [
        pytest.param([], {}, id="nothing"),
        pytest.param([{}], {}, id="one-empty"),
        pytest.param([{"C0004": True}], {"C0004": True}, id="one"),
        pytest.param([{"C0004": True}, {"C0004": False}], {"C0004": False}, id="denial-wins"),
        pytest.param([{"C0004": False}, {"C0004": True}], {"C0004": False}, id="denial-wins-either-order"),
        pytest.param([{"C0002": True}, {"C0004": False}], {"C0002": True, "C0004": False}, id="disjoint"),
        pytest.param([{"C0004": True}, None, {"C0004": True}], {"C0004": True}, id="none-is-no-signal"),
        pytest.param(
            # OneTrust grants advertising, a GPP usnat opt-out and Sec-GPC deny it; analytics stays.
            [{"C0001": True, "C0002": True, "C0004": True}, {"C0004": False}, {"C0004": False, "C0005": False}],
            {"C0001": True, "C0002": True, "C0004": False, "C0005": False},
            id="onetrust-gpp-gpc",
        ),
    ],
)
def test_merge(signals: list[Any], expected: dict[str, bool]) -> None:
    assert merge_preferences(*signals) == expected


def test_merge_does_not_modify_its_arguments() -> None:
    first = {"C0004": True}
    merge_preferences(first, {"C0004": False})
    assert first == {"C0004": True}


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(["C0004"], id="list"),
        pytest.param({"C0004": 1}, id="int-value"),
        pytest.param({"C0004": "true"}, id="string-value"),
        pytest.param({"C0004": None}, id="none-value"),
        pytest.param({"": True}, id="empty-id"),
        pytest.param({4: True}, id="int-id"),
    ],
)
def test_merge_bad_argument(bad: Any) -> None:
    with pytest.raises(ConsentFormatError, match="argument 2"):
        merge_preferences({"C0001": True}, bad)


_PREFS = st.dictionaries(st.sampled_from(["C0001", "C0002", "C0003", "C0004", "C0005"]), st.booleans())


@given(st.lists(_PREFS, max_size=6))
def test_merge_properties(signals: list[dict[str, bool]]) -> None:
    merged = merge_preferences(*signals)
    # Exactly the categories some signal mentions.
    assert set(merged) == {c for s in signals for c in s}
    for category, granted in merged.items():
        said = [s[category] for s in signals if category in s]
        # Denied iff any signal denies; granted iff every signal that speaks grants.
        assert granted is all(said)
    # Order-independent, idempotent, and associative.
    assert merge_preferences(*reversed(signals)) == merged
    assert merge_preferences(merged, merged) == merged
    if len(signals) >= 2:
        assert merge_preferences(merge_preferences(*signals[:1]), merge_preferences(*signals[1:])) == merged
    # Adding a signal can only turn grants into denials, never the other way.
    extra = merge_preferences(*signals, {"C0004": False})
    assert extra["C0004"] is False
    assert all(extra[c] <= merged[c] for c in merged)
