"""Tests for consent_client.adapters.gpp: IAB GPP strings, decoded and as category preferences.

Every vector names its source in its param id: ``java`` is IABTechLab/iabgpp-java 3.2.5
(iabgpp-encoder/src/test/java/com/iab/gpp/encoder/...), ``es`` is IABTechLab/iabgpp-es 3.2.0
(modules/cmpapi/test/encoder/...), ``go`` is prebid/go-gpp (parse_test.go, sections/*/*_test.go).
Expected values are only those the named test asserts: iabgpp-es tests written as
``expect(value, actual)`` assert nothing and were not used; its ``to.eql`` ones were. A section
vector from a section-level test is wrapped in a one-section GPP string by :func:`gpp`, whose
header encoding is itself checked against the IAB's header vectors.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from consent_client.adapters import (
    ConsentFormatError,
    GPPString,
    RangeEntry,
    TCString,
    USPrivacy,
    decode_gpp,
    gpp_tcfca,
    gpp_to_preferences,
)
from consent_client.adapters._common import MAX_INPUT_CHARS
from consent_client.adapters.gpp_sections import SECTION_IDS, SECTION_NAMES, US_SECTIONS
from hypothesis import given, settings
from hypothesis import strategies as st

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _fib(value: int) -> str:
    fibs = [1, 2]
    while fibs[-1] <= value:
        fibs.append(fibs[-1] + fibs[-2])
    marks = []
    for f in reversed(fibs):
        if f <= value:
            marks.append("1")
            value -= f
        elif marks:
            marks.append("0")
    return "".join(reversed(marks)) + "1"


def header(ids: list[int]) -> str:
    """A GPP header for ``ids`` (ascending), each as a single-id entry, padded like iabgpp-es."""
    bits = "000011" + "000001" + format(len(ids), "012b")
    last = 0
    for i in ids:
        bits += "0" + _fib(i - last)
        last = i
    bits += "0" * (-len(bits) % 8)
    bits += "0" * (-len(bits) % 6)
    return "".join(_B64[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))


def gpp(name: str, section: str) -> str:
    return f"{header([SECTION_IDS[name]])}~{section}"


# --------------------------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------------------------

TC_GO = "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"
TC_JAVA = "CPSG_8APSG_8ANwAAAENAwCAAAAAAAAAAAAAAAAAAAAA.QAAA.IAAA"


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        pytest.param("DBAA", [], id="java-HeaderV1Test-testDecode1"),
        pytest.param("DBABMA~" + TC_JAVA, [2], id="java-HeaderV1Test-testDecode2-DBABMA"),
        pytest.param("DBACNYA~" + TC_JAVA + "~1YNN", [2, 6], id="java-HeaderV1Test-testDecode3-DBACNYA"),
        pytest.param("DBABM~" + TC_GO, [2], id="go-parse_test-gpp-tcf-DBABM"),
        pytest.param("DBABMA~" + TC_GO, [2], id="go-parse_test-gpp-tcf-valid-quantum-DBABMA"),
        pytest.param("DBACNY~" + TC_GO + "~1YNN", [2, 6], id="go-parse_test-gpp-tcf-usp-DBACNY"),
        pytest.param("DBABTA~1YNN", [6], id="java-GppModelTest-testDecodeUspv1"),
        pytest.param("DBABBgA~xlgWEYCZAA", [8], id="go-parse_test-gpp-uspca-DBABBgA"),
        pytest.param("DBABRgA~bSFgmiU", [9], id="go-parse_test-gpp-uspva-DBABRgA"),
        pytest.param("DBACOeA~" + TC_JAVA + "~BPSG_8APSG_8AAyACAENGdCgf_gfgAfgfgBgABABAAABAB4AACACAAA.fHHHA4444ao~1YNN",
                     [2, 5, 6], id="java-GppModelTest-testDecodeUspv1AndTcfEuV2AndTcfCaV1"),
    ],
)
def test_header_section_ids(text: str, ids: list[int]) -> None:
    decoded = decode_gpp(text)
    assert decoded.section_ids == ids
    assert list(decoded.sections) == [SECTION_NAMES[i] for i in ids]


@pytest.mark.parametrize(
    ("ids", "encoded"),
    [
        pytest.param([], "DBAA", id="java-HeaderV1Test-testEncode1"),
        pytest.param([2], "DBABMA", id="java-HeaderV1Test-testEncode2"),
        pytest.param([2, 6], "DBACNYA", id="java-HeaderV1Test-testEncode3"),
        pytest.param([6], "DBABTA", id="java-GppModelTest-testNullConstructor"),
    ],
)
def test_the_test_header_encoder_matches_the_iab(ids: list[int], encoded: str) -> None:
    assert header(ids) == encoded


def test_every_section_of_java_decode_defaults_all() -> None:
    # java GppModelTest.testDecodeDefaultsAll: one default section of every kind iabgpp-java 3.2
    # knows (2, 5, 6, then 7-23), all asserted present.
    text = (
        "DBACOYs~CPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAAAAAAAAA.QAAA.IAAA~BPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAAAAAAA"
        ".YAAAAAAAAAA~1---~BAAAAAAAAABA.QA~BAAAAABA.QA~BAAAABA~BAAAAEA.QA~BAAAAAQA~BAAAAAEA.QA~BAAAAABA~BAAAAABA.QA"
        "~BAAAAAABAA.QA~BAAAAAQA.QA~BAAAAAABAA.QA~BAAAAAQA.QA~BAAAAAQA.QA~BAAAAABA.QA~BAAAAAAAQA.QA~BAAAAAQA.QA"
        "~BAAAAAABAA.QA"
    )
    decoded = decode_gpp(text)
    assert decoded.section_ids == [2, 5, 6, *range(7, 24)]
    assert set(decoded.sections) == {SECTION_NAMES[i] for i in decoded.section_ids}
    assert decoded.uspv1 == USPrivacy(1, None, None, None)
    for name in ("usnat", "usca", "usco", "usct", "usmn"):
        fields = decoded.fields(name)
        assert fields is not None and fields["GpcSegmentIncluded"] is True and fields["Gpc"] is False


# --------------------------------------------------------------------------------------------
# US sections: each vector names its source; expected = the fields that test asserts
# --------------------------------------------------------------------------------------------

_ALL_ONE_USNAT: dict[str, Any] = {
    "SharingNotice": 1, "SaleOptOutNotice": 1, "SharingOptOutNotice": 1, "TargetedAdvertisingOptOutNotice": 1,
    "SensitiveDataProcessingOptOutNotice": 1, "SensitiveDataLimitUseNotice": 1, "SaleOptOut": 1,
    "SharingOptOut": 1, "TargetedAdvertisingOptOut": 1,
    "SensitiveDataProcessing": [2, 1, 0, 2, 1, 0, 2, 1, 0, 2, 1, 0, 2, 1, 0, 2],
    "KnownChildSensitiveDataConsents": [2, 1, 0], "PersonalDataConsents": 1, "MspaCoveredTransaction": 1,
    "MspaOptOutOptionMode": 1, "MspaServiceProviderMode": 2,
}
# The values the java tests of the second-wave states assert (ProcessingNotice form).
_STATE = {
    "SaleOptOutNotice": 1, "TargetedAdvertisingOptOutNotice": 1, "SaleOptOut": 1, "TargetedAdvertisingOptOut": 1,
    "MspaCoveredTransaction": 1, "MspaOptOutOptionMode": 1, "MspaServiceProviderMode": 2,
}
_SDP8 = [2, 1, 0, 2, 1, 0, 2, 1]


def _gpc(on: bool) -> dict[str, Any]:
    return {"GpcSegmentIncluded": True, "Gpc": on}


_NO_GPC: dict[str, Any] = {"GpcSegmentIncluded": False}

US_CASES: list[Any] = [
    # usnat, current layout (16/3), Version 1 as iabgpp-java 3.2 writes it, and Version 2.
    pytest.param("usnat", "BVVVkkkkkpFY.YA", {"Version": 1, **_ALL_ONE_USNAT, **_gpc(True)},
                 id="java-UsNatTest-testDecode1"),
    pytest.param("usnat", "BVVVkkkkkpFY", {**_ALL_ONE_USNAT, **_NO_GPC},
                 id="java-UsNatTest-testDecodeWithGpcSegmentExcluded"),
    pytest.param("usnat", "CVVVkkkkkpFY.YA", {"Version": 2, **_ALL_ONE_USNAT, **_gpc(True)},
                 id="es-UsNat.test-should-encode-to-CVVVkkkkkpFY.YA"),
    pytest.param("usnat", "CAAAAAAAAABA.QA",
                 {"Version": 2, "SaleOptOut": 0, "SensitiveDataProcessing": [0] * 16,
                  "KnownChildSensitiveDataConsents": [0, 0, 0], "MspaCoveredTransaction": 1, **_gpc(False)},
                 id="es-UsNat.test-should-encode-default-to-CAAAAAAAAABA.QA"),
    pytest.param("usnat", "CAAAVVVVVVRA.QA",
                 {"Version": 2, "SensitiveDataProcessing": [1] * 16, "KnownChildSensitiveDataConsents": [1, 1, 1]},
                 id="es-UsNat.test-should-encode-usnat-v2-with-v2-values"),
    pytest.param("usnat", "CAAAVVVVAFBA.QA",
                 {"Version": 2, "SensitiveDataProcessing": [1] * 12 + [0] * 4,
                  "KnownChildSensitiveDataConsents": [1, 1, 0]},
                 id="es-UsNat.test-should-encode-usnat-v2-with-v1-values"),
    pytest.param("usnat", "BAAAAAAAAQRA.QA",
                 {"SensitiveDataProcessing": [0] * 15 + [1], "KnownChildSensitiveDataConsents": [0, 0, 1]},
                 id="java-GppModelTest-testDecode9"),
    # usnat, first layout (12/2): iabgpp-java pads it to 16/3 with zeros, iabgpp-es and this
    # decoder report the 12/2 entries the string carries; the asserted values are the same.
    pytest.param("usnat", "BVQqAAAACg",
                 {"SharingNotice": 1, "SaleOptOutNotice": 1, "SharingOptOutNotice": 1,
                  "TargetedAdvertisingOptOutNotice": 1, "SensitiveDataProcessingOptOutNotice": 0,
                  "SensitiveDataLimitUseNotice": 0, "SaleOptOut": 2, "SharingOptOut": 2, "TargetedAdvertisingOptOut": 2,
                  "SensitiveDataProcessing": [0] * 12, "KnownChildSensitiveDataConsents": [0, 0],
                  "PersonalDataConsents": 2, "MspaCoveredTransaction": 2, "MspaOptOutOptionMode": 0,
                  "MspaServiceProviderMode": 0, "Gpc": False},
                 id="java-UsNatTest-testDecodeBackwardsCompatibility"),
    pytest.param("usnat", "BAAAVVVVUQA.QA",
                 {"Version": 1, "SensitiveDataProcessing": [1] * 12, "KnownChildSensitiveDataConsents": [1, 1]},
                 id="es-UsNat.test-should-encode-usnat-v1-with-v1-values"),
    pytest.param("usnat", "BAAAAAABEQA.QA",
                 {"SensitiveDataProcessing": [0] * 11 + [1], "KnownChildSensitiveDataConsents": [0, 1]},
                 id="java-GppModelTest-testDecode8"),
    pytest.param("usnat", "BAAAAAAAAQA.QA",
                 {"SensitiveDataProcessing": [0] * 12, "KnownChildSensitiveDataConsents": [0, 0]},
                 id="java-GppModelTest-testDecode6"),
    pytest.param("usnat", "DSJgmkoZJSA.YA",
                 {"Version": 3, "SharingNotice": 1, "SaleOptOutNotice": 0, "SharingOptOutNotice": 2,
                  "TargetedAdvertisingOptOutNotice": 0, "SensitiveDataProcessingOptOutNotice": 2,
                  "SensitiveDataLimitUseNotice": 1, "SaleOptOut": 2, "SharingOptOut": 0, "TargetedAdvertisingOptOut": 0,
                  "SensitiveDataProcessing": [2, 1, 2, 2, 1, 0, 2, 2, 0, 1, 2, 1],
                  "KnownChildSensitiveDataConsents": [0, 2], "PersonalDataConsents": 1, "MspaCoveredTransaction": 1,
                  "MspaOptOutOptionMode": 0, "MspaServiceProviderMode": 2, "GpcSegmentType": 1, "Gpc": True},
                 id="go-sections-uspnat-uspnat_test"),
    # California
    pytest.param("usca", "BVWSSSVY.YA",
                 {"SaleOptOutNotice": 1, "SharingOptOut": 1, "SensitiveDataLimitUseNotice": 1, "SaleOptOut": 1,
                  "SensitiveDataProcessing": [2, 1, 0, 2, 1, 0, 2, 1, 0], "KnownChildSensitiveDataConsents": [2, 1],
                  "PersonalDataConsents": 1, "MspaCoveredTransaction": 1, "MspaOptOutOptionMode": 1,
                  "MspaServiceProviderMode": 2, **_gpc(True)},
                 id="java-UsCaTest-testDecode1"),
    pytest.param("usca", "BVWSSSVY", {"SaleOptOut": 1, "KnownChildSensitiveDataConsents": [2, 1], **_NO_GPC},
                 id="java-UsCaTest-testDecodeWithGpcSegmentExcluded"),
    pytest.param("usca", "xlgWEYCY.YA",
                 {"Version": 49, "SaleOptOutNotice": 2, "SharingOptOutNotice": 1, "SensitiveDataLimitUseNotice": 1,
                  "SaleOptOut": 2, "SharingOptOut": 0, "SensitiveDataProcessing": [0, 1, 1, 2, 0, 1, 0, 1, 2],
                  "KnownChildSensitiveDataConsents": [0, 0], "PersonalDataConsents": 0, "MspaCoveredTransaction": 2,
                  "MspaOptOutOptionMode": 1, "MspaServiceProviderMode": 2, "GpcSegmentType": 1, "Gpc": True},
                 id="go-sections-uspca-uspca_test"),
    # Virginia (no GPC sub-segment; KnownChildSensitiveDataConsents is a single Int(2))
    pytest.param("usva", "BVWSSVY",
                 {"SharingNotice": 1, "SaleOptOutNotice": 1, "TargetedAdvertisingOptOutNotice": 1, "SaleOptOut": 1,
                  "TargetedAdvertisingOptOut": 1, "SensitiveDataProcessing": _SDP8,
                  "KnownChildSensitiveDataConsents": 1,
                  "MspaCoveredTransaction": 1, "MspaOptOutOptionMode": 1, "MspaServiceProviderMode": 2},
                 id="java-UsVaTest-testDecode1"),
    pytest.param("usva", "bSFgmiU",
                 {"Version": 27, "SharingNotice": 1, "SaleOptOutNotice": 0, "TargetedAdvertisingOptOutNotice": 2,
                  "SaleOptOut": 0, "TargetedAdvertisingOptOut": 1, "SensitiveDataProcessing": [1, 2, 0, 0, 2, 1, 2, 2],
                  "KnownChildSensitiveDataConsents": 0, "MspaCoveredTransaction": 2, "MspaOptOutOptionMode": 1,
                  "MspaServiceProviderMode": 1},
                 id="go-sections-uspva-uspva_test"),
    # Colorado
    pytest.param("usco", "BVWSSVg.YA",
                 {"SharingNotice": 1, "SaleOptOutNotice": 1, "TargetedAdvertisingOptOutNotice": 1, "SaleOptOut": 1,
                  "TargetedAdvertisingOptOut": 1, "SensitiveDataProcessing": [2, 1, 0, 2, 1, 0, 2],
                  "KnownChildSensitiveDataConsents": 1, "MspaCoveredTransaction": 1, "MspaOptOutOptionMode": 1,
                  "MspaServiceProviderMode": 2, **_gpc(True)},
                 id="java-UsCoTest-testDecode1"),
    pytest.param("usco", "BVWSSVg", {"SaleOptOut": 1, **_NO_GPC}, id="java-UsCoTest-testDecodeWithGpcSegmentExcluded"),
    pytest.param("usco", "bSFgmJQ.YA",
                 {"Version": 27, "SharingNotice": 1, "SaleOptOutNotice": 0, "TargetedAdvertisingOptOutNotice": 2,
                  "SaleOptOut": 0, "TargetedAdvertisingOptOut": 1, "SensitiveDataProcessing": [1, 2, 0, 0, 2, 1, 2],
                  "KnownChildSensitiveDataConsents": 0, "MspaCoveredTransaction": 2, "MspaOptOutOptionMode": 1,
                  "MspaServiceProviderMode": 1, "Gpc": True},
                 id="go-sections-uspco-uspco_test"),
    # Utah (no GPC sub-segment)
    pytest.param("usut", "BVVkklWA",
                 {"SharingNotice": 1, "SaleOptOutNotice": 1, "TargetedAdvertisingOptOutNotice": 1, "SaleOptOut": 1,
                  "TargetedAdvertisingOptOut": 1, "SensitiveDataProcessing": _SDP8,
                  "KnownChildSensitiveDataConsents": 1,
                  "MspaCoveredTransaction": 1, "MspaOptOutOptionMode": 1, "MspaServiceProviderMode": 2},
                 id="java-UsUtTest-testDecode1"),
    pytest.param("usut", "bSRYJllA",
                 {"Version": 27, "SharingNotice": 1, "SaleOptOutNotice": 0, "TargetedAdvertisingOptOutNotice": 2,
                  "SensitiveDataProcessingOptOutNotice": 1, "SaleOptOut": 0, "TargetedAdvertisingOptOut": 1,
                  "SensitiveDataProcessing": [1, 2, 0, 0, 2, 1, 2, 1], "KnownChildSensitiveDataConsents": 1,
                  "MspaCoveredTransaction": 2, "MspaOptOutOptionMode": 1, "MspaServiceProviderMode": 1},
                 id="go-sections-usput-usput_test"),
    # Connecticut
    pytest.param("usct", "BVWSSZFg.YA",
                 {"SharingNotice": 1, **_STATE, "SensitiveDataProcessing": _SDP8,
                  "KnownChildSensitiveDataConsents": [2, 1, 0], **_gpc(True)},
                 id="java-UsCtTest-testDecode1"),
    pytest.param("usct", "BVWSSZFg", {"SaleOptOut": 1, **_NO_GPC}, id="java-UsCtTest-testDecodeWithGpcSegmentExcluded"),
    pytest.param("usct", "bSFgmSZQ.YA",
                 {"Version": 27, "SharingNotice": 1, "SaleOptOutNotice": 0, "TargetedAdvertisingOptOutNotice": 2,
                  "SaleOptOut": 0, "TargetedAdvertisingOptOut": 1, "SensitiveDataProcessing": [1, 2, 0, 0, 2, 1, 2, 1],
                  "KnownChildSensitiveDataConsents": [0, 2, 1], "MspaCoveredTransaction": 2,
                  "MspaOptOutOptionMode": 1, "MspaServiceProviderMode": 1, "Gpc": True},
                 id="go-sections-uspct-uspct_test"),
    # The second-wave states
    pytest.param("usfl", "BVWSSZlY",
                 {"ProcessingNotice": 1, **_STATE, "SensitiveDataProcessing": _SDP8,
                  "KnownChildSensitiveDataConsents": [2, 1, 2], "AdditionalDataProcessingConsent": 1},
                 id="java-UsFlTest-testDecode1"),
    pytest.param("usmt", "BVWSSZFY.YA",
                 {"SharingNotice": 1, **_STATE, "SensitiveDataProcessing": _SDP8,
                  "KnownChildSensitiveDataConsents": [2, 1, 0], "AdditionalDataProcessingConsent": 1, **_gpc(True)},
                 id="java-UsMtTest-testDecode1"),
    pytest.param("usmt", "BVWSSZFY", {"SaleOptOut": 1, **_NO_GPC}, id="java-UsMtTest-testDecodeWithGpcSegmentExcluded"),
    pytest.param("usor", "BVWSSRpFYA.YA",
                 {"ProcessingNotice": 1, **_STATE, "SensitiveDataProcessing": [2, 1, 0, 2, 1, 0, 2, 1, 0, 1, 2],
                  "KnownChildSensitiveDataConsents": [2, 1, 0], "AdditionalDataProcessingConsent": 1, **_gpc(True)},
                 id="java-UsOrTest-testDecode1"),
    pytest.param("usor", "BVWSSRpFYA", {"SaleOptOut": 1, **_NO_GPC},
                 id="java-UsOrTest-testDecodeWithGpcSegmentExcluded"),
    pytest.param("ustx", "BVWSSVWA.YA",
                 {"ProcessingNotice": 1, **_STATE, "SensitiveDataProcessing": _SDP8,
                  "KnownChildSensitiveDataConsents": 1, "AdditionalDataProcessingConsent": 1, **_gpc(True)},
                 id="java-UsTxTest-testDecode1"),
    pytest.param("ustx", "BVWSSVWA", {"SaleOptOut": 1, **_NO_GPC}, id="java-UsTxTest-testDecodeWithGpcSegmentExcluded"),
    pytest.param("usde", "BVWSSSSVYA.YA",
                 {"ProcessingNotice": 1, **_STATE, "SensitiveDataProcessing": [2, 1, 0, 2, 1, 0, 2, 1, 0],
                  "KnownChildSensitiveDataConsents": [2, 1, 0, 2, 1], "AdditionalDataProcessingConsent": 1,
                  **_gpc(True)},
                 id="java-UsDeTest-testDecode1"),
    pytest.param("usde", "BVWSSSSVYA", {"SaleOptOut": 1, **_NO_GPC},
                 id="java-UsDeTest-testDecodeWithGpcSegmentExcluded"),
    pytest.param("usia", "BVVkklWA.YA",
                 {"ProcessingNotice": 1, "SensitiveDataOptOutNotice": 1, **_STATE, "SensitiveDataProcessing": _SDP8,
                  "KnownChildSensitiveDataConsents": 1, **_gpc(True)},
                 id="java-UsIaTest-testDecode1"),
    pytest.param("usia", "BVVkklWA", {"SaleOptOut": 1, **_NO_GPC}, id="java-UsIaTest-testDecodeWithGpcSegmentExcluded"),
    pytest.param("usne", "BVWSSVWA.YA",
                 {"ProcessingNotice": 1, **_STATE, "SensitiveDataProcessing": _SDP8,
                  "KnownChildSensitiveDataConsents": 1, "AdditionalDataProcessingConsent": 1, **_gpc(True)},
                 id="java-UsNeTest-testDecode1"),
    pytest.param("usne", "BVWSSVWA", {"SaleOptOut": 1, **_NO_GPC}, id="java-UsNeTest-testDecodeWithGpcSegmentExcluded"),
    pytest.param("usnh", "BVWSSZFY.YA",
                 {"ProcessingNotice": 1, **_STATE, "SensitiveDataProcessing": _SDP8,
                  "KnownChildSensitiveDataConsents": [2, 1, 0], "AdditionalDataProcessingConsent": 1, **_gpc(True)},
                 id="java-UsNhTest-testDecode1"),
    pytest.param("usnh", "BVWSSZFY", {"SaleOptOut": 1, **_NO_GPC}, id="java-UsNhTest-testDecodeWithGpcSegmentExcluded"),
    pytest.param("usnj", "BVWSSRklWA.YA",
                 {"ProcessingNotice": 1, **_STATE, "SensitiveDataProcessing": [2, 1, 0, 2, 1, 0, 2, 1, 0, 1],
                  "KnownChildSensitiveDataConsents": [2, 1, 0, 2, 1], "AdditionalDataProcessingConsent": 1,
                  **_gpc(True)},
                 id="java-UsNjTest-testDecode1"),
    pytest.param("usnj", "BVWSSRklWA", {"SaleOptOut": 1, **_NO_GPC},
                 id="java-UsNjTest-testDecodeWithGpcSegmentExcluded"),
    pytest.param("ustn", "BVWSSVWA.YA",
                 {"ProcessingNotice": 1, **_STATE, "SensitiveDataProcessing": _SDP8,
                  "KnownChildSensitiveDataConsents": 1, "AdditionalDataProcessingConsent": 1, **_gpc(True)},
                 id="java-UsTnTest-testDecode1"),
    pytest.param("ustn", "BVWSSVWA", {"SaleOptOut": 1, **_NO_GPC}, id="java-UsTnTest-testDecodeWithGpcSegmentExcluded"),
    pytest.param("usmn", "BVWSSVWA.YA",
                 {"ProcessingNotice": 1, **_STATE, "SensitiveDataProcessing": _SDP8,
                  "KnownChildSensitiveDataConsents": 1, "AdditionalDataProcessingConsent": 1, **_gpc(True)},
                 id="java-UsMnTest-testDecode1"),
    pytest.param("usmn", "BVWSSVWA", {"SaleOptOut": 1, **_NO_GPC}, id="java-UsMnTest-testDecodeWithGpcSegmentExcluded"),
    # The newest sections: only iabgpp-es 3.2 has them (java 3.2.5 stops at usmn).
    pytest.param("usmd", "BVVU.YA",
                 {"MspaCoveredTransaction": 1, "MspaMode": 1, "ProcessingNotice": 1, "Gpc": True},
                 id="es-UsMd.test-should-decode"),
    pytest.param("usmd", "BVVU.YA",
                 {"MspaVersion": 1, "MspaCoveredTransaction": 1, "MspaMode": 1, "ProcessingNotice": 1,
                  "SaleOptOutNotice": 1, "TargetedAdvertisingOptOutNotice": 1, "SaleOptOut": 1,
                  "TargetedAdvertisingOptOut": 1, "AdditionalDataProcessingConsent": 1, **_gpc(True)},
                 id="es-UsMd.test-should-encode-with-all-fields-set"),
    pytest.param("usmd", "BQAA.QA",
                 {"MspaVersion": 1, "MspaCoveredTransaction": 1, "MspaMode": 0, "SaleOptOut": 0, **_gpc(False)},
                 id="es-UsMd.test-should-encode-default"),
    pytest.param("usmd", "BQAA", {"MspaCoveredTransaction": 1, **_NO_GPC},
                 id="es-UsMd.test-should-encode-default-with-gpc-segment-excluded"),
    *(
        pytest.param(name, "BVVV.kkk",
                     {"MspaVersion": 1, "MspaCoveredTransaction": 1, "MspaMode": 1, "ProcessingNotice": 1,
                      "SaleOptOutNotice": 1, "TargetedAdvertisingOptOutNotice": 1, "SaleOptOut": 1,
                      "TargetedAdvertisingOptOut": 1, "KnownChildSensitiveDataConsents": 1,
                      "AdditionalDataProcessingConsent": 1, "SensitiveDataProcessing": [2, 1, 0, 2, 1, 0, 2, 1],
                      "SensitiveDataConsentSegmentIncluded": True},
                     id=f"es-{test}.test-should-decode-and-encode-with-all-fields-set")
        for name, test in (("usin", "UsIn"), ("usky", "UsKy"), ("usri", "UsRi"))
    ),
    *(
        pytest.param(name, "BQAA", {"MspaCoveredTransaction": 1, "SensitiveDataConsentSegmentIncluded": False},
                     id=f"es-{test}.test-should-encode-default-with-sensitive-data-consent-segment-excluded")
        for name, test in (("usin", "UsIn"), ("usky", "UsKy"), ("usri", "UsRi"))
    ),
    *(
        pytest.param(name, "BQAA.AAA", {"MspaCoveredTransaction": 1, "SensitiveDataProcessing": [0] * 8,
                                        "SensitiveDataConsentSegmentIncluded": True},
                     id=f"es-{test}.test-should-encode-default")
        for name, test in (("usin", "UsIn"), ("usky", "UsKy"), ("usri", "UsRi"))
    ),
]


@pytest.mark.parametrize(("name", "section", "expected"), US_CASES)
def test_us_section(name: str, section: str, expected: dict[str, Any]) -> None:
    decoded = decode_gpp(gpp(name, section))
    fields = decoded.fields(name)
    assert fields is not None
    assert {k: fields.get(k) for k in expected} == expected


def test_every_us_section_has_a_vector() -> None:
    covered = {p.values[0] for p in US_CASES}
    assert covered == {spec.name for spec in US_SECTIONS.values()}


def test_us_section_fields_are_the_iab_names_in_order() -> None:
    # The full field list of one section of each shape, in the order the IAB tables give.
    assert list(decode_gpp(gpp("usva", "BVWSSVY")).fields("usva") or {}) == [
        "Version", "SharingNotice", "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice", "SaleOptOut",
        "TargetedAdvertisingOptOut", "SensitiveDataProcessing", "KnownChildSensitiveDataConsents",
        "MspaCoveredTransaction", "MspaOptOutOptionMode", "MspaServiceProviderMode",
    ]
    assert list(decode_gpp(gpp("usnat", "CVVVkkkkkpFY.YA")).fields("usnat") or {})[-3:] == [
        "GpcSegmentIncluded", "GpcSegmentType", "Gpc",
    ]


# --------------------------------------------------------------------------------------------
# Whole strings: tcfeuv2 and uspv1 through the existing decoders, tcfcav1
# --------------------------------------------------------------------------------------------


def test_go_parse_gpp_tcf_usp() -> None:
    # go parse_test "gpp-tcf-usp": ids [2, 6], the sections' text as given.
    decoded = decode_gpp("DBACNY~" + TC_GO + "~1YNN")
    assert isinstance(decoded.sections["tcfeuv2"], TCString)
    assert decoded.tcfeuv2 is not None and decoded.tcfeuv2.version == 2
    assert decoded.uspv1 == USPrivacy(1, True, False, False)
    assert decoded.fields("uspv1") is None


def test_java_decode_uspv1_and_tcfeuv2() -> None:
    # java GppModelTest.testDecodeUspv1AndTcfEuV2
    decoded = decode_gpp("DBACNYA~" + TC_JAVA + "~1YNN")
    tc = decoded.tcfeuv2
    assert tc is not None
    assert (tc.version, tc.cmp_id, tc.cmp_version, tc.consent_screen, tc.consent_language) == (2, 880, 0, 0, "EN")
    assert (tc.vendor_list_version, tc.tcf_policy_version, tc.is_service_specific) == (48, 2, False)
    assert (tc.use_non_standard_texts, tc.purpose_one_treatment, tc.publisher_cc) == (False, False, "AA")
    assert tc.created == tc.last_updated == datetime(2022, 1, 1, tzinfo=UTC)
    assert decoded.uspv1 == USPrivacy(1, True, False, False)


@pytest.mark.parametrize(
    ("text", "vendors"),
    [
        pytest.param("DBABMA~CPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAAOAAAABAAAAA.QAAA.IAAA", {28},
                     id="java-GppModelTest-testDecode1"),
        pytest.param("DBABMA~CPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAAOwAQAOgAAAA.QAAA.IAAA", {29},
                     id="java-GppModelTest-testDecode2"),
        pytest.param("DBABMA~CPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAFpQAwAAgCtAWkAAAAAAA.QAAA.IAAA", {1, 173, 722},
                     id="java-GppModelTest-testDecode3"),
    ],
)
def test_tcfeuv2_vendor_consents(text: str, vendors: set[int]) -> None:
    tc = decode_gpp(text).tcfeuv2
    assert tc is not None and tc.vendor_consents == vendors


_B = [True] * 6 + [False] * 6
_CA_FULL: dict[str, Any] = {
    "CmpId": 50, "CmpVersion": 2, "VendorListVersion": 413, "UseNonStandardStacks": True,
    "SpecialFeatureExpressConsent": [False] * 6 + [True] * 6,
    "PurposesExpressConsent": _B + _B, "PurposesImpliedConsent": [not b for b in _B + _B],
    "VendorExpressConsent": [12, 24, 48], "VendorImpliedConsent": [18, 30],
    "PubPurposesExpressConsent": ([True] * 3 + [False] * 3) * 4,
    "PubPurposesImpliedConsent": ([False] * 3 + [True] * 3) * 4,
    "NumCustomPurposes": 3, "CustomPurposesExpressConsent": [False, True, False],
    "CustomPurposesImpliedConsent": [True, False, True],
    "Created": datetime(2022, 1, 1, tzinfo=UTC), "LastUpdated": datetime(2022, 1, 1, tzinfo=UTC),
    "ConsentLanguage": "EN", "PubPurposesSegmentType": 3,
}


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        pytest.param("BPSG_8APSG_8AAyACAENGdCgf_gfgAfgfgBgABABAAABAB4AACACAAA.fHHHA4444ao", _CA_FULL,
                     id="java-GppModelTest-testDecodeUspv1AndTcfEuV2AndTcfCaV1-legacy-fixed-ranges"),
        pytest.param("BPSG_8APSG_8AAyACAENGdCgf_gfgAfgfgBhADVqxGAD0AILVgAA.fHHHA4444ao", _CA_FULL,
                     id="es-TcfCaV1.test-should-decode-BPSG_8APSG_8AAyACAENGdCgf-Fibonacci-ranges"),
        pytest.param(
            "BPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAAAAAAA.YAAAAAAAAAA",
            {"CmpId": 0, "CmpVersion": 0, "VendorListVersion": 0, "UseNonStandardStacks": False,
             "SpecialFeatureExpressConsent": [False] * 12, "PurposesExpressConsent": [False] * 24,
             "PurposesImpliedConsent": [False] * 24, "VendorExpressConsent": [], "VendorImpliedConsent": [],
             "PubPurposesExpressConsent": [False] * 24, "PubPurposesImpliedConsent": [False] * 24,
             "NumCustomPurposes": 0, "CustomPurposesExpressConsent": [], "CustomPurposesImpliedConsent": [],
             "Created": datetime(2022, 1, 1, tzinfo=UTC), "ConsentLanguage": "EN", "PubPurposesSegmentType": 3},
            id="es-TcfCaV1.test-should-decode-BPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAAAAAAA",
        ),
        pytest.param("BPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAAAAACCgAS7o.YAAAAAAAAAA",
                     {"PubRestrictions": [RangeEntry(1, 1, (1, 2, 3, 5, 6, 7, 9))]},
                     id="es-TcfCaV1.test-should-decode-PubRestrictions-Fibonacci"),
        pytest.param("BPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAAAAACCgBwABAAOAAoADgAJA.YAAAAAAAAAA",
                     {"PubRestrictions": [RangeEntry(1, 1, (1, 2, 3, 5, 6, 7, 9))]},
                     id="es-TcfCaV1.test-should-decode-a-legacy-fixed-range-PubRestrictions-string"),
        pytest.param("BPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAAAAAAA.YAAAAAAAAAA.IAGO5wAA",
                     {"DisclosedVendors": [1, 2, 3, 5, 6, 7, 10, 11, 12]},
                     id="es-TcfCaV1.test-should-decode-a-legacy-traditional-base64-DisclosedVendors-string"),
        pytest.param(
            "BQliWsAQliWsAPoABAELC9CoAKgAAJIAAApNAOABUAC0AGgAQwAlgBQAC6AG0AO4AfgBBATAAnMBSYEwYFgAXQBOwC3ALgAc4A7gCAAEmAJ2AT8"
            "AxQBmgDOgGfANeAcQA6oCJgEngJyAT-Ao8BUQCpQFvALhAXQAvcBf4DMAGggNNAbUA3EBxoDlgHiAPNAfIBAQCEgEbgI_gSlgmACYIAA.YAAAAAAAAAA",
            {"CmpId": 1000, "CmpVersion": 1, "ConsentLanguage": "EL", "VendorListVersion": 189,
             "UseNonStandardStacks": True,
             "VendorExpressConsent": [42, 45, 52, 67, 75, 80, 93, 109, 119, 126, 130, 1216, 1254, 1318],
             "VendorImpliedConsent": [
                 93, 157, 183, 184, 231, 238, 256, 294, 315, 319, 394, 410, 413, 415, 431, 452, 469, 550, 591, 626, 639,
                 655, 674, 677, 734, 737, 744, 759, 767, 816, 833, 845, 874, 881, 909, 918, 964, 973, 996, 1028, 1060,
                 1134, 1151, 1189, 1216, 1217]},
            id="es-TcfCaV1.test-should-decode-a-legacy-string-and-re-encode-it",
        ),
    ],
)
def test_tcfcav1(section: str, expected: dict[str, Any]) -> None:
    fields = decode_gpp(gpp("tcfcav1", section)).fields("tcfcav1")
    assert fields is not None
    assert {k: fields.get(k) for k in expected} == expected


def test_tcfcav1_legacy_and_fibonacci_spellings_of_the_same_consent_decode_alike() -> None:
    # es-TcfCaV1.test: the re-encoding of the legacy string above, in the Fibonacci form.
    legacy = decode_gpp(gpp("tcfcav1", (
        "BQliWsAQliWsAPoABAELC9CoAKgAAJIAAApNAOABUAC0AGgAQwAlgBQAC6AG0AO4AfgBBATAAnMBSYEwYFgAXQBOwC3ALgAc4A7gCAAEmAJ2AT8"
        "AxQBmgDOgGfANeAcQA6oCJgEngJyAT-Ao8BUQCpQFvALhAXQAvcBf4DMAGggNNAbUA3EBxoDlgHiAPNAfIBAQCEgEbgI_gSlgmACYIAA"
        ".YAAAAAAAAAA")))
    fibonacci = decode_gpp(gpp("tcfcav1", (
        "BQliWsAQliWsAPoABAELC9CoAKgAAJIAAApNAOBMZZGDDAxMmWskIahojBMGBYoGiOJ4FlhahgNZUxMZiYDUwllGgYGJpYyBjLIwZFqasFll"
        "NGqaMhisVpTU1DyeAAA.YAAAAAAAAAA")))
    assert legacy.sections["tcfcav1"] == fibonacci.sections["tcfcav1"]


def test_tcfcav1_vendor_expansion_is_capped() -> None:
    # 17 legacy PubRestrictions entries each naming vendors 1-65535: 33 bits apiece, 1.1 million
    # ids in all. The legacy reading stops at the cap; the Fibonacci reading fails on its own,
    # and that error is the one decode_gpp raises, at once.
    core = "000001" + "0" * 193 + "0" * 17 * 2 + format(17, "012b")
    core += ("0" * 8 + format(1, "012b") + "1" + format(1, "016b") + format(65535, "016b")) * 17
    core += "0" * (-len(core) % 6)
    text = "".join(_B64[int(core[i : i + 6], 2)] for i in range(0, len(core), 6))
    with pytest.raises(ConsentFormatError, match="PubRestrictions entry 17 ids: expands to more than 1048576"):
        gpp_tcfca._core(core, gpp_tcfca._INT)
    started = time.perf_counter()
    with pytest.raises(ConsentFormatError, match="tcfcav1 PubRestrictions"):
        decode_gpp(gpp("tcfcav1", text))
    assert time.perf_counter() - started < 5.0


def test_unknown_section_ids_are_kept_undecoded() -> None:
    # A header for ids 7 and 30 (a future state): usnat is decoded, 30 is kept as text.
    decoded = decode_gpp(f"{header([7, 30])}~CVVVkkkkkpFY.YA~anything.here")
    assert decoded.section_ids == [7, 30]
    assert list(decoded.sections) == ["usnat"]
    assert decoded.undecoded == {30: "anything.here"}


def test_group_entries_in_the_header() -> None:
    # The Range(Fibonacci) example of the GPP consent string specification: [3, 5, 6, 7, 8] as a
    # single 3 and a group at offset 2 of length 3. Id 3 is the header's own id: kept undecoded.
    bits = "000011" + "000001" + "000000000010" + "0" + "0011" + "1" + "011" + "0011"
    bits += "0" * (-len(bits) % 6)
    head = "".join(_B64[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))
    sections = ["x", "BPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAAAAAAA.YAAAAAAAAAA", "1YNN", "CVVVkkkkkpFY.YA", "BVWSSSVY.YA"]
    decoded = decode_gpp("~".join([head, *sections]))
    assert decoded.section_ids == [3, 5, 6, 7, 8]
    assert list(decoded.sections) == ["tcfcav1", "uspv1", "usnat", "usca"]
    assert decoded.undecoded == {3: "x"}


def test_gpp_string_is_frozen() -> None:
    decoded = decode_gpp("DBABTA~1YNN")
    assert isinstance(decoded, GPPString)
    with pytest.raises(AttributeError):
        decoded.section_ids = []  # type: ignore[misc]


def test_go_benchmark_parse_string() -> None:
    # go parse_test BenchmarkParse: a six-section string it parses without error.
    decoded = decode_gpp("DBABrGA~DSJgmkoZJSA.YA~BlgWEYCY.QA~BSFgmiU~bSFgmJQ.YA~BWJYJllA~bSFgmSZQ.YA")
    assert decoded.section_ids == [7, 8, 9, 10, 11, 12]
    assert list(decoded.sections) == ["usnat", "usca", "usva", "usco", "usut", "usct"]


# --------------------------------------------------------------------------------------------
# Malformed input: ConsentFormatError naming the section and the field
# --------------------------------------------------------------------------------------------

USNAT = "CVVVkkkkkpFY.YA"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        pytest.param("", ["GPP string", "empty"], id="empty"),
        pytest.param("   ", ["GPP string", "empty"], id="blank"),
        pytest.param("AAAA", ["header", "Type"], id="go-parse_test-TestFailFastHeaderValidate-invalid-type"),
        pytest.param(TC_GO, ["header", "Type", "bare TC string"], id="bare-tc-string"),
        pytest.param("DCABM~" + TC_GO, ["header", "Version"], id="header-version-2"),
        pytest.param("DB", ["header", "SectionIds NumEntries", "truncated"], id="go-parse_test-short-header"),
        pytest.param("DBA", ["header", "SectionIds NumEntries", "truncated"], id="header-without-count"),
        pytest.param("DBGBM~" + TC_GO, ["header", "SectionIds", "truncated"], id="go-parse_test-gpp-tcf-error"),
        pytest.param("DBABM", ["header", "SectionIds", "0 sections"], id="header-lists-a-missing-section"),
        pytest.param("DBABM~" + TC_GO + "~1YNN", ["header", "SectionIds", "lists 1", "2 sections"],
                     id="more-sections-than-ids"),
        pytest.param("DBACNY~" + TC_GO, ["header", "SectionIds", "1 sections"], id="fewer-sections-than-ids"),
        pytest.param("DB!BM~" + TC_GO, ["header", "'!'", "base64url"], id="header-not-base64url"),
        pytest.param("DBABM=~" + TC_GO, ["header", "'='", "base64url"], id="header-padding-character"),
        pytest.param("DBABM~", ["tcfeuv2", "section", "empty"], id="empty-section"),
        pytest.param("DBABM~" + TC_GO[:20], ["tcfeuv2", "truncated"], id="tcfeuv2-truncated"),
        pytest.param("DBABM~B" + TC_GO[1:], ["tcfeuv2", "version is 1"], id="tcfeuv2-v1-string"),
        pytest.param("DBABTA~1YN", ["uspv1", "4 characters"], id="uspv1-too-short"),
        pytest.param("DBABTA~2YNN", ["uspv1", "version"], id="uspv1-version-2"),
        pytest.param("DBABjw~" + TC_GO + "~1YNN", ["tcfcav1", "VendorExpressConsent"],
                     id="go-parse_test-gpp-tcfca-usp-an-EU-TC-string-in-the-tcfcav1-slot"),
        pytest.param(gpp("tcfcav1", "YAAAAAAAAAA"), ["tcfcav1", "core segment", "missing"], id="tcfcav1-no-core"),
        pytest.param(gpp("tcfcav1", "BPSG_8APSG_8A"), ["tcfcav1", "CmpId", "truncated"],
                     id="tcfcav1-truncated-core"),
        pytest.param(gpp("tcfcav1", "BPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAAAAAAA.zzzz"),
                     ["tcfcav1", "segment type"], id="tcfcav1-unknown-segment"),
        pytest.param(gpp("tcfcav1", "BPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAAAAAAA.YAAAAAAAAAA.YAAAAAAAAAA"),
                     ["tcfcav1", "appears twice"], id="tcfcav1-duplicate-segment"),
        pytest.param("DBABBgA~xlgWE", ["usca", "SensitiveDataProcessing", "truncated"],
                     id="go-parse_test-gpp-uspca-error"),
        pytest.param(gpp("usnat", "z"), ["usnat", "SharingNotice", "truncated"],
                     id="java-UsNatTest-testDecodeGarbage"),
        pytest.param(gpp("usnat", "CVVVkkkkk"), ["usnat", "SensitiveDataProcessing", "truncated"],
                     id="usnat-truncated"),
        pytest.param(gpp("usnat", "CVVVkkkkk!FY.YA"), ["usnat", "core segment", "'!'"], id="usnat-bad-character"),
        pytest.param(gpp("usnat", "CVVVkkkkkpFY."), ["usnat", "GPC sub-segment", "empty"], id="usnat-empty-gpc"),
        pytest.param(gpp("usnat", "CVVVkkkkkpFY.gA"), ["usnat", "GpcSegmentType", "is 2"], id="usnat-gpc-type-2"),
        pytest.param(gpp("usnat", USNAT + ".YA"), ["usnat", "sub-segments", "2 found"], id="usnat-two-subsegments"),
        pytest.param(gpp("usva", "BVWSSVY.YA"), ["usva", "sub-segments", "no sub-segment"], id="usva-has-no-gpc"),
        pytest.param(gpp("usnat", "C__VkkkkkpFY"), ["usnat", "SharingNotice", "is 3"], id="usnat-two-bit-value-3"),
        pytest.param(gpp("usnat", "CVVVkkkk_pFY"), ["usnat", "SensitiveDataProcessing[", "is 3"],
                     id="usnat-list-entry-3"),
        pytest.param(gpp("usmd", "BV"), ["usmd", "SaleOptOutNotice", "truncated"], id="usmd-truncated"),
        pytest.param(gpp("usin", "BVVV.k"), ["usin", "SensitiveDataProcessing", "truncated"],
                     id="usin-truncated-sensitive-segment"),
        # The October 2025 draft layout: SectionID 25, Version 1, SubSections, then the core.
        pytest.param(gpp("usin", "ZBAA.BVVV"), ["usin", "MspaVersion", "draft section header"],
                     id="usin-draft-section-header"),
        pytest.param("DBABLA~" + USNAT + "~", ["header", "SectionIds", "lists 1", "2 sections"],
                     id="trailing-tilde"),
        pytest.param("DBABLA~~" + USNAT, ["header", "SectionIds", "lists 1", "2 sections"], id="double-tilde"),
    ],
)
def test_malformed(text: str, names: list[str]) -> None:
    with pytest.raises(ConsentFormatError) as caught:
        decode_gpp(text)
    message = str(caught.value)
    for name in names:
        assert name in message, message


@pytest.mark.parametrize("value", [None, 42, b"DBABTA~1YNN", ["DBABTA~1YNN"]])
def test_non_string_input(value: Any) -> None:
    with pytest.raises(ConsentFormatError, match="GPP string must be a string"):
        decode_gpp(value)


def test_oversized_input() -> None:
    with pytest.raises(ConsentFormatError, match="at most"):
        decode_gpp("DBABTA~1YNN" + "A" * MAX_INPUT_CHARS)


def test_huge_header_group_is_counted_not_expanded() -> None:
    # One group of 46367 ids for a one-section string: refused by counting, not by listing ids.
    bits = "000011" + "000001" + "000000000001" + "1" + _fib(1) + _fib(46367)
    bits += "0" * (-len(bits) % 6)
    head = "".join(_B64[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))
    with pytest.raises(ConsentFormatError, match="more section ids than the 1 sections"):
        decode_gpp(head + "~1YNN")


def test_fibonacci_beyond_16_bits_is_refused() -> None:
    bits = "000011" + "000001" + "000000000001" + "0" + "01" * 40 + "1"
    bits += "0" * (-len(bits) % 6)
    head = "".join(_B64[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))
    with pytest.raises(ConsentFormatError, match=r"header SectionIds entry 1 offset: .*exceeds 65535"):
        decode_gpp(head + "~1YNN")


# --------------------------------------------------------------------------------------------
# Fuzzing: nothing but ConsentFormatError, ever; and bounded, linear work
# --------------------------------------------------------------------------------------------

VALID = [
    "DBABM~" + TC_GO,
    "DBACNYA~" + TC_JAVA + "~1YNN",
    "DBABLA~" + USNAT,
    "DBABLA~BVQqAAAACg",
    "DBABrGA~DSJgmkoZJSA.YA~BlgWEYCY.QA~BSFgmiU~bSFgmJQ.YA~BWJYJllA~bSFgmSZQ.YA",
    "DBACOeA~" + TC_JAVA + "~BPSG_8APSG_8AAyACAENGdCgf_gfgAfgfgBgABABAAABAB4AACACAAA.fHHHA4444ao~1YNN",
    gpp("tcfcav1", "BPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAAAAACCgAS7o.YAAAAAAAAAA.IAGO5wAA"),
    gpp("usin", "BVVV.kkk"),
    gpp("usmd", "BVVU.YA"),
]
_GPP_CHARS = _B64 + "~.=!1YN- "


def _no_other_error(text: str) -> None:
    with contextlib.suppress(ConsentFormatError):
        decoded = decode_gpp(text)
        # Fibonacci offsets are >= 1, so decoded ids can only be strictly increasing.
        assert all(a < b for a, b in zip(decoded.section_ids, decoded.section_ids[1:], strict=False))
        # A decoded string also maps without error (every field the table may name).
        gpp_to_preferences(decoded, {"SaleOptOut": "a", "Gpc": ["b"], "SensitiveDataProcessing.2": "c",
                                     "OptOutSale": "d"}, tcf_purposes={1: "e"}, tcf_vendors={755: "f"})


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(
    st.text(),
    st.text(alphabet=_GPP_CHARS),
    st.builds(lambda s: "DBA" + s, st.text(alphabet=_GPP_CHARS)),
    st.builds(lambda h, s: h + "~" + s, st.sampled_from(["DBABLA", "DBABBgA", "DBABjw", "DBABMA", "DBABTA"]),
              st.text(alphabet=_GPP_CHARS)),
))
def test_random_text_only_raises_consent_format_error(text: str) -> None:
    _no_other_error(text)


@settings(max_examples=300, deadline=None)
@given(data=st.binary())
def test_random_bytes_only_raise_consent_format_error(data: bytes) -> None:
    _no_other_error(data.decode("latin-1"))
    with pytest.raises(ConsentFormatError):
        decode_gpp(data)  # type: ignore[arg-type]


@settings(max_examples=600, deadline=None)
@given(data=st.data())
def test_mutated_valid_strings_only_raise_consent_format_error(data: st.DataObject) -> None:
    text = data.draw(st.sampled_from(VALID))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        how = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        char = data.draw(st.sampled_from(_GPP_CHARS))
        if how == "flip" and at < len(text):
            text = text[:at] + char + text[at + 1 :]
        elif how == "insert":
            text = text[:at] + char + text[at:]
        else:
            text = text[:at] + text[at + 1 :]
    _no_other_error(text)


def _hostile(size: int) -> list[str]:
    """Inputs of ``size`` characters aimed at every loop of the decoder."""
    fill = "A" * size
    # 4095 single-id header entries (ids 28-4122: none has a format) and as many sections.
    bits = "000011" + "000001" + "1" * 12 + "0" + _fib(28) + "011" * 4094
    bits += "0" * (-len(bits) % 6)
    many = "".join(_B64[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))
    return [
        many + "~x" * 4095 + "y" * (size - 2 * 4095 - len(many)),
        "DBf" + "_" * size,  # 4095 entries, all ones: the shortest Fibonacci codes
        "DBAB" + "V" * size,  # 0101...: a Fibonacci code that never ends
        "DBABLA~" + "CVVVkkkkkpFY" + "A" * size,  # an overlong usnat core
        "DBABLA~" + USNAT + "." * size,  # thousands of sub-segments
        "DBABLA" + "~" * size,  # thousands of sections
        gpp("tcfcav1", "B" + "_" * size),  # maximal ranges and bitfields
        gpp("tcfcav1", "BPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAAAAACC" + "gB" * (size // 2)),
        gpp("tcfcav1", ".".join(["BPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAAAAAAA", "I" + fill])),
        "DBABM~C" + "_" * size,  # a TC string of all ones
    ]


def test_decoding_hostile_input_of_the_maximum_size_is_fast() -> None:
    # Structurally the decoder is linear: every loop walks the input once (str.translate,
    # str.find in bounded windows, one pass per field), and ranges are counted before they are
    # expanded. This bounds it coarsely: each maximum-size hostile input takes at most ~0.2 s
    # on an idle core (most take a few ms); 5 s leaves room for a machine shared with other
    # work, while quadratic work on these inputs would take minutes.
    for text in _hostile(MAX_INPUT_CHARS - 100):
        started = time.perf_counter()
        with contextlib.suppress(ConsentFormatError):
            decode_gpp(text)
        assert time.perf_counter() - started < 5.0, text[:40]


def test_decoding_time_grows_linearly() -> None:
    # Coarse, not a benchmark: 8x the input may cost 8x the time, with a generous allowance for
    # noise on a shared machine; quadratic work would be 64x.
    def cost(size: int) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for text in _hostile(size):
                with contextlib.suppress(ConsentFormatError):
                    decode_gpp(text)
            best = min(best, time.perf_counter() - started)
        return best

    small, large = cost(4_000), cost(32_000)
    assert large < 30 * small + 0.05, (small, large)


# --------------------------------------------------------------------------------------------
# gpp_to_preferences
# --------------------------------------------------------------------------------------------

TABLE = {"SaleOptOut": ["C0004"], "TargetedAdvertisingOptOut": ["C0004", "C0005"], "Gpc": ["C0004", "C0005"]}


@pytest.mark.parametrize(
    ("text", "table", "expected"),
    [
        # java UsNatTest testDecode1: every opt-out 1 (opted out), GPC on.
        pytest.param("DBABLA~BVVVkkkkkpFY.YA", TABLE, {"C0004": False, "C0005": False}, id="usnat-opted-out"),
        # java UsNatTest testDecodeBackwardsCompatibility: sale and targeting 2 (did not opt out).
        pytest.param("DBABLA~BVQqAAAACg", TABLE, {"C0004": True, "C0005": True}, id="usnat-did-not-opt-out"),
        # es UsNat default: every opt-out 0 (not applicable), GPC off: nothing said.
        pytest.param("DBABLA~CAAAAAAAAABA.QA", TABLE, {}, id="usnat-not-applicable"),
        # go uspca: SaleOptOut 2 grants, SharingOptOut 0 says nothing, GPC false says nothing.
        pytest.param("DBABBgA~xlgWEYCZAA", {"SaleOptOut": "sale", "SharingOptOut": "share", "Gpc": "gpc"},
                     {"sale": True}, id="usca-sale-granted"),
        # go uspva: SaleOptOut 0, TargetedAdvertisingOptOut 1.
        pytest.param("DBABRgA~bSFgmiU", TABLE, {"C0004": False, "C0005": False}, id="usva-targeting-opted-out"),
        pytest.param("DBABRgA~bSFgmiU", {"SaleOptOut": ["C0004"]}, {}, id="usva-sale-not-applicable"),
        # Sections disagree: usnat grants sale (BVQqAAAACg), usca opts out (BVWSSSVY.YA): denial wins.
        pytest.param(f"{header([7, 8])}~BVQqAAAACg~BVWSSSVY.YA", {"SaleOptOut": "sale"}, {"sale": False},
                     id="denial-wins-across-sections"),
        pytest.param(f"{header([7, 8])}~BVQqAAAACg~BVWSSSVY.YA", {"usnat.SaleOptOut": "sale"}, {"sale": True},
                     id="section-qualified-key"),
        # Lists: java UsCaTest SensitiveDataProcessing [2, 1, 0, 2, 1, 0, 2, 1, 0].
        pytest.param("DBABBgA~BVWSSSVY.YA", {"SensitiveDataProcessing": "s"}, {"s": False}, id="list-any-1-denies"),
        pytest.param("DBABBgA~BVWSSSVY.YA", {"SensitiveDataProcessing.1": "s1", "SensitiveDataProcessing.2": "s2",
                                             "SensitiveDataProcessing.3": "s3", "SensitiveDataProcessing.30": "x"},
                     {"s1": True, "s2": False}, id="list-entries"),
        # Consents: PersonalDataConsents 1 (no consent) denies, 2 grants.
        pytest.param("DBABLA~BVVVkkkkkpFY", {"PersonalDataConsents": "p"}, {"p": False}, id="consent-no"),
        pytest.param("DBABLA~BVQqAAAACg", {"PersonalDataConsents": "p"}, {"p": True}, id="consent-yes"),
        # KnownChildSensitiveDataConsents: a list in usnat, a single value in usva.
        pytest.param("DBABRgA~BVWSSVY", {"KnownChildSensitiveDataConsents": "k"}, {"k": False},
                     id="scalar-known-child"),
        # uspv1 inside GPP: OptOutSale N grants, Y denies.
        pytest.param("DBABTA~1YNN", {"OptOutSale": "sale"}, {"sale": True}, id="uspv1-not-opted-out"),
        pytest.param("DBABTA~1YYN", {"OptOutSale": "sale"}, {"sale": False}, id="java-GppModelTest-testDecode4-1YYN"),
        pytest.param("DBABTA~1---", {"OptOutSale": "sale"}, {}, id="uspv1-not-applicable"),
        pytest.param("DBABTA~1YYN", TABLE, {}, id="uspv1-ignored-by-state-fields"),
        # A state section with GPC on.
        pytest.param(gpp("usmd", "BVVU.YA"), {"Gpc": "g"}, {"g": False}, id="usmd-gpc"),
        pytest.param(gpp("usin", "BVVV.kkk"), {"usin.SensitiveDataProcessing.1": "s"}, {"s": True},
                     id="usin-sensitive-consent"),
    ],
)
def test_gpp_to_preferences(text: str, table: dict[str, Any], expected: dict[str, bool]) -> None:
    assert gpp_to_preferences(text, table) == expected
    assert gpp_to_preferences(decode_gpp(text), table) == expected


def test_gpp_to_preferences_tcf_through_tcf_to_preferences() -> None:
    # java GppModelTest testDecode3: vendor consents {1, 173, 722}, no purpose consents.
    text = "DBABMA~CPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAFpQAwAAgCtAWkAAAAAAA.QAAA.IAAA"
    assert gpp_to_preferences(text, {}) == {}
    assert gpp_to_preferences(text, {}, tcf_vendors={173: "V173", 755: "V755"}) == {"V173": True, "V755": False}
    assert gpp_to_preferences(text, {}, tcf_purposes={1: "C0001"}) == {"C0001": False}
    # No tcfeuv2 section: the TCF tables say nothing.
    assert gpp_to_preferences("DBABTA~1YNN", {}, tcf_purposes={1: "C0001"}) == {}


def test_gpp_to_preferences_merges_tcf_with_us_signals_denial_winning() -> None:
    text = f"{header([2, 7])}~{TC_JAVA}~BVQqAAAACg"  # usnat grants sale; the TC string consents to nothing
    assert gpp_to_preferences(text, {"SaleOptOut": "C0004"}) == {"C0004": True}
    assert gpp_to_preferences(text, {"SaleOptOut": "C0004"}, tcf_purposes={1: "C0004"}) == {"C0004": False}


@pytest.mark.parametrize(
    ("table", "match"),
    [
        pytest.param({"SaleOptOutNotice": "x"}, "not \\[section.\\]Field", id="notice-is-not-a-signal"),
        pytest.param({"Version": "x"}, "not \\[section.\\]Field", id="version"),
        pytest.param({"MspaCoveredTransaction": "x"}, "not \\[section.\\]Field", id="mspa"),
        pytest.param({"SaleOptout": "x"}, "not \\[section.\\]Field", id="typo"),
        pytest.param({"usva.SharingOptOut": "x"}, "usva has no SharingOptOut", id="section-without-field"),
        pytest.param({"usfl.Gpc": "x"}, "usfl has no Gpc", id="section-without-gpc"),
        pytest.param({"SensitiveDataProcessing.0": "x"}, "numbered from 1", id="index-0"),
        pytest.param({"Gpc.1": "x"}, "single value", id="index-on-gpc"),
        pytest.param({"SaleOptOut": ""}, "non-empty category", id="empty-category"),
        pytest.param({"SaleOptOut": [1]}, "non-empty category", id="int-category"),
        pytest.param({"SaleOptOut": 5}, "category id or a list", id="int-value"),
        pytest.param({7: "x"}, "keys must be strings", id="int-key"),
        pytest.param(["SaleOptOut"], "must be a mapping", id="not-a-mapping"),
    ],
)
def test_gpp_to_preferences_bad_table(table: Any, match: str) -> None:
    with pytest.raises(ConsentFormatError, match=match):
        gpp_to_preferences("DBABLA~" + USNAT, table)
