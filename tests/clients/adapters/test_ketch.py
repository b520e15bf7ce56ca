"""Ketch: the consent cookie and purposes, real samples and malformed input.

Where a sample comes from a published decoder test suite, the expected values below are the
ones that suite asserts (named in the comment above each case).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from consent_client.adapters import ConsentFormatError, ketch_from_consent_cookie, ketch_from_purposes

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
