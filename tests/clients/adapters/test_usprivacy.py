"""IAB US Privacy strings: decoded, mapped to a category, malformed input.

Where a sample comes from a published decoder test suite, the expected values below are the
ones that suite asserts (named in the comment above each case).
"""

from __future__ import annotations

import pytest
from consent_client.adapters import ConsentFormatError, USPrivacy, decode_us_privacy, us_privacy_to_preferences


@pytest.mark.parametrize(
    ("s", "decoded", "prefs"),
    [
        pytest.param("1YNN", USPrivacy(1, True, False, False), {"sale": True}, id="1YNN"),
        pytest.param("1YYY", USPrivacy(1, True, True, True), {"sale": False}, id="1YYY"),
        pytest.param("1NYN", USPrivacy(1, False, True, False), {"sale": False}, id="1NYN"),
        pytest.param("1---", USPrivacy(1, None, None, None), {}, id="not-applicable"),
        pytest.param("1yn-", USPrivacy(1, True, False, None), {"sale": True}, id="lower-case"),
    ],
)
def test_us_privacy(s: str, decoded: USPrivacy, prefs: dict[str, bool]) -> None:
    assert decode_us_privacy(s) == decoded
    assert us_privacy_to_preferences(s, "sale") == prefs
    assert us_privacy_to_preferences(decoded, "sale") == prefs


@pytest.mark.parametrize("s", ["", "1YN", "1YNNN", "2YNN", "1YXN", "YNN1", "1 NN", "1YN\u00d1"])
def test_us_privacy_malformed(s: str) -> None:
    with pytest.raises(ConsentFormatError):
        decode_us_privacy(s)
    with pytest.raises(ConsentFormatError):
        us_privacy_to_preferences(s, "sale")


def test_us_privacy_bad_category() -> None:
    with pytest.raises(ConsentFormatError):
        us_privacy_to_preferences("1YNN", "")
