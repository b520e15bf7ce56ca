"""OneTrust: the OptanonConsent cookie and OnetrustActiveGroups, real samples and malformed input.

Where a sample comes from a published decoder test suite, the expected values below are the
ones that suite asserts (named in the comment above each case).
"""

from __future__ import annotations

from typing import Any

import pytest
from consent_client.adapters import ConsentFormatError, onetrust_from_active_groups, onetrust_from_optanon_cookie

# OptanonConsent values as captured from live sites (Cookie headers in public repositories).
OPTANON_VINTED = (
    "isGpcEnabled=0&datestamp=Mon+Feb+10+2025+14%3A33%3A05+GMT%2B0100+(heure+normale+d%E2%80%99Europe"
    "+centrale)&version=202312.1.0&browserGpcFlag=0&isIABGlobal=false&consentId=5a1fd8c7-c590-4fdc-9554"
    "-f0dc0e632abe&interactionCount=12&hosts=&landingPath=NotLandingPage&groups=C0001%3A1%2CC0002%3A0"
    "%2CC0003%3A0%2CC0004%3A0%2CC0005%3A0%2CV2STACK42%3A0%2CC0015%3A0%2CC0035%3A0&genVendors=V2%3A0%2C"
    "V1%3A0%2C&AwaitingReconsent=false&geolocation=FR%3BIDF"
)
OPTANON_OTODOM = (
    "isGpcEnabled=0&datestamp=Sat+Dec+02+2023+20%3A46%3A00+GMT%2B0530+(India+Standard+Time)&version="
    "202304.1.0&browserGpcFlag=0&isIABGlobal=false&hosts=&consentId=42e6b12d-3e87-4c40-acbf-fbe52919739d"
    "&interactionCount=2&landingPath=NotLandingPage&groups=C0001%3A1%2CC0002%3A0%2CC0003%3A0%2CC0004%3A0"
    "%2Cgad%3A0%2CSTACK42%3A0&AwaitingReconsent=false&geolocation=IN%3BDL"
)
OPTANON_STARTGG = (
    "isGpcEnabled=1&datestamp=Tue+Dec+20+2022+01%3A04%3A38+GMT-0500+(Eastern+Standard+Time)&version=6.34.0"
    "&isIABGlobal=false&hosts=&consentId=fb49a7a6-1c07-46ed-b6f7-5c3963031105&interactionCount=2"
    "&landingPath=NotLandingPage&groups=C0001%3A1%2CC0002%3A0%2CC0004%3A0%2CSTACK42%3A0"
    "&AwaitingReconsent=false&geolocation=US%3BFL"
)


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        pytest.param(
            OPTANON_VINTED,
            {
                "C0001": True, "C0002": False, "C0003": False, "C0004": False, "C0005": False,
                "V2STACK42": False, "C0015": False, "C0035": False,
            },
            id="vinted-iab",
        ),
        pytest.param(
            OPTANON_OTODOM,
            {"C0001": True, "C0002": False, "C0003": False, "C0004": False, "gad": False, "STACK42": False},
            id="otodom-custom-group",
        ),
        pytest.param(
            OPTANON_STARTGG,
            {"C0001": True, "C0002": False, "C0004": False, "STACK42": False},
            id="startgg-gpc",
        ),
        pytest.param(
            "groups=C0001%3A1%2CC0002%3A1%2CC0003%3A1%2CC0004%3A1",
            {"C0001": True, "C0002": True, "C0003": True, "C0004": True},
            id="groups-only-accept-all",
        ),
        pytest.param(
            # The same value after decodeURIComponent(document.cookie): groups are not escaped.
            "isGpcEnabled=0&datestamp=Tue Dec 20 2022 01:04:38 GMT-0500 (Eastern Standard Time)"
            "&groups=C0001:1,C0002:0,C0004:1&geolocation=US;FL",
            {"C0001": True, "C0002": False, "C0004": True},
            id="already-decoded",
        ),
        pytest.param(
            # The whole query string percent-encoded once more (as some cookie jars store it).
            "isGpcEnabled%3D1%26groups%3DC0001%253A1%252CC0002%253A0%26AwaitingReconsent%3Dfalse",
            {"C0001": True, "C0002": False},
            id="double-encoded",
        ),
        pytest.param('"groups=C0001%3A1"', {"C0001": True}, id="quoted-cookie-value"),
        pytest.param("isIABGlobal=false&groups=1:1,2:1,3:0,4:1", {"1": True, "2": True, "3": False, "4": True},
                     id="legacy-numeric-groups"),
        pytest.param("groups=&hosts=", {}, id="empty-groups"),
    ],
)
def test_onetrust_optanon_cookie(cookie: str, expected: dict[str, bool]) -> None:
    assert onetrust_from_optanon_cookie(cookie) == expected


@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param("", id="empty"),
        pytest.param("isGpcEnabled=0&datestamp=Mon+Feb+10+2025&hosts=", id="no-groups"),
        pytest.param("groups=C0001%3A2", id="status-2"),
        pytest.param("groups=C0001", id="missing-status"),
        pytest.param("groups=C0001%3Atrue", id="status-word"),
        pytest.param("groups=C0001%3A1%2CC0001%3A0", id="conflicting-duplicate"),
        pytest.param("groups=C0001:1&groups=C0002:1", id="two-groups-fields"),
        pytest.param("groups=bad group:1", id="space-in-id"),
        pytest.param("COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA", id="tc-string-not-optanon"),
    ],
)
def test_onetrust_optanon_cookie_malformed(cookie: str) -> None:
    with pytest.raises(ConsentFormatError):
        onetrust_from_optanon_cookie(cookie)


@pytest.mark.parametrize(
    ("active", "known", "expected"),
    [
        pytest.param(",C0001,C0003,", None, {"C0001": True, "C0003": True}, id="typical"),
        pytest.param(
            ",C0001,C0003,", ["C0001", "C0002", "C0003", "C0004"],
            {"C0001": True, "C0002": False, "C0003": True, "C0004": False}, id="with-known-groups",
        ),
        pytest.param(",C0001,", ("C0001",), {"C0001": True}, id="known-all-listed"),
        pytest.param(",", ["C0002"], {"C0002": False}, id="nothing-consented"),
        pytest.param("C0001, C0002 ,STACK42", None, {"C0001": True, "C0002": True, "STACK42": True},
                     id="no-outer-commas-and-spaces"),
    ],
)
def test_onetrust_active_groups(active: str, known: list[str] | None, expected: dict[str, bool]) -> None:
    assert onetrust_from_active_groups(active, known) == expected


@pytest.mark.parametrize(
    ("active", "known"),
    [
        pytest.param(",C0001;C0002,", None, id="semicolon"),
        pytest.param(",C 0001,", None, id="space-inside-id"),
        pytest.param(",C0001,", "C0002", id="known-is-a-bare-string"),
        pytest.param(",C0001,", ["bad id"], id="bad-known-id"),
    ],
)
def test_onetrust_active_groups_malformed(active: str, known: Any) -> None:
    with pytest.raises(ConsentFormatError):
        onetrust_from_active_groups(active, known)
