"""consent_client.adapters.gpp_to_preferences: GPP signals as category preferences, TCF through its own mapping.

Every vector names its source in its param id: ``java`` is IABTechLab/iabgpp-java 3.2.5
(iabgpp-encoder/src/test/java/com/iab/gpp/encoder/...), ``es`` is IABTechLab/iabgpp-es 3.2.0
(modules/cmpapi/test/encoder/...), ``go`` is prebid/go-gpp (parse_test.go, sections/*/*_test.go).
Expected values are only those the named test asserts (see test_gpp.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from consent_client.adapters import ConsentFormatError, decode_gpp, gpp_to_preferences

from .gpp_strings import gpp, header
from .test_gpp import TC_JAVA
from .test_gpp_hostile import USNAT

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
