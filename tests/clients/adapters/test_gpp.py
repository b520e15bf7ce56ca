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
)
from consent_client.adapters.gpp_sections import SECTION_NAMES

from .gpp_strings import B64, gpp, header

# Header

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


# Whole strings: tcfeuv2 and uspv1 through the existing decoders, tcfcav1

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
    text = "".join(B64[int(core[i : i + 6], 2)] for i in range(0, len(core), 6))
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
    head = "".join(B64[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))
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
