"""Google Consent Mode: signals and the gcs parameter, mapped to categories.

Where a sample comes from a published decoder test suite, the expected values below are the
ones that suite asserts (named in the comment above each case).
"""

from __future__ import annotations

from typing import Any

import pytest
from consent_client.adapters import (
    CONSENT_MODE_SIGNALS,
    ConsentFormatError,
    decode_gcs,
    google_consent_mode_to_preferences,
    google_gcs_to_preferences,
)

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
