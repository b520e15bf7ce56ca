"""Every string-taking adapter: arbitrary text raises nothing but ConsentFormatError.

The real samples mutated here, and the tables the adapters take, are the per-adapter modules'.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from consent_client.adapters import (
    ConsentFormatError,
    decode_gcs,
    decode_tc_string,
    decode_us_privacy,
    google_gcs_to_preferences,
    ketch_from_consent_cookie,
    onetrust_from_active_groups,
    onetrust_from_optanon_cookie,
    tcf_to_preferences,
    trustarc_from_notice_gdpr_prefs,
    trustarc_from_storage_item,
    us_privacy_to_preferences,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from .test_google import GCM_MAPPING
from .test_ketch import KETCH_SEATGEEK
from .test_onetrust import OPTANON_VINTED
from .test_tcf import PERL_BITFIELD, PERL_RANGE
from .test_trustarc import STOCK_LEVELS

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
