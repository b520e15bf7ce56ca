"""Tests for consent_client.adapters: real-world samples, malformed input, and fuzzing.

Where a sample comes from a published decoder test suite, the expected values below are the
ones that suite asserts (named in the comment above each case).
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from consent_client.adapters import (
    CONSENT_MODE_SIGNALS,
    ConsentFormatError,
    TCString,
    USPrivacy,
    decode_gcs,
    decode_tc_string,
    decode_us_privacy,
    google_consent_mode_to_preferences,
    google_gcs_to_preferences,
    ketch_from_consent_cookie,
    ketch_from_purposes,
    onetrust_from_active_groups,
    onetrust_from_optanon_cookie,
    tcf_to_preferences,
    trustarc_from_notice_gdpr_prefs,
    trustarc_from_storage_item,
    us_privacy_to_preferences,
)
from hypothesis import given, settings
from hypothesis import strategies as st

# --------------------------------------------------------------------------------------------
# OneTrust
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# TrustArc
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Ketch
# --------------------------------------------------------------------------------------------

# _ketch_consent_v1_ cookies captured from live sites (Cookie headers in public repositories).
KETCH_SEATGEEK = (
    "eyJhbmFseXRpY3MiOnsic3RhdHVzIjoiZ3JhbnRlZCIsImNhbm9uaWNhbFB1cnBvc2VzIjpbImFuYWx5dGljcyJdfSwiZXNzZW50aW"
    "FsX3B1cnBvc2VzIjp7InN0YXR1cyI6ImdyYW50ZWQiLCJjYW5vbmljYWxQdXJwb3NlcyI6WyJlc3NlbnRpYWxfc2VydmljZXMiXX0s"
    "InBlcnNvbmFsaXNhdGlvbiI6eyJzdGF0dXMiOiJncmFudGVkIiwiY2Fub25pY2FsUHVycG9zZXMiOlsicGVyc29uYWxpemF0aW9uIl"
    "19LCJwcm9kdWN0X2VuaGFuY2VtZW50Ijp7InN0YXR1cyI6ImdyYW50ZWQiLCJjYW5vbmljYWxQdXJwb3NlcyI6WyJwcm9kX2VuaGFu"
    "Y2VtZW50Il19fQ%3D%3D"
)
KETCH_ESSENTIAL_ONLY = (
    "eyJlc3NlbnRpYWxfc2VydmljZXMiOnsic3RhdHVzIjoiZ3JhbnRlZCIsImNhbm9uaWNhbFB1cnBvc2VzIjpbImVzc2VudGlhbF9zZX"
    "J2aWNlcyJdfX0%3D"
)
KETCH_THREE = (
    "eyJhbmFseXRpY3MiOnsic3RhdHVzIjoiZ3JhbnRlZCIsImNhbm9uaWNhbFB1cnBvc2VzIjpbImFuYWx5dGljcyJdfSwiYmVoYXZpb3"
    "JhbF9hZHZlcnRpc2luZyI6eyJzdGF0dXMiOiJncmFudGVkIiwiY2Fub25pY2FsUHVycG9zZXMiOlsiYmVoYXZpb3JhbF9hZHZlcnRp"
    "c2luZyJdfSwiZXNzZW50aWFsX3NlcnZpY2VzIjp7InN0YXR1cyI6ImdyYW50ZWQiLCJjYW5vbmljYWxQdXJwb3NlcyI6WyJlc3Nlbn"
    "RpYWxfc2VydmljZXMiXX19"
)


def _ketch_cookie(obj: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        pytest.param(
            KETCH_SEATGEEK,
            {"analytics": True, "essential_purposes": True, "personalisation": True, "product_enhancement": True},
            id="seatgeek",
        ),
        pytest.param(KETCH_ESSENTIAL_ONLY, {"essential_services": True}, id="essential-only"),
        pytest.param(
            KETCH_THREE,
            {"analytics": True, "behavioral_advertising": True, "essential_services": True},
            id="no-padding",
        ),
        pytest.param(
            _ketch_cookie({"analytics": {"status": "denied", "canonicalPurposes": ["analytics"]},
                           "essential_services": {"status": "granted"}}),
            {"analytics": False, "essential_services": True},
            id="denied",
        ),
        pytest.param(
            base64.urlsafe_b64encode(b'{"ads":{"status":"denied"}}').decode().rstrip("="),
            {"ads": False},
            id="urlsafe-unpadded",
        ),
    ],
)
def test_ketch_consent_cookie(cookie: str, expected: dict[str, bool]) -> None:
    assert ketch_from_consent_cookie(cookie) == expected


def test_ketch_consent_cookie_with_mapping() -> None:
    mapping = {"analytics": "analytics", "behavioral_advertising": "marketing", "targeted_ads": "marketing"}
    # targeted_ads is absent from the cookie, so under all-of semantics marketing is not granted.
    assert ketch_from_consent_cookie(KETCH_THREE, mapping) == {"analytics": True, "marketing": False}


@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param("", id="empty"),
        pytest.param("not base64!", id="not-base64"),
        pytest.param("eyJh", id="truncated-json"),
        pytest.param("e", id="impossible-length"),
        pytest.param(base64.b64encode(b"\xff\xfe").decode(), id="not-utf8"),
        pytest.param(base64.b64encode(b"[1,2]").decode(), id="json-array"),
        pytest.param(_ketch_cookie({"analytics": {"status": "maybe"}}), id="bad-status"),
        pytest.param(_ketch_cookie({"analytics": {"canonicalPurposes": []}}), id="no-status"),
        pytest.param(_ketch_cookie({"analytics": 1}), id="numeric"),
        pytest.param(KETCH_THREE[:-10], id="truncated-real-cookie"),
    ],
)
def test_ketch_consent_cookie_malformed(cookie: str) -> None:
    with pytest.raises(ConsentFormatError):
        ketch_from_consent_cookie(cookie)


@pytest.mark.parametrize(
    ("purposes", "mapping", "expected"),
    [
        # Ketch tag getConsent / "consent" event payload: booleans.
        pytest.param({"analytics": True, "advertising": False}, None, {"analytics": True, "advertising": False},
                     id="tag-booleans"),
        # Ketch forwarder / webhook consent payload: "granted"/"denied".
        pytest.param({"advertising": "granted", "data_sales": "granted", "email_mktg": "denied"}, None,
                     {"advertising": True, "data_sales": True, "email_mktg": False}, id="forwarder-strings"),
        # Ketch web API consent response (and the mobile SDK mocks): {"allowed": "true"|"false"}.
        pytest.param(
            {"analytics": {"allowed": "true", "legalBasisCode": "consent_optin"},
             "advertising": {"allowed": "false", "legalBasisCode": "consent_optin"}},
            None, {"analytics": True, "advertising": False}, id="api-allowed-strings",
        ),
        pytest.param({"analytics": {"allowed": True}}, None, {"analytics": True}, id="api-allowed-bool"),
        pytest.param(
            {"analytics": True, "behavioral_advertising": "granted", "targeted_ads": {"allowed": "false"}},
            {"analytics": "stats", "behavioral_advertising": "marketing", "targeted_ads": "marketing",
             "email": "email"},
            {"stats": True, "marketing": False},
            id="mapped-mixed-shapes",
        ),
        pytest.param({}, None, {}, id="empty"),
    ],
)
def test_ketch_purposes(purposes: dict[str, object], mapping: dict[str, str] | None,
                        expected: dict[str, bool]) -> None:
    assert ketch_from_purposes(purposes, mapping) == expected


@pytest.mark.parametrize(
    ("purposes", "mapping"),
    [
        pytest.param({"analytics": "yes"}, None, id="bad-string"),
        pytest.param({"analytics": {"allowed": "maybe"}}, None, id="bad-allowed"),
        pytest.param({"analytics": {"allowed": 1}}, None, id="numeric-allowed"),
        pytest.param({"analytics": None}, None, id="null"),
        pytest.param({"analytics": [True]}, None, id="list"),
        pytest.param({"": True}, None, id="empty-code"),
        pytest.param({1: True}, None, id="int-code"),
        pytest.param(["analytics"], None, id="not-a-mapping"),
        pytest.param({"analytics": True}, {"analytics": ""}, id="empty-category"),
    ],
)
def test_ketch_purposes_malformed(purposes: Any, mapping: Any) -> None:
    with pytest.raises(ConsentFormatError):
        ketch_from_purposes(purposes, mapping)


# --------------------------------------------------------------------------------------------
# IAB TCF v2
# --------------------------------------------------------------------------------------------


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
         microsecond: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


# The go-iabtcf "v2" case: a TCF v2.2 (policy version 4) string with a 4,202-vendor bitfield.
# The original holds two runs of 484 'A' characters, written compactly here.
GO_IABTCF_V22 = (
    "CP9Qr_AP9Qr_AAfETDFRAwEsAP_gAEPgAAigg1NX_H__bX9v-Xr36ft0eY1f99j77uQxBhfJs-4FzLvW_JwX32EzNE36tqYKmRIEu3bBI"
    "QFtHJnUTVihaogVrzHsYkGchTNKJ-BkiHMRe2dYCF5vmYtj-QKZ5_p_d3f52T_9_dv-3dzzz91nv3f9f-f1eLida59tH_v_bRKb-_If9"
    "_7-_4v0_t_rk2_eTVv_9evv79-u_t____9_9____4"
    + "A" * 484
    + "QAAAEQamr_j__tr-3_L179P26PMav--x993IYgwvk2fcC5l3rfk4L77CZmib9W1MFTIkCXbtgkIC2jkzqJqxQtUQK15j2MSDOQpmlE"
    "_AyRDmIvbOsBC83zMWx_IFM8_0_u7v87J_-_u3_bu555-6z37v-v_P6vFxOtc-2j_3_tolN_fkP-_9_f8X6f2_1ybfvJq3_-vX39-_X"
    "f2____-_-____8"
    + "A" * 484
    + "IAAACAA"
)
# go-iabtcf's expected vendor bitfield for it: these 159 bytes, then zeros except vendors 4176 and 4202.
GO_IABTCF_V22_VENDOR_BITS = (
    "11010101 11111111 00011111 11111111 11011011 01011111 11011011 11111110 01011110 10111101 11111010 "
    "01111110 11011101 00011110 01100011 01010111 11111101 11110110 00111110 11111011 10111001 00001100 "
    "01000001 10000101 11110010 01101100 11111011 10000001 01110011 00101110 11110101 10111111 00100111 "
    "00000101 11110111 11011000 01001100 11001101 00010011 01111110 10101101 10101001 10000010 10100110 "
    "01000100 10000001 00101110 11011101 10110000 01001000 01000000 01011011 01000111 00100110 01110101 "
    "00010011 01010110 00101000 01011010 10100010 00000101 01101011 11001100 01111011 00011000 10010000 "
    "01100111 00100001 01001100 11010010 10001001 11111000 00011001 00100010 00011100 11000100 01011110 "
    "11011001 11010110 00000010 00010111 10011011 11100110 01100010 11011000 11111110 01000000 10100110 "
    "01111001 11111110 10011111 11011101 11011101 11111110 01110110 01001111 11111111 01111111 01110110 "
    "11111111 10110111 01110111 00111100 11110011 11110111 01011001 11101111 11011101 11111111 01011111 "
    "11111001 11111101 01011110 00101110 00100111 01011010 11100111 11011011 01000111 11111110 11111111 "
    "11011011 01000100 10100110 11111110 11111100 10000111 11111101 11111111 10111111 10111111 11100010 "
    "11111101 00111111 10110111 11111010 11100100 11011011 11110111 10010011 01010110 11111111 11111101 "
    "01111010 11111011 11111011 11110111 11101011 10111111 10110111 11111111 11111111 11111111 11011111 "
    "11111101 11111111 11111111 11111111 11100000"
).replace(" ", "")

# GDPR::IAB::TCFv2 (Perl) 05-tcf-v23.t: a TCF v2.3 string (policy version 5) with a DV segment.
PERL_V23 = (
    "CP188cAQKFpAAAHABBENBSFsAP_gAEPgAAiQKqNX_H__bW9r8X73aft0eY1P9_j77uQxBhfJE-4FzLvW_JwXx2ExNA36tqIKmRIEu3bBI"
    "QNlHJHUTVigaogVryHMak2cpTNKJ6BkiFMRM2dYCF5vm4tj-QKY5_r993dx2D-t_dv83dzyz81Hn3f5_2e0eLCdQ5-tDfv9bROb-9IPd"
    "_78v4v8_l_rk2_eT1n_tevr7D_-ft8__XW_9_fff_9Pn_-uB_-_3_vf_EFUwCTDQqIA-wJCQg0DCKBACoKwgIoFAQAAJA0QEAJgwKdgY"
    "ALrCRACAFAAMEAIAAQZAAgAAAgAQiACQAoEAAEAgUAAYAEAwEABAwAAgAsBAIAAQHQMUwIIFAsIEjMioUwIQoEggJbKhBICgQVwhCLPA"
    "IgERMFAAgAAAVgACAsFgcSSAlQkECXUG0AABAAgFEIFQgk9MAAwJmy1B4MG0ZWmAYPmCRDTAMgCIIyEAAAA.f_wACHwAAAAA"
)
PERL_BITFIELD = "CLcVDxRMWfGmWAVAHCENAXCkAKDAADnAABRgA5mdfCKZuYJez-NQm0TBMYA4oCAAGQYIAAAAAAEAIAEgAA"
PERL_RANGE = "COyfVVoOyfVVoADACHENAwCAAAAAAAAAAAAAE5QBgALgAqgD8AQACSwEygJyAnSAMABgAFkAgQCDASeAmYBOgAA"
IAB_GVL_SUFFIX = (
    ".IFoEUQQgAIQwgIwQABAEAAAAOIAACAIAAAAQAIAgEAACEAAAAAgAQBAAAAAAAGBAAgAAAAAAAFAAECAAAgAAQARAEQAAAAAJAAIAA"
    "gAAAYQEAAAQmAgBC3ZAYzUw"
)

# Expected field values, each from the suite named in the param id; fields a suite does not
# assert are omitted.
TCF_CASES: list[Any] = [
    pytest.param(
        # The example in the IAB TCF v2 spec; its core is asserted by the lib_tcstring (Rust) and
        # Bidtellect.Tcf (C#) suites. (It starts with 'C': version 2, not a v1 string.)
        "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA" + IAB_GVL_SUFFIX,
        {
            "version": 2, "created": _utc(2020, 2, 20, 23, 57, 39, 300000),
            "last_updated": _utc(2020, 2, 20, 23, 57, 39, 300000), "cmp_id": 27, "cmp_version": 0,
            "consent_screen": 0, "consent_language": "EN", "vendor_list_version": 15, "tcf_policy_version": 2,
            "is_service_specific": False, "use_non_standard_texts": False, "special_feature_opt_ins": set(),
            "purpose_consents": {1, 2, 3}, "purpose_legitimate_interests": set(), "publisher_cc": "AA",
            "vendor_consents": {2, 6, 8}, "vendor_legitimate_interests": {2, 6, 8},
        },
        id="iab-spec-example",
    ),
    pytest.param(
        "COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA",
        {
            "version": 2, "created": _utc(2020, 1, 26, 17, 1), "last_updated": _utc(2021, 2, 2, 17, 1),
            "cmp_id": 675, "cmp_version": 2, "consent_screen": 1, "vendor_list_version": 15,
            "tcf_policy_version": 2, "consent_language": "EN", "publisher_cc": "AA", "is_service_specific": False,
            "purpose_one_treatment": True, "use_non_standard_texts": False, "special_feature_opt_ins": {1},
            "purpose_consents": {2, 10}, "purpose_legitimate_interests": {2, 9},
        },
        id="iabtcf-java-testCanConstructTCModelFromBase64String",
    ),
    pytest.param(
        "COrEAV4OrXx94ACABBENAHCIAD-AAAAAAACAAxAAAAgAIAwgAgAAAAEAgQAAAAAEAYQAQAAAACAAAABAAA"
        ".IBAgAAAgAIAwgAgAAAAEAAAACA.QAagAQAgAIAwgA.cAAAAAAAITg=",
        {
            "purpose_consents": {3, 4, 5, 6, 7, 8, 9},
            "vendor_consents": {23, 37, 47, 48, 53, 65, 98},
            "vendor_legitimate_interests": {37, 47, 48, 53, 65, 98, 129},
        },
        id="iabtcf-java-testConstructConsentsFromBitFields-all-segments",
    ),
    pytest.param(
        "COv__-wOv__-wC2AAAENAPCgAAAAAAAAAAAAA_wAQA_gEBABAEAAAA",
        {"vendor_legitimate_interests": {128}},
        id="iabtcf-java-testCanParseRangeEncodedVendorLegitimateInterests",
    ),
    pytest.param(
        "COwBOpCOwBOpCLqAAAENAPCAAAAAAAAAAAAAFfwAYFfAV-BVkAGBVYFWAAA" + IAB_GVL_SUFFIX,
        {"vendor_consents": {702, 703}},
        id="iabtcf-java-testRange-two-entries",
    ),
    pytest.param(
        "COwBOpCOwBOpCLqAAAENAPCAAAAAAAAAAAAAFfwAQFfgUbABAUaAAA" + IAB_GVL_SUFFIX,
        {"vendor_consents": {703}},
        id="iabtcf-java-testRange-one-entry",
    ),
    pytest.param(
        "COwxsONOwxsONKpAAAENAdCAAMAAAAAAAAAAAAAAAAAA",
        {"purpose_consents": {1, 2}},
        id="iabtcf-java-testPurposesConsent",
    ),
    pytest.param(
        PERL_BITFIELD,
        {
            "version": 2, "created": _utc(2008, 12, 7, 10, 4, 17, 700000),
            "last_updated": _utc(2012, 1, 10, 17, 10, 13, 400000), "cmp_id": 21, "cmp_version": 7,
            "consent_screen": 2, "consent_language": "EN", "vendor_list_version": 23, "tcf_policy_version": 2,
            "is_service_specific": True, "use_non_standard_texts": False, "purpose_one_treatment": False,
            "publisher_cc": "KM", "purpose_consents": {1, 3, 9, 10},
            "purpose_legitimate_interests": {3, 4, 5, 8, 9, 10}, "special_feature_opt_ins": {2},
            "vendor_consents": {
                2, 3, 6, 7, 8, 10, 12, 13, 14, 15, 16, 21, 25, 27, 30, 31, 34, 35, 37, 38, 39, 42, 43, 49, 52, 54,
                55, 56, 57, 59, 60, 63, 64, 65, 66, 67, 68, 69, 73, 74, 76, 78, 83, 86, 87, 89, 90, 92, 96, 99,
                100, 106, 109, 110, 114, 115,
            },
            "vendor_legitimate_interests": {1, 9, 26, 27, 30, 36, 37, 43, 86, 97, 110, 113},
        },
        id="perl-GDPR-IAB-TCFv2-bitfield",
    ),
    pytest.param(
        PERL_BITFIELD + ".argAC0gAAAAAAAAAAAA",
        {"cmp_id": 21, "publisher_cc": "KM", "purpose_consents": {1, 3, 9, 10}},
        id="perl-GDPR-IAB-TCFv2-bitfield-with-publisher-tc",
    ),
    pytest.param(
        PERL_RANGE,
        {
            "version": 2, "created": _utc(2020, 4, 27, 0, 7), "last_updated": _utc(2020, 4, 27, 0, 7),
            "cmp_id": 3, "cmp_version": 2, "consent_screen": 7, "consent_language": "EN", "vendor_list_version": 48,
            "tcf_policy_version": 2, "is_service_specific": False, "use_non_standard_texts": False,
            "purpose_one_treatment": False, "publisher_cc": "AA", "purpose_consents": set(),
            "purpose_legitimate_interests": set(), "special_feature_opt_ins": set(),
            "vendor_consents": {23, 42, 126, 127, 128, 587, 613, 626},
            "vendor_legitimate_interests": {24, 44, 129, 130, 131, 591, 614, 628},
        },
        id="perl-GDPR-IAB-TCFv2-range",
    ),
    pytest.param(
        "COzcJxTOzcJxTBcAAAENAiCMAP_AAAAAAAAADTwAQDTgAAAA" + ".IF5EX2S5OI2tho2YdF7BEYYwfJxyigMgShgQIsS8NwIeFbB"
        "oGPmAAHBG4JAQAGBAkkACBAQIsHGBcCQABgIgRiRCMQEGMjzNKBJBAggkbI0FACCVmnkHS3ZCY70-6u__bA",
        {
            "version": 2, "cmp_id": 92, "consent_language": "EN", "vendor_list_version": 34,
            "tcf_policy_version": 2, "special_feature_opt_ins": {1, 2}, "purpose_consents": set(range(1, 11)),
            "purpose_legitimate_interests": set(), "publisher_cc": "AA", "vendor_consents": {423},
        },
        id="go-iabtcf-10-purposes-2-special-features-vendor-ranges",
    ),
    pytest.param(
        "CPhBZtcPhBZtcACABAENCACgAIAAAAAAAAAAH2QAYH0AfYB9kAGB9YH2AAAA.YAAAAAAAAAAA",
        {
            "version": 2, "created": _utc(2022, 10, 17, 13, 44, 54), "last_updated": _utc(2022, 10, 17, 13, 44, 54),
            "cmp_id": 2, "cmp_version": 1, "consent_screen": 0, "consent_language": "EN",
            "vendor_list_version": 128, "tcf_policy_version": 2, "is_service_specific": True,
            "use_non_standard_texts": False, "special_feature_opt_ins": set(), "purpose_consents": {1},
            "purpose_legitimate_interests": set(), "purpose_one_treatment": False, "publisher_cc": "AA",
            "vendor_consents": {1000, 1001, 1002, 1003, 1004}, "vendor_legitimate_interests": {1003, 1004},
        },
        id="ketch-android-TCFTest",
    ),
    pytest.param(
        GO_IABTCF_V22,
        {
            "version": 2, "tcf_policy_version": 4, "purpose_consents": set(range(1, 12)),
            "special_feature_opt_ins": {1, 2}, "publisher_cc": "EU",
        },
        id="go-iabtcf-v2.2",
    ),
    pytest.param(PERL_V23, {"version": 2, "tcf_policy_version": 5}, id="perl-GDPR-IAB-TCFv2-v2.3"),
]


@pytest.mark.parametrize(("tc", "expected"), TCF_CASES)
def test_decode_tc_string(tc: str, expected: dict[str, Any]) -> None:
    decoded = decode_tc_string(tc)
    actual = {field: getattr(decoded, field) for field in expected}
    assert actual == expected


def test_decode_tc_string_go_iabtcf_v22_vendor_bitfield() -> None:
    vendors = decode_tc_string(GO_IABTCF_V22).vendor_consents
    prefix = {i + 1 for i, bit in enumerate(GO_IABTCF_V22_VENDOR_BITS) if bit == "1"}
    assert vendors == prefix | {4176, 4202}
    # The per-vendor spot checks go-iabtcf makes.
    assert {1, 42, 423, 4202} <= vendors
    assert not {0, 41, 4203} & vendors


def test_decode_tc_string_perl_v23_vendor_46_li_without_consent() -> None:
    decoded = decode_tc_string(PERL_V23)
    assert 46 in decoded.vendor_legitimate_interests
    assert 46 not in decoded.vendor_consents


def test_tc_string_is_frozen_and_hashable() -> None:
    decoded = decode_tc_string(PERL_RANGE)
    assert isinstance(decoded, TCString)
    with pytest.raises(AttributeError):
        decoded.cmp_id = 1  # type: ignore[misc]
    assert hash(decoded) == hash(decode_tc_string(PERL_RANGE))
    assert decoded.created.tzinfo is UTC


@pytest.mark.parametrize(
    "tc",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        # TCF v1.1 spec example; the Perl suite asserts it decodes as version 1.
        pytest.param("BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASAAAAAAAAAA", id="tcf-v1"),
        pytest.param("DOEFEAyOEFEAyAHABDENAI4AAAB9vABAASAAAAAAAAAA", id="version-3"),
        pytest.param("Clc", id="perl-too-short"),
        pytest.param(PERL_RANGE[:-4] + "!A", id="perl-not-base64url"),
        pytest.param(PERL_BITFIELD[:-4], id="perl-truncated-bitfield"),
        pytest.param("COvcSpYOvcSpYC9AAAENAPCAAAAAAAAAAAAAAFAAAAA", id="perl-missing-li-section"),
        pytest.param("COvcSpYOvcSpYC9AAAENAPCAAAAAAAAAAAAAAFQBgAAgABAACAAEAAQAAgAA", id="perl-truncated-range"),
        pytest.param(PERL_RANGE[:60], id="truncated-range"),
        pytest.param(PERL_RANGE.replace("O", "+"), id="standard-base64-plus"),
        pytest.param(PERL_BITFIELD + "..YAAAAAAAAAAA", id="empty-segment"),
        pytest.param(PERL_BITFIELD + "===", id="too-much-padding"),
        pytest.param(PERL_BITFIELD + ".%%%", id="garbage-later-segment"),
        pytest.param("C" + "_" * 60, id="letters-out-of-range"),
        pytest.param("CO" + "A" * 30, id="truncated-before-vendor-section"),
        pytest.param("1YNN", id="us-privacy-not-tc"),
    ],
)
def test_decode_tc_string_malformed(tc: str) -> None:
    with pytest.raises(ConsentFormatError):
        decode_tc_string(tc)


def _range_tc(entries: list[tuple[int, int]], max_vendor: int) -> str:
    """A minimal v2 core segment whose vendor-consent section is range encoded."""
    # Version 2, zero timestamps/CMP fields, language "EN", policy version 2, no purposes, CC "AA".
    fixed = "000010" + "0" * 72 + "0" * 30 + "000100001101" + "0" * 12 + "000010" + "0" * 63 + "0" * 12
    assert len(fixed) == 213
    bits = fixed + format(max_vendor, "016b") + "1" + format(len(entries), "012b")
    for start, end in entries:
        bits += ("1" + format(start, "016b") + format(end, "016b")) if start != end else "0" + format(start, "016b")
    bits += "0" * 16 + "0" + "0" * 12  # empty LI section, no publisher restrictions
    bits += "0" * (-len(bits) % 6)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(alphabet[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))


def test_decode_tc_string_range_edge_cases() -> None:
    assert decode_tc_string(_range_tc([(1, 3), (2, 5), (9, 9)], 10)).vendor_consents == {1, 2, 3, 4, 5, 9}
    # Many overlapping full-width ranges are merged, not expanded one by one.
    many = decode_tc_string(_range_tc([(1, 65535)] * 4095, 65535))
    assert len(many.vendor_consents) == 65535
    for bad in ([(0, 3)], [(5, 2)], [(1, 11)]):
        with pytest.raises(ConsentFormatError):
            decode_tc_string(_range_tc(bad, 10))


@pytest.mark.parametrize(
    ("tc", "mapping", "require_all", "expected"),
    [
        pytest.param(
            "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA",  # purposes 1, 2, 3
            {1: "storage", 2: "ads", 4: "ads", 8: "analytics", 9: "analytics"}, True,
            {"storage": True, "ads": False, "analytics": False},
            id="all",
        ),
        pytest.param(
            "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA",
            {1: "storage", 2: "ads", 4: "ads", 8: "analytics", 9: "analytics"}, False,
            {"storage": True, "ads": True, "analytics": False},
            id="any",
        ),
        pytest.param(
            PERL_BITFIELD,  # purposes 1, 3, 9, 10
            {1: "analytics", 9: "analytics", 10: "analytics", 3: "ads", 4: "ads"}, True,
            {"analytics": True, "ads": False},
            id="perl-all",
        ),
        pytest.param(PERL_RANGE, {1: "storage"}, True, {"storage": False}, id="no-purposes"),
        pytest.param(PERL_RANGE, {}, True, {}, id="empty-mapping"),
    ],
)
def test_tcf_to_preferences(tc: str, mapping: dict[int, str], require_all: bool,
                            expected: dict[str, bool]) -> None:
    assert tcf_to_preferences(tc, mapping, require_all=require_all) == expected
    assert tcf_to_preferences(decode_tc_string(tc), mapping, require_all=require_all) == expected


@pytest.mark.parametrize("mapping", [{0: "x"}, {25: "x"}, {"1": "x"}, {True: "x"}, {1: ""}, {1: None}])
def test_tcf_to_preferences_bad_mapping(mapping: Any) -> None:
    with pytest.raises(ConsentFormatError):
        tcf_to_preferences(PERL_RANGE, mapping)


# TCF vendor consent as categories: expected vendor sets are those the named suites assert.
IABTCF_JAVA_BITFIELDS = (
    "COrEAV4OrXx94ACABBENAHCIAD-AAAAAAACAAxAAAAgAIAwgAgAAAAEAgQAAAAAEAYQAQAAAACAAAABAAA"
    ".IBAgAAAgAIAwgAgAAAAEAAAACA.QAagAQAgAIAwgA.cAAAAAAAITg="
)  # iabtcf-java TCStringV2Test.testConstructConsentsFromBitFields: vendors 23 37 47 48 53 65 98


@pytest.mark.parametrize(
    ("tc", "vendors", "expected"),
    [
        pytest.param(IABTCF_JAVA_BITFIELDS, {23: "TCFV23", 24: "TCFV24", 98: "TCFV98"},
                     {"TCFV23": True, "TCFV24": False, "TCFV98": True},
                     id="iabtcf-java-testConstructConsentsFromBitFields"),
        pytest.param("COwBOpCOwBOpCLqAAAENAPCAAAAAAAAAAAAAFfwAYFfAV-BVkAGBVYFWAAA" + IAB_GVL_SUFFIX,
                     {701: "V701", 702: "V702", 703: "V703"}, {"V701": False, "V702": True, "V703": True},
                     id="iabtcf-java-testRange-two-entries"),
        pytest.param("COwBOpCOwBOpCLqAAAENAPCAAAAAAAAAAAAAFfwAQFfgUbABAUaAAA" + IAB_GVL_SUFFIX,
                     {702: "V702", 703: "V703"}, {"V702": False, "V703": True},
                     id="iabtcf-java-testRange-one-entry"),
        pytest.param(PERL_RANGE, {626: "V626", 628: "V628"}, {"V626": True, "V628": False},
                     id="perl-GDPR-IAB-TCFv2-range-628-is-LI-only"),
        pytest.param(GO_IABTCF_V22, {755: "TCFV755", 4202: "V4202", 4203: "V4203", 65535: "VMAX"},
                     {"TCFV755": GO_IABTCF_V22_VENDOR_BITS[754] == "1", "V4202": True, "V4203": False, "VMAX": False},
                     id="go-iabtcf-v2.2-bitfield"),
    ],
)
def test_tcf_vendor_categories(tc: str, vendors: dict[int, str], expected: dict[str, bool]) -> None:
    assert tcf_to_preferences(tc, {}, vendors=vendors) == expected
    assert tcf_to_preferences(decode_tc_string(tc), {}, vendors=vendors) == expected


def test_tcf_purpose_and_vendor_together() -> None:
    # iabtcf-java testConstructConsentsFromBitFields: purposes 3-9 consented, vendor 23 yes, 24 no.
    purposes = {1: "C0001", 4: "C0004"}
    assert tcf_to_preferences(IABTCF_JAVA_BITFIELDS, purposes, vendors={23: "TCFV23", 24: "TCFV24"}) == {
        "C0001": False, "C0004": True, "TCFV23": True, "TCFV24": False,
    }
    # A category fed by a purpose and a vendor needs both with require_all, either without.
    assert tcf_to_preferences(IABTCF_JAVA_BITFIELDS, {4: "ads"}, vendors={24: "ads"}) == {"ads": False}
    assert tcf_to_preferences(IABTCF_JAVA_BITFIELDS, {4: "ads"}, vendors={24: "ads"}, require_all=False) == {
        "ads": True
    }
    # Several vendors, one category.
    assert tcf_to_preferences(IABTCF_JAVA_BITFIELDS, {}, vendors={23: "v", 37: "v"}) == {"v": True}
    assert tcf_to_preferences(IABTCF_JAVA_BITFIELDS, {}, vendors={23: "v", 24: "v"}) == {"v": False}
    # Backward compatible: positional purposes, no vendors.
    assert tcf_to_preferences(IABTCF_JAVA_BITFIELDS, {4: "C0004"}) == {"C0004": True}


@pytest.mark.parametrize("vendors", [{0: "x"}, {65536: "x"}, {"755": "x"}, {True: "x"}, {755: ""}, {755: None},
                                     [755]])
def test_tcf_bad_vendor_table(vendors: Any) -> None:
    with pytest.raises(ConsentFormatError, match="vendors"):
        tcf_to_preferences(PERL_RANGE, {}, vendors=vendors)


# --------------------------------------------------------------------------------------------
# Google Consent Mode
# --------------------------------------------------------------------------------------------

GCM_MAPPING = {
    "analytics_storage": "analytics",
    "ad_storage": "advertising",
    "ad_user_data": "advertising",
    "ad_personalization": "advertising",
    "functionality_storage": "functional",
}


@pytest.mark.parametrize(
    ("signals", "require_all", "expected"),
    [
        pytest.param(
            {"ad_storage": "granted", "analytics_storage": "granted", "ad_user_data": "granted",
             "ad_personalization": "granted", "functionality_storage": "granted", "security_storage": "granted"},
            True, {"analytics": True, "advertising": True, "functional": True}, id="all-granted",
        ),
        pytest.param(
            {"ad_storage": "denied", "analytics_storage": "granted", "ad_user_data": "denied",
             "ad_personalization": "denied", "wait_for_update": "500"},
            True, {"analytics": True, "advertising": False}, id="typical-default-plus-update",
        ),
        pytest.param(
            {"ad_storage": "granted", "ad_user_data": "granted", "ad_personalization": "denied"},
            False, {"advertising": True}, id="any",
        ),
        pytest.param({"ad_storage": "granted"}, True, {"advertising": False}, id="unset-type-blocks-all"),
        pytest.param({}, True, {}, id="nothing-set"),
    ],
)
def test_google_consent_mode(signals: dict[str, str], require_all: bool, expected: dict[str, bool]) -> None:
    assert google_consent_mode_to_preferences(signals, GCM_MAPPING, require_all=require_all) == expected


def test_google_consent_mode_custom_type() -> None:
    assert google_consent_mode_to_preferences({"my_type": "granted"}, {"my_type": "custom"}) == {"custom": True}


@pytest.mark.parametrize(
    ("signals", "mapping"),
    [
        pytest.param({"ad_storage": "yes"}, GCM_MAPPING, id="bad-value"),
        pytest.param({"ad_storage": "Granted"}, GCM_MAPPING, id="wrong-case"),
        pytest.param({"security_storage": "maybe"}, GCM_MAPPING, id="bad-value-unmapped-known-type"),
        pytest.param({"ad_storage": True}, GCM_MAPPING, id="bool-value"),
        pytest.param({"my_type": "on"}, {"my_type": "custom"}, id="bad-custom-value"),
        pytest.param("ad_storage=granted", GCM_MAPPING, id="not-a-mapping"),
        pytest.param({}, {"ad_storage": ""}, id="empty-category"),
    ],
)
def test_google_consent_mode_malformed(signals: Any, mapping: Any) -> None:
    with pytest.raises(ConsentFormatError):
        google_consent_mode_to_preferences(signals, mapping)


@pytest.mark.parametrize(
    ("gcs", "signals"),
    [
        pytest.param("G111", {"ad_storage": "granted", "analytics_storage": "granted"}, id="G111"),
        pytest.param("G100", {"ad_storage": "denied", "analytics_storage": "denied"}, id="G100"),
        pytest.param("G101", {"ad_storage": "denied", "analytics_storage": "granted"}, id="G101"),
        pytest.param("G110", {"ad_storage": "granted", "analytics_storage": "denied"}, id="G110"),
        pytest.param("G1--", {}, id="G1-unset"),
        pytest.param(" G1-1 ", {"analytics_storage": "granted"}, id="partly-unset"),
    ],
)
def test_decode_gcs(gcs: str, signals: dict[str, str]) -> None:
    assert decode_gcs(gcs) == signals


def test_gcs_to_preferences() -> None:
    mapping = {"analytics_storage": "analytics", "ad_storage": "advertising"}
    assert google_gcs_to_preferences("G101", mapping) == {"analytics": True, "advertising": False}
    assert google_gcs_to_preferences("G1--", mapping) == {}
    # gcs never carries ad_user_data, so an all-of category fed by it cannot be granted from gcs.
    assert google_gcs_to_preferences("G111", GCM_MAPPING) == {"analytics": True, "advertising": False}


@pytest.mark.parametrize("gcs", ["", "G1", "G11", "G1111", "G211", "g111", "G1x1", "G0--", "13l3l3l3l1", "111"])
def test_decode_gcs_malformed(gcs: str) -> None:
    with pytest.raises(ConsentFormatError):
        decode_gcs(gcs)


def test_consent_mode_signal_names() -> None:
    assert len(CONSENT_MODE_SIGNALS) == 7
    assert {"ad_user_data", "ad_personalization"} <= CONSENT_MODE_SIGNALS


# --------------------------------------------------------------------------------------------
# IAB US Privacy
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Every string-taking adapter: arbitrary text raises nothing but ConsentFormatError
# --------------------------------------------------------------------------------------------

STRING_ADAPTERS: dict[str, Callable[[str], object]] = {
    "onetrust_from_optanon_cookie": onetrust_from_optanon_cookie,
    "onetrust_from_active_groups": onetrust_from_active_groups,
    "onetrust_from_active_groups+known": lambda s: onetrust_from_active_groups(s, ["C0001", "C0002"]),
    "trustarc_from_notice_gdpr_prefs": lambda s: trustarc_from_notice_gdpr_prefs(s, STOCK_LEVELS),
    "trustarc_from_storage_item": lambda s: trustarc_from_storage_item(s, STOCK_LEVELS),
    "ketch_from_consent_cookie": ketch_from_consent_cookie,
    "decode_tc_string": decode_tc_string,
    "tcf_to_preferences": lambda s: tcf_to_preferences(s, {1: "a", 2: "b"}),
    "decode_gcs": decode_gcs,
    "google_gcs_to_preferences": lambda s: google_gcs_to_preferences(s, GCM_MAPPING),
    "decode_us_privacy": decode_us_privacy,
    "us_privacy_to_preferences": lambda s: us_privacy_to_preferences(s, "sale"),
}

# Text that is not just random: mostly drawn from the characters the formats are built from.
_FORMAT_CHARS = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=.,:|%&+/ \"{}[]YN"
)
_TEXT = st.one_of(
    st.text(),
    st.text(alphabet=_FORMAT_CHARS),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=30),
    st.builds(lambda s: "groups=" + s, st.text(alphabet=_FORMAT_CHARS)),
    st.builds(lambda s: '{"value":' + json.dumps(s) + "}", st.text(alphabet=_FORMAT_CHARS)),
    st.builds(lambda s: base64.b64encode(s.encode()).decode(), st.text()),
    st.builds(lambda s: "C" + s, st.text(alphabet=_FORMAT_CHARS)),
)


@pytest.mark.parametrize("name", sorted(STRING_ADAPTERS))
@settings(max_examples=300, deadline=None)
@given(text=_TEXT)
def test_arbitrary_text_only_raises_consent_format_error(name: str, text: str) -> None:
    with contextlib.suppress(ConsentFormatError):
        STRING_ADAPTERS[name](text)


@pytest.mark.parametrize("name", sorted(STRING_ADAPTERS))
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_mutated_real_samples_only_raise_consent_format_error(name: str, data: st.DataObject) -> None:
    sample = data.draw(st.sampled_from([
        OPTANON_VINTED, ",C0001,C0003,", "0,1,2:", KETCH_SEATGEEK, PERL_BITFIELD, PERL_RANGE, "G101", "1YNN",
    ]))
    cut = data.draw(st.integers(0, len(sample)))
    insert = data.draw(st.text(max_size=3))
    mutated = sample[:cut] + insert + sample[cut + data.draw(st.integers(0, 3)):]
    with contextlib.suppress(ConsentFormatError):
        STRING_ADAPTERS[name](mutated)


@pytest.mark.parametrize("name", sorted(STRING_ADAPTERS))
@pytest.mark.parametrize("value", [None, 42, b"1YNN", ["G111"]])
def test_non_string_input_raises_consent_format_error(name: str, value: Any) -> None:
    with pytest.raises(ConsentFormatError):
        STRING_ADAPTERS[name](value)


@pytest.mark.parametrize("name", sorted(STRING_ADAPTERS))
def test_oversized_input_raises_consent_format_error(name: str) -> None:
    with pytest.raises(ConsentFormatError):
        STRING_ADAPTERS[name]("C" * 70_000)
