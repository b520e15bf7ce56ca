"""TrustArc: notice_gdpr_prefs and the consent storage item, real samples and malformed input.

Where a sample comes from a published decoder test suite, the expected values below are the
ones that suite asserts (named in the comment above each case).
"""

from __future__ import annotations

from typing import Any

import pytest
from consent_client.adapters import ConsentFormatError, trustarc_from_notice_gdpr_prefs, trustarc_from_storage_item

STOCK_LEVELS = {0: "required", 1: "functional", 2: "advertising"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Real cookie values seen on TrustArc sites (Cookie headers / test fixtures in public repos).
        pytest.param("0,1,2:", {"required": True, "functional": True, "advertising": True}, id="accept-all"),
        pytest.param("0:", {"required": True, "functional": False, "advertising": False}, id="required-only"),
        pytest.param("0::implied,eu", {"required": True, "functional": False, "advertising": False},
                     id="implied-suffix"),
        pytest.param("0|1|2:", {"required": True, "functional": True, "advertising": True}, id="pipes"),
        pytest.param("0,1,2:1a8b5228dd7ff0717196863a5d28ce6c",
                     {"required": True, "functional": True, "advertising": True}, id="hash-suffix"),
        pytest.param("0,2:", {"required": True, "functional": False, "advertising": True}, id="gap"),
        pytest.param("0,1,2,3,4:", {"required": True, "functional": True, "advertising": True},
                     id="extra-levels-ignored"),
        pytest.param("0%2C1%3A", {"required": True, "functional": True, "advertising": False},
                     id="percent-encoded"),
        pytest.param("0,1", {"required": True, "functional": True, "advertising": False}, id="no-colon"),
    ],
)
def test_trustarc_notice_gdpr_prefs(value: str, expected: dict[str, bool]) -> None:
    assert trustarc_from_notice_gdpr_prefs(value, STOCK_LEVELS) == expected


def test_trustarc_several_levels_one_category() -> None:
    table = {1: "marketing", 2: "marketing", 0: "required"}
    assert trustarc_from_notice_gdpr_prefs("0,1:", table) == {"marketing": False, "required": True}
    assert trustarc_from_notice_gdpr_prefs("0,1,2:", table) == {"marketing": True, "required": True}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param(":", id="no-levels"),
        pytest.param("0,,2:", id="empty-level"),
        pytest.param("a,b:", id="letters"),
        pytest.param("-1:", id="negative"),
        pytest.param("1" * 50 + ":", id="absurd-level"),
        pytest.param("permit 1,2,3", id="cmapi-cookie-privacy-not-gdpr-prefs"),
    ],
)
def test_trustarc_notice_gdpr_prefs_malformed(value: str) -> None:
    with pytest.raises(ConsentFormatError):
        trustarc_from_notice_gdpr_prefs(value, STOCK_LEVELS)


@pytest.mark.parametrize("bad_table", [{"0": "required"}, {-1: "x"}, {True: "x"}, {0: ""}, {0: 5}])
def test_trustarc_bad_level_table(bad_table: Any) -> None:
    with pytest.raises(ConsentFormatError):
        trustarc_from_notice_gdpr_prefs("0:", bad_table)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        pytest.param(
            '{"name":"truste.eu.cookie.notice_gdpr_prefs","value":"0,1,2,3,4:","path":"/","expires":1662226579395}',
            {"required": True, "functional": True, "advertising": True},
            id="localstorage-accept-all",
        ),
        pytest.param(
            '{"name":"truste.eu.cookie.notice_gdpr_prefs","value":"0:","path":"/","expires":9999999999999}',
            {"required": True, "functional": False, "advertising": False},
            id="localstorage-required-only",
        ),
        pytest.param('{"value":"0,1:"}', {"required": True, "functional": True, "advertising": False},
                     id="no-name"),
    ],
)
def test_trustarc_storage_item(item: str, expected: dict[str, bool]) -> None:
    assert trustarc_from_storage_item(item, STOCK_LEVELS) == expected


@pytest.mark.parametrize(
    "item",
    [
        pytest.param("0,1,2:", id="bare-cookie-value"),
        pytest.param("[]", id="array"),
        pytest.param('{"name":"truste.eu.cookie.notice_preferences","value":"2:"}', id="other-item"),
        pytest.param('{"name":"truste.eu.cookie.notice_gdpr_prefs"}', id="no-value"),
        pytest.param('{"value": 2}', id="numeric-value"),
        pytest.param('{"value": "x:"}', id="bad-inner-value"),
        pytest.param("[" * 10_000 + "]" * 10_000, id="deep-nesting"),
    ],
)
def test_trustarc_storage_item_malformed(item: str) -> None:
    with pytest.raises(ConsentFormatError):
        trustarc_from_storage_item(item, STOCK_LEVELS)
