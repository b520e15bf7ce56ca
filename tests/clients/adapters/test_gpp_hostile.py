"""consent_client.adapters.gpp on hostile input: located ConsentFormatErrors, fuzzing, bounded and linear work.

Every vector names its source in its param id: ``java`` is IABTechLab/iabgpp-java 3.2.5
(iabgpp-encoder/src/test/java/com/iab/gpp/encoder/...), ``es`` is IABTechLab/iabgpp-es 3.2.0
(modules/cmpapi/test/encoder/...), ``go`` is prebid/go-gpp (parse_test.go, sections/*/*_test.go).
Expected values are only those the named test asserts (see test_gpp.py).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
from consent_client.adapters import ConsentFormatError, decode_gpp, gpp_to_preferences
from consent_client.adapters._common import MAX_INPUT_CHARS
from hypothesis import given, settings
from hypothesis import strategies as st

from .gpp_strings import B64, fibonacci, gpp
from .test_gpp import TC_GO, TC_JAVA

# Malformed input: ConsentFormatError naming the section and the field

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
    bits = "000011" + "000001" + "000000000001" + "1" + fibonacci(1) + fibonacci(46367)
    bits += "0" * (-len(bits) % 6)
    head = "".join(B64[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))
    with pytest.raises(ConsentFormatError, match="more section ids than the 1 sections"):
        decode_gpp(head + "~1YNN")


def test_fibonacci_beyond_16_bits_is_refused() -> None:
    bits = "000011" + "000001" + "000000000001" + "0" + "01" * 40 + "1"
    bits += "0" * (-len(bits) % 6)
    head = "".join(B64[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))
    with pytest.raises(ConsentFormatError, match=r"header SectionIds entry 1 offset: .*exceeds 65535"):
        decode_gpp(head + "~1YNN")


# Fuzzing: nothing but ConsentFormatError, ever; and bounded, linear work

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
_GPP_CHARS = B64 + "~.=!1YN- "


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
    bits = "000011" + "000001" + "1" * 12 + "0" + fibonacci(28) + "011" * 4094
    bits += "0" * (-len(bits) % 6)
    many = "".join(B64[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))
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
