"""IAB TCF v2: TC strings decoded against published decoders' test suites, and mapped to categories.

Where a sample comes from a published decoder test suite, the expected values below are the
ones that suite asserts (named in the comment above each case).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from consent_client.adapters import ConsentFormatError, TCString, decode_tc_string, tcf_to_preferences


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
