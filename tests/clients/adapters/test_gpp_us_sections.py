"""consent_client.adapters.gpp: every US state section, each vector with the fields its test asserts.

Every vector names its source in its param id: ``java`` is IABTechLab/iabgpp-java 3.2.5
(iabgpp-encoder/src/test/java/com/iab/gpp/encoder/...), ``es`` is IABTechLab/iabgpp-es 3.2.0
(modules/cmpapi/test/encoder/...), ``go`` is prebid/go-gpp (parse_test.go, sections/*/*_test.go).
Expected values are only those the named test asserts (see test_gpp.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from consent_client.adapters import decode_gpp
from consent_client.adapters.gpp_sections import US_SECTIONS

from .gpp_strings import gpp

# US sections: each vector names its source; expected = the fields that test asserts

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
