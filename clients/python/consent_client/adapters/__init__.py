"""CMP adapters: turn a consent-management platform's native signal into the
``categoryPreferences`` dict (``{category_id: bool}``) the consent sidecar enforces.

Every function here is pure (no I/O, no clock) and raises only :class:`ConsentFormatError`
(a :class:`ValueError`) for malformed input, with a message naming what is wrong.

A category the signal says nothing about is left out of the result rather than set to
``False``; the sidecar treats absent and ``False`` alike (not granted). When a request carries
several signals (a CMP cookie, a GPP string, ``Sec-GPC``), :func:`merge_preferences` folds
their results into one consent object: a category any signal denies is denied.
"""

from __future__ import annotations

from ._common import ConsentFormatError
from .google import (
    CONSENT_MODE_SIGNALS,
    decode_gcs,
    google_consent_mode_to_preferences,
    google_gcs_to_preferences,
)
from .gpc import gpc_enabled, gpc_to_preferences
from .gpp import GPPString, decode_gpp, gpp_to_preferences
from .gpp_sections import RangeEntry
from .ketch import ketch_from_consent_cookie, ketch_from_purposes
from .merge import merge_preferences
from .onetrust import onetrust_from_active_groups, onetrust_from_optanon_cookie
from .tcf import TCString, decode_tc_string, tcf_to_preferences
from .trustarc import trustarc_from_notice_gdpr_prefs, trustarc_from_storage_item
from .usprivacy import USPrivacy, decode_us_privacy, us_privacy_to_preferences

__all__ = [
    "CONSENT_MODE_SIGNALS",
    "ConsentFormatError",
    "GPPString",
    "RangeEntry",
    "TCString",
    "USPrivacy",
    "decode_gcs",
    "decode_gpp",
    "decode_tc_string",
    "decode_us_privacy",
    "google_consent_mode_to_preferences",
    "google_gcs_to_preferences",
    "gpc_enabled",
    "gpc_to_preferences",
    "gpp_to_preferences",
    "ketch_from_consent_cookie",
    "ketch_from_purposes",
    "merge_preferences",
    "onetrust_from_active_groups",
    "onetrust_from_optanon_cookie",
    "tcf_to_preferences",
    "trustarc_from_notice_gdpr_prefs",
    "trustarc_from_storage_item",
    "us_privacy_to_preferences",
]
